# The units of this machine's backup: backup.service, backup-local, backup-cloud, health, verify, failure.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
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
    # Not hardening, but what every unit gets alike: the user's secrets for the programs the
    # runner starts, read by systemd at start (a missing file fails the unit, naming it).
    // optionalAttrs (cfg.environmentFile != null) { EnvironmentFile = toString cfg.environmentFile; }
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
      # - User: the runner reads and recreates files of every owner, and switches to
      #   `databases.*.user` for the dump programs (setgroups/setgid/setuid in the child, which
      #   need CAP_SETGID and CAP_SETUID; hooks may do the same with runuser). Those calls are
      #   in @setuid, which @system-service includes, and NoNewPrivileges only stops gaining
      #   privileges (setuid binaries, file capabilities), not giving them up. Each kind of
      #   unit's CapabilityBoundingSet is in `privileges` below.
    };

  # Least privilege per kind of unit, on top of the shared sandbox above (`systemd-analyze
  # security --offline=true` exposure in parentheses, checked per unit by tests/integration/nix.rs).
  privileges = {
    # backup, backup-local, backup-on-mount and the pulls (4.1): they read every file, recreate
    # owners, modes, devices, ACLs and file capabilities, start the dump programs as their user
    # (and may kill them), and run the user's hooks, so only the capabilities no backup uses are
    # dropped. CAP_SYS_ADMIN stays: trusted.* xattrs and the source snapshots need it.
    snapshot = {
      CapabilityBoundingSet = [
        "~CAP_SYS_PTRACE CAP_SYS_BOOT CAP_SYS_TTY_CONFIG CAP_BPF CAP_SYS_PACCT CAP_LEASE CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_AUDIT_CONTROL CAP_AUDIT_READ CAP_AUDIT_WRITE CAP_MAC_ADMIN CAP_MAC_OVERRIDE CAP_IPC_LOCK CAP_SYS_CHROOT CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_SYSLOG CAP_SYS_MODULE CAP_SYS_TIME"
      ];
    };
    # backup-cloud and the offsite units (2.4): read every file of a snapshot
    # (CAP_DAC_READ_SEARCH); syncMode "move" deletes pushed files from directories that keep
    # their source's owner and mode (CAP_DAC_OVERRIDE, CAP_FOWNER). The network for the upload.
    copy = {
      CapabilityBoundingSet = [
        "CAP_DAC_READ_SEARCH"
        "CAP_DAC_OVERRIDE"
        "CAP_FOWNER"
      ];
      ProtectProc = "invisible";
      PrivateMounts = true;
      RestrictSUIDSGID = true;
    };
    # backup-verify and the pulled hosts' verifications (1.5): read every file of a snapshot and,
    # with --sample, of the sources; no network at all (the failure is reported by
    # backup-failure@, which has it).
    verify = readOnlyPrivileges // {
      PrivateNetwork = true;
      RestrictAddressFamilies = [ "AF_UNIX" ];
    };
    # The health checks and backup-failure@ (2.3): read the state, the destination's records and
    # the journal (journalctl), and send HTTP or mail.
    check = readOnlyPrivileges;
  };

  # What verify and the checks share: they read (CAP_DAC_READ_SEARCH) and never need privileged
  # system calls, set-uid files or writable executable memory.
  readOnlyPrivileges = {
    CapabilityBoundingSet = [ "CAP_DAC_READ_SEARCH" ];
    ProtectProc = "invisible";
    PrivateMounts = true;
    RestrictSUIDSGID = true;
    MemoryDenyWriteExecute = true;
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
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

  # inhibitSleep: the command runs under systemd-inhibit, which holds a "block" inhibitor lock on
  # sleep (suspend, hibernate) for as long as it runs and exits with the command's status, as
  # nixpkgs' restic and borgbackup modules do. The reason shown by `systemd-inhibit --list` is
  # the unit's description.
  inhibited =
    description: execStart:
    if cfg.inhibitSleep then
      concatStringsSep " " [
        systemdInhibit
        "--what=sleep"
        "--who=hwc-backup"
        "\"--why=${
          let
            m = match "hwc-backup: (.*)" description;
          in
          if m == null then description else head m
        }\""
        "--mode=block"
        execStart
      ]
    else
      execStart;

  mkService =
    {
      description,
      args,
      writable,
      onAC ? false,
      needsDestination ? true,
      execStart ? command args,
      # Whether the run may take long enough to be worth keeping the machine awake.
      inhibit ? true,
      # Which of `privileges` the unit gets.
      profile ? "snapshot",
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
        ExecStart = if inhibit then inhibited description execStart else execStart;
        # Exit 4: another run holds the lock, so this one did nothing. Not a failure (README,
        # exit codes): no OnFailure= notification, not listed by `systemctl --failed`.
        SuccessExitStatus = "4";
      }
      // idlePriority
      // hardening writable
      // privileges.${profile};
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
  # Filesystem snapshots of the sources (local.sourceSnapshots) are created in the source's
  # subvolume root, which must be writable: with "btrfs" the sources themselves (a root above
  # one is the user's readWritePaths). Not with "auto", the default, which must not make every
  # machine's sources writable to the units: there a source the unit cannot write is read live.
  # A path unfit for a unit file is left out, not an error.
  takesSourceSnapshots = local.sourceSnapshots == "auto" || local.sourceSnapshots == "btrfs";
  sourceSnapshotWritable = optionals (local.sourceSnapshots == "btrfs") (
    map (s: "-${s}") (filter (s: match ".*[[:space:]%\\].*" s == null) ownSources)
  );
  # The directories of the SQLite databases copied (databases.sqlite): opening one may have to
  # create its -wal/-shm files, which a read-only file system refuses.
  sqliteWritable = unique (
    map (p: "-${dirOf p}") (filter (s: match ".*[[:space:]%\\].*" s == null) sqlitePaths)
  );
  # LVM snapshots ("lvm", and "auto" where a source is on a logical volume): lvm takes its
  # file locks in /run/lock/lvm and keeps hints in /run/lvm (read-only under
  # ProtectSystem=strict otherwise; "-": absent on a machine without LVM), and the runner
  # mounts each snapshot read-only in its state directory (the @mount system calls;
  # CAP_SYS_ADMIN it keeps anyway). The block devices are reachable: no PrivateDevices or
  # DevicePolicy, as snapshots recreate device nodes. ZFS snapshots are mounted the same way
  # (@mount); zfs itself talks to /dev/zfs.
  takesLvmSnapshots = local.sourceSnapshots == "auto" || local.sourceSnapshots == "lvm";
  takesZfsSnapshots = local.sourceSnapshots == "auto" || local.sourceSnapshots == "zfs";
  # The btrfs, lvm and zfs programs go into the plan (`btrfs`, `lvm`, `zfs`); systemctl and
  # systemd-run, for quiesce, are on every NixOS unit's PATH.
  # local.quiesce and the profiles' quiesced units (quiesceUnits): a run that did not end well (killed, timed out, failed) may have left services
  # stopped or frozen. The runner arms a transient safety timer per run before it touches any
  # (hwc-backup-unquiesce-<invocation id>-start/-thaw, firing minutes later); this stop hook
  # fires it at once and disarms it. After a success there is nothing to release, and after a
  # failure the runner has already released them and removed its timers ("not loaded" is fine).
  sourceSnapshotExtra =
    optionalAttrs (takesLvmSnapshots || takesZfsSnapshots) { serviceConfig.SystemCallFilter = [ "@mount" ]; }
    // optionalAttrs takesLvmSnapshots {
      serviceConfig = {
        SystemCallFilter = [ "@mount" ];
        ReadWritePaths = [
          "-/run/lock/lvm"
          "-/run/lvm"
        ];
      };
    }
    // optionalAttrs (quiesceUnits != { }) {
      postStop = ''
        if [ "''${SERVICE_RESULT:-}" != success ]; then
          for verb in start thaw; do
            t=hwc-backup-unquiesce-$INVOCATION_ID-$verb
            if systemctl start "$t.service" 2>/dev/null; then
              echo "released the services this run held still ($t)"
              systemctl stop "$t.timer" || true
            fi
          done
        fi
      '';
    };
  # Units that take snapshots, and with them the database dumps.
  snapshotters = unique (writers ++ stagingWritable ++ sqliteWritable ++ sourceSnapshotWritable);
  # A run started at boot (Persistent=true catches up a missed one) must not dump a server
  # that is still starting. Ordering only: a remote server has no local unit, and After= on a
  # unit that does not exist is ignored.
  dumpOrder = optionalAttrs dumps {
    after = optional pgWanted.enable "postgresql.service" ++ optional mysqlWanted.enable "mysql.service";
  };
  # A PostgreSQL server reached over TCP (a host name rather than a socket directory).
  remoteDatabase =
    pgWanted.enable && db.postgresql.host != null && match "/.*" db.postgresql.host == null;
  # Units that only read snapshots; they still record results and metrics.
  readers = metricsWritable;
}
