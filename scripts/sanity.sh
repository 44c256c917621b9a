#!/usr/bin/env bash
# ansible-test sanity needs the collection at a real path .../ansible_collections/vpsstack/celery: test a copy.
# ansible-test bootstraps pip in its tool venvs with get-pip.py from a host outside the package registries:
# scripts/ansible-test-get-pip.py stands in for it (ensurepip, then pip from the index).
set -euo pipefail
cd "$(dirname "$0")/.."
pip_version=$(python3 - <<'PY'
import re, ansible_test._internal.python_requirements as r
print(re.search(r"pip='([0-9.]+)'", open(r.__file__).read()).group(1))
PY
)
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
[ -f "$cache" ] || install -D -m 0644 scripts/ansible-test-get-pip.py "$cache"
dest=.build/sanity/ansible_collections/vpsstack/celery
rm -rf .build/sanity && mkdir -p "$dest"
# Test what the galaxy tarball ships (build_ignore drops the repo tooling: scripts/, .ci/, benchmarks/ ...).
ansible-galaxy collection build --force --output-path .build/sanity . >/dev/null
tar -xzf .build/sanity/vpsstack-celery-*.tar.gz -C "$dest"
rm "$dest/MANIFEST.json" "$dest/FILES.json"
cd "$dest"
# ansible-test lists files through git; the copy sits in our ignored .build/, so give it its own repository.
git init -q && git add -A
ansible-test sanity --python "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" --color no "$@"
