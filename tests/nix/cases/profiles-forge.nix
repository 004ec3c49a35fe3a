# A code forge: Gitea on SQLite (copied consistently), Forgejo on PostgreSQL (only its
# database dumped, as no PostgreSQL profile asks for the whole cluster), and an app's SQLite
# file listed by hand; sources read live, so nothing is quiesced.
{
  networking.hostName = "forge";
  services.gitea = {
    stateDir = "/srv/gitea";
    database.type = "sqlite3";
  };
  services.forgejo = {
    stateDir = "/var/lib/forgejo";
    database.type = "postgres";
    database.name = "forgejo";
  };
  hwc.system.services.backup = {
    databases.postgresql.binDir = "/opt/postgresql-17/bin";
    enable = true;
    local = {
      enable = true;
      sources = [ "/etc/nixos" ];
      sourceSnapshots = "none";
    };
    databases.sqlite = [ "/var/lib/app/state.db" ];
    profiles = {
      gitea.enable = true;
      forgejo.enable = true;
    };
  };
}
