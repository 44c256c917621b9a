"""Live behaviour of the flower role on the stack's broker: nginx's basic auth is the only way in, and Flower
sees both worker hosts and their tasks through the broker's ACL user."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from live import auto_nofile, nofile_of, scenario_hosts, wait_for  # noqa: E402
from stack import get, listen_while_tasks_run  # noqa: E402

testinfra_hosts = scenario_hosts("flower")

USERS = {"ops": "stack flower pw"}  # molecule.yml: vault_flower_password behind the README's flower_users
EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
SOCKET = "/run/flower/flower.sock"


def main_pid(host, unit):
    return int(host.check_output(f"systemctl show --property MainPID --value {unit}"))


def test_idempotent_converge_did_not_restart_flower_or_nginx(host):
    with open(os.path.join(EPHEMERAL, "pids-broker.json")) as fh:
        saved = [int(p) for p in json.load(fh)]
    assert saved == [main_pid(host, "redis-server"), main_pid(host, "flower"), main_pid(host, "nginx")]
    assert 0 not in saved


@pytest.mark.parametrize("user, password", [(None, None), ("ops", "wrong password!"), ("nobody", "x" * 12)])
def test_nginx_refuses_without_the_right_password(host, user, password):
    assert get(host, "/", user, password)[0] == 401
    assert get(host, "/api/workers", user, password)[0] == 401


@pytest.mark.parametrize("user", sorted(USERS))
def test_each_user_gets_the_dashboard(host, user):
    status, body = get(host, "/", user, USERS[user])
    assert status == 200 and "Flower" in body


def test_flower_lists_both_worker_hosts(host):
    nodes = {"default@worker1", "default@worker2"}

    def workers():
        status, body = get(host, "/api/workers?refresh=1", "ops", USERS["ops"])
        return status == 200 and nodes <= set(json.loads(body)) and sorted(json.loads(body))
    listed = wait_for(workers, 30, step=2)
    assert listed, f"Flower never listed {nodes}"
    print(f"Flower lists {listed}")


def test_flower_records_the_tasks_it_saw_run_from_batched_events(host):
    """The workers send their task events in batches (vpsstack_event_batching.py, installed on the versions it was
    tested with): only task.multi messages go over the broker, and Flower still records every task."""
    heard = listen_while_tasks_run(host, "flower-seen", seconds=3)
    print(f"heard {heard}")
    assert heard["ran"] == 3, "the three tasks did not run while the test listened"
    assert {c.rsplit("/", 1)[1] for c in heard["channels"] if "/task." in c} == {"task.multi"}

    def where_tasks():
        status, body = get(host, "/api/tasks?taskname=yourproject.tasks.where&state=SUCCESS", "ops", USERS["ops"])
        return status == 200 and len([t for t in json.loads(body).values() if "flower-seen" in t.get("args", "")])
    assert wait_for(lambda: where_tasks() == 3, 30, step=2), "Flower did not record the three where('flower-seen')"


@pytest.mark.parametrize("headers, status", [
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "http://127.0.0.1:5555", "Sec-Fetch-Site": "cross-site"}, 403),
    ({"Origin": "http://127.0.0.1:5555", "Sec-Fetch-Site": "same-origin"}, 200),
    ({}, 200),
])
def test_nginx_refuses_a_cross_site_request_that_changes_state(host, headers, status):
    """Flower 2.2 skips its XSRF check with FLOWER_UNAUTHENTICATED_API: a page on another site must not make the
    operator's browser (cached basic auth) revoke or shut down anything. Revoking an unknown id changes nothing."""
    answer = get(host, "/api/task/revoke/00000000-0000-0000-0000-000000000000", "ops", USERS["ops"],
                 method="POST", headers=headers)
    assert answer[0] == status, answer


def test_other_local_users_cannot_reach_flower_past_nginx(host):
    socket_dir = host.file(os.path.dirname(SOCKET))
    assert (socket_dir.user, socket_dir.group, socket_dir.mode) == ("flower", "flower", 0o750)
    probe = ("runuser -u {user} -- python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
             f"s.connect('{SOCKET}'); print('connected')\"")
    assert host.run(probe.format(user="www-data")).stdout.strip() == "connected"
    denied = host.run(probe.format(user="nobody"))
    assert denied.rc != 0 and "PermissionError" in denied.stderr
    # Flower itself has no TCP listener: only nginx listens on 5555.
    listeners = host.check_output("ss -Hltnp")
    assert [ln for ln in listeners.splitlines() if ":5555 " in ln and "nginx" not in ln] == []
    assert "celery" not in listeners and "flower" not in listeners
    # Nor does the package's welcome page on port 80 (flower_nginx_remove_default_site).
    assert [ln for ln in listeners.splitlines() if ln.split()[3].endswith(":80")] == []


def test_secrets_are_stored_as_hashes_and_root_only(host):
    htpasswd = host.file("/etc/nginx/vpsstack-flower.htpasswd")
    assert (htpasswd.user, htpasswd.group, htpasswd.mode) == ("root", "www-data", 0o640)
    hashes = dict(ln.split(":", 1) for ln in htpasswd.content_string.splitlines() if not ln.startswith("#"))
    assert set(hashes) == set(USERS) and all(h.startswith("$6$") for h in hashes.values())
    assert not any(pw in htpasswd.content_string for pw in USERS.values())
    settings = host.file("/etc/flower/vpsstack_flower_settings.py")
    # Not the flower group: nginx's user is in it (the socket), and must not read the broker password.
    assert (settings.user, settings.group, settings.mode) == ("flower", "root", 0o400)
    assert host.run(f"runuser -u www-data -- cat {settings.path}").rc != 0
    assert "stack%2Fcelery%20pw%3A1" in settings.content_string  # the broker password, percent-quoted
    assert "celery pw" not in host.check_output(f"cat /proc/{main_pid(host, 'flower')}/cmdline | tr '\\0' ' '")


def test_flower_runs_as_its_user_with_the_open_file_limit(host):
    pid = main_pid(host, "flower")
    assert host.check_output(f"ps -o user= -p {pid}") == "flower"
    # flower_nofile "auto": the README sets no number, the container's ceiling (20000 on CI) is below 65535.
    assert nofile_of(host, pid) == (auto_nofile(host),) * 2
    rss_kib = int(host.check_output(f"ps -o rss= -p {pid}"))
    print(f"flower RSS {rss_kib // 1024} MiB (plan cost flower_mb: 120)")


def test_flower_is_capped_at_its_planned_budget(host):
    # The README sets no plan_costs: the plan counts Flower at its default cost, 120 MB (flower_memory_*_mb auto).
    budget = 120 * 1024 * 1024
    shown = host.check_output("systemctl show --property MemoryHigh --property MemoryMax flower")
    assert dict(line.split("=", 1) for line in shown.splitlines()) == {
        "MemoryHigh": str(budget), "MemoryMax": str(2 * budget)}, shown
    # Where systemd runs the memory controller (cgroup v2 hosts, real VPSes), the kernel holds the cap; the CI
    # host's cgroup v1 containers give systemd no memory hierarchy, so only the unit's value can be read there.
    cgroup_max = host.file("/sys/fs/cgroup/system.slice/flower.service/memory.max")
    if cgroup_max.exists:
        assert int(cgroup_max.content_string) == 2 * budget
    rss_kib = int(host.check_output(f"ps -o rss= -p {main_pid(host, 'flower')}"))
    assert rss_kib * 1024 < budget, f"an idle Flower already uses {rss_kib} KiB"
