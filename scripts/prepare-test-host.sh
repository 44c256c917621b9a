#!/usr/bin/env bash
# Prepare this machine (Debian/Ubuntu, root) to run the molecule scenarios offline:
#   1. podman + runc + debootstrap from apt,
#   2. a containers.conf that works on hosts that deny raising rlimits (see docs/testing.md),
#   3. the Ubuntu 24.04 systemd image, built locally by scripts/build-image.sh.
# Idempotent: a second run installs nothing and reuses the image.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs gpg curl ca-certificates)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "prepare-test-host: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# crun fails on cgroup v1/v2 hybrid hosts; podman's default nproc ulimit cannot be granted where raising
# rlimits is denied. Both values below are the ones verified on the CI host kind.
conf=/etc/containers/containers.conf
marker="# managed by vpsstack.celery scripts/prepare-test-host.sh"
hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
if ! grep -qF "$marker" "$conf" 2>/dev/null; then
  [ -f "$conf" ] && cp -a "$conf" "$conf.vpsstack-backup"
  mkdir -p /etc/containers
  cat > "$conf" <<CONF
$marker
[containers]
default_ulimits = ["nofile=${hard_nofile}:${hard_nofile}", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
  echo "prepare-test-host: wrote $conf (nofile ${hard_nofile})"
fi

# promtool for tests/unit/roles/test_alerts_rules.py (the alert rules of roles/alerts): the prometheus .deb of this
# machine's archive unpacked into .build/promtool, the server not installed. Without it those tests skip.
promtool_dir=.build/promtool
if [ ! -x "$promtool_dir/usr/bin/promtool" ]; then
  deb_dir=$(mktemp -d)
  if (cd "$deb_dir" && apt-get download -qq prometheus 2>/dev/null) && dpkg-deb -x "$deb_dir"/prometheus_*.deb "$promtool_dir"; then
    echo "prepare-test-host: promtool in $promtool_dir ($("$promtool_dir/usr/bin/promtool" --version 2>&1 | head -1))"
  else
    echo "prepare-test-host: could not fetch the prometheus package; the promtool tests will skip"
  fi
  rm -rf "$deb_dir"
fi

scripts/build-image.sh
