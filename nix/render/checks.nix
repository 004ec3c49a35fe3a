# Assertions and warnings, of this machine's half and of pulled hosts.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
  # ----------------------------------------------------------------------------------------------
  # Assertions and warnings (the module adds those that need other parts of the configuration)
  # ----------------------------------------------------------------------------------------------

  # The plan is rendered whenever the module is enabled (backup-status and backup-restore read
  # it), so what it must satisfy is asserted even when local snapshots are off.

  opt = name: "hwc.system.services.backup.${name}";
  show = xs: concatStringsSep ", " (map (x: "\"${toString x}\"") xs);

  badSources = filter (s: !(isCleanAbsolute s)) local.sources;
  dupSources = duplicates (map toString local.sources);
  sourcesInDestination = filter (s: isWithin s local.mountPoint) local.sources;
  sourcesAroundDestination = filter (s: isWithin local.mountPoint s && toString s != destination) local.sources;
  # Paths written into unit files (RequiresMountsFor=, ReadWritePaths=), where systemd splits
  # on whitespace and expands "%" specifiers.
  unitPaths =
    [ local.mountPoint ]
    ++ cfg.readWritePaths
    ++ optional (cfg.metrics.textfileDir != null) cfg.metrics.textfileDir
    ++ optional dumps stagingDir;
  unitUnsafe = filter (p: match ".*[[:space:]%\\].*" (toString p) != null) unitPaths;

  count = n: if n == -1 then "unlimited" else n;

  # The runner swaps `<stagingDir>/<engine>/` on every run: a source below it would overlap the
  # added source and see its files come and go.
  sourcesInStaging = filter (s: isWithin s stagingDir && toString s != stagingDir) local.sources;
  dupDatabases = engine: duplicates db.${engine}.databases;
  dumpAssertions =
    engine:
    let
      dups = dupDatabases engine;
    in
    {
      assertion = dups == [ ];
      message = "${opt "databases.${engine}.databases"} lists the same database twice: ${show dups}.";
    };

  keepCounts = [
    local.keepLast
    local.keepHourly
    local.keepDaily
    local.keepWeekly
    local.keepMonthly
    local.keepYearly
  ];

  serverAssertions = [
    {
      assertion =
        match "[A-Za-z0-9._-]{1,64}" cfg.hostName != null && cfg.hostName != "." && cfg.hostName != "..";
      message = "${opt "hostName"} (\"${cfg.hostName}\") must be 1 to 64 letters, digits, \".\", \"_\" or \"-\" and not \".\" or \"..\"; set it when networking.hostName is empty.";
    }
    {
      assertion = local.sources != [ ];
      message = "${opt "local.sources"} is empty: there is nothing to back up.";
    }
    {
      assertion = badSources == [ ];
      message = "${opt "local.sources"} must be absolute paths without \".\", \"..\", \"//\" or a trailing \"/\": ${show badSources}.";
    }
    {
      assertion = dupSources == [ ];
      message = "${opt "local.sources"} lists the same path twice: ${show dupSources}.";
    }
    {
      assertion = isCleanAbsolute local.mountPoint && destination != "/";
      message = "${opt "local.mountPoint"} must be an absolute path other than \"/\" without \".\", \"..\", \"//\" or a trailing \"/\": \"${destination}\".";
    }
    {
      assertion = unitUnsafe == [ ];
      message = "${opt "local.mountPoint"}, ${opt "readWritePaths"}, ${opt "metrics.textfileDir"} and ${opt "databases.stagingDir"} go into unit files and must not contain whitespace, \"%\" or \"\\\": ${show unitUnsafe}.";
    }
    {
      assertion = sourcesInDestination == [ ];
      message = "${opt "local.sources"} must not be the destination ${destination} or lie inside it (a snapshot would hold the snapshots): ${show sourcesInDestination}.";
    }
    {
      assertion = sourcesAroundDestination == [ ] || (local.oneFileSystem && local.requireMountPoint);
      message = "${opt "local.sources"} ${show sourcesAroundDestination} contain the destination ${destination}; a backup would copy itself unless ${opt "local.oneFileSystem"} and ${opt "local.requireMountPoint"} are both true.";
    }
    {
      assertion = any (n: n != 0) keepCounts || local.keepWithin != null;
      message = "${opt "local"}.keep* are all 0 and keepWithin is null: no snapshot would be kept.";
    }
    {
      assertion = !cfg.cloud.enable || local.enable;
      message = "${opt "cloud.enable"} needs ${opt "local.enable"}: the cloud copy is pushed from the newest local snapshot.";
    }
    {
      assertion = !cfg.cloud.enable || cfg.cloud.provider != "";
      message = "${opt "cloud.enable"} is set but ${opt "cloud.provider"} names no rclone remote.";
    }
    {
      assertion = !cfg.protonDrive.enable || cfg.protonDrive.secretName != "";
      message = "${opt "protonDrive.enable"} needs ${opt "protonDrive.secretName"}, the agenix secret holding the rclone config.";
    }
    {
      assertion = ntfy.tokenFile == null || hasUrl ntfy;
      message = "${opt "notifications.ntfy.tokenFile"} is set but neither ${opt "notifications.ntfy.url"} nor ${opt "notifications.ntfy.urlFile"} is.";
    }
  ]
  ++ map (field: {
    assertion = notif.${field}.url == null || notif.${field}.urlFile == null;
    message = "${opt "notifications.${field}.url"} and ${opt "notifications.${field}.urlFile"} are both set; give the URL once (the file when it holds a secret).";
  }) [
    "ntfy"
    "webhook"
    "healthchecks"
  ]
  ++ [
    {
      assertion = isCleanAbsolute stagingDir && stagingDir != "/";
      message = "${opt "databases.stagingDir"} must be an absolute path other than \"/\" without \".\", \"..\", \"//\" or a trailing \"/\": \"${stagingDir}\".";
    }
    {
      assertion = !dumps || !(isWithin stagingDir local.mountPoint || isWithin local.mountPoint stagingDir);
      message = "${opt "databases.stagingDir"} (\"${stagingDir}\") must neither lie inside nor contain the destination ${destination}.";
    }
    {
      assertion = !dumps || sourcesInStaging == [ ];
      message = "${opt "local.sources"} ${show sourcesInStaging} lie inside ${opt "databases.stagingDir"} (\"${stagingDir}\"), which the dumps replace on every run; list the staging directory itself or a directory around it.";
    }
    (dumpAssertions "postgresql")
    (dumpAssertions "mysql")
  ]
  ++ concatMap hostAssertions hostNames
  # Offsite copies and runOnMount (nix/render/offsite.nix).
  ++ offsiteAssertions
  ++ onMountAssertions;

  # ----------------------------------------------------------------------------------------------
  # Checks of pulled hosts (the runner refuses the same plans, but only at build time)
  # ----------------------------------------------------------------------------------------------

  isDirName = n: match "[A-Za-z0-9._-]{1,64}" n != null && n != "." && n != "..";

  # Each source i against every later one j: list each tree once.
  overlaps =
    paths:
    let
      n = length paths;
      at = elemAt paths;
    in
    concatLists (
      genList (
        i:
        concatMap (
          j:
          optional (
            j > i && (isWithin (at i) (at j) || isWithin (at j) (at i))
          ) "${toString (at i)} and ${toString (at j)}"
        ) (genList (j: j) n)
      ) n
    );

  keepsNothing =
    r: all (n: r.${n} == 0) (filter (n: n != "keepWithin") keepNames) && r.keepWithin == null;

  hostAssertions =
    name:
    let
      h = cfg.hosts.${name};
      o = field: opt "hosts.${name}.${field}";
      bad = filter (s: !(isCleanAbsolute s)) h.sources;
      overlapping = overlaps h.sources;
    in
    [
      {
        assertion = isDirName name;
        message = "${opt "hosts"}.\"${name}\": the name becomes the directory ${destination}/${name} and the unit ${hostUnit name}.service, so it must be 1 to 64 letters, digits, \".\", \"_\" or \"-\" and not \".\" or \"..\".";
      }
      {
        assertion = name != cfg.hostName;
        message = "${opt "hosts"}.${name} is this machine's own ${opt "hostName"}: its snapshots would share ${destination}/${name}/ with the local ones.";
      }
      {
        assertion = h.sources != [ ];
        message = "${o "sources"} is empty: there is nothing to pull from ${name}.";
      }
      {
        assertion = bad == [ ];
        message = "${o "sources"} must be absolute paths without \".\", \"..\", \"//\" or a trailing \"/\": ${show bad}.";
      }
      {
        assertion = overlapping == [ ];
        message = "${o "sources"} lists a tree twice (${concatStringsSep "; " overlapping}); list each tree once.";
      }
      {
        assertion = !(overridesRetention h) || !(keepsNothing (hostKeep h));
        message = "${opt "hosts"}.${name}.keep* with the local values they do not override are all 0 and keepWithin is null: no snapshot of ${name} would be kept.";
      }
    ];
}
