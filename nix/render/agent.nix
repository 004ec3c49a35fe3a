# The agent (client side): authorized_keys entries that can only start `hwc-backup agent`.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
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

  anyTarget = any hasUrl httpTargets || notif.email.to != null;

  # An inline URL lands in the world-readable Nix store: warn when it looks like it carries a
  # secret (user info, a query string, or a long token-like path segment such as a UUID).
  secretLooking =
    u:
    match "[a-z]+://[^/?#]*@.*" u != null
    || match "[^?]*\\?.*" u != null
    || match ".*[/=][A-Za-z0-9_-]{20,}([/?#].*)?" u != null;
  inlineSecretWarnings = concatMap (
    field:
    let
      u = (builtins.getAttr field notif).url;
    in
    optional (
      u != null && secretLooking u
    ) "${opt "notifications.${field}.url"} looks like it carries a secret (user info, a query string or a token), and it is written into the world-readable Nix store: put the URL in a file outside the store and set ${opt "notifications.${field}.urlFile"} instead (config.age.secrets.<name>.path with agenix, config.sops.secrets.<name>.path with sops-nix)."
  ) [
    "ntfy"
    "webhook"
    "healthchecks"
  ];

  # Options that do nothing in the configuration they are set in. The render sees values, not
  # definitions, so an option counts as set when it differs from its default.
  noEffectWarnings =
    optional (cfg.verify.enable && !local.enable && !pulls)
      "${opt "verify.enable"} has no effect without ${opt "local.enable"} or ${opt "hosts"}: there are no snapshots to verify."
    ++ optional (cfg.verify.sample > 0 && !local.enable)
      "${opt "verify.sample"} has no effect without ${opt "local.enable"}: it compares this machine's own snapshots with its live sources (a pulled host's verification reads only its snapshots)."
    ++ optional (
      !cfg.schedule.enable && cfg.health.schedule != null && cfg.health.schedule != "weekly"
    ) "${opt "health.schedule"} has no effect without ${opt "schedule.enable"}: the health check timers are active together with the backup timers."
    ++ concatMap (
      name:
      optional (cfg.hosts.${name}.schedule != null && !cfg.schedule.enable)
        "${opt "hosts.${name}.schedule"} has no effect without ${opt "schedule.enable"}: backup-host-${name}.timer exists only with it."
    ) hostNames
    ++ optional (cfg.hostConcurrency > 1 && length hostNames < 2)
      "${opt "hostConcurrency"} has no effect with fewer than two ${opt "hosts"}."
    ++ optionals (!cfg.cloud.enable) (
      noEffect cloudOnlySet "cloud.enable" ", which turns on the cloud push (an offsite has its own rcloneConfigFile and bandwidthLimit)."
    )
    ++ optional (
      !local.enable && (cfg.preBackupScript != "" || cfg.postBackupScript != "" || cfg.readWritePaths != [ ])
    ) "${opt "preBackupScript"}, ${opt "postBackupScript"} and ${opt "readWritePaths"} have no effect without ${opt "local.enable"}: pulls of other hosts run no hooks."
    ++ optional (!agentCfg.enable && (agentCfg.authorizedKeys != [ ] || agentCfg.allowedPaths != [ ]))
      "${opt "agent.authorizedKeys"} and ${opt "agent.allowedPaths"} have no effect without ${opt "agent.enable"}."
    ++ optionals (!local.enable) (
      noEffect localOnlySet "local.enable" ", which turns on this machine's own backup (a pulled host has its own sources and exclusions in ${opt "hosts.<name>"})."
    )
    ++ optionals (!cfg.verify.enable) (
      noEffect verifyOnlySet "verify.enable" ", which turns on the scheduled verification."
    )
    ++ optional (!cfg.schedule.enable && cfg.schedule.timeOfDay != defaults.schedule.timeOfDay)
      "${opt "schedule.timeOfDay"} has no effect without ${opt "schedule.enable"}: it places the backup timers, which exist only with it.";

  # One warning for the options `set` (names below hwc.system.services.backup, those set away
  # from their defaults) that do nothing without the option `without`; none when `set` is empty.
  noEffect =
    set: without: why:
    optional (set != [ ]) "${concatStringsSep ", " (map opt set)} ${
      if length set == 1 then "has" else "have"
    } no effect without ${opt without}${why}";

  # Options of this machine's own backup set away from their defaults (`local.enable` decides
  # whether they matter); the destination, retention and store serve pulled hosts too.
  defaults = import ../defaults.nix;
  localOnlySet =
    optional (local.sources != defaults.local.sources) "local.sources"
    ++ optional (local.excludePatterns != defaults.local.excludePatterns) "local.excludePatterns"
    ++ optional (!local.oneFileSystem) "local.oneFileSystem"
    ++ optional local.excludeCaches "local.excludeCaches"
    ++ optional (local.excludeIfPresent != [ ]) "local.excludeIfPresent"
    ++ optional (local.excludeLargerThan != null) "local.excludeLargerThan"
    ++ optional (local.sourceSnapshots != "auto") "local.sourceSnapshots"
    ++ optional (local.quiesce != { }) "local.quiesce";
  cloudOnlySet =
    optional (cfg.cloud.provider != defaults.cloud.provider) "cloud.provider"
    ++ optional (cfg.cloud.remotePath != defaults.cloud.remotePath) "cloud.remotePath"
    ++ optional (cfg.cloud.syncMode != defaults.cloud.syncMode) "cloud.syncMode"
    ++ optional (cfg.cloud.bandwidthLimit != null) "cloud.bandwidthLimit"
    ++ optional (cfg.cloud.rcloneConfigFile != null) "cloud.rcloneConfigFile"
    ++ optional (cfg.cloud.keepHistory != defaults.cloud.keepHistory) "cloud.keepHistory"
    ++ optional (cfg.cloud.maxAge != defaults.cloud.maxAge) "cloud.maxAge";
  verifyOnlySet =
    optional (cfg.verify.schedule != defaults.verify.schedule) "verify.schedule"
    ++ optional (cfg.verify.sample > 0) "verify.sample"
    ++ optional (cfg.verify.subset != null) "verify.subset";

  serverWarnings =
    optional (!local.enable && !cfg.cloud.enable && !pulls)
      "${opt "enable"} is set but neither ${opt "local.enable"} nor ${opt "cloud.enable"} is, and ${opt "hosts"} is empty: no backup will run."
    ++ optional (!local.useRsync)
      "${opt "local.useRsync"} = false has no effect: hwc-backup always makes incremental, hard-linked snapshots."
    ++ optional (cfg.schedule.enable && !local.enable && !pulls)
      "${opt "schedule.enable"} has no effect without ${opt "local.enable"} or ${opt "hosts"}."
    ++ optional (cfg.protonDrive.enable && !cfg.cloud.enable && protonOffsites == [ ])
      "${opt "protonDrive.enable"} has no effect without ${opt "cloud.enable"} or an ${opt "offsite"} whose repository starts with \"rclone:proton:\" and that sets no rcloneConfigFile."
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
    ++ optional (pgWanted.enable && db.postgresql.binDir == null)
      "${opt "databases.postgresql.binDir"} is null (it defaults to the package of services.postgresql only when that is enabled): pg_dump and pg_dumpall are looked up on the backup units' PATH, which holds only coreutils, findutils, grep, sed, systemd, util-linux and getent. Set it to the bin directory of a PostgreSQL client of the server's major version or newer."
    ++ optional (mysqlWanted.enable && db.mysql.binDir == null)
      "${opt "databases.mysql.binDir"} is null (it defaults to the package of services.mysql only when that is enabled): mariadb-dump and mysqldump are looked up on the backup units' PATH, which holds only coreutils, findutils, grep, sed, systemd, util-linux and getent. Set it to the bin directory of a MariaDB or MySQL client."
    ++ inlineSecretWarnings
    ++ noEffectWarnings
    ++ optional (local.enable && quiesceUnits != { } && local.sourceSnapshots == "none")
      "${opt "local.quiesce"} is set but ${opt "local.sourceSnapshots"} is \"none\": the services stay stopped for the whole backup, not only for the instant of a filesystem snapshot."
    # Offsite copies and runOnMount (nix/render/offsite.nix).
    ++ offsiteWarnings
    # The service profiles (nix/profiles/).
    ++ profileWarnings;
}
