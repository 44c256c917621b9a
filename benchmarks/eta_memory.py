#!/usr/bin/env python3
"""What ETA/countdown tasks held by a worker cost, and what worker_eta_task_limit does to tasks that are due.

Runs on this machine, no container: a throw-away redis-server (must be on PATH) on a free port and one prefork
worker (-c 2, acks_late, prefetch multiplier 1: the role's settings) from the Python running this script, which
needs celery[redis] and psutil. Two measurements, printed as one line each (docs/worker.md quotes them):

1. N countdown tasks (1 h) with no limit: the worker parent's RSS before and after it holds them all.
2. The same with --limit L (< N): does a plain task sent afterwards run within --wait seconds?

    python benchmarks/eta_memory.py --n 20000 --limit 100
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import redis

APP = '''
import os
from celery import Celery
app = Celery("etaapp", broker=os.environ["ETA_BROKER"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1,
                broker_transport_options={"visibility_timeout": 7200})
if os.environ.get("ETA_LIMIT"):
    app.conf.worker_eta_task_limit = int(os.environ["ETA_LIMIT"])

@app.task
def later(i, pad):
    return i

@app.task
def due(key):
    import redis
    redis.Redis.from_url(os.environ["ETA_BROKER"]).set(key, 1)
'''


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def answers(broker):
    try:
        return redis.Redis.from_url(broker).ping()
    except redis.ConnectionError:
        return False


def rss_mib(pid):
    return psutil.Process(pid).memory_info().rss / 2**20


def measure(workdir, broker, n, limit, pad, wait):
    """Start a worker, send n ETA tasks, then one due task; return parent RSS before/after and whether it ran."""
    client = redis.Redis.from_url(broker)
    client.flushdb()
    env = dict(os.environ, ETA_BROKER=broker, PYTHONPATH=workdir, ETA_LIMIT=str(limit or ""))
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "etaapp", "worker", "-c", "2", "-l", "WARNING",
                               "--without-gossip", "--without-mingle"], env=env, cwd=workdir)
    try:
        sys.path.insert(0, workdir)
        os.environ["ETA_BROKER"] = broker
        import etaapp  # noqa: E402  (written at run time)
        time.sleep(6)  # past the worker's start-up allocations
        before = rss_mib(worker.pid)
        for i in range(n):
            etaapp.later.apply_async((i, "x" * pad), countdown=3600)
        held = min(n, limit) if limit else n
        wait_until(lambda: client.hlen("unacked") >= held, 120)
        time.sleep(3)
        after = rss_mib(worker.pid)
        etaapp.due.delay("due-ran")
        ran = wait_until(lambda: client.exists("due-ran"), wait)
        return before, after, client.hlen("unacked"), ran
    finally:
        worker.terminate()
        worker.wait(60)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="ETA tasks sent (default 20000)")
    parser.add_argument("--limit", type=int, default=100, help="worker_eta_task_limit of the second run (default 100)")
    parser.add_argument("--pad", type=int, default=200, help="bytes of argument per task (default 200)")
    parser.add_argument("--wait", type=float, default=15, help="seconds the due task may take (default 15)")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "etaapp.py"), "w", encoding="utf-8") as handle:
            handle.write(APP)
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                   "--dir", workdir], stdout=subprocess.DEVNULL)
        broker = "redis://127.0.0.1:%d/0" % port
        try:
            wait_until(lambda: answers(broker), 10)
            for n, limit in ((args.n, None), (2 * args.limit, args.limit)):
                before, after, unacked, ran = measure(workdir, broker, n, limit, args.pad, args.wait)
                print("%d ETA tasks, worker_eta_task_limit %s: parent RSS %.1f -> %.1f MiB (%.2f KiB per held task); "
                      "unacked %d; a due task sent after them ran within %g s: %s"
                      % (n, limit, before, after, (after - before) * 1024 / max(1, unacked), unacked, args.wait,
                         "yes" if ran else "NO"), flush=True)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
