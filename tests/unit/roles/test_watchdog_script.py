"""The watchdog's decision (roles/worker/files/vpsstack_watchdog.py): which programs a run restarts, and the count it
carries to the next run. Pure: no supervisor, no broker."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPEC = importlib.util.spec_from_file_location(
    "vpsstack_watchdog", os.path.join(REPO, "roles", "worker", "files", "vpsstack_watchdog.py"))
watchdog = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(watchdog)

NODES = {"celery-default": "default@h", "celery-io": "io@h"}
RUNNING = {"celery-default": ("RUNNING", 101), "celery-io": ("RUNNING", 202)}


def runs(answers, failures=3, status=None):
    """Several runs in a row, the state carried between them: the restarts of each run."""
    status = RUNNING if status is None else status
    state, restarts = {}, []
    for answered in answers:
        state, due = watchdog.judge(state, status, NODES, answered, failures)
        restarts.append(due)
    return state, restarts


def test_every_node_answering_keeps_no_count():
    assert watchdog.judge({}, RUNNING, NODES, {"default@h", "io@h"}, 3) == ({}, [])


def test_n_misses_in_a_row_restart_the_program_and_clear_its_count():
    state, restarts = runs([{"io@h"}, {"io@h"}, {"io@h"}])
    assert restarts == [[], [], [("celery-default", 101, 3)]]
    assert state == {}


def test_an_answer_in_between_starts_the_count_again():
    state, restarts = runs([{"io@h"}, {"io@h"}, {"io@h", "default@h"}, {"io@h"}, {"io@h"}])
    assert restarts == [[]] * 5
    assert state == {"celery-default": {"pid": 101, "missed": 2}}


def test_one_failure_restarts_on_the_first_miss():
    assert watchdog.judge({}, RUNNING, NODES, {"default@h"}, 1) == ({}, [("celery-io", 202, 1)])


@pytest.mark.parametrize("state_name", ["STOPPED", "STARTING", "BACKOFF", "FATAL", "STOPPING", "EXITED", "MISSING"])
def test_a_program_not_running_is_not_judged_and_loses_its_count(state_name):
    status = dict(RUNNING, **{"celery-default": (state_name, None)})
    previous = {"celery-default": {"pid": 101, "missed": 2}}
    if state_name == "MISSING":
        status.pop("celery-default")
    # An operator's `supervisorctl stop` is never undone: no restart, however many runs pass.
    state, restarts = runs([{"io@h"}] * 5, status=status)
    assert restarts == [[]] * 5 and state == {}
    assert watchdog.judge(previous, status, NODES, {"io@h"}, 3) == ({}, [])


def test_a_new_pid_starts_the_count_again():
    previous = {"celery-default": {"pid": 99, "missed": 2}}
    assert watchdog.judge(previous, RUNNING, NODES, {"io@h"}, 3) == (
        {"celery-default": {"pid": 101, "missed": 1}}, [])


def test_a_run_that_did_not_reach_the_broker_moves_no_count():
    previous = {"celery-default": {"pid": 101, "missed": 2}, "celery-io": {"pid": 202, "missed": 1}}
    assert watchdog.judge(previous, RUNNING, NODES, None, 3) == (previous, [])
    # ... but still forgets a program restarted or stopped since.
    status = dict(RUNNING, **{"celery-io": ("RUNNING", 303), "celery-default": ("STOPPED", None)})
    assert watchdog.judge(previous, status, NODES, None, 3) == ({}, [])


def test_unreachable_runs_in_between_do_not_break_the_row():
    state, restarts = runs([{"io@h"}, None, {"io@h"}, None, {"io@h"}])
    assert restarts[-1] == [("celery-default", 101, 3)]


def test_only_the_groups_given_are_judged():
    # beat and other programs are never pinged nor restarted, whatever state they are in.
    status = dict(RUNNING, **{"celery-beat": ("RUNNING", 303), "other": ("RUNNING", 404)})
    state, due = watchdog.judge({}, status, NODES, set(), 1)
    assert [program for program, _pid, _missed in due] == ["celery-default", "celery-io"]


# A reply as a celery 5.7.0 / kombu 5.7.0 worker LPUSHed it (read with LRANGE on the reliability host) to a ping
# built by ping_message() with ticket T-1 and reply list capture.reply.
REAL_REPLY = (
    '{"body": "eyJkZWZhdWx0QHZwc3N0YWNrLXJlbGlhYmlsaXR5IjogeyJvayI6ICJwb25nIn19", "content-encoding": "utf-8", '
    '"content-type": "application/json", "headers": {"ticket": "T-1", "clock": 79}, "properties": '
    '{"delivery_mode": 1, "delivery_info": {"exchange": "", "routing_key": "capture.reply"}, "priority": 0, '
    '"body_encoding": "base64", "delivery_tag": "32361b1a-6859-4c52-8f1d-2b3faa435ceb"}}')


def test_the_ping_is_celerys_control_message_with_a_direct_reply_list():
    """What kombu's pidbox Node reads (kombu/pidbox.py handle_message/dispatch) from a fanout message."""
    envelope = json.loads(watchdog.ping_message(["io@h", "default@h"], "T-1", "wd.h.reply", "celery.pidbox", 5))
    assert envelope["content-type"] == "application/json"
    assert envelope["properties"]["body_encoding"] == "base64"
    assert envelope["properties"]["delivery_info"] == {"exchange": "celery.pidbox", "routing_key": ""}
    assert envelope["properties"]["delivery_tag"]
    body = json.loads(base64.b64decode(envelope["body"]))
    assert body == {"method": "ping", "arguments": {}, "destination": ["default@h", "io@h"], "pattern": None,
                    "matcher": None, "ticket": "T-1",
                    # The default exchange: the node LPUSHes onto the list named by the routing key.
                    "reply_to": {"exchange": "", "routing_key": "wd.h.reply"}}


def test_a_real_reply_names_its_node():
    assert watchdog.reply_nodes(REAL_REPLY, "T-1") == {"default@vpsstack-reliability"}


def test_a_reply_to_another_ticket_is_ignored():
    assert watchdog.reply_nodes(REAL_REPLY, "T-2") == set()


@pytest.mark.parametrize("change", [{"content-type": "application/x-python-serialize"}, {"body": "bm90IGpzb24="}])
def test_a_reply_that_cannot_be_read_is_an_error_not_a_silence(change):
    with pytest.raises(ValueError):
        watchdog.reply_nodes(json.dumps(dict(json.loads(REAL_REPLY), **change)), "T-1")


@pytest.mark.parametrize("settings, names", [
    ({"broker_url": "redis://celery:pw@10.0.0.5:6379/0"}, ("/0.celery.pidbox", "celery.pidbox", "wd.h.reply")),
    ({"broker_url": "redis://:pw@localhost/3", "control_exchange": "ops",
      "broker_transport_options": {"visibility_timeout": 70}}, ("/3.ops.pidbox", "ops.pidbox", "wd.h.reply")),
    ({"broker_url": "redis://localhost"}, ("/0.celery.pidbox", "celery.pidbox", "wd.h.reply")),
])
def test_wire_names_follow_the_database_and_control_exchange(settings, names):
    channel, exchange, reply, key = watchdog.wire_names(settings, "h")
    assert (channel, exchange, reply.replace("vpsstack-watchdog.", "wd.")) == names and key == reply


def test_a_global_keyprefix_starts_the_channel_and_the_reply_key_not_the_reply_name():
    # What kombu's prefixing client does to PUBLISH and LPUSH; the ping names the reply list unprefixed.
    settings = {"broker_url": "redis://a/2", "broker_transport_options": {"global_keyprefix": "app1:", "sep": ":",
                                                                          "fanout_prefix": True}}
    assert watchdog.wire_names(settings, "h") == (
        "app1:/2.celery.pidbox", "celery.pidbox", "vpsstack-watchdog.h.reply", "app1:vpsstack-watchdog.h.reply")


def test_the_projects_key_options_are_merged_under_the_enforced_settings(tmp_path):
    (tmp_path / "wd_settings.py").write_text(
        "ENFORCED = {'broker_url': 'redis://a/0', 'broker_transport_options': {'visibility_timeout': 70}}\n")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"global_keyprefix": "app1:", "visibility_timeout": 5}))
    settings = watchdog.load_settings(str(tmp_path), "wd_settings", str(keys))
    assert settings["broker_transport_options"] == {"global_keyprefix": "app1:", "visibility_timeout": 70}


@pytest.mark.parametrize("settings", [
    {"broker_url": "rediss://celery:pw@redis.example.net:6380/0"},
    {"broker_url": "redis://a:6379/0;redis://b:6379/0"},
    {"broker_url": "redis://a/0", "broker_transport_options": {"fanout_prefix": False}},
    {"broker_url": "redis://a/0", "broker_transport_options": {"fanout_patterns": False}},
])
def test_settings_it_cannot_speak_mean_no_ping_rather_than_silent_nodes(settings):
    with pytest.raises(watchdog.PingFailed):
        watchdog.wire_names(settings, "h")


def test_a_url_it_cannot_read_is_no_ping_not_a_crash():
    with pytest.raises(watchdog.PingFailed, match="ValueError"):
        watchdog.ping({"broker_url": "redis://localhost/db-one"}, ["default@h"], 5, "h")


class FakeRedis:
    """Stands in for the broker in ping(): PUBLISH reaches `listeners`, BRPOP hands out `replies`, then times out."""

    def __init__(self, listeners, replies):
        self.listeners, self.replies, self.calls = listeners, list(replies), []

    def __call__(self, *_args):  # the Redis(url, connect_timeout, timeout) constructor
        return self

    def call(self, *args):
        self.calls.append(args[0])
        if args[0] == "PUBLISH":
            self.published = json.loads(base64.b64decode(json.loads(args[2])["body"]))
            return self.listeners
        if args[0] == "BRPOP":
            return [args[1], self.replies.pop(0)(self.published["ticket"])] if self.replies else None
        return 1

    def close(self):
        self.calls.append("close")


def pong(node, ticket=None):
    """A reply like REAL_REPLY from `node`, to the ping's ticket (or another)."""
    def build(ping_ticket):
        body = base64.b64encode(json.dumps({node: {"ok": "pong"}}).encode()).decode()
        return json.dumps(dict(json.loads(REAL_REPLY), body=body, headers={"ticket": ticket or ping_ticket}))
    return build


SETTINGS = {"broker_url": "redis://celery:pw@127.0.0.1:6379/0"}


def test_ping_collects_the_answers_and_cleans_its_reply_list(monkeypatch):
    fake = FakeRedis(2, [pong("io@h"), pong("default@h", ticket="old"), pong("default@h")])
    monkeypatch.setattr(watchdog, "Redis", fake)
    assert watchdog.ping(SETTINGS, ["default@h", "io@h"], 5, "h") == {"default@h", "io@h"}
    assert fake.calls == ["DEL", "PUBLISH", "BRPOP", "BRPOP", "BRPOP", "DEL", "close"]
    assert fake.published["reply_to"] == {"exchange": "", "routing_key": "vpsstack-watchdog.h.reply"}


def test_ping_stops_at_the_timeout_with_the_silent_node_missing(monkeypatch):
    fake = FakeRedis(2, [pong("io@h")])
    monkeypatch.setattr(watchdog, "Redis", fake)
    assert watchdog.ping(SETTINGS, ["default@h", "io@h"], 5, "h") == {"io@h"}
    assert fake.calls[-2:] == ["DEL", "close"]


def test_ping_under_a_global_keyprefix_publishes_and_pops_the_prefixed_names(monkeypatch):
    fake = FakeRedis(1, [pong("default@h")])
    seen = []
    plain_call = fake.call
    monkeypatch.setattr(fake, "call", lambda *args: seen.append(args[:2]) or plain_call(*args))
    monkeypatch.setattr(watchdog, "Redis", fake)
    settings = dict(SETTINGS, broker_transport_options={"global_keyprefix": "app1:"})
    assert watchdog.ping(settings, ["default@h"], 5, "h") == {"default@h"}
    assert ("PUBLISH", "app1:/0.celery.pidbox") in seen and ("BRPOP", "app1:vpsstack-watchdog.h.reply") in seen
    assert fake.published["reply_to"]["routing_key"] == "vpsstack-watchdog.h.reply"


def test_a_ping_nobody_listens_to_proves_nothing(monkeypatch):
    monkeypatch.setattr(watchdog, "Redis", FakeRedis(0, []))
    with pytest.raises(watchdog.PingFailed, match="no worker listens on /0.celery.pidbox"):
        watchdog.ping(SETTINGS, ["default@h"], 5, "h")


def resp(raw):
    client = watchdog.Redis.__new__(watchdog.Redis)
    client.file = io.BytesIO(raw)
    return client.read()


@pytest.mark.parametrize("raw, value", [
    (b"+OK\r\n", "OK"),
    (b":2\r\n", 2),
    (b"*-1\r\n", None),
    (b"*2\r\n$4\r\nkey1\r\n$5\r\nhello\r\n", ["key1", "hello"]),
])
def test_resp_replies_are_read(raw, value):
    assert resp(raw) == value


def test_a_broker_error_or_a_closed_connection_is_no_ping():
    with pytest.raises(watchdog.PingFailed, match="WRONGPASS"):
        resp(b"-WRONGPASS invalid username-password pair\r\n")
    with pytest.raises(ConnectionError):
        resp(b"")


@pytest.mark.parametrize("conf, uri, transport", [
    ("", "http://localhost/RPC2", watchdog.UnixTransport),
    # Ubuntu's supervisord.conf, inline comments included.
    ("[supervisorctl]\nserverurl=unix:///var/run/supervisor.sock ; use a unix:// URL  for a unix socket\n",
     "http://localhost/RPC2", watchdog.UnixTransport),
    ("[supervisorctl]\nserverurl=unix:///run/s.sock\nusername=ops\npassword=p@ss:w\n",
     "http://ops:p%40ss%3Aw@localhost/RPC2", watchdog.UnixTransport),
    ("[supervisorctl]\nserverurl=http://127.0.0.1:9001\nusername=ops\npassword=pw\n",
     "http://ops:pw@127.0.0.1:9001/RPC2", None),
])
def test_supervisord_is_found_as_supervisorctl_finds_it(tmp_path, conf, uri, transport):
    path = tmp_path / "supervisord.conf"
    path.write_text(conf)
    proxy = watchdog.supervisor(str(path))
    assert proxy._ServerProxy__host in uri and uri.endswith(proxy._ServerProxy__handler)
    if transport:
        assert isinstance(proxy._ServerProxy__transport, transport)
        assert proxy._ServerProxy__transport.unix_path in ("/var/run/supervisor.sock", "/run/s.sock")


def test_the_state_file_round_trips_and_a_broken_one_is_empty(tmp_path):
    path = str(tmp_path / "state.json")
    assert watchdog.read_state(path) == {}
    watchdog.write_state(path, {"celery-default": {"pid": 1, "missed": 2}})
    assert watchdog.read_state(path) == {"celery-default": {"pid": 1, "missed": 2}}
    with open(path, "w") as fh:
        fh.write("{not json")
    assert watchdog.read_state(path) == {}
    with open(path, "w") as fh:
        json.dump([1, 2], fh)
    assert watchdog.read_state(path) == {}


def test_a_run_restarts_a_silent_program_and_logs_it(tmp_path, monkeypatch, capsys):
    """main() end to end with supervisord and the broker stubbed: the second silent run restarts celery-default,
    beat (RUNNING, not a group given) is never pinged."""
    calls, pids = [], {"celery-default": 101}

    def fake_status():
        return {"celery-default": ("RUNNING", pids["celery-default"]), "celery-io": ("RUNNING", 202),
                "celery-beat": ("RUNNING", 303)}

    def fake_run(argv, **_kwargs):
        calls.append(argv)
        pids["celery-default"] = 111
        return type("Run", (), {"returncode": 0, "stdout": "celery-default: stopped\ncelery-default: started\n",
                                "stderr": ""})()

    monkeypatch.setattr(watchdog, "supervisor_status", fake_status)
    monkeypatch.setattr(watchdog, "load_settings", lambda *_args: {})
    pinged = []

    def fake_ping(_settings, nodes, *_args):
        pinged.append(sorted(nodes))
        return {n for n in nodes if n.startswith("io@")}

    monkeypatch.setattr(watchdog, "ping", fake_ping)
    monkeypatch.setattr(watchdog.subprocess, "run", fake_run)
    monkeypatch.setattr(watchdog.socket, "gethostname", lambda: "h")
    args = ["--config-dir", "/x", "--settings", "s", "--failures", "2", "--timeout", "5",
            "--state", str(tmp_path / "state.json"), "default", "io"]
    assert watchdog.main(args) == 0
    assert calls == []
    assert watchdog.main(args) == 0
    assert calls == [["supervisorctl", "restart", "celery-default"]]
    assert pinged == [["default@h", "io@h"]] * 2
    out = capsys.readouterr().out
    assert "celery-default: node default@h did not answer a ping within 5 s (1 of 2 in a row)" in out
    assert "celery-default: node default@h did not answer 2 pings in a row: restarting it" in out
    assert "celery-default: restarted by the watchdog, now RUNNING pid 111" in out
    assert watchdog.read_state(str(tmp_path / "state.json")) == {}


def test_a_broker_that_cannot_be_reached_restarts_nothing(tmp_path, monkeypatch, capsys):
    def unreachable(*_args):
        raise watchdog.PingFailed("ConnectionRefusedError: [Errno 111]")

    monkeypatch.setattr(watchdog, "supervisor_status", lambda: {"celery-default": ("RUNNING", 7)})
    monkeypatch.setattr(watchdog, "load_settings", lambda *_args: {})
    monkeypatch.setattr(watchdog, "ping", unreachable)
    monkeypatch.setattr(watchdog, "restart", lambda *_args: pytest.fail("restarted with the broker away"))
    args = ["--config-dir", "/x", "--settings", "s", "--failures", "1", "--timeout", "5",
            "--state", str(tmp_path / "state.json"), "default"]
    assert watchdog.main(args) == 0
    assert "no ping possible, no program judged this run: ConnectionRefusedError" in capsys.readouterr().out
