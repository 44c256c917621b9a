"""Live behaviour of the flower role: nginx's basic auth is the only way in, and Flower sees the workers and
their tasks through the broker's ACL user."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import nofile_of, scenario_hosts, wait_for  # noqa: E402

testinfra_hosts = scenario_hosts("flower")

NOFILE = 20000  # molecule.yml: baseline_nofile -> flower_nofile
USERS = {"ops": "molecule flower pw", "dev.team": "another/long:pw"}  # molecule.yml: flower_users
EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
SOCKET = "/run/flower/flower.sock"
CLIENT = (
    "cd /opt/celery/app && runuser -u celery -- env PYTHONDONTWRITEBYTECODE=1 "
    "PYTHONPATH=/opt/celery/app:/etc/celery CELERY_CONFIG_MODULE=celeryconfig "
    "/opt/celery/venv/bin/python -m demo_app.client"
)
# GET through nginx with python3 (the image has no curl); prints "STATUS BODY".
HTTP_GET = """python3 - <<'PY'
import base64, sys, urllib.error, urllib.request
req = urllib.request.Request("http://127.0.0.1:5555{path}")
if {auth!r}:
    req.add_header("Authorization", "Basic " + base64.b64encode({auth!r}.encode()).decode())
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(resp.status, resp.read().decode())
except urllib.error.HTTPError as err:
    print(err.code, "")
PY"""


def get(host, path, user=None, password=None):
    auth = f"{user}:{password}" if user else ""
    status, _space, body = host.check_output(HTTP_GET.format(path=path, auth=auth)).partition(" ")
    return int(status), body


def main_pid(host, unit):
    return int(host.check_output(f"systemctl show --property MainPID --value {unit}"))


def test_idempotent_converge_did_not_restart_flower_or_nginx(host):
    with open(os.path.join(EPHEMERAL, "flower-pids.json")) as fh:
        saved = [int(p) for p in json.load(fh)]
    assert saved == [main_pid(host, "flower"), main_pid(host, "nginx")]
    assert 0 not in saved


@pytest.mark.parametrize("user, password", [(None, None), ("ops", "wrong password!"), ("nobody", "x" * 12)])
def test_nginx_refuses_without_the_right_password(host, user, password):
    assert get(host, "/", user, password)[0] == 401
    assert get(host, "/api/workers", user, password)[0] == 401


@pytest.mark.parametrize("user", sorted(USERS))
def test_each_user_gets_the_dashboard(host, user):
    status, body = get(host, "/", user, USERS[user])
    assert status == 200 and "Flower" in body


def test_flower_sees_the_workers_through_the_broker(host):
    node = "default@" + host.check_output("hostname")

    def workers():
        status, body = get(host, "/api/workers?refresh=1", "ops", USERS["ops"])
        return status == 200 and node in json.loads(body) and json.loads(body)
    assert wait_for(workers, 30, step=2), "Flower never listed " + node


def test_flower_records_a_task_it_saw_run(host):
    assert json.loads(host.check_output(CLIENT + " add 20 22")) == 42

    def add_tasks():
        status, body = get(host, "/api/tasks?taskname=demo_app.tasks.add&state=SUCCESS", "ops", USERS["ops"])
        return status == 200 and [t for t in json.loads(body).values() if t.get("result") == "42"]
    assert wait_for(add_tasks, 30, step=2), "Flower has no successful add(20, 22)"


def test_other_local_users_cannot_reach_flower_past_nginx(host):
    socket_dir = host.file(os.path.dirname(SOCKET))
    assert (socket_dir.user, socket_dir.group, socket_dir.mode) == ("flower", "flower", 0o750)
    probe = ("runuser -u {user} -- python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
             f"s.connect('{SOCKET}'); print('connected')\"")
    assert host.run(probe.format(user="www-data")).stdout.strip() == "connected"
    denied = host.run(probe.format(user="celery"))
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
    env = host.file("/etc/flower/flower.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert "molecule%2Fcelery%20pw" in env.content_string  # the broker password, percent-quoted
    assert "celery pw" not in host.check_output(f"cat /proc/{main_pid(host, 'flower')}/cmdline | tr '\\0' ' '")


def test_flower_runs_as_its_user_with_the_open_file_limit(host):
    pid = main_pid(host, "flower")
    assert host.check_output(f"ps -o user= -p {pid}") == "flower"
    assert nofile_of(host, pid) == (NOFILE, NOFILE)
    rss_kib = int(host.check_output(f"ps -o rss= -p {pid}"))
    print(f"flower RSS {rss_kib // 1024} MiB (plan cost flower_mb: 80)")
