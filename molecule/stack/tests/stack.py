"""Helpers of the stack scenario's tests: send tasks from the broker host, read Redis as its admin."""
import json

ADMIN_PASSWORD = "stack-admin-pw"  # molecule.yml: vault_redis_password (a fixture)
# The project's global_keyprefix (tests/apps/django_project settings): kombu puts it before every key it writes.
KEYPREFIX = "yourproject:"
# The broker host has no app code: tasks go by name through Flower's venv and Flower's settings module (root
# may read it), as any producer without the project's code would send them.
SEND = """cd /tmp && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/etc/flower CELERY_CONFIG_MODULE=vpsstack_flower_settings \\
/opt/flower/venv/bin/python - <<'PY'
import json
from celery import Celery
app = Celery()
print(json.dumps([app.send_task({name!r}, args={args!r}).id for _ in range({count})]))
PY"""


def send_tasks(broker, name, args, count):
    """Send `count` tasks `name(*args)` from the broker host; return their ids."""
    return json.loads(broker.check_output(SEND.format(name=name, args=list(args), count=count)))


def redis_cli(broker, *args, db=0):
    """One redis-cli command on the broker as the admin user; returns its raw output lines."""
    quoted = " ".join("'%s'" % a for a in args)
    out = broker.check_output(f"REDISCLI_AUTH={ADMIN_PASSWORD} redis-cli --no-auth-warning -n {db} {quoted}")
    return out.splitlines()


# A request through nginx with python3 (the image has no curl); prints "STATUS BODY".
HTTP_GET = """python3 - <<'PY'
import base64, sys, urllib.error, urllib.request
req = urllib.request.Request("http://127.0.0.1:5555{path}", method={method!r}, headers={headers!r},
                             data=None if {method!r} == "GET" else b"")
if {auth!r}:
    req.add_header("Authorization", "Basic " + base64.b64encode({auth!r}.encode()).decode())
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(resp.status, resp.read().decode())
except urllib.error.HTTPError as err:
    print(err.code, "")
PY"""


def get(host, path, user=None, password=None, method="GET", headers=None):
    auth = f"{user}:{password}" if user else ""
    out = host.check_output(HTTP_GET.format(path=path, auth=auth, method=method, headers=headers or {}))
    status, _space, body = out.partition(" ")
    return int(status), body
