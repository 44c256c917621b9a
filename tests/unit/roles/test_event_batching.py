"""Task events in batches (roles/worker/files/vpsstack_event_batching.py) on Celery's own Events bootstep and
dispatcher, over kombu's in-memory transport.

The dispatcher's publishes are recorded; the worker's timer is a stand-in whose entries the test fires. What the
batches save in a real worker with Flower is measured, not asserted (docs/worker.md, "Task events in batches").
"""
from __future__ import annotations

import types

import pytest
from celery import Celery
from celery.events.dispatcher import EventDispatcher
from celery.worker.consumer.events import Events
from role_files import fake_versions, load_worker_file


class Timer:
    """The worker's timer as the patch uses it: call_after(seconds, function); the test fires what is due."""

    def __init__(self):
        self.entries = []

    def call_after(self, seconds, function):
        self.entries.append((seconds, function))

    def fire(self):
        entries, self.entries = self.entries, []
        for _seconds, function in entries:
            function()


class Hub:
    """The event loop as the patch uses it: call_soon(callback), run by the test as the loop's next tick."""

    def __init__(self):
        self.ready = []

    def call_soon(self, callback):
        self.ready.append(callback)

    def tick(self):
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


@pytest.fixture(name="batching")
def fixture_batching(monkeypatch):
    """The patch, with Celery's Events bootstep restored after the test."""
    monkeypatch.setattr(Events, "start", Events.start)
    monkeypatch.setattr(Events, "_close", Events._close)
    return load_worker_file("vpsstack_event_batching")


@pytest.fixture(name="published")
def fixture_published(monkeypatch):
    """(routing key, event types) of every message the dispatchers publish."""
    seen = []

    def record(_self, event, _producer, routing_key, **_kwargs):
        seen.append((routing_key, [e["type"] for e in event] if isinstance(event, list) else [event["type"]]))

    monkeypatch.setattr(EventDispatcher, "_publish", record)
    return seen


def started_consumer(settings=None, hub=None):
    """A worker consumer, its Events step started: without an event loop (gevent, eventlet, threads) or, with HUB,
    prefork's, where Celery itself buffers and asks the loop for a flush on its next tick."""
    app = Celery("batching", broker="memory://", set_as_current=False)
    app.conf.update(settings or {})
    consumer = types.SimpleNamespace(
        app=app, hostname="default@host", hub=hub, timer=Timer(), event_dispatcher=None, amqheartbeat=None,
        connection_for_write=lambda heartbeat=None: app.connection_for_write(),
        on_send_event_buffered=lambda: pytest.fail("flushed on the next tick of the loop"))
    step = Events(consumer)
    step.start(consumer)
    return step, consumer


def one_task(dispatcher, task_id):
    for event_type in ("task-received", "task-started", "task-succeeded"):
        dispatcher.send(event_type, uuid=task_id)


@pytest.mark.parametrize("hub", [None, Hub()], ids=["no-loop", "event-loop"])
def test_a_tasks_events_go_out_together_when_the_timer_fires(batching, published, hub):
    assert batching.install()
    _step, consumer = started_consumer(hub=hub)
    one_task(consumer.event_dispatcher, "a")
    one_task(consumer.event_dispatcher, "b")

    assert published == []
    if hub is not None:  # the loop's own timer is armed from the loop's thread, on its next tick
        assert consumer.timer.entries == []
        hub.tick()
        assert hub.ready == []
    assert [seconds for seconds, _f in consumer.timer.entries] == [batching.FLUSH_S]  # one flush for all six
    consumer.timer.fire()
    assert published == [("task.multi", ["task-received", "task-started", "task-succeeded"] * 2)]
    one_task(consumer.event_dispatcher, "c")
    if hub is not None:
        hub.tick()
    assert len(consumer.timer.entries) == 1  # the next batch arms the timer again


def test_a_full_buffer_goes_out_at_once(batching, published):
    batching.install()
    _step, consumer = started_consumer()
    for task_id in range(8):
        one_task(consumer.event_dispatcher, str(task_id))  # 24 events: the dispatcher's own buffer_limit

    assert published == [("task.multi", ["task-received", "task-started", "task-succeeded"] * 8)]


def test_worker_events_are_not_held_back(batching, published):
    batching.install()
    _step, consumer = started_consumer()
    consumer.event_dispatcher.send("worker-heartbeat")

    assert published == [("worker.heartbeat", ["worker-heartbeat"])]


def test_waiting_events_go_out_before_the_dispatcher_closes(batching, published):
    batching.install()
    step, consumer = started_consumer()
    one_task(consumer.event_dispatcher, "last")

    step.shutdown(consumer)

    assert published == [("task.multi", ["task-received", "task-started", "task-succeeded"])]
    assert consumer.event_dispatcher is None


def test_the_setting_at_zero_leaves_celerys_own_sending(batching, published):
    batching.install()
    _step, consumer = started_consumer({batching.SETTING: 0})
    one_task(consumer.event_dispatcher, "a")

    assert [types_ for _key, types_ in published] == [["task-received"], ["task-started"], ["task-succeeded"]]
    assert consumer.timer.entries == []


def test_installing_twice_wraps_once(batching, published):
    assert batching.install()
    wrapped = Events.start
    assert batching.install()
    assert Events.start is wrapped


def test_another_celery_leaves_the_events_step_alone_with_one_warning(batching, published, monkeypatch, caplog):
    fake_versions(monkeypatch, {"celery": "5.7.1"})
    original = Events.start

    assert batching.install() is False

    assert Events.start is original
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "vpsstack_event_batching patch skipped: found celery 5.7.1; tested with celery 5.7.0")]
