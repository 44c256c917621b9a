"""Tasks the stack scenario counts: where each task ran, and each beat tick (Redis database 2)."""
import socket
import time
from urllib.parse import urlsplit

import redis
from celery import current_app, shared_task

_store = None


def store():
    """The broker's Redis, database 2, with the worker's own credentials."""
    global _store
    if _store is None:
        url = urlsplit(current_app.conf.broker_url)._replace(path="/2").geturl()
        _store = redis.Redis.from_url(url, decode_responses=True)
    return _store


@shared_task(bind=True)
def where(self, key, seconds=0.2):
    """Records which host ran this task id."""
    time.sleep(float(seconds))
    store().hset("where:%s" % key, self.request.id, socket.gethostname())
    return socket.gethostname()


@shared_task
def tick():
    """One entry per execution of the periodic task: host and time."""
    store().rpush("ticks", "%s %.3f" % (socket.gethostname(), time.time()))
