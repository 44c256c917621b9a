"""Tasks of the stock-vs-collection benchmark. The same file runs on both stacks.

Each task ends by pushing "RUN INDEX TIME" onto a Redis list (database RECORD_DB of the broker's server), so the
producer measures enqueue-to-done latency without a result backend (stock Celery has none configured).
"""
import hashlib
import os
import time
from urllib.parse import urlsplit

from celery import Celery

app = Celery("bench_app")
if os.environ.get("BENCH_BROKER_URL"):
    # The producer in its own container (the web host): only the broker's URL, as a web process has it.
    app.conf.broker_url = os.environ["BENCH_BROKER_URL"]
elif os.environ.get("CELERY_CONFIG_MODULE"):
    # The collection: the settings module the worker role renders (broker with password, its guarantees).
    app.config_from_object(os.environ["CELERY_CONFIG_MODULE"])
else:
    # Stock: what Celery's first-steps tutorial writes; Ubuntu's redis-server listens on loopback, no password.
    app.conf.broker_url = "redis://127.0.0.1:6379/0"

RECORD_DB = 15
DONE_KEY = "bench:done"
_STORE = []


def record_store():
    """One Redis client per process, on the broker's server (same credentials), database RECORD_DB."""
    if not _STORE:
        import redis  # installed with celery[redis]

        url = urlsplit(app.conf.broker_url)._replace(path="/%d" % RECORD_DB).geturl()
        _STORE.append(redis.Redis.from_url(url))
    return _STORE[0]


def burn_cpu(rounds):
    """A fixed amount of CPU work: `rounds` chained SHA-256 digests."""
    digest = b""
    for _round in range(int(rounds)):
        digest = hashlib.sha256(digest).digest()
    return digest


def done(run, index):
    record_store().rpush(DONE_KEY, "%s %d %.6f" % (run, index, time.time()))


@app.task
def noop(run, index):
    done(run, index)


@app.task
def sleep_ms(run, index, ms):
    """I/O-bound: waits, the CPU stays idle."""
    time.sleep(ms / 1000.0)
    done(run, index)


@app.task
def burn(run, index, rounds):
    """CPU-bound: the same work on every stack."""
    burn_cpu(rounds)
    done(run, index)
