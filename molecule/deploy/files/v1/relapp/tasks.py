"""Tasks of the release test app. Each run of slow() is counted in the result backend (duplicates)."""
import os
import signal
import time

from celery import Celery

from relapp.version import VERSION

app = Celery("relapp")


@app.task
def version():
    return VERSION


@app.task
def slow(key, token, seconds):
    app.backend.client.hincrby("relapp:runs:%s" % key, token, 1)
    time.sleep(float(seconds))
    return {"token": token, "version": VERSION, "done": time.time()}


@app.task
def poison(key):
    """Kills its own pool child on every run, counting the runs first (tests/test_poison.py: the guard)."""
    app.backend.client.incr("relapp:poison:%s" % key)
    os.kill(os.getpid(), signal.SIGKILL)
