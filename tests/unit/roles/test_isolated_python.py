"""The host-side scripts that see a secret (the audit and the alerts sender hold the Redis password; the watchdog
reads the broker URL) run in Python's isolated mode, -I: no working directory, PYTHONPATH or user site on
sys.path, so no file placed there is imported next to the password. Read from the tasks and unit templates."""
from __future__ import annotations

import itertools
import re
import subprocess
import types

import yaml

from role_files import load_role_file, role_path


def exec_starts(template):
    """The ExecStart= command of a systemd unit template, continuation lines joined, split on blanks."""
    with open(role_path(*template)) as fh:
        text = fh.read().replace("\\\n", " ")
    return [line.split("=", 1)[1].split() for line in text.splitlines() if line.startswith("ExecStart=")]


def test_the_audit_task_runs_python_isolated():
    with open(role_path("audit", "tasks", "host.yml")) as fh:
        tasks = yaml.safe_load(fh)
    argvs = [t["ansible.builtin.command"]["argv"] for t in tasks if "ansible.builtin.command" in t]
    assert argvs, "no command task in roles/audit/tasks/host.yml"
    for argv in argvs:
        assert re.fullmatch(r".*/python3", argv[0]) and argv[1] == "-I", argv[:3]


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
