"""Print the release id of a controller directory: a hash of what the copy would deliver.

Relative paths, file contents, the executable bit and symlink targets, in a stable order; __pycache__ and
*.pyc are left out (caches, rewritten by any import on the controller). The same tree gives the same id on
any controller, so an unchanged source maps onto the release the host already has.
"""
import hashlib
import os
import sys

SKIP_DIRS = {"__pycache__"}


def tree_hash(root):
    digest = hashlib.sha256()
    # Without a trailing slash the copy delivers the directory itself (dest/NAME/...): part of the layout.
    if not root.endswith("/"):
        digest.update(b"N\0" + os.path.basename(root).encode("utf-8", "surrogateescape") + b"\0")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        rel_dir = os.path.relpath(dirpath, root)
        digest.update(b"D\0" + rel_dir.encode("utf-8", "surrogateescape") + b"\0")
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name)).encode("utf-8", "surrogateescape")
            mode = b"x" if os.access(path, os.X_OK) else b"-"
            digest.update(b"F\0" + rel + b"\0" + mode + b"\0")
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 16), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


if __name__ == "__main__":
    print(tree_hash(sys.argv[1])[:16])
