"""Read-only health and drift check of one host of a vpsstack.celery stack.

One code for both of its callers: the module vpsstack.celery.host_audit (the audit role) calls run(spec, password),
and the alerts role's timer runs this file as a script, `python3 -I vpsstack_audit.py SPEC`, with SPEC the base64
of the JSON spec and the Redis password on stdin (or REDISCLI_AUTH when run by hand): never in argv, where ps
shows it. The spec says what the plan and the roles' settings expect (roles/audit/tasks/spec.yml).
Output: {"lines": [[status, check, detail], ...], "beat_pids": [...]}, status OK, WARN or FAIL (the script prints
it as JSON). Changes nothing: Redis gets only reads (CONFIG GET, INFO, LLEN, ZRANGE, SCAN, TYPE, MEMORY USAGE),
processes are only read from /proc. The stdlib only: a Redis-only host has no Python Redis client
(community.general.redis_info needs one, and installing it would be a change).
"""
from __future__ import annotations

import base64
import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

LINES = []


def report(status, check, detail):
    LINES.append([status, check, detail])


def level(value, warn, fail):
    """OK/WARN/FAIL for a value that is worse when higher."""
    return "FAIL" if value >= fail else "WARN" if value >= warn else "OK"


# --- Redis over its wire protocol (RESP2)

class Redis:
    def __init__(self, port, password):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        if password:
            self.call("AUTH", password)

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for arg in args:
            data = str(arg).encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(out)
        return self._read()

    def _read(self):
        line = self.file.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = self.file.read(int(rest) + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            return None if int(rest) < 0 else [self._read() for _index in range(int(rest))]
        raise RuntimeError("unexpected reply %r" % line)

    def info(self, section):
        pairs = (ln.split(":", 1) for ln in self.call("INFO", section).splitlines() if ":" in ln)
        return dict(pairs)

    def scan(self, pattern):
        cursor, keys = "0", []
        while True:
            cursor, batch = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys += batch
            if cursor == "0":
                return keys


def redis_password():
    """REDISCLI_AUTH when run by hand, else the first line of stdin (the role's way: never in argv)."""
    if "REDISCLI_AUTH" in os.environ or sys.stdin.isatty():
        return os.environ.get("REDISCLI_AUTH", "")
    return sys.stdin.readline().rstrip("\n")


def audit_redis(spec, password=""):
    try:
        redis = Redis(spec["port"], password)
        redis.call("PING")
    except (OSError, RuntimeError) as exc:
        report("FAIL", "redis reachable", "127.0.0.1:%s: %s" % (spec["port"], exc))
        return
    report("OK", "redis reachable", "127.0.0.1:%s" % spec["port"])
    for key, expected in spec["expect"].items():
        actual = redis.call("CONFIG", "GET", key)[1]
        status = "OK" if actual == str(expected) else spec["drift_status"].get(key, "FAIL")
        report(status, "redis %s" % key, actual if status == "OK" else "%s, the role sets %s" % (actual, expected))

    memory, stats = redis.info("memory"), redis.info("stats")
    used, maxmemory = int(memory["used_memory"]), int(memory["maxmemory"])
    if maxmemory:
        pct = 100 * used // maxmemory
        report(level(pct, spec["memory_warn_pct"], spec["memory_fail_pct"]), "redis memory",
               "%d %% of maxmemory (%d of %d bytes)" % (pct, used, maxmemory))
    evicted = int(stats.get("evicted_keys", 0))
    report("WARN" if evicted else "OK", "redis evicted keys", "%d since start" % evicted)
    rejected = sum(int(re.search(r"count=(\d+)", v).group(1))
                   for k, v in redis.info("errorstats").items() if k in ("errorstat_OOM", "errorstat_MISCONF"))
    report("FAIL" if rejected else "OK", "redis rejected writes", "%d (OOM/MISCONF) since start" % rejected)
    persistence = redis.info("persistence")
    bad = {k: v for k, v in persistence.items()
           if k in ("rdb_last_bgsave_status", "aof_last_bgrewrite_status", "aof_last_write_status") and v != "ok"}
    report("FAIL" if bad else "OK", "redis persistence", json.dumps(bad) if bad else "last save/rewrite/write ok")

    # kombu puts the project's global_keyprefix before every key it writes (queues, unacked_index, event lists).
    prefix = spec.get("keyprefix") or ""
    for queue in spec["queues"]:
        length = redis.call("LLEN", prefix + queue)
        report(level(length, spec["queue_warn_length"], spec["queue_fail_length"]), "queue %s" % queue,
               "%d waiting" % length)
    oldest = redis.call("ZRANGE", prefix + "unacked_index", 0, 0, "WITHSCORES")
    timeout = spec["visibility_timeout"]
    if oldest:
        age = int(time.time() - float(oldest[1]))
        pct = 100 * age // timeout
        report(level(pct, spec["unacked_warn_pct"], 100), "oldest unacked",
               "%d s old, %d %% of the visibility timeout (%d s): redelivered at 100 %%" % (age, pct, timeout))
    else:
        report("OK", "oldest unacked", "none")
    audit_orphans(redis, spec, used)


def glob_escape(text):
    """`text` matched literally in a SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def audit_orphans(redis, spec, used):
    # Celery's events reach Flower by PUBLISH on Redis: a celeryev.* list is a queue nobody consumes.
    # Pidbox replies nobody reads (a client gone before the answers came) stay as *.reply.celery.pidbox lists.
    for name, pattern in (("orphan event lists", "celeryev.*"), ("orphan pidbox replies", "*.reply.celery.pidbox")):
        keys = [k for k in redis.scan(glob_escape(spec.get("keyprefix") or "") + pattern)
                if redis.call("TYPE", k) == "list"]
        size = sum(redis.call("MEMORY", "USAGE", k) or 0 for k in keys)
        pct = 100 * size / used if used else 0
        allowed = 0 if name == "orphan event lists" else spec["orphan_warn_keys"]
        status = "FAIL" if pct >= spec["orphan_fail_pct"] else "WARN" if len(keys) > allowed else "OK"
        report(status, name, "%d keys, %d bytes (%.1f %% of used memory)" % (len(keys), size, pct))


# --- Worker programs under supervisor

def proc_limits_nofile(pid):
    with open("/proc/%d/limits" % pid) as fh:
        line = next(ln for ln in fh if ln.startswith("Max open files"))
    return int(line.split()[3])


def children(pid):
    found = []
    for path in glob.glob("/proc/%d/task/*/children" % pid):
        with open(path) as fh:
            found += [int(p) for p in fh.read().split()]
    return found


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:"))


def argv(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as fh:
        return fh.read().decode().split("\0")


def option(args, name):
    return args[args.index(name) + 1] if name in args else None


def supervisor_status():
    out = subprocess.run(["supervisorctl", "status"], capture_output=True, text=True, timeout=30,
                         check=False).stdout
    status = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pid = re.search(r"pid (\d+)", line)
            status[parts[0]] = (parts[1], int(pid.group(1)) if pid else None)
    return status


def planned_programs(spec):
    """What each group's program must run with: the role's template renders these from the plan."""
    planned = {g["name"]: g for g in spec["planned"]}
    programs = []
    for group in spec["groups"]:
        plan = planned[group["name"]]
        pool = group.get("pool", "prefork")
        programs.append({
            "name": "celery-" + group["name"],
            "pool": pool,
            "concurrency": None if group.get("autoscale") else plan["concurrency"],
            "max_memory_per_child_kib": (plan["max_memory_per_child_kib"] or None) if pool == "prefork" else None,
        })
    return programs + ([{"name": "celery-beat"}] if spec["beat"] else [])


def audit_worker(spec):
    spec["programs"] = planned_programs(spec)
    spec["nodes"] = ["%s@%s" % (g["name"], socket.gethostname()) for g in spec["groups"]]
    status = supervisor_status()
    supervisord = subprocess.run(["pgrep", "-o", "-x", "supervisord"], capture_output=True, text=True,
                                 check=False).stdout
    if supervisord.strip():
        audit_nofile("supervisord", int(supervisord), spec["nofile"])
    for program in spec["programs"]:
        state, pid = status.get(program["name"], ("MISSING", None))
        if state != "RUNNING":
            report("FAIL", program["name"], "%s (supervisorctl status)" % state)
            continue
        report("OK", program["name"], "RUNNING, pid %d" % pid)
        audit_nofile(program["name"], pid, spec["nofile"])
        if "pool" in program:
            audit_program_drift(program, pid)
    audit_celery(spec)
    audit_log_errors(spec)


def audit_nofile(name, pid, expected):
    actual = proc_limits_nofile(pid)
    report("OK" if actual >= expected else "FAIL", "%s nofile" % name,
           "%d%s" % (actual, "" if actual >= expected else ", the role sets %d" % expected))


def audit_program_drift(program, pid):
    args = argv(pid)
    running = {"pool": option(args, "--pool"), "concurrency": option(args, "--concurrency"),
               "max_memory_per_child_kib": option(args, "--max-memory-per-child")}
    expected = {k: None if program[k] is None else str(program[k]) for k in running}
    drift = {k: "%s, planned %s" % (running[k], expected[k]) for k in running if running[k] != expected[k]}
    labels = {"pool": "pool %s", "concurrency": "concurrency %s",
              "max_memory_per_child_kib": "max-memory-per-child %s KiB"}
    shown = ", ".join(labels[k] % v for k, v in running.items() if v)
    report("FAIL" if drift else "OK", "%s settings" % program["name"], json.dumps(drift) if drift else shown)
    limit = program["max_memory_per_child_kib"]
    if program["pool"] == "prefork" and limit:
        largest = max([rss_kib(c) for c in children(pid)] or [0])
        report(level(100 * largest // limit, 90, 200), "%s child RSS" % program["name"],
               "largest %d KiB of %d KiB per child (replaced after its task when above)" % (largest, limit))


def celery(*args):
    run = subprocess.run(["/usr/local/bin/vpsstack-celery", *args], capture_output=True, text=True, timeout=60,
                         check=False)
    return run.stdout


def audit_celery(spec):
    if not spec["nodes"]:
        return
    destination = ",".join(spec["nodes"])
    pong = celery("inspect", "ping", "--json", "--timeout", "5", "--destination", destination)
    answered = set(json.loads(pong or "{}"))
    missing = sorted(set(spec["nodes"]) - answered)
    report("FAIL" if missing else "OK", "workers answer a ping",
           "no answer from %s" % ", ".join(missing) if missing else ", ".join(sorted(answered)))
    confs = json.loads(celery("inspect", "conf", "--json", "--timeout", "5", "--destination", destination) or "{}")
    for node in sorted(confs):
        conf = confs[node]
        loaded = {"task_acks_late": conf.get("task_acks_late"),
                  "visibility_timeout": (conf.get("broker_transport_options") or {}).get("visibility_timeout")}
        expected = {"task_acks_late": True, "visibility_timeout": spec["visibility_timeout"]}
        report("OK" if loaded == expected else "FAIL", "%s loaded settings" % node,
               "acks_late %(task_acks_late)s, visibility_timeout %(visibility_timeout)s" % loaded
               + ("" if loaded == expected else ", the role sets %s" % json.dumps(expected)))


# The worker role's poison-task guard logs this when it gives a task up (roles/worker/files/vpsstack_poison_guard.py).
POISON_LINE = re.compile(r"Poison task (\S+?)\[")
# A runtime patch of the worker role logs this, once per program start, when it finds a library version other than
# the one it was tested with and does not install itself (the vpsstack_*.py patches the worker role loads).
PATCH_SKIPPED_LINE = re.compile(r"(vpsstack_\w+) patch skipped: found (.+?); tested with")


def scan_worker_log(lines):
    """(WorkerLostError lines, names of the tasks the poison guard gave up on, "patch (versions found)" of the
    runtime patches that skipped themselves) in one worker log."""
    lost, poison, skipped = 0, [], []
    for line in lines:
        lost += "WorkerLostError" in line
        found = POISON_LINE.search(line)
        if found:
            poison.append(found.group(1))
        found = PATCH_SKIPPED_LINE.search(line)
        if found:
            skipped.append("%s (%s)" % found.groups())
    return lost, poison, skipped


def audit_log_errors(spec):
    boot = time.time() - float(open("/proc/uptime").read().split()[0])
    lost, poison, skipped = 0, [], []
    for path in glob.glob(os.path.join(spec["log_dir"], "celery-*.log")):
        if os.path.getmtime(path) < boot:
            continue
        with open(path, errors="replace") as fh:
            file_lost, file_poison, file_skipped = scan_worker_log(fh)
        lost += file_lost
        poison += file_poison
        skipped += file_skipped
    report("WARN" if lost else "OK", "WorkerLostError in worker logs", "%d lines" % lost)
    # A poison task was failed, not run: its caller never got a result. Name the tasks so someone fixes them.
    report("WARN" if poison else "OK", "poison tasks given up",
           "%d: %s" % (len(poison), ", ".join(sorted(set(poison)))) if poison else "none")
    # The programs run without a fix they were meant to have (time-limit timers pile up in the prefork parent, or
    # gevent/eventlet/threads fetch one window per 2 s): name the patch and the version that made it step aside.
    report("WARN" if skipped else "OK", "runtime patches skipped", "; ".join(sorted(set(skipped))) or "none")


# --- Every host

def beat_running():
    """Pids of celery beat processes (the program's own, or one started by hand)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            args = argv(int(path.split("/")[2]))
        except OSError:
            continue
        if any(a.endswith("/celery") or a == "celery" for a in args[:2]) and "beat" in args:
            found.append(int(path.split("/")[2]))
    return found


def oom_kills():
    """The kernel's OOM kill count of this machine: a container's own cgroup counter, else the host's since boot."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        if os.path.exists(path) and (path.endswith("oom_control") or os.path.exists("/run/.containerenv")):
            with open(path) as fh:
                found = [int(ln.split()[1]) for ln in fh if ln.startswith("oom_kill ")]
            if found:
                return found[0], "this cgroup, " + path
    with open("/proc/vmstat") as fh:
        return next((int(ln.split()[1]) for ln in fh if ln.startswith("oom_kill ")), 0), "since boot"


def audit_host(spec):
    meminfo = dict(ln.split(":", 1) for ln in open("/proc/meminfo"))
    total, free = (int(meminfo[k].split()[0]) for k in ("SwapTotal", "SwapFree"))
    if total:
        pct = 100 * (total - free) // total
        report(level(pct, spec["swap_warn_pct"], spec["swap_fail_pct"]), "swap in use",
               "%d %% of %d MiB" % (pct, total // 1024))
    else:
        report("OK", "swap in use", "no swap")
    kills, source = oom_kills()
    report("FAIL" if kills else "OK", "kernel OOM kills", "%d (%s)" % (kills, source))
    if spec.get("flower_budget_mb"):
        pid = subprocess.run(["systemctl", "show", "--property", "MainPID", "--value", "flower"],
                             capture_output=True, text=True, check=False).stdout.strip()
        if pid in ("", "0"):
            report("FAIL", "flower", "not running")
        else:
            rss = rss_kib(int(pid)) // 1024
            # Over its budget: WARN (the kernel reclaims from it); at twice the budget, its MemoryMax by default: FAIL.
            report(level(100 * rss // spec["flower_budget_mb"], 100, 200), "flower RSS",
                   "%d MiB of its %d MB budget" % (rss, spec["flower_budget_mb"]))


def guarded(section, audit, spec):
    """A section that cannot read what it needs (a missing program, a dead service) is a FAIL line, not a crash."""
    try:
        audit(spec)
    except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        report("FAIL", section, "could not be read: %s: %s" % (type(exc).__name__, exc))


def run(spec, password=""):
    """The lines of every section the spec asks for, and the beat processes of this host."""
    del LINES[:]
    if spec.get("redis"):
        guarded("redis", lambda redis_spec: audit_redis(redis_spec, password), spec["redis"])
    if spec.get("worker"):
        guarded("workers", audit_worker, spec["worker"])
    guarded("host", audit_host, spec)
    return {"lines": list(LINES), "beat_pids": beat_running()}


def main():
    spec = json.loads(base64.b64decode(sys.argv[1]))
    sys.stdout.write(json.dumps(run(spec, redis_password())) + "\n")


if __name__ == "__main__":
    main()
