"""Shared by the unit tests of the Python files the roles install on hosts."""
from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def load_worker_file(name):
    """A fresh module object of roles/worker/files/NAME.py, loaded from its path (it is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "roles", "worker", "files", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
