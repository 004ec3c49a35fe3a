# The units of pulled hosts: backup-host-<name>.service (+ .timer), at most hostConcurrency at a time.
#
# One part of nix/render.nix (see there): a function of the whole rendering context `ctx`
# (every part's bindings and render.nix's arguments, merged lazily), returning its own
# bindings. Written with `builtins` only, like all of render.nix.
ctx:
with ctx;
{
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

  # Each pulled host's snapshots get their own health check and verification (`--host`
  # selects the host's plan): one unit per host, so that a failure names the host in its unit,
  # its notification and `systemctl --failed`, and one host's damage does not hide another's
  # result. Their timers follow the local ones: the health check with schedule.enable (at
  # health.schedule), the verification with verify.enable (at verify.schedule).
  hostHealthUnit = name: "backup-health-check-host-${name}";
  hostVerifyUnit = name: "backup-verify-host-${name}";
  hostCheckServices = listToAttrs (
    concatMap (name: [
      {
        name = hostHealthUnit name;
        value = mkService {
          description = "hwc-backup: health check of the snapshots of ${name}";
          args = [
            "health"
            "--host"
            name
          ];
          writable = readers;
          # As backup-health-check: it must run, and report, when the disk is missing.
          needsDestination = false;
          inhibit = false;
          profile = "check";
          extra = networkDeps networkTargets;
        };
      }
      {
        name = hostVerifyUnit name;
        value = mkService {
          description = "hwc-backup: verify the latest snapshot of ${name}";
          # No --sample: the live sources are on the host, not here.
          args = [
            "verify"
            "--host"
            name
          ];
          writable = readers;
          onAC = true;
          profile = "verify";
        };
      }
    ]) hostNames
  );
  hostCheckTimers = listToAttrs (
    concatMap (
      name:
      optional (cfg.schedule.enable && cfg.health.schedule != null) {
        name = hostHealthUnit name;
        value = mkTimer "hwc-backup: scheduled health check of ${name}" cfg.health.schedule;
      }
      ++ optional cfg.verify.enable {
        name = hostVerifyUnit name;
        value = mkTimer "hwc-backup: scheduled verification of ${name}" cfg.verify.schedule;
      }
    ) hostNames
  );

  # The whole run (`now` and its arguments): backup.service, backup-on-mount.service. It also
  # makes the cloud push and the copies to the offsites without a schedule of their own.
  runService =
    description: args:
    mkService {
      inherit description args;
      writable = snapshotters ++ offsiteWritable immediateOffsites;
      onAC = true;
      extra =
        builtins.foldl' mergeUnit
          (networkDeps (
            networkTargets || cfg.cloud.enable || remoteDatabase || remoteRepositories immediateOffsites
          ))
          [
            (optionalAttrs cfg.cloud.enable rcloneCache)
            (offsiteExtra immediateOffsites)
            dumpOrder
            sourceSnapshotExtra
          ];
    };

  services =
    optionalAttrs cfg.local.enable {
      backup = runService "hwc-backup: snapshot, prune${
        if cfg.cloud.enable then ", cloud push" else ""
      }${if immediateOffsites != [ ] then ", offsite copies" else ""} and notify" [ "now" ];
      backup-local = mkService {
        description = "hwc-backup: local snapshot and prune";
        args = [
          "now"
          "--local-only"
        ];
        writable = snapshotters;
        extra = mergeUnit (mergeUnit (networkDeps remoteDatabase) dumpOrder) sourceSnapshotExtra;
      };
      backup-health-check = mkService {
        description = "hwc-backup: health check of the snapshots";
        args = [ "health" ];
        writable = readers;
        # No RequiresMountsFor: the health check must run when the disk is missing, see it,
        # and report it with its own message, rather than fail as a dependency of the mount.
        needsDestination = false;
        # Quick: no reason to hold off a suspend.
        inhibit = false;
        profile = "check";
        extra = networkDeps networkTargets;
      };
      backup-verify = mkService {
        description = "hwc-backup: verify the latest snapshot";
        args = [ "verify" ] ++ optional (cfg.verify.sample > 0) "--sample ${toString cfg.verify.sample}"
          ++ optional (cfg.verify.subset or null != null) "--subset ${toString cfg.verify.subset}%";
        writable = readers;
        onAC = true;
        profile = "verify";
      };
    }
    // optionalAttrs (cfg.local.enable && cfg.cloud.enable) {
      backup-cloud = mkService {
        description = "hwc-backup: push the newest snapshot with rclone";
        args = [ "cloud" ];
        # The snapshot is read from the destination; syncMode "move" also deletes there.
        writable = writers;
        profile = "copy";
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
        // hardening [ ]
        // privileges.check;
        restartIfChanged = false;
      } (networkDeps networkTargets);
    }
    // hostServices
    // hostCheckServices
    // offsiteServices
    // onMountServices;

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
    // hostTimers
    // hostCheckTimers
    // offsiteTimers;
}
