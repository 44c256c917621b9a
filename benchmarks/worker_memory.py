#!/usr/bin/env python3
"""Measure what the memory plan assumes, on a running stack (default: the `make demo` container).

Prints, as Markdown: RSS and PSS of supervisord, Redis, the beat process and each worker parent and prefork
child (from /proc/PID/smaps_rollup), then round-trip throughput of add() and the wall time of I/O-bound tasks.
A benchmark, not a test: it asserts nothing; docs/benchmarks.md records its output.

    make demo && python3 benchmarks/worker_memory.py [--container vpsstack-demo] [--tasks 500]
"""
import argparse
import json
import subprocess

VENV_PY = "/opt/celery/venv/bin/python"
APP_ENV = ["env", "PYTHONPATH=/etc/celery:/opt/celery/app", "CELERY_CONFIG_MODULE=vpsstack_celery_settings", "HOME=/var/lib/celery"]

THROUGHPUT = """
import json, sys, time
from celery import group
from demo_app.tasks import add, io_wait
n, io_n, io_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
add.delay(0, 0).get(timeout=60)  # warm connections
t = time.monotonic(); group(add.s(i, i) for i in range(n))().get(timeout=300); add_s = time.monotonic() - t
t = time.monotonic(); group(io_wait.s(io_s) for _ in range(io_n))().get(timeout=300); io_wall = time.monotonic() - t
print(json.dumps({"add_per_s": n / add_s, "io_wall_s": io_wall}))
"""


def sh(container, *argv):
    return subprocess.run(["podman", "exec", container, *argv], check=True, capture_output=True, text=True).stdout


def read_smaps_rollup(container, pid):
    """As root, else as the process owner: processes that changed uid are not dumpable, and podman gives
    root no CAP_SYS_PTRACE to read their smaps."""
    try:
        return sh(container, "cat", "/proc/%s/smaps_rollup" % pid)
    except subprocess.CalledProcessError:
        owner = sh(container, "stat", "-c", "%U", "/proc/%s" % pid).strip()
        return sh(container, "runuser", "-u", owner, "--", "cat", "/proc/%s/smaps_rollup" % pid)


def memory_kib(container, pid):
    fields = {}
    for line in read_smaps_rollup(container, pid).splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields["Rss"], fields["Pss"]


def processes(container):
    """(label, pid) of the services the plan budgets for."""
    found = [("supervisord", sh(container, "supervisorctl", "pid").strip()),
             ("redis-server", sh(container, "systemctl", "show", "-p", "MainPID", "--value", "redis-server").strip())]
    for line in sh(container, "supervisorctl", "status").splitlines():
        name = line.split()[0]
        pid = sh(container, "supervisorctl", "pid", name).strip()
        found.append((name + " (parent)" if name != "celery-beat" else name, pid))
        if name == "celery-beat":
            continue
        children = sh(container, "ps", "--ppid", pid, "-o", "pid=").split()
        found += [("%s child %d" % (name, i + 1), child) for i, child in enumerate(children)]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", default="vpsstack-demo")
    parser.add_argument("--tasks", type=int, default=500, help="add() tasks for the throughput figure")
    parser.add_argument("--io-tasks", type=int, default=8, help="io_wait(1 s) tasks for the wall-time figure")
    args = parser.parse_args()

    print("| process | RSS MiB | PSS MiB |\n|---|---:|---:|")
    for label, pid in processes(args.container):
        rss, pss = memory_kib(args.container, pid)
        print("| %s | %.1f | %.1f |" % (label, rss / 1024, pss / 1024))

    out = sh(args.container, *APP_ENV, "runuser", "-u", "celery", "--", VENV_PY, "-c", THROUGHPUT,
             str(args.tasks), str(args.io_tasks), "1")
    figures = json.loads(out)
    print("\n%d add() round trips: %.0f tasks/s; %d io_wait(1 s) tasks: %.1f s wall"
          % (args.tasks, figures["add_per_s"], args.io_tasks, figures["io_wall_s"]))


if __name__ == "__main__":
    main()
