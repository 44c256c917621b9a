"""The README's inventory, live on four hosts: tasks sent on the broker run on both worker hosts, beat fires
once per schedule across hosts, a host without the password gets nothing from Redis, the Django-style project's
own Celery settings do not weaken the guarantees, and Flower does not re-queue what the workers hold.
"""
import json
import os
import subprocess
import sys
import time

import pytest
import testinfra

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from live import wait_for  # noqa: E402
from stack import KEYPREFIX, get, redis_cli, send_tasks  # noqa: E402

BROKER, WORKER1, WORKER2, OUTSIDER = (testinfra.get_host(f"podman://{h}")
                                      for h in ("broker", "worker1", "worker2", "outsider"))
EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
REDIS = ("10.89.177.10", 6379)  # inventory/hosts: redis_bind_extra
BEAT_PERIOD = 5.0  # tests/apps/django_project settings: CELERY_BEAT_SCHEDULE tick
# Role defaults: worker_max_eta_seconds 3600 + worker_task_time_limit 300 + worker_visibility_margin 300.
VISIBILITY_TIMEOUT = 4200


def main_pid(host, unit):
    return int(host.check_output(f"systemctl show --property MainPID --value {unit}"))


@pytest.mark.parametrize("name, host, units", [
    ("worker1", WORKER1, ["supervisor"]), ("worker2", WORKER2, ["supervisor"])])
def test_second_converge_restarted_nothing_on_the_workers(name, host, units):
    with open(os.path.join(EPHEMERAL, f"pids-{name}.json")) as fh:
        saved = [int(p) for p in json.load(fh)]
    assert saved == [main_pid(host, u) for u in units] and 0 not in saved


def beat_processes(host):
    return [args for args in host.check_output("ps -eo args").splitlines()
            if " -A vpsstack_celery_app beat " in args]


def test_beat_runs_on_worker1_only():
    """worker_beat_enabled=true is the INI string "true": the role must take it as a boolean."""
    assert "RUNNING" in WORKER1.check_output("supervisorctl status celery-beat")
    assert len(beat_processes(WORKER1)) == 1
    assert WORKER2.run("supervisorctl status celery-beat").rc != 0
    assert beat_processes(WORKER2) == []


def test_a_task_sent_on_the_broker_runs_on_both_worker_hosts():
    key = f"spread-{time.time():.0f}"
    ids = send_tasks(BROKER, "yourproject.tasks.where", [key, 0.3], 40)

    def ran():
        lines = redis_cli(BROKER, "HGETALL", f"where:{key}", db=2)
        ran_on = dict(zip(lines[::2], lines[1::2]))
        return len(ran_on) == len(ids) and ran_on
    ran_on = wait_for(ran, 60)
    assert ran_on, "not every task ran within 60 s"
    per_host = {h: list(ran_on.values()).count(h) for h in sorted(set(ran_on.values()))}
    print(f"40 tasks sent on broker ran on: {per_host}")
    assert set(per_host) == {"worker1", "worker2"}


def test_beat_fires_once_per_schedule_across_hosts():
    """The schedule is the project's own (CELERY_BEAT_SCHEDULE in its Django settings): it must survive the
    host's settings being applied on top."""
    redis_cli(BROKER, "DEL", "ticks", db=2)
    window = 4 * BEAT_PERIOD
    time.sleep(window)
    ticks = redis_cli(BROKER, "LRANGE", "ticks", "0", "-1", db=2)
    print(f"{len(ticks)} ticks in {window:.0f} s (period {BEAT_PERIOD:.0f} s): {ticks}")
    # One beat: window / period ticks, give or take one at each end. Two beats would double it (8 ± 2).
    assert window / BEAT_PERIOD - 1 <= len(ticks) <= window / BEAT_PERIOD + 1


# A raw RESP client, one command at a time: the outsider has no Redis tools, and must not need any.
RAW_REDIS = """python3 - <<'PY'
import socket
try:
    s = socket.create_connection(({host!r}, {port}), timeout=5)
except OSError as err:
    print("refused:", err)
else:
    s.settimeout(5)
    replies = []
    for command in (b"LRANGE celery 0 -1", b"AUTH default guess-password", b"KEYS *"):
        s.sendall(command + b"\\r\\n")
        replies.append(s.recv(4096).decode(errors="replace").strip())
    print(" | ".join(replies))
PY"""


def test_a_host_outside_the_inventory_gets_nothing_from_redis():
    answer = OUTSIDER.check_output(RAW_REDIS.format(host=REDIS[0], port=REDIS[1]))
    print(f"outsider -> {REDIS[0]}:{REDIS[1]}: {answer}")
    if not answer.startswith("refused:"):
        lrange, auth, keys = answer.split(" | ")
        assert lrange.startswith("-NOAUTH") and auth.startswith("-WRONGPASS") and keys.startswith("-NOAUTH"), answer


def test_each_worker_host_reaches_redis_and_both_answer():
    for host in (WORKER1, WORKER2):
        replies = json.loads(host.check_output("vpsstack-celery inspect ping --json --timeout 10"))
        assert {"default@worker1", "default@worker2"} <= set(replies), replies


def test_running_workers_use_the_host_settings_not_the_django_settings():
    """settings.py says CELERY_TASK_ACKS_LATE = False and a broker on localhost:6390."""
    replies = json.loads(WORKER2.check_output("vpsstack-celery inspect conf --json --timeout 10"))
    for node in ("default@worker1", "default@worker2"):
        conf = replies[node]
        assert conf["task_acks_late"] is True and conf["worker_prefetch_multiplier"] == 1, conf
        assert conf["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT, conf
        # The Django settings themselves stay visible (CELERY_BROKER_URL); what counts is the effective value.
        assert "@10.89.177.10:6379/0" in conf["broker_url"], conf
        # Results stay the project's: it has no backend, and the inventory sets no worker_result_backend.
        assert conf.get("result_backend") is None, conf


# The web app: the Django project's own code and settings (CELERY_BROKER_URL = redis://localhost:6390/9), none of
# the host's settings, the producer file sourced as the README says.
WEB_PRODUCER = """cd /opt/celery/app && runuser -u celery -- sh -c '
set -a; . /etc/celery/producer.env; set +a
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/celery/app exec /opt/celery/venv/bin/python -' <<'PY'
from yourproject.celery import app
print(app.send_task("yourproject.tasks.where", ("{key}", 0)).id)
PY"""


def test_the_web_app_with_its_own_settings_and_the_producer_file_reaches_the_workers():
    key = f"web-{time.time():.0f}"
    task_id = WORKER2.check_output(WEB_PRODUCER.format(key=key)).strip()
    ran = wait_for(lambda: redis_cli(BROKER, "HGET", f"where:{key}", task_id, db=2) not in ([], [""]), 60)
    assert ran, "the task the web app sent did not run"


def unacked_tag_present(tag):
    return tag in redis_cli(BROKER, "HKEYS", KEYPREFIX + "unacked")


# A consumer the way Flower's event receiver runs one (drain_events in a loop), on kombu's default options:
# every idle poll may run QoS.restore_visible() with the consumer's own visibility timeout (3600 s).
DEFAULT_CONSUMER = """cd /tmp && timeout 60 /opt/flower/venv/bin/python - <<'PY'
import runpy, socket, time
from kombu import Connection, Queue
settings = runpy.run_path("/etc/flower/vpsstack_flower_settings.py")
# The project's key names (Flower's settings carry them), kombu's default visibility timeout.
options = {{k: v for k, v in settings["broker_transport_options"].items() if k != "visibility_timeout"}}
with Connection(settings["broker_url"], transport_options=options) as conn, conn.Consumer(Queue("vpsstack-probe", auto_delete=True), callbacks=[]):
    end = time.monotonic() + {seconds}
    while time.monotonic() < end:
        try:
            conn.drain_events(timeout=0.5)
        except socket.timeout:
            pass
PY"""


def test_flower_and_the_wrapper_do_not_requeue_what_the_workers_hold():
    """kombu re-queues an unacked message older than the CONSUMER's visibility timeout. One aged 3700 s is
    still held by the workers (4200 s): Flower (its workers page, refreshed) and vpsstack-celery must leave it;
    a consumer on kombu's default 3600 s re-queues it, which shows the test can fail."""
    tag = f"vpsstack-aged-{time.time():.0f}"
    message = {"body": "", "headers": {}, "properties": {"delivery_tag": tag, "delivery_info": {}}}
    redis_cli(BROKER, "HSET", KEYPREFIX + "unacked", tag, json.dumps([message, "celery", "vpsstack-nowhere"]))
    redis_cli(BROKER, "ZADD", KEYPREFIX + "unacked_index", f"{time.time() - 3700:.0f}", tag)
    try:
        for _attempt in range(3):
            assert get(BROKER, "/api/workers?refresh=1", "ops", "stack flower pw")[0] == 200
            WORKER2.check_output("vpsstack-celery inspect ping --timeout 3")
        assert unacked_tag_present(tag), "Flower or vpsstack-celery re-queued a message the workers hold"

        BROKER.check_output(DEFAULT_CONSUMER.format(seconds=6))
        assert not unacked_tag_present(tag), \
            "a consumer with kombu's default visibility timeout did not re-queue it: the test proves nothing"
    finally:
        redis_cli(BROKER, "HDEL", KEYPREFIX + "unacked", tag)
        redis_cli(BROKER, "ZREM", KEYPREFIX + "unacked_index", tag)


WATCHDOG_PING = """python3 -I -B - <<'PY'
import importlib.util, json
spec = importlib.util.spec_from_file_location("watchdog", "/usr/local/lib/vpsstack-watchdog.py")
watchdog = importlib.util.module_from_spec(spec)
spec.loader.exec_module(watchdog)
# What the timer's run loads: the enforced settings and the project's key names (the service's arguments).
settings = watchdog.load_settings("/etc/celery", "vpsstack_celery_settings", "/etc/celery/vpsstack_broker_keys.json")
print(json.dumps(sorted(watchdog.ping(settings, ["default@worker2"], 5, "worker2"))))
PY"""


def test_the_watchdog_pings_the_nodes_under_the_projects_key_prefix():
    """The nodes listen on "yourproject:"-prefixed channels: the watchdog's ping must go there to be answered."""
    assert json.loads(WORKER2.check_output(WATCHDOG_PING)) == ["default@worker2"]


def test_the_readme_plan_command_runs_on_this_inventory():
    """`ansible-playbook vpsstack.celery.plan -i hosts`, as the README prints it, on the scenario's inventory."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"],
                                                                 ".build", "collections"))
    proc = subprocess.run(["ansible-playbook", "vpsstack.celery.plan", "-i", inventory],
                          capture_output=True, text=True, env=env, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "maxmemory" in proc.stdout and "worker default" in proc.stdout, proc.stdout[-3000:]
