"""Helpers the scenarios' testinfra tests share. A test file imports them with

    sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
    from live import nofile_of, scenario_hosts, wait_for
"""
import os
import time

import testinfra.utils.ansible_runner


def scenario_hosts(group="all"):
    """The scenario's containers, reached directly through podman (not ansible's connection plugin). The whole
    inventory directory: a scenario may link its own inventory (groups, group_vars) beside molecule's file."""
    runner = testinfra.utils.ansible_runner.AnsibleRunner(os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]))
    return ["podman://" + h for h in runner.get_hosts(group)]


def nofile_of(host, pid):
    """(soft, hard) open-file limit of a live process, from /proc/PID/limits."""
    line = next(ln for ln in host.file(f"/proc/{pid}/limits").content_string.splitlines()
                if ln.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def wait_for(predicate, timeout, step=1.0):
    """Poll predicate until it returns something truthy or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def auto_nofile(host):
    """What nofile "auto" resolves to on a host: min(65535, fs.nr_open, PID 1's hard limit)."""
    nr_open = int(host.file("/proc/sys/fs/nr_open").content_string)
    return min(65535, nr_open, nofile_of(host, 1)[1])
