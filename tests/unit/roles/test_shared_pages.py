"""What a prefork child of the app keeps sharing with its parent (vpsstack_celery_check.shared_after_collection_kib),
measured in real processes: the plan counts those pages once."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from role_files import load_worker_file, role_path

check = load_worker_file("vpsstack_celery_check")
MIB_KIB = 1024

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux 4.14 or later")


def measure(setup):
    """(shared KiB after a fork's full collection, RSS KiB) of a fresh interpreter that ran `setup` first."""
    code = ("%s\nimport json, vpsstack_celery_check as c\n"
            "print(json.dumps([c.shared_after_collection_kib(), c.smaps_rollup_kib()['Rss']]))" % setup)
    env = dict(os.environ, PYTHONPATH=role_path("worker", "files"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(name="base", scope="module")
def fixture_base():
    return measure("")


def test_a_fork_shares_part_of_the_interpreter(base):
    shared, rss = base
    assert 0 < shared < rss


def test_data_no_collection_touches_stays_shared(base):
    shared, rss = measure("blob = b'x' * (64 << 20)")
    assert rss - base[1] >= 60 * MIB_KIB
    assert shared - base[0] >= 60 * MIB_KIB, (shared, base)


def test_objects_the_collector_walks_are_copied_into_the_child(base):
    """300 000 small lists (containers, like the functions, classes and dicts of an app's modules): a child's
    collection writes to each one, so most of their pages become the child's own, which a fork's shared size alone
    would hide."""
    shared, rss = measure("objects = [[n] for n in range(300000)]")
    grown = rss - base[1]
    assert grown >= 20 * MIB_KIB
    assert shared - base[0] < grown / 2, (shared, rss, base)


def test_no_smaps_rollup_means_not_measured(monkeypatch):
    def missing():
        raise FileNotFoundError("/proc/self/smaps_rollup")

    monkeypatch.setattr(check, "smaps_rollup_kib", missing)
    assert check.shared_after_collection_kib() is None


def test_a_fork_that_hangs_is_not_waited_for(monkeypatch):
    """A fork of a process whose other threads held a lock can hang in its collection: the check gives up."""
    monkeypatch.setattr(check, "FORK_TIMEOUT_S", 0.5)
    monkeypatch.setattr(check.gc, "collect", lambda: __import__("time").sleep(30))
    assert check.shared_after_collection_kib() is None
