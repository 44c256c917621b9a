#!/usr/bin/env bash
# Build the Ubuntu 24.04 (noble) systemd image that the molecule scenarios boot, from the Ubuntu archive,
# with debootstrap. No container registry is needed.
#
# The archive key is taken from the ubuntu-keyring package (pinned SHA256) and its fingerprint is checked
# before debootstrap uses it: never --no-check-gpg.
#
# Skips the build when an image built from this very recipe exists (label vpsstack.recipe = hash of this file).
# Environment:
#   VPSSTACK_IMAGE   image name (default localhost/ubuntu-systemd:24.04); a user's CI can set it to a pulled
#                    image and skip this script entirely.
#   UBUNTU_MIRROR    archive URL (default: the archive debootstrap uses for Ubuntu).
#   FORCE_REBUILD=1  build even when the image is current.
set -euo pipefail

image=${VPSSTACK_IMAGE:-localhost/ubuntu-systemd:24.04}
arch=$(dpkg --print-architecture)
case "$arch" in
  amd64 | i386) default_mirror=http://archive.ubuntu.com/ubuntu ;;
  *) default_mirror=http://ports.ubuntu.com/ubuntu-ports ;;
esac
mirror=${UBUNTU_MIRROR:-$default_mirror}
keyring_deb=pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
keyring_sha256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8
archive_fpr=F6ECB3762474EDA9D21B7022871920D1991BC93C # Ubuntu Archive Automatic Signing Key (2018)
# openssh-server: molecule reaches the containers over SSH with pipelining, as users reach their hosts.
include=python3,systemd,systemd-sysv,dbus,sudo,iproute2,python3-apt,ca-certificates,procps,openssh-server

recipe=$(sha256sum "$0" | cut -c1-16)
current=$(podman image inspect --format '{{ index .Labels "vpsstack.recipe" }}' "$image" 2>/dev/null || true)
if [ "$current" = "$recipe" ] && [ "${FORCE_REBUILD:-0}" != 1 ]; then
  echo "build-image: $image is current (recipe $recipe)"
  exit 0
fi

work=$(mktemp -d /var/tmp/vpsstack-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

curl -fsSL --retry 3 -o "$work/keyring.deb" "$mirror/$keyring_deb"
echo "$keyring_sha256  $work/keyring.deb" | sha256sum -c --quiet -
dpkg-deb -x "$work/keyring.deb" "$work/keyring"
mkdir -m 700 "$work/gnupg"
keyring=$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg
GNUPGHOME=$work/gnupg gpg --batch --show-keys --with-colons "$keyring" | grep -q "^fpr:::::::::${archive_fpr}:" || {
  echo "build-image: $keyring does not hold the Ubuntu archive key $archive_fpr" >&2
  exit 1
}

# Debian 12's debootstrap has no script for noble; noble bootstraps like every Ubuntu since gutsy.
[ -e /usr/share/debootstrap/scripts/noble ] || ln -s gutsy /usr/share/debootstrap/scripts/noble

rootfs=$work/rootfs
debootstrap --variant=minbase --keyring="$keyring" --include="$include" noble "$rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}

cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror noble main restricted universe multiverse
deb $mirror noble-updates main restricted universe multiverse
deb $mirror noble-security main restricted universe multiverse
SOURCES
# Leave no stale package lists: a fresh lists dir with an epoch mtime makes apt's cache_valid_time refresh.
rm -rf "$rootfs/var/lib/apt/lists" && mkdir -p "$rootfs/var/lib/apt/lists/partial"
touch -d @0 "$rootfs/var/lib/apt/lists"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb
# Units that cannot work in a container and only slow the boot.
for unit in systemd-remount-fs.service systemd-firstboot.service getty.target console-getty.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

tar -C "$rootfs" -c . | podman import --change "LABEL vpsstack.recipe=$recipe" \
  --change 'CMD ["/sbin/init"]' - "$image" >/dev/null 2>&1
echo "build-image: built $image (recipe $recipe) in $(($(date +%s) - start)) s"
