"""The poison-task guard, live (worker_poison_max_lost, roles/worker/files/vpsstack_poison_guard.py).

relapp.tasks.poison counts its run in the result backend and SIGKILLs its own prefork child: Celery alone would
requeue it forever (task_reject_on_worker_lost). With the role's default limit it runs exactly that many times,
is acknowledged and marked failed with WorkerLostError, the worker log names it, and the worker keeps working.
Runs after test_deploy.py on whichever release is current (v1 and v2 both carry the task).
"""
import json
import os
import shlex
import sys
import uuid

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import scenario_hosts, wait_for  # noqa: E402

testinfra_hosts = scenario_hosts("all")

MAX_LOST = 3  # the role's default worker_poison_max_lost (molecule.yml does not set it)
APP = "/opt/celery/app"
LOG = "/var/log/celery/celery-default.log"
PY = ("runuser -u celery -- env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/etc/celery:/opt/celery/app "
      "CELERY_CONFIG_MODULE=vpsstack_celery_settings /opt/celery/venv/bin/python -c ")
# What a test needs to know about one poison task: its result, where its message is, the guard's counter
# (broker, db 0) and how often the task body ran (result backend, db 1).
STATE = """
import json, sys
from vpsstack_celery_app import app
tid, key = sys.argv[1], sys.argv[2]
result = app.AsyncResult(tid)
with app.connection_for_write() as conn:
    client = conn.default_channel.client
    queued = sum(tid.encode() in m for m in client.lrange("celery", 0, -1))
    unacked = sum(tid.encode() in m for m in client.hvals("unacked"))
    lost, ttl = client.get("vpsstack:lost:" + tid), client.ttl("vpsstack:lost:" + tid)
runs = app.backend.client.get("relapp:poison:" + key)
print(json.dumps({"state": result.state, "error": type(result.result).__name__ if result.failed() else None,
                  "queued": queued, "unacked": unacked, "lost": int(lost or 0), "ttl": ttl,
                  "runs": int(runs or 0)}))
"""
SEND = """
import sys
from vpsstack_celery_app import app
app.signature("relapp.tasks.poison", args=(sys.argv[2],)).apply_async(task_id=sys.argv[1])
"""
SEED = """
import sys
from vpsstack_celery_app import app
with app.connection_for_write() as conn:
    conn.default_channel.client.set("vpsstack:lost:" + sys.argv[1], sys.argv[2])
"""
ROUND_TRIP = """
from vpsstack_celery_app import app
print(app.signature("relapp.tasks.version").delay().get(timeout=60))
"""


def py(host, code, *args):
    return host.check_output(f"cd {APP} && {PY}{shlex.quote(code)} {' '.join(shlex.quote(a) for a in args)}")


def state(host, tid, key):
    return json.loads(py(host, STATE, tid, key))


def failed(host, tid, key):
    current = state(host, tid, key)
    return current if current["state"] == "FAILURE" else None


def nothing_left(host, tid, key, runs):
    """No copy of the message queued or unacked, and the task ran `runs` times. Read again for a few seconds: one
    deploy run saw the FAILURE and one unacked copy in the same read (docs/testing.md); a copy that stays would
    run again, which the runs count then shows."""
    def settled():
        current = state(host, tid, key)
        return current["queued"] == 0 and current["unacked"] == 0 and current
    current = wait_for(settled, 10, 1)
    return bool(current) and current["runs"] == runs


def test_a_task_that_kills_its_child_runs_max_lost_times_then_fails(host):
    tid, key = str(uuid.uuid4()), uuid.uuid4().hex
    parent = host.check_output("supervisorctl pid celery-default")
    log_from = int(host.check_output(f"stat -c %s {LOG}"))
    py(host, SEND, tid, key)
    final = wait_for(lambda: failed(host, tid, key), 180, 2)
    assert final, state(host, tid, key)
    print(f"\npoison task: {final}")
    # Celery acknowledges before it stores FAILURE (request.py on_failure): nothing is left to run it again.
    assert final["runs"] == MAX_LOST, final
    assert final["error"] == "WorkerLostError", final
    assert nothing_left(host, tid, key, MAX_LOST), state(host, tid, key)
    # No TTL (volatile-lru would evict it); a task given up keeps its count.
    assert final["lost"] == MAX_LOST and final["ttl"] == -1, final
    log = host.check_output(f"tail -c +{log_from + 1} {LOG}")
    assert (f"Poison task relapp.tasks.poison[{tid}]: its worker child was lost {MAX_LOST} times "
            f"(worker_poison_max_lost={MAX_LOST})") in log, log[-4000:]
    for count in range(1, MAX_LOST):
        assert f"Task relapp.tasks.poison[{tid}] lost its worker child ({count} of " in log, log[-4000:]
    # Only children died: the worker itself still runs and serves an ordinary task sent after the poison one.
    assert host.check_output("supervisorctl pid celery-default") == parent
    assert py(host, ROUND_TRIP) in ("v1", "v2")
    assert state(host, tid, key)["runs"] == MAX_LOST


def test_the_count_lives_in_redis_not_in_the_worker(host):
    # Two losses counted by an earlier worker process (before a restart) or on another host: one more here
    # reaches the limit, so the task runs once.
    tid, key = str(uuid.uuid4()), uuid.uuid4().hex
    py(host, SEED, tid, str(MAX_LOST - 1))
    py(host, SEND, tid, key)
    final = wait_for(lambda: failed(host, tid, key), 120, 2)
    assert final, state(host, tid, key)
    assert final["runs"] == 1 and final["lost"] == MAX_LOST, final
    assert nothing_left(host, tid, key, 1), state(host, tid, key)
