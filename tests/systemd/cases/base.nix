# The configuration the VM test runs: a laptop-style setup (README "Laptop with External Drive")
# with every timer on, no random delay (so the timer fires at its OnCalendar), notifications to a
# listener inside the VM, and a pre-backup hook that probes what the sandbox lets it write.
# It also pulls two "other machines" over ssh (hosts.client1/client2), which are in fact the VM
# itself on 127.0.0.1 (agent.*, the client half, is enabled on the same machine); `pullKey` is
# the public half of a key pair the test generates for each run (tests/systemd/run).
{ pullKey }:
{
  networking.hostName = "hwc-vm";
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      sources = [ "/home" "/root" "/etc/hwc-test" ];
      excludePatterns = [ ".cache" "*.tmp" ];
      minSpaceGB = 0;
      keepDaily = 7;
      keepWeekly = 4;
      keepMonthly = 6;
    };
    schedule = {
      enable = true;
      frequency = "daily";
      timeOfDay = "02:00";
      randomDelay = "0";
      onlyOnAC = true;
    };
    notifications = {
      enable = true;
      onFailure = true;
      webhook.url = "http://127.0.0.1:8765/hook";
    };
    preBackupScript = ''
      /opt/hwc-test/probe-writes /mnt/backup /var/lib/hwc-backup /var/log/backup
      echo "environment file: ''${HWC_TEST_ENV_MARK:-unset}"
    '';
    # Read by systemd into every unit (the secrets of the programs the runner starts): the
    # hook above shows that its variable arrives (scenario hardening-write).
    environmentFile = "/etc/hwc-backup-test.env";
    # The Debian guest (tests/systemd/build-image.sh, minbase) sets up no logind (its D-Bus is
    # there for `systemctl freeze`), so systemd-inhibit is left out here; NixOS always has both.
    # The wrapper's shape is checked by tests/integration/nix.rs (systemd-analyze verify included).
    inhibitSleep = false;
    # An offsite restic repository on the VM's own disk (the offsite scenario). Its copy and check
    # units have yearly timers, so the other scenarios' clock jumps never start them; the offsite
    # scenario starts them by hand. A long maxAge keeps the later health checks green whatever the
    # clock says after the jumps.
    offsite.vmrepo = {
      repository = "/var/lib/hwc-restic";
      passwordFile = "/etc/hwc-restic-password";
      schedule = "yearly";
      check.schedule = "yearly";
      maxAge = "365d";
    };
    health.schedule = "weekly";
    verify.enable = true;
    verify.schedule = "monthly";
    # The server half: two hosts, one pull at a time (both on the one slot lock). Their timers
    # exist (schedule.enable) but are yearly, so that the clock jumps of the other scenarios
    # (which cross 02:00 several times) never start a pull; the pull scenario starts the units.
    hosts = {
      client1 = {
        address = "127.0.0.1";
        user = "root";
        sshKeyFile = "/root/.ssh/hwc_pull";
        sshOptions = [
          "UserKnownHostsFile=/etc/hwc-pull/known_hosts"
          "StrictHostKeyChecking=yes"
        ];
        sources = [ "/srv/client1" ];
        schedule = "yearly";
      };
      client2 = {
        address = "127.0.0.1";
        sshKeyFile = "/root/.ssh/hwc_pull";
        sshOptions = [
          "UserKnownHostsFile=/etc/hwc-pull/known_hosts"
          "StrictHostKeyChecking=yes"
        ];
        sources = [ "/srv/client2" ];
        schedule = "yearly";
      };
    };
    hostConcurrency = 1;
    # The client half: root's authorized_keys entry that can only start the agent.
    agent = {
      enable = true;
      authorizedKeys = [ pullKey ];
      allowedPaths = [ "/srv/client1" "/srv/client2" ];
    };
  };
}
