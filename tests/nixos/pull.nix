# Pulling another machine over ssh (hosts.<name> on the server, agent.* on the client): the
# timer is armed; backup-host-client.service publishes a snapshot of the client under
# /mnt/backup/client/; a second pull links the unchanged files to the first; a pull waits while
# another holds its slot (hostConcurrency); the client's authorized_keys entry only ever starts
# the agent, without a pty, for the allowed paths only.
let
  # A key pair made for this test alone with `ssh-keygen -t ed25519 -N ''` (public, like
  # nixpkgs' snakeoil keys: never trust it anywhere).
  privateKey = ''
    -----BEGIN OPENSSH PRIVATE KEY-----
    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
    QyNTUxOQAAACC9LMUxooXEeAzXcgEgx5mjFmJaR3tDPVR+Qeqj9psULwAAAJg34k3iN+JN
    4gAAAAtzc2gtZWQyNTUxOQAAACC9LMUxooXEeAzXcgEgx5mjFmJaR3tDPVR+Qeqj9psULw
    AAAEBQAqiSM2D05W43zLPFfoxdl0LFTvVgYvvV83LRCcbXA70sxTGihcR4DNdyASDHmaMW
    YlpHe0M9VH5B6qP2mxQvAAAAEmh3Yy1iYWNrdXAtdm0tdGVzdAECAw==
    -----END OPENSSH PRIVATE KEY-----
  '';
  publicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL0sxTGihcR4DNdyASDHmaMWYlpHe0M9VH5B6qP2mxQv hwc-backup-vm-test";
in
{
  name = "hwc-backup-pull";

  nodes.server = {
    # Copied (not linked into the store) with this mode, as ssh wants for a private key.
    environment.etc."pull-test/id_ed25519" = {
      text = privateKey;
      mode = "0600";
    };
    systemd.tmpfiles.rules = [ "d /var/lib/pull-test 0700 root root - -" ];

    hwc.system.services.backup = {
      schedule.enable = true;
      hosts.client = {
        sshKeyFile = "/etc/pull-test/id_ed25519";
        # Filled by the test script with ssh-keyscan once the client is up.
        sshOptions = [
          "UserKnownHostsFile=/var/lib/pull-test/known_hosts"
          "StrictHostKeyChecking=yes"
        ];
        sources = [ "/srv/data" ];
        excludePatterns = [ "*.tmp" ];
        # Every pull of the test stays (the local rules alone would thin same-day snapshots).
        keepLast = 10;
      };
    };
  };

  nodes.client = {
    services.openssh.enable = true;
    hwc.system.services.backup.agent = {
      enable = true;
      authorizedKeys = [ publicKey ];
      allowedPaths = [ "/srv/data" ];
    };
  };

  testScript = ''
    import shlex

    SLOT = "/var/lib/hwc-backup/pull-slot@0.lock"
    SSH = (
        "ssh -i /etc/pull-test/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes"
        " -o UserKnownHostsFile=/var/lib/pull-test/known_hosts -o StrictHostKeyChecking=yes"
        " -l root client"
    )
    # Every copy of a file in the client's snapshots (tier/snapshot/path).
    COPIES = "/mnt/backup/client/*/*/srv/data/docs/keep.txt"

    def pull():
        server.succeed("systemctl start backup-host-client.service")

    start_all()
    client.wait_for_unit("sshd.service")
    client.wait_for_open_port(22)
    server.wait_for_unit("multi-user.target")
    server.succeed("mountpoint /mnt/backup")
    server.wait_until_succeeds(
        "ssh-keyscan -t ed25519 client > /var/lib/pull-test/known_hosts.new"
        " && test -s /var/lib/pull-test/known_hosts.new"
        " && mv /var/lib/pull-test/known_hosts.new /var/lib/pull-test/known_hosts",
        timeout=120,
    )
    client.succeed(
        "mkdir -p /srv/data/docs",
        "echo hello > /srv/data/docs/hello.txt",
        "echo unchanged > /srv/data/docs/keep.txt",
        "echo scratch > /srv/data/docs/scratch.tmp",
    )

    with subtest("the plan names the host and its timer is armed"):
        server.succeed("hwc-backup config check /etc/hwc-backup/config.json")
        server.succeed("systemctl is-active backup-host-client.timer")
        server.succeed("systemctl list-timers backup-host-client.timer | grep -q backup-host-client.service")

    with subtest("the client's key can only start the agent"):
        keys = client.succeed("cat /etc/ssh/authorized_keys.d/root")
        assert "hwc-backup agent --allow /srv/data" in keys and ",restrict ssh-ed25519 " in keys, keys

    with subtest("a pull publishes a snapshot of the client"):
        pull()
        server.succeed("test -L /mnt/backup/client/latest")
        content = server.succeed("cat /mnt/backup/client/latest/srv/data/docs/hello.txt")
        assert content == "hello\n", f"snapshot holds {content!r}"
        server.fail("test -e /mnt/backup/client/latest/srv/data/docs/scratch.tmp")
        # The server's own snapshots stay in their own directory.
        server.fail("test -e /mnt/backup/server/latest/srv/data/docs/hello.txt")

    with subtest("a second pull links unchanged files"):
        client.succeed("echo changed > /srv/data/docs/hello.txt")
        server.succeed("sleep 1")
        pull()
        copies = server.succeed(f"ls {COPIES} | wc -l").strip()
        assert copies == "2", f"{copies} snapshots hold keep.txt after two pulls"
        inodes = server.succeed(f"stat -c %i {COPIES} | sort -u | wc -l").strip()
        assert inodes == "1", "the unchanged file was copied instead of linked"
        changed = server.succeed("cat /mnt/backup/client/latest/srv/data/docs/hello.txt")
        assert changed == "changed\n", f"latest holds {changed!r}"

    with subtest("a pull waits while its slot is taken"):
        server.succeed(
            f"flock --no-fork {shlex.quote(SLOT)} sleep 600 >/dev/null 2>&1 & echo $! > /run/hold-slot.pid"
        )
        server.wait_until_fails(f"flock -n {shlex.quote(SLOT)} true", timeout=30)
        server.succeed("sleep 1", "systemctl start --no-block backup-host-client.service")
        server.sleep(10)
        state = server.succeed("systemctl show -P ActiveState backup-host-client.service").strip()
        assert state == "activating", f"the pull is {state} while its slot is held"
        copies = server.succeed(f"ls {COPIES} | wc -l").strip()
        assert copies == "2", f"a pull ran while its slot was held ({copies} snapshots)"
        server.succeed("kill $(cat /run/hold-slot.pid)")
        server.wait_until_succeeds(
            "systemctl show -P ActiveState backup-host-client.service | grep -qx inactive", timeout=120
        )
        server.succeed("systemctl show -P Result backup-host-client.service | grep -qx success")
        copies = server.succeed(f"ls {COPIES} | wc -l").strip()
        assert copies == "3", f"{copies} snapshots after the pull got its slot"

    with subtest("the restricted key runs no shell command and gets no pty"):
        status, out = server.execute(f"{SSH} 'touch /tmp/shell-ran; echo SHELL-RAN' </dev/null 2>&1")
        assert "SHELL-RAN" not in out, f"the key ran a shell command: {out!r}"
        client.fail("test -e /tmp/shell-ran")
        status, out = server.execute(f"timeout 60 {SSH} -tt true </dev/null 2>&1")
        assert "PTY allocation request failed" in out, f"a pty was allocated: {out!r}"

    with subtest("the agent serves the allowed paths only"):
        status, out = server.execute(
            "hwc-backup pull --host probe --address client --user root"
            " --ssh-key /etc/pull-test/id_ed25519"
            " --ssh-option UserKnownHostsFile=/var/lib/pull-test/known_hosts"
            " --source /etc --dest /tmp/probe 2>&1"
        )
        assert status != 0, f"the agent served /etc: {out}"
        assert "not allowed" in out, out
        server.fail("test -e /tmp/probe/probe/latest")
  '';
}
