"""Shared by the unit tests of the files the roles install on hosts."""
from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# The worker's host files import each other (vpsstack_versions, vpsstack_settings_merge), as on the hosts.
sys.path.insert(0, os.path.join(REPO, "roles", "worker", "files"))


def role_path(role, *parts):
    """The path of roles/ROLE/PARTS... in this checkout."""
    return os.path.join(REPO, "roles", role, *parts)


def load_role_file(role, name):
    """A fresh module object of roles/ROLE/files/NAME.py, loaded from its path (it is not a package)."""
    spec = importlib.util.spec_from_file_location(name, role_path(role, "files", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_worker_file(name):
    """A fresh module object of roles/worker/files/NAME.py."""
    return load_role_file("worker", name)


def fake_versions(monkeypatch, installed):
    """importlib.metadata.version as the patches see it: INSTALLED's versions, any other package missing."""
    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]
    monkeypatch.setattr(metadata, "version", version)
