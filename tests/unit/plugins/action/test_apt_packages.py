"""vpsstack.celery.apt_packages: the probe's output parsed; on this Debian controller, packages it has cost no apt."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.vpsstack.celery.plugins.action.apt_packages import PROBE, parse_probe

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - vpsstack.celery.apt_packages:
        name: [dpkg, coreutils]
      register: present
    - ansible.builtin.assert:
        that:
          - present is not changed
          - present.missing | length == 0
    - vpsstack.celery.apt_packages:
        name: []
      ignore_errors: true
      register: empty
    - ansible.builtin.assert:
        that: [empty is failed, "'non-empty list' in empty.msg"]
"""
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def test_installed_half_installed_and_unknown_packages():
    stdout = ("supervisor installed\npython3-venv half-configured\nlibffi-dev:amd64 installed\n"
              "age 120\nuniverse yes\n")
    missing, age, universe = parse_probe(stdout, ["supervisor", "python3-venv", "libffi-dev", "git"])
    assert (missing, age, universe) == (["python3-venv", "git"], 120, True)


def test_no_lists_and_no_universe():
    missing, age, universe = parse_probe("age 1764000000\nuniverse no\n", ["redis-server"])
    assert (missing, age, universe) == (["redis-server"], 1764000000, False)


def test_a_garbled_age_means_unknown():
    assert parse_probe("age x\n", ["a"])[1] is None


@pytest.mark.skipif(not os.path.exists("/usr/bin/dpkg-query"), reason="needs dpkg")
def test_probe_on_this_host_finds_dpkg_and_misses_a_made_up_name():
    out = subprocess.run(["sh", "-c", PROBE.format(names="dpkg no-such-package-xyz", stamp="/nonexistent",
                                                   lists="/var/lib/apt/lists")],
                         capture_output=True, text=True, check=True).stdout
    missing, age, _universe = parse_probe(out, ["dpkg", "no-such-package-xyz"])
    assert missing == ["no-such-package-xyz"] and age is not None and age >= 0


@pytest.mark.skipif(not os.path.exists("/usr/bin/dpkg-query"), reason="needs dpkg")
def test_a_host_with_every_package_reports_no_change(tmp_path):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.run(["ansible-playbook", "-c", "local", "-i", "localhost,", "-e",
                           json.dumps({"ansible_python_interpreter": sys.executable}), str(play)],
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
