#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_audit
short_description: Read-only health and drift check of one host of the Celery stack
version_added: 0.1.0
description:
  - Compares what one host runs with what the plan and the roles' settings expect, and reports each check as a
    line with a status C(OK), C(WARN) or C(FAIL) (docs/audit.md lists every check and its thresholds).
  - Redis (the settings it reports, memory, queue lengths, the oldest unacked task, orphaned event lists), the
    worker programs (running, their open-file limit, drift from the rendered programs, child RSS, the log's lost
    children and poison tasks), the host (swap, OOM kills, Flower's RSS against its budget).
  - Changes nothing. Redis gets only reads (C(CONFIG GET), C(INFO), C(LLEN), C(ZRANGE), C(SCAN), C(TYPE),
    C(MEMORY USAGE)) over its wire protocol, with the standard library only (a Redis-only host has no Python
    Redis client); processes are read from C(/proc).
  - The same code (C(plugins/module_utils/vpsstack_audit.py)) is what the alerts role's timer runs as a script.
  - The P(vpsstack.celery.audit#role) role builds O(spec) and runs this module on every host.
author:
  - vpsstack.celery maintainers (@vpsstack)
options:
  spec:
    description:
      - What this host should run, as the audit role's C(tasks/spec.yml) builds it. Keys C(redis), C(worker)
        (each null where the host runs none), C(swap_warn_pct), C(flower_budget_mb), ...
    type: dict
    required: true
  redis_password:
    description: Password of Redis's C(default) user, for its reads; empty for a Redis without auth.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Only reads, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  platform:
    support: full
    platforms: posix
    description: Linux (C(/proc), systemd, supervisor).
"""

EXAMPLES = r"""
- name: Audit this host
  vpsstack.celery.host_audit:
    spec: "{{ audit_spec }}"
    redis_password: "{{ redis_password }}"
  register: audit_result

- name: Show the FAIL lines
  ansible.builtin.debug:
    msg: "{{ audit_result.lines | selectattr(0, 'equalto', 'FAIL') | list }}"
"""

RETURN = r"""
lines:
  description: One C([status, check, detail]) per check, status C(OK), C(WARN) or C(FAIL).
  returned: always
  type: list
  elements: list
  sample: [[OK, redis maxmemory-policy, noeviction], [WARN, queue celery, 7 waiting]]
beat_pids:
  description: PIDs of the celery beat processes on this host (the audit role counts them across the inventory).
  returned: always
  type: list
  elements: int
  sample: [4242]
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vpsstack.celery.plugins.module_utils.vpsstack_audit import run


ARGUMENT_SPEC = {
    "spec": {"type": "dict", "required": True},
    "redis_password": {"type": "str", "default": "", "no_log": True},
}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module.params["spec"], module.params["redis_password"])
    except Exception as exc:  # pylint: disable=broad-except
        # A section the audit cannot read is a FAIL line already; anything else is a bug worth its traceback.
        module.fail_json(msg="the audit could not run: %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
