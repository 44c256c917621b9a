"""Print the release id of a controller directory: a hash of what the copy would deliver.

Relative paths, file contents, the executable bit and symlink targets, in a stable order; version control,
caches and installed dependencies are left out (EXCLUDED_DIRS, virtualenvs, *.pyc). The same tree gives the same
id on any controller, so an unchanged source maps onto the release the host already has.
    vpsstack_release_id.py SRC [--tar OUT]: print the id; with --tar, also write the release's files to OUT (the
    copy the role unpacks on the host: the same entries the id counts).
"""
import hashlib
import os
import sys
import tarfile

# Never part of a release, for the id and the copy alike: version control, caches, dependencies installed next to
# the code (a fetch or a local venv must not make a new release, and must not ship).
EXCLUDED_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".tox", ".nox", ".mypy_cache",
                 ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def is_virtualenv(path):
    return os.path.isfile(os.path.join(path, "pyvenv.cfg"))


def release_entries(root):
    """(relative path, absolute path, is_dir) of what a release holds, in a stable order; links followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in EXCLUDED_DIRS and not is_virtualenv(os.path.join(dirpath, d)))
        rel_dir = os.path.relpath(dirpath, root)
        yield rel_dir, dirpath, True
        for name in sorted(filenames):
            if not name.endswith(EXCLUDED_SUFFIXES):
                yield os.path.normpath(os.path.join(rel_dir, name)), os.path.join(dirpath, name), False


def prefix(root):
    """Without a trailing slash the copy delivers the directory itself (dest/NAME/...): part of the layout."""
    return "" if root.endswith("/") else os.path.basename(root)


def tree_hash(root):
    digest = hashlib.sha256()
    if prefix(root):
        digest.update(b"N\0" + prefix(root).encode("utf-8", "surrogateescape") + b"\0")
    for rel, path, is_dir in release_entries(root):
        name = rel.encode("utf-8", "surrogateescape")
        if is_dir:
            digest.update(b"D\0" + name + b"\0")
            continue
        mode = b"x" if os.access(path, os.X_OK) else b"-"
        digest.update(b"F\0" + name + b"\0" + mode + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 16), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def write_tar(root, out):
    """The release as a tar.gz of exactly the entries the id counts, owned by root, nothing for others:
    directories and executables 0750, files 0640 (the group is the workers'; a project's .env stays private)."""
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
        for rel, path, is_dir in release_entries(root):
            arcname = os.path.normpath(os.path.join(prefix(root), rel))
            if arcname == ".":
                continue
            info = tarfile.TarInfo(arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = int(os.stat(path).st_mtime)
            if is_dir:
                info.type, info.mode = tarfile.DIRTYPE, 0o750
                tar.addfile(info)
                continue
            info.mode = 0o750 if os.access(path, os.X_OK) else 0o640
            info.size = os.path.getsize(path)
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, out)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--tar":
        write_tar(sys.argv[1], sys.argv[3])
    print(tree_hash(sys.argv[1])[:16])
