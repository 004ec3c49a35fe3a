# Failures must be reported. `unplugged` backs up to /mnt/usb, a plain directory with no disk
# mounted on it: the run refuses to write, publishes nothing, and backup-failure@ notifies.
# `killed` has its runner killed with SIGKILL in the middle of a run (a pre-backup hook that
# waits): the runner can report nothing itself, yet OnFailure= still notifies.
{
  name = "hwc-backup-unmounted";

  nodes.unplugged = {
    systemd.tmpfiles.rules = [ "d /mnt/usb 0755 root root - -" ];
    hwc.system.services.backup.local.mountPoint = "/mnt/usb";
  };

  nodes.killed = {
    hwc.system.services.backup.preBackupScript = ''
      while [ -e /run/slow-backup ]; do sleep 1; done
    '';
  };

  testScript = ''
    start_all()

    def requests(machine):
        return int(machine.succeed("cat /var/lib/hook-sink/requests 2>/dev/null | wc -l").strip())

    with subtest("a destination that is not mounted is refused and reported"):
        unplugged.wait_for_unit("multi-user.target")
        unplugged.wait_for_unit("hook-sink.service")
        unplugged.fail("mountpoint /mnt/usb")
        unplugged.fail("systemctl start backup.service")
        result = unplugged.succeed("systemctl show -P Result backup.service").strip()
        assert result == "exit-code", f"backup.service ended with {result}"
        unplugged.succeed("journalctl -b -u backup.service | grep -qi 'mount'")
        unplugged.fail("test -e /mnt/usb/unplugged")
        unplugged.wait_until_succeeds("test -s /var/lib/hook-sink/requests", timeout=120)
        unplugged.succeed("journalctl -b -u 'backup-failure@backup.service.service' | grep -q .")

    with subtest("a runner killed with SIGKILL is still reported"):
        killed.wait_for_unit("multi-user.target")
        killed.wait_for_unit("hook-sink.service")
        before = requests(killed)
        killed.succeed("touch /run/slow-backup", "systemctl start --no-block backup.service")
        killed.wait_until_succeeds(
            "systemctl show -P ActiveState backup.service | grep -qx activating", timeout=60
        )
        killed.succeed("sleep 2", "systemctl kill --signal=SIGKILL backup.service")
        killed.wait_until_succeeds(
            "systemctl show -P Result backup.service | grep -qx signal", timeout=60
        )
        killed.wait_until_succeeds(f"test $(wc -l < /var/lib/hook-sink/requests) -gt {before}", timeout=120)
        killed.fail("test -e /mnt/backup/killed/latest")

    with subtest("the next run after a kill succeeds"):
        killed.succeed("rm /run/slow-backup", "systemctl start backup.service")
        killed.succeed("test -L /mnt/backup/killed/latest")
  '';
}
