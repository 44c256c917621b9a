"""Liveness watchdog of this host's Celery worker programs, run by vpsstack-watchdog.timer (docs/worker.md).

One run: read the programs' states from supervisord (XML-RPC on its socket); send ONE broadcast ping, through the
broker with the workers' own settings, to the nodes (GROUP@hostname) of the programs that are RUNNING; count per
program and pid the runs in a row it did not answer (a state file carries the count from one run to the next). A
program that reaches --failures is restarted warm with `supervisorctl restart` (TERM, then SIGKILL of its group
after stopwaitsecs), one program at a time, and each restart is a journal line at warning priority.
Not its business: a program that is not RUNNING (STARTING, BACKOFF, FATAL, or STOPPED by an operator: it stays
stopped) and beat (no pidbox). A run that cannot ping (broker away, settings it cannot speak) judges nothing.

The ping is Celery's own remote-control message, written on the Redis wire with the stdlib: a PUBLISH on the
pidbox channel every worker node listens to (/DB.celery.pidbox, what `celery inspect ping` sends; kombu's Redis
transport), whose reply_to names the default exchange (""), so each node LPUSHes its answer straight onto this
run's reply list, read with BRPOP. No kombu, no Celery, no project code: a run costs a fraction of `celery inspect
ping` (docs/worker.md, "Liveness watchdog"), declares no binding, and, consuming no queue, never re-queues unacked
messages (the visibility-timeout trap of other clients, celery-facts.md). The broker URL and password come from the
settings module the programs load (ENFORCED in worker_config_dir/SETTINGS.py, 0640 root:celery).

Usage (root):
    python3 -I -B vpsstack_watchdog.py --config-dir /etc/celery --settings vpsstack_celery_settings \
        --failures 3 --timeout 10 --state /var/lib/vpsstack-watchdog/state.json default io
Exit status: 0, also when the ping was not possible; 1 when supervisord cannot be read or a restart failed.
"""
import argparse
import base64
import configparser
import http.client
import importlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
import xmlrpc.client

# sd-daemon(3) priority prefixes, read by journald from a service's stdout.
ERR, WARNING, NOTICE = 3, 4, 5
# broker_transport_options that change the pidbox channel's name when not kombu's default (True): not spoken here.
# global_keyprefix is (every key and channel starts with it); sep and priority_steps only name priority queues.
RENAMING_OPTIONS = ("fanout_prefix", "fanout_patterns")
SUPERVISORD_CONF = "/etc/supervisor/supervisord.conf"


class PingFailed(Exception):
    pass


def log(priority, message):
    prefix = "<%d>" % priority if os.environ.get("JOURNAL_STREAM") else ""
    print(prefix + message, flush=True)


# --- The decision, pure: unit-tested in tests/unit/roles/test_watchdog_script.py

def judge(previous, status, nodes, answered, failures):
    """The count after this run and the programs to restart.

    previous: {program: {"pid": pid, "missed": n}} from the last run; status: {program: (state, pid)};
    nodes: {program: node name}; answered: the node names that answered, or None when no ping was possible;
    failures: misses in a row that restart a program.
    Returns (state, [(program, pid, missed)]). Only RUNNING programs are judged; a program answering, not RUNNING,
    or running under another pid (restarted by someone else) starts again from 0. No ping: no count moves.
    """
    if answered is None:
        return {program: count for program, count in previous.items()
                if status.get(program, (None, None)) == ("RUNNING", count["pid"])}, []
    state, restart = {}, []
    for program, node in sorted(nodes.items()):
        running, pid = status.get(program, ("MISSING", None))
        if running != "RUNNING" or node in answered:
            continue
        before = previous.get(program, {})
        missed = (before.get("missed", 0) if before.get("pid") == pid else 0) + 1
        if missed >= failures:
            restart.append((program, pid, missed))
        else:
            state[program] = {"pid": pid, "missed": missed}
    return state, restart


# --- Celery's remote-control message on kombu's Redis transport (checked against kombu 5.7: a ping sent by
# `celery inspect ping`, read with SUBSCRIBE, has this envelope)

def ping_message(nodes, ticket, reply_key, exchange, timeout):
    body = json.dumps({"method": "ping", "arguments": {}, "destination": sorted(nodes), "pattern": None,
                       "matcher": None, "ticket": ticket, "reply_to": {"exchange": "", "routing_key": reply_key}})
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"clock": 0, "expires": time.time() + timeout},
        "properties": {"delivery_mode": 2, "delivery_info": {"exchange": exchange, "routing_key": ""},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    })


def reply_nodes(raw, ticket):
    """Node names in one reply ({node: {"ok": "pong"}}); empty for another ticket's reply. ValueError when it
    cannot be read (not JSON: the role sets the json serializer)."""
    message = json.loads(raw)
    if (message.get("headers") or {}).get("ticket") != ticket:
        return set()
    body = message.get("body") or ""
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    if message.get("content-type") != "application/json":
        raise ValueError("a reply in %s, not JSON" % message.get("content-type"))
    reply = json.loads(body)
    if not isinstance(reply, dict):
        raise ValueError("a reply that is not a JSON object")
    return set(reply)


def wire_names(settings, hostname):
    """(channel the nodes listen on, pidbox exchange, this host's reply list as the ping names it, the Redis key of
    that list); PingFailed for settings not spoken here. kombu's Redis client puts global_keyprefix before the
    channel of a PUBLISH and the key of an LPUSH (kombu 5.7 transport/redis.py, PrefixedStrictRedis)."""
    url = urllib.parse.urlsplit(settings["broker_url"])
    if url.scheme != "redis" or ";" in settings["broker_url"]:
        raise PingFailed("only a single redis:// broker URL is supported, got %s://" % url.scheme)
    options = settings.get("broker_transport_options") or {}
    renaming = sorted(name for name in RENAMING_OPTIONS if options.get(name, True) is not True)
    if renaming:
        raise PingFailed("broker_transport_options %s rename the broker's keys: not supported" % ", ".join(renaming))
    prefix = options.get("global_keyprefix") or ""
    exchange = "%s.pidbox" % settings.get("control_exchange", "celery")
    reply = "vpsstack-watchdog.%s.reply" % hostname
    return "%s/%d.%s" % (prefix, database(url), exchange), exchange, reply, prefix + reply


def database(url):
    """The Redis database of a split broker URL (its path, as kombu reads it): 0 when none."""
    return int(url.path.strip("/") or 0)


class Redis:
    """Just enough RESP2 for AUTH, SELECT, DEL, PUBLISH and BRPOP."""

    def __init__(self, url, connect_timeout, timeout):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "localhost", parts.port or 6379),
                                             timeout=connect_timeout)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rb")
        password = urllib.parse.unquote(parts.password or "")
        if password:
            user = urllib.parse.unquote(parts.username or "")
            self.call("AUTH", *([user] if user else []), password)
        if database(parts):
            self.call("SELECT", database(parts))

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for arg in args:
            data = str(arg).encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the broker")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise PingFailed("broker error: %s" % rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self.file.read(int(rest) + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            return None if int(rest) < 0 else [self.read() for _index in range(int(rest))]
        raise PingFailed("unexpected reply %r" % line[:80])

    def close(self):
        self.sock.close()


def ping(settings, nodes, timeout, hostname):
    """Node names that answered one broadcast ping within `timeout` s; PingFailed when no ping was possible."""
    options = settings.get("broker_transport_options") or {}
    ticket, answered = str(uuid.uuid4()), set()
    try:
        channel, exchange, reply, key = wire_names(settings, hostname)
        redis = Redis(settings["broker_url"], float(options.get("socket_connect_timeout") or 5), timeout + 10)
        try:
            # A late answer to an earlier run (a node that was slow) is dropped here, and at the end of this run.
            redis.call("DEL", key)
            # Redis counts the clients subscribed to the channel, on every host, frozen ones included. None: the
            # nodes listen elsewhere (e.g. a control_exchange the project sets itself), or no worker anywhere is
            # connected: either way silence here would prove nothing about the programs of this host.
            if not redis.call("PUBLISH", channel, ping_message(nodes, ticket, reply, exchange, timeout)):
                raise PingFailed("no worker listens on %s (a control_exchange set outside worker_extra_settings, or "
                                 "none connected to the broker)" % channel)
            deadline = time.monotonic() + timeout
            while not set(nodes) <= answered and time.monotonic() < deadline:
                # Whole seconds (Redis < 6 takes no fraction); 0 would block for ever.
                popped = redis.call("BRPOP", key, max(1, math.ceil(deadline - time.monotonic())))
                if popped is None:
                    break
                answered |= reply_nodes(popped[1], ticket)
            redis.call("DEL", key)
        finally:
            redis.close()
    except (OSError, ValueError) as exc:
        raise PingFailed("%s: %s" % (type(exc).__name__, exc)) from exc
    return answered


# --- supervisord, read over its XML-RPC socket (what supervisorctl does, without its start-up cost)

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.unix_path)


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path):
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):
        return UnixHTTPConnection(self.unix_path)


def supervisor(conf=SUPERVISORD_CONF):
    """An XML-RPC proxy to supervisord, found as supervisorctl finds it ([supervisorctl] of its configuration)."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), strict=False)
    parser.read(conf)
    url = parser.get("supervisorctl", "serverurl", fallback="unix:///var/run/supervisor.sock")
    user, password = (parser.get("supervisorctl", k, fallback="") for k in ("username", "password"))
    auth = "%s:%s@" % (urllib.parse.quote(user, safe=""), urllib.parse.quote(password, safe="")) if user else ""
    if url.startswith("unix://"):
        return xmlrpc.client.ServerProxy("http://%slocalhost/RPC2" % auth, transport=UnixTransport(url[7:]))
    return xmlrpc.client.ServerProxy(url.replace("://", "://" + auth, 1).rstrip("/") + "/RPC2")


def supervisor_status():
    """{program: (state, pid or None)} of every program."""
    return {info["name"]: (info["statename"], info["pid"] or None)
            for info in supervisor().supervisor.getAllProcessInfo()}


# --- State and restarts

def read_state(path):
    """The counts of the last run; whatever is missing or malformed counts as no miss."""
    try:
        with open(path) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {program: count for program, count in state.items()
            if isinstance(count, dict) and isinstance(count.get("pid"), int) and isinstance(count.get("missed"), int)}


def write_state(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, sort_keys=True)
    os.replace(tmp, path)


def restart(program, pid, missed, node):
    """supervisorctl restart, if the program is still RUNNING under the pid that missed (an operator's stop since
    the status read is left alone). True unless the restart failed."""
    now = supervisor_status().get(program, ("MISSING", None))
    if now != ("RUNNING", pid):
        log(NOTICE, "%s: no restart, it is %s now (was RUNNING, pid %s)" % (program, now[0], pid))
        return True
    log(WARNING, "%s: node %s did not answer %d pings in a row: restarting it (supervisorctl restart, pid %d)"
        % (program, node, missed, pid))
    run = subprocess.run(["supervisorctl", "restart", program], capture_output=True, text=True, check=False)
    after = supervisor_status().get(program, ("MISSING", None))
    ok = run.returncode == 0 and after[0] == "RUNNING"
    log(WARNING if ok else ERR, "%s: restarted by the watchdog, now %s pid %s%s" % (
        program, after[0], after[1], "" if ok else " (supervisorctl: %s)" % (run.stdout + run.stderr).strip()))
    return ok


def load_settings(config_dir, module, key_options_file=None):
    """The settings the programs enforce, with the project's key options (JSON file the worker role writes from its
    settings check) merged under them, as vpsstack_settings_merge.py merges them for the programs."""
    sys.path.insert(0, config_dir)
    settings = dict(importlib.import_module(module).ENFORCED)
    if key_options_file:
        with open(key_options_file, encoding="utf-8") as handle:
            project = json.load(handle)
        settings["broker_transport_options"] = dict(project, **(settings.get("broker_transport_options") or {}))
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", required=True, help="directory of the settings module")
    parser.add_argument("--settings", required=True, help="settings module the programs load")
    parser.add_argument("--failures", type=int, required=True, help="misses in a row that restart a program")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait for the answers")
    parser.add_argument("--state", required=True, help="file that carries the counts between runs")
    parser.add_argument("--key-options", help="JSON file: the project's broker_transport_options that rename keys")
    parser.add_argument("groups", nargs="+", help="worker groups: program celery-GROUP, node GROUP@hostname")
    args = parser.parse_args(argv)

    hostname = socket.gethostname()
    nodes = {"celery-" + group: "%s@%s" % (group, hostname) for group in args.groups}
    try:
        status = supervisor_status()
    except (OSError, xmlrpc.client.Error) as exc:
        log(ERR, "cannot read the programs' states from supervisord: %s" % exc)
        return 1
    running = [node for program, node in nodes.items() if status.get(program, ("",))[0] == "RUNNING"]
    answered = set()
    if running:
        try:
            answered = ping(load_settings(args.config_dir, args.settings, args.key_options), running, args.timeout, hostname)
        except PingFailed as exc:
            log(WARNING, "no ping possible, no program judged this run: %s" % exc)
            answered = None
    previous = read_state(args.state)
    state, due = judge(previous, status, nodes, answered, args.failures)
    for program, count in sorted(state.items()):
        if previous.get(program) != count:
            log(NOTICE, "%s: node %s did not answer a ping within %g s (%d of %d in a row)"
                % (program, nodes[program], args.timeout, count["missed"], args.failures))
    for program in sorted(set(previous) - set(state)):
        if answered and nodes.get(program) in answered:
            log(NOTICE, "%s: node %s answers again" % (program, nodes[program]))
    write_state(args.state, state)
    failed = [program for program, pid, missed in due if not restart(program, pid, missed, nodes[program])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
