#!/usr/bin/env bash
# Build the galaxy tarball, install it into an empty collections path and use it as a user would:
# filter docs through ansible-doc, the playbooks' syntax, and the plan role run by FQCN on localhost.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build/galaxy
rm -rf "$out" && mkdir -p "$out/collections"
ansible-galaxy collection build --force --output-path "$out" . >/dev/null
tarball=$(ls "$out"/vpsstack-celery-*.tar.gz)
echo "build-smoke: built $tarball ($(du -k "$tarball" | cut -f1) KiB)"
# Only the installed copy may be seen (not the checkout that ANSIBLE_COLLECTIONS_PATH points at for tests).
export ANSIBLE_COLLECTIONS_PATH=$PWD/$out/collections
ansible-galaxy collection install --no-deps -p "$out/collections" "$tarball" >/dev/null
installed=$out/collections/ansible_collections/vpsstack/celery

for f in $(ls "$installed"/plugins/filter/*.yml | xargs -n1 basename | sed 's/\.yml$//'); do
  ansible-doc -t filter "vpsstack.celery.$f" >/dev/null
done
ansible-doc -t module vpsstack.celery.cgroup_limits >/dev/null
for pb in "$installed"/playbooks/*.yml; do
  ansible-playbook --syntax-check -i localhost, "$pb" >/dev/null 2>&1 || ansible-playbook --syntax-check -i localhost, "$pb"
done
cat >"$out/smoke.yml" <<'PLAY'
- name: Use the installed collection by FQCN
  hosts: localhost
  connection: local
  gather_facts: true
  roles:
    - role: vpsstack.celery.plan
  tasks:
    - name: The plan exists and fits
      ansible.builtin.assert:
        that: vpsstack_plan.total_mb <= vpsstack_resources.ram_mb
PLAY
ansible-playbook -i localhost, -e ansible_python_interpreter="$(command -v python3)" "$out/smoke.yml" \
  >"$out/smoke.log" || { cat "$out/smoke.log"; exit 1; }
echo "build-smoke: installed collection works (ansible-doc, syntax-check, plan role by FQCN)"
