#!/usr/bin/env bash
# Install the host packages the VM test needs, only those that are missing.
#
# qemu-system-x86 comes from bookworm-backports through a private apt configuration so that
# /etc/apt stays untouched and the machine's qemu-utils (10.0.x from backports) is not removed
# (bookworm's qemu-system-common 7.2 and backports' qemu-utils 10.0 break each other).
set -euo pipefail

CACHE=${HWC_VM_CACHE:-/var/tmp/hwc-backup-systemd-vm}
A=$CACHE/apt
need=() qemu=()
command -v qemu-system-x86_64 >/dev/null || qemu+=(qemu-system-x86)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v python3 >/dev/null || need+=(python3)
command -v cmp >/dev/null || need+=(diffutils)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v restic >/dev/null || need+=(restic)
[ ${#need[@]} -eq 0 ] && [ ${#qemu[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
mkdir -p "$A/lists/partial"
MIRROR=${HWC_VM_MIRROR:-http://deb.debian.org/debian}
SECMIRROR=${HWC_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEY=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$A/sources.list" <<SRC
deb [signed-by=$KEY] $MIRROR bookworm main
deb [signed-by=$KEY] $MIRROR bookworm-updates main
deb [signed-by=$KEY] $MIRROR bookworm-backports main
deb [signed-by=$KEY] $SECMIRROR bookworm-security main
SRC
APT=(apt-get -q -o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts=-
     -o Dir::State::lists="$A/lists" -o APT::Get::List-Cleanup=0)
echo "systemd-vm: installing ${need[*]} ${qemu[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO "${APT[@]}" update >/dev/null
# Everything from bookworm except qemu, which must come from bookworm-backports (10.0, matching
# the machine's qemu-utils; bookworm's 7.2 would make apt remove qemu-utils).
[ ${#need[@]} -eq 0 ] || $SUDO "${APT[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null
[ ${#qemu[@]} -eq 0 ] || $SUDO "${APT[@]}" install -y --no-install-recommends -t bookworm-backports "${qemu[@]}" >/dev/null
