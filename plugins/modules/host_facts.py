#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_facts
short_description: Read in one call what the plan and the roles need to know about a host
version_added: 0.1.0
description:
  - One round trip per host and play (the P(vpsstack.celery.plan#role) role runs it). It returns the limits the
    plan sizes from, and the state of what the roles manage, so that a run where nothing changed skips the calls
    that would only confirm it. Formerly C(cgroup_limits), which still redirects here.
  - Reads the cgroup memory limit and CFS CPU quota on the target, so that sizing can use
    min(facts, cgroup limits). Inside a container or an LXC VPS, C(free) and C(nproc) show the host's
    RAM and CPUs; only the cgroup shows the real limits.
  - cgroup v2 (unified, C(/sys/fs/cgroup/cgroup.controllers) exists) reads C(memory.max) and C(cpu.max)
    in C(/sys/fs/cgroup), in the process's own cgroup (C(0::/path) in C(/proc/self/cgroup)) and its parents.
  - cgroup v1 reads C(memory/memory.limit_in_bytes), C(cpu/cpu.cfs_quota_us) and C(cpu/cpu.cfs_period_us)
    (or C(cpu,cpuacct/...)), at the mount point and in the process's own cgroup path.
  - Also returns the open-file ceilings (C(fs.nr_open), PID 1's hard limit) and C(net.core.somaxconn), so the
    plan reads every host limit in one call.
  - Also returns the host's RAM and logical CPUs as the hardware facts name them (C(memtotal_mb),
    C(processor_vcpus)), so a play needs no hardware fact gathering for the plan.
  - Also returns the live values of C(vm.overcommit_memory) and C(vm.swappiness), and whether C(/proc/sys) can be
    written (it is read-only in an unprivileged container).
  - Also returns the systemd services and timers that are enabled and active, the local users and groups
    (C(/etc/passwd), C(/etc/group)) and the zone C(/etc/localtime) links to. They are read once, at the start of
    the play. A role may skip its own call only when this snapshot already shows the state the call would make,
    and must not when the same run changed that state (a unit file rewritten, a package installed).
  - Also returns each running Celery worker of the P(vpsstack.celery.worker#role) role, a C(celery ... worker)
    process started with C(--hostname GROUP@...) whose parent is not one, with its pool processes and the
    largest peak and current RSS among them (C(VmHWM), C(VmRSS) in C(/proc/PID/status)). The plan sizes
    IO-bound prefork groups from them.
  - When several levels have a limit, the most restrictive one is returned. Values are returned as the
    raw strings the kernel wrote; the P(vpsstack.celery.effective_resources#filter) filter interprets them.
  - Read-only; never reports a change.
author:
  - vpsstack.celery maintainers (@vpsstack)
options: {}
attributes:
  check_mode:
    support: full
    description: Only reads files, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  platform:
    support: full
    platforms: posix
    description: Linux only; other systems report version 0.
notes:
  - Returns version 0 and null values when no cgroup filesystem is mounted.
  - Without a running systemd (a chroot, a container without init) the unit lists are empty.
seealso:
  - plugin: vpsstack.celery.effective_resources
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Read cgroup limits
  vpsstack.celery.host_facts:
  register: host

- name: Effective RAM and vCPUs (min of facts and cgroup)
  ansible.builtin.set_fact:
    resources: "{{ ansible_facts | vpsstack.celery.effective_resources(host.cgroup) }}"
"""

RETURN = r"""
cgroup:
  description: The raw limits, not interpreted.
  returned: always
  type: dict
  contains:
    version:
      description: cgroup version in use, 1 or 2; 0 when none was found.
      type: int
      sample: 2
    memory_limit:
      description: Memory limit in bytes as written by the kernel, C(max) (v2, no limit),
        a huge number (v1, no limit), or null when the file is missing.
      type: str
      sample: "1073741824"
    cpu_quota:
      description: CFS quota in microseconds per period, C(-1) (v1) or C(max) (v2) for no limit, or null.
      type: str
      sample: "100000"
    cpu_period:
      description: CFS period in microseconds, or null.
      type: str
      sample: "100000"
nofile:
  description: The open-file ceilings a service cannot exceed, raw, in the same call (one round trip for the plan).
  returned: always
  type: dict
  contains:
    nr_open:
      description: C(/proc/sys/fs/nr_open), or null when unreadable.
      type: str
      sample: "1048576"
    init_hard:
      description: PID 1's hard C(Max open files) from C(/proc/1/limits) (C(unlimited) possible), or null.
      type: str
      sample: "524288"
    somaxconn:
      description: C(/proc/sys/net/core/somaxconn), the ceiling of a listen backlog (Redis's C(tcp-backlog)), or null.
      type: str
      sample: "4096"
units:
  description: systemd service and timer units, by state at the time of the call.
  returned: always
  type: dict
  contains:
    enabled:
      description: Unit files whose state is C(enabled).
      type: list
      elements: str
      sample: [redis-server.service, supervisor.service]
    active:
      description: Units whose active state is C(active).
      type: list
      elements: str
      sample: [redis-server.service, supervisor.service]
accounts:
  description: Local users and groups, from C(/etc/passwd) and C(/etc/group).
  returned: always
  type: dict
  contains:
    users:
      description: By name; each with C(uid), C(gid) (integers), C(home) and C(shell).
      type: dict
      sample: {celery: {uid: 999, gid: 988, home: /var/lib/celery, shell: /usr/sbin/nologin}}
    groups:
      description: By name; each with C(gid) and C(members) (the supplementary members listed in C(/etc/group)).
      type: dict
      sample: {flower: {gid: 987, members: [www-data]}}
hardware:
  description: The host's RAM and CPUs as the kernel reports them (not the cgroup's), keyed like the hardware facts.
  returned: always
  type: dict
  contains:
    memtotal_mb:
      description: C(MemTotal) of C(/proc/meminfo) in MiB, or null when unreadable.
      type: int
      sample: 24032
    processor_vcpus:
      description: The C(processor) entries of C(/proc/cpuinfo) (logical CPUs), or null when none is listed.
      type: int
      sample: 2
sysctl:
  description: Live kernel memory settings, raw (null when unreadable), and whether C(/proc/sys) is writable.
  returned: always
  type: dict
  contains:
    vm.overcommit_memory:
      description: C(/proc/sys/vm/overcommit_memory).
      type: str
      sample: "1"
    vm.swappiness:
      description: C(/proc/sys/vm/swappiness).
      type: str
      sample: "10"
    writable:
      description: False where the kernel refuses writes to C(/proc/sys) (a read-only mount).
      type: bool
      sample: false
timezone:
  description: The zone name C(/etc/localtime) links to (what C(timedatectl) reports), or null when it is not a
    link into a zoneinfo directory or the zone file is missing.
  returned: always
  type: str
  sample: Etc/UTC
workers:
  description: The running worker groups by name (the part of C(--hostname) before C(@)); empty where none runs.
  returned: always
  type: dict
  sample: {"default": {"pid": 6108, "children": 2, "child_peak_kib": 51200, "child_rss_kib": 43364,
                        "started": 1796554400.37, "nofile": 65535}}
  contains:
    started:
      description: When the worker process started, in seconds since the epoch (C(btime) of C(/proc/stat) plus
        the process's start in clock ticks, so within a second); null when unreadable. A worker that started
        before a file it reads last changed still runs the old file.
      type: float
    nofile:
      description: The worker process's soft open-file limit (C(Max open files) of C(/proc/PID/limits)), what its
        pool children inherit; null when unreadable.
      type: int
started:
  description: When the main process of C(redis-server.service) and of C(flower.service) started, in seconds since
    the epoch as in C(workers); a unit that does not run is absent. A service that started before a file it reads
    at start last changed still runs the old one.
  returned: always
  type: dict
  sample: {"redis-server.service": 1796554400.37, "flower.service": 1796554410.02}
"""

import os

from ansible.module_utils.basic import AnsibleModule

# The filesystem root to read; tests point it at a fake tree.
ROOT = "/"


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def _own_paths(root, controller):
    """cgroup paths of this process for a v1 controller, or for v2 ('' controller), from /proc/self/cgroup."""
    text = _read(os.path.join(root, "proc/self/cgroup")) or ""
    paths = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if (controller == "" and parts[0] == "0" and parts[1] == "") or controller in parts[1].split(","):
            paths.append(parts[2])
    return paths


def _candidates(base, own):
    """base itself, then the process's own cgroup and each parent under it (deepest first)."""
    dirs = [base]
    for path in own:
        parts = [p for p in path.split("/") if p]
        while parts:
            dirs.append(os.path.join(base, *parts))
            parts.pop()
    return dirs


def _smallest(values, unlimited):
    """Most restrictive of the raw values; a numeric one wins over an 'unlimited' sentinel."""
    numeric = []
    for value in values:
        try:
            number = int(value)
        except (TypeError, ValueError):
            continue
        if number >= 0 and value not in unlimited:
            numeric.append((number, value))
    if numeric:
        return min(numeric)[1]
    return values[0] if values else None


def _v2(root):
    base = os.path.join(root, "sys/fs/cgroup")
    dirs = _candidates(base, _own_paths(root, ""))
    memory = [v for v in (_read(os.path.join(d, "memory.max")) for d in dirs) if v]
    cpus = []
    for d in dirs:
        value = _read(os.path.join(d, "cpu.max"))
        if value:
            fields = value.split()
            cpus.append((fields[0], fields[1] if len(fields) > 1 else None))
    quota = period = None
    limited = [(int(q) / float(p), q, p) for q, p in cpus if q != "max" and p and q.isdigit() and p.isdigit()
               and int(p) > 0]
    if limited:
        quota, period = min(limited)[1:]
    elif cpus:
        quota, period = cpus[0]
    return {"version": 2, "memory_limit": _smallest(memory, ("max",)), "cpu_quota": quota, "cpu_period": period}


def _v1(root):
    base = os.path.join(root, "sys/fs/cgroup")
    memory = []
    for d in _candidates(os.path.join(base, "memory"), _own_paths(root, "memory")):
        value = _read(os.path.join(d, "memory.limit_in_bytes"))
        if value:
            memory.append(value)
    cpus = []
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for d in _candidates(os.path.join(base, name), _own_paths(root, "cpu")):
            quota = _read(os.path.join(d, "cpu.cfs_quota_us"))
            if quota:
                cpus.append((quota, _read(os.path.join(d, "cpu.cfs_period_us"))))
    quota = period = None
    limited = [(int(q) / float(p), q, p) for q, p in cpus
               if q.lstrip("-").isdigit() and int(q) > 0 and p and p.isdigit() and int(p) > 0]
    if limited:
        quota, period = min(limited)[1:]
    elif cpus:
        quota, period = cpus[0]
    if not memory and not cpus:
        return None
    return {"version": 1, "memory_limit": _smallest(memory, ()), "cpu_quota": quota, "cpu_period": period}


def read_cgroup(root=None):
    """The raw cgroup limits under `root` (default ROOT)."""
    root = ROOT if root is None else root
    if os.path.exists(os.path.join(root, "sys/fs/cgroup/cgroup.controllers")):
        return _v2(root)
    return _v1(root) or {"version": 0, "memory_limit": None, "cpu_quota": None, "cpu_period": None}


def read_nofile(root=None):
    """fs.nr_open and PID 1's hard open-file limit under `root` (default ROOT), as the kernel wrote them."""
    root = ROOT if root is None else root
    init_hard = None
    for line in (_read(os.path.join(root, "proc/1/limits")) or "").splitlines():
        if line.startswith("Max open files"):
            init_hard = line.split()[4]
    return {"nr_open": _read(os.path.join(root, "proc/sys/fs/nr_open")), "init_hard": init_hard,
            "somaxconn": _read(os.path.join(root, "proc/sys/net/core/somaxconn"))}


def read_hardware(root=None):
    """MemTotal (MiB) and the logical CPUs under `root` (default ROOT), as ansible's hardware facts count them."""
    root = ROOT if root is None else root
    memtotal_mb = None
    for line in (_read(os.path.join(root, "proc/meminfo")) or "").splitlines():
        fields = line.split()
        if fields[:1] == ["MemTotal:"] and len(fields) >= 2 and fields[1].isdigit():
            memtotal_mb = int(fields[1]) // 1024
    cpuinfo = _read(os.path.join(root, "proc/cpuinfo")) or ""
    vcpus = sum(1 for line in cpuinfo.splitlines() if line.split(":")[0].strip() == "processor")
    return {"memtotal_mb": memtotal_mb, "processor_vcpus": vcpus or None}


SYSCTL_KEYS = ("vm.overcommit_memory", "vm.swappiness")


def read_sysctl(root=None):
    """The live vm.* memory settings under `root` (default ROOT), and whether /proc/sys accepts writes."""
    root = ROOT if root is None else root
    values = {key: _read(os.path.join(root, "proc/sys", *key.split("."))) for key in SYSCTL_KEYS}
    values["writable"] = os.access(os.path.join(root, "proc/sys/vm/overcommit_memory"), os.W_OK)
    return values


def parse_units(unit_files_text, units_text):
    """enabled/active unit names from `systemctl list-unit-files` and `systemctl list-units --all --plain`."""
    enabled = sorted(line.split()[0] for line in unit_files_text.splitlines()
                     if len(line.split()) >= 2 and line.split()[1] == "enabled")
    active = sorted(line.split()[0] for line in units_text.splitlines()
                    if len(line.split()) >= 3 and line.split()[2] == "active")
    return {"enabled": enabled, "active": active}


def read_units(module):
    """The unit lists from systemctl, or empty lists where systemd is not running."""
    common = ["--type=service,timer", "--no-legend", "--no-pager"]
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return {"enabled": [], "active": []}
    rc_files, files_out, dummy = module.run_command([systemctl, "list-unit-files"] + common)
    rc_units, units_out, dummy = module.run_command([systemctl, "list-units", "--all", "--plain"] + common)
    if rc_files != 0 or rc_units != 0:
        return {"enabled": [], "active": []}
    return parse_units(files_out, units_out)


def read_accounts(root=None):
    """Local users and groups from etc/passwd and etc/group under `root` (default ROOT)."""
    root = ROOT if root is None else root
    users = {}
    for line in (_read(os.path.join(root, "etc/passwd")) or "").splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[2].isdigit() and fields[3].isdigit():
            users[fields[0]] = {"uid": int(fields[2]), "gid": int(fields[3]), "home": fields[5], "shell": fields[6]}
    groups = {}
    for line in (_read(os.path.join(root, "etc/group")) or "").splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[2].isdigit():
            groups[fields[0]] = {"gid": int(fields[2]), "members": [m for m in fields[3].split(",") if m]}
    return {"users": users, "groups": groups}


def read_timezone(root=None):
    """The zone /etc/localtime links to under `root` (default ROOT), as timedatectl names it, or None."""
    root = ROOT if root is None else root
    link = os.path.join(root, "etc/localtime")
    try:
        target = os.readlink(link)
    except (IOError, OSError):
        return None
    if "zoneinfo/" not in target or not os.path.exists(link):
        return None
    return target.split("zoneinfo/", 1)[1] or None


def _status_kib(text, field):
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return None


def _worker_group(argv):
    """The group of a worker started as `... celery ... worker --hostname GROUP@HOST ...`, else None."""
    if "worker" not in argv or not any(os.path.basename(arg) == "celery" for arg in argv[:2]):
        return None
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("--hostname", "-n") and i + 1 < len(argv) else None
        if arg.startswith("--hostname="):
            value = arg.split("=", 1)[1]
        if value and "@" in value:
            return value.split("@", 1)[0]
    return None


def _started(root, pid):
    """Seconds since the epoch at which `pid` started, or None: /proc/stat's btime + field 22 of /proc/PID/stat."""
    boot = [line.split()[1] for line in (_read(os.path.join(root, "proc", "stat")) or "").splitlines()
            if line.startswith("btime ") and len(line.split()) > 1]
    stat = _read(os.path.join(root, "proc", str(pid), "stat")) or ""
    fields = stat[stat.rfind(")") + 1:].split()  # the command name in parentheses may hold spaces
    if not boot or len(fields) < 20 or not boot[0].isdigit() or not fields[19].isdigit():
        return None
    return round(int(boot[0]) + int(fields[19]) / float(os.sysconf("SC_CLK_TCK")), 2)


def _nofile(root, pid):
    """The soft open-file limit of `pid`, or None."""
    for line in (_read(os.path.join(root, "proc", str(pid), "limits")) or "").splitlines():
        fields = line.split()
        if line.startswith("Max open files") and len(fields) > 3:
            return int(fields[3]) if fields[3].isdigit() else None
    return None


def read_workers(root=None):
    """Running worker groups under `root` (default ROOT):
    {group: {pid, children, child_peak_kib, child_rss_kib, started, nofile}}.
    A prefork pool process has its parent's command line: the worker is the process whose parent is not a worker."""
    root = ROOT if root is None else root
    procs = {}
    for pid in os.listdir(os.path.join(root, "proc")) if os.path.isdir(os.path.join(root, "proc")) else []:
        if not pid.isdigit():
            continue
        group = _worker_group((_read(os.path.join(root, "proc", pid, "cmdline")) or "").split("\0"))
        status = _read(os.path.join(root, "proc", pid, "status")) if group is not None else None
        if status:
            procs[int(pid)] = (group, _status_kib(status, "PPid"), status)
    workers = {}
    for pid, (group, ppid, dummy) in sorted(procs.items()):
        if ppid in procs:
            continue
        children = [status for (dummy, parent, status) in procs.values() if parent == pid]
        peaks = [_status_kib(status, "VmHWM") or 0 for status in children]
        current = [_status_kib(status, "VmRSS") or 0 for status in children]
        workers[group] = {"pid": pid, "children": len(children), "child_peak_kib": max(peaks or [0]),
                          "child_rss_kib": max(current or [0]), "started": _started(root, pid),
                          "nofile": _nofile(root, pid)}
    return workers


def read_service_starts(units, root=None):
    """{unit: seconds since the epoch at which its main process started} for the `units` that run (their processes
    named in /proc/PID/cgroup); the main process is the one whose parent is outside the unit (a Redis BGSAVE child
    is inside it)."""
    root = ROOT if root is None else root
    members = {}
    for pid in os.listdir(os.path.join(root, "proc")) if os.path.isdir(os.path.join(root, "proc")) else []:
        if not pid.isdigit():
            continue
        for line in (_read(os.path.join(root, "proc", pid, "cgroup")) or "").splitlines():
            unit = line.rsplit("/", 1)[-1]
            if unit in units:
                status = _read(os.path.join(root, "proc", pid, "status")) or ""
                members.setdefault(unit, {})[int(pid)] = _status_kib(status, "PPid")
                break
    starts = {}
    for unit, processes in members.items():
        main = sorted(pid for pid, ppid in processes.items() if ppid not in processes)
        if main:
            starts[unit] = _started(root, main[0])
    return starts


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.exit_json(changed=False, cgroup=read_cgroup(), nofile=read_nofile(), hardware=read_hardware(),
                     units=read_units(module),
                     accounts=read_accounts(), sysctl=read_sysctl(), timezone=read_timezone(),
                     workers=read_workers(), started=read_service_starts(("redis-server.service", "flower.service")))


if __name__ == "__main__":
    main()
