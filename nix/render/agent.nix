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
    ) hostNames
    ++ optional (local.enable && local.quiesce != { } && local.sourceSnapshots == "none")
      "${opt "local.quiesce"} is set but ${opt "local.sourceSnapshots"} is \"none\": the services stay stopped for the whole backup, not only for the instant of a filesystem snapshot."
    # Offsite copies and runOnMount (nix/render/offsite.nix).
    ++ offsiteWarnings;
}
