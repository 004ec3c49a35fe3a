# A home server using the service profiles: Nextcloud on PostgreSQL with maintenance mode
# around the snapshot, Vaultwarden and Home Assistant on SQLite, and the PostgreSQL profile
# dumping the whole cluster. The services' own options (set here as NixOS would have them)
# are what the profiles read.
{
  networking.hostName = "homeserver";
  services.nextcloud = {
    home = "/var/lib/nextcloud";
    datadir = "/srv/nextcloud";
    config.dbtype = "pgsql";
    config.dbname = "nextcloud";
  };
  services.vaultwarden = {
    dbBackend = "sqlite";
    config.DATA_FOLDER = "/var/lib/vaultwarden";
  };
  services.home-assistant.configDir = "/var/lib/hass";
  services.postgresql.dataDir = "/var/lib/postgresql/17";
  hwc.system.services.backup = {
    databases.postgresql.binDir = "/opt/postgresql-17/bin";
    enable = true;
    local = {
      enable = true;
      sources = [ "/home" ];
      sourceSnapshots = "btrfs";
    };
    profiles = {
      postgresql.enable = true;
      nextcloud = {
        enable = true;
        occ = "/nix/store/00000000000000000000000000000000-nextcloud-occ";
        credentials = [ "dbpass:/run/agenix/nextcloud-db" ];
      };
      vaultwarden.enable = true;
      home-assistant.enable = true;
    };
  };
}
