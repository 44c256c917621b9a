#!/usr/bin/env python3
"""Fault harness: N tasks in flight, one fault at a time, then count what was lost, run twice, and delayed.

Drives a container built by molecule/reliability (redis + a prefork group `default` on queue celery and a gevent
group `io` on queue io, app examples/demo_app) from the controller with `podman exec`. Every task is the demo
app's `trace` task: it counts its starts and completions per task id in Redis db 2 and keeps the time of its first
completion; the client keeps each id's send time. Per scenario:

    lost            sent, never completed (within the scenario's wait)
    started twice   executions begun more than once (a redelivery after a cut-off run)
    completed twice ran to the end more than once (completed, but the ack never reached Redis)
    longest delay   send to first completion, seconds

    scripts/reliability.py --container vpsstack-reliability --n 300 --json out.json --markdown docs/reliability.md

Exit status 1 when a scenario whose design guarantees 0 lost (GUARANTEED) lost a task. Timings are reported,
never asserted.
"""
import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# The client runs as the worker user with the programs' settings (0640 root:celery), like molecule/worker's tests.
CLIENT = ("cd /opt/celery/app && runuser -u celery -- env PYTHONDONTWRITEBYTECODE=1 "
          "PYTHONPATH=/etc/celery:/opt/celery/app CELERY_CONFIG_MODULE=vpsstack_celery_settings "
          "/opt/celery/venv/bin/python -m demo_app.client")
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY_PLAYBOOK = os.path.join(PROJECT, "playbooks", "deploy.yml")
TABLE_START = "<!-- reliability:table:start (written by scripts/reliability.py) -->"
TABLE_END = "<!-- reliability:table:end -->"
# kombu 5.7 redis transport: the prefork (event loop) worker scans `unacked` every
# unacked_restore_interval (10 s) x unacked_restore_throttle (10) seconds for messages older than the timeout.
RESTORE_SWEEP_S = 100


@dataclass
class Pool:
    program: str      # supervisor program of the worker group
    queue: str
    min_s: float      # task length, uniform between min_s and max_s
    max_s: float
    share: float      # fraction of N this pool gets (prefork: 2 children on 1 CPU; gevent: many greenlets)


POOLS = {
    "prefork": Pool("celery-default", "celery", 0.2, 2.0, 0.1),
    "gevent": Pool("celery-io", "io", 0.2, 2.0, 1.0),
}


@dataclass
class Scenario:
    name: str
    pool: str
    fault: str
    guaranteed: bool = False     # the design promises 0 lost: the run fails otherwise
    countdown: float = 0         # ETA tasks: seconds between send and run
    leak_mb: int = 0             # each task leaks this much in its (prefork) child
    waits_for_visibility: bool = False  # cut-off messages come back only after the visibility timeout
    lengths: tuple = ()          # (min_s, max_s) instead of the pool's: runs that outlast a slow fault


SCENARIOS = [
    Scenario("SIGTERM restart (supervisorctl restart)", "prefork", "restart_program", guaranteed=True),
    Scenario("SIGTERM restart (supervisorctl restart)", "gevent", "restart_program", guaranteed=True),
    Scenario("kill -9 of one prefork child", "prefork", "kill_child", guaranteed=True),
    Scenario("kill -9 of the worker parent", "prefork", "kill_parent", waits_for_visibility=True),
    Scenario("kill -9 of the worker parent", "gevent", "kill_parent", waits_for_visibility=True),
    Scenario("systemctl restart redis-server", "prefork", "restart_redis"),
    Scenario("systemctl restart redis-server", "gevent", "restart_redis"),
    Scenario("kill -9 of redis-server", "gevent", "kill_redis", waits_for_visibility=True),
    Scenario("container restart (podman restart)", "gevent", "restart_container", waits_for_visibility=True),
    Scenario("leaking task (48 MiB a run) on 1 GB", "prefork", "none", guaranteed=True, leak_mb=48),
    Scenario("ETA tasks (countdown 20 s) across a restart", "gevent", "restart_program", countdown=20),
    # Only with --inventory (molecule's) and when playbooks/deploy.yml exists.
    Scenario("deploy with changed code (playbooks/deploy.yml)", "gevent", "deploy_changed_code", lengths=(5, 20)),
]


class Host:
    """The container under test, reached with podman exec."""

    def __init__(self, container, inventory=None):
        self.container = container
        self.inventory = inventory

    def sh(self, command, check=True, timeout=600):
        run = subprocess.run(["podman", "exec", self.container, "bash", "-c", command], capture_output=True,
                             text=True, timeout=timeout, check=False)
        if check and run.returncode != 0:
            raise RuntimeError(f"{command!r} failed ({run.returncode}): {run.stderr.strip()}")
        return run.stdout.strip()

    def client(self, *args, timeout=3600):
        return json.loads(self.sh(CLIENT + " " + " ".join(shlex.quote(str(a)) for a in args), timeout=timeout))

    def pid(self, program):
        return int(self.sh(f"supervisorctl pid {program}"))

    def programs_running(self):
        """True when supervisord answers and every program is RUNNING."""
        status = self.sh("supervisorctl status", check=False)
        return bool(status) and all(" RUNNING " in line for line in status.splitlines())

    def oom_kills(self):
        """Kernel OOM kills in the container's memory cgroup (v2 memory.events, else v1 memory.oom_control)."""
        for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
            text = self.sh(f"cat {path} 2>/dev/null", check=False)
            for line in text.splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return None

    def visibility_timeout(self):
        # The settings module holds them as a JSON string: the quotes around the key are escaped.
        conf = self.sh("grep -oE 'visibility_timeout[^0-9,]*[0-9]+' /etc/celery/vpsstack_celery_settings.py "
                       "| head -1 | grep -oE '[0-9]+$'", check=False)
        return int(conf) if conf else None


def wait_until(predicate, timeout, step=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def wait_for_redis(host, timeout=120):
    """Until redis-server is active and answers (not LOADING): a PING as the celery user through the client."""
    return wait_until(lambda: host.sh("systemctl is-active redis-server", check=False) == "active"
                      and host.sh(CLIENT + " started-record none", check=False) != "", timeout)


# --- Faults: each returns once the fault is done (not once the stack recovered).

def restart_program(host, pool):
    host.sh(f"supervisorctl restart {pool.program}")


def kill_child(host, pool):
    parent = host.pid(pool.program)
    child = host.sh(f"pgrep -P {parent} | head -1")
    host.sh(f"kill -9 {child}")


def kill_parent(host, pool):
    host.sh(f"kill -9 {host.pid(pool.program)}")


def restart_redis(host, pool):
    host.sh("systemctl restart redis-server")


def kill_redis(host, pool):
    host.sh("kill -9 $(systemctl show -p MainPID --value redis-server)")


def restart_container(host, pool):
    # --time 90: what a reboot gives services (systemd stops supervisor, workers shut down warm), then SIGKILL.
    subprocess.run(["podman", "restart", "--time", "90", host.container], check=True, capture_output=True)
    wait_until(lambda: host.sh("systemctl is-system-running", check=False) in ("running", "degraded"), 180)


def deploy_changed_code(host, pool):
    """The rolling deploy a user runs, with app code that differs from what is running (one more module)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "demo_app")
        shutil.copytree(os.path.join(PROJECT, "examples", "demo_app"), src)
        with open(os.path.join(src, "demo_app", "release_marker.py"), "w") as fh:
            fh.write(f"RELEASE = {time.time()!r}\n")
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ.get(
            "ANSIBLE_COLLECTIONS_PATH", os.path.join(PROJECT, ".build", "collections")))
        subprocess.run(["ansible-playbook", "-i", host.inventory, DEPLOY_PLAYBOOK, "-e", f"worker_app_src={src}/"],
                       check=True, env=env, cwd=PROJECT, stdout=subprocess.DEVNULL)


def no_fault(host, pool):
    pass


FAULTS = {f.__name__: f for f in (restart_program, kill_child, kill_parent, restart_redis, kill_redis,
                                  restart_container, deploy_changed_code, no_fault)}
FAULTS["none"] = no_fault


def inject(host, scenario, pool):
    """Run the fault; a fault that itself fails (e.g. the deploy playbook) is reported, and the tasks still counted."""
    try:
        FAULTS[scenario.fault](host, pool)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"fault {scenario.fault} failed: {exc}", file=sys.stderr, flush=True)
        return str(exc)[:200]
    return None


def stall_s(host, scenario):
    """How long the count may stand still before the rest counts as lost: a run's length plus (after a hard kill)
    the visibility timeout and kombu's restore sweep (a cut-off message comes back only then)."""
    stall = scenario.countdown + 60
    if scenario.waits_for_visibility:
        stall += (host.visibility_timeout() or 0) + RESTORE_SWEEP_S
    return stall


def wait_for_tasks(host, key, stall, max_wait=None):
    """Poll until every task completed, or nothing completed for `stall` s (or max_wait s passed); then count once
    more after 5 s (a late duplicate shows up)."""
    start = last_progress = time.monotonic()
    done = -1
    while True:
        counts = host.client("report-trace", key, 10, 0)
        now = time.monotonic()
        if counts["completed"] != done:
            done, last_progress = counts["completed"], now
        if (done == counts["sent"] or now - last_progress > stall
                or (max_wait is not None and now - start > max_wait)):
            return host.client("report-trace", key, 0, 5)


def run_scenario(host, scenario, n, key, max_wait=None):
    """Send n tasks, inject the fault with about a quarter of them started, wait, count."""
    pool = POOLS[scenario.pool]
    oom_before = host.oom_kills()
    t0 = time.monotonic()
    min_s, max_s = scenario.lengths or (pool.min_s, pool.max_s)
    host.client("send-trace", key, n, min_s, max_s, pool.queue, scenario.countdown, scenario.leak_mb)
    if scenario.countdown:
        time.sleep(min(5.0, scenario.countdown / 4))  # received and waiting for their ETA, none started
    else:
        wait_until(lambda: host.client("started-record", key) >= max(1, n // 4), 300, step=0.3)
    fault_error = inject(host, scenario, pool)
    wait_until(host.programs_running, 180)
    wait_for_redis(host)
    counts = wait_for_tasks(host, key, stall_s(host, scenario), max_wait)
    oom_after = host.oom_kills()
    counts.update(fault_error=fault_error, scenario=scenario.name, pool=scenario.pool, guaranteed=scenario.guaranteed,
                  seconds=round(time.monotonic() - t0), lost_ids=counts.pop("lost")[:5],
                  oom_kills=None if oom_before is None else oom_after - oom_before)
    counts["lost"] = counts["sent"] - counts["completed"]
    return counts


def failures(results):
    """The scenarios that broke a guarantee: a guaranteed one lost a task, or the kernel OOM-killed something."""
    return [r for r in results
            if (r["guaranteed"] and r["lost"] > 0) or (r.get("oom_kills") or 0) > 0]


def markdown_table(results):
    lines = ["| scenario | pool | tasks | lost | started twice | completed twice | longest delay (s) | "
             "0 lost guaranteed | run (s) |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        lost = f"**{r['lost']}**" if r["lost"] else "0"
        extra = f" (OOM kills: {r['oom_kills']})" if r.get("oom_kills") is not None and "leak" in r["scenario"] else ""
        extra += " (the fault itself failed)" if r.get("fault_error") else ""
        lines.append(f"| {r['scenario']}{extra} | {r['pool']} | {r['sent']} | {lost} | {r['started_twice']} | "
                     f"{r['completed_twice']} | {r['longest_delay_s']} | {'yes' if r['guaranteed'] else 'no'} | "
                     f"{r['seconds']} |")
    return "\n".join(lines)


def machine_line(host):
    celery = host.sh("/opt/celery/venv/bin/python -c 'import celery, kombu; print(celery.__version__, "
                     "kombu.__version__)'", check=False).split()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout.splitlines()
    total_gib = mem[1].split()[1] if len(mem) > 1 else "?"
    versions = f"Celery {celery[0]}, kombu {celery[1]}" if len(celery) == 2 else "Celery ?"
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{today}; controller {nproc} CPUs / {total_gib} GiB (`nproc`, `free -g`); container "
            f"`--memory=1g --cpus=1`, Ubuntu 24.04; {versions}; visibility timeout "
            f"{host.visibility_timeout()} s (scenario setting)")


def write_markdown(path, header, table):
    """Replace the block between the table markers of PATH (the rest of the file is prose kept as it is)."""
    with open(path) as fh:
        text = fh.read()
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    with open(path, "w") as fh:
        fh.write(f"{head}{TABLE_START}\n{header}\n\n{table}\n{TABLE_END}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--container", default="vpsstack-reliability")
    parser.add_argument("--inventory", help="ansible inventory of the container: enables the deploy scenario")
    parser.add_argument("--n", type=int, default=300, help="tasks per gevent scenario (prefork gets a tenth)")
    parser.add_argument("--only", default="", help="comma-separated fault names to run (default: all)")
    parser.add_argument("--guarantee", default="", help="comma-separated fault names that must also lose 0")
    parser.add_argument("--max-wait", type=float, help="cap the wait for the tasks (s): shows that a loss fails")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="replace the table block of this file")
    args = parser.parse_args(argv)

    host = Host(args.container, args.inventory)
    extra = set(filter(None, args.guarantee.split(",")))
    can_deploy = bool(args.inventory) and os.path.exists(DEPLOY_PLAYBOOK)
    chosen = [s for s in SCENARIOS if (not args.only or s.fault in args.only.split(","))
              and (s.fault != "deploy_changed_code" or can_deploy)]
    run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%H%M%S")
    results = []
    for number, scenario in enumerate(chosen):
        scenario.guaranteed = scenario.guaranteed or scenario.fault in extra
        n = max(10, int(args.n * POOLS[scenario.pool].share))
        print(f"--- {scenario.name} [{scenario.pool}], {n} tasks", flush=True)
        result = run_scenario(host, scenario, n, f"rel-{run_id}-{number}", args.max_wait)
        print(json.dumps(result), flush=True)
        results.append(result)
    table = markdown_table(results)
    print(table)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    if args.markdown:
        write_markdown(args.markdown, f"Measured {machine_line(host)}; N = {args.n}.", table)
    broken = failures(results)
    for r in broken:
        print(f"FAILED: {r['scenario']} [{r['pool']}]: {r['lost']} lost, OOM kills {r.get('oom_kills')}: "
              f"{r['lost_ids']}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
