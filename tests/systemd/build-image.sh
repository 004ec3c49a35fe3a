#!/usr/bin/env bash
# Build the Debian 12 VM image for the systemd tests into directory $1:
#   rootfs.img (ext4, 2 GiB sparse), vmlinuz, initrd.img
# The test script caches the result keyed by a hash of this file, so any change here rebuilds.
#
# The image is a plain Debian bookworm (minbase + systemd + udev + kernel + python3 for the
# notification listener + openssh-server/-client for the pull scenario, whose "other machines"
# are the VM itself on 127.0.0.1; the package generates the host keys at install time and
# enables ssh.service; btrfs-progs for the fake store's btrfs-progs and the quiesce scenario's
# btrfs source, on a loop device; dbus, which NixOS always runs and `systemctl freeze`/`thaw` need:
# unlike start and stop they go through the system bus, not systemd's private socket). Test-only
# settings baked in, all listed here so nobody mistakes them for product behaviour:
#   - vmtest-runner.service runs /mnt/host/run.sh (9p share from the host) after multi-user.target
#     and powers the VM off when it ends;
#   - DefaultTimerAccuracySec=1s in system.conf, so timers fire within a second of their elapse
#     instead of up to a minute later (systemd's default accuracy is 1min; units that set
#     AccuracySec= themselves are unaffected);
#   - no network at all (QEMU runs with -nic none), no getty on the serial console.
set -euo pipefail

OUT=${1:?usage: build-image.sh OUTDIR}
mkdir -p "$OUT"
WORK=$(mktemp -d "${OUT%/}/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs

# Debian mirror: the one the machine's apt uses (first .../debian URI), else deb.debian.org.
MIRROR=${HWC_VM_MIRROR:-}
if [ -z "$MIRROR" ]; then
  MIRROR=$(grep -hoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
             /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | tr -d ' ' || true)
  MIRROR=${MIRROR%/}
  [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
fi
SECMIRROR=${HWC_VM_SECURITY_MIRROR:-${MIRROR}-security}

cat > "$WORK/vmtest-runner.service" <<'UNIT'
[Unit]
Description=hwc-backup systemd test runner (test harness, not part of the product)
After=multi-user.target
RequiresMountsFor=/mnt/host
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=simple
ExecStart=/bin/bash /mnt/host/run.sh
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT

# Small initrd: configure initramfs-tools before the kernel package is installed.
cat > "$WORK/essential-hook" <<'HOOK'
#!/bin/sh
set -e
mkdir -p "$1/etc/initramfs-tools/conf.d"
echo MODULES=list > "$1/etc/initramfs-tools/conf.d/vmtest.conf"
printf "virtio_pci\nvirtio_blk\next4\n" >> "$1/etc/initramfs-tools/modules"
HOOK

cat > "$WORK/customize-hook" <<HOOK
#!/bin/sh
set -e
R="\$1"
W="$WORK"
HOOK
cat >> "$WORK/customize-hook" <<'HOOK'
echo hwc-vm > "$R/etc/hostname"
printf "127.0.0.1 localhost\n127.0.1.1 hwc-vm\n" > "$R/etc/hosts"
cat > "$R/etc/fstab" <<FSTAB
/dev/vda / ext4 rw,errors=remount-ro 0 1
hostshare /mnt/host 9p trans=virtio,version=9p2000.L,msize=524288,nofail 0 0
FSTAB
mkdir -p "$R/mnt/host" "$R/mnt/backup"
cp "$W/vmtest-runner.service" "$R/etc/systemd/system/vmtest-runner.service"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vmtest-runner.service "$R/etc/systemd/system/multi-user.target.wants/vmtest-runner.service"
mkdir -p "$R/etc/systemd/system.conf.d"
printf "[Manager]\nDefaultTimerAccuracySec=1s\n" > "$R/etc/systemd/system.conf.d/50-vmtest.conf"
# quiet serial console: no login prompts
ln -sf /dev/null "$R/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$R/etc/systemd/system/getty@tty1.service"
# no periodic jobs of the distribution that could fire on our clock jumps
for t in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer man-db.timer; do
  ln -sf /dev/null "$R/etc/systemd/system/$t"
done
# trim: documentation and kernel modules no VM here needs
rm -rf "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/*
for k in "$R"/lib/modules/*; do
  for d in drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet drivers/infiniband \
           drivers/staging drivers/iio drivers/bluetooth drivers/isdn drivers/hid drivers/usb \
           drivers/scsi drivers/mtd drivers/video sound net/bluetooth net/wireless net/mac80211; do
    rm -rf "$k/kernel/$d"
  done
  chroot "$R" depmod -a "$(basename "$k")"
done
rm -rf "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/*
HOOK
chmod +x "$WORK/essential-hook" "$WORK/customize-hook"

mmdebstrap --quiet --variant=minbase \
  --include=systemd-sysv,udev,procps,kmod,linux-image-amd64,python3-minimal,libpython3.11-stdlib,openssh-server,openssh-client,btrfs-progs,dbus,lvm2 \
  --essential-hook="$WORK/essential-hook" \
  --customize-hook="$WORK/customize-hook" \
  bookworm "$ROOT" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECMIRROR bookworm-security main"

cp "$ROOT"/boot/vmlinuz-* "$WORK/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$WORK/initrd.img"
chmod 644 "$WORK/vmlinuz" "$WORK/initrd.img"
truncate -s 2G "$WORK/rootfs.img"
mkfs.ext4 -q -F -L hwcroot -d "$ROOT" "$WORK/rootfs.img"
mv -f "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/rootfs.img" "$OUT/"
