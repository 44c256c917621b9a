"""Tasks that exercise the worker role: round trip, I/O wait, CPU work, long runs, leaks, execution records.

Settings come from the module the role renders (CELERY_CONFIG_MODULE, default "vpsstack_celery_settings"), so the app
itself holds no broker URL or password.
"""
import hashlib
import os
import time
from urllib.parse import urlsplit

from celery import Celery

app = Celery("demo_app")
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "vpsstack_celery_settings"))

# Redis database where record() counts executions (not the broker's queues, not the results).
RECORD_DB = int(os.environ.get("DEMO_RECORD_DB", "2"))
# Memory leak() keeps alive for the life of the process, so the prefork child grows task after task.
_HOARD = []
_redis = None


def record_store():
    """A Redis client on the broker's server, database RECORD_DB (same credentials as the broker)."""
    global _redis
    if _redis is None:
        import redis  # installed with celery[redis]

        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        url = urlsplit(app.conf.broker_url)._replace(path="/%d" % RECORD_DB).geturl()
        # A task's own Redis calls must survive a Redis restart (refused connections, then LOADING while the
        # AOF loads): Celery retries only its broker and result connections, not the task's (docs/worker.md).
        _redis = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, socket_keepalive=True,
            retry=Retry(ExponentialBackoff(cap=2, base=0.1), 60),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError])
    return _redis


@app.task
def add(x, y):
    return x + y


@app.task
def io_wait(seconds=1.0):
    """I/O-bound stand-in: the process sleeps, CPU stays idle."""
    time.sleep(float(seconds))
    return seconds


@app.task
def cpu_work(n=200000):
    """CPU-bound stand-in: n rounds of SHA-256."""
    digest = b""
    for _round in range(int(n)):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@app.task
def long_task(seconds=10.0):
    """Runs for `seconds`, in one-second steps (so a soft time limit can interrupt it)."""
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    return seconds


@app.task
def leak(mb=32):
    """Keeps `mb` MiB more in this process (touched, so it is resident); returns the child's pid."""
    _HOARD.append(b"\x01" * (int(mb) * 1048576))
    return os.getpid()


@app.task(bind=True)
def record(self, key, seconds=0.0):
    """Counts each execution durably: started:<key> and done:<key> hashes of task id -> times.

    Idempotent by design (acks_late gives at-least-once delivery): a redelivered task only bumps a counter,
    which is what the reliability tests count as a duplicate.
    """
    store = record_store()
    store.hincrby("started:%s" % key, self.request.id, 1)
    long_task.run(seconds)
    store.hincrby("done:%s" % key, self.request.id, 1)
    return self.request.id


@app.task(bind=True)
def trace(self, key, seconds=0.0, leak_mb=0):
    """record() plus the time of the first completion (done_at:<key>), for the fault harness
    (scripts/reliability.py): it measures enqueue-to-done delay. leak_mb > 0 also leaks that much first."""
    store = record_store()
    store.hincrby("started:%s" % key, self.request.id, 1)
    if leak_mb:
        leak.run(leak_mb)
    long_task.run(seconds)
    pipe = store.pipeline()
    pipe.hincrby("done:%s" % key, self.request.id, 1)
    pipe.hsetnx("done_at:%s" % key, self.request.id, repr(time.time()))
    pipe.execute()
    return self.request.id
