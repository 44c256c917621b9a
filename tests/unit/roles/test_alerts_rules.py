"""The Prometheus rules of roles/alerts (path a), rendered for a sample inventory (fixtures/alerts_sample_inventory.json:
a 1 GB broker + Flower host and a worker host, with the audit spec roles/audit/tasks/spec.yml would give them):
thresholds equal the plan's numbers, `promtool check rules` accepts the file, and `promtool test rules` shows
alerts firing above the thresholds and not below.

promtool comes from the prometheus .deb unpacked by scripts/prepare-test-host.sh into .build/promtool (or from
PATH); without it the promtool tests skip and say so.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INVENTORY = os.path.join(REPO, "tests", "unit", "roles", "fixtures", "alerts_sample_inventory.json")
PROMTOOL = next((p for p in (os.path.join(REPO, ".build", "promtool", "usr", "bin", "promtool"), shutil.which("promtool"))
                 if p and os.access(p, os.X_OK)), None)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not found: scripts/prepare-test-host.sh "
                                    "unpacks it into .build/promtool (apt-get download prometheus)")
# The role's template, rendered the way tasks/prometheus.yml renders it, with the role's defaults.
PLAY = """
- hosts: all
  gather_facts: true
  gather_subset: ['!all', 'min']
  vars_files: [{defaults}]
  tasks:
    - ansible.builtin.template:
        src: {template}
        dest: {dest}
        mode: "0644"
      vars:
        alerts_rule_hosts: "{{{{ ansible_play_hosts }}}}"
      delegate_to: localhost
      run_once: true
"""


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("alerts-rules")
    dest = workdir / "vpsstack-alerts.rules.yml"
    (workdir / "play.yml").write_text(PLAY.format(
        defaults=os.path.join(REPO, "roles", "alerts", "defaults", "main.yml"),
        template=os.path.join(REPO, "roles", "alerts", "templates", "vpsstack-alerts.rules.yml.j2"), dest=dest))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", INVENTORY, "-c", "local", "-e",
                           "ansible_python_interpreter=" + sys.executable, str(workdir / "play.yml")],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dest


@pytest.fixture(scope="module")
def rules(rules_file):
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {g["name"]: g["rules"] for g in groups}


def alert(rules, group, name, **labels):
    found = [r for r in rules[group] if r["alert"] == name and labels.items() <= r["labels"].items()]
    assert len(found) == 1, (name, labels, rules[group])
    return found[0]


def test_thresholds_come_from_the_plan_and_the_audit(rules):
    # maxmemory 75602329 bytes (the plan of a 1 GB host), WARN at 80 %, FAIL at 95 % (audit_redis_memory_*_pct).
    assert alert(rules, "vpsstack-celery-redis", "VpsstackRedisMemoryHigh")["expr"].endswith(" >= 60481863")
    assert alert(rules, "vpsstack-celery-redis", "VpsstackRedisMemoryCritical")["expr"].endswith(" >= 71822212")
    # One pair of queue rules per queue any worker consumes, at audit_queue_*_length.
    assert alert(rules, "vpsstack-celery-redis", "VpsstackQueueLong", queue="high-prio")["expr"].endswith(" >= 1000")
    # The workers' visibility timeout (4200 s): WARN at 80 %, and at 100 % Redis redelivers.
    assert alert(rules, "vpsstack-celery-redis", "VpsstackUnackedOld")["expr"].endswith(" >= 3360")
    assert alert(rules, "vpsstack-celery-redis", "VpsstackUnackedRedelivered")["expr"].endswith(" >= 4200")
    # Flower's planned 80 MB, and twice it (its default MemoryMax).
    assert alert(rules, "vpsstack-celery-flower", "VpsstackFlowerOverBudget")["expr"].endswith(" > 83886080")
    assert alert(rules, "vpsstack-celery-flower", "VpsstackFlowerAtMemoryMax")["expr"].endswith(" > 167772160")
    # Each planned worker node, named the way Celery names it (group@hostname).
    node = "fast@" + socket.gethostname()
    assert 'worker="%s"' % node in alert(rules, "vpsstack-celery-workers", "VpsstackWorkerDown", worker=node)["expr"]
    child = alert(rules, "vpsstack-celery-workers", "VpsstackChildRssNearLimit")
    assert child["labels"]["vpsstack_host"] == "worker1.example.net"
    # Host names are regex-escaped in instance matchers: "broker.example.net" must not match "brokerXexample...".
    assert r'instance=~"broker\\.example\\.net(:[0-9]+)?"' in alert(
        rules, "vpsstack-celery-redis", "VpsstackRedisRejectedWrites")["expr"]
    # The textfile rules exist only for a host whose timer writes the textfile.
    assert {r["labels"]["vpsstack_host"] for r in rules["vpsstack-celery-audit"]} == {"worker1.example.net"}


@needs_promtool
def test_promtool_accepts_the_rules(rules_file):
    proc = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 16 rules found" in proc.stdout, proc.stdout


@needs_promtool
def test_promtool_alerts_fire_above_the_thresholds_only(rules_file, tmp_path):
    """Series above and below the thresholds, evaluated by promtool: which alerts fire, with which labels."""
    node = "default@" + socket.gethostname()
    redis = 'instance="broker.example.net:9121",job="redis"'
    tests = {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            # Queue celery: 1500 waiting (above 1000); high-prio: 999 (below).
            {"series": 'redis_key_size{%s,db="db0",key="celery"}' % redis, "values": "1500x10"},
            {"series": 'redis_key_size{%s,db="db0",key="high-prio"}' % redis, "values": "999x10"},
            # Another host's instance whose name differs only where the broker's has a dot.
            {"series": 'redis_key_size{instance="brokerXexample.net:9121",db="db0",key="celery"}',
             "values": "500000x10"},
            # Rejected writes: the OOM error counter grows at minute 3.
            {"series": 'redis_errors_total{%s,err="OOM"}' % redis, "values": "0 0 0 4 4 4 4 4 4 4 4"},
            # The default worker went offline at minute 2; fast@ is never seen by Flower (absent).
            {"series": 'flower_worker_online{worker="%s"}' % node, "values": "1 1 0x8"},
            {"series": 'flower_worker_online{worker="fast@%s"}' % socket.gethostname(), "values": "1x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "VpsstackQueueLong", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "vpsstack_host": "broker.example.net", "queue": "celery",
                               "instance": "broker.example.net:9121", "job": "redis", "db": "db0", "key": "celery"},
                "exp_annotations": {"summary": "Queue celery on broker.example.net holds 1500 waiting messages "
                                               "(threshold 1000)"}}]},
            {"eval_time": "10m", "alertname": "VpsstackQueueVeryLong", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "VpsstackRedisRejectedWrites", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "vpsstack_host": "broker.example.net",
                               "instance": "broker.example.net:9121", "job": "redis", "err": "OOM"},
                "exp_annotations": {"summary": "Redis on broker.example.net refused writes (OOM or MISCONF "
                                               "errors): a producer lost a task"}}]},
            {"eval_time": "2m", "alertname": "VpsstackRedisRejectedWrites", "exp_alerts": []},
            # Offline since minute 2, "for: 5m": not yet at 6m, firing at 8m.
            {"eval_time": "6m", "alertname": "VpsstackWorkerDown", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "VpsstackWorkerDown", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "vpsstack_host": "worker1.example.net", "worker": node},
                "exp_annotations": {"summary": "Celery worker %s is offline (Flower)" % node}}]},
        ],
    }]}
    path = tmp_path / "tests.yml"
    path.write_text(json.dumps(tests))
    proc = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
