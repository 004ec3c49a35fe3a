#!/bin/bash
# Runs INSIDE the Debian 12 test VM (started by vmtest-runner.service from the 9p share /mnt/host).
# Installs the rendered units, then runs every scenario in one boot and writes
#   /mnt/host/results.txt   one line per check: "PASS <scenario>: <check>" / "FAIL <scenario>: <check> -- <why>"
#   /mnt/host/run.log       this script's trace
#   /mnt/host/journal.txt   the whole journal of the boot (for debugging failures)
#   /mnt/host/run.rc        0 when every check passed
# Assertions come from the journal (journalctl -b -u UNIT, counted by lines: systemd 252's
# --after-cursor with -u drops an entry) and from files, never from `systemctl show` of a finished
# oneshot (those are garbage-collected and report defaults).
H=/mnt/host
RES=$H/results.txt
[ -f "$H/env" ] && . "$H/env"
exec >"$H/run.log" 2>&1
: >"$RES"
export LC_ALL=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0
PASSED=0 FAILED=0
SCEN=setup

# elapsed time from the uptime clock: bash's $SECONDS follows the wall clock, which the tests move
log() { printf '[%6ss | %s] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$(date -u +%FT%TZ)" "$*"; }
pass() { PASSED=$((PASSED + 1)); echo "PASS $SCEN: $1" >>"$RES"; log "PASS $SCEN: $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $SCEN: $1 -- ${2:-}" >>"$RES"; log "FAIL $SCEN: $1 -- ${2:-}"; }
check() { # check "what" command... : pass when the command succeeds
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what" "command failed: $*"; fi
}
scenario() { SCEN=$1; log "=== scenario $1"; }

# ---------- journal / waiting helpers ----------
jlog() { journalctl -b -q --no-pager -o cat -u "$1"; }
jmark() { jlog "$1" | wc -l; }
jnew() { jlog "$1" | tail -n +$(($2 + 1)); }
# wait_for SECONDS command... : poll every 0.2 s
wait_for() {
  local end=$((SECONDS + $1)); shift
  while ! "$@"; do [ $SECONDS -ge "$end" ] && return 1; sleep 0.2; done
}
# a start job of UNIT that began after MARK has ended (success, failure or condition skip)
unit_ended() { jnew "$1" "$2" | grep -qE "^(Finished |Failed to start |.* was skipped because |Dependency failed for |$1: Failed with result)"; }
unit_started() { jnew "$1" "$2" | grep -qE "^Starting |^$1: .*skipped because|^Dependency failed for "; }
unit_succeeded() { jnew "$1" "$2" | grep -q "^Finished " && ! jnew "$1" "$2" | grep -qE "^Failed to start |Failed with result"; }
notify_count() { [ -f /run/hwc-test/notify.jsonl ] && wc -l </run/hwc-test/notify.jsonl || echo 0; }
notify_gt() { [ "$(notify_count)" -gt "$1" ]; }
notify_failed_since() { tail -n +$(($1 + 1)) /run/hwc-test/notify.jsonl 2>/dev/null | grep -qi 'fail'; }
# Mark before a failure: fmark UNIT -> "<failure-unit journal lines> <notifications>"
fmark() { echo "$(jmark "backup-failure@$1.service") $(notify_count)"; }
# expect_failure_reported UNIT MARK : OnFailure= started backup-failure@UNIT.service, and a failure
# notification reached the listener (sent by that unit, or by the run itself, which the failure
# unit then does not repeat)
expect_failure_reported() {
  local u=$1 fm=${2% *} nc=${2#* } fu="backup-failure@$1.service"
  if wait_for 15 unit_ended "$fu" "$fm"; then pass "OnFailure= ran $fu"
  else fail "OnFailure= ran $fu" "no start of it in the journal"; fi
  if wait_for 15 notify_failed_since "$nc"; then pass "a failure notification reached the listener"
  else fail "a failure notification reached the listener" "none within 15 s; $fu: $(jnew "$fu" "$fm" | grep -v '^Starting' | tail -4 | tr '\n' '|')"; fi
}
notify_last() { tail -n1 /run/hwc-test/notify.jsonl 2>/dev/null; }
snapshots() { # complete snapshot directories (tier/name), oldest name first
  local t
  for t in hourly daily weekly monthly yearly; do
    [ -d "$HOSTDIR/$t" ] || continue
    find "$HOSTDIR/$t" -mindepth 1 -maxdepth 1 -type d -printf "$t/%f\n"
  done | sort -t/ -k2
}
latest() { readlink "$HOSTDIR/latest" 2>/dev/null; }
new_latest() { local l; l=$(latest); [ -n "$l" ] && [ "$l" != "$1" ] && [ -f "$HOSTDIR/$l/.hwc-backup/meta.json" ]; }
tree_sig() { # content signature of a directory tree (names, types, sizes, modes, data)
  (cd "$1" && find . -path ./.hwc-backup -prune -o -printf '%p %y %s %m %U\n' | sort && find . -path ./.hwc-backup -prune -o -type f -print0 | sort -z | xargs -0r cat | md5sum)
}
elapse_of() { # next realtime elapse of a timer, epoch seconds
  local v; v=$(systemctl show -P NextElapseUSecRealtime "$1")
  [ -n "$v" ] && date -d "$v" +%s
}
set_clock() { date -u -s "@$1" >/dev/null && log "clock set to $(date -u +%FT%TZ)"; }

# ---------- setup ----------
setup() {
  scenario setup
  PS4='+ [$(cut -d" " -f1 /proc/uptime)] '; set -x
  # The rendered units/scripts/plan (a tree for /), the binary at the package path used in the render.
  cp -a "$H/trees/base/." / || return 1
  cp -a "$H/package/." / || return 1
  install -D -m755 "$H/guest/probe-writes" /opt/hwc-test/probe-writes
  install -D -m755 "$H/guest/restic" /opt/hwc-test/restic
  # The fake store (render-input.nix): /nix/store/<hash>-<package>/bin holds links to that
  # package's programs only; the units' PATH is these directories, as on NixOS.
  local dir src f
  while read -r dir src; do
    mkdir -p "$dir/bin"
    for src in $src; do
      case $src in
        /*) ln -sf "$src" "$dir/bin/" ;;
        *) dpkg -L "$src" | grep -E '^(/usr)?/s?bin/[^/]+$' | while read -r f; do
             [ -f "$f" ] && [ -x "$f" ] && ln -sf "$f" "$dir/bin/"; done ;;
      esac
    done
  done <"$H/guest/fake-store.txt"
  CFG=/etc/hwc-backup/config.json
  read -r DEST HOST STATE LOGDIR < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["destination"]["path"], d["host"], d["stateDir"], d["logDir"])' $CFG)
  HOSTDIR=$DEST/$HOST
  # What the NixOS module's tmpfiles/activation would do, if the units do not create them themselves.
  [ -f /etc/tmpfiles.d/hwc-backup.conf ] && systemd-tmpfiles --create /etc/tmpfiles.d/hwc-backup.conf
  # The destination: an ext4 disk (second virtio disk, label hwcdest) declared like NixOS's
  # fileSystems."/mnt/backup" = { device = "/dev/disk/by-label/hwcdest"; options = [ "nofail" ]; }.
  mkdir -p "$DEST"
  echo "LABEL=hwcdest $DEST ext4 nofail,x-systemd.device-timeout=5s 0 2" >>/etc/fstab
  # Sources: /home with two users (one private directory), root-only files in /root and /etc.
  mkdir -p /home/alice/docs /home/alice/.cache /home/bob/private /root/.ssh /etc/hwc-test
  echo "alice notes $(date +%s)" >/home/alice/notes.txt
  seq 1 20000 >/home/alice/docs/numbers.txt
  echo junk >/home/alice/.cache/junk
  echo tmp >/home/alice/docs/scratch.tmp
  echo "bob's secret" >/home/bob/private/diary.txt
  ln -s ../notes.txt /home/alice/docs/link-to-notes
  chown -R 1000:1000 /home/alice; chown -R 1001:1001 /home/bob
  chmod 700 /home/bob /home/bob/private; chmod 600 /home/bob/private/diary.txt
  echo "root-only key" >/root/.ssh/id_test; chmod 700 /root /root/.ssh; chmod 600 /root/.ssh/id_test
  echo "password=hunter2" >/etc/hwc-test/secret.conf; chmod 600 /etc/hwc-test/secret.conf
  # environmentFile (base.nix): root-only, outside the sources.
  echo "HWC_TEST_ENV_MARK=from-the-environment-file" >/etc/hwc-backup-test.env; chmod 600 /etc/hwc-backup-test.env
  # Notifications go to a listener inside the VM (the VM has no network at all).
  mkdir -p /run/hwc-test
  systemd-run --unit=hwc-test-listener --quiet python3 "$H/guest/listener.py" 127.0.0.1 8765 /run/hwc-test/notify.jsonl
  # A fixed start date, so that the timeline of clock jumps below is the same whatever day the test
  # runs on: Tuesday 2030-01-08 12:00 UTC (backup 02:00 daily, health Mondays 00:00, verify on the 1st).
  set_clock "$(date -u -d '2030-01-08 12:00:00' +%s)"
  # What nixos-rebuild switch does for new units: reload, then start the new timers.
  systemctl daemon-reload
  systemctl start "$(systemd-escape -p --suffix=mount "$DEST")"
  # The pulled hosts' health and verify timers stay stopped: the clock jumps of the other
  # scenarios cross their calendars, and a check of a host not pulled yet would fail and notify
  # in the middle of another scenario's counts. The pull scenario starts their services itself.
  TIMERS=$(cd "$H/trees/base/etc/systemd/system/timers.target.wants" &&
    ls *.timer | grep -vE '^backup-(health-check|verify)-host-' | tr '\n' ' ')
  systemctl start $TIMERS
  wait_for 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8765' 2>/dev/null
  : >/run/hwc-test/notify.jsonl
  set +x
  check "units installed and loaded" systemctl cat backup.service backup.timer
  local v; v=$(cd /etc/systemd/system && systemd-analyze verify --man=no $(ls backup*.service backup*.timer) 2>&1 | grep -i backup)
  if [ -z "$v" ]; then pass "systemd-analyze verify is silent on the installed units"
  else fail "systemd-analyze verify is silent on the installed units" "$(tr '\n' '|' <<<"$v")"; fi
  check "destination mounted" mountpoint -q "$DEST"
  # As on NixOS: every unit's PATH holds store directories only, and every command a unit runs is
  # named by its absolute path (systemd would look a bare name up in its own /usr/bin, which
  # NixOS does not have).
  local bad
  bad=$(cd /etc/systemd/system && grep -H '^Environment="PATH=' backup*.service | grep -vE '="PATH=(/nix/store/[^/:]+/s?bin:?)+"$')
  if [ -z "$bad" ]; then pass "every unit's PATH is store directories only ($(grep -m1 '^Environment="PATH=' /etc/systemd/system/backup.service | tr -d '"' | cut -c 18-))"
  else fail "every unit's PATH is store directories only" "$(tr '\n' '|' <<<"$bad")"; fi
  bad=$(cd /etc/systemd/system && grep -HE '^Exec[A-Za-z]*=' backup*.service | grep -vE '^[^:]+:Exec[A-Za-z]*=[-@:+!]*/')
  if [ -z "$bad" ]; then pass "every Exec*= command is an absolute path"
  else fail "every Exec*= command is an absolute path" "$(tr '\n' '|' <<<"$bad")"; fi
  for f in ionice blkid flock getent ssh btrfs restic systemctl systemd-run journalctl; do
    [ -x "$(ls /nix/store/*/bin/$f 2>/dev/null | head -n1)" ] || fail "the fake store has $f"
  done
  check "timers active: $TIMERS" systemctl is-active --quiet $TIMERS
  log "units:"; for u in /etc/systemd/system/backup*.service /etc/systemd/system/backup*.timer; do log "--- $u"; cat "$u"; done
  log "plan:"; cat "$CFG"
}

# ---------- scenarios ----------
s_timer_fires() {
  scenario timer-fires
  local t m l0 pm
  t=$(elapse_of backup.timer) || { fail "backup.timer has a next elapse"; return; }
  m=$(jmark backup.service); l0=$(latest); pm=$(journalctl -b -q -o cat -t hwc-probe | wc -l)
  set_clock $((t - 3))
  if wait_for 60 unit_ended backup.service "$m"; then pass "backup.service ran from backup.timer after the clock reached OnCalendar"
  else fail "backup.service ran from backup.timer after the clock reached OnCalendar" "nothing in the journal within 60 s"; return; fi
  local st; st=$(journalctl -b -q --no-pager -o short-unix -u backup.service | tail -n +$((m + 1)) | grep -m1 'Starting ' | cut -d' ' -f1)
  if [ -n "$st" ] && [ "${st%.*}" -ge "$t" ] && [ "${st%.*}" -le $((t + 15)) ]; then pass "it started at the elapse (within 15 s)"
  else fail "it started at the elapse (within 15 s)" "elapse $t, start '$st'"; fi
  local lt; lt=$(systemctl show -P LastTriggerUSec backup.timer)
  check "backup.timer records that it triggered at the elapse (LastTriggerUSec $lt)" test -n "$lt" -a "$(date -d "$lt" +%s 2>/dev/null || echo 0)" -ge "$t"
  check "the run succeeded (journal: Finished)" unit_succeeded backup.service "$m"
  check "a new snapshot appeared (latest moved)" new_latest "$l0"
  check "latest points at the newest snapshot" test -n "$(latest)" -a -f "$HOSTDIR/$(latest)/.hwc-backup/meta.json"
  check "snapshot name is the elapse time" bash -c "ls '$HOSTDIR/daily' | grep -q '^$(date -u -d @"$t" +%Y-%m-%d_%H-%M)'"

  scenario hardening-read
  local S=$HOSTDIR/$(latest)
  check "reads /home (other users' files)" cmp -s /home/alice/notes.txt "$S/home/alice/notes.txt"
  check "reads a 0700 directory of another user" cmp -s /home/bob/private/diary.txt "$S/home/bob/private/diary.txt"
  check "reads root-only /root/.ssh/id_test" cmp -s /root/.ssh/id_test "$S/root/.ssh/id_test"
  check "reads root-only /etc/hwc-test/secret.conf" cmp -s /etc/hwc-test/secret.conf "$S/etc/hwc-test/secret.conf"
  check "keeps owner and mode" test "$(stat -c %u:%a /home/bob/private/diary.txt)" = "$(stat -c %u:%a "$S/home/bob/private/diary.txt")"
  check "keeps the symlink" test "$(readlink "$S/home/alice/docs/link-to-notes")" = ../notes.txt
  check "excludePatterns applied (.cache, *.tmp)" test ! -e "$S/home/alice/.cache" -a ! -e "$S/home/alice/docs/scratch.tmp"

  scenario hardening-write
  local out; out=$(journalctl -b -q -o cat -t hwc-probe | tail -n +$((pm + 1)))
  if [ -z "$out" ]; then fail "preBackup hook ran" "no hwc-probe lines in the journal"; return; fi
  pass "preBackup hook ran"
  check "environmentFile's variable reached the hook (its output in the snapshot's run.log)" \
    grep -q "environment file: from-the-environment-file" "$HOSTDIR/$(latest)/.hwc-backup/run.log"
  if grep -qx 'hwc-probe: cgroup /system.slice/backup.service' <<<"$out"; then pass "the hook ran inside backup.service (its cgroup)"
  else fail "the hook ran inside backup.service (its cgroup)" "$(grep cgroup <<<"$out")"; fi
  local p
  for p in /etc/hwc-probe /usr/hwc-probe /usr/local/hwc-probe /opt/hwc-probe /home/alice/hwc-probe /root/hwc-probe \
           /var/lib/hwc-probe /var/hwc-probe /srv/hwc-probe /boot/hwc-probe /mnt/hwc-probe; do
    if grep -qx "hwc-probe: $p denied" <<<"$out" && [ ! -e "$p" ]; then pass "write to $p fails"
    else fail "write to $p fails" "$(grep -F " $p " <<<"$out ")"; fi
  done
  for p in "$DEST/hwc-probe" "$STATE/hwc-probe" "$LOGDIR/hwc-probe"; do
    if grep -qx "hwc-probe: $p ok" <<<"$out"; then pass "write to $p works"
    else fail "write to $p works" "$(grep -F " $p " <<<"$out ")"; fi
  done
}

s_persistent() {
  scenario persistent-catch-up
  # Simulated power-off: stopping the timer is what shutdown does; systemd keeps the last trigger
  # in /var/lib/systemd/timers/stamp-backup.timer (mtime), and on start (= at boot) re-reads it and
  # fires at once when an elapse was missed since then. We jump the clock over the next elapse
  # while the timer is stopped ("machine off"), then start it ("boot").
  local stamp=/var/lib/systemd/timers/stamp-backup.timer
  check "Persistent= stamp file exists" test -f $stamp
  local t m l0
  t=$(elapse_of backup.timer) || { fail "backup.timer has a next elapse"; return; }
  systemctl stop backup.timer
  m=$(jmark backup.service); l0=$(latest)
  set_clock $((t + 3 * 3600))   # "powered on" 3 h after the missed elapse
  systemctl start backup.timer
  if wait_for 30 unit_ended backup.service "$m"; then pass "missed run caught up right after the timer started"
  else fail "missed run caught up right after the timer started" "no run within 30 s"; fi
  check "the catch-up run succeeded" unit_succeeded backup.service "$m"
  check "a new snapshot appeared (latest moved)" new_latest "$l0"
  # Control: an off period with no elapse in it gives no run.
  systemctl stop backup.timer
  m=$(jmark backup.service)
  set_clock $(($(date +%s) + 3600))
  systemctl start backup.timer
  sleep 5
  if unit_started backup.service "$m"; then fail "no catch-up when no elapse was missed" "$(jnew backup.service "$m" | head -3)"
  else pass "no catch-up when no elapse was missed"; fi
}

fake_power() { # fake_power battery|ac|none : a tmpfs over /sys/class/power_supply
  mountpoint -q /sys/class/power_supply && umount /sys/class/power_supply
  [ "$1" = none ] && return 0
  mount -t tmpfs -o mode=755 hwc-fake-power /sys/class/power_supply || return 1
  local b=/sys/class/power_supply/BAT0
  mkdir -p $b; echo Battery >$b/type; echo 1 >$b/present; echo Discharging >$b/status; echo 55 >$b/capacity
  printf 'POWER_SUPPLY_NAME=BAT0\nPOWER_SUPPLY_TYPE=Battery\nPOWER_SUPPLY_STATUS=Discharging\n' >$b/uevent
  ln -s /sys/class/power_supply $b/subsystem
  if [ "$1" = ac ]; then
    local a=/sys/class/power_supply/AC
    mkdir -p $a; echo Mains >$a/type; echo 1 >$a/online
    printf 'POWER_SUPPLY_NAME=AC\nPOWER_SUPPLY_TYPE=Mains\nPOWER_SUPPLY_ONLINE=1\n' >$a/uevent
    ln -s /sys/class/power_supply $a/subsystem
    echo Charging >$b/status
  fi
}

s_only_on_ac() {
  scenario onlyOnAC
  if ! grep -qx 'ConditionACPower=true' /etc/systemd/system/backup.service; then
    fail "backup.service has ConditionACPower=true" "not in the unit (is onlyOnAC set in the test config?)"; return
  fi
  pass "backup.service has ConditionACPower=true"
  # ConditionACPower reads /sys/class/power_supply through sd-device; the VM has no power supply
  # (= AC assumed). A tmpfs with a fake battery is accepted because PID 1 runs with
  # SYSTEMD_DEVICE_VERIFY_SYSFS=0 (kernel command line of the test VM).
  local m l0 s0
  fake_power battery || { fail "fake battery mounted"; return; }
  m=$(jmark backup.service); l0=$(latest); s0=$(snapshots)
  systemctl start backup.service
  wait_for 20 unit_ended backup.service "$m"
  if jnew backup.service "$m" | grep -q 'skipped because of an unmet condition check (ConditionACPower=true)'; then
    pass "on a discharging battery the run is skipped (journal: unmet ConditionACPower)"
  else fail "on a discharging battery the run is skipped (journal: unmet ConditionACPower)" "$(jnew backup.service "$m" | head -5)"; fi
  check "no snapshot on battery" test "$(latest)" = "$l0" -a "$(snapshots)" = "$s0"
  fake_power ac
  m=$(jmark backup.service)
  systemctl start backup.service
  wait_for 60 unit_ended backup.service "$m"
  check "on AC the run happens and succeeds" unit_succeeded backup.service "$m"
  check "a snapshot on AC (latest moved)" new_latest "$l0"
  fake_power none
}

root_fs_view() { # list what is under the destination mount point on the root filesystem itself
  mkdir -p /run/hwc-test/rootview
  mountpoint -q /run/hwc-test/rootview || mount --bind / /run/hwc-test/rootview
  find "/run/hwc-test/rootview$DEST" -mindepth 1 | head
}

s_not_mounted() {
  local mountunit; mountunit=$(systemd-escape -p --suffix=mount "$DEST")
  scenario not-mounted-automount
  # RequiresMountsFor= with the destination declared in fstab (NixOS fileSystems): starting the
  # service mounts it.
  local m
  umount "$DEST"
  m=$(jmark backup.service)
  systemctl start backup.service
  wait_for 60 unit_ended backup.service "$m"
  check "RequiresMountsFor= mounted the declared destination before the run" mountpoint -q "$DEST"
  check "the run succeeded" unit_succeeded backup.service "$m"

  scenario not-mounted-device-missing
  # The declared disk is absent: the mount job fails, so backup.service never runs, and OnFailure=
  # still fires (systemd runs OnFailure= for a start job that failed on a dependency).
  umount "$DEST"
  sed -i "s|^LABEL=hwcdest |LABEL=hwcdest-absent |; s|x-systemd.device-timeout=5s|x-systemd.device-timeout=2s|" /etc/fstab
  systemctl daemon-reload
  local fm; fm=$(fmark backup.service)
  m=$(jmark backup.service)
  systemctl start backup.service
  wait_for 30 unit_ended backup.service "$m"
  check "backup.service did not start (journal: Dependency failed)" \
    bash -c "journalctl -b -q -o cat -u backup.service | tail -n +$((m + 1)) > /run/hwc-test/j; grep -q '^Dependency failed for backup.service' /run/hwc-test/j && ! grep -q '^Starting ' /run/hwc-test/j"
  check "destination still not mounted" bash -c "! mountpoint -q '$DEST'"
  expect_failure_reported backup.service "$fm"
  check "nothing written under $DEST on the root filesystem" test -z "$(root_fs_view)"

  scenario not-mounted-refuse
  # The destination is not declared anywhere (a disk mounted by hand, now gone): RequiresMountsFor=
  # has no mount unit to pull in, the service runs, and the runner's own mount-point check refuses.
  sed -i "\\|^LABEL=hwcdest-absent |d" /etc/fstab
  systemctl daemon-reload
  systemctl reset-failed "$mountunit" 2>/dev/null
  fm=$(fmark backup.service)
  m=$(jmark backup.service)
  systemctl start backup.service
  wait_for 60 unit_ended backup.service "$m"
  if jnew backup.service "$m" | grep -qE "Failed with result|Failed to start"; then pass "the service refuses and fails"
  else fail "the service refuses and fails" "$(jnew backup.service "$m" | tail -5 | tr '\n' '|')"; fi
  check "the runner said why (mount point)" bash -c "journalctl -b -q -o cat -u backup.service | tail -n +$((m + 1)) | grep -qi 'mount'"
  check "nothing written under $DEST on the root filesystem" test -z "$(root_fs_view)"
  expect_failure_reported backup.service "$fm"
  # restore the declared, present destination
  echo "LABEL=hwcdest $DEST ext4 nofail,x-systemd.device-timeout=5s 0 2" >>/etc/fstab
  systemctl daemon-reload
  systemctl reset-failed backup.service "$mountunit" 2>/dev/null
  systemctl start "$mountunit"
  check "destination mounted again" mountpoint -q "$DEST"
}

s_kill9() {
  scenario kill-9-mid-snapshot
  # Enough new data that the copy takes a few seconds under TCG.
  mkdir -p /home/alice/bulk
  local i
  for i in $(seq 1 32); do head -c 1M /dev/urandom >/home/alice/bulk/f$i.bin; done
  chown -R 1000:1000 /home/alice/bulk
  local before_list before_latest before_sig fm m pid
  # First a run that fails on its own and reports it (a source is missing), so that the kill below
  # comes a minute after a reported failure: the kill must still be reported.
  mv /etc/hwc-test /etc/hwc-test.away
  fm=$(fmark backup.service); m=$(jmark backup.service)
  systemctl start backup.service
  wait_for 60 unit_ended backup.service "$m"
  mv /etc/hwc-test.away /etc/hwc-test
  check "a run with a missing source fails" bash -c "journalctl -b -q -o cat -u backup.service | tail -n +$((m + 1)) | grep -qE 'Failed with result|Failed to start'"
  expect_failure_reported backup.service "$fm"
  systemctl reset-failed backup.service
  before_list=$(snapshots); before_latest=$(latest)
  before_sig=$(tree_sig "$HOSTDIR/$before_latest")
  fm=$(fmark backup.service); m=$(jmark backup.service)
  systemctl start --no-block backup.service
  # wait until the runner is writing the new snapshot (.incomplete/<name>/ has the bulk files)
  if wait_for 60 bash -c "ls -d '$HOSTDIR'/.incomplete/*/home/alice/bulk/f* >/dev/null 2>&1"; then
    pid=$(for p in $(cat /sys/fs/cgroup/system.slice/backup.service/cgroup.procs 2>/dev/null); do
            [ "$(cat /proc/$p/comm 2>/dev/null)" = hwc-backup ] && echo $p; done | head -n1)
  fi
  if [ -z "$pid" ]; then fail "caught the runner mid-snapshot" "no .incomplete data / runner process seen"; return; fi
  kill -9 "$pid"
  pass "caught the runner mid-snapshot and sent SIGKILL (pid $pid)"
  wait_for 30 unit_ended backup.service "$m"
  check "journal: main process killed by SIGKILL" bash -c "journalctl -b -q -o cat -u backup.service | tail -n +$((m + 1)) | grep -q 'status=9/KILL'"
  expect_failure_reported backup.service "$fm"
  check "no new complete snapshot after the kill" test "$(snapshots)" = "$before_list"
  check "latest unchanged after the kill" test "$(latest)" = "$before_latest"
  check "previous latest snapshot intact" test "$(tree_sig "$HOSTDIR/$before_latest")" = "$before_sig"
  m=$(jmark backup.service)
  systemctl start backup.service
  wait_for 120 unit_ended backup.service "$m"
  check "the next run succeeds" unit_succeeded backup.service "$m"
  local L; L=$(latest)
  check "latest moved to a new snapshot" test -n "$L" -a "$L" != "$before_latest"
  check "nothing lost: /home/alice/bulk complete in the new snapshot" diff -r /home/alice/bulk "$HOSTDIR/$L/home/alice/bulk"
  check "nothing lost: all of /home except excludes" diff -r --exclude=.cache --exclude='*.tmp' /home "$HOSTDIR/$L/home"
  check "no leftover work-in-progress" test -z "$(ls -A "$HOSTDIR/.incomplete" 2>/dev/null)"
}

runner_out() { # runner_out UNIT MARK : what the hwc-backup process itself logged in UNIT since MARK
  journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT="$1" _COMM=hwc-backup | tail -n +$(($2 + 1))
}
rmark() { journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT="$1" _COMM=hwc-backup | wc -l; }

# ---------- offsite: the copy and check units against a local restic repository ----------
s_offsite() {
  scenario offsite
  local R=/var/lib/hwc-restic P=/etc/hwc-restic-password T=/run/hwc-test/restored m mr n
  # restic is the host's Debian binary (the image has none), in the fake store: the plan names it.
  restic() { /opt/hwc-test/restic "$@"; }
  mkdir -p "$R"   # a local repository is created only in a directory that exists (README)
  (umask 077; echo "vm-offsite-password" >"$P")
  m=$(jmark backup-offsite-vmrepo.service); mr=$(rmark backup-offsite-vmrepo.service)
  systemctl start backup-offsite-vmrepo.service
  check "backup-offsite-vmrepo.service copied the newest snapshot" unit_succeeded backup-offsite-vmrepo.service "$m"
  log "offsite output:"; runner_out backup-offsite-vmrepo.service "$mr"
  n=$(restic -r "$R" --password-file "$P" snapshots --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  check "the repository holds one restic snapshot (found ${n:-none})" test "$n" = 1
  rm -rf "$T"
  restic -r "$R" --password-file "$P" restore latest --target "$T" >/dev/null 2>&1
  check "restic alone restores alice's notes at their original path" cmp -s /home/alice/notes.txt "$T/home/alice/notes.txt"
  check "and bob's 0700 file with its owner and mode" test "$(stat -c %u:%a /home/bob/private/diary.txt)" = "$(stat -c %u:%a "$T/home/bob/private/diary.txt" 2>/dev/null)"
  check "and root-only /etc/hwc-test/secret.conf" cmp -s /etc/hwc-test/secret.conf "$T/etc/hwc-test/secret.conf"
  rm -rf "$T"
  m=$(jmark backup-offsite-check-vmrepo.service); mr=$(rmark backup-offsite-check-vmrepo.service)
  systemctl start backup-offsite-check-vmrepo.service
  check "backup-offsite-check-vmrepo.service checked the repository" unit_succeeded backup-offsite-check-vmrepo.service "$m"
  log "offsite check output:"; runner_out backup-offsite-check-vmrepo.service "$mr"
  check "the offsite record has the good copy and the clean check ($STATE/$HOST/offsite-vmrepo.json)" \
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r.get("lastOk") and r.get("lastSuccess") and r.get("lastCheckOk") else 1)' "$STATE/$HOST/offsite-vmrepo.json"
}

s_health_verify() {
  local th tv t u m mu mr st L
  th=$(elapse_of backup-health-check.timer) || { scenario health-check-timer; fail "backup-health-check.timer has a next elapse"; }
  tv=$(elapse_of backup-verify.timer) || { scenario verify-timer; fail "backup-verify.timer has a next elapse"; }
  # backup.timer stays stopped during these clock jumps (else it would catch up on its own while we
  # make the fresh backups by hand); it is started again, and its catch-up run awaited, afterwards.
  systemctl stop backup.timer
  for u in $(if [ "${th:-0}" -le "${tv:-0}" ]; then echo backup-health-check backup-verify; else echo backup-verify backup-health-check; fi); do
    if [ "$u" = backup-health-check ]; then scenario health-check-timer; else scenario verify-timer; fi
    t=$(elapse_of $u.timer) || continue
    # A fresh backup just before the elapse, so the health check has a recent snapshot.
    set_clock $((t - 15))
    m=$(jmark backup.service)
    systemctl start backup.service
    check "fresh backup before the $u elapse" unit_succeeded backup.service "$m"
    L=$(latest)
    mu=$(jmark $u.service); mr=$(rmark $u.service); touch /run/hwc-test/ref
    if wait_for 60 unit_ended $u.service "$mu"; then pass "$u.service ran from $u.timer"
    else fail "$u.service ran from $u.timer" "nothing within 60 s of the clock reaching $(date -u -d @$t)"; continue; fi
    st=$(journalctl -b -q --no-pager -o short-unix -u $u.service | tail -n +$((mu + 1)) | grep -m1 'Starting ' | cut -d' ' -f1)
    check "started at the elapse" test -n "$st" -a "${st%.*}" -ge "$t"
    check "$u succeeded" unit_succeeded $u.service "$mu"
    log "$u output:"; runner_out $u.service "$mr"
    if [ "$u" = backup-verify ]; then
      check "verify checked the latest snapshot ($L) and found it intact" \
        bash -c "journalctl -b -q -o cat _SYSTEMD_UNIT=$u.service _COMM=hwc-backup | tail -n +$((mr + 1)) | grep -F '${L#*/}' | grep -qiE 'ok|intact|verified'"
      # Verify records are kept per drive: <state>/<host>/destinations/<drive>/last-verify.json.
      check "verify recorded its result ($STATE/$HOST/destinations/*/last-verify.json)" \
        bash -c "find '$STATE/$HOST/destinations' -name last-verify.json -newer /run/hwc-test/ref | grep -q ."
    else
      check "the health check reported (runner output in the journal)" test -n "$(runner_out $u.service "$mr")"
      check "the health check recorded its result ($STATE/$HOST/health.json)" test "$STATE/$HOST/health.json" -nt /run/hwc-test/ref
    fi
  done
  m=$(jmark backup.service)
  systemctl start backup.timer
  wait_for 5 unit_started backup.service "$m" && wait_for 120 unit_ended backup.service "$m"

  scenario health-check-stale
  # No backup for longer than health.maxAge (48 h for daily): the check fails and notifies.
  local fm; fm=$(fmark backup-health-check.service)
  systemctl stop backup.timer
  set_clock $(($(date +%s) + 3 * 86400))
  mu=$(jmark backup-health-check.service); touch /run/hwc-test/ref
  systemctl start backup-health-check.service
  wait_for 60 unit_ended backup-health-check.service "$mu"
  check "health check fails when the newest snapshot is 3 days old" bash -c "journalctl -b -q -o cat -u backup-health-check.service | tail -n +$((mu + 1)) | grep -qE 'Failed with result|Failed to start'"
  check "it recorded the stale newest snapshot as the reason (health.json: newestSnapshot not ok)" \
    test "$STATE/$HOST/health.json" -nt /run/hwc-test/ref -a -n "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["healthy"] is False and any(c["name"] == "newestSnapshot" and not c["ok"] for c in d["checks"]); print("yes")' "$STATE/$HOST/health.json" 2>/dev/null)"
  expect_failure_reported backup-health-check.service "$fm"
  systemctl reset-failed backup-health-check.service
  # back to normal: a fresh backup, then the timer again
  m=$(jmark backup.service)
  systemctl start backup.service
  check "a backup after the stale period succeeds" unit_succeeded backup.service "$m"
  m=$(jmark backup.service)
  systemctl start backup.timer
  wait_for 5 unit_started backup.service "$m" && wait_for 120 unit_ended backup.service "$m"

  scenario verify-detects-corruption
  local f
  L=$(latest); f=$HOSTDIR/$L/home/alice/docs/numbers.txt
  fm=$(fmark backup-verify.service)
  # flip one byte, keep size and mtime (bit rot)
  cp -p "$f" /run/hwc-test/orig
  printf 'X' | dd of="$f" bs=1 seek=100 conv=notrunc status=none; touch -r /run/hwc-test/orig "$f"
  m=$(jmark backup-verify.service)
  systemctl start backup-verify.service
  wait_for 60 unit_ended backup-verify.service "$m"
  check "verify fails on a corrupted snapshot file" bash -c "journalctl -b -q -o cat -u backup-verify.service | tail -n +$((m + 1)) | grep -qE 'Failed with result|Failed to start'"
  check "verify names the corrupted file" bash -c "journalctl -b -q -o cat -u backup-verify.service | tail -n +$((m + 1)) | grep -q 'numbers.txt'"
  expect_failure_reported backup-verify.service "$fm"
  cp -p /run/hwc-test/orig "$f"   # repair (same inode: the file is hard-linked across snapshots)
  systemctl reset-failed backup-verify.service
}

# ---------- pull: the server pulls "other machines" over ssh; here both are the VM itself ----------
PULL_KEY=/root/.ssh/hwc_pull
pull_ssh() { # ssh as root of the server would, with the pull key (the agent's restricted key)
  timeout 60 ssh -o BatchMode=yes -o UserKnownHostsFile=/etc/hwc-pull/known_hosts -o StrictHostKeyChecking=yes \
    -o IdentitiesOnly=yes -i "$PULL_KEY" -l root "$@"
}
pull_latest() { HOSTDIR=$DEST/$1 latest; }
pull_snapshots() { HOSTDIR=$DEST/$1 snapshots; }
pulled_new() { # pulled_new HOST OLD_LATEST FILE : latest of HOST moved and its snapshot holds FILE as it is
  local l; l=$(pull_latest "$1"); [ -n "$l" ] && [ "$l" != "$2" ] && cmp -s "$3" "$DEST/$1/$l$3"
}
tcp_open() { bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
pull_sig() { # what a snapshot must reproduce: names, types, modes, owners, symlink targets, file mtimes and data
  (cd "$1" && find . -printf '%p %y %m %U:%G %l\n' | sort && find . -type f -print0 | sort -z | xargs -0r stat -c '%n %Y' &&
   find . -type f -print0 | sort -z | xargs -0r md5sum)
}
same_tree() { # same_tree SOURCE SNAPSHOT-COPY : pull_sig equal, else the differences go to the log
  local d; d=$(diff <(pull_sig "$1") <(pull_sig "$2")) && return 0
  log "differences between $1 and $2:"; head -20 <<<"$d"; return 1
}
pull_state() { # "client1:run client2:wait": per host, whether its unit runs hwc-backup (after the
  # slot lock: flock --no-fork execs it) or still waits in flock for the lock
  local u p st
  for u in client1 client2; do
    st=
    for p in $(cat "/sys/fs/cgroup/system.slice/backup-host-$u.service/cgroup.procs" 2>/dev/null); do
      case $(cat "/proc/$p/comm" 2>/dev/null) in
        hwc-backup) st=run ;;
        flock) [ -n "$st" ] || st=wait ;;
      esac
    done
    [ -n "$st" ] && printf '%s:%s ' "$u" "$st"
  done
  echo
}

host_checks_pass() { # host_checks_pass ETC : client1's health and verify units (in ETC) run and pass
  local u m
  for u in backup-health-check-host-client1 backup-verify-host-client1; do
    check "$u.timer is installed" test -f "$1/systemd/system/$u.timer"
    m=$(jmark $u.service)
    systemctl start $u.service
    wait_for 120 unit_ended $u.service "$m"
    if unit_succeeded $u.service "$m"; then pass "systemctl start $u.service: client1's snapshots pass"
    else fail "systemctl start $u.service: client1's snapshots pass" "$(jnew $u.service "$m" | tail -8 | tr '\n' '|')"; fi
  done
}

s_pull() {
  scenario pull
  local D1=$DEST/client1 m m2 L L2 S fm nc i1 i2 i3 probe n
  # The client half, as NixOS sets it up: sshd reads /etc/ssh/authorized_keys.d/%u (the module's
  # entries, installed from the render with the units) besides ~/.ssh/authorized_keys.
  mkdir -p /etc/ssh/sshd_config.d
  echo 'AuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/authorized_keys.d/%u' >/etc/ssh/sshd_config.d/50-hwc-test.conf
  ssh-keygen -A   # host keys (openssh-server made them when the image was built; a no-op then)
  systemctl restart ssh.service
  # The server half: its key, and the client's host keys known (programs.ssh.knownHosts would
  # write them; the case points sshOptions' UserKnownHostsFile here).
  install -D -m600 "$H/guest/hwc_pull" "$PULL_KEY"
  mkdir -p /etc/hwc-pull
  for k in /etc/ssh/ssh_host_*_key.pub; do echo "127.0.0.1 $(cut -d' ' -f1,2 "$k")"; done >/etc/hwc-pull/known_hosts
  check "sshd runs (ssh.service active)" systemctl is-active --quiet ssh.service
  check "root's authorized_keys entry is the module's: forced agent command for the allowed paths, restrict" \
    grep -qxF "command=\"/opt/hwc-backup/bin/hwc-backup agent --allow /srv/client1 --allow /srv/client2\",restrict $(cat "$H/guest/hwc_pull.pub")" /etc/ssh/authorized_keys.d/root
  check "hostConcurrency = 1: both pull units run under the one slot lock (flock --no-fork pull-slot@0.lock)" \
    bash -c "grep -q '^ExecStart=/nix/store/[^ ]*-util-linux/bin/flock --no-fork $STATE/pull-slot@0.lock .*hwc-backup pull --host client1 ' /etc/systemd/system/backup-host-client1.service &&
             grep -q '^ExecStart=/nix/store/[^ ]*-util-linux/bin/flock --no-fork $STATE/pull-slot@0.lock .*hwc-backup pull --host client2 ' /etc/systemd/system/backup-host-client2.service"
  # The clients' trees: owners, modes, a symlink, an empty directory, some bulk.
  mkdir -p /srv/client1/docs /srv/client1/empty /srv/client1/private /srv/client2
  echo "client1 notes $(date +%s)" >/srv/client1/notes.txt
  seq 1 50000 >/srv/client1/docs/numbers.txt
  head -c 8M /dev/urandom >/srv/client1/big.bin
  ln -s ../notes.txt /srv/client1/docs/link-to-notes
  echo "secret of client1" >/srv/client1/private/key; chmod 700 /srv/client1/private; chmod 600 /srv/client1/private/key
  chown -R 1000:1000 /srv/client1/docs
  echo "client2 data" >/srv/client2/data.txt
  m=$(jmark backup-host-client1.service)
  systemctl start backup-host-client1.service
  wait_for 180 unit_ended backup-host-client1.service "$m"
  if unit_succeeded backup-host-client1.service "$m"; then pass "systemctl start backup-host-client1.service: the pull over ssh succeeds"
  else fail "systemctl start backup-host-client1.service: the pull over ssh succeeds" "$(jnew backup-host-client1.service "$m" | tail -8 | tr '\n' '|')"; return; fi
  L=$(pull_latest client1)
  check "latest is set in $D1 and names a complete snapshot" test -n "$L" -a -f "$D1/$L/.hwc-backup/meta.json"
  check "the snapshot holds /srv/client1 as it is (content, modes, owners, symlink, mtimes)" same_tree /srv/client1 "$D1/$L/srv/client1"
  check "only the requested source was pulled (no /srv/client2 in client1's snapshot)" test ! -e "$D1/$L/srv/client2"
  check "the pull keeps its records in $STATE/client1/" test -d "$STATE/client1"

  scenario pull-health-verify
  # Each pulled host has its own health check and verification units (also on a server without
  # local snapshots): both pass on the snapshot just pulled.
  host_checks_pass /etc

  scenario pull-only-server
  # The same on a server without snapshots of its own (cases/pull-only.nix: local.enable =
  # false), switched to as `nixos-rebuild switch` would, then back to the base configuration.
  local P="$H/trees/pull-only"
  check "the pull-only configuration has no local backup unit or timer" \
    test ! -e "$P/etc/systemd/system/backup-local.service" -a ! -e "$P/etc/systemd/system/backup.timer"
  cp -a "$P/." / && systemctl daemon-reload
  host_checks_pass "$P/etc"
  cp -a "$H/trees/base/." / && systemctl daemon-reload

  scenario pull-incremental
  # (inode numbers noted now: retention may prune the older snapshot of the same day)
  i1=$(stat -c %i "$D1/$L/srv/client1/big.bin"); i2=$(stat -c %i "$D1/$L/srv/client1/docs/numbers.txt")
  i3=$(stat -c %i "$D1/$L/srv/client1/notes.txt")
  echo "changed $(date +%s%N)" >>/srv/client1/notes.txt
  m=$(jmark backup-host-client1.service)
  systemctl start backup-host-client1.service
  wait_for 180 unit_ended backup-host-client1.service "$m"
  check "the second pull succeeds" unit_succeeded backup-host-client1.service "$m"
  L2=$(pull_latest client1)
  check "latest moved to a new snapshot" test -n "$L2" -a "$L2" != "$L" -a -f "$D1/$L2/.hwc-backup/meta.json"
  check "unchanged big.bin is a hard link of the previous snapshot's (inode $i1)" test "$(stat -c %i "$D1/$L2/srv/client1/big.bin")" = "$i1"
  check "unchanged docs/numbers.txt too (inode $i2)" test "$(stat -c %i "$D1/$L2/srv/client1/docs/numbers.txt")" = "$i2"
  check "the changed notes.txt is a new file (not inode $i3) with the new content" \
    test "$(stat -c %i "$D1/$L2/srv/client1/notes.txt")" != "$i3" -a "$(cat "$D1/$L2/srv/client1/notes.txt")" = "$(cat /srv/client1/notes.txt)"
  check "the new snapshot holds /srv/client1 as it is" same_tree /srv/client1 "$D1/$L2/srv/client1"

  scenario pull-concurrency
  # Both pulls started together, each with 16 MiB of new data: with hostConcurrency = 1 one waits
  # in flock for the slot lock until the other has ended. A probe samples every 0.1 s which unit
  # runs hwc-backup and which still waits.
  head -c 16M /dev/urandom >/srv/client1/new.bin
  head -c 16M /dev/urandom >/srv/client2/new.bin
  L=$(pull_latest client1); L2=$(pull_latest client2)
  m=$(jmark backup-host-client1.service); m2=$(jmark backup-host-client2.service)
  (while :; do pull_state; sleep 0.1; done) >/run/hwc-test/pull-probe 2>/dev/null &
  probe=$!
  systemctl start --no-block backup-host-client1.service backup-host-client2.service
  wait_for 300 unit_ended backup-host-client1.service "$m"
  wait_for 300 unit_ended backup-host-client2.service "$m2"
  kill "$probe"; wait "$probe" 2>/dev/null
  log "probe samples (uniq): $(uniq -c /run/hwc-test/pull-probe | tr -s ' \n' ' ')"
  check "client1's pull succeeds" unit_succeeded backup-host-client1.service "$m"
  check "client2's pull succeeds" unit_succeeded backup-host-client2.service "$m2"
  # A single sample may catch the hand-over: the kernel closes an exiting process's files
  # (releasing the slot lock, so the other pull starts) before it leaves the cgroup. Two
  # pulls really at once overlap for seconds, so two consecutive samples are the failure.
  both=$(awk '/client1:run client2:run/ { if (prev) n++; prev = 1; next } { prev = 0 } END { print n + 0 }' /run/hwc-test/pull-probe)
  if [ "$both" -gt 0 ]; then
    fail "never both pulls at once" "$both consecutive samples with both running"
  else pass "never both pulls at once ($(wc -l </run/hwc-test/pull-probe) samples, $(grep -c 'client1:run client2:run' /run/hwc-test/pull-probe) at a hand-over)"; fi
  check "each of them was seen running" bash -c "grep -q client1:run /run/hwc-test/pull-probe && grep -q client2:run /run/hwc-test/pull-probe"
  check "one was seen waiting for the slot while the other ran" grep -qE 'client1:run client2:wait|client1:wait client2:run' /run/hwc-test/pull-probe
  check "client1 got a new snapshot with its new data" pulled_new client1 "$L" /srv/client1/new.bin
  check "client2 got a new snapshot with its new data" pulled_new client2 "$L2" /srv/client2/new.bin

  scenario pull-restricted-key
  # The agent's key can only start the agent: a command asked for is not run (the agent answers
  # with its hello and gives up on a server that says nothing), and forwarding is refused.
  pull_ssh 127.0.0.1 id </dev/null >/run/hwc-test/ssh-id.out 2>&1
  log "ssh … id said: $(tr -d '\0' </run/hwc-test/ssh-id.out | cat -v | head -5 | tr '\n' '|')"
  check "ssh with the key and the command \"id\" runs no shell command (no uid= output)" bash -c "! grep -aq 'uid=' /run/hwc-test/ssh-id.out"
  check "what answered is the agent (its HWCB hello)" grep -aq HWCB /run/hwc-test/ssh-id.out
  pull_ssh -tt 127.0.0.1 id </dev/null >/run/hwc-test/ssh-t.out 2>&1
  log "ssh -tt … id said: $(tr -d '\0' </run/hwc-test/ssh-t.out | cat -v | head -5 | tr '\n' '|')"
  check "no pty with the key (ssh -tt: PTY allocation refused, still no uid= output)" \
    bash -c "grep -aq 'PTY allocation request failed' /run/hwc-test/ssh-t.out && ! grep -aq 'uid=' /run/hwc-test/ssh-t.out"
  pull_ssh -W 127.0.0.1:22 127.0.0.1 </dev/null >/run/hwc-test/ssh-w.out 2>&1
  log "ssh -W said: $(cat -v /run/hwc-test/ssh-w.out | head -5 | tr '\n' '|')"
  check "port forwarding with the key is refused (ssh -W 127.0.0.1:22: no sshd banner through it)" \
    bash -c "! grep -aq '^SSH-2.0' /run/hwc-test/ssh-w.out && grep -aqi 'prohibited\|failed' /run/hwc-test/ssh-w.out"

  scenario pull-unreachable
  # sshd stopped: the pull fails and reports it itself; OnFailure= still runs
  # backup-failure@backup-host-client1.service.service, whose notify-failure finds the pull's
  # invocation in the host's state directory and does not notify a second time.
  systemctl stop ssh.socket 2>/dev/null; systemctl stop ssh.service
  if tcp_open 22; then fail "sshd stopped (127.0.0.1:22 refuses)" "port 22 still accepts"; else pass "sshd stopped (127.0.0.1:22 refuses)"; fi
  L=$(pull_latest client1); S=$(pull_snapshots client1)
  fm=$(fmark backup-host-client1.service); nc=${fm#* }
  m=$(jmark backup-host-client1.service)
  systemctl start backup-host-client1.service
  wait_for 120 unit_ended backup-host-client1.service "$m"
  if jnew backup-host-client1.service "$m" | grep -qE "Failed with result|Failed to start"; then pass "the pull fails"
  else fail "the pull fails" "$(jnew backup-host-client1.service "$m" | tail -5 | tr '\n' '|')"; fi
  check "the journal says why (ssh: connection refused)" bash -c "journalctl -b -q -o cat -u backup-host-client1.service | tail -n +$((m + 1)) | grep -qi 'refused'"
  check "nothing published: latest and the snapshots of client1 unchanged" test "$(pull_latest client1)" = "$L" -a "$(pull_snapshots client1)" = "$S"
  expect_failure_reported backup-host-client1.service "$fm"
  sleep 3
  n=$(( $(notify_count) - nc ))
  if [ "$n" -eq 1 ]; then pass "the failure was notified exactly once"
  else fail "the failure was notified exactly once" "$n notifications: $(tail -n +$((nc + 1)) /run/hwc-test/notify.jsonl | cut -c1-300 | tr '\n' '|')"; fi
  check "the notification is about client1" bash -c "tail -n +$((nc + 1)) /run/hwc-test/notify.jsonl | grep -q client1"
  check "notify-failure saw that the pull had notified (invocation recorded in $STATE/client1/)" \
    bash -c "journalctl -b -q -o cat -u 'backup-failure@backup-host-client1.service.service' | tail -n +$((${fm% *} + 1)) | grep -q 'sent its own notification'"
  systemctl start ssh.service
  systemctl reset-failed backup-host-client1.service 'backup-failure@backup-host-client1.service.service' 2>/dev/null
  m=$(jmark backup-host-client1.service)
  systemctl start backup-host-client1.service
  wait_for 180 unit_ended backup-host-client1.service "$m"
  check "with sshd back, the next pull succeeds" unit_succeeded backup-host-client1.service "$m"
}

s_daemon_reload() {
  scenario daemon-reload-no-backup
  # What nixos-rebuild switch does after a configuration change: new unit files and plan, then
  # daemon-reload, then restart the changed units that are active, skipping services marked
  # X-RestartIfChanged=false; a oneshot backup that is not running is not started.
  local m0 l0 s0 changed u p1 p2
  m0=$(jmark backup.service); l0=$(latest); s0=$(snapshots)
  p1=$(jmark backup-host-client1.service); p2=$(jmark backup-host-client2.service)
  changed=$(cd "$H/trees/changed" && find . -type f | while read -r f; do cmp -s "$f" "/$f" || echo "${f#.}"; done)
  log "changed files: $changed"
  check "the configuration change touches the plan" grep -q hwc-backup/config.json <<<"$changed"
  cp -a "$H/trees/changed/." /
  systemctl daemon-reload
  for f in $changed; do
    u=${f##*/}
    case $u in
      *.timer) systemctl is-active --quiet "$u" && systemctl restart "$u" && log "restarted $u" ;;
      *.service)
        if systemctl is-active --quiet "$u" && ! grep -qx 'X-RestartIfChanged=false' "/etc/systemd/system/$u"; then
          systemctl restart "$u" && log "restarted $u"; fi ;;
    esac
  done
  sleep 5
  if unit_started backup.service "$m0"; then fail "no backup started by the reload" "$(jnew backup.service "$m0" | head -3 | tr '\n' '|')"
  else pass "no backup started by the reload"; fi
  check "no new snapshot" test "$(latest)" = "$l0" -a "$(snapshots)" = "$s0"
  if unit_started backup-host-client1.service "$p1" || unit_started backup-host-client2.service "$p2"; then
    fail "no pull started by the reload" "$(jnew backup-host-client1.service "$p1" | head -2 | tr '\n' '|')$(jnew backup-host-client2.service "$p2" | head -2 | tr '\n' '|')"
  else pass "no pull started by the reload"; fi
  check "backup.service has X-RestartIfChanged=false" grep -qx 'X-RestartIfChanged=false' /etc/systemd/system/backup.service
  check "timers still active" systemctl is-active --quiet $TIMERS
}

s_switch_schedule() {
  scenario switch-schedule-no-catch-up
  # A schedule changed by nixos-rebuild switch (weekly -> daily): switch-to-configuration restarts
  # the changed timer, and a timer with Persistent=true whose stamp (when it last fired) is older
  # than the new calendar's last elapse fires at once. The module's activation (run before the
  # units are restarted, only on switch/test) renews the stamps of its timers with `touch -c`, so
  # the new schedule starts at its next elapse: the render's own activation text, installed by the
  # test as $ACTIVATION, runs here as NixOS runs it (NIXOS_ACTION=switch).
  local m stamp=/var/lib/systemd/timers/stamp-backup.timer dropin=/run/systemd/system/backup.timer.d
  local ACTIVATION=/opt/hwc-test/hooks/activation-hwc-backup-timers
  check "the render's activation script is installed" test -x $ACTIVATION
  mkdir -p $dropin
  printf '[Timer]\nOnCalendar=\nOnCalendar=*-*-* 00:00:01\n' >$dropin/schedule.conf
  systemctl daemon-reload
  touch -d '3 days ago' $stamp
  m=$(jmark backup.service)
  systemctl restart backup.timer
  wait_for 10 unit_started backup.service "$m"
  check "reproduced: the restarted timer with a stale stamp fires at once" unit_started backup.service "$m"
  wait_for 300 unit_ended backup.service "$m"
  touch -d '3 days ago' $stamp
  m=$(jmark backup.service)
  NIXOS_ACTION=dry-activate $ACTIVATION
  check "the activation leaves the stamps alone on dry-activate" test "$(stat -c %Y $stamp)" -lt $(($(date +%s) - 86400))
  NIXOS_ACTION=switch $ACTIVATION   # what switch-to-configuration runs before restarting units
  check "the activation renewed backup.timer's stamp on switch" test "$(stat -c %Y $stamp)" -ge $(($(date +%s) - 60))
  systemctl restart backup.timer
  sleep 5
  if unit_started backup.service "$m"; then fail "with the stamp renewed, the restart starts no backup" "$(jnew backup.service "$m" | head -3 | tr '\n' '|')"
  else pass "with the stamp renewed, the restart starts no backup"; fi
  rm -rf $dropin
  systemctl daemon-reload
  systemctl restart backup.timer
}

# ---------- quiesce: services held still while btrfs source snapshots are taken ----------
Q=/srv/quiesced
writer_unit() { # writer_unit NAME : a dummy service writing a counter into the source
  printf '[Unit]\nDescription=hwc-backup test: a service writing to a quiesced source (%s)\n[Service]\nExecStart=/opt/hwc-test/writer %s\nExecStop=/opt/hwc-test/writer-stop\n' \
    "$1" "$Q/$1" >/etc/systemd/system/hwc-test-writer-$1.service
}
writer_ok() { # writer_ok NAME : active, not frozen, and writing
  local u=hwc-test-writer-$1.service c
  systemctl is-active --quiet $u && [ "$(systemctl show -P FreezerState $u)" = running ] || return 1
  c=$(cat $Q/$1/counter); sleep 0.5; [ "$(cat $Q/$1/counter)" != "$c" ]
}
no_leftovers() { # no btrfs snapshot and no safety timer left behind
  [ -z "$(btrfs subvolume list -o $Q 2>/dev/null; btrfs subvolume list $Q 2>/dev/null)" ] &&
    [ -z "$(systemctl list-units --all --plain --no-legend 'hwc-backup-unquiesce-*' 2>/dev/null)" ]
}
held_ms() { # held_ms META UNIT : the downtime meta.json records for UNIT, in ms
  python3 -c 'import json,sys; h=[u for u in json.load(open(sys.argv[1])).get("heldUnits", []) if u["unit"]==sys.argv[2]]; print(h[0]["downMs"] if h and h[0].get("downMs") is not None else "none")' "$1" "$2" 2>/dev/null
}
down_metric() { # down_metric NAME : the writer's line of the downtime gauge
  cat /var/lib/hwc-metrics/*.prom 2>/dev/null | grep "^hwc_backup_newest_snapshot_unit_down_seconds{.*unit=\"hwc-test-writer-$1.service\"}"
}
runner_pid() {
  for p in $(cat /sys/fs/cgroup/system.slice/backup.service/cgroup.procs 2>/dev/null); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = hwc-backup ] && echo $p; done | head -n1
}

s_quiesce() {
  scenario quiesce-setup
  # A btrfs filesystem on a loop device holds the source; the configuration switches to
  # cases/quiesce.nix (sourceSnapshots = "btrfs", the two writers in local.quiesce).
  modprobe btrfs && truncate -s 300M /var/tmp/quiesced.img && mkfs.btrfs -q /var/tmp/quiesced.img &&
    mkdir -p $Q && mount -o loop /var/tmp/quiesced.img $Q
  check "a btrfs source mounted at $Q" mountpoint -q $Q
  mkdir -p $Q/stop $Q/freeze $Q/data /var/lib/hwc-metrics
  local i; for i in $(seq 1 200); do echo "$i" >$Q/data/f$i; done
  cat >/opt/hwc-test/writer <<'WRITER'
#!/bin/bash
# writer DIR: writes an increasing counter to DIR/counter every 50 ms (write, then rename).
i=0
while :; do
  i=$((i + 1)); echo $i >"$1/counter.tmp"; mv "$1/counter.tmp" "$1/counter"
  sleep 0.05
done
WRITER
  # The writers' ExecStop=: while the gate /run/hwc-test/slow-stop exists, a stop stays in
  # "deactivating" (it says so in /run/hwc-test/stopping) until the test removes the gate, at most
  # 60 s. A gate, not a delay: the kill-9 scenario must catch the runner inside a stop on a
  # loaded machine, whatever the timing (a 4 s delay was missed once).
  cat >/opt/hwc-test/writer-stop <<'STOP'
#!/bin/bash
if [ -e /run/hwc-test/slow-stop ]; then
  touch /run/hwc-test/stopping
  for _ in $(seq 600); do [ -e /run/hwc-test/slow-stop ] || break; sleep 0.1; done
fi
exit 0
STOP
  chmod 755 /opt/hwc-test/writer /opt/hwc-test/writer-stop
  writer_unit stop; writer_unit freeze
  cp -a "$H/trees/quiesce/." / && systemctl daemon-reload
  systemctl start hwc-test-writer-stop.service hwc-test-writer-freeze.service
  check "the stop writer runs and writes" wait_for 10 writer_ok stop
  check "the freeze writer runs and writes" wait_for 10 writer_ok freeze
  check "backup.service has the ExecStopPost= that releases a killed run's services" grep -q '^ExecStopPost=' /etc/systemd/system/backup.service
  fake_power none

  local w mode m ws L ms prom
  scenario quiesce-success
  m=$(jmark backup.service); ws=$(jmark hwc-test-writer-stop.service); L=$(latest)
  systemctl start backup.service
  wait_for 120 unit_ended backup.service "$m"
  if unit_succeeded backup.service "$m"; then pass "the run succeeds"
  else
    fail "the run succeeds" "$(jnew backup.service "$m" | grep -v '^released\|^backup.service: \|^Failed to start' | tail -12 | tr '\n' '|')"
    log "the writers' journal:"; journalctl -b -q --no-pager -o short-precise -u 'hwc-test-writer-*' -u 'hwc-backup-unquiesce-*' | tail -30
  fi
  check "a new snapshot" new_latest "$L"
  L=$(latest)
  check "the stop writer was stopped and started again by the run" \
    bash -c "journalctl -b -q -o cat -u hwc-test-writer-stop.service | tail -n +$((ws + 1)) | grep -q '^Stopped ' && journalctl -b -q -o cat -u hwc-test-writer-stop.service | tail -n +$((ws + 1)) | grep -q '^Started '"
  for w in stop freeze; do
    check "the $w writer is running (and thawed) again after the run" wait_for 10 writer_ok $w
    ms=$(held_ms "$HOSTDIR/$L/.hwc-backup/meta.json" hwc-test-writer-$w.service)
    check "meta.json records how long the $w writer was held (${ms} ms, both held: the first held spans the other's stop and start)" test "$ms" -gt 0
    prom=$(down_metric $w)
    check "metrics: $prom" test -n "$prom"
  done
  # Each mode alone (the runner leaves an inactive unit alone): the down time of one service
  # held for the instant of the btrfs snapshot.
  local other
  for w in stop freeze; do
    other=$([ $w = stop ] && echo freeze || echo stop)
    systemctl stop hwc-test-writer-$other.service
    m=$(jmark backup.service); L=$(latest)
    systemctl start backup.service
    wait_for 120 unit_ended backup.service "$m"
    check "$w alone: the run succeeds" unit_succeeded backup.service "$m"
    L=$(latest)
    ms=$(held_ms "$HOSTDIR/$L/.hwc-backup/meta.json" hwc-test-writer-$w.service)
    if [[ $ms =~ ^[0-9]+$ ]] && [ "$ms" -lt 1000 ]; then pass "$w alone: meta.json: the writer was held ${ms} ms (< 1 s)"
    else fail "$w alone: meta.json: the writer was held < 1 s" "downMs=$ms"; fi
    check "$w alone: meta.json: the inactive $other writer was left alone" test "$(held_ms "$HOSTDIR/$L/.hwc-backup/meta.json" hwc-test-writer-$other.service)" = none
    prom=$(down_metric $w)
    if [ -n "$prom" ] && awk '{ exit !($2 < 1) }' <<<"$prom"; then pass "$w alone: metrics: $prom"
    else fail "$w alone: metrics: the writer's unit_down_seconds < 1" "'$prom'"; fi
    check "$w alone: the writer is running (and thawed) again after the run" wait_for 10 writer_ok $w
    systemctl start hwc-test-writer-$other.service
  done
  check "the snapshot holds the source as read from the btrfs snapshot (original paths)" diff -r $Q/data "$HOSTDIR/$L$Q/data"
  check "the counters in the snapshot are whole numbers (a file written at one instant)" \
    bash -c "grep -qE '^[0-9]+\$' '$HOSTDIR/$L$Q/stop/counter' && grep -qE '^[0-9]+\$' '$HOSTDIR/$L$Q/freeze/counter'"
  check "no btrfs snapshot and no safety timer left" wait_for 10 no_leftovers

  scenario quiesce-failed-run
  # 150 of the 200 files gone: the run fails after the walk (the shrink guard), after the
  # services were held and released.
  mkdir -p /var/tmp/q-away && mv $Q/data/f1?? /var/tmp/q-away/ && mv $Q/data/f[2-9]? /var/tmp/q-away/ 2>/dev/null
  m=$(jmark backup.service); L=$(latest)
  systemctl start backup.service
  wait_for 120 unit_ended backup.service "$m"
  if jnew backup.service "$m" | grep -qE 'Failed with result|Failed to start'; then pass "the run fails"
  else fail "the run fails" "$(jnew backup.service "$m" | tail -5 | tr '\n' '|')"; fi
  check "nothing published" test "$(latest)" = "$L"
  for w in stop freeze; do check "the $w writer is running (and thawed) again after the failed run" wait_for 10 writer_ok $w; done
  check "no btrfs snapshot and no safety timer left" wait_for 10 no_leftovers
  mv /var/tmp/q-away/* $Q/data/
  systemctl reset-failed backup.service 2>/dev/null

  scenario quiesce-kill-9
  # The stop writer's stop now waits for the gate: the runner is killed while it has frozen one
  # writer and is stopping the other. Its ExecStopPost= starts the safety timer's service at once.
  rm -f /run/hwc-test/stopping; touch /run/hwc-test/slow-stop
  m=$(jmark backup.service); L=$(latest)
  systemctl start --no-block backup.service
  local pid=
  if wait_for 90 test -e /run/hwc-test/stopping &&
    [ "$(systemctl is-active hwc-test-writer-stop.service)" = deactivating ]; then pid=$(runner_pid); fi
  if [ -z "$pid" ]; then fail "caught the runner while it holds the writers" "stop writer: $(systemctl is-active hwc-test-writer-stop.service); gate reached: $(ls /run/hwc-test/stopping 2>&1)"
  else
    check "the freeze writer is frozen at that moment" test "$(systemctl show -P FreezerState hwc-test-writer-freeze.service)" = frozen
    kill -9 "$pid"
    pass "caught the runner while it holds the writers and sent SIGKILL (pid $pid)"
  fi
  rm -f /run/hwc-test/slow-stop
  wait_for 60 unit_ended backup.service "$m"
  check "journal: main process killed by SIGKILL" bash -c "journalctl -b -q -o cat -u backup.service | tail -n +$((m + 1)) | grep -q 'status=9/KILL'"
  for w in stop freeze; do check "the $w writer is running (and thawed) again within 30 s of the kill" wait_for 30 writer_ok $w; done
  check "the unit's stop hook released them (journal)" bash -c "journalctl -b -q -o cat -u backup.service | tail -n +$((m + 1)) | grep -q 'released the services this run held still'"
  check "no safety timer left" wait_for 10 bash -c "[ -z \"\$(systemctl list-units --all --plain --no-legend 'hwc-backup-unquiesce-*')\" ]"
  check "nothing published" test "$(latest)" = "$L"
  systemctl reset-failed backup.service 2>/dev/null
  m=$(jmark backup.service)
  systemctl start backup.service
  wait_for 120 unit_ended backup.service "$m"
  check "the next run succeeds" unit_succeeded backup.service "$m"
  check "and leaves no btrfs snapshot and no safety timer (the killed run's snapshot removed)" wait_for 10 no_leftovers
  for w in stop freeze; do check "the $w writer runs after it" wait_for 10 writer_ok $w; done
}

# ---------- a run that finds the host directory locked by another ----------
s_locked() {
  scenario locked-run-is-skipped-not-failed
  # Another writer holds <dest>/<host>/.lock (flock(2), as a concurrent run would): the run
  # exits 4 ("skipped"), which the unit's SuccessExitStatus=4 makes a success, so neither
  # OnFailure= nor a failure notification follows, and nothing is written.
  local m n0 L holder f fm
  f=backup-failure@backup-local.service.service
  m=$(jmark backup-local.service); n0=$(notify_count); L=$(latest); fm=$(jmark $f)
  mountpoint -q "$DEST" || mount "$DEST"
  # -o: the lock is held by flock itself, not by its command, so killing flock releases it.
  flock -o "$HOSTDIR/.lock" sleep 120 & holder=$!
  sleep 1
  systemctl start backup-local.service
  wait_for 120 unit_ended backup-local.service "$m"
  check "the locked run ends as a success of the unit (SuccessExitStatus=4)" unit_succeeded backup-local.service "$m"
  check "journal: the runner says the host directory is locked" bash -c "journalctl -b -q -o cat -u backup-local.service | tail -n +$((m + 1)) | grep -qi 'lock'"
  check "systemctl --failed does not list it" bash -c "! systemctl --failed --plain --no-legend | grep -q backup-local.service"
  sleep 3
  if unit_started $f "$fm"; then fail "OnFailure= did not run" "$(jnew $f "$fm" | head -3 | tr '\n' '|')"
  else pass "OnFailure= did not run"; fi
  check "no failure notification" bash -c "! tail -n +$((n0 + 1)) /run/hwc-test/notify.jsonl 2>/dev/null | grep -q 'failed;'"
  check "nothing published" test "$(latest)" = "$L"
  pkill -P "$holder" sleep 2>/dev/null; kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
  m=$(jmark backup-local.service)
  systemctl start backup-local.service
  wait_for 120 unit_ended backup-local.service "$m"
  check "once the lock is released the next run succeeds" unit_succeeded backup-local.service "$m"
}

# The LVM source snapshot scenario (its own file).
. "$H/guest/s_lvm.sh"

setup_ok=1
setup || setup_ok=0
set +x
if [ $setup_ok = 1 ] && [ "$FAILED" = 0 ]; then
  for s in ${HWC_SCENARIOS:-s_timer_fires s_offsite s_persistent s_only_on_ac s_not_mounted s_kill9 s_health_verify s_pull s_daemon_reload s_switch_schedule s_locked s_lvm s_quiesce}; do
    $s
  done
else
  fail "setup" "setup failed; scenarios not run"
fi
SCEN=summary
log "$PASSED passed, $FAILED failed"
journalctl -b --no-pager -o short-iso-precise >"$H/journal.txt" 2>&1
echo "DONE" >>"$RES"
sync
echo $(( FAILED > 0 ? 1 : 0 )) >"$H/run.rc"
sync
