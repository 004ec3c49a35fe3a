# Pulled hosts the module must refuse: one named like this machine, a name that is no
# directory name, no sources, relative and overlapping sources, and an override that, with the
# local rules, keeps nothing.
{
  networking.hostName = "nas";
  hwc.system.services.backup = {
    enable = true;
    local = {
      keepDaily = 0;
      keepWeekly = 4;
      keepMonthly = 0;
    };
    hosts = {
      nas.sources = [ "/etc" ];
      # (Without an address, its default, the name, would already fail the address's type.)
      "web 1" = {
        address = "web1.lan";
        sources = [ "/etc" ];
      };
      empty.sources = [ ];
      messy.sources = [
        "etc"
        "/var/lib/"
        "/home"
        "/home/alice"
      ];
      forgetful = {
        sources = [ "/srv" ];
        keepWeekly = 0;
      };
    };
  };
}
