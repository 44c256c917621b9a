"""host_facts on fake trees: cgroup v1, v2 (own path and parents), none; open-file ceilings; units, accounts, timezone; main() in check mode."""
from __future__ import annotations

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.vpsstack.celery.plugins.modules import host_facts

V1_UNLIMITED = "9223372036854771712"


def tree(root, files):
    for path, text in files.items():
        full = os.path.join(str(root), path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(text + "\n")
    return str(root)


def test_v1_container_1g_1cpu(tmp_path):
    root = tree(tmp_path, {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "100000",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
    })
    assert host_facts.read_cgroup(root) == {
        "version": 1, "memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"}


def test_v1_unlimited_host(tmp_path):
    root = tree(tmp_path, {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
        "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
        "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
    })
    assert host_facts.read_cgroup(root) == {
        "version": 1, "memory_limit": V1_UNLIMITED, "cpu_quota": "-1", "cpu_period": "100000"}


def test_v1_own_cgroup_path_is_more_restrictive(tmp_path):
    root = tree(tmp_path, {
        "proc/self/cgroup": "4:memory:/lxc/vps1\n3:cpu,cpuacct:/lxc/vps1\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
        "sys/fs/cgroup/memory/lxc/vps1/memory.limit_in_bytes": "536870912",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1",
        "sys/fs/cgroup/cpu,cpuacct/lxc/vps1/cpu.cfs_quota_us": "50000",
        "sys/fs/cgroup/cpu,cpuacct/lxc/vps1/cpu.cfs_period_us": "100000",
    })
    result = host_facts.read_cgroup(root)
    assert (result["memory_limit"], result["cpu_quota"], result["cpu_period"]) == ("536870912", "50000", "100000")


def test_v2_namespace_root(tmp_path):
    root = tree(tmp_path, {
        "proc/self/cgroup": "0::/",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory",
        "sys/fs/cgroup/memory.max": "1073741824",
        "sys/fs/cgroup/cpu.max": "100000 100000",
    })
    assert host_facts.read_cgroup(root) == {
        "version": 2, "memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"}


def test_v2_limit_on_a_parent_of_the_own_path(tmp_path):
    root = tree(tmp_path, {
        "proc/self/cgroup": "0::/machine.slice/vps.scope/payload\n",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory",
        "sys/fs/cgroup/machine.slice/memory.max": "max",
        "sys/fs/cgroup/machine.slice/cpu.max": "max 100000",
        "sys/fs/cgroup/machine.slice/vps.scope/memory.max": "2147483648",
        "sys/fs/cgroup/machine.slice/vps.scope/cpu.max": "200000 100000",
        "sys/fs/cgroup/machine.slice/vps.scope/payload/memory.max": "max",
        "sys/fs/cgroup/machine.slice/vps.scope/payload/cpu.max": "max 100000",
    })
    assert host_facts.read_cgroup(root) == {
        "version": 2, "memory_limit": "2147483648", "cpu_quota": "200000", "cpu_period": "100000"}


def test_v2_unlimited(tmp_path):
    root = tree(tmp_path, {
        "proc/self/cgroup": "0::/user.slice/session-1.scope",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory",
        "sys/fs/cgroup/user.slice/memory.max": "max",
        "sys/fs/cgroup/user.slice/cpu.max": "max 100000",
    })
    assert host_facts.read_cgroup(root) == {
        "version": 2, "memory_limit": "max", "cpu_quota": "max", "cpu_period": "100000"}


def test_no_cgroup_filesystem(tmp_path):
    assert host_facts.read_cgroup(str(tmp_path)) == {
        "version": 0, "memory_limit": None, "cpu_quota": None, "cpu_period": None}


def test_main_check_mode_reports_no_change(tmp_path, monkeypatch, capsys):
    root = tree(tmp_path, {
        "sys/fs/cgroup/cgroup.controllers": "memory",
        "sys/fs/cgroup/memory.max": "536870912",
    })
    monkeypatch.setattr(host_facts, "ROOT", root)
    with patch_module_args({"_ansible_check_mode": True}):
        with pytest.raises(SystemExit) as exc:
            host_facts.main()
    assert exc.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] is False
    assert result["cgroup"] == {"version": 2, "memory_limit": "536870912", "cpu_quota": None, "cpu_period": None}


def test_main_rejects_unknown_options(monkeypatch, capsys):
    with patch_module_args({"root": "/tmp"}):
        with pytest.raises(SystemExit) as exc:
            host_facts.main()
    assert exc.value.code == 1
    assert "Unsupported parameters" in json.loads(capsys.readouterr().out)["msg"]


def test_nofile_ceilings(tmp_path):
    root = tree(tmp_path, {
        "proc/sys/fs/nr_open": "1048576",
        "proc/sys/net/core/somaxconn": "4096",
        "proc/1/limits": "Limit                     Soft Limit           Hard Limit           Units\n"
                         "Max open files            1024                 524288               files",
    })
    assert host_facts.read_nofile(root) == {"nr_open": "1048576", "init_hard": "524288", "somaxconn": "4096"}


def test_nofile_ceilings_unreadable(tmp_path):
    assert host_facts.read_nofile(str(tmp_path)) == {"nr_open": None, "init_hard": None, "somaxconn": None}


UNIT_FILES = """redis-server.service                 enabled         enabled
supervisor.service                   enabled         enabled
flower.service                       disabled        enabled
systemd-timesyncd.service            enabled         enabled
vpsstack-watchdog.timer              enabled         enabled
getty@.service                       static          -
"""
UNITS = """redis-server.service      loaded    active   running Advanced key-value store
supervisor.service        loaded    failed   failed  Supervisor process control system
systemd-timesyncd.service loaded    inactive dead    Network Time Synchronization
vpsstack-watchdog.timer   loaded    active   waiting vpsstack watchdog
nginx.service             not-found inactive dead    nginx.service
"""


def test_units_enabled_and_active_are_read_from_systemctl():
    assert host_facts.parse_units(UNIT_FILES, UNITS) == {
        "enabled": ["redis-server.service", "supervisor.service", "systemd-timesyncd.service",
                    "vpsstack-watchdog.timer"],
        "active": ["redis-server.service", "vpsstack-watchdog.timer"],
    }


def test_units_from_empty_or_odd_output_are_empty():
    assert host_facts.parse_units("", "\n \n") == {"enabled": [], "active": []}
    assert host_facts.parse_units("lonely\n", "two fields\n") == {"enabled": [], "active": []}


class FakeModule:
    def __init__(self, binary, results):
        self.binary, self.results, self.calls = binary, list(results), []

    def get_bin_path(self, name):
        return self.binary

    def run_command(self, argv):
        self.calls.append(argv)
        return self.results.pop(0)


def test_units_without_systemctl_or_without_a_running_systemd_are_empty():
    assert host_facts.read_units(FakeModule(None, [])) == {"enabled": [], "active": []}
    offline = FakeModule("/usr/bin/systemctl", [(0, UNIT_FILES, ""), (1, "", "System has not been booted")])
    assert host_facts.read_units(offline) == {"enabled": [], "active": []}


def test_units_are_two_systemctl_calls_for_services_and_timers():
    module = FakeModule("/usr/bin/systemctl", [(0, UNIT_FILES, ""), (0, UNITS, "")])
    assert host_facts.read_units(module)["active"] == ["redis-server.service", "vpsstack-watchdog.timer"]
    assert [argv[1] for argv in module.calls] == ["list-unit-files", "list-units"]
    assert all("--type=service,timer" in argv for argv in module.calls)


def test_accounts_from_passwd_and_group(tmp_path):
    root = tree(tmp_path, {
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
                      "celery:x:999:988::/var/lib/celery:/usr/sbin/nologin\n"
                      "broken:x:abc:1::/:/bin/sh\n"
                      "short:x:1",
        "etc/group": "root:x:0:\nflower:x:987:www-data,ops\nbad:x::",
    })
    assert host_facts.read_accounts(root) == {
        "users": {
            "root": {"uid": 0, "gid": 0, "home": "/root", "shell": "/bin/bash"},
            "celery": {"uid": 999, "gid": 988, "home": "/var/lib/celery", "shell": "/usr/sbin/nologin"},
        },
        "groups": {"root": {"gid": 0, "members": []}, "flower": {"gid": 987, "members": ["www-data", "ops"]}},
    }


def test_accounts_unreadable_are_empty(tmp_path):
    assert host_facts.read_accounts(str(tmp_path)) == {"users": {}, "groups": {}}


@pytest.mark.parametrize("link, zone_file, expected", [
    ("../usr/share/zoneinfo/Europe/Berlin", "usr/share/zoneinfo/Europe/Berlin", "Europe/Berlin"),
    ("../usr/share/zoneinfo/Etc/UTC", "usr/share/zoneinfo/Etc/UTC", "Etc/UTC"),
    # The zone file is gone (tzdata removed): unknown, so the role sets it again.
    ("../usr/share/zoneinfo/Europe/Berlin", None, None),
    # Not a zoneinfo link (a copied file, an odd path).
    ("../opt/tz/Berlin", "opt/tz/Berlin", None),
])
def test_timezone_is_the_zone_localtime_links_to(tmp_path, link, zone_file, expected):
    if zone_file:
        tree(tmp_path, {zone_file: "TZif"})
    os.makedirs(os.path.join(str(tmp_path), "etc"))
    os.symlink(link, os.path.join(str(tmp_path), "etc/localtime"))
    assert host_facts.read_timezone(str(tmp_path)) == expected


def test_timezone_of_a_copied_localtime_or_none_is_unknown(tmp_path):
    assert host_facts.read_timezone(str(tmp_path)) is None
    tree(tmp_path, {"etc/localtime": "TZif"})
    assert host_facts.read_timezone(str(tmp_path)) is None


def test_sysctl_live_values_and_a_writable_proc_sys(tmp_path):
    root = tree(tmp_path, {"proc/sys/vm/overcommit_memory": "1", "proc/sys/vm/swappiness": "60"})
    assert host_facts.read_sysctl(root) == {"vm.overcommit_memory": "1", "vm.swappiness": "60", "writable": True}


def test_sysctl_read_only_or_missing(tmp_path, monkeypatch):
    root = tree(tmp_path, {"proc/sys/vm/overcommit_memory": "0"})
    # An unprivileged container mounts /proc/sys read-only: access(W_OK) fails (EROFS) even for root.
    monkeypatch.setattr(host_facts.os, "access", lambda path, mode: False)
    assert host_facts.read_sysctl(root) == {"vm.overcommit_memory": "0", "vm.swappiness": None, "writable": False}


def test_hardware_as_the_facts_count_it(tmp_path):
    root = tree(tmp_path, {
        "proc/meminfo": "MemTotal:       24608356 kB\nMemFree:         1000000 kB",
        "proc/cpuinfo": "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n",
    })
    assert host_facts.read_hardware(root) == {"memtotal_mb": 24031, "processor_vcpus": 2}


def test_hardware_unreadable_is_null(tmp_path):
    assert host_facts.read_hardware(str(tmp_path)) == {"memtotal_mb": None, "processor_vcpus": None}


def test_hardware_feeds_effective_resources_like_the_facts():
    from ansible_collections.vpsstack.celery.plugins.module_utils.sizing import effective_resources
    cgroup = {"version": 2, "memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"}
    resources = effective_resources({"memtotal_mb": 24031, "processor_vcpus": 2}, cgroup)
    assert (resources["ram_mb"], resources["vcpus"], resources["ram_source"]) == (1024, 1.0, "cgroup")


def proc_entry(pid, ppid, argv, hwm, rss, start_ticks=4200):
    # /proc/PID/stat: the command name (here with a space and a parenthesis) then field 3 on; field 22 the start.
    stat = "%d (celery (x) w) S %d " % (pid, ppid) + " ".join(["0"] * 17) + " %d 0 0" % start_ticks
    return {"proc/%d/cmdline" % pid: "\0".join(argv), "proc/%d/stat" % pid: stat,
            "proc/%d/status" % pid: "Name:\tcelery\nPPid:\t%d\nVmHWM:\t  %d kB\nVmRSS:\t  %d kB" % (ppid, hwm, rss)}


def test_workers_are_the_worker_processes_and_their_pool_children(tmp_path):
    worker = ["/opt/celery/venv/bin/python3", "/opt/celery/venv/bin/celery", "-A", "app", "worker",
              "--hostname", "default@%h", "--concurrency", "2"]
    gevent = ["/opt/celery/venv/bin/celery", "-A", "app", "worker", "--hostname=io@%h", "--pool", "gevent"]
    files = {}
    for entry in (proc_entry(100, 1, worker, 51000, 47000), proc_entry(101, 100, worker, 44700, 43400),
                  proc_entry(102, 100, worker, 61000, 43500), proc_entry(200, 1, gevent, 56000, 55000),
                  # Not ours: Flower, a stock worker without --hostname, a shell that mentions celery.
                  proc_entry(300, 1, ["/opt/flower/venv/bin/celery", "-A", "app", "flower"], 60000, 60000),
                  proc_entry(301, 1, ["/opt/x/bin/celery", "-A", "app", "worker"], 70000, 70000),
                  proc_entry(302, 1, ["bash", "-c", "celery worker --hostname a@b"], 3000, 3000)):
        files.update(entry)
    files["proc/self/status"] = "PPid:\t1"
    files["proc/stat"] = "cpu  1 2 3\nbtime 1796550000\nprocesses 9"
    files["proc/200/stat"] = "200 (celery) S 1"  # cut short: no start time
    files["proc/100/limits"] = ("Limit                     Soft Limit           Hard Limit           Units\n"
                                "Max open files            65535                65535                files\n")
    workers = host_facts.read_workers(tree(tmp_path, files))
    started = 1796550000 + 4200 / float(os.sysconf("SC_CLK_TCK"))
    assert workers == {
        "default": {"pid": 100, "children": 2, "child_peak_kib": 61000, "child_rss_kib": 43500, "started": started,
                    "nofile": 65535},
        "io": {"pid": 200, "children": 0, "child_peak_kib": 0, "child_rss_kib": 0, "started": None,
               "nofile": None},
    }


def test_workers_without_proc_are_none(tmp_path):
    assert host_facts.read_workers(str(tmp_path)) == {}


def test_service_starts_are_the_main_process_of_each_unit(tmp_path):
    def process(pid, ppid, cgroup, ticks):
        return {"proc/%d/cgroup" % pid: cgroup, "proc/%d/status" % pid: "Name:\tredis-server\nPPid:\t%d" % ppid,
                "proc/%d/stat" % pid: "%d (redis-server) S %d " % (pid, ppid) + " ".join(["0"] * 17) + " %d 0" % ticks}
    files = {"proc/stat": "btime 1796550000"}
    for entry in (process(40, 1, "0::/system.slice/redis-server.service", 500),
                  # A BGSAVE child, in the unit, started later.
                  process(41, 40, "0::/system.slice/redis-server.service", 900),
                  # Another Redis of the user's, in a unit of its own; a cgroup v1 host's lines.
                  process(50, 1, "0::/system.slice/redis-server@cache.service", 100),
                  process(60, 1, "12:pids:/system.slice/supervisor.service\n1:name=systemd:/system.slice/"
                                 "supervisor.service", 200)):
        files.update(entry)
    starts = host_facts.read_service_starts(("redis-server.service", "supervisor.service"), tree(tmp_path, files))
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    assert starts == {"redis-server.service": round(1796550000 + 500 * tick, 2),
                      "supervisor.service": round(1796550000 + 200 * tick, 2)}
    assert host_facts.read_service_starts(("redis-server.service",), str(tmp_path / "none")) == {}
