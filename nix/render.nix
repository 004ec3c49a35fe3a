# The pure half of the NixOS module: option values in, JSON plan and unit descriptions out.
#
# Written with `builtins` only (no nixpkgs lib) so that Debian's Nix 2.8 can evaluate it with
# `nix-instantiate --eval --strict --json` on machines without nixpkgs; the tests in
# tests/integration/nix.rs do exactly that. modules/backup.nix wires the result verbatim:
#
#   plan        -> /etc/hwc-backup/config.json (the contract of docs/plan.md)
#   units       -> systemd.services.<name> / systemd.timers.<name>, in the shape of those options
#   assertions  -> assertions ({ assertion, message } pairs; the module adds only agenix checks),
#                  those of the server half with `enable`, those of the agent with `agent.enable`
#   warnings    -> warnings (likewise)
#   dumps       -> whether a database dump is enabled (the module then creates the staging
#                  directory with tmpfiles)
#   agent       -> { authorizedKeys }: the `authorized_keys` entries for `agent.user`
#
# Unit names (from the seed README): backup.timer -> backup.service (the whole run),
# backup-local.service, backup-cloud.service, backup-health-check.timer/.service,
# backup-verify.timer/.service, backup-host-<name>.timer/.service per pulled host, and the
# template backup-failure@.service that every other service names in OnFailure=, so a failure
# is reported even when the runner was killed.
{
  # The values of `hwc.system.services.backup` (every option, defaults filled in).
  cfg,
  # The hwc-backup package: anything that interpolates to its store path.
  package,
  # name -> text -> absolute path of an executable running `text` (pkgs.writeShellScript).
  writeHook ? name: text: throw "render.nix: writeHook is needed to render ${name}",
  # Absolute path of the rclone binary, or null to find it on PATH.
  rclone ? null,
  # Absolute path of the ssh client that pulls hosts, or null to find it on PATH.
  ssh ? null,
  # util-linux's flock(1), which keeps pulls within hostConcurrency; systemd looks a bare name
  # up in its own PATH (/usr/bin, …), which NixOS does not have.
  flock ? "flock",
  # Where the agenix secret `name` is decrypted to.
  secretPath ? name: "/run/agenix/${name}",
  # Where the module installs the plan; every unit passes it with --config.
  configFile ? "/etc/hwc-backup/config.json",
}:
let
  inherit (builtins)
    any
    all
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elemAt
    filter
    genList
    head
    length
    listToAttrs
    mapAttrs
    match
    replaceStrings
    ;

  local = cfg.local;
  notif = cfg.notifications;
  db = cfg.databases;

  # Fixed places: the runner's JSON-lines logs (the seed's /var/log/backup) and its state.
  logDir = "/var/log/backup";
  stateDir = "/var/lib/hwc-backup";
  cacheDir = "/var/cache/hwc-backup";

  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: as: if cond then as else { };
  # Path options may be given as Nix path values; toString keeps them out of the store.
  pathOrNull = p: if p == null then null else toString p;

  # ----------------------------------------------------------------------------------------------
  # Paths
  # ----------------------------------------------------------------------------------------------

  # Absolute, no empty, `.` or `..` component, no trailing slash (except "/" itself).
  isCleanAbsolute =
    p:
    let
      s = toString p;
    in
    s == "/"
    || (match "(/[^/]+)+" s != null && match ".*/\\.\\.?(/.*)?" s == null);

  # `a` is `b` or lies below it.
  isWithin =
    a: b:
    let
      sa = toString a;
      sb = toString b;
    in
    sa == sb || sb == "/" || match "${escapeRegex sb}/.*" sa != null;

  escapeRegex =
    s:
    builtins.replaceStrings
      [ "\\" "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" ]
      [ "\\\\" "\\." "\\*" "\\+" "\\?" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\|" "\\^" "\\$" ]
      s;

  # The strings that occur more than once in `xs`, each named once.
  duplicates =
    xs:
    let
      groups = builtins.groupBy (x: x) xs;
    in
    filter (x: length groups.${x} > 1) (attrNames groups);

  # ----------------------------------------------------------------------------------------------
  # Schedule
  # ----------------------------------------------------------------------------------------------

  # `frequency` is one of systemd's shorthands, placed at `timeOfDay`, or a raw calendar
  # expression. A raw expression without a time ("Mon,Wed,Fri", "*-*-1/2") gets `timeOfDay`,
  # as the seed's "Mon,Wed,Fri" example means; one with a time ("Sat 04:30") is used verbatim.
  onCalendar =
    frequency: timeOfDay:
    let
      minute = head (match "[0-9]+:([0-9]+).*" timeOfDay);
      shorthands = {
        minutely = "*-*-* *:*:00";
        hourly = "*-*-* *:${minute}:00";
        daily = "*-*-* ${timeOfDay}";
        # Sunday, as the seed keeps its weekly snapshots from Sundays.
        weekly = "Sun *-*-* ${timeOfDay}";
        monthly = "*-*-01 ${timeOfDay}";
        quarterly = "*-01,04,07,10-01 ${timeOfDay}";
        semiannually = "*-01,07-01 ${timeOfDay}";
        yearly = "*-01-01 ${timeOfDay}";
        annually = "*-01-01 ${timeOfDay}";
      };
    in
    if shorthands ? ${frequency} then
      shorthands.${frequency}
    else if match ".*:.*" frequency != null then
      frequency
    else
      "${frequency} ${timeOfDay}";

  # The health check's default age limit: one missed run (plus the random delay) is tolerated.
  defaultMaxAge =
    {
      minutely = "1h";
      hourly = "3h";
      daily = "48h";
      weekly = "8d";
      monthly = "32d";
      quarterly = "93d";
      semiannually = "184d";
      yearly = "367d";
      annually = "367d";
    }
    .${cfg.schedule.frequency} or "8d";

  randomDelay = cfg.schedule.randomDelay;
  delaySetting = optionalAttrs (randomDelay != "" && randomDelay != "0") {
    RandomizedDelaySec = randomDelay;
  };

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
  networkTargets = notif.enable && any (u: u != null) [
    ntfy.url
    notif.webhook.url
    notif.healthchecks.url
  ];

  # Database dumps go to the staging directory, which the snapshot must hold (the runner
  # refuses a plan where no source contains it): when no source does, it becomes a source of
  # its own, after the user's.
  dumps = db.postgresql.enable || db.mysql.enable;
  stagingDir = toString db.stagingDir;
  stagingInSources = any (s: isWithin stagingDir s) local.sources;
  sources = map toString local.sources ++ optional (dumps && !stagingInSources) stagingDir;

  plan = {
    version = 1;
    host = cfg.hostName;
    destination = {
      path = toString local.mountPoint;
      inherit (local) requireMountPoint;
      # GiB, as in the plan's example (10 -> 10737418240).
      minFreeBytes = local.minSpaceGB * 1073741824;
    };
    inherit sources;
    inherit (local) excludePatterns oneFileSystem;
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
        if ntfy.url == null then
          null
        else
          {
            inherit (ntfy) url;
            tokenFile = pathOrNull ntfy.tokenFile;
          }
      );
      webhook = target (if notif.webhook.url == null then null else { inherit (notif.webhook) url; });
      healthchecks = target (
        if notif.healthchecks.url == null then null else { inherit (notif.healthchecks) url; }
      );
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
        inherit (db.postgresql)
          enable
          user
          databases
          host
          port
          ;
        binDir = pathOrNull db.postgresql.binDir;
      };
      mysql = {
        inherit (db.mysql) enable user databases;
        defaultsFile = pathOrNull db.mysql.defaultsFile;
        socket = pathOrNull db.mysql.socket;
        binDir = pathOrNull db.mysql.binDir;
      };
    };
    hosts = mapAttrs hostPlan cfg.hosts;
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

  # ----------------------------------------------------------------------------------------------
  # Units
  # ----------------------------------------------------------------------------------------------

  exe = "${package}/bin/hwc-backup";
  command = args: concatStringsSep " " ([ exe ] ++ args ++ [ "--config" configFile ]);

  destination = toString local.mountPoint;
  # "-": a path that does not exist must not abort the unit with 226/NAMESPACE before the
  # runner can refuse it with a clear message and a notification.
  destinationWritable = [ "-${destination}" ];
  metricsWritable = optional (cfg.metrics.textfileDir != null) "-${toString cfg.metrics.textfileDir}";
  # Hooks write their dumps here (the user's list).
  hookWritable = map toString cfg.readWritePaths;
  # The runner's own dumps (`now` only); the module creates the directory with tmpfiles.
  stagingWritable = optional dumps "-${stagingDir}";

  # What a unit may touch. The whole file system stays readable (a backup must read every
  # source); writes are limited to `writable` plus the state and log directories, which
  # systemd creates itself (StateDirectory/LogsDirectory) so that even a fresh machine can log
  # and report.
  hardening =
    writable:
    optionalAttrs (writable != [ ]) { ReadWritePaths = writable; }
    // {
      ProtectSystem = "strict";
      StateDirectory = "hwc-backup";
      StateDirectoryMode = "0700";
      LogsDirectory = "backup";
      LogsDirectoryMode = "0700";
      # read-only, not true: sources under /home and /root must stay readable.
      ProtectHome = "read-only";
      PrivateTmp = true;
      NoNewPrivileges = true;
      ProtectKernelTunables = true;
      ProtectKernelModules = true;
      ProtectKernelLogs = true;
      ProtectControlGroups = true;
      ProtectClock = true;
      ProtectHostname = true;
      RestrictRealtime = true;
      RestrictNamespaces = true;
      LockPersonality = true;
      SystemCallArchitectures = "native";
      # @system-service keeps chown, mknod, xattrs and utimensat, which snapshots need.
      SystemCallFilter = [ "@system-service" ];
      SystemCallErrorNumber = "EPERM";
      # AF_NETLINK: rclone and the notifiers look up interfaces; AF_UNIX: journald, sendmail.
      RestrictAddressFamilies = [
        "AF_UNIX"
        "AF_INET"
        "AF_INET6"
        "AF_NETLINK"
      ];
      UMask = "0077";
      # Not set, on purpose:
      # - PrivateDevices: snapshots recreate device nodes (mknod needs CAP_MKNOD and /dev access).
      # - RestrictSUIDSGID: snapshots must keep the setuid/setgid bits of the files they copy.
      # - MemoryDenyWriteExecute: pre/post hooks may run JIT-compiled programs.
      # - CapabilityBoundingSet, User: the runner reads and recreates files of every owner, and
      #   switches to `databases.*.user` for the dump programs (setgroups/setgid/setuid in the
      #   child, which need CAP_SETGID and CAP_SETUID; hooks may do the same with runuser).
      #   Those calls are in @setuid, which @system-service includes, and NoNewPrivileges only
      #   stops gaining privileges (setuid binaries, file capabilities), not giving them up.
    };

  # Background work must not be felt on the machine it protects.
  idlePriority = {
    IOSchedulingClass = "idle";
    CPUSchedulingPolicy = "idle";
    Nice = 19;
  };

  failureUnit = "backup-failure@%n.service";

  # Ordering after network-online.target needs the Wants= too (NixOS warns otherwise).
  networkDeps =
    wanted:
    optionalAttrs wanted {
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
    };

  # rclone keeps its cache in $HOME, which ProtectSystem=strict makes read-only.
  rcloneCache = {
    serviceConfig.CacheDirectory = "hwc-backup";
    environment.RCLONE_CACHE_DIR = "${cacheDir}/rclone";
  };

  mkService =
    {
      description,
      args,
      writable,
      onAC ? false,
      needsDestination ? true,
      execStart ? command args,
      extra ? { },
    }:
    mergeUnit {
      inherit description;
      onFailure = [ failureUnit ];
      unitConfig =
        optionalAttrs needsDestination { RequiresMountsFor = [ destination ]; }
        // optionalAttrs (onAC && cfg.schedule.onlyOnAC) { ConditionACPower = true; };
      serviceConfig = {
        Type = "oneshot";
        ExecStart = execStart;
      }
      // idlePriority
      // hardening writable;
      # A configuration switch must never start, stop or restart a backup.
      restartIfChanged = false;
    } extra;

  # As the module system merges unit options: attrsets recursively, lists concatenated.
  mergeUnit =
    a: b:
    a
    // builtins.mapAttrs (
      n: v:
      if !(a ? ${n}) then
        v
      else if builtins.isAttrs v then
        mergeUnit a.${n} v
      else if builtins.isList v then
        a.${n} ++ v
      else
        v
    ) b;

  mkTimer = description: calendar: {
    inherit description;
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnCalendar = calendar;
      # Catch up on a run missed while the machine was off or asleep.
      Persistent = true;
    } // delaySetting;
  };

  scheduled = cfg.local.enable && cfg.schedule.enable;
  # Units that write snapshots (or, with syncMode "move", delete from them).
  writers = destinationWritable ++ metricsWritable ++ hookWritable;
  # Units that take snapshots, and with them the database dumps.
  snapshotters = writers ++ stagingWritable;
  # A run started at boot (Persistent=true catches up a missed one) must not dump a server
  # that is still starting. Ordering only: a remote server has no local unit, and After= on a
  # unit that does not exist is ignored.
  dumpOrder = optionalAttrs dumps {
    after = optional db.postgresql.enable "postgresql.service" ++ optional db.mysql.enable "mysql.service";
  };
  # A PostgreSQL server reached over TCP (a host name rather than a socket directory).
  remoteDatabase =
    db.postgresql.enable && db.postgresql.host != null && match "/.*" db.postgresql.host == null;
  # Units that only read snapshots; they still record results and metrics.
  readers = metricsWritable;

  # ----------------------------------------------------------------------------------------------
  # Pull units: backup-host-<name>.service (+ .timer), at most hostConcurrency at a time
  # ----------------------------------------------------------------------------------------------

  # How the limit holds. systemd has no "at most N of these units" setting, and After= between
  # the host units orders only jobs queued together (two timers firing an hour apart would still
  # overlap). So the hosts, in name order, are dealt round-robin to N slots, and each pull runs
  # under `flock --no-fork <slot lock file>`: flock(1) waits for an exclusive lock on its slot's
  # file, then execs hwc-backup in its own place, which keeps the locked descriptor (as does the
  # ssh it starts). A slot's lock is held from the moment its pull starts until that process
  # and its children are gone, so at most one pull per slot — N in all — runs at any time:
  # - the kernel drops a flock lock when its last descriptor closes, whatever ends the process
  #   (exit, SIGKILL, OOM kill, a stopped unit), so no stale lock survives a crash;
  # - each unit holds at most one lock, so there is no deadlock; waiting is Type=oneshot's
  #   "activating" state, which has no start timeout, and a timer firing meanwhile adds nothing;
  # - the lock files live in the StateDirectory /var/lib/hwc-backup, which every unit gets
  #   writable, that systemd never removes (a lock file deleted and recreated while held would
  #   be a second lock), and whose other entries are host names, which cannot contain "@".
  # The price of fixed slots: a host may wait for the other host of its slot while another slot
  # is idle. With the default of 1 every pull queues behind the others.
  slotCount =
    if cfg.hostConcurrency < length hostNames then cfg.hostConcurrency else length hostNames;
  slotOf = listToAttrs (
    genList (i: {
      name = elemAt hostNames i;
      value = i - i / slotCount * slotCount;
    }) (length hostNames)
  );
  slotLock = name: "${stateDir}/pull-slot@${toString slotOf.${name}}.lock";

  hostUnit = name: "backup-host-${name}";
  # What a pull writes: snapshots and metrics (no hooks or dumps run for a pulled host).
  pullWritable = destinationWritable ++ metricsWritable;

  hostServices = listToAttrs (
    map (name: {
      name = hostUnit name;
      value = mkService {
        description = "hwc-backup: pull a snapshot of ${name} over ssh";
        args = [ ];
        execStart = concatStringsSep " " [
          flock
          "--no-fork"
          (slotLock name)
          exe
          "pull"
          "--host"
          name
          "--config"
          configFile
        ];
        writable = pullWritable;
        onAC = true;
        extra = networkDeps true;
      };
    }) hostNames
  );

  hostTimers = optionalAttrs cfg.schedule.enable (
    listToAttrs (
      map (
        name:
        let
          own = cfg.hosts.${name}.schedule;
          frequency = if own != null then own else cfg.schedule.frequency;
        in
        {
          name = hostUnit name;
          value = mkTimer "hwc-backup: scheduled pull of ${name}" (
            onCalendar frequency cfg.schedule.timeOfDay
          );
        }
      ) hostNames
    )
  );

  pulls = hostNames != [ ];

  services =
    optionalAttrs cfg.local.enable {
      backup = mkService {
        description = "hwc-backup: snapshot, prune${
          if cfg.cloud.enable then ", cloud push" else ""
        } and notify";
        args = [ "now" ];
        writable = snapshotters;
        onAC = true;
        extra =
          builtins.foldl' mergeUnit (networkDeps (networkTargets || cfg.cloud.enable || remoteDatabase))
            [
              (optionalAttrs cfg.cloud.enable rcloneCache)
              dumpOrder
            ];
      };
      backup-local = mkService {
        description = "hwc-backup: local snapshot and prune";
        args = [
          "now"
          "--local-only"
        ];
        writable = snapshotters;
        extra = mergeUnit (networkDeps remoteDatabase) dumpOrder;
      };
      backup-health-check = mkService {
        description = "hwc-backup: health check of the snapshots";
        args = [ "health" ];
        writable = readers;
        # No RequiresMountsFor: the health check must run when the disk is missing, see it,
        # and report it with its own message, rather than fail as a dependency of the mount.
        needsDestination = false;
        extra = networkDeps networkTargets;
      };
      backup-verify = mkService {
        description = "hwc-backup: verify the latest snapshot";
        args = [ "verify" ] ++ optional (cfg.verify.sample > 0) "--sample ${toString cfg.verify.sample}";
        writable = readers;
        onAC = true;
      };
    }
    // optionalAttrs (cfg.local.enable && cfg.cloud.enable) {
      backup-cloud = mkService {
        description = "hwc-backup: push the newest snapshot with rclone";
        args = [ "cloud" ];
        # The snapshot is read from the destination; syncMode "move" also deletes there.
        writable = writers;
        extra = mergeUnit (networkDeps true) rcloneCache;
      };
    }
    // optionalAttrs (cfg.local.enable || pulls) {
      # Instantiated by OnFailure= of every other unit as backup-failure@<unit>.service; it runs
      # after the failed unit whatever killed it (OOM, SIGKILL, timeout) and sends the report.
      # No RequiresMountsFor: a missing destination is a likely reason for the failure.
      "backup-failure@" = mergeUnit {
        description = "hwc-backup: report the failure of %i";
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${exe} notify-failure --unit %i --config ${configFile}";
        }
        // hardening [ ];
        restartIfChanged = false;
      } (networkDeps networkTargets);
    }
    // hostServices;

  timers =
    optionalAttrs scheduled {
      backup = mkTimer "hwc-backup: scheduled backup" (
        onCalendar cfg.schedule.frequency cfg.schedule.timeOfDay
      );
    }
    // optionalAttrs (scheduled && cfg.health.schedule != null) {
      backup-health-check = mkTimer "hwc-backup: scheduled health check" cfg.health.schedule;
    }
    // optionalAttrs (cfg.local.enable && cfg.verify.enable) {
      backup-verify = mkTimer "hwc-backup: scheduled verification" cfg.verify.schedule;
    }
    // hostTimers;

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
      assertion = ntfy.tokenFile == null || ntfy.url != null;
      message = "${opt "notifications.ntfy.tokenFile"} is set but ${opt "notifications.ntfy.url"} is not.";
    }
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
  ++ concatMap hostAssertions hostNames;

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

  # ----------------------------------------------------------------------------------------------
  # The agent (client side): authorized_keys entries that can only start `hwc-backup agent`
  # ----------------------------------------------------------------------------------------------

  agentCfg = cfg.agent;

  # sshd hands the command= string to the user's shell: quote each argument for it (exclude
  # patterns hold `*`). The result never ends in a backslash, which authorized_keys(5) would
  # read as escaping the closing quote.
  shellArg =
    s:
    if match "[A-Za-z0-9_./=:@+-]+" s != null then
      s
    else
      "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";
  agentCommandLine = concatStringsSep " " (
    [
      exe
      "agent"
    ]
    ++ concatMap (p: [
      "--allow"
      (shellArg (toString p))
    ]) agentCfg.allowedPaths
    ++ concatMap (x: [
      "--exclude"
      (shellArg x)
    ]) agentCfg.excludePatterns
  );
  # In a command="…" option only \" is special (authorized_keys(5)); `restrict` turns off
  # pty allocation and every kind of forwarding (OpenSSH 7.2+).
  authorizedKeys = map (
    key: "command=\"${replaceStrings [ "\"" ] [ "\\\"" ] agentCommandLine}\",restrict ${key}"
  ) agentCfg.authorizedKeys;

  # "type base64 [comment]", as ssh-keygen writes a public key; options would be misplaced
  # after ours.
  # (The option types keep line breaks out of keys, paths and patterns.)
  isBareKey = k: match "(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+=*( .*)?" k != null;
  badKeys = filter (k: !(isBareKey k)) agentCfg.authorizedKeys;
  badAllowed = filter (p: !(isCleanAbsolute p)) agentCfg.allowedPaths;

  agentAssertions = [
    {
      assertion = agentCfg.authorizedKeys != [ ];
      message = "${opt "agent.enable"} is set but ${opt "agent.authorizedKeys"} is empty: no server could log in to pull this machine.";
    }
    {
      assertion = badKeys == [ ];
      message = "${opt "agent.authorizedKeys"} must be bare public keys (\"ssh-ed25519 AAAA… comment\", one line each); the module adds the command= and restrict options itself: ${show badKeys}.";
    }
    {
      assertion = agentCfg.allowedPaths != [ ];
      message = "${opt "agent.enable"} is set but ${opt "agent.allowedPaths"} is empty: the agent would refuse every source.";
    }
    {
      assertion = badAllowed == [ ];
      message = "${opt "agent.allowedPaths"} must be absolute paths without \".\", \"..\", \"//\" or a trailing \"/\": ${show badAllowed}.";
    }
  ];

  anyTarget = any (u: u != null) [
    ntfy.url
    notif.webhook.url
    notif.healthchecks.url
    notif.email.to
  ];

  serverWarnings =
    optional (!local.enable && !cfg.cloud.enable && !pulls)
      "${opt "enable"} is set but neither ${opt "local.enable"} nor ${opt "cloud.enable"} is, and ${opt "hosts"} is empty: no backup will run."
    ++ optional (!local.useRsync)
      "${opt "local.useRsync"} = false has no effect: hwc-backup always makes incremental, hard-linked snapshots."
    ++ optional (cfg.schedule.enable && !local.enable && !pulls)
      "${opt "schedule.enable"} has no effect without ${opt "local.enable"} or ${opt "hosts"}."
    ++ optional (cfg.protonDrive.enable && !cfg.cloud.enable)
      "${opt "protonDrive.enable"} has no effect without ${opt "cloud.enable"}."
    ++ optional (
      cfg.cloud.enable
      && cfg.cloud.provider == "proton-drive"
      && !cfg.protonDrive.enable
      && cfg.cloud.rcloneConfigFile == null
    ) "${opt "cloud.provider"} is \"proton-drive\" but neither ${opt "protonDrive.enable"} nor ${opt "cloud.rcloneConfigFile"} is set: rclone will look for the `proton` remote in root's own rclone config."
    ++ optional (notif.enable && !anyTarget)
      "${opt "notifications.enable"} is set but no target (ntfy, webhook, healthchecks, email) is configured: results only reach the journal."
    ++ optional (!notif.enable && anyTarget)
      "A notification target is configured but ${opt "notifications.enable"} is false: nothing will be sent."
    ++ optional (dumps && !local.enable)
      "${opt "databases"}: the dumps are taken by backup runs, which need ${opt "local.enable"}."
    ++ optional (db.postgresql.enable && db.postgresql.binDir == null)
      "${opt "databases.postgresql.binDir"} is null (it defaults to the package of services.postgresql only when that is enabled): pg_dump and pg_dumpall are looked up on the backup units' PATH, which holds only coreutils, findutils, grep, sed and systemd. Set it to the bin directory of a PostgreSQL client of the server's major version or newer."
    ++ optional (db.mysql.enable && db.mysql.binDir == null)
      "${opt "databases.mysql.binDir"} is null (it defaults to the package of services.mysql only when that is enabled): mariadb-dump and mysqldump are looked up on the backup units' PATH, which holds only coreutils, findutils, grep, sed and systemd. Set it to the bin directory of a MariaDB or MySQL client."
    ++ concatMap (
      name:
      let
        key = cfg.hosts.${name}.sshKeyFile;
      in
      optional (key != null && match "/nix/store/.*" (toString key) != null)
        "${opt "hosts.${name}.sshKeyFile"} is in the Nix store, which every user of the machine can read: keep private keys outside it."
    ) hostNames;

  optionals = cond: xs: if cond then xs else [ ];
in
{
  inherit plan dumps;
  # Each half's checks only when it is enabled, as the module applies them.
  assertions = optionals cfg.enable serverAssertions ++ optionals agentCfg.enable agentAssertions;
  warnings = optionals cfg.enable serverWarnings;
  units = {
    inherit services timers;
  };
  agent = {
    inherit authorizedKeys;
  };
}
