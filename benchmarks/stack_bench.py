"""`make bench`: a stock Celery stack and this collection's, side by side, in containers sized like a small VPS.

    python benchmarks/stack_bench.py [--quick] [--repeat 3] [--big] [--variants stock,collection,...]

Starts its own containers (vpsstack-bench-*, 1 GB / 1 vCPU, or 2 GB / 2 vCPU with --big) from the local Ubuntu
24.04 systemd image on one podman network, and builds in them:
- stock: Ubuntu's redis-server with its packaged config (bound to the network so the producer reaches it),
  celery[redis] (the collection's default version) in a venv under supervisor with the program of Celery's
  extra/supervisord/celeryd.conf, default settings;
- stock-gevent: the same, hand-tuned as a person would: -P gevent -c 200 --prefetch-multiplier=1;
- collection: playbooks/site.yml over the podman connection, redis + workers + flower on one host, the defaults;
- collection-io: the same with the worker group declared IO-bound (workload: io, prefork: children sized from the
  app the settings check measured);
- collection-gevent: the same with pool: gevent;
- web: the producer's host, a venv with celery[redis] and the app, never inside a worker's cgroup.
The same app (benchmarks/bench_app) runs on each stack; the producer in the web container sends to the stack's
Redis over the network with only the broker's URL, as a web process does. Only one stack runs at a time: the
others are frozen (podman pause). The collection stacks are measured with Flower running (as the README deploys
them) and again with Flower stopped and the workers' task events off ("/no-flower"). For each workload it records
throughput, p50/p95 enqueue-to-done latency, CPU per task of the stack and of the producer, the container's peak
memory (cgroup), the peak summed RSS of the celery worker processes (sampled from the host's /proc), OOM kills and
swap. Writes JSON, a Markdown table and a PNG chart (docs/benchmarks.md), and removes its containers at the end,
on error and on Ctrl-C. A benchmark, not a test: nothing is asserted.
"""
import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_DIR = os.path.join(ROOT, "benchmarks", "bench_app")
IMAGE = os.environ.get("VPSSTACK_IMAGE", "localhost/ubuntu-systemd:24.04")
CA_BUNDLE = os.environ.get("VPSSTACK_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
PREFIX = "vpsstack-bench-"
NETWORK = PREFIX + "net"
VENV = "/opt/celery/venv"
WEB_VENV = "/opt/bench/venv"
# The hand-tuned stock worker: the flags a person tuning an IO-bound app by hand adds (no acks_late).
STOCK_FLAGS = {"stock": "", "stock-gevent": " -P gevent -c 200 --prefetch-multiplier=1"}
# worker_groups of the inventory per collection variant (None: the role's default group).
COLLECTION_GROUPS = {
    "collection": None,
    "collection-io": [{"name": "default", "queues": ["celery"], "workload": "io"}],
    "collection-gevent": [{"name": "default", "queues": ["celery"], "pool": "gevent", "workload": "io"}],
}
# Variants made for IO-bound work run the IO workloads only (--io-variant-workloads).
IO_VARIANTS = {"stock-gevent", "collection-io", "collection-gevent"}
# Flower modes of a collection stack, also the suffix of its label.
FLOWER_ON, EVENTS_ONLY, NO_FLOWER = "", "/events-no-flower", "/no-flower"
MARK_START = "<!-- stack-bench:start -->"
MARK_END = "<!-- stack-bench:end -->"

# Celery's extra/supervisord/celeryd.conf (5.7.0 sdist) with its placeholders filled in: the project directory,
# the venv's celery and our app. Everything else as the example has it (user nobody, stopasgroup=true, INFO).
STOCK_PROGRAM = """; Celery's extra/supervisord/celeryd.conf, placeholders filled in
[program:celery]
directory=/opt/celery/app
user=nobody
numprocs=1
stdout_logfile=/var/log/celery/worker.log
stderr_logfile=/var/log/celery/worker.log
autostart=true
autorestart=true
startsecs=10
command=/opt/celery/venv/bin/celery -A bench_app.tasks worker --loglevel=INFO{flags}
stopwaitsecs = 600
stopasgroup=true
priority=1000
"""

STOCK_SETUP = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq redis-server supervisor python3-venv >/dev/null
python3 -m venv {venv}
PIP_CERT=/root/bench-ca.crt {venv}/bin/pip install -q --disable-pip-version-check "celery[redis]=={version}" {extra}
# The only change to Ubuntu's redis.conf: listen on the bench network, where the producer's container is.
sed -i -e 's/^bind .*/bind 0.0.0.0 -::*/' -e 's/^protected-mode yes/protected-mode no/' /etc/redis/redis.conf
systemctl restart redis-server
mkdir -p /var/log/celery /opt/celery
cp -r /root/bench_app /opt/celery/app
chmod -R a+rX /opt/celery
cp /root/celeryd.conf /etc/supervisor/conf.d/celeryd.conf
supervisorctl reread >/dev/null && supervisorctl update >/dev/null
"""

WEB_SETUP = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq python3-venv >/dev/null
python3 -m venv {venv}
PIP_CERT=/root/bench-ca.crt {venv}/bin/pip install -q --disable-pip-version-check "celery[redis]=={version}"
mkdir -p /opt/bench
cp -r /root/bench_app /opt/bench/app
chmod -R a+rX /opt/bench
"""

COLLECTION_ENV = ["env", "PYTHONPATH=/etc/celery:/opt/celery/app", "CELERY_CONFIG_MODULE=vpsstack_celery_settings",
                  "HOME=/var/lib/celery", "runuser", "-u", "celery", "--"]
STOCK_ENV = ["env", "PYTHONPATH=/opt/celery/app", "HOME=/tmp", "runuser", "-u", "nobody", "--"]

# Single-task CPU time of burn(), measured in the container with the venv's Python (process time, not wall).
CPU_PROBE = """
import json, statistics, sys, time
from bench_app.tasks import burn_cpu
rounds, n = int(sys.argv[1]), int(sys.argv[2])
burn_cpu(rounds)
times = []
for _ in range(n):
    t = time.process_time(); burn_cpu(rounds); times.append(time.process_time() - t)
print(json.dumps({"task_cpu_s": statistics.median(times)}))
"""

SIZES = {
    # n per workload; burst is the count of tiny tasks.
    "quick": {"io": 300, "cpu": 300, "mixed": 300, "burst": 1000},
    "full": {"io": 3000, "cpu": 3000, "mixed": 3000, "burst": 10000},
}
WORKLOADS = ["io", "cpu", "mixed", "burst"]


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def run(argv, check=True, **kw):
    return subprocess.run(argv, check=check, text=True, capture_output=True, **kw)


def podman_exec(name, argv, check=True, **kw):
    return run(["podman", "exec", name] + list(argv), check=check, **kw)


class Cgroup:
    """The container's cgroup as the host sees it (v1 memory/cpu controllers, or v2 unified)."""

    def __init__(self, name):
        pid = run(["podman", "inspect", "-f", "{{.State.Pid}}", name]).stdout.strip()
        paths = {}
        with open("/proc/%s/cgroup" % pid, encoding="ascii") as handle:
            for line in handle:
                _hid, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    paths[controller or "unified"] = path
        if "memory" in paths:
            self.v2 = False
            self.mem = "/sys/fs/cgroup/memory" + paths["memory"]
            self.cpu = "/sys/fs/cgroup/cpu" + paths.get("cpu", paths["memory"])
            self.cpuacct = "/sys/fs/cgroup/cpuacct" + paths.get("cpuacct", paths["memory"])
        else:
            self.v2 = True
            # systemd inside the container moves PID 1 to init.scope; the limits sit one level up.
            path = paths["unified"]
            if path.endswith("/init.scope"):
                path = path[: -len("/init.scope")]
            self.mem = self.cpu = self.cpuacct = "/sys/fs/cgroup" + path

    def read(self, base, name):
        with open(os.path.join(base, name), encoding="ascii") as handle:
            return handle.read()

    def stat(self, name):
        out = {}
        for line in self.read(self.mem, name).splitlines():
            key, value = line.split()[:2]
            out[key] = int(value)
        return out

    def drop_cache(self):
        """Reclaim the cgroup's page cache (apt and pip left hundreds of MiB), so that the peak measures the
        stack's own memory and what it caches while it runs. v1 force_empty reclaims with tasks inside too."""
        try:
            with open(os.path.join(self.mem, "memory.reclaim" if self.v2 else "memory.force_empty"), "w",
                      encoding="ascii") as handle:
                handle.write("1G" if self.v2 else "0")
        except OSError:
            pass

    def reset_peak(self):
        """v1: writing 0 resets max_usage_in_bytes. v2: memory.peak is reset by a write on kernels >= 6.12."""
        try:
            with open(os.path.join(self.mem, "memory.peak" if self.v2 else "memory.max_usage_in_bytes"), "w",
                      encoding="ascii") as handle:
                handle.write("0")
            return True
        except OSError:
            return False

    def peak_bytes(self):
        return int(self.read(self.mem, "memory.peak" if self.v2 else "memory.max_usage_in_bytes"))

    def oom_kills(self):
        return self.stat("memory.events" if self.v2 else "memory.oom_control").get("oom_kill", 0)

    def swap_bytes(self):
        if self.v2:
            try:
                return int(self.read(self.mem, "memory.swap.current"))
            except OSError:
                return 0
        return self.stat("memory.stat").get("total_swap", 0)

    def cpu_seconds(self):
        """CPU time used by everything in the container so far (workers, Redis, the producer)."""
        if self.v2:
            for line in self.read(self.cpu, "cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            return 0.0
        return int(self.read(self.cpuacct, "cpuacct.usage")) / 1e9

    def vcpus(self):
        if self.v2:
            quota, period = self.read(self.cpu, "cpu.max").split()
            return None if quota == "max" else int(quota) / int(period)
        quota = int(self.read(self.cpu, "cpu.cfs_quota_us"))
        return None if quota < 0 else quota / int(self.read(self.cpu, "cpu.cfs_period_us"))

    def pids(self):
        found = []
        for directory, _dirs, files in os.walk(self.mem):
            if "cgroup.procs" in files:
                found += self.read(directory, "cgroup.procs").split()
        return found


def is_celery_worker(cmdline):
    """`celery ... worker ...` (parents and pool children), not Flower (`celery flower --max_workers=...`)."""
    args = cmdline.split(b"\0")
    return b"worker" in args and any(arg.endswith(b"celery") for arg in args)


def worker_rss_kib(cgroup):
    """Summed RSS of the celery worker processes (parents and pool children; not the producer)."""
    total, processes = 0, 0
    for pid in cgroup.pids():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read()
            if not is_celery_worker(cmdline):
                continue
            with open("/proc/%s/status" % pid, encoding="ascii", errors="replace") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        processes += 1
        except OSError:
            continue
    return total, processes


class Sampler(threading.Thread):
    """Peak worker RSS and the host's load average, sampled twice a second while a workload runs."""

    def __init__(self, cgroup):
        super().__init__(daemon=True)
        self.cgroup, self.stop_event = cgroup, threading.Event()
        self.rss_peak_kib, self.processes, self.loads = 0, 0, []

    def run(self):
        while not self.stop_event.is_set():
            rss, processes = worker_rss_kib(self.cgroup)
            if rss > self.rss_peak_kib:
                self.rss_peak_kib, self.processes = rss, processes
            self.loads.append(os.getloadavg()[0])
            self.stop_event.wait(0.5)

    def stop(self):
        self.stop_event.set()
        self.join()


class Stack:
    """One container and how to run the app in it."""

    def __init__(self, variant, args):
        self.variant, self.args = variant, args
        self.name = PREFIX + variant
        self.kind = variant.split("-")[0]  # stock, collection or web
        self.env = STOCK_ENV if self.kind == "stock" else COLLECTION_ENV
        self.cgroup = None
        self.info = {}
        self.broker_url = None
        self.web = None  # the producer's container

    def create(self):
        run(["podman", "rm", "-f", self.name], check=False)
        mem, cpus = ("2g", "2") if self.args.big else ("1g", "1")
        run(["podman", "run", "-d", "--name", self.name, "--runtime", "runc", "--systemd=always",
             "--network", NETWORK, "--memory=" + mem, "--cpus=" + cpus, "--label", "vpsstack.bench=1", IMAGE,
             "/sbin/init"])
        for _attempt in range(60):
            state = podman_exec(self.name, ["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        self.cgroup = Cgroup(self.name)

    def address(self):
        return run(["podman", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    self.name]).stdout.strip()

    def find_broker_url(self):
        """The URL the producer in the web container uses: the app's own broker URL (the collection's has the
        celery user's password) with the container's address instead of loopback."""
        url = self.python(["-c", "from bench_app.tasks import app; print(app.conf.broker_url)"]).stdout.strip()
        self.broker_url = url.replace("127.0.0.1", self.address()).replace("localhost", self.address())

    def python(self, argv, **kw):
        return podman_exec(self.name, self.env + [VENV + "/bin/python"] + argv, **kw)

    def worker_commands(self):
        out = podman_exec(self.name, ["ps", "-eo", "args"], check=False).stdout
        return sorted({line for line in out.splitlines() if "celery" in line and " worker" in line
                       and "supervisord" not in line})


def setup_stock(stack, version):
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "celeryd.conf")
        with open(conf, "w", encoding="ascii") as handle:
            handle.write(STOCK_PROGRAM.format(flags=STOCK_FLAGS[stack.variant]))
        run(["podman", "cp", conf, stack.name + ":/root/celeryd.conf"])
    run(["podman", "cp", CA_BUNDLE, stack.name + ":/root/bench-ca.crt"])
    run(["podman", "cp", APP_DIR, stack.name + ":/root/bench_app"])
    extra = "gevent" if "gevent" in STOCK_FLAGS[stack.variant] else ""
    podman_exec(stack.name, ["bash", "-c", STOCK_SETUP.format(venv=VENV, version=version, extra=extra)])


def setup_web(web, version):
    run(["podman", "cp", CA_BUNDLE, web.name + ":/root/bench-ca.crt"])
    run(["podman", "cp", APP_DIR, web.name + ":/root/bench_app"])
    podman_exec(web.name, ["bash", "-c", WEB_SETUP.format(venv=WEB_VENV, version=version)])


def sync_app(stack):
    """--reuse: the app as it is in the checkout now, and the workers restarted on it."""
    run(["podman", "unpause", stack.name], check=False)
    package = os.path.join(APP_DIR, "bench_app")
    app_dir = "/opt/bench/app" if stack.kind == "web" else "/opt/celery/app"
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), encoding="utf-8") as handle:
                write_file(stack, app_dir + "/bench_app/" + name, handle.read())
    if stack.kind != "web":
        podman_exec(stack.name, ["supervisorctl", "restart", "all"])


def write_inventory(tmp, stacks):
    """The inventory a user would write: redis + workers + flower on one host, Redis also on the host's private
    address (the web container sends from there); the variant's worker group."""
    hosts = [s for s in stacks if s.kind == "collection"]
    lines = ["all:", "  vars:", "    ansible_connection: containers.podman.podman",
             "    ansible_python_interpreter: /usr/bin/python3",
             "    baseline_nofile: 20000  # the test host's hard limit (docs/testing.md)",
             "    baseline_ca_certificates: [{name: controller-bundle, src: %s}]" % json.dumps(CA_BUNDLE),
             "    redis_auth_enabled: true",
             "    redis_password: %s" % json.dumps(secrets.token_hex(12)),
             "    redis_celery_password: %s" % json.dumps(secrets.token_hex(12)),
             "    flower_users: [{name: bench, password: %s}]" % json.dumps(secrets.token_hex(12)),
             "    worker_app_src: %s" % json.dumps(APP_DIR + "/"),
             "    worker_app: bench_app.tasks",
             "  children:"]
    for group in ("redis", "workers", "flower"):
        lines.append("    %s:" % group)
        lines.append("      hosts:")
        for stack in hosts:
            lines.append("        %s:" % stack.name)
            if group == "redis":
                lines.append("          redis_bind_extra: [%s]" % stack.address())
            if group == "workers" and COLLECTION_GROUPS.get(stack.variant):
                lines.append("          worker_groups: %s" % json.dumps(COLLECTION_GROUPS[stack.variant]))
    path = os.path.join(tmp, "hosts.yml")
    with open(path, "w", encoding="ascii") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def converge(stacks, log_path, tree):
    """ansible-playbook playbooks/site.yml on the collection containers; tree "HEAD" = the last commit (a
    `git archive` copy, so files being edited in the checkout do not end up in a measurement), else the checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = write_inventory(tmp, stacks)
        collections = os.path.join(ROOT, ".build", "collections")
        source = ROOT
        if tree != "worktree":
            source = os.path.join(tmp, "ansible_collections", "vpsstack", "celery")
            os.makedirs(source)
            archive = subprocess.run(["git", "-C", ROOT, "archive", tree], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
            collections = tmp
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_FORCE_COLOR="false", ANSIBLE_FORKS="5")
        with open(log_path, "w", encoding="utf-8") as out:
            started = time.monotonic()
            proc = subprocess.run(["ansible-playbook", "-i", inventory, os.path.join(source, "playbooks", "site.yml")],
                                  check=False, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=source)
        if proc.returncode:
            raise RuntimeError("converge failed, see %s" % log_path)
        return time.monotonic() - started


def collection_version():
    with open(os.path.join(ROOT, "roles", "worker", "defaults", "main.yml"), encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("worker_celery_version:"):
                return line.split(":", 1)[1].strip().strip("\"'")
    raise RuntimeError("worker_celery_version not found")


def web_env(broker_url):
    return ["env", "PYTHONPATH=/opt/bench/app", "HOME=/tmp", "BENCH_BROKER_URL=" + broker_url]


def produce(stack, run_id, workload, n, args, on_start=None, extra=()):
    """Run the producer in the web container against the stack's Redis; stream its progress; return its JSON
    line."""
    argv = ["podman", "exec", stack.web.name] + web_env(stack.broker_url) + [
        WEB_VENV + "/bin/python", "-m", "bench_app.produce", run_id, workload, str(n),
        "--sleep-ms", str(args.sleep_ms), "--rounds", str(args.rounds), "--stall", str(args.stall)] + list(extra)
    tty = sys.stderr.isatty()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for count, line in enumerate(proc.stderr):
            if line.strip() == "start":
                if on_start:
                    on_start()
                continue
            # One progress line, rewritten in place on a terminal; every 10 s in a log.
            if line.rstrip() and (tty or count % 10 == 0):
                sys.stderr.write(("\r  %-14s %-6s %s   " if tty else "  %-14s %-6s %s\n")
                                 % (stack.variant, workload, line.rstrip()))
                sys.stderr.flush()
        out = proc.stdout.read()
    if tty:
        sys.stderr.write("\n")
    if proc.returncode:
        raise RuntimeError("producer failed on %s: %s" % (stack.name, out))
    return json.loads(out.strip().splitlines()[-1])


def freeze(name, frozen):
    """podman pause/unpause; a pause can fail while a process is exiting (seen once): try again."""
    for attempt in range(5):
        proc = run(["podman", "pause" if frozen else "unpause", name], check=False)
        state = run(["podman", "inspect", "-f", "{{.State.Status}}", name], check=False).stdout.strip()
        if proc.returncode == 0 or state == ("paused" if frozen else "running"):
            return
        time.sleep(1 + attempt)
    raise RuntimeError("podman %s %s failed: %s" % ("pause" if frozen else "unpause", name, proc.stderr))


def worker_pids(cgroup):
    pids = []
    for pid in cgroup.pids():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if is_celery_worker(cmdline):
            pids.append(int(pid))
    return pids


def signal_all(pids, signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def measure(stack, run_id, workload, n, args):
    """A burst: the N tasks are queued while the workers are held (SIGSTOP from the host), then released;
    throughput and latency count from the release, so the producer's publishing competes with nothing."""
    before_oom = stack.cgroup.oom_kills()
    pids = worker_pids(stack.cgroup)
    signal_all(pids, signal.SIGSTOP)
    try:
        published = produce(stack, run_id, workload, n, args, extra=["--publish-only"])
    finally:
        stack.cgroup.drop_cache()
        stack.cgroup.reset_peak()
        cpu_before = stack.cgroup.cpu_seconds()
        producer_cpu_before = stack.web.cgroup.cpu_seconds()
        released = time.time()
        signal_all(pids, signal.SIGCONT)
    sampler = Sampler(stack.cgroup)
    sampler.start()
    try:
        result = produce(stack, run_id, workload, n, args, extra=["--since", "%.6f" % released])
    finally:
        sampler.stop()
    result["publish_s"] = published["publish_s"]
    result.update({
        # CPU per task of the whole container: less sensitive to a busy host than tasks/s.
        "cpu_ms_per_task": 1000 * (stack.cgroup.cpu_seconds() - cpu_before) / n,
        # The producer's container while the stack drains the queue (it polls the done list): not the stack's.
        "producer_cpu_ms_per_task": 1000 * (stack.web.cgroup.cpu_seconds() - producer_cpu_before) / n,
        "container_peak_mib": stack.cgroup.peak_bytes() / 2**20,
        "worker_rss_peak_mib": sampler.rss_peak_kib / 1024,
        "worker_processes": sampler.processes,
        "oom_kills": stack.cgroup.oom_kills() - before_oom,
        "swap_mib": stack.cgroup.swap_bytes() / 2**20,
        "host_load_avg": statistics.mean(sampler.loads) if sampler.loads else None,
        "host_load_max": max(sampler.loads) if sampler.loads else None,
    })
    return result


def cpu_probe(stack, rounds):
    out = stack.python(["-c", CPU_PROBE, str(rounds), "30"]).stdout
    task_cpu_s = json.loads(out)["task_cpu_s"]
    vcpus = stack.cgroup.vcpus() or os.cpu_count()
    return {"task_cpu_ms": task_cpu_s * 1000, "vcpus": vcpus, "limit_tasks_per_s": vcpus / task_cpu_s}


def set_flower(stack, mode):
    """FLOWER_ON: as deployed, Flower tells the workers to send task events every 5 s (flower/events.py,
    events_enable_interval). NO_FLOWER: Flower stopped and the workers told to stop sending task events, which
    they would otherwise keep publishing for nobody. EVENTS_ONLY: Flower stopped, the events left on (what the
    workers' side of the events costs)."""
    if mode == FLOWER_ON:
        podman_exec(stack.name, ["systemctl", "start", "flower"])
        time.sleep(7)
        return
    podman_exec(stack.name, ["systemctl", "stop", "flower"])
    command = "enable_events" if mode == EVENTS_ONLY else "disable_events"
    podman_exec(stack.web.name, web_env(stack.broker_url) + [
        WEB_VENV + "/bin/python", "-c", "from bench_app.tasks import app; app.control.%s()" % command])


def measure_modes(stack, args):
    """(label, mode) pairs to measure a stack in: stock has no Flower."""
    if stack.kind != "collection":
        return [(stack.variant, None)]
    modes = {"on": [FLOWER_ON], "off": [NO_FLOWER], "both": [FLOWER_ON, NO_FLOWER],
             "all": [FLOWER_ON, EVENTS_ONLY, NO_FLOWER]}[args.flower]
    return [(stack.variant + mode, mode) for mode in modes]


def warm_up(stack, args):
    """Until the workers answer (a fresh start, or after a pause): a few tiny tasks, not measured."""
    produce(stack, "warm", "burst", 20, argparse.Namespace(sleep_ms=args.sleep_ms, rounds=args.rounds, stall=120))


# One change at a time on the converged collection container (defaults → stock-like), to find where the
# per-task cost goes (issue 12 §2). Settings are applied on top of the rendered settings module, the way the
# role applies its own (vpsstack_celery_app imports ENFORCED); flags edit the supervisor program's command, or
# ("unpatch") turn off a runtime patch's install() in the app module.
ABLATIONS = [
    ("defaults", "defaults", {}, {}),
    ("no-result", "no result backend", {"result_backend": None}, {}),
    ("no-acks-late", "acks_late off", {"task_acks_late": False, "task_reject_on_worker_lost": False}, {}),
    ("prefetch4", "prefetch multiplier 4", {"worker_prefetch_multiplier": 4}, {}),
    ("no-time-limits", "no time limits", {"task_time_limit": None, "task_soft_time_limit": None}, {}),
    ("no-child-limits", "no max-memory/max-tasks per child", {"worker_max_tasks_per_child": None},
     {"drop": ["--max-memory-per-child"]}),
    ("no-broadcast", "without gossip, mingle, heartbeat", {},
     {"add": ["--without-gossip", "--without-mingle", "--without-heartbeat"]}),
    ("warning", "loglevel WARNING", {}, {"loglevel": "WARNING"}),
    # What the plan gives a group declared `workload: cpu` (one child per vCPU) on this 1-vCPU container.
    ("c1", "concurrency 1 (workload: cpu)", {}, {"set": {"--concurrency": "1"}}),
    # Celery's own event sending (one publish per tick of the loop) instead of vpsstack_event_batching.py's batches.
    ("events-unbatched", "task events unbatched", {"vpsstack_event_batch_s": 0}, {}),
    # kombu's new Redis client per unacked record and ack instead of vpsstack_redis_clients.py's one per channel.
    ("clients-per-command", "a Redis client per command", {}, {"unpatch": ["vpsstack_redis_clients"]}),
    ("all", "all of the above", {"result_backend": None, "task_acks_late": False,
                                 "task_reject_on_worker_lost": False, "worker_prefetch_multiplier": 4,
                                 "task_time_limit": None, "task_soft_time_limit": None,
                                 "worker_max_tasks_per_child": None},
     {"drop": ["--max-memory-per-child"], "add": ["--without-gossip", "--without-mingle", "--without-heartbeat"],
      "loglevel": "WARNING"}),
]
# The same on the collection-gevent container (`--ablate-variant collection-gevent --ablate-workloads io`): how many
# greenlets per vCPU, and the issue's gevent flags (INFO vs WARNING, the -c 100 cliff without heartbeat).
GEVENT_ABLATIONS = [
    ("defaults", "defaults (-c 100)", {}, {}),
    ("c10", "-c 10", {}, {"set": {"--concurrency": "10"}}),
    ("c25", "-c 25", {}, {"set": {"--concurrency": "25"}}),
    ("c50", "-c 50", {}, {"set": {"--concurrency": "50"}}),
    ("c200", "-c 200", {}, {"set": {"--concurrency": "200"}}),
    ("warning", "loglevel WARNING", {}, {"loglevel": "WARNING"}),
    ("no-heartbeat", "without heartbeat", {}, {"add": ["--without-heartbeat"]}),
    ("no-result", "no result backend", {"result_backend": None}, {}),
    ("no-acks-late", "acks_late off", {"task_acks_late": False, "task_reject_on_worker_lost": False}, {}),
    ("no-time-limits", "no time limits", {"task_time_limit": None, "task_soft_time_limit": None}, {}),
    ("events-unbatched", "task events unbatched", {"vpsstack_event_batch_s": 0}, {}),
    ("clients-per-command", "a Redis client per command", {}, {"unpatch": ["vpsstack_redis_clients"]}),
    # What separates the collection from the hand-tuned stock gevent worker (-c 200, acks early, no limits).
    ("as-stock", "-c 200, acks early, no time limits", {"task_acks_late": False, "task_reject_on_worker_lost": False,
                                                        "task_time_limit": None, "task_soft_time_limit": None},
     {"set": {"--concurrency": "200"}}),
]
SETTINGS_FILE = "/etc/celery/vpsstack_celery_settings.py"
PROGRAM_FILE = "/etc/supervisor/conf.d/celery-default.conf"
APP_FILE = "/etc/celery/vpsstack_celery_app.py"


def unpatched(app_text, patches):
    """The app module with the named runtime patches not installed (their install() line turned off)."""
    for patch in patches:
        line = "%s.install()" % patch
        if line not in app_text:
            raise RuntimeError("%s does not install %s" % (APP_FILE, patch))
        app_text = app_text.replace(line, "pass  # ablation: " + line)
    return app_text


def edit_command(line, flags):
    """The program's command= line with options dropped (with their value), added, set to a value, or the log
    level changed."""
    words = line.split()
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in flags.get("drop", []):
            skip = True
            continue
        out.append(word)
    if "loglevel" in flags and "--loglevel" in out:
        out[out.index("--loglevel") + 1] = flags["loglevel"]
    for option, value in flags.get("set", {}).items():
        out[out.index(option) + 1] = value
    return " ".join(out + [flag for flag in flags.get("add", []) if flag not in out])


def write_file(stack, path, text):
    subprocess.run(["podman", "exec", "-i", stack.name, "bash", "-c", "cat > " + path], input=text, text=True,
                   check=True, capture_output=True)


def ablations_for(variant):
    return GEVENT_ABLATIONS if variant == "collection-gevent" else ABLATIONS


def ablate(stack, args, sizes, repeat):
    """Run the ablation workloads (cpu and burst by default) on one collection container once per ablation;
    restore the files after each."""
    settings = podman_exec(stack.name, ["cat", SETTINGS_FILE]).stdout
    program = podman_exec(stack.name, ["cat", PROGRAM_FILE]).stdout
    app = podman_exec(stack.name, ["cat", APP_FILE]).stdout
    rows = []
    try:
        for round_no in range(repeat):
            for key, label, overrides, flags in ablations_for(stack.variant):
                if args.ablations and key not in args.ablations.split(","):
                    continue
                podman_exec(stack.name, ["supervisorctl", "stop", "celery-default"])
                new_settings = settings
                if overrides:
                    new_settings += "\nENFORCED.update(json.loads(%r))\nglobals().update(ENFORCED)\n" % json.dumps(
                        overrides)
                write_file(stack, SETTINGS_FILE, new_settings)
                new_program = "\n".join(edit_command(line, flags) if line.startswith("command=") else line
                                        for line in program.splitlines()) + "\n"
                write_file(stack, PROGRAM_FILE, new_program)
                write_file(stack, APP_FILE, unpatched(app, flags.get("unpatch", [])))
                podman_exec(stack.name, ["supervisorctl", "reread"])
                podman_exec(stack.name, ["supervisorctl", "update"])
                podman_exec(stack.name, ["supervisorctl", "start", "celery-default"], check=False)
                warm_up(stack, args)
                for workload in args.ablate_workloads.split(","):
                    log("ablation round %d/%d, %s: %s" % (round_no + 1, repeat, label, workload))
                    row = measure(stack, "abl-%d-%s-%d" % (round_no, workload, time.time()), workload,
                                  sizes[workload], args)
                    row.update({"ablation": label, "workload": workload, "round": round_no})
                    rows.append(row)
                    log("  %.1f tasks/s, %.2f CPU ms/task, p50 %s ms" % (row["tasks_per_s"], row["cpu_ms_per_task"],
                                                                         fmt(row["p50_ms"])))
    finally:
        podman_exec(stack.name, ["supervisorctl", "stop", "celery-default"], check=False)
        write_file(stack, SETTINGS_FILE, settings)
        write_file(stack, PROGRAM_FILE, program)
        write_file(stack, APP_FILE, app)
        podman_exec(stack.name, ["supervisorctl", "reread"], check=False)
        podman_exec(stack.name, ["supervisorctl", "update"], check=False)
        podman_exec(stack.name, ["supervisorctl", "start", "celery-default"], check=False)
    return rows


def ablation_markdown(rows, sizes, variant="collection", workloads=("cpu", "burst")):
    by, cpu, rss = {}, {}, {}
    for row in rows:
        by.setdefault((row["ablation"], row["workload"]), []).append(row["tasks_per_s"])
        cpu.setdefault((row["ablation"], row["workload"]), []).append(row["cpu_ms_per_task"])
        rss.setdefault((row["ablation"], row["workload"]), []).append(row["worker_rss_peak_mib"])
    table = ablations_for(variant)
    base_label = table[0][1]
    base = {w: statistics.median(by[(base_label, w)]) for w in workloads if (base_label, w) in by}
    out = ["| %s with | %s" % (variant, " | ".join(
        "%s tasks/s (n=%d) | × defaults | CPU ms/task | worker RSS MiB" % (w, sizes[w]) for w in workloads)) + " |",
        "|---|" + "---:|---:|---:|---:|" * len(workloads)]
    for _key, label, _o, _f in table:
        if not any(k[0] == label for k in by):
            continue
        cells = []
        for workload in workloads:
            values = by.get((label, workload))
            med = statistics.median(values) if values else None
            cells += [fmt(med, "%.1f"), fmt(med / base[workload] if med and base.get(workload) else None, "%.2f"),
                      fmt(statistics.median(cpu[(label, workload)]) if values else None, "%.2f"),
                      fmt(statistics.median(rss[(label, workload)]) if values else None)]
        out.append("| %s | %s |" % (label, " | ".join(cells)))
    return "\n".join(out) + "\n"


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def median_of(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(results):
    """Median over repeats per (variant, workload)."""
    table = {}
    for row in results["runs"]:
        table.setdefault(row["variant"], {}).setdefault(row["workload"], []).append(row)
    keys = ["tasks_per_s", "cpu_ms_per_task", "producer_cpu_ms_per_task", "p50_ms", "p95_ms", "container_peak_mib",
            "worker_rss_peak_mib", "oom_kills",
            "swap_mib", "lost", "duplicates", "host_load_avg"]
    return {v: {w: dict({k: median_of(rows, k) for k in keys}, repeats=len(rows),
                        oom_kills_total=sum(r["oom_kills"] for r in rows), lost_total=sum(r["lost"] for r in rows))
                for w, rows in ws.items()} for v, ws in table.items()}


def fmt(value, spec="%.0f"):
    return "–" if value is None else spec % value


def spread(results, variant, workload):
    """min–max tasks/s over the rounds ("1 round" when there is one: indicative only)."""
    values = [r["tasks_per_s"] for r in results["runs"] if r["variant"] == variant and r["workload"] == workload]
    if len(values) < 2:
        return "1 round"
    return "%.1f–%.1f" % (min(values), max(values))


def markdown(results):
    summary = results["summary"]
    meta = results["meta"]
    out = ["_%s, %s; containers %s each; celery %s; repeats %d (medians); host load average during the runs "
           "%.2f–%.2f (%d CPUs)._" % (meta["date"], meta["cpu_model"], meta["container"], meta["celery_version"],
                                      meta["repeat"], meta["load_min"], meta["load_max"], meta["nproc"]), ""]
    out += ["| workload | stack | n | tasks/s | spread | × stock | × stock-gevent | CPU ms/task "
            "| producer CPU ms/task "
            "| p50 ms | p95 ms | container peak MiB | worker RSS MiB | × stock | OOM kills | swap MiB | lost |",
            "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    stock, tuned = summary.get("stock", {}), summary.get("stock-gevent", {})

    def ratio(row, base, key):
        return row[key] / base[key] if base.get(key) and row.get(key) is not None else None
    for workload in WORKLOADS:
        for variant in results["meta"]["variants"]:
            row = summary.get(variant, {}).get(workload)
            if not row:
                continue
            out.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %d |" % (
                workload, variant, results["meta"]["sizes"][workload], fmt(row["tasks_per_s"], "%.1f"),
                spread(results, variant, workload), fmt(ratio(row, stock.get(workload, {}), "tasks_per_s"), "%.2f"),
                fmt(ratio(row, tuned.get(workload, {}), "tasks_per_s") if "gevent" in variant else None, "%.2f"),
                fmt(row["cpu_ms_per_task"], "%.2f"), fmt(row["producer_cpu_ms_per_task"], "%.2f"),
                fmt(row["p50_ms"]), fmt(row["p95_ms"]), fmt(row["container_peak_mib"]),
                fmt(row["worker_rss_peak_mib"]),
                fmt(ratio(row, stock.get(workload, {}), "worker_rss_peak_mib"), "%.2f"),
                row["oom_kills_total"], fmt(row["swap_mib"]), row["lost_total"]))
    out.append("")
    for variant, probe in results["cpu_probe"].items():
        cpu = summary.get(variant, {}).get("cpu", {})
        if not cpu:
            continue
        share = cpu.get("tasks_per_s") / probe["limit_tasks_per_s"] if cpu.get("tasks_per_s") else None
        out.append("- CPU limit on %s: one burn() task = %.2f ms CPU, %.1f vCPU → %.0f tasks/s; its cpu workload "
                   "reached %s of it." % (variant, probe["task_cpu_ms"], probe["vcpus"], probe["limit_tasks_per_s"],
                                          fmt(share and 100 * share, "%.0f %%")))
    for variant, commands in results["worker_commands"].items():
        out.append("- %s worker: `%s`" % (variant, commands[0] if commands else "?"))
    return "\n".join(out) + "\n"


def chart(results, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    variants = results["meta"]["variants"]
    summary = results["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        xs = [w + i * width for w in range(len(WORKLOADS))]
        tput = [summary.get(variant, {}).get(w, {}).get("tasks_per_s") or 0 for w in WORKLOADS]
        rss = [summary.get(variant, {}).get(w, {}).get("worker_rss_peak_mib") or 0 for w in WORKLOADS]
        axes[0].bar(xs, tput, width, label=variant)
        axes[1].bar(xs, rss, width, label=variant)
    for axis, title in zip(axes, ["throughput (tasks/s, log)", "worker RSS peak (MiB)"]):
        axis.set_xticks([w + 0.4 - width / 2 for w in range(len(WORKLOADS))])
        axis.set_xticklabels(WORKLOADS)
        axis.set_title(title)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle("stock vs collection, %s, %s" % (results["meta"]["container"], results["meta"]["date"]))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_doc(doc, table, png_rel):
    with open(doc, encoding="utf-8") as handle:
        text = handle.read()
    block = "%s\n%s\n![stock vs collection](%s)\n%s" % (MARK_START, table, png_rel, MARK_END)
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc, "w", encoding="utf-8") as handle:
        handle.write(text)


def remove_containers(names):
    for name in names:
        run(["podman", "rm", "-f", "-t", "5", name], check=False)
    run(["podman", "network", "rm", NETWORK], check=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes), output under .build/bench")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per workload (default 3; quick 1)")
    parser.add_argument("--big", action="store_true", help="2 GB / 2 vCPU containers instead of 1 GB / 1 vCPU")
    parser.add_argument("--variants", default="stock,stock-gevent,collection,collection-io,collection-gevent")
    parser.add_argument("--flower", default="both", choices=["both", "on", "off", "all"],
                        help="measure the collection stacks with Flower running, stopped (task events off), both "
                             "(default), or all: also Flower stopped with the events left on")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--io-variant-workloads", default="io,mixed",
                        help="workloads of the variants made for IO-bound work (%s)" % ", ".join(sorted(IO_VARIANTS)))
    parser.add_argument("--n", type=int, default=None, help="override the task count of every workload")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every task count (e.g. 0.5)")
    parser.add_argument("--sleep-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=10000, help="SHA-256 rounds of one CPU task (~7 ms here)")
    parser.add_argument("--stall", type=float, default=60.0)
    parser.add_argument("--out", default=None, help="output directory (default docs/benchmarks, quick: .build/bench)")
    parser.add_argument("--doc", default=None, help="Markdown file to update (default docs/benchmarks.md; quick: none)")
    parser.add_argument("--ablate", type=int, default=0, metavar="R",
                        help="then R rounds of one-change-at-a-time variants of the collection (cpu, burst)")
    parser.add_argument("--ablations", default="",
                        help="keys of ABLATIONS (GEVENT_ABLATIONS for collection-gevent) to run (default all)")
    parser.add_argument("--ablate-variant", default="collection", choices=["collection", "collection-gevent"],
                        help="the container the ablations change (collection-gevent: greenlets per vCPU, gevent flags)")
    parser.add_argument("--ablate-workloads", default="cpu,burst", help="workloads of each ablation")
    parser.add_argument("--ablate-only", action="store_true", help="skip the stock/collection rounds")
    parser.add_argument("--tree", default="HEAD",
                        help="collection to converge: a commit (default HEAD, via git archive) or 'worktree'")
    parser.add_argument("--keep", action="store_true", help="leave the containers running (for profiling)")
    parser.add_argument("--reuse", action="store_true", help="use existing vpsstack-bench-* containers as they are")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if args.n:
        sizes = {w: args.n for w in sizes}
    sizes = {w: max(1, int(n * args.scale)) for w, n in sizes.items()}
    out_dir = args.out or os.path.join(ROOT, *((".build", "bench") if args.quick else ("docs", "benchmarks")))
    log_dir = os.path.join(ROOT, ".build", "bench")
    os.makedirs(log_dir, exist_ok=True)
    doc = args.doc if args.doc is not None else ("" if args.quick else os.path.join(ROOT, "docs", "benchmarks.md"))
    os.makedirs(out_dir, exist_ok=True)
    variants = args.variants.split(",")
    workloads = args.workloads.split(",")
    io_workloads = [w for w in args.io_variant_workloads.split(",") if w in workloads]
    unknown = [v for v in variants if v not in STOCK_FLAGS and v not in COLLECTION_GROUPS]
    if unknown:
        raise SystemExit("unknown variants: %s (known: %s)" % (
            ", ".join(unknown), ", ".join(list(STOCK_FLAGS) + list(COLLECTION_GROUPS))))
    version = collection_version()
    stacks = [Stack(v, args) for v in variants]
    web = Stack("web", args)
    for stack in stacks:
        stack.web = web
    names = [s.name for s in stacks] + [web.name]

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    results = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nproc": os.cpu_count(), "cpu_model": cpu_model(),
        "kernel": platform.release(), "container": "2 GB / 2 vCPU" if args.big else "1 GB / 1 vCPU",
        "celery_version": version, "repeat": repeat, "sizes": sizes,
        "variants": [label for s in stacks for label, _on in measure_modes(s, args)],
        "sleep_ms": args.sleep_ms, "rounds": args.rounds, "image": IMAGE,
        "tree": "reused containers" if args.reuse else args.tree,
        "git": run(["git", "-C", ROOT, "rev-parse", "--short", args.tree if args.tree != "worktree" else "HEAD"],
                   check=False).stdout.strip()},
        "runs": [], "cpu_probe": {}, "worker_commands": {}, "setup_s": {}}
    try:
        if not args.reuse:
            started = time.monotonic()
            log("starting %s" % ", ".join(names))
            run(["podman", "network", "create", NETWORK], check=False)
            for stack in stacks + [web]:
                stack.create()
            # Setup is not measured: stock's apt/pip and the collection's converge overlap (mostly network).
            errors = []
            threads = []

            def script_job(stack, setup):
                t = time.monotonic()
                try:
                    setup(stack, version)
                except subprocess.CalledProcessError as err:
                    errors.append("%s setup: %s" % (stack.variant, err.stderr[-2000:]))
                results["setup_s"][stack.variant] = time.monotonic() - t
            for stack in [s for s in stacks if s.kind == "stock"] + [web]:
                threads.append(threading.Thread(target=script_job,
                                                 args=(stack, setup_web if stack is web else setup_stock)))
            collection_stacks = [s for s in stacks if s.kind == "collection"]
            if collection_stacks:
                def collection_job():
                    try:
                        results["setup_s"]["collection"] = converge(collection_stacks,
                                                                    os.path.join(log_dir, "converge.log"), args.tree)
                    except (RuntimeError, OSError) as err:  # OSError: no ansible-playbook on PATH
                        errors.append(str(err))
                threads.append(threading.Thread(target=collection_job))
            log("setting up (stock: apt + pip; collection: ansible-playbook playbooks/site.yml, log in %s)" % log_dir)
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise RuntimeError("; ".join(errors))
            log("set up in %.0f s" % (time.monotonic() - started))
        else:
            for stack in stacks + [web]:
                stack.cgroup = Cgroup(stack.name)
                sync_app(stack)
        probes = {}
        for stack in stacks:
            stack.find_broker_url()
            results["worker_commands"][stack.variant] = stack.worker_commands()
            freeze(stack.name, True)
        # Rounds interleave the stacks so that a change of host load hits all of them alike.
        for round_no in range(0 if args.ablate_only else repeat):
            for stack in stacks:
                freeze(stack.name, False)
                warm_up(stack, args)
                # The CPU limit is measured in every round too: the host's load changes what a task costs.
                probes.setdefault(stack.variant, []).append(cpu_probe(stack, args.rounds))
                modes = measure_modes(stack, args)
                for label, mode in modes:
                    if mode not in (None, FLOWER_ON):
                        set_flower(stack, mode)
                    for workload in (io_workloads if stack.variant in IO_VARIANTS else workloads):
                        # Unique per invocation: a record left by an interrupted run cannot count.
                        run_id = "%s-%s-%d-%d" % (label.replace("/", "-"), workload, round_no, time.time())
                        log("round %d/%d %s %s: %d tasks, host load %.2f" % (
                            round_no + 1, repeat, label, workload, sizes[workload], os.getloadavg()[0]))
                        row = measure(stack, run_id, workload, sizes[workload], args)
                        row.update({"variant": label, "workload": workload, "round": round_no})
                        results["runs"].append(row)
                        log("  %.1f tasks/s, %.2f CPU ms/task (producer %.2f), p50 %s ms, p95 %s ms, peak %.0f MiB, "
                            "worker RSS %.0f MiB, lost %d, OOM %d" % (
                                row["tasks_per_s"], row["cpu_ms_per_task"], row["producer_cpu_ms_per_task"],
                                fmt(row["p50_ms"]), fmt(row["p95_ms"]), row["container_peak_mib"],
                                row["worker_rss_peak_mib"], row["lost"], row["oom_kills"]))
                if modes[-1][1] not in (None, FLOWER_ON):
                    set_flower(stack, FLOWER_ON)  # the next round starts as deployed
                freeze(stack.name, True)
        for variant, runs in probes.items():
            results["cpu_probe"][variant] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        if args.ablate:
            target = next(s for s in stacks if s.variant == args.ablate_variant)
            freeze(target.name, False)
            if args.flower == "off":  # the ablations without Flower's task events
                set_flower(target, NO_FLOWER)
            results["ablations"] = ablate(target, args, sizes, args.ablate)
            if args.flower == "off":
                set_flower(target, FLOWER_ON)
            freeze(target.name, True)
    except KeyboardInterrupt:
        log("interrupted")
        if not args.keep:
            remove_containers(names)
        return 130
    except Exception:
        if not args.keep:
            remove_containers(names)
        raise
    if args.keep:
        for name in names:
            run(["podman", "unpause", name], check=False)
    else:
        remove_containers(names)

    loads = [r["host_load_avg"] for r in results["runs"] if r.get("host_load_avg") is not None] or [0.0]
    results["meta"]["load_min"], results["meta"]["load_max"] = min(loads), max(loads)
    results["summary"] = summarize(results)
    if args.ablate_only:
        doc = ""
    json_path = os.path.join(out_dir, "stack-bench.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    table = markdown(results) if results["runs"] else ""
    if results.get("ablations"):
        table += "\n" + ablation_markdown(results["ablations"], sizes, args.ablate_variant,
                                           args.ablate_workloads.split(","))
    with open(os.path.join(out_dir, "stack-bench.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    png = os.path.join(out_dir, "stack-bench.png") if results["runs"] else None
    try:
        if png:
            chart(results, png)
    except ImportError:
        log("matplotlib missing (pip install -r requirements-bench.txt): no chart")
        png = None
    if doc:
        rel_png = os.path.relpath(png, os.path.dirname(doc)) if png else ""
        write_doc(doc, table, rel_png)
    print(table)
    log("wrote %s%s" % (json_path, " and " + doc if doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
