# The seed's everyday use: the timer is armed, a run through systemd publishes a snapshot,
# backup-restore brings a file back, backup-status and backup-verify work, a second run links
# unchanged files to the first, and the health check passes.
{
  name = "hwc-backup-basic";

  nodes.machine = {
    hwc.system.services.backup.schedule.enable = true;
  };

  testScript = ''
    # Snapshot directory names; metadata may sit beside them under other names.
    SNAPSHOT = "^[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}$"

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("hook-sink.service")
    machine.succeed("mountpoint /mnt/backup")
    machine.succeed(
        "mkdir -p /srv/data/docs",
        "echo hello > /srv/data/docs/hello.txt",
        "ln -s hello.txt /srv/data/docs/link",
        "echo unchanged > /srv/data/docs/keep.txt",
        "echo scratch > /srv/data/docs/scratch.tmp",
    )

    with subtest("the plan is valid and the timer armed"):
        machine.succeed("hwc-backup config check /etc/hwc-backup/config.json")
        machine.succeed("systemctl is-active backup.timer")
        machine.succeed("systemctl is-active backup-health-check.timer")
        machine.succeed("systemctl list-timers backup.timer | grep -q backup.service")

    with subtest("a run through systemd publishes a snapshot"):
        machine.succeed("systemctl start backup.service")
        machine.succeed("test -L /mnt/backup/machine/latest")
        content = machine.succeed("cat /mnt/backup/machine/latest/srv/data/docs/hello.txt")
        assert content == "hello\n", f"snapshot holds {content!r}"
        machine.succeed("test -L /mnt/backup/machine/latest/srv/data/docs/link")
        machine.fail("test -e /mnt/backup/machine/latest/srv/data/docs/scratch.tmp")
        machine.succeed(f"ls /mnt/backup/machine/daily | grep -qE '{SNAPSHOT}'")
        machine.wait_until_succeeds("test -s /var/lib/hook-sink/requests", timeout=60)

    with subtest("backup-restore brings a file back"):
        machine.succeed("echo changed > /srv/data/docs/hello.txt")
        listing = machine.succeed("backup-restore --list")
        assert "daily/" in listing, f"backup-restore --list says {listing!r}"
        machine.succeed("backup-restore latest /srv/data/docs/hello.txt /tmp/restored.txt")
        restored = machine.succeed("cat /tmp/restored.txt")
        assert restored == "hello\n", f"restored {restored!r}"

    with subtest("backup-status and backup-verify"):
        machine.succeed("backup-status")
        machine.succeed("backup-verify")
        machine.succeed("systemctl start backup-verify.service")

    with subtest("a second run links unchanged files"):
        machine.succeed("sleep 1", "systemctl start backup-local.service")
        count = machine.succeed(f"ls /mnt/backup/machine/daily | grep -cE '{SNAPSHOT}'").strip()
        assert count == "2", f"{count} daily snapshots after two runs"
        inodes = machine.succeed(
            "stat -c %i /mnt/backup/machine/daily/*/srv/data/docs/keep.txt | sort -u | wc -l"
        ).strip()
        assert inodes == "1", "the unchanged file was copied instead of linked"
        changed = machine.succeed("cat /mnt/backup/machine/latest/srv/data/docs/hello.txt")
        assert changed == "changed\n", f"latest holds {changed!r}"

    with subtest("the health check passes"):
        machine.succeed("systemctl start backup-health-check.service")

    with subtest("the sandbox leaves the rest of the system read-only"):
        rw = machine.succeed("systemctl show -P ReadWritePaths backup.service")
        assert "/mnt/backup" in rw, f"ReadWritePaths={rw!r}"
        machine.succeed("systemctl show -P ProtectSystem backup.service | grep -qx strict")
  '';
}
