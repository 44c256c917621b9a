"""One Redis client per channel (roles/worker/files/vpsstack_redis_clients.py) on kombu's own Redis Channel and QoS.

The channel is kombu's class without its constructor (which would connect): a redis-py pool on an address nothing
listens on, and redis-py's own client class. No command reaches a server: the pipeline's execute records the
commands instead. The CPU saved in a worker is measured, not asserted (docs/worker.md, "One Redis client per
channel").
"""
from __future__ import annotations

import threading
import types

import pytest
import redis
from kombu.transport.redis import Channel, QoS
from role_files import fake_versions, load_worker_file


@pytest.fixture(name="clients")
def fixture_clients(monkeypatch):
    """The patch module; kombu's Channel.conn_or_acquire is restored after the test."""
    monkeypatch.setattr(Channel, "conn_or_acquire", Channel.conn_or_acquire)
    return load_worker_file("vpsstack_redis_clients")


@pytest.fixture(name="built")
def fixture_built(monkeypatch):
    """The redis.Redis objects built during the test."""
    built = []
    original = redis.Redis.__init__

    def init(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", init)
    return built


@pytest.fixture(name="sent")
def fixture_sent(monkeypatch):
    """The commands of every pipeline executed during the test, one list per pipeline."""
    sent = []

    def execute(self, raise_on_error=True):  # pylint: disable=unused-argument
        sent.append([args[0] for args, _options in self.command_stack])
        self.reset()
        return []

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    return sent


def new_channel():
    """kombu's Redis Channel with what conn_or_acquire and the QoS read, and no connection."""
    channel = Channel.__new__(Channel)
    channel._pool = redis.ConnectionPool(host="127.0.0.1", port=1)
    channel._async_pool = None
    channel.Client = redis.Redis
    channel.unacked_key, channel.unacked_index_key = "unacked", "unacked_index"
    return channel


def acquire(channel, client=None):
    with channel.conn_or_acquire(client) as acquired:
        return acquired


def test_every_command_of_a_channel_uses_one_client_of_its_pool(clients, built):
    assert clients.install()
    channel = new_channel()

    first, second = acquire(channel), acquire(channel)

    assert first is second
    assert isinstance(first, redis.Redis) and first.connection_pool is channel.pool
    assert built == [first]


def test_a_task_s_unacked_record_and_ack_build_no_client_after_the_first(clients, built, sent):
    """What a worker runs per message (kombu's QoS.append, then QoS.ack): 100 messages, one client."""
    clients.install()
    qos = QoS(new_channel(), prefetch_count=0)
    message = types.SimpleNamespace(_raw={"body": "{}"}, delivery_info={"exchange": "", "routing_key": "celery"})

    for tag in range(100):
        qos.append(message, "tag-%d" % tag)
        qos.ack("tag-%d" % tag)

    assert len(built) == 1
    assert sent[:2] == [["ZADD", "HSET"], ["ZREM", "HDEL"]] and len(sent) == 200


def test_kombu_s_own_method_builds_a_client_per_command(built):
    """Why the patch exists, and what the test above would see without it."""
    channel = new_channel()
    assert acquire(channel) is not acquire(channel)
    assert len(built) == 2


def test_a_client_the_caller_gives_is_used_as_it_is(clients, built):
    clients.install()
    given = redis.Redis(connection_pool=redis.ConnectionPool(host="127.0.0.1", port=1))

    assert acquire(new_channel(), given) is given
    assert built == [given]


def test_a_new_pool_gets_a_new_client(clients):
    """kombu drops its pool after a fork or a lost connection (Channel._disconnect_pools) and builds another on
    the next use."""
    clients.install()
    channel = new_channel()
    before = acquire(channel)

    channel._pool = redis.ConnectionPool(host="127.0.0.1", port=1)
    after = acquire(channel)

    assert after is not before
    assert after.connection_pool is channel._pool
    assert acquire(channel) is after


def test_channels_do_not_share_clients(clients):
    clients.install()
    one, other = new_channel(), new_channel()
    assert acquire(one) is not acquire(other)
    assert acquire(other).connection_pool is other.pool


def test_threads_of_one_channel_get_a_client_of_its_pool(clients):
    """The threads pool acks from its threads: every one gets a working client, and the channel keeps one."""
    clients.install()
    channel = new_channel()
    got, start = [], threading.Barrier(8)

    def worker():
        start.wait()
        got.append(acquire(channel))

    threads = [threading.Thread(target=worker) for _number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(got) == 8 and all(client.connection_pool is channel.pool for client in got)
    assert acquire(channel) is acquire(channel)


def test_installing_twice_wraps_once(clients):
    assert clients.install()
    wrapped = Channel.conn_or_acquire
    assert clients.install()
    assert Channel.conn_or_acquire is wrapped


@pytest.mark.parametrize("installed, found", [
    ({"kombu": "5.8.0", "redis": "8.1.0"}, "kombu 5.8.0"),
    ({"kombu": "5.7.0", "redis": "8.2.0"}, "redis 8.2.0"),
], ids=["kombu", "redis"])
def test_another_kombu_or_redis_leaves_kombu_alone_with_one_warning(clients, monkeypatch, caplog, installed, found):
    fake_versions(monkeypatch, installed)
    original = Channel.conn_or_acquire

    assert clients.install() is False

    assert Channel.conn_or_acquire is original
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "vpsstack_redis_clients patch skipped: found %s; tested with kombu 5.7.0, redis 8.1.0" % found)]
    channel = new_channel()
    assert acquire(channel) is not acquire(channel)


def test_the_tested_versions_install_it_quietly(clients, monkeypatch, caplog):
    fake_versions(monkeypatch, dict(clients.TESTED_VERSIONS))

    assert clients.install() is True

    assert getattr(Channel.conn_or_acquire, "vpsstack_wrapped", False)
    assert caplog.records == []
