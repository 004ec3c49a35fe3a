# The plan (docs/plan.md, version 1) and its pulled hosts' part.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
  # ----------------------------------------------------------------------------------------------
  # Plan (docs/plan.md, version 1): every key rendered explicitly
  # ----------------------------------------------------------------------------------------------

  hooks = {
    preBackup =
      if cfg.preBackupScript == "" then null else writeHook "hwc-backup-pre-backup" cfg.preBackupScript;
    postBackup =
      if cfg.postBackupScript == "" then null else writeHook "hwc-backup-post-backup" cfg.postBackupScript;
  };

  # "proton-drive" is the remote that protonDrive's rclone config defines (`proton:`);
  # any other provider names a remote of the rclone config file.
  remoteName = if cfg.cloud.provider == "proton-drive" then "proton" else cfg.cloud.provider;
  rcloneConfigFile =
    if cfg.cloud.rcloneConfigFile != null then
      toString cfg.cloud.rcloneConfigFile
    else if cfg.protonDrive.enable then
      secretPath cfg.protonDrive.secretName
    else
      null;

  target = t: if notif.enable then t else null;
  ntfy = notif.ntfy;
  # The HTTP targets, each given by an inline URL or a file read at run time (urlFile).
  httpTargets = [
    ntfy
    notif.webhook
    notif.healthchecks
  ];
  hasUrl = t: t.url != null || t.urlFile != null;
  networkTargets = notif.enable && any hasUrl httpTargets;
  # A target of the plan: { url, urlFile }, or null when neither is set.
  urlTarget =
    t:
    if hasUrl t then
      {
        inherit (t) url;
        urlFile = pathOrNull t.urlFile;
      }
    else
      null;

  # Database dumps go to the staging directory, which the snapshot must hold (the runner
  # refuses a plan where no source contains it): when no source does, it becomes a source of
  # its own, after the user's.
  # With the service profiles' (nix/render/profiles.nix) databases, directories and excludes.
  dumps = pgWanted.enable || mysqlWanted.enable || sqlitePaths != [ ];
  stagingDir = toString db.stagingDir;
  ownSources = map toString local.sources ++ profileSources;
  stagingInSources = any (s: isWithin stagingDir s) ownSources;
  sources = ownSources ++ optional (dumps && !stagingInSources) stagingDir;

  plan = {
    version = 1;
    host = cfg.hostName;
    destination = {
      path = toString local.mountPoint;
      inherit (local) requireMountPoint;
      # GiB, as in the plan's example (10 -> 10737418240).
      minFreeBytes = local.minSpaceGB * 1073741824;
    } // optionalAttrs (local.makeRoom or false) {
      makeRoom = true;
    } // optionalAttrs ((local.store or "auto") != "auto") {
      inherit (local) store;
    };
    inherit sources;
    excludePatterns = unique (local.excludePatterns ++ profileExcludes);
    inherit (local) oneFileSystem sourceSnapshots;
    inherit (local) excludeCaches excludeIfPresent excludeLargerThan;
    btrfs = if takesSourceSnapshots && btrfsProgs != null then "${btrfsProgs}/bin/btrfs" else null;
  } // optionalAttrs (takesLvmSnapshots && lvm != null) {
    inherit lvm;
  } // optionalAttrs (takesZfsSnapshots && zfs != null) {
    inherit zfs;
  } // optionalAttrs (takesLvmSnapshots && (local.lvmSnapshotSize or null) != null) {
    inherit (local) lvmSnapshotSize;
  } // {
    quiesce = map (name: {
      unit = if match ".*\\..*" name != null then name else "${name}.service";
      inherit (quiesceUnits.${name}) mode;
    }) (attrNames quiesceUnits);
    retention = retentionOf local;
    inherit hooks;
    cloud = {
      inherit (cfg.cloud) enable syncMode;
      remote = if cfg.cloud.enable then "${remoteName}:${cfg.cloud.remotePath}" else null;
      bandwidthLimit =
        if cfg.cloud.enable && cfg.cloud.bandwidthLimit != "" then cfg.cloud.bandwidthLimit else null;
      rcloneConfigFile = if cfg.cloud.enable then rcloneConfigFile else null;
      rclone = if cfg.cloud.enable && rclone != null then toString rclone else null;
      inherit (cfg.cloud) keepHistory maxAge;
    };
    notifications = {
      onSuccess = notif.enable && notif.onSuccess;
      onFailure = notif.enable && notif.onFailure;
      ntfy = target (
        if hasUrl ntfy then urlTarget ntfy // { tokenFile = pathOrNull ntfy.tokenFile; } else null
      );
      webhook = target (urlTarget notif.webhook);
      healthchecks = target (urlTarget notif.healthchecks);
      email = target (if notif.email.to == null then null else { inherit (notif.email) to; });
    };
    health = {
      maxAge = if cfg.health.maxAge != null then cfg.health.maxAge else defaultMaxAge;
      inherit (cfg.health) minBackups verifyMaxAge;
    };
    metrics = {
      textfileDir = pathOrNull cfg.metrics.textfileDir;
    };
    databases = {
      inherit stagingDir;
      postgresql = {
        inherit (pgWanted) enable databases;
        inherit (db.postgresql) user host port;
        binDir = pathOrNull db.postgresql.binDir;
      };
      mysql = {
        inherit (mysqlWanted) enable databases;
        inherit (db.mysql) user;
        defaultsFile = pathOrNull db.mysql.defaultsFile;
        socket = pathOrNull db.mysql.socket;
        binDir = pathOrNull db.mysql.binDir;
      };
      sqlite = sqlitePaths;
      sqlite3 = if sqlitePaths != [ ] && sqlite3 != null then toString sqlite3 else null;
    };
    hosts = mapAttrs hostPlan cfg.hosts;
    # Offsite copies (nix/render/offsite.nix); `{}` without any.
    offsite = offsitePlans;
    inherit logDir stateDir;
  };

  # The options use restic's -1 for "every period"; the plan spells it "unlimited", so a
  # negative number in a plan is always a mistake.
  retentionOf = r: {
    last = count r.keepLast;
    hourly = count r.keepHourly;
    daily = count r.keepDaily;
    weekly = count r.keepWeekly;
    monthly = count r.keepMonthly;
    yearly = count r.keepYearly;
    within = r.keepWithin;
    pruneAfterRun = true;
  };

  # ----------------------------------------------------------------------------------------------
  # Pulled hosts (hosts.<name>): the plan's `hosts.<name>`, as plan.rs RemoteHost reads it
  # ----------------------------------------------------------------------------------------------

  keepNames = [
    "keepLast"
    "keepHourly"
    "keepDaily"
    "keepWeekly"
    "keepMonthly"
    "keepYearly"
    "keepWithin"
  ];
  # A host's retention rules: its own where set, the local ones elsewhere.
  hostKeep =
    h:
    listToAttrs (
      map (n: {
        name = n;
        value = if h.${n} != null then h.${n} else local.${n};
      }) keepNames
    );
  overridesRetention = h: any (n: h.${n} != null) keepNames;

  hostPlan = _name: h: {
    inherit (h)
      address
      user
      port
      sshOptions
      excludePatterns
      oneFileSystem
      devices
      excludeCaches
      excludeIfPresent
      excludeLargerThan
      ;
    sshKeyFile = pathOrNull h.sshKeyFile;
    ssh = pathOrNull ssh;
    # The agent's `authorized_keys` entry (agent.*) replaces it with its own command line.
    agentCommand = "hwc-backup agent";
    sources = map toString h.sources;
    # A whole retention object replaces the plan's, so the local rules fill in the rest.
    retention = if overridesRetention h then retentionOf (hostKeep h) else null;
  };

  hostNames = attrNames cfg.hosts; # sorted
}
