"""Keep a gevent, eventlet or threads worker fetching while its prefetch window is full (kombu's Redis transport).

Loaded by vpsstack_celery_app.py for every program (docs/worker.md, "The 2-second fetch stall").

Measured (celery 5.7.0, kombu 5.7.0, the role's settings, 1 GB / 1 vCPU container, 50 ms tasks, 2026-11-30):
`--pool gevent --concurrency 10` ran 4.9 tasks/s, where 10 slots of 50 ms allow 200/s. Read in the sources: these
pools run Celery's synloop (celery/worker/loops.py), which calls connection.drain_events(timeout=2.0). While
the QoS window is full (prefetch = concurrency with multiplier 1, and every task stays unacked until it ends:
acks_late), kombu's Redis poller stops polling the BRPOP socket (transport/redis.py, MultiChannelPoller
on_poll_start / _update_brpop_polling) and poll() waits the whole 2 s on the other sockets. A task that ends and
acks meanwhile, in a greenlet or thread, does not wake that poll: the worker takes one window per 2 s, that is
concurrency / 2 tasks a second, whatever the tasks cost.

The wrapper shortens that one wait to PAUSED_POLL_S while the window is full; kombu's drain_events loop then
polls again and registers BRPOP as soon as an ack has freed a slot. Nothing changes while the window has room
(BRPOP wakes the poll), nor for the prefork pool, whose event loop does not call this method.

The wrapper reads kombu's private poller state (_channels, QoS credit) and the stall is the Redis transport's, which
kombu writes against redis-py's connections: with a kombu or redis-py other than TESTED_VERSIONS the wrapper is not
installed and one warning line says so (docs/worker.md, "Patches and versions").
"""
import functools

from vpsstack_versions import wrap_once

# The versions this patch was read against and measured with; the worker role's pip constraints pin the same.
TESTED_VERSIONS = {"kombu": "5.7.0", "redis": "8.1.0"}

# A wake-up every 20 ms while every slot is busy, and a freed slot waits at most that long. Each wake-up runs the
# poller's end-of-poll housekeeping: kombu scans the unacked index on every tenth (unacked_restore_throttle), so
# about five scans a second (three Redis round trips each) while the window stays full, instead of one per 20 s.
PAUSED_POLL_S = 0.02


def window_full(poller):
    """Whether a channel that consumes queues has no prefetch credit left (BRPOP is not polled then)."""
    channels = poller._channels  # pylint: disable=protected-access
    return any(channel.active_queues and not channel.qos.can_consume() for channel in channels)


def poll_soon_while_full(original):
    """kombu's MultiChannelPoller.get, its wait cut to PAUSED_POLL_S while the prefetch window is full."""
    @functools.wraps(original)
    def get(self, callback, timeout=None):
        if window_full(self):
            timeout = PAUSED_POLL_S if timeout is None else min(timeout, PAUSED_POLL_S)
        return original(self, callback, timeout)
    return get


def install():
    """Wrap kombu's MultiChannelPoller.get once per process; False when skipped or kombu's Redis transport is missing.

    Skipped, with one line in the program's log, on other library versions (vpsstack_versions.py)."""
    return wrap_once(__name__, TESTED_VERSIONS, "kombu.transport.redis:MultiChannelPoller", "get",
                     poll_soon_while_full)
