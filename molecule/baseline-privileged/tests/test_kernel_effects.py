"""Live kernel effects of the baseline role (privileged container: same kernel as the host)."""
import os
import sys

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import scenario_hosts  # noqa: E402

testinfra_hosts = scenario_hosts("all")

SWAP = "/var/swap/swapfile"
SWAP_MB_AFTER_RESIZE = 96  # side_effect.yml


def test_overcommit_memory_is_live(host):
    assert host.file("/proc/sys/vm/overcommit_memory").content_string.strip() == "1"


def test_swappiness_is_live(host):
    assert host.file("/proc/sys/vm/swappiness").content_string.strip() == "7"


def test_swap_file_is_active_at_the_resized_size(host):
    lines = host.check_output("swapon --show=NAME,SIZE --bytes --noheadings").splitlines()
    active = dict(line.split() for line in lines)
    assert int(active[SWAP]) >= (SWAP_MB_AFTER_RESIZE - 1) * 1024 * 1024  # header page excluded


def test_swap_file_mode_and_signature(host):
    f = host.file(SWAP)
    assert (f.mode, f.user, f.group) == (0o600, "root", "root")
    assert f.size == SWAP_MB_AFTER_RESIZE * 1024 * 1024
    assert host.check_output(f"blkid -p -o value -s TYPE {SWAP}") == "swap"


def test_swap_file_in_fstab_once(host):
    entries = [ln.split() for ln in host.file("/etc/fstab").content_string.splitlines() if ln.startswith(SWAP)]
    assert entries == [[SWAP, "none", "swap", "sw", "0", "0"]]


def test_a_file_without_swap_signature_is_refused_and_kept(host):
    # side_effect.yml pointed baseline_swap_file at a data file: preflight refused, the data is untouched.
    assert "baseline_swap_file=/var/swap/precious" in host.file("/root/swap-refusal.txt").content_string
    assert host.file("/var/swap/precious").content_string == "precious data\n"
    assert "/var/swap/precious" not in host.file("/proc/swaps").content_string


def test_sysctl_file_sorts_after_every_99_file(host):
    assert host.file("/etc/sysctl.d/99-zz-vpsstack.conf").exists
    assert not host.file("/etc/sysctl.d/60-vpsstack.conf").exists
    names = sorted(n for n in host.check_output("ls /etc/sysctl.d").split() if n.endswith(".conf"))
    assert names[-1] == "99-zz-vpsstack.conf"
