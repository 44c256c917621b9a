"""cgroup_limits on fake sysfs trees: v1, v2 (own path and parents), none; main() in check mode."""
from __future__ import annotations

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.vpsstack.celery.plugins.modules import cgroup_limits

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
    assert cgroup_limits.read_cgroup(root) == {
        "version": 1, "memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"}


def test_v1_unlimited_host(tmp_path):
    root = tree(tmp_path, {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
        "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
        "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
    })
    assert cgroup_limits.read_cgroup(root) == {
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
    result = cgroup_limits.read_cgroup(root)
    assert (result["memory_limit"], result["cpu_quota"], result["cpu_period"]) == ("536870912", "50000", "100000")


def test_v2_namespace_root(tmp_path):
    root = tree(tmp_path, {
        "proc/self/cgroup": "0::/",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory",
        "sys/fs/cgroup/memory.max": "1073741824",
        "sys/fs/cgroup/cpu.max": "100000 100000",
    })
    assert cgroup_limits.read_cgroup(root) == {
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
    assert cgroup_limits.read_cgroup(root) == {
        "version": 2, "memory_limit": "2147483648", "cpu_quota": "200000", "cpu_period": "100000"}


def test_v2_unlimited(tmp_path):
    root = tree(tmp_path, {
        "proc/self/cgroup": "0::/user.slice/session-1.scope",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory",
        "sys/fs/cgroup/user.slice/memory.max": "max",
        "sys/fs/cgroup/user.slice/cpu.max": "max 100000",
    })
    assert cgroup_limits.read_cgroup(root) == {
        "version": 2, "memory_limit": "max", "cpu_quota": "max", "cpu_period": "100000"}


def test_no_cgroup_filesystem(tmp_path):
    assert cgroup_limits.read_cgroup(str(tmp_path)) == {
        "version": 0, "memory_limit": None, "cpu_quota": None, "cpu_period": None}


def test_main_check_mode_reports_no_change(tmp_path, monkeypatch, capsys):
    root = tree(tmp_path, {
        "sys/fs/cgroup/cgroup.controllers": "memory",
        "sys/fs/cgroup/memory.max": "536870912",
    })
    monkeypatch.setattr(cgroup_limits, "ROOT", root)
    with patch_module_args({"_ansible_check_mode": True}):
        with pytest.raises(SystemExit) as exc:
            cgroup_limits.main()
    assert exc.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] is False
    assert result["cgroup"] == {"version": 2, "memory_limit": "536870912", "cpu_quota": None, "cpu_period": None}


def test_main_rejects_unknown_options(monkeypatch, capsys):
    with patch_module_args({"root": "/tmp"}):
        with pytest.raises(SystemExit) as exc:
            cgroup_limits.main()
    assert exc.value.code == 1
    assert "Unsupported parameters" in json.loads(capsys.readouterr().out)["msg"]


def test_nofile_ceilings(tmp_path):
    root = tree(tmp_path, {
        "proc/sys/fs/nr_open": "1048576",
        "proc/sys/net/core/somaxconn": "4096",
        "proc/1/limits": "Limit                     Soft Limit           Hard Limit           Units\n"
                         "Max open files            1024                 524288               files",
    })
    assert cgroup_limits.read_nofile(root) == {"nr_open": "1048576", "init_hard": "524288", "somaxconn": "4096"}


def test_nofile_ceilings_unreadable(tmp_path):
    assert cgroup_limits.read_nofile(str(tmp_path)) == {"nr_open": None, "init_hard": None, "somaxconn": None}
