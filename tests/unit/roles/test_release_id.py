"""The release id of a local source (roles/worker/files/vpsstack_release_id.py) follows the content only."""
from __future__ import annotations

import importlib.util
import os
import tarfile

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


def test_version_control_caches_and_installed_dependencies_do_not_count(tmp_path):
    src = tree(tmp_path / "a", {"app/tasks.py": "x = 1\n"})
    before = release_id.tree_hash(src)
    tree(tmp_path / "a", {".git/FETCH_HEAD": "abc\n", "node_modules/left-pad/index.js": "",
                          ".venv/pyvenv.cfg": "home = /usr/bin\n", "env2/pyvenv.cfg": "", "env2/lib/x.py": "",
                          "app/.mypy_cache/x.json": "{}", ".pytest_cache/v": ""})
    assert release_id.tree_hash(src) == before
    tree(tmp_path / "a", {".env": "SECRET=1\n"})
    assert release_id.tree_hash(src) != before


def members(path):
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_tar_holds_what_the_id_counts_private_to_root_and_the_group(tmp_path):
    src = tree(tmp_path / "a", {"app/tasks.py": "x = 1\n", ".env": "SECRET=1\n", "run.sh": "echo\n",
                                ".git/HEAD": "ref\n", "app/__pycache__/t.pyc": "", "node_modules/x.js": ""})
    os.chmod(tmp_path / "a" / "run.sh", 0o755)
    out = str(tmp_path / "release.tar.gz")
    release_id.write_tar(src, out)
    found = members(out)
    assert sorted(found) == [".env", "app", "app/tasks.py", "run.sh"]
    assert {name: oct(m.mode) for name, m in found.items()} == {
        ".env": "0o640", "app": "0o750", "app/tasks.py": "0o640", "run.sh": "0o750"}
    assert {(m.uid, m.gid) for m in found.values()} == {(0, 0)}
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert found["app/tasks.py"].size == len("x = 1\n")


def test_the_tar_of_a_source_without_trailing_slash_holds_the_directory(tmp_path):
    src = tree(tmp_path / "proj", {"m.py": ""}).rstrip("/")
    out = str(tmp_path / "release.tar.gz")
    release_id.write_tar(src, out)
    assert sorted(members(out)) == ["proj", "proj/m.py"]
