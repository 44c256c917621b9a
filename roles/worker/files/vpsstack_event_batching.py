"""Publish a worker's task events (what Flower shows) in batches, not one Redis PUBLISH per event.

Loaded by vpsstack_celery_app.py for every program (docs/worker.md, "Task events in batches").

Read in the sources (celery 5.7.0): a worker sends three task events per task (received, started, succeeded).
Celery's dispatcher can buffer them and publish a list as one "task-multi" message, which every receiver,
Flower's included, unpacks (events/dispatcher.py send/flush, events/receiver.py _receive). The Events bootstep
turns that on only for pools that run the worker's event loop (prefork, threads, solo; worker.py
should_use_eventloop), and flushes on the loop's next tick (worker/consumer/events.py, consumer.py
on_send_event_buffered), so about one event goes per message; gevent and eventlet publish every event on its own
("XXX This excludes eventlet/gevent, which should actually buffer"). Measured with Flower on: about 2 ms of worker
CPU per task went to sending events (docs/benchmarks.md).

Here every pool buffers task events and flushes them FLUSH_S after the first one waits, or at once when the
dispatcher's own limit (24 events) is reached. Flower sees a task at most FLUSH_S later. Events still waiting when
the consumer closes its dispatcher (shutdown, a lost connection) are flushed first; a flush that cannot reach the
broker keeps them in the dispatcher's offline buffer, which Celery hands to the next dispatcher. Worker events
(heartbeats, online, offline) are not buffered.

The setting `vpsstack_event_batch_s` (seconds, 0 = off) overrides FLUSH_S; the benchmark's ablation uses it.
"""
from vpsstack_versions import skipped

# The version this patch was read against and measured with; the worker role's pip constraints pin the same.
TESTED_VERSIONS = {"celery": "5.7.0"}

# Long enough that a busy worker sends a few dozen events per message, short enough that Flower looks live.
FLUSH_S = 0.25
SETTING = "vpsstack_event_batch_s"


class FlushLater:
    """The dispatcher's on_send_buffered: one flush FLUSH_S after the first buffered event, on the worker's timer.

    With an event loop (prefork, threads, solo) the timer is the loop's, which only the loop's thread may touch,
    and a threads pool sends events from its own threads: the loop's thread-safe call_soon arms it. Without one
    (gevent, eventlet) the timer is the pool's own and every greenlet may use it."""

    def __init__(self, consumer, dispatcher, delay_s):
        self.hub = consumer.hub
        self.timer = consumer.timer
        self.dispatcher = dispatcher
        self.delay_s = delay_s
        self.pending = False

    def __call__(self):
        if not self.pending:
            self.pending = True
            if self.hub is None:
                self.arm()
            else:
                self.hub.call_soon(self.arm)

    def arm(self):
        self.timer.call_after(self.delay_s, self.flush)

    def flush(self):
        self.pending = False
        self.dispatcher.flush()


def batch_seconds(conf):
    value = conf.get(SETTING)
    return FLUSH_S if value is None else float(value)


def install():
    """Wrap Celery's Events bootstep once per process; False when skipped.

    Skipped, with one line in the program's log, on another Celery version (vpsstack_versions.py)."""
    if skipped(__name__, TESTED_VERSIONS):
        return False
    from celery.worker.consumer.events import Events  # pylint: disable=import-outside-toplevel

    if getattr(Events.start, "vpsstack_wrapped", False):
        return True
    original_start, original_close = Events.start, Events._close  # pylint: disable=protected-access

    def start(self, consumer):
        original_start(self, consumer)
        dispatcher, delay_s = consumer.event_dispatcher, batch_seconds(consumer.app.conf)
        if dispatcher is not None and consumer.timer is not None and delay_s > 0:
            dispatcher.buffer_group = frozenset({"task"})
            dispatcher.on_send_buffered = FlushLater(consumer, dispatcher, delay_s)

    def close(self, consumer):
        if consumer.event_dispatcher is not None:
            consumer.event_dispatcher.flush()
        return original_close(self, consumer)

    start.vpsstack_wrapped = True
    Events.start = start
    Events._close = close  # pylint: disable=protected-access
    return True
