"""roles/alerts live. Path (b): the audit's own script on a systemd timer posts WARN/FAIL lines to a webhook once
per condition per repeat interval, and once when the condition clears. Path (a): prometheus-redis-exporter
serves every metric the generated rules read, the rules carry the plan's thresholds, promtool accepts them.

A stdlib HTTP listener inside the container (a transient systemd unit) records the POST bodies; molecule.yml
points alerts_webhook_url at it. The tests start vpsstack-alerts.service themselves (what the timer does; the
scenario's interval is a day, so the timer never fires during the run). conftest.py runs them right after the
worker tests' pid check, since they stop and start celery-default.
"""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import scenario_hosts, wait_for  # noqa: E402

testinfra_hosts = scenario_hosts("all")

PORT = 18765
TOKEN_PATH = "/hooks/T000/not-a-real-token"  # molecule.yml: alerts_webhook_url
POSTS = "/root/webhook-posts.jsonl"
STATE = "/var/lib/vpsstack-alerts/state.json"
LISTENER = """
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(out, "a") as fh:
            fh.write(json.dumps({"path": self.path, "body": body}) + "\\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def webhook(host):
    """The listener, a fresh alerts state; afterwards celery-default running again and nothing left behind."""
    encoded = base64.b64encode(LISTENER.encode()).decode()
    host.run("systemctl stop vpsstack-test-webhook; systemctl reset-failed vpsstack-test-webhook")
    host.check_output(f"echo {encoded} | base64 -d > /root/webhook_listener.py && rm -f {POSTS} {STATE} && "
                      f"systemd-run --unit vpsstack-test-webhook /usr/bin/python3 /root/webhook_listener.py "
                      f"{PORT} {POSTS}")
    assert wait_for(lambda: host.socket(f"tcp://127.0.0.1:{PORT}").is_listening, 30)
    yield
    host.run("supervisorctl start celery-default")
    node = "default@" + host.check_output("hostname")
    wait_for(lambda: host.run(f"vpsstack-celery inspect ping --timeout 5 --destination {node}").rc == 0, 120, 3)
    host.run(f"systemctl stop vpsstack-test-webhook; rm -f {POSTS} {STATE} /root/webhook_listener.py")


def posts(host):
    result = host.run(f"cat {POSTS}")
    return [json.loads(line) for line in result.stdout.splitlines()] if result.rc == 0 else []


def run_alerts(host):
    """One run, as the timer starts it (a oneshot: start returns when the run is over); its summary line."""
    start = host.run("systemctl start vpsstack-alerts.service")
    journal = host.check_output("journalctl -u vpsstack-alerts.service -n 40 --no-pager -o cat")
    assert start.rc == 0, journal
    return [ln for ln in journal.splitlines() if " audit lines, " in ln][-1]


def test_timer_runs_the_audits_own_script_with_a_private_config(host):
    assert host.service("vpsstack-alerts.timer").is_enabled and host.service("vpsstack-alerts.timer").is_running
    installed = host.file("/usr/local/lib/vpsstack/vpsstack_audit.py").content
    with open(os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "plugins", "module_utils",
                           "vpsstack_audit.py"), "rb") as fh:
        assert hashlib.sha256(installed).digest() == hashlib.sha256(fh.read()).digest()
    config = host.file("/etc/vpsstack/alerts.json")
    assert (config.user, config.group, config.mode) == ("root", "root", 0o600)
    # The Redis password and the webhook URL (a token, for Slack) are in that file only.
    units = host.check_output("systemctl cat vpsstack-alerts.service vpsstack-alerts.timer")
    assert "not-a-real-token" not in units and "molecule-admin-pw" not in units
    assert host.file("/var/lib/vpsstack-alerts").mode == 0o700


def test_a_healthy_stack_posts_nothing(host, webhook):
    summary = run_alerts(host)
    assert " 0 not OK, 0 sent" in summary, summary
    assert posts(host) == []


def test_a_stopped_worker_is_posted_once_and_cleared_once(host, webhook):
    host.check_output("supervisorctl stop celery-default")
    try:
        run_alerts(host)
        sent = posts(host)
        assert len(sent) == 1, sent
        assert sent[0]["path"] == TOKEN_PATH
        body = sent[0]["body"]
        print("webhook body:", json.dumps(body, indent=2))
        assert "FAIL  celery-default: STOPPED" in body["text"], body["text"]
        assert {"status": "FAIL", "check": "celery-default", "change": "new"}.items() <= next(
            a for a in body["alerts"] if a["check"] == "celery-default").items()
        # Within the repeat interval: the same conditions post nothing new.
        assert run_alerts(host).endswith(", 0 sent")
        assert len(posts(host)) == 1
    finally:
        host.check_output("supervisorctl start celery-default")
    run_alerts(host)
    sent = posts(host)
    assert len(sent) == 2, sent
    cleared = [a for a in sent[1]["body"]["alerts"] if a["change"] == "cleared"]
    assert {"status": "OK", "check": "celery-default", "detail": "cleared (was FAIL)",
            "change": "cleared"} in cleared, sent[1]


# ------------------------------------------------------------------ path (a): exporter and rules
RULES = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "vpsstack-alerts.rules.yml")  # molecule.yml
PROMTOOL = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".build", "promtool", "usr", "bin", "promtool")


def exporter_metrics(host):
    """{(name, labels): value} from prometheus-redis-exporter's /metrics, read inside the container."""
    text = host.check_output("python3 -c \"import urllib.request; print(urllib.request.urlopen("
                             "'http://127.0.0.1:9121/metrics', timeout=20).read().decode())\"")
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if match:
            found[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return found


def rules_by_name():
    with open(RULES) as fh:
        groups = yaml.safe_load(fh)["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_redis_exporter_serves_what_the_rules_read(host):
    settings = host.file("/etc/default/prometheus-redis-exporter")
    assert (settings.user, settings.mode) == ("root", 0o600)
    assert host.socket("tcp://127.0.0.1:9121").is_listening and not host.socket("tcp://0.0.0.0:9121").is_listening
    # One error in Redis's errorstats (an unknown command), so redis_errors_total has a series to show.
    host.run("REDISCLI_AUTH=molecule-admin-pw redis-cli VPSSTACK-NO-SUCH-COMMAND")
    metrics = exporter_metrics(host)
    names = {name for name, _labels in metrics}
    assert metrics[("redis_up", "")] == 1
    assert ("redis_key_size", '{db="db0",key="celery"}') in metrics
    # 1.54 labels the Lua script's values with its file name too.
    assert any(name == "redis_script_values" and 'key="vpsstack_oldest_unacked_age_seconds"' in labels
               for name, labels in metrics)
    assert any(name == "redis_errors_total" and 'err="ERR"' in labels for name, labels in metrics)
    # Every metric a Redis rule reads is one this exporter really exposes.
    for rule in rules_by_name().values():
        for metric in re.findall(r"\b(redis_[a-z_]+)\{", rule["expr"]):
            assert metric in names, (metric, rule["alert"])
    # The thresholds are the plan's: Redis runs with the planned maxmemory, the rules warn at 80 % of it.
    maxmemory = int(metrics[("redis_memory_max_bytes", "")])
    assert rules_by_name()["VpsstackRedisMemoryHigh"]["expr"].endswith(" >= %d" % (maxmemory * 80 // 100))
    print("exporter: redis_memory_used_bytes %d of max %d; rules file %s" % (
        metrics[("redis_memory_used_bytes", "")], maxmemory, RULES))


@pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="no promtool in .build/promtool "
                    "(scripts/prepare-test-host.sh fetches it)")
def test_promtool_accepts_the_generated_rules():
    check = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
