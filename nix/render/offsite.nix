# Offsite copies (offsite.<name>, issue 13): their part of the plan, their units and checks; and
# the backup started by mounting the destination (local.runOnMount).
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
  # ----------------------------------------------------------------------------------------------
  # Plan: the `offsite` object of docs/plan.md (always rendered, `{}` without offsites)
  # ----------------------------------------------------------------------------------------------

  offsiteNames = attrNames cfg.offsite; # sorted

  isRcloneRepository = o: match "rclone:.*" o.repository != null;
  # protonDrive's rclone config defines the `proton` remote (as for cloud.provider "proton-drive").
  usesProtonDrive = o: cfg.protonDrive.enable && match "rclone:proton:.*" o.repository != null;
  # A local repository is an absolute path; everything else (sftp:, s3:, rclone:, …) is remote.
  isLocalRepository = o: match "/.*" o.repository != null;

  # The offsites whose rclone config is protonDrive's agenix secret (the module warns when that
  # secret is not declared).
  protonOffsites = filter (
    n: usesProtonDrive cfg.offsite.${n} && cfg.offsite.${n}.rcloneConfigFile == null
  ) offsiteNames;

  offsitePlans = mapAttrs (_name: o: {
    inherit (o) repository schedule bandwidthLimit maxAge;
    passwordFile = toString o.passwordFile;
    environmentFile = pathOrNull o.environmentFile;
    rcloneConfigFile =
      if o.rcloneConfigFile != null then
        toString o.rcloneConfigFile
      else if usesProtonDrive o then
        secretPath cfg.protonDrive.secretName
      else
        null;
    restic = pathOrNull restic;
    # Only an rclone: repository runs rclone.
    rclone = if isRcloneRepository o then pathOrNull rclone else null;
    keep = {
      last = count o.keepLast;
      hourly = count o.keepHourly;
      daily = count o.keepDaily;
      weekly = count o.keepWeekly;
      monthly = count o.keepMonthly;
      yearly = count o.keepYearly;
      within = o.keepWithin;
    };
    check = {
      inherit (o.check) schedule readDataSubset;
    };
  }) cfg.offsite;

  # ----------------------------------------------------------------------------------------------
  # Units: backup-offsite-<name>.service/.timer, backup-offsite-check-<name>.service/.timer
  # ----------------------------------------------------------------------------------------------

  offsiteUnit = name: "backup-offsite-${name}";
  offsiteCheckUnit = name: "backup-offsite-check-${name}";

  # Offsites copied by `now` (backup.service, backup-on-mount.service), and those with a timer.
  immediateOffsites = filter (n: cfg.offsite.${n}.schedule == null) offsiteNames;
  scheduledOffsites = filter (n: cfg.offsite.${n}.schedule != null) offsiteNames;
  checkedOffsites = filter (n: cfg.offsite.${n}.check.schedule != null) offsiteNames;

  localRepositories =
    names: map (n: cfg.offsite.${n}.repository) (filter (n: isLocalRepository cfg.offsite.${n}) names);
  remoteRepositories = names: any (n: !(isLocalRepository cfg.offsite.${n})) names;

  # What copying to (or checking) these offsites adds to a unit: its local repositories
  # writable ("-": a missing directory must not abort the unit before the runner can name it;
  # restic init fills an existing empty directory, see README) and mounted first; the network
  # for the others; caches that ProtectSystem=strict would otherwise leave read-only.
  offsiteWritable = names: map (r: "-${r}") (localRepositories names);
  offsiteExtra =
    names:
    optionalAttrs (names != [ ]) (
      builtins.foldl' mergeUnit { } [
        (optionalAttrs (localRepositories names != [ ]) {
          unitConfig.RequiresMountsFor = localRepositories names;
        })
        {
          serviceConfig.CacheDirectory = "hwc-backup";
          environment = {
            RESTIC_CACHE_DIR = "${cacheDir}/restic";
            RCLONE_CACHE_DIR = "${cacheDir}/rclone";
          };
        }
      ]
    );

  offsiteService =
    name: description: args:
    mkService {
      inherit description args;
      # The snapshot is read from the destination, where the runner also records the outcome.
      writable = writers ++ offsiteWritable [ name ];
      onAC = true;
      profile = "copy";
      extra = builtins.foldl' mergeUnit (networkDeps (networkTargets || remoteRepositories [ name ])) [
        (offsiteExtra [ name ])
        # Two timers firing together: copy the snapshot the backup is taking. (The runner's
        # host lock keeps them apart in any case.)
        { after = [ "backup.service" ]; }
      ];
    };

  offsiteServices = optionalAttrs cfg.local.enable (
    listToAttrs (
      map (name: {
        name = offsiteUnit name;
        value = offsiteService name "hwc-backup: copy the newest snapshot to the offsite ${name} with restic" [
          "offsite"
          name
        ];
      }) scheduledOffsites
      ++ map (name: {
        name = offsiteCheckUnit name;
        value = offsiteService name "hwc-backup: check the offsite ${name} with restic" [
          "verify"
          "--offsite"
          name
        ];
      }) checkedOffsites
    )
  );

  offsiteTimers = optionalAttrs cfg.local.enable (
    listToAttrs (
      map (name: {
        name = offsiteUnit name;
        value = mkTimer "hwc-backup: scheduled offsite copy to ${name}" cfg.offsite.${name}.schedule;
      }) scheduledOffsites
      ++ map (name: {
        name = offsiteCheckUnit name;
        value = mkTimer "hwc-backup: scheduled check of the offsite ${name}" cfg.offsite.${name}.check.schedule;
      }) checkedOffsites
    )
  );

  # ----------------------------------------------------------------------------------------------
  # local.runOnMount: backup-on-mount.service, wanted by the destination's mount unit
  # ----------------------------------------------------------------------------------------------

  # systemd's name for a path's mount unit, as `systemd-escape --path --suffix=mount` writes it:
  # "/" between components becomes "-"; letters, digits, ":", "_" and "." stay (a leading "."
  # does not); every other byte becomes "\xNN". Only printable ASCII is escaped here; a mount
  # point with other bytes is refused by an assertion (mountUnitNameable).
  printableAscii = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
  hexByte =
    n:
    let
      digit = d: builtins.substring d 1 "0123456789abcdef";
    in
    digit (n / 16) + digit (n - n / 16 * 16);
  asciiEscapes = listToAttrs (
    genList (i: {
      name = builtins.substring i 1 printableAscii;
      value = "\\x${hexByte (i + 32)}";
    }) (builtins.stringLength printableAscii)
  );
  escapeSystemdPath =
    path:
    let
      s = toString path;
      inner = builtins.substring 1 (builtins.stringLength s - 1) s;
      chars = genList (i: builtins.substring i 1 inner) (builtins.stringLength inner);
      escape =
        i: c:
        if c == "/" then
          "-"
        else if match "[A-Za-z0-9:_.]" c != null && !(i == 0 && c == ".") then
          c
        else
          asciiEscapes.${c} or "?";
    in
    if s == "/" then "-" else concatStringsSep "" (genList (i: escape i (elemAt chars i)) (length chars));
  mountUnitNameable = match "[ -~]*" destination != null;
  destinationMountUnit = "${escapeSystemdPath destination}.mount";

  onMountServices = optionalAttrs (cfg.local.enable && local.runOnMount && mountUnitNameable) {
    backup-on-mount = mergeUnit (runService "hwc-backup: back up the destination just mounted" [
      "now"
      "--min-interval"
      local.runOnMountMinInterval
    ]) {
      # Started by the mount itself, after it (RequiresMountsFor= orders it too).
      wantedBy = [ destinationMountUnit ];
      after = [ destinationMountUnit ];
    };
  };

  # ----------------------------------------------------------------------------------------------
  # Assertions
  # ----------------------------------------------------------------------------------------------

  # "5%" -> 5; the option's type admits only whole numbers without leading zeros before the "%".
  subsetPercent = s: builtins.fromJSON (head (match "(.*)%" s));

  offsiteAssertions =
    optional (offsiteNames != [ ]) {
      assertion = local.enable;
      message = "${opt "offsite"} (${show offsiteNames}) needs ${opt "local.enable"}: the offsite copies are made from the newest local snapshot.";
    }
    ++ concatMap (
      name:
      let
        o = cfg.offsite.${name};
        field = f: opt "offsite.${name}.${f}";
        hostDirectory = "${destination}/${cfg.hostName}";
      in
      [
        {
          assertion = isDirName name;
          message = "${opt "offsite"}.\"${name}\": the name becomes the units ${offsiteUnit name}.service and ${offsiteCheckUnit name}.service and a label of the metrics, so it must be 1 to 64 letters, digits, \".\", \"_\" or \"-\" and not \".\" or \"..\".";
        }
        {
          assertion = any (n: n != 0) [
            o.keepLast
            o.keepHourly
            o.keepDaily
            o.keepWeekly
            o.keepMonthly
            o.keepYearly
          ] || o.keepWithin != null;
          message = "${opt "offsite.${name}"}.keep* are all 0 and keepWithin is null: restic forget would keep no snapshot of the offsite ${name}.";
        }
        {
          assertion = match "(0+[smhdw])+" o.maxAge == null;
          message = "${field "maxAge"} (\"${o.maxAge}\") is zero: the health check could never pass.";
        }
        {
          assertion =
            o.check.readDataSubset == null
            || (subsetPercent o.check.readDataSubset > 0 && subsetPercent o.check.readDataSubset <= 100);
          message = "${field "check.readDataSubset"} (\"${toString o.check.readDataSubset}\") must be more than 0% and at most 100%.";
        }
        {
          assertion = !(isLocalRepository o) || (isCleanAbsolute o.repository && o.repository != "/");
          message = "${field "repository"} (\"${o.repository}\") is a local path, so it must be absolute, other than \"/\", without \".\", \"..\", \"//\" or a trailing \"/\".";
        }
        {
          assertion = !(isLocalRepository o) || match ".*[[:space:]%\\].*" o.repository == null;
          message = "${field "repository"} (\"${o.repository}\") goes into unit files (RequiresMountsFor=, ReadWritePaths=) and must not contain whitespace, \"%\" or \"\\\".";
        }
        {
          assertion =
            !(isLocalRepository o) || !(isWithin o.repository hostDirectory || isWithin hostDirectory o.repository);
          message = "${field "repository"} (\"${o.repository}\") must neither lie inside nor contain ${hostDirectory}, where the local snapshots are rotated.";
        }
      ]
    ) offsiteNames;

  offsiteWarnings =
    optional (local.runOnMount && !local.enable)
      "${opt "local.runOnMount"} has no effect without ${opt "local.enable"}."
    ++ optional (local.enable && local.runOnMount && !local.requireMountPoint)
      "${opt "local.runOnMount"} is set but ${opt "local.requireMountPoint"} is false: backup-on-mount.service starts only when ${destination} is mounted (${destinationMountUnit}), which a plain directory never is.";

  onMountAssertions = optional (cfg.local.enable && local.runOnMount) {
    assertion = mountUnitNameable;
    message = "${opt "local.runOnMount"}: ${opt "local.mountPoint"} (\"${destination}\") must be printable ASCII for its mount unit to be named here.";
  };
}
