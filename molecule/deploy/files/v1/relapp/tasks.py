"""Tasks of the release test app. Each run of slow() is counted in the result backend (duplicates)."""
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
