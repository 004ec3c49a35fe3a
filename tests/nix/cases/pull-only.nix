# A machine that only pulls another one: no local snapshots of its own, one host, scheduled,
# with the pulled host's scheduled health check and verification.
{
  networking.hostName = "vault";
  hwc.system.services.backup = {
    enable = true;
    local.mountPoint = "/mnt/vault";
    schedule = {
      enable = true;
      frequency = "weekly";
      randomDelay = "0";
    };
    verify.enable = true;
    hosts.router.sources = [ "/etc" ];
  };
}
