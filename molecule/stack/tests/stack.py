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


# Listens to every event channel of the broker (the project's key prefix included) while three where(KEY, 0) tasks
# run: the channels heard, and how many of the tasks ran (where:KEY in database 2, tests/apps/django_project).
LISTEN = SEND.split(" \\\n", 1)[0] + """ /opt/flower/venv/bin/python - <<'PY'
import json, time
import redis
from celery import Celery
admin = redis.Redis(host="127.0.0.1", username="default", password={password!r})
listener = admin.pubsub()
listener.psubscribe("*celeryev*")
app = Celery()
for _ in range(3):
    app.send_task("yourproject.tasks.where", args=[{key!r}, 0])
channels, end = set(), time.time() + {seconds}
while time.time() < end:
    message = listener.get_message(timeout=0.5)
    if message and message["type"] == "pmessage":
        channels.add(message["channel"].decode())
tasks_db = redis.Redis(host="127.0.0.1", username="default", password={password!r}, db=2)
print(json.dumps({{"channels": sorted(channels), "ran": tasks_db.hlen("where:" + {key!r})}}))
PY"""


def listen_while_tasks_run(broker, key, seconds):
    """Send three where(KEY, 0) tasks and listen to the broker's event channels for SECONDS: {channels, ran}."""
    return json.loads(broker.check_output(LISTEN.format(password=ADMIN_PASSWORD, key=key, seconds=seconds)))


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
