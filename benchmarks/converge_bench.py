"""`make bench-converge`: how long playbooks/site.yml takes over SSH, against a plain install script (issue 12 §2).

    python benchmarks/converge_bench.py [--repeat 3] [--tree HEAD|worktree] [--keep]

Starts two containers from the local Ubuntu 24.04 systemd image, 1 GB / 1 vCPU each, with sshd published on a
loopback port (what users run: SSH with pipelining; the podman connection is ~2.7x slower and hides the cost):
- vpsstack-convbench-ansible: the first converge of the README stack (redis, workers, beat, flower on one host),
  then --repeat no-change converges, each with ansible.posix.profile_tasks;
- vpsstack-convbench-script: benchmarks/converge_script.sh, the same apt packages and venvs in a plain script.
The ansible run goes first, then the script: any cache on the way to the mirrors favours the script.
Writes docs/benchmarks/converge.{json,md} and the converge-bench section of docs/benchmarks.md; logs go to
.build/convbench/. A benchmark, not a test: the targets are reported, never asserted.
"""
import argparse
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.environ.get("VPSSTACK_IMAGE", "localhost/ubuntu-systemd:24.04")
CA_BUNDLE = os.environ.get("VPSSTACK_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
ANSIBLE_HOST = "vpsstack-convbench-ansible"
SCRIPT_HOST = "vpsstack-convbench-script"
LABEL = "vpsstack.convbench=1"
SCRIPT = os.path.join(ROOT, "benchmarks", "converge_script.sh")
REMOTE_CA = "/root/convbench-ca.crt"
LOG_DIR = os.path.join(ROOT, ".build", "convbench")
MARK_START = "<!-- converge-bench:start -->"
MARK_END = "<!-- converge-bench:end -->"
FINDINGS_START = "<!-- converge-findings:start -->"
FINDINGS_END = "<!-- converge-findings:end -->"
SLOWEST = 15
TARGET_RATIO = 1.0
TARGET_NO_CHANGE_S = 10.0
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]

# Not measured: sshd (every VPS has it), then the package lists emptied with their dir's mtime at the epoch, as in
# the image (docs/testing.md): installing sshd filled them, and the collection would then skip its apt update
# while the script runs one.
SSHD_SETUP = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
systemctl enable --now ssh.socket >/dev/null 2>&1 || systemctl enable --now ssh >/dev/null
install -d -m 0700 /root/.ssh
apt-get clean
rm -rf /var/lib/apt/lists/*
mkdir -p /var/lib/apt/lists/partial
touch -d @0 /var/lib/apt/lists
"""


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def run(argv, check=True, **kw):
    return subprocess.run(argv, check=check, text=True, capture_output=True, **kw)


def load():
    return [round(x, 2) for x in os.getloadavg()]


def default_of(role, variable):
    """A role default as written in its defaults/main.yml (a plain quoted scalar)."""
    with open(os.path.join(ROOT, "roles", role, "defaults", "main.yml"), encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(variable + ":"):
                return line.split(":", 1)[1].strip().strip("\"'")
    raise RuntimeError("%s not found in roles/%s/defaults/main.yml" % (variable, role))


# --- containers and SSH

def start_container(name, pubkey):
    """A 1 GB / 1 vCPU systemd container with sshd on a loopback port; returns the port."""
    run(["podman", "rm", "-f", name], check=False)
    run(["podman", "run", "-d", "--name", name, "--hostname", name, "--runtime", "runc", "--systemd=always",
         "--memory=1g", "--cpus=1", "--label", LABEL, "-p", "127.0.0.1::22", IMAGE, "/sbin/init"])
    for _attempt in range(60):
        state = run(["podman", "exec", name, "systemctl", "is-system-running"], check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    run(["podman", "exec", name, "bash", "-c", SSHD_SETUP])
    run(["podman", "exec", "-i", name, "bash", "-c", "cat > /root/.ssh/authorized_keys && chmod 600 "
         "/root/.ssh/authorized_keys"], input=pubkey)
    # "127.0.0.1:40123"
    return int(run(["podman", "port", name, "22/tcp"]).stdout.strip().rsplit(":", 1)[1])


def ssh_argv(port, key):
    return ["ssh", "-i", key, "-p", str(port), "-o", "BatchMode=yes"] + SSH_OPTIONS + ["root@127.0.0.1"]


def wait_ssh(port, key):
    for _attempt in range(30):
        if run(ssh_argv(port, key) + ["true"], check=False).returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError("sshd on 127.0.0.1:%d does not answer" % port)


def remove_containers():
    # Seen once on a busy host: rm returned while the container stayed (exited): try again, then say so.
    for name in (ANSIBLE_HOST, SCRIPT_HOST):
        for _attempt in range(3):
            run(["podman", "rm", "-f", "-t", "5", name], check=False)
            if run(["podman", "container", "exists", name], check=False).returncode != 0:
                break
            time.sleep(2)
        else:
            log("could not remove %s: podman rm -f %s" % (name, name))


# --- the ansible side

def collection_tree(tmp, tree):
    """(source dir, ANSIBLE_COLLECTIONS_PATH): a `git archive` copy of the commit, so that files being edited in
    the shared checkout do not end up in a measurement; or the checkout itself ("worktree")."""
    if tree == "worktree":
        return ROOT, os.path.join(ROOT, ".build", "collections")
    source = os.path.join(tmp, "ansible_collections", "vpsstack", "celery")
    os.makedirs(source)
    archive = subprocess.run(["git", "-C", ROOT, "archive", tree], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
    return source, tmp


def write_inventory(tmp, port, key, source):
    """One host in every group of site.yml with the README stack's variables (as molecule/demo sets them): beat
    on, Flower users, Redis passwords; no interpreter given, so discovery costs what it costs users."""
    host_vars = {
        "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "root",
        "ansible_ssh_private_key_file": key, "ansible_ssh_common_args": " ".join(SSH_OPTIONS),
        # The container's hard nofile ceiling (docs/testing.md); real hosts keep the default.
        "baseline_nofile": 20000,
        "baseline_ca_certificates": [{"name": "controller-bundle", "src": CA_BUNDLE}],
        "redis_auth_enabled": True,
        "redis_password": secrets.token_hex(12),
        "redis_celery_password": secrets.token_hex(12),
        "worker_app_src": os.path.join(source, "examples", "demo_app") + "/",
        "worker_beat_enabled": True,
        "flower_users": [{"name": "demo", "password": secrets.token_hex(10)}],
    }
    groups = {group: {"hosts": {ANSIBLE_HOST: None}} for group in ("redis", "workers", "flower")}
    inventory = {"all": {"hosts": {ANSIBLE_HOST: host_vars}, "children": groups}}
    path = os.path.join(tmp, "hosts.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(inventory, handle)  # YAML is a superset of JSON: the yaml inventory plugin reads it
    return path


def playbook(inventory, source, collections, log_path, play=None):
    """One timed ansible-playbook playbooks/site.yml; the wall time includes Ansible's own start-up, as users see it."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_PIPELINING="True", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="false", ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
               # Every task in the recap (not the default 20), so the breakdown below adds up.
               PROFILE_TASKS_TASK_OUTPUT_LIMIT="1000")
    with open(log_path, "w", encoding="utf-8") as out:
        started = time.monotonic()
        argv = ["ansible-playbook", "-i", inventory, play or os.path.join(source, "playbooks", "site.yml")]
        proc = subprocess.run(argv, check=False, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=source)
        wall = time.monotonic() - started
    with open(log_path, encoding="utf-8") as handle:
        text = handle.read()
    if proc.returncode:
        raise RuntimeError("ansible-playbook failed (rc %d), see %s" % (proc.returncode, log_path))
    tasks = parse_profile(text)
    return {"wall_s": round(wall, 2), "recap": parse_recap(text), "tasks": tasks, "tasks_timed": len(tasks),
            "tasks_s": round(sum(t["s"] for t in tasks), 2), "changed_tasks": changed_tasks(text),
            "log": os.path.relpath(log_path, ROOT)}


def parse_recap(text):
    """The PLAY RECAP counters of our host: {"ok": 104, "changed": 0, ...}."""
    match = re.search(r"^%s\s*:\s*(.*)$" % re.escape(ANSIBLE_HOST), text.split("PLAY RECAP", 1)[-1], re.M)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))} if match else {}


def parse_profile(text):
    """profile_tasks' TASKS RECAP lines, "role : task name ------ 1.23s", slowest first."""
    tasks = []
    for line in text.split("TASKS RECAP", 1)[-1].splitlines():
        match = re.match(r"^(.*?)\s-*\s*(\d+\.\d+)s$", line)
        if match and not line.startswith("="):
            tasks.append({"name": match.group(1).strip(), "s": float(match.group(2))})
    return tasks


def changed_tasks(text):
    """Names of the tasks that reported a change (the no-change run should have none)."""
    found, current = [], None
    for line in text.split("PLAY RECAP", 1)[0].splitlines():
        header = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line)
        if header:
            current = header.group(1)
        elif line.startswith("changed:") and current and current not in found:
            found.append(current)
    return found


# What one task costs on this connection, to turn "N fewer round trips" into seconds: a remote module call (stat),
# a task that stays on the controller (set_fact), a skipped task, and a 10-item loop of the same stat.
PROBE_N = 10
PROBE_PLAY = """- name: Round-trip probe
  hosts: all
  gather_facts: false
  tasks:
%s
    - name: probe loop
      ansible.builtin.stat: {path: /etc/hostname, get_checksum: false}
      loop: %s
"""
PROBE_TASKS = {
    "remote": "ansible.builtin.stat: {path: /etc/hostname, get_checksum: false}",
    "controller": "ansible.builtin.set_fact: {convbench_probe: 1}",
    "skipped": "ansible.builtin.stat: {path: /etc/hostname}\n      when: false",
}


def probe(inventory, source, collections, tmp, log_path):
    tasks = "\n".join("    - name: probe %s %d\n      %s" % (kind, n, body)
                      for kind, body in PROBE_TASKS.items() for n in range(PROBE_N))
    path = os.path.join(tmp, "probe.yml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(PROBE_PLAY % (tasks, list(range(PROBE_N))))
    result = playbook(inventory, source, collections, log_path, path)
    costs = {}
    for kind in PROBE_TASKS:
        costs[kind + "_s"] = round(statistics.median(t["s"] for t in result["tasks"]
                                                     if t["name"].startswith("probe %s " % kind)), 3)
    loop = next(t["s"] for t in result["tasks"] if t["name"] == "probe loop")
    costs["loop_item_s"] = round(loop / PROBE_N, 3)
    costs["wall_s"] = result["wall_s"]
    return costs


def task_index(source):
    """Task name -> where it is written and what it calls, read from the role and playbook files line by line
    (stdlib only: no YAML parser). Good enough for names that are unique within a role, which the roles keep."""
    index = {}
    files = [os.path.join("playbooks", "site.yml")]
    for role in sorted(os.listdir(os.path.join(source, "roles"))):
        for kind in ("tasks", "handlers"):
            folder = os.path.join("roles", role, kind)
            if os.path.isdir(os.path.join(source, folder)):
                files += [os.path.join(folder, f) for f in sorted(os.listdir(os.path.join(source, folder)))
                          if f.endswith(".yml")]
    for rel in files:
        role = rel.split(os.sep)[1] if rel.startswith("roles") else ""
        current = None
        with open(os.path.join(source, rel), encoding="utf-8") as handle:
            for line in handle:
                # "- name: Wait until ...  # noqa: ..." : the comment is not part of the name.
                name = re.match(r"^\s*- name:\s*(.+?)(\s+#.*)?$", line)
                if name:
                    current = {"file": rel, "role": role, "module": "", "loop": False,
                               "handler": os.sep + "handlers" + os.sep in rel}
                    index[(role, name.group(1).strip("\"'"))] = current
                elif current and not current["module"] and re.match(r"^\s+\w+\.\w+\.\w+:", line):
                    current["module"] = line.strip().split(":", 1)[0]
                elif current and re.match(r"^\s+(loop|with_\w+):", line):
                    current["loop"] = True
    return index


def locate(name, index):
    """The index entry of a recap name ("baseline : Install tzdata ..." or "Gathering Facts")."""
    role, _sep, task = name.rpartition(" : ")
    role = role.rsplit(".", 1)[-1]
    if (role, task) in index:
        return index[(role, task)]
    # Names with Jinja are shown rendered: match the written name as a pattern.
    for (irole, iname), entry in index.items():
        if irole == role and "{{" in iname:
            pattern = re.escape(iname)
            pattern = re.sub(r"\\\{\\\{.*?\\\}\\\}", ".*", pattern)
            if re.fullmatch(pattern, task):
                return entry
    implicit = {"Gathering Facts": ("playbooks/site.yml", "ansible.builtin.setup"),
                "Validating arguments": ("roles/%s/meta/argument_specs.yml" % role, "validate_argument_spec")}
    rel, module = next((v for k, v in implicit.items() if task.startswith(k)), ("", ""))
    return {"file": rel, "role": role, "module": module, "loop": False, "handler": False}


CATEGORIES = [
    ("fact gathering", {"setup", "package_facts", "service_facts", "host_facts"}),
    ("apt", {"apt", "package", "apt_repository"}),
    ("pip", {"pip"}),
    ("command/shell", {"command", "shell", "script", "raw"}),
    ("files and templates", {"copy", "template", "file", "lineinfile", "blockinfile", "stat", "find", "slurp",
                             "assemble", "unarchive", "user", "group", "get_url"}),
    ("services", {"systemd_service", "systemd", "service", "supervisorctl", "sysctl", "timezone", "ufw"}),
    ("controller only (no round trip)", {"set_fact", "assert", "debug", "fail", "include_tasks", "import_tasks",
                                         "include_role", "import_role", "meta", "include_vars",
                                         "validate_argument_spec"}),
]


def categorize(tasks, index):
    """Seconds per kind of task, handlers and per-item loops apart (a task counts once, in its first kind)."""
    totals = {}
    for task in tasks:
        entry = locate(task["name"], index)
        task.update(file=entry["file"], module=entry["module"], loop=entry["loop"])
        short = entry["module"].rsplit(".", 1)[-1]
        if entry["handler"]:
            kind = "handlers"
        elif entry["loop"]:
            kind = "per-item loops"
        else:
            kind = next((label for label, modules in CATEGORIES if short in modules), "other")
        task["kind"] = kind
        row = totals.setdefault(kind, {"s": 0.0, "tasks": 0})
        row["s"] = round(row["s"] + task["s"], 2)
        row["tasks"] += 1
    return totals


# --- the script side

def run_script(port, key, versions, log_path):
    argv = ssh_argv(port, key) + ["PIP_CERT=%s bash -s -- %s %s" % (REMOTE_CA, versions["celery"],
                                                                     versions["flower"])]
    with open(SCRIPT, encoding="utf-8") as script, open(log_path, "w", encoding="utf-8") as out:
        started = time.monotonic()
        proc = subprocess.run(argv, stdin=script, stdout=out, stderr=subprocess.STDOUT, check=False)
        wall = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError("converge_script.sh failed (rc %d), see %s" % (proc.returncode, log_path))
    with open(log_path, encoding="utf-8") as handle:
        text = handle.read()
    steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"^step (\S+) (\d+\.\d+)$", text, re.M)}
    return {"wall_s": round(wall, 2), "steps_s": steps, "log": os.path.relpath(log_path, ROOT)}


# --- results

def machine():
    with open("/proc/meminfo", encoding="ascii") as handle:
        mem_kib = int(handle.readline().split()[1])
    model = ""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1), "cpu_model": model or platform.processor(),
            "kernel": platform.release(), "python": platform.python_version()}


def versions():
    core = run(["ansible-playbook", "--version"]).stdout.splitlines()[0]
    return {"ansible_core": re.sub(r"^.*\[core ([^\]]+)\].*$", r"\1", core),
            "podman": run(["podman", "--version"]).stdout.split()[-1],
            "celery": default_of("worker", "worker_celery_version"), "flower": default_of("flower", "flower_version")}


def evaluate(results):
    first, script = results["first_converge"]["wall_s"], results["script"]["wall_s"]
    walls = [r["wall_s"] for r in results["no_change"]]
    changed = max(r["recap"].get("changed", 0) for r in results["no_change"])
    results["summary"] = {
        "first_converge_s": first, "script_s": script, "ratio": round(first / script, 2),
        "no_change_s": statistics.median(walls), "no_change_runs_s": walls, "no_change_changed": changed,
        "no_change_ok": results["no_change"][0]["recap"].get("ok"),
        "no_change_skipped": results["no_change"][0]["recap"].get("skipped"),
        "no_change_tasks_timed": results["no_change"][0]["tasks_timed"],
        "target_first_met": first <= TARGET_RATIO * script,
        "target_no_change_met": changed == 0 and statistics.median(walls) <= TARGET_NO_CHANGE_S,
    }


def yes_no(flag):
    return "**met**" if flag else "**not met**"


def script_steps(script):
    """The script's steps in the order they run (the JSON file sorts them by name)."""
    order = ["apt-update", "apt-install", "celery-venv", "flower-venv"]
    steps = script.get("steps_s", {})
    return sorted(steps.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def by_time(kinds):
    """Slowest kind first (the JSON file keeps its keys sorted by name)."""
    return sorted(kinds.items(), key=lambda kv: -kv[1]["s"])


def markdown(results, findings):
    s, meta = results["summary"], results["meta"]
    median_run = sorted(results["no_change"], key=lambda r: r["wall_s"])[len(results["no_change"]) // 2]
    out = ["_%s, git %s (%s); %s, %d CPUs, %.0f GiB; containers 1 GB / 1 vCPU; ansible-core %s over SSH with "
           "pipelining; host load average %s before, %s after._" % (
               meta["date"], meta["git"], meta["tree"], meta["machine"]["cpu_model"], meta["machine"]["nproc"],
               meta["machine"]["ram_gib"], meta["versions"]["ansible_core"], " / ".join(map(str, meta["load_before"])),
               " / ".join(map(str, meta["load_after"]))), "",
           "| first converge s | script s | ratio | target ≤ %.1f× | no-change converge s (median of %d) | changed "
           "| tasks ok / skipped | target changed=0 in ≤ %.0f s |" % (TARGET_RATIO, len(results["no_change"]),
                                                                        TARGET_NO_CHANGE_S),
           "|---:|---:|---:|---|---:|---:|---:|---|",
           "| %.1f | %.1f | %.2f | %s | %.1f | %d | %s / %s | %s |" % (
               s["first_converge_s"], s["script_s"], s["ratio"], yes_no(s["target_first_met"]), s["no_change_s"],
               s["no_change_changed"], s["no_change_ok"], s["no_change_skipped"], yes_no(s["target_no_change_met"])),
           ""]
    if len(results["no_change"]) > 1:
        out += ["No-change runs: %s s." % ", ".join("%.1f" % w for w in s["no_change_runs_s"]), ""]
    if s["no_change_changed"]:
        out += ["Changed in a no-change run: %s." % "; ".join(
            sorted({t for r in results["no_change"] for t in r["changed_tasks"]})), ""]
    first = results["first_converge"]
    out += ["First converge by kind of task: %s (%.1f s in %d tasks). Script by step: %s." % (
        ", ".join("%s %.1f s" % (kind, row["s"]) for kind, row in by_time(first["kinds"])), first["tasks_s"],
        first["tasks_timed"], ", ".join("%s %.1f s" % kv for kv in script_steps(results["script"]))),
        ""]
    out += ["Where the no-change run's %.1f s go (profile_tasks, the median run; %d tasks, %.1f s in tasks, the rest "
            "is start-up):" % (median_run["wall_s"], median_run["tasks_timed"], median_run["tasks_s"]), "",
            "| kind | s | tasks |", "|---|---:|---:|"]
    out += ["| %s | %.1f | %d |" % (kind, row["s"], row["tasks"]) for kind, row in by_time(median_run["kinds"])]
    if results.get("probe"):
        p = results["probe"]
        out += ["", "One task on this connection, same run (median of %d): a remote module call (stat) %.2f s, a "
                "controller-only task (set_fact) %.2f s, a skipped task %.2f s, one loop item %.2f s." % (
                    PROBE_N, p["remote_s"], p["controller_s"], p["skipped_s"], p["loop_item_s"])]
    out += ["", "The %d slowest tasks of that run:" % SLOWEST, "", "| s | task | file | module |", "|---:|---|---|---|"]
    for task in median_run["tasks"][:SLOWEST]:
        out.append("| %.2f | %s | %s | %s%s |" % (task["s"], task["name"].replace("|", "\\|"), task["file"],
                                                  task["module"].rsplit(".", 1)[-1], " (loop)" if task["loop"] else ""))
    out += ["", "Run: `make bench-converge` (or `python benchmarks/converge_bench.py -h`); raw numbers and the "
            "first converge's slowest tasks in `docs/benchmarks/converge.json`.", ""]
    out += [FINDINGS_START, findings.strip("\n"), FINDINGS_END] if findings else []
    return "\n".join(out).rstrip("\n") + "\n"


def kept_findings(md_path):
    """The hand-written analysis under the table survives a re-run (it is about a measurement; re-check it)."""
    try:
        with open(md_path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return ""
    if FINDINGS_START in text and FINDINGS_END in text:
        return text.split(FINDINGS_START, 1)[1].split(FINDINGS_END, 1)[0]
    return ""


def write_doc(doc, table):
    """Replace only our marked block: the rest of docs/benchmarks.md belongs to other writers."""
    with open(doc, encoding="utf-8") as handle:
        text = handle.read()
    if MARK_START not in text or MARK_END not in text:
        raise RuntimeError("%s has no %s ... %s block" % (doc, MARK_START, MARK_END))
    head, rest = text.split(MARK_START, 1)
    with open(doc, "w", encoding="utf-8") as handle:
        handle.write(head + MARK_START + "\n" + table + MARK_END + rest.split(MARK_END, 1)[1])


def write_outputs(results, out_dir, doc):
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "converge.json")
    # The numbers first: a failure below leaves them for --render.
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
        handle.write("\n")
    md_path = os.path.join(out_dir, "converge.md")
    table = markdown(results, kept_findings(md_path))
    with open(md_path, "w", encoding="utf-8") as handle:
        handle.write(table)
    if doc:
        write_doc(doc, table)
    return table


# --- main

def measure(args, results):
    os.makedirs(LOG_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "id_ed25519")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "convbench", "-f", key])
        with open(key + ".pub", encoding="ascii") as handle:
            pubkey = handle.read()
        ports = {}
        for name in (ANSIBLE_HOST, SCRIPT_HOST):
            log("starting %s and its sshd (not measured)" % name)
            ports[name] = start_container(name, pubkey)
            wait_ssh(ports[name], key)
        run(["podman", "cp", CA_BUNDLE, SCRIPT_HOST + ":" + REMOTE_CA])
        source, collections = collection_tree(tmp, args.tree)
        inventory = write_inventory(tmp, ports[ANSIBLE_HOST], key, source)
        index = task_index(source)
        results["meta"]["load_before"] = load()

        log("first converge over SSH (127.0.0.1:%d), log %s/first.log" % (ports[ANSIBLE_HOST], LOG_DIR))
        first = playbook(inventory, source, collections, os.path.join(LOG_DIR, "first.log"))
        first["kinds"] = categorize(first["tasks"], index)
        first["load_after"] = load()
        results["first_converge"] = first
        log("  %.1f s, %s" % (first["wall_s"], first["recap"]))

        log("converge_script.sh over SSH (127.0.0.1:%d), log %s/script.log" % (ports[SCRIPT_HOST], LOG_DIR))
        script = run_script(ports[SCRIPT_HOST], key, results["meta"]["versions"], os.path.join(LOG_DIR, "script.log"))
        script["load_after"] = load()
        results["script"] = script
        log("  %.1f s, %s" % (script["wall_s"], script["steps_s"]))

        for number in range(1, args.repeat + 1):
            log("no-change converge %d/%d, log %s/no-change-%d.log" % (number, args.repeat, LOG_DIR, number))
            again = playbook(inventory, source, collections, os.path.join(LOG_DIR, "no-change-%d.log" % number))
            again["kinds"] = categorize(again["tasks"], index)
            again["load_after"] = load()
            results["no_change"].append(again)
            log("  %.1f s, %s" % (again["wall_s"], again["recap"]))
        log("round-trip probe: %d stat, %d set_fact, %d skipped tasks, a %d-item loop" % ((PROBE_N,) * 4))
        results["probe"] = probe(inventory, source, collections, tmp, os.path.join(LOG_DIR, "probe.log"))
        log("  %s" % results["probe"])
        results["meta"]["load_after"] = load()
    for run_result in [results["first_converge"]] + results["no_change"]:
        run_result["tasks"] = run_result["tasks"][:SLOWEST]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="no-change converges after the first one (default 3; the median is reported)")
    parser.add_argument("--tree", default="HEAD",
                        help="collection to converge: a commit (default HEAD, via git archive) or 'worktree'")
    parser.add_argument("--keep", action="store_true", help="leave the two containers running")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks"),
                        help="directory for converge.json and converge.md (default docs/benchmarks)")
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="Markdown file whose converge-bench block is replaced ('' = none)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite converge.md and --doc from --out's converge.json")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        with open(os.path.join(args.out, "converge.json"), encoding="utf-8") as handle:
            print(write_outputs(json.load(handle), args.out, args.doc))
        return 0

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    commit = args.tree if args.tree != "worktree" else "HEAD"
    results = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "versions": versions(),
        "image": IMAGE, "container": "1 GB / 1 vCPU", "tree": args.tree, "repeat": args.repeat,
        "git": run(["git", "-C", ROOT, "rev-parse", "--short", commit], check=False).stdout.strip(),
        "connection": "ssh, pipelining, profile_tasks", "order": "first converge, script, no-change converges"},
        "no_change": []}
    try:
        measure(args, results)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if not args.keep:
            log("removing the containers")
            remove_containers()
    evaluate(results)
    print(write_outputs(results, args.out, args.doc))
    log("wrote %s/converge.{json,md}%s" % (args.out, " and " + args.doc if args.doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
