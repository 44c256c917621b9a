#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: apt_packages
short_description: Install the packages of a role that the host lacks, in one apt transaction
version_added: 0.2.0
description:
  - Asks dpkg which of O(name) are installed, in one shell command on the target (no module, no Python), and runs
    M(ansible.builtin.apt) for the missing ones only. A host that has them all costs one round trip and reports no
    change; M(ansible.builtin.apt) alone opens python-apt's cache every time (about 1.9 s on a 1-vCPU host).
  - Before installing, refreshes the package lists (C(apt-get update)) when they are older than O(cache_valid_time)
    or hold no C(universe) list (fresh images can ship C(main) lists only, with a recent mtime). The refresh also
    runs in check mode, as it changes no configuration and check mode needs the lists to report the install.
  - Runs as an action plugin; the module itself is only its documentation.
author:
  - vpsstack.celery maintainers (@vpsstack)
options:
  name:
    description: Package names (no versions) that must be installed.
    type: list
    elements: str
    required: true
  cache_valid_time:
    description: Seconds the package lists stay fresh.
    type: int
    default: 3600
attributes:
  action:
    support: full
    description: Runs on the controller; the target sees a shell command and, when needed, ansible.builtin.apt.
  check_mode:
    support: full
    description: The probe runs; the install is reported by M(ansible.builtin.apt) in check mode.
  diff_mode:
    support: none
    description: No diff.
  platform:
    support: full
    platforms: debian
    description: Debian and Ubuntu (dpkg and apt).
notes:
  - Installs only (C(state=present)); removal and upgrades stay with M(ansible.builtin.apt).
seealso:
  - module: ansible.builtin.apt
"""

EXAMPLES = r"""
- name: Install supervisor and the venv tooling
  vpsstack.celery.apt_packages:
    name: [supervisor, python3-venv]
  register: install_result
"""

RETURN = r"""
missing:
  description: The packages that were not installed before this task (installed by it, unless in check mode).
  returned: always
  type: list
  elements: str
  sample: [supervisor]
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={"name": {"type": "list", "elements": "str", "required": True},
                       "cache_valid_time": {"type": "int", "default": 3600}},
        supports_check_mode=True,
    )
    module.fail_json(msg="vpsstack.celery.apt_packages runs as an action plugin; call it from a playbook")


if __name__ == "__main__":
    main()
