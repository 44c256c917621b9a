"""`flower_task_events: false`, run as a user runs it (site.yml with -e), limited to the Flower host: Flower
still lists the workers, so it kept the project's key prefix and the workers' visibility timeout that only the
worker hosts know (the play has none of them: Flower falls back to what it last ran with), and no task event goes
over the broker any more. Its file name sorts it last: it leaves the stack without task events.
"""
import json
import os
import subprocess
import sys
import time

import testinfra

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from live import wait_for  # noqa: E402
from stack import get, listen_while_tasks_run  # noqa: E402

BROKER = testinfra.get_host("podman://broker")
FLOWER_ENV = ("cd /tmp && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/etc/flower "
              "CELERY_CONFIG_MODULE=vpsstack_flower_settings")
USER, PASSWORD = "ops", "stack flower pw"  # molecule.yml: the README's flower_users


def test_without_task_events_flower_lists_the_workers_and_no_task_event_is_sent():
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"],
                                                                 ".build", "collections"))
    started = time.monotonic()
    settings = "/etc/flower/vpsstack_flower_settings.py"
    before = BROKER.file(settings).content_string
    proc = subprocess.run(["ansible-playbook", "vpsstack.celery.site", "-i", inventory, "--limit", "broker",
                           "-e", "flower_task_events=false"],
                          capture_output=True, text=True, env=env, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    print(f"site.yml --limit broker -e flower_task_events=false: {time.monotonic() - started:.0f} s")
    # Only the events switch is on Flower's command line: its broker settings are what the workers run with.
    assert BROKER.file(settings).content_string == before
    # The workers still send the events the old Flower turned on: the role's README says how to stop them.
    BROKER.check_output(FLOWER_ENV + " /opt/flower/venv/bin/celery control disable_events")
    # Flower turns events on every 5 s when it may: it has done so at least once before the tasks go out.
    time.sleep(6)
    heard = listen_while_tasks_run(BROKER, "no-events", seconds=6)
    print(f"heard {heard}")
    assert heard["ran"] == 3, "the three tasks did not run while the test listened"
    assert any("worker.heartbeat" in c for c in heard["channels"]), "no heartbeat heard: the listener hears nothing"
    assert not [c for c in heard["channels"] if "/task." in c], "task events are still sent"

    def workers():
        status, body = get(BROKER, "/api/workers?refresh=1", USER, PASSWORD)
        return status == 200 and {"default@worker1", "default@worker2"} <= set(json.loads(body))
    assert wait_for(workers, 30, step=2), "Flower no longer lists both workers"
