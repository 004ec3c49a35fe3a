# ZFS source snapshots (local.sourceSnapshots = "zfs") on a real pool, under the module's real
# backup.service. A file-backed pool `tank` with the dataset tank/data (mounted at /tank/data)
# is the only source; a writer keeps two files in lockstep during the runs. Checked: every
# stored pair existed at one instant, meta.json names the dataset and the kind, the manifest
# has the original paths; no ZFS snapshot of ours is left after a run; after a kill -9 the next
# run destroys the leftover, and snapshots that only look like ours (our name without our
# property, our property on another name) are never touched.
#
# Not run in this project's CI machines (no Nix store, no KVM, no ZFS there): for users'
# `nix flake check` / `nix build .#checks.x86_64-linux.vm-zfs -L`.
{
  name = "hwc-backup-zfs";

  nodes.machine =
    { lib, pkgs, ... }:
    {
      boot.supportedFilesystems = [ "zfs" ];
      # ZFS wants a host id.
      networking.hostId = "8425e349";
      virtualisation.memorySize = 2048;
      environment.systemPackages = [ pkgs.python3 ];
      hwc.system.services.backup.local = {
        sources = lib.mkForce [ "/tank/data" ];
        sourceSnapshots = "zfs";
      };
    };

  testScript = ''
    import json

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("hook-sink.service")
    machine.succeed(
        "truncate -s 512M /var/tmp/tank.img",
        "zpool create -m none tank /var/tmp/tank.img",
        "zfs create -o mountpoint=/tank/data tank/data",
        "mkdir -p /tank/data/a /tank/data/z",
        "echo 0 > /tank/data/a/a.txt",
        "echo 0 > /tank/data/z/b.txt",
        "for d in $(seq 0 39); do mkdir -p /tank/data/m/$d; done",
        "for i in $(seq 0 19999); do echo filler $i > /tank/data/m/$((i % 40))/f$i; done",
    )
    machine.succeed(
        "systemd-run --unit=lockstep /run/current-system/sw/bin/bash -c '"
        "n=0; while :; do n=$((n+1)); "
        "echo $n > /tank/data/a/a.new && mv /tank/data/a/a.new /tank/data/a/a.txt; "
        "echo $n > /tank/data/z/b.new && mv /tank/data/z/b.new /tank/data/z/b.txt; done'"
    )

    def ours():
        out = machine.succeed(
            "zfs list -H -t snapshot -o name,hwc-backup:source-snapshot -d 1 tank/data"
        )
        return [l.split("\t")[0] for l in out.splitlines() if "@hwc-backup-" in l]

    def run_backup():
        machine.succeed("systemctl start backup.service")
        latest = machine.succeed("readlink -f /mnt/backup/machine/latest").strip()
        a = machine.succeed(f"cat {latest}/tank/data/a/a.txt").strip()
        b = machine.succeed(f"cat {latest}/tank/data/z/b.txt").strip()
        assert a == b or int(a) == int(b) + 1, f"a={a} b={b}: never together, a blend of two moments"
        return latest

    with subtest("each run reads the dataset from one ZFS snapshot, at one instant"):
        for _ in range(3):
            latest = run_backup()
            meta = json.loads(machine.succeed(f"cat {latest}/.hwc-backup/meta.json"))
            read = meta["sourceReads"][0]
            assert read["kind"] == "zfs", read
            assert read["volume"] == "tank/data", read
            assert read["subvolume"] == "/tank/data", read
            manifest = machine.succeed(f"cat {latest}/.hwc-backup/manifest.b3")
            assert " tank/data/a/a.txt\n" in manifest, manifest[:2000]
            assert ".zfs" not in manifest and "hwc-backup-" not in manifest
            assert ours() == [], ours()

    with subtest("a killed run's snapshot is destroyed by the next run, look-alikes are not"):
        machine.succeed(
            "zfs snapshot tank/data@hwc-backup-999999-1-0",
            "zfs snapshot -o hwc-backup:source-snapshot=yes tank/data@keep-me",
        )
        machine.succeed("systemctl start --no-block backup.service")
        machine.wait_until_succeeds(
            "zfs list -H -t snapshot -o name,hwc-backup:source-snapshot -d 1 tank/data"
            " | grep -E '@hwc-backup-[0-9]+-[0-9]+-[0-9]+\tyes'",
            timeout=120,
        )
        machine.succeed("systemctl kill -s KILL backup.service")
        machine.wait_until_fails("systemctl is-active backup.service", timeout=60)
        left = [s for s in ours() if s != "tank/data@hwc-backup-999999-1-0"]
        assert len(left) == 1, f"the killed run's snapshot: {left}"
        machine.succeed("systemctl reset-failed backup.service")
        run_backup()
        names = machine.succeed("zfs list -H -t snapshot -o name -d 1 tank/data").split()
        assert left[0] not in names, names
        assert "tank/data@hwc-backup-999999-1-0" in names, names
        assert "tank/data@keep-me" in names, names
        machine.succeed(
            "journalctl -b -u backup.service -o cat | grep -q 'left by an interrupted run'"
        )

    machine.succeed("systemctl stop lockstep")
  '';
}
