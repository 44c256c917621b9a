"""Live behaviour of the worker role: sizing from cgroup limits, limits, round trip, leaks, graceful restart.

Tests run in file order: the pid comparison (idempotent converge did not restart) comes before the tests
that replace children or restart programs.
"""
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import nofile_of, scenario_hosts, wait_for  # noqa: E402

testinfra_hosts = scenario_hosts("all")

NOFILE = 20000  # molecule.yml: baseline_nofile -> worker_nofile
EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
# The client runs as the worker user with the programs' environment (settings are 0640 root:celery).
CLIENT = (
    "cd /opt/celery/app && runuser -u celery -- env PYTHONDONTWRITEBYTECODE=1 "
    "PYTHONPATH=/etc/celery:/opt/celery/app CELERY_CONFIG_MODULE=vpsstack_celery_settings "
    "/opt/celery/venv/bin/python -m demo_app.client"
)


def state(host):
    name = host.backend.get_hostname()
    with open(os.path.join(EPHEMERAL, f"worker-state-{name}.json")) as fh:
        return json.load(fh)


def client(host, *args):
    return json.loads(host.check_output(CLIENT + " " + " ".join(f"'{a}'" for a in args)))


def node(host, group):
    return f"{group}@{host.check_output('hostname')}"


def pid_of(host, program):
    return int(host.check_output(f"supervisorctl pid {program}"))


def test_programs_are_running(host):
    status = host.check_output("supervisorctl status")
    for program in state(host)["programs"]:
        line = next((ln for ln in status.splitlines() if ln.startswith(program + " ")), "")
        assert "RUNNING" in line, status
    assert host.service("supervisor").is_enabled


def test_workers_run_without_gossip_and_mingle(host):
    """worker_gossip / worker_mingle default to false: the flags are on the running parents, and no worker asked
    its neighbours at start (mingle logs 'mingle: searching for neighbors' at INFO, celery/worker/consumer/mingle.py)."""
    for program in (p for p in state(host)["programs"] if p != "celery-beat"):
        argv = host.file(f"/proc/{pid_of(host, program)}/cmdline").content_string.split("\0")
        assert "--without-gossip" in argv and "--without-mingle" in argv, argv
        log = host.file(f"/var/log/celery/{program}.log").content_string
        assert "celery@" in log or "ready." in log, "the log shows no start at all: " + log[-500:]
        assert "mingle: searching for neighbors" not in log, log[-2000:]


def test_second_converge_did_not_restart_workers(host):
    saved = state(host)
    assert host.check_output("supervisorctl pid " + " ".join(saved["programs"])).splitlines() == saved["pids"]


def test_concurrency_follows_the_cgroup_limits(host):
    plan = state(host)["plan"]
    assert plan["ram_mb"] <= 1024 and plan["vcpus"] == 1, plan
    planned = {g["name"]: g for g in plan["worker_groups"]}
    measured = client(host, "stats", node(host, "default"))
    assert measured["max-concurrency"] == planned["default"]["concurrency"]
    assert client(host, "stats", node(host, "leaky"))["max-concurrency"] == 1
    # The same groups on the machine's 24 GB / 2 CPUs (what a cgroup-blind role would see) plan more.
    sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "plugins", "module_utils"))
    import sizing

    groups = [{"name": "default"},
              {"name": "leaky", "concurrency": 1, "child_mb": 60, "max_memory_per_child_kib": 98304},
              {"name": "io", "pool": "gevent", "weight": 0.1}]
    blind = sizing.memory_plan({"ram_mb": 24 * 1024, "vcpus": 2}, worker_groups=groups, redis_local=True, beat=True)
    assert sizing.worker_concurrency(blind, "default") != measured["max-concurrency"]
    print(f"default group: measured {measured['max-concurrency']}, cgroup-blind plan "
          f"{sizing.worker_concurrency(blind, 'default')}")


def test_workers_get_the_open_file_limit(host):
    parent = pid_of(host, "celery-default")
    assert nofile_of(host, parent) == (NOFILE, NOFILE)
    for child in host.check_output(f"pgrep -P {parent}").split():
        assert nofile_of(host, child) == (NOFILE, NOFILE)
    assert f"minfds={NOFILE}" in host.file("/etc/supervisor/supervisord.conf").content_string


def test_settings_module_is_private(host):
    settings = host.file("/etc/celery/vpsstack_celery_settings.py")
    assert (settings.user, settings.group, settings.mode) == ("root", "celery", 0o640)


def test_running_workers_use_the_host_settings_not_the_projects_celeryconfig(host):
    """The app (tests/apps/own_celeryconfig) loads its own celeryconfig.py: acks early, prefetch 4, a dead broker
    port, kombu's 3600 s. The running workers must report the host's values instead."""
    # Role defaults: worker_max_eta_seconds 3600 + worker_task_time_limit 300 + worker_visibility_margin 300.
    visibility_timeout = 3600 + 300 + 300
    replies = json.loads(host.check_output("vpsstack-celery inspect conf --json --timeout 10"))
    assert set(replies) >= {node(host, "default"), node(host, "io")}, replies
    for conf in replies.values():
        assert conf["task_acks_late"] is True and conf["worker_prefetch_multiplier"] == 1, conf
        assert conf["broker_transport_options"]["visibility_timeout"] == visibility_timeout, conf
        # Broker restarts (docs/worker.md): no cancel on connection loss, retries, keepalive and timeouts.
        assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False, conf
        assert conf["broker_channel_error_retry"] is True and conf["result_backend_always_retry"] is True, conf
        assert conf["broker_transport_options"]["socket_keepalive"] is True, conf
        assert conf["task_reject_on_worker_lost"] is True and conf["task_time_limit"] == 300, conf
        assert "@127.0.0.1:6379/0" in conf["broker_url"], "the project's dead broker URL won"
        assert "@127.0.0.1:6379/1" in conf["result_backend"], "the project's dead result backend won"
        # Merged, not replaced: the project's own transport options stay beside ours.
        assert conf["broker_transport_options"]["queue_order_strategy"] == "priority", conf
        assert conf["broker_transport_options"]["priority_steps"] == [0, 3, 6, 9], conf


PATCHED = """
import json, vpsstack_celery_app
from celery.worker.consumer.events import Events
from kombu.transport.redis import Channel, MultiChannelPoller
print(json.dumps({name: getattr(method, "vpsstack_wrapped", False) for name, method in [
    ("consumer poll", MultiChannelPoller.get), ("event batching", Events.start),
    ("redis clients", Channel.conn_or_acquire)]}))
"""


def test_the_programs_app_installs_the_runtime_patches_on_the_hosts_versions(host):
    """What `celery -A vpsstack_celery_app` imports wraps kombu's and Celery's methods with the installed
    libraries (a patch that finds other versions skips itself): docs/worker.md, "Patches and versions"."""
    out = host.check_output(CLIENT.replace("-m demo_app.client", "-c '%s'" % PATCHED.replace("'", '"')))
    assert json.loads(out) == {"consumer poll": True, "event batching": True, "redis clients": True}, out


# The project's app as the settings check loads it on the host; PRODUCERS_USE_ENV_FILE is its last argument.
CHECK = (
    "cd /opt/celery/app && runuser -u celery -- env PYTHONDONTWRITEBYTECODE=1 "
    "PYTHONPATH=/etc/celery:/opt/celery/app CELERY_CONFIG_MODULE=vpsstack_celery_settings "
    "/opt/celery/venv/bin/python /etc/celery/vpsstack_celery_check.py vpsstack_celery_settings shopapp {}"
)


def test_the_check_sees_that_the_projects_own_producers_publish_elsewhere(host):
    """celeryconfig.py names 127.0.0.1:6390/9 and /10: loaded on its own, the project would send there."""
    alone = json.loads(host.check_output(CHECK.format("false")))["producer"]
    assert alone["differ"] == "broker port, database; backend port, database", alone
    assert alone["broker"] == "redis://127.0.0.1:6390/9" and ":***@" in alone["workers_broker"], alone
    with_file = json.loads(host.check_output(CHECK.format("true")))["producer"]
    assert with_file["differ"] == "" and with_file["unset"] == [] and with_file["error"] == "", with_file


PRODUCER = """cd /opt/celery/app && runuser -u celery -- sh -c '
set -a; . /etc/celery/producer.env; set +a
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/celery/app exec /opt/celery/venv/bin/python -' <<'PY'
from shopapp import app
print(app.send_task("demo_app.tasks.add", (20, 22)).get(timeout=60))
PY"""


def test_a_producer_with_the_projects_own_settings_and_the_producer_file_reaches_the_workers(host):
    """The web app's view: the project's code and celeryconfig.py, none of the host's settings, the producer
    file sourced (readable by the worker group), a task sent and its result read."""
    env_file = host.file("/etc/celery/producer.env")
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "celery", 0o640)
    assert host.check_output(PRODUCER).strip() == "42"


def run_playbook(name, *extra):
    """A playbook of this scenario against its inventory, as the molecule steps run them."""
    env = dict(os.environ)
    if os.path.exists(os.path.join(EPHEMERAL, "ansible.cfg")):
        env["ANSIBLE_CONFIG"] = os.path.join(EPHEMERAL, "ansible.cfg")
    return subprocess.run(
        ["ansible-playbook", "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]),
         os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], name), *extra],
        env=env, capture_output=True, text=True, timeout=900, check=False)


def test_producers_that_publish_elsewhere_fail_the_play_under_worker_strict_and_warn_without(host):
    """The project's celeryconfig.py sends to 127.0.0.1:6390/9: without the producer file, worker_strict fails the
    deploy naming both URLs (the password masked) and how to fix it; worker_strict=false warns. Nothing restarts."""
    saved = state(host)
    programs = "supervisorctl pid " + " ".join(saved["programs"])
    before = host.check_output(programs)
    failed = run_playbook("check_producers.yml", "-e", "worker_producers_use_env_file=false", "-e", "worker_strict=true")
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert "the project's own settings send tasks elsewhere than these workers consume" in failed.stdout
    assert "redis://127.0.0.1:6390/9" in failed.stdout and ":***@" in failed.stdout, failed.stdout[-3000:]
    assert "/etc/celery/producer.env" in failed.stdout
    assert "celery pw" not in failed.stdout and "celery%20pw" not in failed.stdout
    warned = run_playbook("check_producers.yml", "-e", "worker_producers_use_env_file=false", "-e", "worker_strict=false")
    assert warned.returncode == 0, warned.stdout[-3000:]
    assert "(worker_strict=false: warned only)" in warned.stdout, warned.stdout[-3000:]
    assert host.check_output(programs) == before


def test_task_round_trip(host):
    assert client(host, "add", 2, 3) == 5


def test_gevent_group_runs_in_one_process_with_the_planned_greenlets(host):
    planned = {g["name"]: g for g in state(host)["plan"]["worker_groups"]}["io"]
    assert planned["pool"] == "gevent" and planned["concurrency"] > 1
    stats = client(host, "stats", node(host, "io"))
    assert "gevent" in stats["implementation"]
    assert stats["max-concurrency"] == planned["concurrency"]
    assert host.run("/opt/celery/venv/bin/python -c 'import gevent'").rc == 0  # installed into the venv
    assert client(host, "add-on", "io", 20, 22) == 42
    print(f"io group: gevent, {stats['max-concurrency']} greenlets (planned {planned['concurrency']})")


def test_leaking_child_is_replaced_and_the_worker_keeps_serving(host):
    leaky = node(host, "leaky")
    before = client(host, "stats", leaky)["processes"]
    ran_in = client(host, "leak", 64, "leak")  # child RSS ~40 MiB + 64 MiB > max_memory_per_child 96 MiB
    assert ran_in in before
    after = wait_for(lambda: (p := client(host, "stats", leaky)["processes"]) and ran_in not in p and p, 30)
    assert after and ran_in not in after, f"child {ran_in} still there: {after}"
    assert client(host, "add-on", "leak", 2, 3) == 5
    assert client(host, "add", 4, 5) == 9
    print(f"leaky child {ran_in} replaced by {after}")


def test_graceful_restart_loses_no_task(host):
    ids = client(host, "send-record", "restart", 4, 8)
    # Restart while tasks run: supervisor TERMs the parent only; running tasks finish, queued ones wait.
    assert wait_for(lambda: client(host, "started-record", "restart") >= 2, 30), "tasks never started"
    host.check_output("supervisorctl restart celery-default")
    counts = client(host, "count-record", "restart", json.dumps(ids), 60)
    with open(os.path.join(EPHEMERAL, "worker-restart-counts.json"), "w") as fh:
        json.dump(counts, fh)
    print(f"restart: {counts}")
    assert counts["lost"] == [] and counts["completed"] == len(ids), counts
    assert counts["duplicates"] == 0, counts
    assert client(host, "add", 1, 1) == 2


# --- Broker restarts (docs/worker.md, "Broker restarts"). Load runs in the container while Redis restarts:
# prefork tasks of 2 s on the default group (2 children) and gevent tasks of 2 s on the io group.
SUPERVISOR_LOG = "/var/log/supervisor/supervisord.log"
LOADS = [("celery", "prefork", 0.5), ("io", "gevent", 10)]  # queue, label, tasks per second
# How long the count waits for every accepted task to be done (a message left in `unacked` waits 70 min).
COUNT_TIMEOUT = int(os.environ.get("WORKER_COUNT_TIMEOUT", "180"))


def start_load(host, key, queue, rate, stop_file, duration=240):
    host.check_output(f"rm -f {stop_file} /tmp/{key}.json")
    host.check_output(f"nohup sh -c \"{CLIENT} send-record-for {queue} {key} {rate} 2 {duration} {stop_file}"
                      f" > /tmp/{key}.json 2>/tmp/{key}.err\" >/dev/null 2>&1 &")


def finish_load(host, key, stop_file):
    host.check_output(f"touch {stop_file}")
    assert wait_for(lambda: host.file(f"/tmp/{key}.json").exists and host.file(f"/tmp/{key}.json").size > 0, 60)
    return json.loads(host.file(f"/tmp/{key}.json").content_string)


def log_sizes(host):
    files = host.check_output("ls /var/log/celery/celery-*.log").split() + [SUPERVISOR_LOG]
    return {f: int(host.check_output(f"stat -c %s {f}")) for f in files}


def new_log_lines(host, sizes):
    return {f: host.check_output(f"tail -c +{size + 1} {f}") for f, size in sizes.items()}


def restart_under_load(host, name, restart):
    """Load both pools, run restart(), stop the load, count. Returns counts per pool and the new log lines."""
    sizes = log_sizes(host)
    pids = {p: pid_of(host, p) for p in ("celery-default", "celery-io")}
    stop_file = f"/tmp/{name}.stop"
    for queue, label, rate in LOADS:
        start_load(host, f"{name}-{label}", queue, rate, stop_file)
    assert wait_for(lambda: client(host, "started-record", f"{name}-prefork") >= 2, 60), "no task started"
    restart()
    assert wait_for(lambda: host.run(REDIS_CLI + " PING").stdout.strip() == "PONG", 120)
    time.sleep(5)  # tasks sent after the restart too
    counts = {}
    for _queue, label, _rate in LOADS:
        sent = finish_load(host, f"{name}-{label}", stop_file)
        counts[label] = client(host, "count-record", f"{name}-{label}", json.dumps(sent["ids"]), COUNT_TIMEOUT)
        counts[label]["failed_sends"] = sent["failed"]
        counts[label]["lost"] = len(counts[label]["lost"])
    logs = new_log_lines(host, sizes)
    counts["pids_unchanged"] = {p: pid_of(host, p) == pid for p, pid in pids.items()}
    counts["crashes"] = [ln for text in logs.values() for ln in text.splitlines()
                         if "Unrecoverable error" in ln or "not expected" in ln]
    with open(os.path.join(EPHEMERAL, f"worker-{name}-counts.json"), "w") as fh:
        json.dump(counts, fh, indent=1)
    print(f"{name}: {json.dumps(counts)}")
    return counts, logs


REDIS_CLI = "REDISCLI_AUTH=molecule-admin-pw redis-cli -h 127.0.0.1"


# Ahead of /usr/bin on root's PATH: stops celery-io for real, then reports an error as supervisorctl does for a
# stop that went wrong (exit 1, "ERROR" in its output).
STOP_ERROR_SHIM = """cat > /usr/local/bin/supervisorctl <<'SH'
#!/bin/sh
/usr/bin/supervisorctl "$@"
rc=$?
if [ "$1" = stop ] && [ "$2" = celery-io ]; then echo "celery-io: ERROR (test: a stop that reports an error)"; exit 1; fi
exit $rc
SH
chmod 0755 /usr/local/bin/supervisorctl"""


def test_redis_restart_through_the_role_loses_nothing(host):
    """A restart-only change (redis_extra_config) through the redis role's own handler under load: the worker
    programs are warm-stopped first, so nothing is lost, nothing runs twice, no worker crashes. One stop reports an
    error: every program stopped is started again all the same, and the play fails naming the host."""
    run_id = host.check_output(REDIS_CLI + " INFO server | grep run_id")
    keepalive = str(int(host.check_output(REDIS_CLI + " CONFIG GET tcp-keepalive").split()[-1]) + 1)
    played = {}

    def restart():
        host.check_output(STOP_ERROR_SHIM)
        try:
            played["run"] = run_playbook("restart_redis.yml",
                                         "-e", json.dumps({"redis_extra_config": {"tcp-keepalive": keepalive}}))
        finally:
            host.check_output("rm -f /usr/local/bin/supervisorctl")

    counts, logs = restart_under_load(host, "role-restart", restart)
    run = played["run"]
    assert run.returncode != 0, run.stdout[-3000:] + run.stderr[-2000:]
    # The failed task's message: ansible's default callback writes it to stderr.
    assert "Stopping worker programs before the Redis restart reported errors" in run.stdout + run.stderr, \
        run.stdout[-2000:] + run.stderr[-3000:]
    assert "Warm-stop the worker programs" in run.stdout and "Start the worker programs again" in run.stdout
    # Both started again, the one whose stop reported the error too.
    status = host.check_output("/usr/bin/supervisorctl status celery-default celery-io")
    assert status.count("RUNNING") == 2, status
    assert host.check_output(REDIS_CLI + " INFO server | grep run_id") != run_id, "Redis did not restart"
    assert host.check_output(REDIS_CLI + " CONFIG GET tcp-keepalive").split()[-1] == keepalive
    assert counts["prefork"]["sent"] > 0 and counts["prefork"]["lost"] == 0, counts
    assert counts["prefork"]["duplicates"] == 0 and counts["prefork"]["restarted_runs"] == 0, counts
    assert counts["crashes"] == [], counts
    # A clean stop/start: supervisor logged the stops as expected ones.
    assert "stopped: celery-default" in logs[SUPERVISOR_LOG], logs[SUPERVISOR_LOG]
    assert "stopped: celery-io" in logs[SUPERVISOR_LOG], logs[SUPERVISOR_LOG]
    # gevent too: the warm stop lets every greenlet ack before Redis goes (the ack pool is sized to the greenlets:
    # broker_transport_options.max_connections, docs/worker.md).
    assert counts["gevent"]["sent"] > 0 and counts["gevent"]["lost"] == 0, counts
    assert counts["gevent"]["duplicates"] == 0, counts


def gevent_ok(counts):
    """A raw restart cuts greenlets off mid-ack: a message acked while Redis is down runs again, one still running
    waits for the visibility timeout (past this test's wait). Measured, not guaranteed (docs/reliability.md)."""
    assert counts["gevent"]["sent"] > 0, counts
    if counts["gevent"]["lost"] or counts["gevent"]["duplicates"]:
        pytest.xfail(f"gevent under load: {counts['gevent']}")


def test_raw_redis_restart_loses_nothing(host):
    """`systemctl restart redis-server` without orchestration (a crash, an operator): the worker settings alone
    (no cancel on connection loss, retries, result backend retry) must keep every accepted task."""
    counts, _logs = restart_under_load(
        host, "raw-restart", lambda: (time.sleep(5), host.check_output("systemctl restart redis-server")))
    assert counts["prefork"]["sent"] > 0 and counts["prefork"]["lost"] == 0, counts
    # Known celery 5.7.0 / kombu 5.7.0 bug (docs/worker.md, "Still open"): a worker holding an unacked message
    # at the connection loss exits with this AttributeError and supervisor starts it again. Any other crash fails.
    known = "Unrecoverable error: AttributeError(\"'NoneType' object has no attribute 'hostname'\")"
    unknown = [ln for ln in counts["crashes"] if known not in ln and "exited: celery-" not in ln]
    assert unknown == [], counts
    assert pid_of(host, "celery-default") and pid_of(host, "celery-io")  # running again
    gevent_ok(counts)
