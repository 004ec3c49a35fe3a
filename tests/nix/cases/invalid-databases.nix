# Database dumps that cannot work: the staging directory inside the destination and around a
# source, and a database listed twice.
{
  hwc.system.services.backup = {
    enable = true;
    local = {
      enable = true;
      mountPoint = "/mnt/backup";
      sources = [
        "/home"
        "/mnt/backup/dumps/extra"
      ];
    };
    databases = {
      stagingDir = "/mnt/backup/dumps";
      postgresql = {
        enable = true;
        databases = [
          "app"
          "app"
        ];
        binDir = "/opt/postgresql/bin";
      };
    };
  };
}
