# The LVM source snapshot scenario (sourceSnapshots = "lvm"), sourced by run.sh: the host kernel
# has no device-mapper, this guest's has. A loop-backed volume group with an ext4 logical volume
# mounted as the only source; the real backup-local.service (the module's hardening: @mount,
# /run/lock/lvm) takes an LVM snapshot, mounts it read-only in its state directory and walks it
# while a writer keeps two files in lockstep. Checked: every stored pair is one that existed at
# one instant, paths are the original ones, meta.json names the volume, and no LV snapshot is
# left after success, after a failed run (a full destination) and, once the next run has cleaned
# up, after kill -9; LVs with similar names (ours without the tag, an unrelated one) survive.

lvm_ours() { # LV snapshots of ours (named and tagged as the runner names and tags them)
  lvs --noheadings -o lv_name,lv_tags hwcvg 2>/dev/null |
    awk '$1 ~ /^hwc-backup-[0-9]+-[0-9]+-[0-9]+$/ && $2 ~ /hwc-backup-source-snapshot/ {print $1}'
}
lvm_names() { lvs --noheadings -o lv_name hwcvg 2>/dev/null | tr -d ' ' | sort | tr '\n' ' '; }
lvm_pair_ok() { # lvm_pair_ok SNAPSHOT-DIR : a/a.txt is b/b.txt or one ahead (one instant)
  local a b
  a=$(cat "$1/srv/lvmsrc/a/a.txt" 2>/dev/null) b=$(cat "$1/srv/lvmsrc/z/b.txt" 2>/dev/null)
  log "pair in $1: a=$a b=$b"
  [ -n "$a" ] && [ -n "$b" ] && { [ "$a" = "$b" ] || [ "$a" = $((b + 1)) ]; }
}
lvm_runner_pid() {
  local p
  for p in $(cat /sys/fs/cgroup/system.slice/backup-local.service/cgroup.procs 2>/dev/null); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = hwc-backup ] && echo "$p"
  done | head -n1
}

s_lvm() {
  scenario lvm-source-snapshots
  local img=/var/tmp/hwc-lvm.img loopdev m L before writer i
  if ! command -v lvcreate >/dev/null; then fail "lvm2 is in the guest image" "no lvcreate"; return; fi
  modprobe loop 2>/dev/null; modprobe dm-mod 2>/dev/null; modprobe dm-snapshot 2>/dev/null
  truncate -s 400M "$img"
  loopdev=$(losetup -f --show "$img") || { fail "a loop device for the volume group" "losetup"; return; }
  if ! { pvcreate -q "$loopdev" && vgcreate -q hwcvg "$loopdev" && lvcreate -q -y -L 160M -n data hwcvg; } >/dev/null 2>&1; then
    fail "a loop-backed volume group with a logical volume" "$(pvs 2>&1 | tail -2 | tr '\n' '|')"; return
  fi
  pass "a loop-backed volume group hwcvg on $loopdev with the logical volume data"
  mkfs.ext4 -q -N 30000 /dev/hwcvg/data && mkdir -p /srv/lvmsrc && mount /dev/hwcvg/data /srv/lvmsrc ||
    { fail "ext4 on hwcvg/data mounted at /srv/lvmsrc"; return; }
  # Look-alikes that must survive: an unrelated LV with a similar name, and a snapshot with our
  # exact name pattern (a pid that is gone) but without our tag.
  lvcreate -q -y -L 8M -n hwc-backup-data-keep hwcvg >/dev/null 2>&1
  lvcreate -q -y -s -L 8M -n hwc-backup-999999-1-0 hwcvg/data >/dev/null 2>&1
  # Enough files that the walk takes a while under TCG, and the pair the writer keeps in lockstep.
  python3 - <<'PY'
import os
for i in range(4000):
    d = "/srv/lvmsrc/m/%d" % (i % 80)
    os.makedirs(d, exist_ok=True)
    with open("%s/f%d" % (d, i), "w") as f:
        f.write("filler %d\n" % i * 40)
PY
  mkdir -p /srv/lvmsrc/a /srv/lvmsrc/z
  echo 0 >/srv/lvmsrc/a/a.txt; echo 0 >/srv/lvmsrc/z/b.txt
  (n=0; while :; do n=$((n + 1))
     echo $n >/srv/lvmsrc/a/a.new && mv /srv/lvmsrc/a/a.new /srv/lvmsrc/a/a.txt
     echo $n >/srv/lvmsrc/z/b.new && mv /srv/lvmsrc/z/b.new /srv/lvmsrc/z/b.txt
   done) &
  writer=$!
  lvs >/dev/null 2>&1   # /run/lvm and /run/lock/lvm exist, as on a machine using LVM
  cp "$CFG" /run/hwc-test/config.json.orig
  python3 -c 'import json,sys; p=sys.argv[1]; d=json.load(open(p)); d["sources"]=["/srv/lvmsrc"]; d["sourceSnapshots"]="lvm"; json.dump(d, open(p,"w"))' "$CFG"
  log "LVs before: $(lvm_names)"

  # 1. Success, twice (the writer keeps going between them).
  for i in 1 2; do
    before=$(latest); m=$(jmark backup-local.service)
    systemctl start backup-local.service
    wait_for 300 unit_ended backup-local.service "$m"
    if ! unit_succeeded backup-local.service "$m"; then
      fail "run $i with sourceSnapshots = lvm succeeds" "$(jnew backup-local.service "$m" | tail -8 | tr '\n' '|')"; continue
    fi
    pass "run $i with sourceSnapshots = lvm succeeds"
    L=$(latest)
    check "run $i: a new snapshot" test -n "$L" -a "$L" != "$before"
    check "run $i: the pair in the snapshot existed at one instant" lvm_pair_ok "$HOSTDIR/$L"
    check "run $i: meta.json says the source was read from an LVM snapshot of hwcvg/data" python3 -c '
import json,sys; m=json.load(open(sys.argv[1])); r=m["sourceReads"][0]
assert r["source"]=="/srv/lvmsrc" and r["kind"]=="lvm" and r["volume"]=="hwcvg/data" and r["subvolume"]=="/srv/lvmsrc" and r["takenAt"], r' "$HOSTDIR/$L/.hwc-backup/meta.json"
    check "run $i: the manifest has the original paths, not the snapshot's" bash -c "grep -q ' srv/lvmsrc/a/a.txt\$' '$HOSTDIR/$L/.hwc-backup/manifest.b3' && ! grep -qE 'source-snapshots|hwc-backup-[0-9]' '$HOSTDIR/$L/.hwc-backup/manifest.b3'"
    check "run $i: no LV snapshot of ours is left" test -z "$(lvm_ours)"
    check "run $i: the mount directory is gone" test -z "$(ls -A "$STATE/source-snapshots" 2>/dev/null)"
  done
  check "the live tree holds the files at their original paths" test -f /srv/lvmsrc/m/0/f0
  check "runner's log names the LVM snapshot" bash -c "journalctl -b -q -o cat -u backup-local.service | grep -q 'hwcvg/data'"

  # 2. A failed run: the destination is full (the copy fails after the snapshot was taken).
  # Room for the lock file and the work directory, not for the walk's 80 directories (ext4
  # keeps reserved_clusters even from root).
  local free bs resv
  read -r free bs < <(stat -f -c '%f %S' "$DEST")
  resv=$(cat "/sys/fs/ext4/$(basename "$(findmnt -n -o SOURCE "$DEST")")/reserved_clusters" 2>/dev/null || echo 0)
  fallocate -l $(((free - resv) * bs - 160 * 1024)) "$DEST/hwc-lvm-filler" 2>/dev/null
  for i in 1 2 3; do echo "changed $i $(date +%s%N)" >"/srv/lvmsrc/m/$i/new-$i"; done
  m=$(jmark backup-local.service)
  systemctl start --no-block backup-local.service
  local seen=no
  while ! unit_ended backup-local.service "$m"; do
    lvs --noheadings -o lv_tags hwcvg 2>/dev/null | grep -q hwc-backup-source-snapshot && seen=yes
    sleep 0.1
  done
  rm -f "$DEST/hwc-lvm-filler"
  check "a run with a full destination fails" bash -c "journalctl -b -q -o cat -u backup-local.service | tail -n +$((m + 1)) | grep -qE 'Failed with result|Failed to start'"
  check "it had taken its LV snapshot (seen while it ran)" test "$seen" = yes
  check "the failed run removed its LV snapshot" test -z "$(lvm_ours)"
  check "and unmounted it (nothing in the state directory)" test -z "$(ls -A "$STATE/source-snapshots" 2>/dev/null)"
  systemctl reset-failed backup-local.service 2>/dev/null

  # 3. kill -9 of the runner while it reads: the LV snapshot stays (the mount went with the
  # unit's namespace); the next run removes it, and nothing else.
  m=$(jmark backup-local.service)
  systemctl start --no-block backup-local.service
  if wait_for 120 bash -c '[ -n "$(lvs --noheadings -o lv_name,lv_tags hwcvg | grep hwc-backup-source-snapshot)" ]'; then
    local pid; pid=$(lvm_runner_pid)
    [ -n "$pid" ] && kill -9 "$pid"
    wait_for 60 unit_ended backup-local.service "$m"
    check "journal: the runner was killed by SIGKILL" bash -c "journalctl -b -q -o cat -u backup-local.service | tail -n +$((m + 1)) | grep -q 'status=9/KILL'"
    local left; left=$(lvm_ours)
    check "the killed run's LV snapshot is left ($left)" test -n "$left"
    systemctl reset-failed backup-local.service 2>/dev/null
    m=$(jmark backup-local.service)
    systemctl start backup-local.service
    wait_for 300 unit_ended backup-local.service "$m"
    check "the next run succeeds" unit_succeeded backup-local.service "$m"
    check "the next run removed the leftover" bash -c "! lvs --noheadings -o lv_name hwcvg | grep -qw '$left'"
    check "the next run logged the removal" bash -c "journalctl -b -q -o cat -u backup-local.service | tail -n +$((m + 1)) | grep -q 'left by an interrupted run'"
    check "no LV snapshot of ours is left" test -z "$(lvm_ours)"
    check "the new snapshot's pair existed at one instant" lvm_pair_ok "$HOSTDIR/$(latest)"
  else
    fail "the run took an LV snapshot" "none seen in 120 s"
  fi
  local names; names=$(lvm_names)
  log "LVs after: $names"
  check "look-alikes survive: hwc-backup-data-keep, and hwc-backup-999999-1-0 without our tag" \
    test "$names" = "data hwc-backup-999999-1-0 hwc-backup-data-keep "

  # Back to the base configuration.
  kill "$writer" 2>/dev/null; wait "$writer" 2>/dev/null
  cp /run/hwc-test/config.json.orig "$CFG"
  umount /srv/lvmsrc
  vgremove -q -f hwcvg >/dev/null 2>&1
  losetup -d "$loopdev"
  rm -f "$img"
}
