"""wrap_once (roles/worker/files/vpsstack_versions.py), which every method-wrapping runtime patch installs through:
on a stand-in class, so no library is touched. The version line itself is tested with each patch."""
from __future__ import annotations

import sys
import types

import pytest
from role_files import fake_versions, load_worker_file


@pytest.fixture(name="versions")
def fixture_versions(monkeypatch):
    """The module, and a module `vpsstack_test_owner` with a class Owner whose method says "original"."""
    owner = types.ModuleType("vpsstack_test_owner")

    class Owner:  # pylint: disable=too-few-public-methods
        def method(self):
            return "original"

    owner.Owner = Owner
    monkeypatch.setitem(sys.modules, "vpsstack_test_owner", owner)
    fake_versions(monkeypatch, {"lib": "1.0"})
    return load_worker_file("vpsstack_versions")


def wrapped(original):
    def method(self):
        return "wrapped " + original(self)
    return method


def test_the_method_is_wrapped_once(versions):
    from vpsstack_test_owner import Owner  # pylint: disable=import-outside-toplevel

    assert versions.wrap_once("patch", {"lib": "1.0"}, "vpsstack_test_owner:Owner", "method", wrapped)
    assert versions.wrap_once("patch", {"lib": "1.0"}, "vpsstack_test_owner:Owner", "method", wrapped)
    assert Owner().method() == "wrapped original"
    assert Owner.method.vpsstack_wrapped


def test_another_version_leaves_the_method_alone(versions, caplog):
    from vpsstack_test_owner import Owner  # pylint: disable=import-outside-toplevel

    assert versions.wrap_once("patch", {"lib": "2.0"}, "vpsstack_test_owner:Owner", "method", wrapped) is False
    assert Owner().method() == "original"
    assert [r.getMessage() for r in caplog.records] == ["patch patch skipped: found lib 1.0; tested with lib 2.0"]


def test_a_missing_module_is_no_error(versions):
    """A worker whose venv lacks the library (kombu without its Redis transport's redis-py): no patch, no crash."""
    assert versions.wrap_once("patch", {"lib": "1.0"}, "vpsstack_no_such_module:Owner", "method", wrapped) is False
