"""The host-side scripts that see a secret (the audit and the alerts sender hold the Redis password; the watchdog
reads the broker URL) run in Python's isolated mode, -I: no working directory, PYTHONPATH or user site on
sys.path, so no file placed there is imported next to the password. Read from the tasks and unit templates. The
playbook audit is the host_audit module: Ansible's module wrapper takes the working directory off sys.path, and
the password is a no_log option, never in argv."""
from __future__ import annotations

import itertools
import subprocess
import types

import yaml

from role_files import load_role_file, role_path


def exec_starts(template):
    """The ExecStart= command of a systemd unit template, continuation lines joined, split on blanks."""
    with open(role_path(*template)) as fh:
        text = fh.read().replace("\\\n", " ")
    return [line.split("=", 1)[1].split() for line in text.splitlines() if line.startswith("ExecStart=")]


def test_the_audit_task_hands_the_password_to_a_no_log_option():
    from ansible_collections.vpsstack.celery.plugins.modules import host_audit

    with open(role_path("audit", "tasks", "host.yml")) as fh:
        tasks = yaml.safe_load(fh)
    audits = [t["vpsstack.celery.host_audit"] for t in tasks if "vpsstack.celery.host_audit" in t]
    assert audits, "no host_audit task in roles/audit/tasks/host.yml"
    assert all("redis_password" in args for args in audits)
    assert not [t for t in tasks if "ansible.builtin.command" in t or "ansible.builtin.shell" in t]
    assert host_audit.ARGUMENT_SPEC["redis_password"]["no_log"] is True


def test_the_units_run_python_isolated():
    for template in (("alerts", "templates", "vpsstack-alerts.service.j2"),
                     ("worker", "templates", "vpsstack-watchdog.service.j2")):
        commands = exec_starts(template)
        assert commands, template
        for argv in commands:
            options = list(itertools.takewhile(lambda arg: arg.startswith("-"), argv[1:]))
            assert argv[0] == "/usr/bin/python3" and "-I" in options, (template, argv)


def test_the_alerts_sender_runs_the_audit_isolated(monkeypatch):
    alerts = load_role_file("alerts", "vpsstack_alerts")
    seen = []

    def run(argv, **_kwargs):
        seen.append(argv)
        return types.SimpleNamespace(returncode=0, stdout='{"lines": []}', stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    assert alerts.run_audit({"audit_script": "/usr/local/lib/vpsstack/vpsstack_audit.py", "spec": {}}) == []
    assert seen[0][1:3] == ["-I", "/usr/local/lib/vpsstack/vpsstack_audit.py"], seen
