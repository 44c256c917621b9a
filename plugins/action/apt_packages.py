# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""Controller side of vpsstack.celery.apt_packages: ask dpkg first, run ansible.builtin.apt only for what is missing.

ansible.builtin.apt opens python-apt's cache on every call (about 1.9 s on a 1-vCPU host even when every package
is there). One shell command asks dpkg and the package lists instead (one round trip, no Python on the target);
apt runs, with the lists refreshed first when they are stale or lack universe, only when a package is missing.
"""
from __future__ import annotations

import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

STAMP = "/var/lib/apt/periodic/update-success-stamp"
LISTS = "/var/lib/apt/lists"
# Prints "<package> <status>" per package dpkg knows, then the age of the lists in seconds and whether a universe
# list is there (fresh images can hold `main` lists only, with a recent mtime: redis-server and supervisor would
# not be found).
PROBE = (
    "dpkg-query --show --showformat '${{Package}} ${{db:Status-Status}}\\n' {names} 2>/dev/null; "
    "m=$(stat -c %Y {stamp} {lists} 2>/dev/null | head -n 1); echo \"age $(( $(date +%s) - ${{m:-0}} ))\"; "
    "if ls {lists} | grep -q '_universe_binary-.*_Packages'; then echo universe yes; else echo universe no; fi"
)


def parse_probe(stdout, names):
    """The names dpkg does not report installed, the lists' age (s) and whether universe lists are there."""
    installed, age, universe = set(), None, False
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "age":
            age = int(fields[1]) if fields[1].lstrip("-").isdigit() else None
        elif fields == ["universe", "yes"]:
            universe = True
        elif len(fields) == 2 and fields[1] == "installed":
            installed.add(fields[0].split(":")[0])
    return [name for name in names if name not in installed], age, universe


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("name", "cache_valid_time"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        names = self._task.args.get("name")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
            raise AnsibleActionFail("name must be a package name or a non-empty list of them")
        try:
            valid_time = int(self._task.args.get("cache_valid_time", 3600))
        except (TypeError, ValueError):
            raise AnsibleActionFail("cache_valid_time must be a number of seconds")

        probe = self._low_level_execute_command(PROBE.format(
            names=" ".join(shlex.quote(name) for name in names), stamp=STAMP, lists=LISTS))
        if probe["rc"] != 0 and not probe["stdout"]:
            raise AnsibleActionFail("could not ask dpkg on the target: %s" % probe["stderr"].strip())
        missing, age, universe = parse_probe(probe["stdout"], names)
        result.update(changed=False, missing=missing)
        if not missing:
            return result

        # The lists are read-only state, refreshed in check mode too: without them check mode would report
        # "no package matching" for what a real run installs.
        if age is None or age > valid_time or not universe:
            update = self._low_level_execute_command("DEBIAN_FRONTEND=noninteractive apt-get update -qq")
            if update["rc"] != 0:
                raise AnsibleActionFail("apt-get update failed: %s" % (update["stderr"] or update["stdout"]).strip())
        result.update(self._execute_module(module_name="ansible.legacy.apt", task_vars=task_vars,
                                           module_args={"name": missing, "state": "present"}))
        result["missing"] = missing
        return result
