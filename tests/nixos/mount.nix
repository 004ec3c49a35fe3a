# The destination as a declared file system (tests/systemd: not-mounted-automount,
# not-mounted-device-missing). `ondemand` has its disk declared in fileSystems (common.nix) but
# unmounted: RequiresMountsFor= mounts it and the run succeeds. `absent` declares a disk that is
# not there (nofail, so the machine still boots): the mount job fails, backup.service never starts
# (journal: Dependency failed), OnFailure= still runs backup-failure@backup.service.service and a
# failure notification reaches the sink, and nothing is written under the mount point on the
# root file system (seen through a bind mount of /).
{
  name = "hwc-backup-mount";

  nodes.ondemand = { };

  nodes.absent =
    { lib, ... }:
    {
      virtualisation.fileSystems."/mnt/backup" = lib.mkForce {
        device = "/dev/disk/by-label/hwc-absent";
        fsType = "ext4";
        autoFormat = false;
        options = [
          "nofail"
          "x-systemd.device-timeout=5s"
        ];
      };
    };

  testScript = ''
    start_all()

    def requests(machine):
        return int(machine.succeed("cat /var/lib/hook-sink/requests 2>/dev/null | wc -l").strip())

    with subtest("RequiresMountsFor= mounts the declared destination before the run"):
        ondemand.wait_for_unit("multi-user.target")
        ondemand.wait_for_unit("hook-sink.service")
        ondemand.succeed("findmnt --fstab /mnt/backup")
        ondemand.succeed("systemctl show -P RequiresMountsFor backup.service | grep -q /mnt/backup")
        ondemand.succeed("mkdir -p /srv/data/docs", "echo hello > /srv/data/docs/hello.txt")
        ondemand.succeed("umount /mnt/backup")
        ondemand.fail("mountpoint /mnt/backup")
        ondemand.succeed("systemctl start backup.service")
        ondemand.succeed("mountpoint /mnt/backup")
        ondemand.succeed("journalctl -b -u backup.service -o cat | grep -q '^Finished '")
        ondemand.succeed("test -f /mnt/backup/ondemand/latest/srv/data/docs/hello.txt")

    with subtest("a declared disk that is absent: no run, and the failure is reported"):
        absent.wait_for_unit("multi-user.target")
        absent.wait_for_unit("hook-sink.service")
        absent.succeed("findmnt --fstab /mnt/backup")
        absent.fail("mountpoint /mnt/backup")
        absent.succeed("mkdir -p /srv/data/docs", "echo hello > /srv/data/docs/hello.txt")
        # The mount already failed at boot; start from a clean slate.
        absent.succeed("systemctl reset-failed")
        before = requests(absent)
        absent.fail("systemctl start backup.service")
        journal = absent.succeed("journalctl -b -u backup.service -o cat")
        assert "Dependency failed for" in journal, f"backup.service journal: {journal!r}"
        assert not any(line.startswith("Starting ") for line in journal.splitlines()), (
            f"backup.service started: {journal!r}"
        )
        absent.fail("mountpoint /mnt/backup")
        absent.wait_until_succeeds(
            "journalctl -b -u 'backup-failure@backup.service.service' -o cat"
            " | grep -qE '^Finished |^Failed to start |Failed with result'",
            timeout=120,
        )
        absent.wait_until_succeeds(
            f"tail -n +{before + 1} /var/lib/hook-sink/requests | grep -qi fail", timeout=120
        )
        absent.succeed("mkdir -p /tmp/rootview", "mount --bind / /tmp/rootview")
        leftovers = absent.succeed("find /tmp/rootview/mnt/backup -mindepth 1 2>/dev/null | head || true")
        assert leftovers.strip() == "", f"written on the root file system: {leftovers!r}"
  '';
}
