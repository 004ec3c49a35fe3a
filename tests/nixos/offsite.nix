# Offsite copies to restic repositories (issue 13), local runs started by mounting the
# destination, and sleep inhibition:
# - `now` (offsite `direct`, no schedule) copies the snapshot it took; restic alone restores it
#   to the original absolute paths, and so does `hwc-backup restore --offsite`;
# - offsite `nas` has its own timer and check timer; its units copy and check;
# - the runs hold a systemd-inhibit "sleep" lock (seen by the pre-backup hook);
# - local.runOnMount: remounting the destination starts backup-on-mount.service, which skips the
#   run while the newest snapshot is younger than runOnMountMinInterval and runs once it is older.
{
  name = "hwc-backup-offsite";

  nodes.machine =
    { pkgs, ... }:
    {
      environment.systemPackages = [
        pkgs.restic
        pkgs.jq
      ];
      # Local-path repositories must exist before the units start (README); restic init fills them.
      systemd.tmpfiles.rules = [
        "d /srv/offsite 0700 root root - -"
        "d /srv/offsite/direct 0700 root root - -"
        "d /srv/offsite/nas 0700 root root - -"
        "d /var/lib/offsite-secret 0700 root root - -"
        "d /var/lib/probe 0700 root root - -"
      ];
      hwc.system.services.backup = {
        # No backup.timer: the clock jump below must not start a run of its own.
        local = {
          runOnMount = true;
          runOnMountMinInterval = "1h";
        };
        inhibitSleep = true;
        readWritePaths = [ "/var/lib/probe" ];
        preBackupScript = ''
          systemd-inhibit --list --no-legend > /var/lib/probe/inhibitors
        '';
        offsite = {
          direct = {
            repository = "/srv/offsite/direct";
            passwordFile = "/var/lib/offsite-secret/password";
            keepDaily = 3;
          };
          nas = {
            repository = "/srv/offsite/nas";
            passwordFile = "/var/lib/offsite-secret/password";
            schedule = "Sun 03:00";
            check = {
              schedule = "monthly";
              readDataSubset = "100%";
            };
          };
        };
      };
    };

  testScript = ''
    SNAPSHOTS = "ls /mnt/backup/machine/daily | grep -cE '^[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}$'"
    RESTIC = "restic --password-file /var/lib/offsite-secret/password --no-cache -r"

    def restic_snapshots(repository):
        return int(machine.succeed(f"{RESTIC} {repository} snapshots --json | jq length").strip())

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("hook-sink.service")
    machine.succeed(
        "mkdir -p /srv/data/docs",
        "echo hello > /srv/data/docs/hello.txt",
        "echo unchanged > /srv/data/docs/keep.txt",
        "(umask 077; echo correct-horse-battery > /var/lib/offsite-secret/password)",
    )

    with subtest("the offsite units and timers exist as configured"):
        machine.succeed("hwc-backup config check /etc/hwc-backup/config.json")
        machine.succeed("systemctl is-active backup-offsite-nas.timer")
        machine.succeed("systemctl is-active backup-offsite-check-nas.timer")
        machine.fail("systemctl cat backup-offsite-direct.service")
        machine.succeed("systemctl show -P ReadWritePaths backup.service | grep -q /srv/offsite/direct")

    with subtest("now copies to the offsite without a schedule, awake"):
        machine.succeed("systemctl start backup.service")
        machine.succeed("grep -q hwc-backup /var/lib/probe/inhibitors")
        machine.succeed("grep -q sleep /var/lib/probe/inhibitors")
        assert restic_snapshots("/srv/offsite/direct") == 1
        machine.fail("test -e /srv/offsite/nas/config")

    with subtest("restic alone restores to the original paths"):
        machine.succeed(f"{RESTIC} /srv/offsite/direct restore latest --target /tmp/restic-restore")
        restored = machine.succeed("cat /tmp/restic-restore/srv/data/docs/hello.txt")
        assert restored == "hello\n", f"restic restored {restored!r}"

    with subtest("hwc-backup restore --offsite"):
        machine.succeed("hwc-backup restore --offsite direct latest /srv/data/docs/hello.txt /tmp/offsite-hello.txt")
        restored = machine.succeed("cat /tmp/offsite-hello.txt")
        assert restored == "hello\n", f"restore --offsite gave {restored!r}"

    with subtest("the scheduled offsite's own units copy and check"):
        machine.succeed("systemctl start backup-offsite-nas.service")
        assert restic_snapshots("/srv/offsite/nas") == 1
        machine.succeed("systemctl start backup-offsite-check-nas.service")
        machine.succeed("journalctl -b -u backup-offsite-check-nas.service -o cat | grep -q '^Finished '")

    with subtest("mounting the destination starts a backup, at most once per interval"):
        before = int(machine.succeed(SNAPSHOTS).strip())
        machine.succeed("umount /mnt/backup", "mount /mnt/backup")
        machine.wait_until_succeeds(
            "systemctl show -P ActiveState backup-on-mount.service | grep -qx inactive"
            " && journalctl -b -u backup-on-mount.service -o cat | grep -q '^Finished '",
            timeout=120,
        )
        assert int(machine.succeed(SNAPSHOTS).strip()) == before, "a remount within the interval took a snapshot"
        # Two hours later the next mount backs up.
        machine.succeed("date -s '+2 hours'", "umount /mnt/backup", "mount /mnt/backup")
        machine.wait_until_succeeds(f"test $({SNAPSHOTS}) -eq {before + 1}", timeout=180)
        machine.wait_until_succeeds(
            "systemctl show -P ActiveState backup-on-mount.service | grep -qx inactive", timeout=180
        )
        machine.succeed("systemctl show -P Result backup-on-mount.service | grep -qx success")
        assert restic_snapshots("/srv/offsite/direct") == 2
  '';
}
