"""`playbooks/audit.yml` on the README's stack: all OK when converged, changes nothing, and flags hand-broken
states. Runs last (file order): it stops and starts worker programs."""
import json
import os
import subprocess
import sys
import time

import pytest
import testinfra

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import KEYPREFIX, redis_cli, send_tasks  # noqa: E402

BROKER, WORKER1, WORKER2 = (testinfra.get_host("podman://" + name) for name in ("broker", "worker1", "worker2"))
PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]


def audit(*extra):
    """Run the audit as a user does, on the scenario's inventory; return (rc, {host: [[status, check, detail]]})."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(PROJECT, ".build", "collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               # Only the JSON on stdout (the scenario enables profile_tasks, which prints too).
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json")
    # As the README prints it: the playbook by its collection name.
    proc = subprocess.run(["ansible-playbook", "vpsstack.celery.audit",
                           "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]), *extra],
                          capture_output=True, text=True, env=env, check=False, timeout=900)
    result = json.loads(proc.stdout)
    # The lines as the table shows them, from the fact it is printed from.
    counted = next(t for t in result["plays"][0]["tasks"] if t["task"]["name"].endswith("Count the beat processes"
                                                                                        " across the inventory"))
    lines = {host: res["ansible_facts"]["audit_lines"] for host, res in counted["hosts"].items()}
    print(json.dumps(lines, indent=1))
    return proc.returncode, lines


def status_of(lines, host, check):
    found = [row[0] for row in lines[host] if row[1] == check]
    assert found, f"no line {check!r} for {host}: {lines[host]}"
    return found[0]


def test_audit_is_all_ok_on_the_converged_stack():
    rc, lines = audit()
    assert sorted(lines) == ["broker", "worker1", "worker2"]
    not_ok = {host: [row for row in rows if row[0] != "OK"] for host, rows in lines.items()}
    assert rc == 0 and not any(not_ok.values()), not_ok
    assert status_of(lines, "broker", "redis maxmemory") == "OK"
    assert status_of(lines, "worker1", "beat across the inventory") == "OK"


def test_audit_in_check_mode_changes_nothing():
    marker = "/run/vpsstack-audit-marker"
    for host in (BROKER, WORKER1, WORKER2):
        host.check_output(f"touch {marker}")
    pids = WORKER1.check_output("supervisorctl pid celery-default celery-beat")
    config = redis_cli(BROKER, "CONFIG", "GET", "*")
    rc, _lines = audit("--check")
    assert rc == 0
    for host in (BROKER, WORKER1, WORKER2):
        # Logs, Redis's own files and Flower's state change by use; settings, code and root's home must not.
        paths = "$(ls -d /etc /opt /usr /root /var/lib/celery 2>/dev/null)"  # the broker has no /var/lib/celery
        new = host.check_output(f"find {paths} -xdev -newer {marker} -type f")
        assert new == "", new
    assert WORKER1.check_output("supervisorctl pid celery-default celery-beat") == pids
    assert redis_cli(BROKER, "CONFIG", "GET", "*") == config


@pytest.fixture
def broken_stack():
    """Six hand-broken states at once; put back afterwards whatever the test found."""
    maxmemory = redis_cli(BROKER, "CONFIG", "GET", "maxmemory")[1]
    tag = "vpsstack-audit-old-unacked"
    redis_cli(BROKER, "CONFIG", "SET", "maxmemory", str(int(maxmemory) // 2))
    for host in (WORKER1, WORKER2):
        host.check_output("supervisorctl stop celery-default")
    send_tasks(BROKER, "yourproject.tasks.where", ("audit-filled-queue", 0), 10)
    redis_cli(BROKER, "RPUSH", KEYPREFIX + "celeryev.deadbeef", "an event nobody reads")
    redis_cli(BROKER, "HSET", KEYPREFIX + "unacked", tag, json.dumps(["{}", "celery", "vpsstack-nowhere"]))
    redis_cli(BROKER, "ZADD", KEYPREFIX + "unacked_index", f"{time.time() - 3700:.0f}", tag)
    WORKER2.check_output("vpsstack-celery beat --detach --schedule /tmp/beat2 --pidfile /tmp/beat2.pid"
                         " --logfile /tmp/beat2.log")
    yield
    WORKER2.run("kill $(cat /tmp/beat2.pid)")
    redis_cli(BROKER, "CONFIG", "SET", "maxmemory", maxmemory)
    redis_cli(BROKER, "DEL", KEYPREFIX + "celeryev.deadbeef")
    redis_cli(BROKER, "HDEL", KEYPREFIX + "unacked", tag)
    redis_cli(BROKER, "ZREM", KEYPREFIX + "unacked_index", tag)
    for host in (WORKER1, WORKER2):
        host.check_output("supervisorctl start celery-default")


def test_audit_flags_each_broken_state(broken_stack):
    # -e as a user types it: the value arrives as the string "5".
    rc, lines = audit("-e", "audit_queue_warn_length=5")
    assert rc != 0
    assert status_of(lines, "broker", "redis maxmemory") == "FAIL"
    assert status_of(lines, "worker1", "celery-default") == "FAIL"
    assert status_of(lines, "worker2", "workers answer a ping") == "FAIL"
    assert status_of(lines, "broker", "queue celery") == "WARN"
    assert status_of(lines, "broker", "orphan event lists") == "WARN"
    assert status_of(lines, "broker", "oldest unacked") == "WARN"
    assert status_of(lines, "worker1", "beat across the inventory") == "FAIL"
    assert status_of(lines, "worker2", "beat across the inventory") == "FAIL"


def test_audit_is_ok_again_once_repaired():
    # The fixture's teardown put everything back; the queued tasks drain.
    assert wait_for_drain(), "the workers did not drain the queue"
    rc, lines = audit()
    not_ok = {host: [row for row in rows if row[0] != "OK"] for host, rows in lines.items()}
    assert rc == 0 and not any(not_ok.values()), not_ok


def wait_for_drain(timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if redis_cli(BROKER, "LLEN", KEYPREFIX + "celery") == ["0"]:
            return True
        time.sleep(2)
    return False
