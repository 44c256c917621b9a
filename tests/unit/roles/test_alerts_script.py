"""The alerts timer's script (roles/alerts/files/vpsstack_alerts.py): which conditions are sent when (once per
condition per repeat interval, again on a status change, once when cleared), the webhook body, mail through a
sendmail, and a whole run against a local HTTP listener with a stand-in for the audit script."""
from __future__ import annotations

import http.server
import importlib.util
import json
import os
import stat
import subprocess
import sys
import socket
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, "roles", "alerts", "files", "vpsstack_alerts.py")
SPEC = importlib.util.spec_from_file_location("vpsstack_alerts", SCRIPT)
alerts = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(alerts)

STOPPED = ["FAIL", "celery-default", "STOPPED (supervisorctl status)"]
OK_LINES = [["OK", "redis reachable", "127.0.0.1:6379"], ["OK", "swap in use", "no swap"]]


def test_all_ok_sends_nothing():
    assert alerts.decide(OK_LINES, {}, 1000, 3600) == ([], {})


def test_a_condition_is_sent_once_per_repeat_interval():
    due, state = alerts.decide(OK_LINES + [STOPPED], {}, 1000, 3600)
    assert [(d["status"], d["check"], d["change"]) for d in due] == [("FAIL", "celery-default", "new")]
    assert alerts.decide(OK_LINES + [STOPPED], state, 1000 + 3599, 3600) == ([], state)
    due, later = alerts.decide(OK_LINES + [STOPPED], state, 1000 + 3600, 3600)
    assert [d["change"] for d in due] == ["repeat"]
    assert later["celery-default"] == {"status": "FAIL", "sent": 4600, "since": 1000}


def test_a_status_change_is_sent_at_once():
    _due, state = alerts.decide([["WARN", "redis memory", "81 %"]], {}, 1000, 3600)
    due, _state = alerts.decide([["FAIL", "redis memory", "96 %"]], state, 1010, 3600)
    assert [(d["status"], d["change"], d["detail"]) for d in due] == [("FAIL", "changed", "96 %")]


def test_a_cleared_condition_is_sent_once():
    _due, state = alerts.decide([STOPPED], {}, 1000, 3600)
    due, state = alerts.decide(OK_LINES, state, 1010, 3600)
    assert [(d["status"], d["check"], d["change"]) for d in due] == [("OK", "celery-default", "cleared")]
    assert state == {}
    assert alerts.decide(OK_LINES, state, 1020, 3600) == ([], {})
    assert alerts.decide(OK_LINES, {"x": {"status": "WARN", "sent": 0, "since": 0}}, 10, 60, "WARN", False) == ([], {})


def test_min_status_fail_ignores_warn_lines():
    due, state = alerts.decide([["WARN", "redis evicted keys", "3"], STOPPED], {}, 1000, 3600, "FAIL")
    assert [d["check"] for d in due] == ["celery-default"] and list(state) == ["celery-default"]


def test_the_message_has_a_slack_text_field():
    body = alerts.message("worker1", [{"status": "FAIL", "check": "celery-default", "detail": "STOPPED",
                                       "change": "new"}])
    assert body["text"] == "vpsstack alerts on worker1:\nFAIL  celery-default: STOPPED"
    assert body["host"] == "worker1" and body["alerts"][0]["change"] == "new"


def test_textfile_has_one_gauge_per_check(tmp_path):
    path = tmp_path / "vpsstack_audit.prom"
    alerts.prometheus_textfile(str(path), 'w"1', OK_LINES + [STOPPED, ["WARN", "celery-default", "x"]], 1234)
    text = path.read_text()
    assert 'vpsstack_audit_status{host="w\\"1",check="celery-default"} 2' in text
    assert 'vpsstack_audit_status{host="w\\"1",check="swap in use"} 0' in text
    assert 'vpsstack_audit_last_run_timestamp_seconds{host="w\\"1"} 1234' in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.fixture
def listener():
    """A local HTTP server that records the requests: POST bodies, and GETs (a followed redirect). It answers
    .status (200), after .delay seconds, with a Location header when .location is set."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            time.sleep(server.delay)
            self.send_response(server.status)
            if server.location:
                self.send_header("Location", server.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):  # noqa: N802 (http.server's name)
            received.append((self.path, "GET"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    # Threads: a slow answer must not hold up the fixture's shutdown.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.status, server.delay, server.location = 200, 0, None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, received
    server.shutdown()


def run_once(tmp_path, server, lines, **extra):
    """One run of the script as the service runs it, with a stand-in audit script printing these lines (or
    exiting 1 when lines is None)."""
    audit = tmp_path / "audit.py"
    audit.write_text("import json, sys\npassword = sys.stdin.readline().strip()\n"
                     "assert password == 'pw', password\nprint(json.dumps({'lines': %r, 'beat_pids': []}))\n"
                     % (lines,) if lines is not None else "raise SystemExit('cannot read /proc')\n")
    config = {"host": "w1", "audit_script": str(audit), "spec": {"redis": None}, "redis_password": "pw",
              "webhook_url": "http://127.0.0.1:%d/hooks/T0/secret-token" % server.server_port,
              "repeat_interval": 3600, "state_file": str(tmp_path / "state.json"), **extra}
    (tmp_path / "alerts.json").write_text(json.dumps(config))
    return subprocess.run([sys.executable, SCRIPT, str(tmp_path / "alerts.json")], capture_output=True, text=True,
                          check=False, timeout=60)


def test_a_run_posts_once_and_a_failed_post_is_sent_again(tmp_path, listener):
    server, received = listener
    assert run_once(tmp_path, server, OK_LINES).returncode == 0 and received == []
    server.status = 500
    run = run_once(tmp_path, server, OK_LINES + [STOPPED])
    assert run.returncode == 1 and "webhook: HTTP 500" in run.stderr
    assert "secret-token" not in run.stderr + run.stdout
    server.status = 200
    assert run_once(tmp_path, server, OK_LINES + [STOPPED]).returncode == 0
    assert len(received) == 2 and received[1][0] == "/hooks/T0/secret-token"
    assert "FAIL  celery-default: STOPPED" in received[1][1]["text"]
    assert run_once(tmp_path, server, OK_LINES + [STOPPED]).returncode == 0 and len(received) == 2
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600


def test_an_audit_that_cannot_run_is_a_fail_line(tmp_path, listener):
    server, received = listener
    config = {"audit_script": str(tmp_path / "missing.py"), "spec": {}}
    lines = alerts.run_audit(config)
    assert lines[0][:2] == ["FAIL", "audit script"]
    assert run_once(tmp_path, server, None).returncode == 0
    assert received[0][1]["alerts"][0]["check"] == "audit script"
    assert "cannot read /proc" in received[0][1]["alerts"][0]["detail"]


def test_mail_goes_through_sendmail(tmp_path, listener):
    server, _received = listener
    sendmail = tmp_path / "sendmail"
    sendmail.write_text("#!/bin/sh\necho \"$@\" > %s/args\ncat > %s/mail\n" % (tmp_path, tmp_path))
    sendmail.chmod(0o755)
    run = run_once(tmp_path, server, [STOPPED], webhook_url="", email_to=["ops@example.net"],
                   email_from="root@w1", sendmail=str(sendmail))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "args").read_text().split() == ["-t", "-oi"]
    mail = (tmp_path / "mail").read_text()
    assert mail.startswith("To: ops@example.net\nFrom: root@w1\nSubject: [vpsstack FAIL] w1\n\n")
    assert "FAIL  celery-default: STOPPED (supervisorctl status)" in mail


def sendmail_stand_in(tmp_path):
    """A sendmail that appends each mail it gets to tmp_path/mails, a line of ==== after each."""
    sendmail = tmp_path / "sendmail"
    sendmail.write_text("#!/bin/sh\ncat >> %s/mails\necho ==== >> %s/mails\n" % (tmp_path, tmp_path))
    sendmail.chmod(0o755)
    return {"email_to": ["ops@example.net"], "email_from": "root@w1", "sendmail": str(sendmail)}


def mails(tmp_path):
    path = tmp_path / "mails"
    return path.read_text().split("====\n")[:-1] if path.exists() else []


def test_each_channel_keeps_its_own_state(tmp_path, listener):
    # A dead webhook must not make the mail channel send the same conditions again on every run.
    server, received = listener
    mail = sendmail_stand_in(tmp_path)
    server.status = 500
    run = run_once(tmp_path, server, [STOPPED], **mail)
    assert run.returncode == 1 and "webhook: HTTP 500" in run.stderr and len(mails(tmp_path)) == 1
    run = run_once(tmp_path, server, [STOPPED], **mail)
    assert run.returncode == 1 and len(received) == 2, "the webhook is tried again on every run"
    assert len(mails(tmp_path)) == 1, "the mail channel delivered: its state advanced, nothing is due"
    server.status = 200
    assert run_once(tmp_path, server, [STOPPED], **mail).returncode == 0
    assert len(received) == 3 and "FAIL  celery-default: STOPPED" in received[2][1]["text"]
    assert run_once(tmp_path, server, [STOPPED], **mail).returncode == 0
    assert len(received) == 3 and len(mails(tmp_path)) == 1
    # Cleared: each channel says it once.
    assert run_once(tmp_path, server, OK_LINES, **mail).returncode == 0
    assert received[3][1]["alerts"][0]["change"] == "cleared" and "cleared (was FAIL)" in mails(tmp_path)[1]


def test_a_state_file_from_before_channels_counts_for_each(tmp_path, listener):
    server, received = listener
    mail = sendmail_stand_in(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"celery-default": {"status": "FAIL", "sent": 2**40,
                                                                        "since": 2**40}}))
    assert run_once(tmp_path, server, [STOPPED], **mail).returncode == 0
    assert received == [] and mails(tmp_path) == []


@pytest.fixture
def garbage_http():
    """A TCP server that answers any request with a line that is not HTTP."""
    sock = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _addr = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HELLO\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1]
    sock.close()


def test_a_broken_http_answer_is_a_failed_delivery_not_a_crash(tmp_path, listener, garbage_http):
    server, _received = listener
    mail = sendmail_stand_in(tmp_path)
    run = run_once(tmp_path, server, [STOPPED], webhook_url="http://127.0.0.1:%d/hooks/T0/secret-token"
                   % garbage_http, **mail)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "webhook: BadStatusLine" in run.stderr and "secret-token" not in run.stderr + run.stdout
    assert len(mails(tmp_path)) == 1, "the mail channel still delivered"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_not_followed(tmp_path, listener, status):
    # urllib would follow 301/302/303 as a GET without the body: the alert lost, and the run content.
    server, received = listener
    server.status, server.location = status, "/elsewhere"
    run = run_once(tmp_path, server, [STOPPED])
    assert run.returncode == 1 and "webhook: HTTP %d" % status in run.stderr, run.stderr
    assert [path for path, _body in received] == ["/hooks/T0/secret-token"], "no request to the new location"


def test_all_sends_share_one_deadline(tmp_path, listener):
    server, received = listener
    mail = sendmail_stand_in(tmp_path)
    server.delay = 3
    started = time.monotonic()
    run = run_once(tmp_path, server, [STOPPED], run_timeout=1, http_timeout=10, **mail)
    assert time.monotonic() - started < 2.5, "the webhook got the run's remaining time, not its own 10 s"
    assert run.returncode == 1 and "webhook: timed out" in run.stderr, run.stderr
    assert "mail: no time left" in run.stderr and mails(tmp_path) == [], run.stderr
    assert len(received) == 1
