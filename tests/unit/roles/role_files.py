"""Shared by the unit tests of the files the roles install on hosts."""
from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


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
