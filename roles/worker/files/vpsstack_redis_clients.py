"""One Redis client per kombu channel for the commands kombu's Redis transport runs without one.

Loaded by vpsstack_celery_app.py for every program (docs/worker.md, "One Redis client per channel").

Read in the sources (kombu 5.7.0 transport/redis.py): Channel.conn_or_acquire() builds a new redis.Redis for each
such command. A worker runs two per task in every pool: the unacked record of each message it takes
(QoS.append) and its ack (QoS.ack), plus every event publish and every unacked-index scan. redis-py 8.1.0's
Redis.__init__ fills a case-insensitive table of 169 response callbacks: 48 µs per client on the
benchmark's 1-vCPU container. The client owns no connection: each command or pipeline borrows one from the
channel's pool and gives it back, and redis-py documents a client as safe to share between threads. So one
client per channel and pool serves them all. When kombu replaces the pool (after a fork, or a lost connection:
Channel._disconnect_pools), the next command builds a client on the new pool.

The wrapper calls kombu's private Channel._create_client and relies on redis-py's clients holding no connection:
with a kombu or redis-py other than TESTED_VERSIONS it is not installed and one warning line says so
(docs/worker.md, "Patches and versions").
"""
import contextlib

from vpsstack_versions import wrap_once

# The versions this patch was read against and measured with; the worker role's pip constraints pin the same.
TESTED_VERSIONS = {"kombu": "5.7.0", "redis": "8.1.0"}

# Where a channel keeps (pool, client): in the instance, so the client goes with the channel.
CACHE_ATTR = "_vpsstack_sync_client"


def shared_client(channel):
    """The channel's client for its current pool, built on first use and again when kombu replaces the pool.
    Two threads may both build one on first use: either is right, and the spare one is dropped."""
    pool = channel.pool
    cached = getattr(channel, CACHE_ATTR, None)
    if cached is None or cached[0] is not pool:
        cached = (pool, channel._create_client())  # pylint: disable=protected-access
        setattr(channel, CACHE_ATTR, cached)
    return cached[1]


def one_client_per_channel(original):
    """kombu's Channel.conn_or_acquire, with the channel's shared client where kombu would build a new one."""
    @contextlib.contextmanager
    def conn_or_acquire(self, client=None):
        yield client or shared_client(self)
    conn_or_acquire.__doc__ = original.__doc__
    return conn_or_acquire


def install():
    """Wrap kombu's Channel.conn_or_acquire once per process; False when skipped or kombu's Redis transport is
    missing.

    Skipped, with one line in the program's log, on other library versions (vpsstack_versions.py)."""
    return wrap_once(__name__, TESTED_VERSIONS, "kombu.transport.redis:Channel", "conn_or_acquire",
                     one_client_per_channel)
