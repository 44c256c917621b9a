"""Each role's preflight stops a bad input before any change, with a message that names the variable.

The preflight task files run on the controller itself (connection local, check mode): no container needed.
Every role first passes with good values, so each failure below comes from the one bad value it adds.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: true
  tasks:
    - ansible.builtin.include_role:
        name: vpsstack.celery.{role}
        tasks_from: preflight
"""
# Good values for this controller: nofile well below any host's ceiling, a real app directory.
GOOD = {
    "baseline": {"baseline_allow_unsupported_os": True, "baseline_nofile": 4096},
    "redis": {"redis_maxclients": 1000},
    "worker": {"worker_app_src": os.path.join(REPO, "examples", "demo_app"), "worker_nofile": 4096,
               "worker_broker_password": "test-password"},
    "flower": {"flower_users": [{"name": "ops", "password": "twelve chars"}], "flower_nofile": 4096,
               "flower_broker_password": "test-password"},
}


def run_preflight(tmp_path, role, extra):
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PLAYBOOK.format(role=role))
    extra_vars = tmp_path / "vars.json"
    extra_vars.write_text(json.dumps({**GOOD[role], **extra}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "--check", str(playbook), "-e", "@" + str(extra_vars)],
                          capture_output=True, text=True, env=env, check=False)
    result = json.loads(proc.stdout)
    failures = [host["msg"] for play in result["plays"] for task in play["tasks"]
                for name, host in task["hosts"].items() if host.get("failed")]
    return proc.returncode, failures


@pytest.mark.parametrize("role", sorted(GOOD))
def test_good_values_pass(tmp_path, role):
    assert run_preflight(tmp_path, role, {}) == (0, [])


@pytest.mark.parametrize("role, extra, named", [
    ("baseline", {"baseline_nofile": 99999999}, "baseline_nofile"),
    ("baseline", {"baseline_swappiness": 201}, "baseline_swappiness"),
    ("baseline", {"baseline_overcommit_memory": 3}, "baseline_overcommit_memory"),
    ("baseline", {"baseline_swap_mb": "2G"}, "baseline_swap_mb"),
    ("redis", {"redis_maxmemory_policy": "allkeys-lru"}, "redis_maxmemory_policy"),
    ("redis", {"redis_appendfsync": "sometimes"}, "redis_appendfsync"),
    ("redis", {"redis_port": 70000}, "redis_port"),
    ("redis", {"redis_bind_extra": ["10.0.0.5"], "redis_auth_enabled": False}, "redis_auth_enabled"),
    ("redis", {"redis_maxmemory": "999999mb"}, "redis_maxmemory"),
    ("worker", {"worker_groups": [{"name": "default", "pool": "fork"}]}, "worker_groups"),
    ("worker", {"worker_groups": [{"name": "io", "pool": "gevent", "autoscale": "10,2"}]}, "autoscale"),
    ("worker", {"worker_visibility_timeout": 60}, "worker_visibility_timeout"),
    ("worker", {"worker_broker_password": ""}, "worker_broker_url"),
    ("worker", {"worker_nofile": 99999999}, "worker_nofile"),
    ("flower", {"flower_users": [{"name": "ops", "password": "short"}]}, "flower_users"),
    ("flower", {"flower_listen_address": "10.0.0.5"}, "flower_listen_address"),
    ("flower", {"flower_nofile": 99999999}, "flower_nofile"),
    ("flower", {"flower_socket": "/tmp/flower.sock"}, "flower_socket"),
])
def test_bad_value_fails_naming_the_variable(tmp_path, role, extra, named):
    rc, failures = run_preflight(tmp_path, role, extra)
    assert rc != 0 and len(failures) == 1, failures
    assert named in failures[0]
