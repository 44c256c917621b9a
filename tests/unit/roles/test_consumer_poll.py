"""The consumer poll fix (roles/worker/files/vpsstack_consumer_poll.py) on kombu's own Redis poller class.

kombu's MultiChannelPoller.get is replaced by a recorder of the timeout it is given, so the test sees what the
wrapper passes on; the channels are stand-ins with kombu's two attributes the wrapper reads. The throughput
effect in a real gevent worker is measured, not asserted (docs/worker.md, "The 2-second fetch stall").
"""
from __future__ import annotations

import types

import pytest
from role_files import fake_versions, load_worker_file
from kombu.transport.redis import MultiChannelPoller


@pytest.fixture(name="poll_fix")
def fixture_poll_fix():
    return load_worker_file("vpsstack_consumer_poll")


@pytest.fixture(name="timeouts")
def fixture_timeouts(monkeypatch):
    """kombu's get, replaced (and restored after the test) by one that records the timeout it receives."""
    seen = []

    def recording_get(_self, _callback, timeout=None):
        seen.append(timeout)

    monkeypatch.setattr(MultiChannelPoller, "get", recording_get)
    return seen


class Channel:
    """The two things of a kombu Redis channel the wrapper reads (kombu keeps channels in a set: hashable)."""

    def __init__(self, queues, credit):
        self.active_queues = queues
        self.qos = types.SimpleNamespace(can_consume=lambda: credit)


def channel(queues, credit):
    return Channel(queues, credit)


def poller_with(*channels):
    poller = MultiChannelPoller()
    poller._channels = set(channels)
    return poller


def test_a_full_window_polls_again_soon(poll_fix, timeouts):
    assert poll_fix.install()
    poller_with(channel(["celery"], credit=False)).get(None, timeout=2.0)
    poller_with(channel(["celery"], credit=False)).get(None)  # drain_events() without a timeout
    assert timeouts == [poll_fix.PAUSED_POLL_S, poll_fix.PAUSED_POLL_S]


@pytest.mark.parametrize("channels", [
    [channel(["celery"], credit=True)],                     # room in the window: BRPOP wakes the poll
    [channel([], credit=False)],                            # a client that consumes no queue (inspect, events)
    [channel([], credit=False), channel(["celery"], credit=True)],
], ids=["room-left", "no-queues", "mixed"])
def test_otherwise_the_callers_timeout_is_kept(poll_fix, timeouts, channels):
    poll_fix.install()
    poller_with(*channels).get(None, timeout=2.0)
    assert timeouts == [2.0]


def test_a_shorter_timeout_of_the_caller_is_kept(poll_fix, timeouts):
    poll_fix.install()
    poller_with(channel(["celery"], credit=False)).get(None, timeout=0.001)
    assert timeouts == [0.001]


def test_installing_twice_wraps_once(poll_fix, timeouts):
    poll_fix.install()
    wrapped = MultiChannelPoller.get
    assert poll_fix.install()
    assert MultiChannelPoller.get is wrapped
    poller_with(channel(["celery"], credit=False)).get(None, timeout=2.0)
    assert timeouts == [poll_fix.PAUSED_POLL_S]


@pytest.mark.parametrize("installed, found", [
    ({"kombu": "5.8.0", "redis": "8.1.0"}, "kombu 5.8.0"),
    ({"kombu": "5.7.0", "redis": "7.4.0"}, "redis 7.4.0"),
    ({"kombu": "5.7.1", "redis": "9.0.0"}, "kombu 5.7.1, redis 9.0.0"),
    ({"kombu": "5.7.0"}, "redis missing"),
], ids=["kombu", "redis", "both", "redis-missing"])
def test_another_kombu_or_redis_leaves_the_poller_alone_with_one_warning(poll_fix, timeouts, monkeypatch, caplog,
                                                                         installed, found):
    fake_versions(monkeypatch, installed)
    original = MultiChannelPoller.get

    assert poll_fix.install() is False

    assert MultiChannelPoller.get is original
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "vpsstack_consumer_poll patch skipped: found %s; tested with kombu 5.7.0, redis 8.1.0" % found)]
    poller_with(channel(["celery"], credit=False)).get(None, timeout=2.0)
    assert timeouts == [2.0]  # kombu's own wait, unshortened


def test_the_tested_versions_install_the_wrapper_quietly(poll_fix, timeouts, monkeypatch, caplog):
    fake_versions(monkeypatch, dict(poll_fix.TESTED_VERSIONS))

    assert poll_fix.install() is True

    assert getattr(MultiChannelPoller.get, "vpsstack_wrapped", False)
    assert caplog.records == []
    poller_with(channel(["celery"], credit=False)).get(None, timeout=2.0)
    assert timeouts == [poll_fix.PAUSED_POLL_S]
