"""Live effects of the baseline role in an unprivileged container."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import nofile_of, scenario_hosts  # noqa: E402

testinfra_hosts = scenario_hosts("all")

NOFILE = 20000  # baseline_nofile auto = min(65535, the container's hard limit 20000)


def test_new_services_get_the_open_file_limit(host):
    # A transient unit is a service like any other: it must get DefaultLimitNOFILE from the manager.
    host.run("systemctl stop vpsstack-probe 2>/dev/null; systemctl reset-failed vpsstack-probe 2>/dev/null")
    host.check_output("systemd-run --unit=vpsstack-probe --quiet sleep 120")
    pid = host.check_output("systemctl show -p MainPID --value vpsstack-probe")
    try:
        assert nofile_of(host, pid) == (NOFILE, NOFILE)
    finally:
        host.run("systemctl stop vpsstack-probe")


def test_login_sessions_get_the_open_file_limit(host):
    # runuser -l opens a PAM login session, which applies /etc/security/limits.d.
    assert host.check_output("runuser -l nobody -s /bin/sh -c 'ulimit -Hn'") == str(NOFILE)


def test_timezone_is_set(host):
    assert host.check_output("timedatectl show -p Timezone --value") == "Europe/Berlin"
    assert host.check_output("date +%Z") in ("CET", "CEST")


def test_timesync_leaves_an_installed_chrony_alone(host):
    # prepare.yml installed chrony; installing systemd-timesyncd would have removed it (apt conflict).
    assert host.package("chrony").is_installed
    assert not host.package("systemd-timesyncd").is_installed


def test_timezone_unknown_to_the_host_is_refused(host):
    # side_effect.yml removed Antarctica/Troll from the host (the controller has it) and ran the role with it.
    refusal = host.file("/root/timezone-refusal.txt").content_string
    assert "baseline_timezone=Antarctica/Troll" in refusal
    assert host.check_output("timedatectl show -p Timezone --value") == "Europe/Berlin"


def test_python_venv_and_build_toolchain(host):
    host.check_output("rm -rf /tmp/venv-probe && python3 -m venv /tmp/venv-probe")
    assert "pip" in host.check_output("/tmp/venv-probe/bin/pip --version")
    # libffi headers and a compiler are there: a program that uses libffi builds and runs.
    src = "#include <ffi.h>\nint main(void){ffi_cif c; return sizeof c > 0 ? 0 : 1;}\n"
    host.check_output(f"printf '{src}' > /tmp/ffi.c && gcc /tmp/ffi.c -lffi -o /tmp/ffi && /tmp/ffi")


def test_pip_in_a_venv_trusts_the_configured_ca(host):
    # pip reaches the index through the CA bundle fed by baseline_ca_certificates (no verification switched off).
    host.check_output("/tmp/venv-probe/bin/pip download --no-cache-dir --no-deps -q -d /tmp/pip-probe six")


def test_sysctl_persisted_even_where_proc_sys_is_read_only(host):
    conf = host.file("/etc/sysctl.d/99-zz-vpsstack.conf")
    assert "vm.overcommit_memory=1" in conf.content_string.replace(" ", "")
    assert conf.mode == 0o644
    assert not host.file("/etc/sysctl.d/60-vpsstack.conf").exists


def test_sysctl_file_wins_at_boot(host):
    # systemd-sysctl applies the files in this order, the last value of a key wins: ours must come after the
    # cloud image's 99-cloudimg.conf (prepare.yml, vm.swappiness = 60).
    config = host.check_output("systemd-analyze cat-config sysctl.d")
    values = [ln.split("=", 1)[1].strip() for ln in config.splitlines()
              if ln.replace(" ", "").startswith("vm.swappiness=")]
    assert "60" in values and values[-1] == "10"


@pytest.mark.parametrize("path", ["/swapfile"])
def test_no_swap_file_in_an_unprivileged_container(host, path):
    assert not host.file(path).exists
    assert path not in host.file("/proc/swaps").content_string
