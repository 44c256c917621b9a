"""The timer compaction step (roles/worker/files/vpsstack_timer_compaction.py) on kombu's own Timer and Hub.

kombu is the version the worker role installs (requirements-dev.txt); Celery is not in the controller's venv, so
its bootsteps base class is a stand-in with the same constructor. The memory effect in a real worker is measured,
not asserted (docs/worker.md, "Time limits and the parent's memory").
"""
from __future__ import annotations

import collections
import heapq
import sys
import types

import pytest
from role_files import fake_versions, load_worker_file
from kombu.asynchronous.hub import Hub
from kombu.asynchronous.timer import Timer


@pytest.fixture(name="compaction")
def fixture_compaction():
    return load_worker_file("vpsstack_timer_compaction")


@pytest.fixture(name="celery_stub")
def fixture_celery_stub(monkeypatch):
    """`from celery import bootsteps` inside install(): a StartStopStep with Celery's constructor signature."""

    class StartStopStep:
        def __init__(self, parent, **kwargs):
            self.parent = parent

    celery = types.ModuleType("celery")
    celery.bootsteps = types.SimpleNamespace(StartStopStep=StartStopStep)
    monkeypatch.setitem(sys.modules, "celery", celery)


def time_limit_timers(timer, count, finished):
    """What the prefork pool does per task: arm a timer at the soft limit, cancel it when the task ends."""
    entries = [timer.call_after(270 + index, lambda: None) for index in range(count)]
    for entry in entries[:finished]:
        timer.cancel(entry)
    return entries


def due_order(timer):
    return [item.eta for item in sorted(timer._queue)]  # pylint: disable=protected-access


def test_cancelled_entries_are_dropped_and_live_ones_kept_in_due_order(compaction):
    timer = Timer()
    entries = time_limit_timers(timer, 1000, finished=990)
    live_etas = sorted(item.eta for item in timer._queue if not item.entry.canceled)

    assert compaction.drop_cancelled(timer) == 990
    assert len(timer) == 10
    assert due_order(timer) == live_etas
    assert {item.entry for item in timer._queue} == set(entries[990:])
    # Still a heap: what heappop returns first is the earliest live timer.
    assert heapq.heappop(timer._queue).eta == live_etas[0]


def test_the_list_the_scheduler_iterates_is_compacted_in_place(compaction):
    timer = Timer()
    queue = timer._queue
    scheduler = iter(timer)  # the Hub's generator, created once and holding this very list
    fired = []
    due = timer.call_after(-1, fired.append, ("due",))
    time_limit_timers(timer, 50, finished=50)

    compaction.drop_cancelled(timer)

    assert timer._queue is queue
    assert next(scheduler) == (None, due)
    due()
    assert fired == ["due"]


def test_nothing_cancelled_leaves_the_heap_untouched(compaction):
    timer = Timer()
    time_limit_timers(timer, 20, finished=0)
    before = list(timer._queue)

    assert compaction.drop_cancelled(timer) == 0
    assert timer._queue == before


def test_the_step_compacts_the_worker_hub_and_stops_with_it(compaction, celery_stub):
    app = types.SimpleNamespace(steps=collections.defaultdict(set))
    step_class = compaction.install(app, interval_s=5)
    assert app.steps["worker"] == {step_class}
    assert step_class.requires == {"celery.worker.components:Hub"}

    hub = Hub(Timer())
    worker = types.SimpleNamespace(hub=hub)
    step = step_class(worker)
    step.start(worker)
    time_limit_timers(hub.timer, 100, finished=100)

    repeating = step.tref
    assert repeating in {item.entry for item in hub.timer._queue}
    # What the loop does when it is due: pop it, run it (the first run acts at once), and it enters itself again.
    hub.timer._queue.remove(next(item for item in hub.timer._queue if item.entry is repeating))
    heapq.heapify(hub.timer._queue)
    repeating()
    assert [item.entry for item in hub.timer._queue] == [repeating]

    step.stop(worker)
    assert repeating.canceled and step.tref is None


def test_pools_without_the_event_loop_are_left_alone(compaction, celery_stub):
    app = types.SimpleNamespace(steps=collections.defaultdict(set))
    step_class = compaction.install(app)
    worker = types.SimpleNamespace(hub=None)  # gevent, eventlet, threads, solo: Celery sets no hub
    step = step_class(worker)

    step.start(worker)
    step.stop(worker)

    assert step.tref is None


@pytest.mark.parametrize("installed, found", [
    ({"kombu": "5.8.0"}, "kombu 5.8.0"),
    ({"kombu": "5.6.2"}, "kombu 5.6.2"),
    ({}, "kombu missing"),
], ids=["newer", "older", "missing"])
def test_another_kombu_skips_the_step_with_one_warning(compaction, celery_stub, monkeypatch, caplog,
                                                       installed, found):
    fake_versions(monkeypatch, installed)
    app = types.SimpleNamespace(steps=collections.defaultdict(set))

    assert compaction.install(app) is None

    assert app.steps["worker"] == set()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "vpsstack_timer_compaction patch skipped: found %s; tested with kombu 5.7.0" % found)]


def test_the_tested_kombu_installs_the_step_quietly(compaction, celery_stub, monkeypatch, caplog):
    fake_versions(monkeypatch, dict(compaction.TESTED_VERSIONS))
    app = types.SimpleNamespace(steps=collections.defaultdict(set))

    step_class = compaction.install(app)

    assert app.steps["worker"] == {step_class}
    assert caplog.records == []
