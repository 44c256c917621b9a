"""The release id of a local source (roles/worker/files/vpsstack_release_id.py) follows the content only."""
from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPEC = importlib.util.spec_from_file_location(
    "vpsstack_release_id", os.path.join(REPO, "roles", "worker", "files", "vpsstack_release_id.py"))
release_id = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(release_id)


def tree(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return str(root) + "/"


def test_same_content_same_id_anywhere(tmp_path):
    files = {"app/tasks.py": "x = 1\n", "app/__init__.py": ""}
    assert release_id.tree_hash(tree(tmp_path / "a", files)) == release_id.tree_hash(tree(tmp_path / "b", files))


def test_a_changed_removed_or_renamed_file_changes_the_id(tmp_path):
    base = {"app/tasks.py": "x = 1\n", "app/extra.py": ""}
    ids = {release_id.tree_hash(tree(tmp_path / name, files)) for name, files in {
        "base": base,
        "changed": {"app/tasks.py": "x = 2\n", "app/extra.py": ""},
        "removed": {"app/tasks.py": "x = 1\n"},
        "renamed": {"app/tasks.py": "x = 1\n", "app/other.py": ""},
    }.items()}
    assert len(ids) == 4


def test_the_executable_bit_counts_and_caches_do_not(tmp_path):
    src = tree(tmp_path / "a", {"run.sh": "echo\n"})
    before = release_id.tree_hash(src)
    tree(tmp_path / "a", {"__pycache__/x.cpython-312.pyc": "cache", "y.pyc": "cache"})
    assert release_id.tree_hash(src) == before
    os.chmod(tmp_path / "a" / "run.sh", 0o755)
    assert release_id.tree_hash(src) != before


def test_without_a_trailing_slash_the_directory_name_counts(tmp_path):
    src = tree(tmp_path / "proj", {"m.py": ""})
    assert release_id.tree_hash(src) != release_id.tree_hash(src.rstrip("/"))
