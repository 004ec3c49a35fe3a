# hwc.system.services.backup: hard-linked, rotated, verifiable snapshots driven by systemd timers.
#
# The options follow the seed README (local.*, cloud.*, protonDrive.*, schedule.*,
# notifications.*, pre/postBackupScript), plus hosts.* (a server pulling other machines over
# ssh) and agent.* (a client letting a server pull it). Everything they turn into (the JSON plan
# at /etc/hwc-backup/config.json, the units, the authorized_keys entries, the assertions) is
# computed by the pure function in ../nix/render.nix, which the offline tests evaluate without
# nixpkgs; this file only declares the options and wires the result into NixOS.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.hwc.system.services.backup;

  profileSet = import ../nix/profiles;
  # Option defaults the render compares with (its "has no effect" warnings): one place.
  defaults = import ../nix/defaults.nix;

  configFile = "/etc/hwc-backup/config.json";

  rendered = import ../nix/render.nix {
    inherit cfg configFile;
    package = cfg.package;
    # Hooks stop at the first failing command, as NixOS `script`s do.
    writeHook = name: text: pkgs.writeShellScript name "set -e\n${text}";
    rclone = lib.getExe pkgs.rclone;
    # The pull units' PATH holds no ssh; the plan names it (hosts.<name>.ssh).
    ssh = lib.getExe' pkgs.openssh "ssh";
    flock = lib.getExe' pkgs.util-linux "flock";
    # Offsite copies: restic (the plan names it, lazily: only an offsite forces the package)
    # and the sleep inhibitor that wraps the long-running units' commands.
    restic = lib.getExe cfg.resticPackage;
    btrfsProgs = pkgs.btrfs-progs;
    # Copies the SQLite databases (databases.sqlite, the profiles'); forced only when one is listed.
    sqlite3 = lib.getExe' (lib.getBin pkgs.sqlite) "sqlite3";
    lvm = lib.getExe' pkgs.lvm2 "lvm";
    # Only where ZFS is enabled, so that "auto" does not pull ZFS into other machines' plans.
    zfs =
      let
        fss = config.boot.supportedFilesystems or { };
        on = if builtins.isList fss then builtins.elem "zfs" fss else fss.zfs or false;
      in
      if on || cfg.local.sourceSnapshots == "zfs" then lib.getExe' (config.boot.zfs.package or pkgs.zfs) "zfs" else null;
    # The programs the runner starts by name, found through each unit's PATH as NixOS sets it
    # from `path` (which holds only coreutils, findutils, grep, sed and systemd otherwise):
    # util-linux's ionice (idle I/O class of the snapshot threads) and blkid (a btrfs drive's
    # UUID), and getent (the database dumps' users from NSS). Everything else is named by its
    # store path (rclone, restic, ssh, flock, systemd-inhibit, btrfs, the hooks, binDir).
    path = [
      pkgs.util-linux
      pkgs.getent
    ];
    systemdInhibit = lib.getExe' (config.systemd.package or pkgs.systemd) "systemd-inhibit";
    # agenix decrypts `age.secrets.<name>` to its `.path` (/run/agenix/<name> by default);
    # without agenix the conventional path is used, for a secret put there by other means.
    secretPath = name: lib.attrByPath [ "age" "secrets" name "path" ] "/run/agenix/${name}" config;
  };

  planFile = (pkgs.formats.json { }).generate "hwc-backup-config.json" rendered.plan;

  # A bad plan fails `nixos-rebuild` instead of the 02:00 run. Skipped when cross-compiling:
  # the runner cannot run on the build machine then.
  configCheck = pkgs.runCommand "hwc-backup-config-check" { } ''
    ${lib.getExe cfg.package} config check ${planFile}
    touch $out
  '';

  # Scalar settings (hardening, priorities, ConditionACPower) are defaults, so a machine that
  # must loosen one sets it plainly; lists keep normal priority so that additions
  # (ReadWritePaths, RequiresMountsFor) add to ours.
  softDefaults =
    unit:
    let
      soft = lib.mapAttrs (_: value: if lib.isList value then value else lib.mkDefault value);
    in
    unit
    // lib.optionalAttrs (unit ? serviceConfig) { serviceConfig = soft unit.serviceConfig; }
    // lib.optionalAttrs (unit ? unitConfig) { unitConfig = soft unit.unitConfig; }
    // lib.optionalAttrs (unit ? timerConfig) { timerConfig = soft unit.timerConfig; };

  # Types shared by several options.
  keepCount =
    lib.types.addCheck lib.types.int (n: n >= -1)
    // {
      description = "integer ≥ -1 (-1 keeps every period)";
    };
  duration = lib.types.strMatching "([0-9]+[smhdw])+";
  # Each database name becomes a file name in the staging directory.
  dbName = lib.types.strMatching "[^./][^/]*";
  dbUser = lib.types.strMatching "[^/:[:space:]]+";
  # As the runner checks them (hosts.<name>.address/user in docs/plan.md).
  sshAddress = lib.types.strMatching "[^-@[:space:]][^@[:space:]]*";
  sshUser = lib.types.strMatching "[^-@/:[:space:]][^@/:[:space:]]*";
  # What goes into one authorized_keys line.
  oneLine = lib.types.strMatching "[^\n\r]*" // {
    description = "single-line string";
  };

  mkKeep =
    period: default:
    lib.mkOption {
      type = keepCount;
      inherit default;
      example = default + 1;
      description = ''
        How many ${period} snapshots to keep: the newest snapshot of each of the last N
        ${period} periods that have one, as `restic forget --keep-${period} N` selects them.
        `0` disables the rule, `-1` keeps one for every such period.
      '';
    };

  # A retention override of a pulled host: null takes the `local.keep*` value.
  mkHostKeep =
    name: field:
    lib.mkOption {
      type = lib.types.nullOr keepCount;
      default = null;
      example = 14;
      description = ''
        This host's `${field}`: like {option}`local.${field}`, for the snapshots of `${name}`.
        `null` uses {option}`local.${field}`.
      '';
    };

  # Exclusions by tag file, marker file and size, for `local` and each of `hosts.<name>`
  # (`where` says which machine walks them).
  excludeCachesOption =
    where:
    lib.mkOption {
      type = lib.types.bool;
      default = false;
      example = true;
      description = ''
        Leave out the contents of cache directories${where}: a directory holding a regular file
        `CACHEDIR.TAG` whose first 43 bytes are `Signature: 8a477f597d28d172789f06886806bc55`
        (the Cache Directory Tagging Specification, written by cargo, ccache, pip, borg …) is
        kept with that file only, as `tar --exclude-caches` and restic's `--exclude-caches` do.
        A tag with other contents, or a symlink named so, excludes nothing. Counted as
        `excludedCaches` in the run report.
      '';
    };
  excludeIfPresentOption =
    where:
    lib.mkOption {
      type = lib.types.listOf (lib.types.strMatching "[^/]+");
      default = [ ];
      example = [ ".nobackup" ];
      description = ''
        File names that mark a directory${where} as not to be backed up: a directory holding
        an entry with one of these names is kept with that entry only (restic's
        `--exclude-if-present`). Counted as `excludedIfPresent`.
      '';
    };
  excludeLargerThanOption =
    where:
    lib.mkOption {
      type = lib.types.nullOr (lib.types.strMatching "[0-9]+ *(([kKmMgGtT]([iI]?[bB])?)|[bB])?");
      default = null;
      example = "4G";
      description = ''
        Leave out regular files${where} larger than this: a number of bytes with an optional
        binary suffix `K`, `M`, `G`, `T` (powers of 1024; `4G`, `512M`, `100KiB`). `null`: no
        limit. Counted as `excludedLarge`.
      '';
    };

  # One machine pulled over ssh (`hosts.<name>`); rendered into the plan's `hosts.<name>`.
  hostModule =
    { name, ... }:
    {
      options = {
        address = lib.mkOption {
          type = sshAddress;
          default = name;
          defaultText = lib.literalMD "the attribute name, `<name>`";
          example = "web1.lan";
          description = "Host name or address that ssh connects to.";
        };

        user = lib.mkOption {
          type = sshUser;
          default = "root";
          example = "backup";
          description = ''
            User that the server logs in as and the agent runs as on the host. Reading every
            source usually needs `root` (with {option}`agent.enable` on the host, its
            `authorized_keys` entry can only start the agent, for the paths it allows).
          '';
        };

        port = lib.mkOption {
          type = lib.types.ints.between 1 65535;
          default = 22;
          example = 2222;
          description = "ssh port of the host.";
        };

        sshKeyFile = lib.mkOption {
          type = lib.types.nullOr secretFile;
          default = null;
          example = "/root/.ssh/backup_ed25519";
          description = ''
            Private key to log in with (`ssh -i`, only this key is offered). `null`: root's
            default keys. A path outside the Nix store, as a string (a store path or a path
            literal such as `./key` is refused): e.g. `config.age.secrets.backup-ssh-key.path`.
          '';
        };

        sshOptions = lib.mkOption {
          type = lib.types.listOf (lib.types.strMatching "[A-Za-z0-9]+=[^\n\r]*");
          default = [ ];
          example = [
            "UserKnownHostsFile=/etc/hwc-backup/known_hosts"
            "StrictHostKeyChecking=yes"
          ];
          description = ''
            Extra `ssh -o Key=value` options, before the runner's own (batch mode, keep-alives),
            so they win. ssh runs in batch mode: the host's key must already be known, e.g.
            from `programs.ssh.knownHosts`.
          '';
        };

        sources = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          example = [
            "/home"
            "/etc"
            "/var/lib"
          ];
          description = ''
            Absolute paths on the host to back up, each stored under its own path in the
            snapshot. The host's agent must allow each of them
            ({option}`agent.allowedPaths` there).
          '';
        };

        excludePatterns = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
          example = [
            ".cache"
            "/var/lib/docker/"
          ];
          description = ''
            What to leave out, with the rules of {option}`local.excludePatterns` (which do not
            apply to pulled hosts). The host's agent may add its own.
          '';
        };

        oneFileSystem = lib.mkOption {
          type = lib.types.bool;
          default = true;
          example = false;
          description = "Do not descend into other file systems mounted below a source on the host.";
        };

        excludeCaches = excludeCachesOption " on the host (its agent walks them)";
        excludeIfPresent = excludeIfPresentOption " on the host";
        excludeLargerThan = excludeLargerThanOption " on the host";

        devices = lib.mkOption {
          type = lib.types.bool;
          default = false;
          example = true;
          description = ''
            Recreate the host's device nodes (character and block devices) in its snapshots.
            Off, they are not created on this server, only counted (`devicesSkipped` in the run
            report) and logged: a pulled host could otherwise plant a node such as a copy of
            `/dev/sda` owned by anyone. FIFOs are always kept. Turn it on only for a host
            trusted as much as this server (e.g. to back up a container's root file system).
          '';
        };

        keepLast = mkHostKeep name "keepLast";
        keepHourly = mkHostKeep name "keepHourly";
        keepDaily = mkHostKeep name "keepDaily";
        keepWeekly = mkHostKeep name "keepWeekly";
        keepMonthly = mkHostKeep name "keepMonthly";
        keepYearly = mkHostKeep name "keepYearly";

        keepWithin = lib.mkOption {
          type = lib.types.nullOr (lib.types.strMatching "([0-9]+[ymdh])+");
          default = null;
          example = "30d";
          description = ''
            This host's `keepWithin`, like {option}`local.keepWithin`. `null` uses
            {option}`local.keepWithin`.
          '';
        };

        schedule = lib.mkOption {
          type = lib.types.nullOr lib.types.nonEmptyStr;
          default = null;
          example = "hourly";
          description = ''
            When `backup-host-<name>.timer` pulls this host, in the syntax of
            {option}`schedule.frequency` (at {option}`schedule.timeOfDay`). `null` uses
            {option}`schedule.frequency`. The timer exists with {option}`schedule.enable`.
          '';
        };
      };
    };

  # ----------------------------------------------------------------------------------------------
  # Offsite copies (offsite.<name>): restic repositories fed from the local snapshots (issue 13)
  # ----------------------------------------------------------------------------------------------

  # A secret is a file read at run time, never a value in the world-readable Nix store: a path
  # string outside the store (a path literal such as ./secret would be copied into it).
  secretFile =
    lib.types.pathWith {
      inStore = false;
      absolute = true;
    }
    // {
      description = "absolute path not in the Nix store, as a string (a secret decrypted at run time: config.age.secrets.<name>.path with agenix, config.sops.secrets.<name>.path with sops-nix)";
    };

  # A notification URL read from a file at run time (notifications.*.urlFile).
  mkUrlFile =
    what: secret:
    lib.mkOption {
      type = lib.types.nullOr secretFile;
      default = null;
      example = lib.literalExpression "config.age.secrets.${secret}.path";
      description = ''
        File holding the ${what} (one line), read by the runner at each delivery, so that the
        secret in it stays out of the world-readable Nix store: a path outside the store, as a
        string (`config.age.secrets.<name>.path` with agenix, `config.sops.secrets.<name>.path`
        with sops-nix). Instead of the inline `url`, not with it.
      '';
    };

  # As restic's --keep-* take them; -1 becomes "unlimited" in the plan.
  mkOffsiteKeep =
    period: default:
    lib.mkOption {
      type = keepCount;
      inherit default;
      example = default + 2;
      description = ''
        `restic forget --keep-${period} N` on this offsite's repository: its own rule,
        independent of {option}`local.keep*`. `0` disables the rule, `-1` keeps one for every
        such period.
      '';
    };

  offsiteModule =
    { name, ... }:
    {
      options = {
        repository = lib.mkOption {
          type = lib.types.strMatching "[^-\n\r][^\n\r]*" // {
            description = "restic repository string (single line, not starting with `-`)";
          };
          example = "rclone:proton:backups/restic";
          description = ''
            The restic repository (`restic -r`): a local path (`/mnt/nas/restic`), `sftp:…`,
            `s3:…`, `b2:…`, `rest:…` or `rclone:<remote>:<path>` for providers restic reaches
            through rclone, such as Proton Drive. It is created (`restic init`) on first use.
            A local path gets `RequiresMountsFor=` and is made writable to the units.
          '';
        };

        passwordFile = lib.mkOption {
          type = secretFile;
          example = "/run/agenix/restic-password";
          description = ''
            File holding the repository's password (`restic --password-file`); it must exist and
            not be empty when the copy runs. Keep it out of the Nix store: use agenix
            (`config.age.secrets.restic-password.path`) or sops-nix
            (`config.sops.secrets.restic-password.path`). Without it nothing in the repository
            can be read: keep a copy away from this machine.
          '';
        };

        environmentFile = lib.mkOption {
          type = lib.types.nullOr secretFile;
          default = null;
          example = "/run/agenix/restic-b2-env";
          description = ''
            File of `KEY=value` lines added to restic's environment: the backend's credentials
            (`AWS_ACCESS_KEY_ID`, `B2_ACCOUNT_KEY`, …). Keep it out of the Nix store.
          '';
        };

        rcloneConfigFile = lib.mkOption {
          type = lib.types.nullOr secretFile;
          default = null;
          defaultText = lib.literalMD "the agenix secret of {option}`protonDrive` when it is enabled and the repository starts with `rclone:proton:`, otherwise `null`";
          example = "/run/agenix/rclone-config";
          description = ''
            rclone config (`RCLONE_CONFIG`) defining the remote of an `rclone:` repository.
            `null` (with no Proton Drive default): root's own rclone config. Keep it out of the
            Nix store.
          '';
        };

        keepLast = mkOffsiteKeep "last" 0;
        keepHourly = mkOffsiteKeep "hourly" 0;
        keepDaily = mkOffsiteKeep "daily" 7;
        keepWeekly = mkOffsiteKeep "weekly" 5;
        keepMonthly = mkOffsiteKeep "monthly" 12;
        keepYearly = mkOffsiteKeep "yearly" 0;

        keepWithin = lib.mkOption {
          type = lib.types.nullOr (lib.types.strMatching "([0-9]+[ymdh])+");
          default = null;
          example = "3m";
          description = ''
            Also keep every offsite snapshot younger than this, relative to the newest one
            (`restic forget --keep-within`; units `y`, `m` (months), `d`, `h`).
          '';
        };

        schedule = lib.mkOption {
          type = lib.types.nullOr lib.types.nonEmptyStr;
          default = null;
          example = "Sun 03:00";
          description = ''
            `null`: the newest snapshot is copied right after each successful or partial local
            run (`backup.service`; `backup-local.service` skips it). A systemd calendar
            expression ({manpage}`systemd.time(7)`, used as it is): only
            `backup-offsite-${name}.timer` copies, at these times, the newest local snapshot.
          '';
        };

        check = {
          schedule = lib.mkOption {
            type = lib.types.nullOr lib.types.nonEmptyStr;
            default = null;
            example = "monthly";
            description = ''
              systemd calendar expression for `backup-offsite-check-${name}.timer`, which runs
              `hwc-backup verify --offsite ${name}` (`restic check` and a comparison of sampled
              files with the local manifest). `null`: no scheduled check.
            '';
          };

          readDataSubset = lib.mkOption {
            type = lib.types.nullOr (lib.types.strMatching "(0|[1-9][0-9]*)%");
            default = "5%";
            example = "10%";
            description = ''
              How much of the repository's data each check downloads and reads
              (`restic check --read-data-subset`, a whole percentage more than 0 and at most
              100), rotated so
              that repeated checks cover the whole repository. `null`: only the structure is
              checked.
            '';
          };
        };

        bandwidthLimit = lib.mkOption {
          type = lib.types.nullOr lib.types.ints.positive;
          default = null;
          example = 2048;
          description = "Upload limit in KiB/s (`restic --limit-upload`); `null` for none.";
        };

        maxAge = lib.mkOption {
          type = duration;
          default = "7d";
          example = "8d";
          description = ''
            The health check fails when this offsite's last good copy is older than this (units
            `s`, `m`, `h`, `d`, `w`; not zero).
          '';
        };
      };
    };
in
{
  options.hwc.system.services.backup = {
    enable = lib.mkEnableOption "hwc-backup, hard-linked and rotated snapshots of this machine";

    package = lib.mkPackageOption pkgs "hwc-backup" {
      example = "inputs.hwc-backup.packages.\${pkgs.stdenv.hostPlatform.system}.default";
    };

    hostName = lib.mkOption {
      type = lib.types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      example = "laptop";
      description = ''
        Name of the directory under {option}`local.mountPoint` that holds this machine's
        snapshots (`<mountPoint>/<hostName>/daily/…`). Letters, digits, `.`, `_` and `-`,
        at most 64 characters.
      '';
    };

    local = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = false;
        example = true;
        description = ''
          Whether to enable local snapshots to an external drive, NAS or DAS mounted at
          {option}`local.mountPoint`.

          A snapshot taken by hand before an upgrade is an ordinary snapshot of its day,
          which the next prune may remove. To keep one from before `nixos-rebuild switch`,
          pin it: `hwc-backup now --pin --note "before switch"` (kept until
          `hwc-backup unpin NAME`), or `hwc-backup pin latest --until 2025-03-01`; a
          `rebuild-switch` wrapper that does it every time is in the README ("Pin a snapshot
          before nixos-rebuild switch").
        '';
      };

      mountPoint = lib.mkOption {
        type = lib.types.str;
        default = "/mnt/backup";
        example = "/mnt/nas-backup";
        description = ''
          Where the backup destination is mounted. Snapshots go to
          `<mountPoint>/<hostName>/`. The units require this mount (`RequiresMountsFor=`) and, with
          {option}`local.requireMountPoint`, the runner refuses to write to a bare directory.
        '';
      };

      requireMountPoint = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = ''
          Refuse to run unless {option}`local.mountPoint` is a mount point, so that an unplugged
          drive does not fill the root file system. Set to `false` for a destination that is a
          plain directory.
        '';
      };

      runOnMount = lib.mkOption {
        type = lib.types.bool;
        default = false;
        example = true;
        description = ''
          Also start a backup whenever {option}`local.mountPoint` gets mounted
          (`backup-on-mount.service`, wanted by the mount unit): a drive plugged in once a week
          is backed up then, not only at the scheduled time when it may be absent. The run is
          skipped when the destination's newest complete snapshot is younger than
          {option}`local.runOnMountMinInterval`, so a remount does not start a second one.
        '';
      };

      runOnMountMinInterval = lib.mkOption {
        type = duration;
        default = "6h";
        example = "1d";
        description = ''
          With {option}`local.runOnMount`: the backup started by mounting the destination is
          skipped (successfully) when its newest complete snapshot is younger than this
          (`hwc-backup now --min-interval`; units `s`, `m`, `h`, `d`, `w`).
        '';
      };

      useRsync = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = true;
        description = ''
          Make incremental snapshots: unchanged files are hard links to the previous snapshot.
          hwc-backup always works this way (with its own engine, not rsync); `false` is accepted
          for compatibility and only produces a warning.
        '';
      };

      keepLast = lib.mkOption {
        type = keepCount;
        default = 0;
        example = 3;
        description = "Always keep the N newest snapshots (`restic forget --keep-last`). `-1` keeps all.";
      };
      keepHourly = mkKeep "hourly" 0;
      keepDaily = mkKeep "daily" 7;
      keepWeekly = mkKeep "weekly" 4;
      keepMonthly = mkKeep "monthly" 6;
      keepYearly = mkKeep "yearly" 0;

      keepWithin = lib.mkOption {
        type = lib.types.nullOr (lib.types.strMatching "([0-9]+[ymdh])+");
        default = null;
        example = "14d";
        description = ''
          Also keep every snapshot younger than this, relative to the newest one
          (`restic forget --keep-within`; units `y`, `m` (months), `d`, `h`).
        '';
      };

      minSpaceGB = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 10;
        example = 50;
        description = "Refuse to start a snapshot with less than this many GiB free on the destination.";
      };

      makeRoom = lib.mkOption {
        type = lib.types.bool;
        default = false;
        example = true;
        description = ''
          Instead of refusing a run that would not leave {option}`local.minSpaceGB` free, first
          remove the oldest snapshots, one at a time, until it does (Time Machine's thinning).
          Never the newest, never below {option}`health.minBackups` snapshots; each removal is
          logged with its reason. `hwc-backup prune --dry-run --make-room` shows what it would
          remove.
        '';
      };

      store = lib.mkOption {
        type = lib.types.enum [
          "auto"
          "hardlink"
          "btrfs"
        ];
        default = "auto";
        example = "btrfs";
        description = ''
          How snapshots are stored. `"hardlink"`: a directory per snapshot, unchanged files
          hard-linked to the previous one (any filesystem). `"btrfs"`: a read-only btrfs
          subvolume per snapshot, made as a snapshot of the previous one, so a run writes only
          what changed (a changed large file only its changed blocks) and deleting a snapshot is
          one subvolume delete; refused on anything but btrfs. `"auto"`: btrfs subvolumes when
          {option}`local.mountPoint` is on btrfs and the runner can create subvolumes there,
          else hard links. Hard-link snapshots already on the drive stay as they are. The
          backup unit keeps `CAP_SYS_ADMIN`, which the subvolume delete ioctl needs; no `btrfs`
          program is used.
        '';
      };

      sources = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = defaults.local.sources;
        example = [
          "/home"
          "/etc/nixos"
          "/var/lib/postgresql-dumps"
        ];
        description = ''
          Absolute paths to back up. Each is stored under its own path inside the snapshot
          (`…/daily/<time>/home/alice/notes.txt`).
        '';
      };

      excludePatterns = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = defaults.local.excludePatterns;
        example = [
          ".cache"
          "/home/*/Downloads/"
          "**/target/"
        ];
        description = ''
          What to leave out, with rsync's rules: no slash matches a name at any depth, a slash
          inside matches the end of the path, a leading `/` anchors at the file system root, a
          trailing `/` matches directories only, `*` stays within a name and `**` crosses `/`.
        '';
      };

      oneFileSystem = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = "Do not descend into other file systems mounted below a source.";
      };

      # Exclusions by tag file, marker file and size (issue 14); the same for hosts.<name>.
      excludeCaches = excludeCachesOption "";
      excludeIfPresent = excludeIfPresentOption "";
      excludeLargerThan = excludeLargerThanOption "";

      sourceSnapshots = lib.mkOption {
        type = lib.types.enum [
          "auto"
          "btrfs"
          "zfs"
          "lvm"
          "none"
        ];
        default = "auto";
        example = "btrfs";
        description = ''
          Read the sources from read-only filesystem snapshots taken just before the walk, so
          that a snapshot holds every file as it was at one instant. `"btrfs"`: a read-only
          snapshot of each source's subvolume; `"zfs"`: a snapshot of each source's dataset,
          mounted read-only in the state directory; `"lvm"`: a snapshot of each source's
          logical volume ({option}`local.lvmSnapshotSize`), mounted read-only in the state
          directory (a source that cannot have the kind asked for fails the run);
          `"auto"`: whichever of the three holds each source's filesystem, the others read live
          (said once per run); `"none"`: read the live filesystem. With `"btrfs"` the backup units may write to
          the sources (`ReadWritePaths=`), where the snapshots are created; a source below its
          subvolume's root needs that root in {option}`readWritePaths`. With `"auto"` they may
          not, unless {option}`readWritePaths` says so: a source the units cannot write is read
          live. See the README, "Consistent sources".
        '';
      };

      lvmSnapshotSize = lib.mkOption {
        type = lib.types.nullOr (
          lib.types.strMatching "([0-9]+(\\.[0-9]+)?[bBsSkKmMgGtTpPeE]?)|([1-9][0-9]*%(ORIGIN|VG|FREE|PVS))"
        );
        default = null;
        example = "5G";
        description = ''
          The copy-on-write space of each LVM source snapshot ({option}`local.sourceSnapshots`
          `"lvm"` or `"auto"`): a size (`lvcreate -L`, e.g. `"5G"`) or a share (`lvcreate -l`,
          e.g. `"20%ORIGIN"`, `"50%FREE"`). It must hold every block written to the volume while
          the backup reads it; a snapshot that fills up becomes invalid and the run fails
          (nothing is published). `null`: `"10%ORIGIN"`. The volume group needs that much
          free space. Thin volumes take their snapshots' space from their pool (no size).
        '';
      };

      quiesce = lib.mkOption {
        type = lib.types.attrsOf (
          lib.types.submodule (_: {
            options.mode = lib.mkOption {
              type = lib.types.enum [
                "stop"
                "freeze"
              ];
              default = "stop";
              example = "freeze";
              description = "`systemctl stop` and `start`, or `systemctl freeze` and `thaw` (the cgroup freezer).";
            };
          })
        );
        default = { };
        example = {
          "postgresql.service".mode = "stop";
          home-assistant.mode = "freeze";
        };
        description = ''
          Services held still while the filesystem snapshots are taken ({option}`local.sourceSnapshots`),
          by unit name (`.service` is added to a name without a suffix): each active one is
          stopped or frozen right before the snapshots and started or thawed right after they
          exist, not after the copy. A transient timer started first releases them should the
          run die. Without filesystem snapshots they stay stopped for the whole walk.
        '';
      };
    };

    cloud = {
      enable = lib.mkEnableOption "pushing the newest local snapshot to a cloud remote with rclone";

      provider = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9_.+@-]*";
        default = defaults.cloud.provider;
        example = "b2";
        description = ''
          `"proton-drive"` uses the `proton` remote of the rclone config from
          {option}`protonDrive`; any other value is the name of a remote defined in
          {option}`cloud.rcloneConfigFile`.
        '';
      };

      remotePath = lib.mkOption {
        type = lib.types.str;
        default = defaults.cloud.remotePath;
        example = "Backups/laptop";
        description = "Directory on the remote that receives the snapshot.";
      };

      syncMode = lib.mkOption {
        type = lib.types.enum [
          "sync"
          "copy"
          "move"
        ];
        default = defaults.cloud.syncMode;
        example = "copy";
        description = ''
          rclone verb: `sync` mirrors the snapshot (deletes what it no longer has), `copy` only
          adds, `move` also deletes the pushed files from the local destination.
        '';
      };

      bandwidthLimit = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "10M";
        description = "rclone `--bwlimit` (for example `10M` for 10 MiB/s, or a timetable); `null` for none.";
      };

      rcloneConfigFile = lib.mkOption {
        type = lib.types.nullOr secretFile;
        default = null;
        defaultText = lib.literalMD "the agenix secret of {option}`protonDrive` when it is enabled, otherwise `null` (root's own rclone config)";
        example = "/run/agenix/rclone-b2";
        description = "rclone config file holding the remote's credentials: a path outside the Nix store, as a string (`config.age.secrets.<name>.path` with agenix, `config.sops.secrets.<name>.path` with sops-nix).";
      };

      keepHistory = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = defaults.cloud.keepHistory;
        example = 90;
        description = ''
          How many history folders to keep on the remote, under `<remotePath>/<hostName>/history/`:
          one per push, holding the files that push replaced or deleted (rclone's
          `--backup-dir`). The oldest beyond this number are purged; `0` keeps no history.
        '';
      };

      maxAge = lib.mkOption {
        type = duration;
        default = defaults.cloud.maxAge;
        example = "2d";
        description = ''
          The health check fails when the last successful push is older than this (units `s`,
          `m`, `h`, `d`, `w`).
        '';
      };
    };

    protonDrive = {
      enable = lib.mkEnableOption "Proton Drive as the cloud target, with the rclone config from an agenix secret";

      secretName = lib.mkOption {
        type = lib.types.str;
        default = "rclone-proton-config";
        example = "rclone-proton";
        description = ''
          Name of the agenix secret (`age.secrets.<name>`) holding an rclone config with a
          `proton` remote. Its decrypted path becomes the cloud push's rclone config.
        '';
      };
    };

    schedule = {
      enable = lib.mkEnableOption "the `backup.timer` that runs backups automatically";

      frequency = lib.mkOption {
        type = lib.types.nonEmptyStr;
        default = "daily";
        example = "Mon,Wed,Fri";
        description = ''
          `hourly`, `daily`, `weekly` (Sundays), `monthly`, `quarterly`, `semiannually` or
          `yearly`, at {option}`schedule.timeOfDay`; or a systemd calendar expression
          ({manpage}`systemd.time(7)`). An expression without a time of day (`Mon,Wed,Fri`)
          runs at {option}`schedule.timeOfDay`; one with a time is used as it is.
        '';
      };

      timeOfDay = lib.mkOption {
        type = lib.types.strMatching "([01][0-9]|2[0-3]):[0-5][0-9]";
        default = defaults.schedule.timeOfDay;
        example = "03:30";
        description = "When to run, `HH:MM` in the machine's time zone (for `hourly`: the minute).";
      };

      randomDelay = lib.mkOption {
        type = lib.types.str;
        default = "1h";
        example = "15min";
        description = "Random delay (`RandomizedDelaySec=`) to spread the load; `\"0\"` for none.";
      };

      onlyOnAC = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = ''
          Skip scheduled backups and verifications while on battery (`ConditionACPower=true`).
          Machines without a battery always count as on AC power.
        '';
      };
    };

    notifications = {
      enable = lib.mkEnableOption "notifications about backup results";

      onSuccess = lib.mkOption {
        type = lib.types.bool;
        default = false;
        example = true;
        description = "Notify after successful runs.";
      };

      onFailure = lib.mkOption {
        type = lib.types.bool;
        default = true;
        example = false;
        description = "Notify when a run fails or a backup unit is killed.";
      };

      ntfy = {
        url = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          example = "https://ntfy.example.org/backups";
          description = ''
            ntfy topic URL to publish to. It is written into the world-readable Nix store: a
            topic anyone may guess is a password, so prefer {option}`notifications.ntfy.urlFile`
            on a public server.
          '';
        };
        urlFile = mkUrlFile "ntfy topic URL" "ntfy-url";
        tokenFile = lib.mkOption {
          type = lib.types.nullOr secretFile;
          default = null;
          example = "/run/agenix/ntfy-token";
          description = "File holding an ntfy access token: a path outside the Nix store, as a string.";
        };
      };

      webhook.url = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "https://hooks.example.org/backup";
        description = ''
          URL that receives a JSON POST per notification. Written into the world-readable Nix
          store: a URL carrying a token belongs in {option}`notifications.webhook.urlFile`.
        '';
      };
      webhook.urlFile = mkUrlFile "webhook URL" "backup-webhook-url";

      healthchecks.url = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "https://hc.example.org/ping/backup-laptop";
        description = ''
          healthchecks.io-style ping URL (`/start`, `/fail` are appended as needed). Written into
          the world-readable Nix store; a ping URL whose UUID or key is the secret belongs in
          {option}`notifications.healthchecks.urlFile`.
        '';
      };
      healthchecks.urlFile = mkUrlFile "healthchecks.io-style ping URL" "healthchecks-url";

      email.to = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "root@example.org";
        description = "Address to mail through `sendmail`.";
      };
    };

    preBackupScript = lib.mkOption {
      type = lib.types.lines;
      default = "";
      example = ''
        ''${config.services.postgresql.package}/bin/pg_dumpall -U postgres > /var/backup/pg.sql
      '';
      description = ''
        Shell commands run before each snapshot (`set -e`: the first failing command fails
        the run). They run inside the backup unit's sandbox: add the paths they write to
        {option}`readWritePaths`. PostgreSQL and MySQL dumps are built in: see
        {option}`databases.postgresql.enable` and {option}`databases.mysql.enable`.
      '';
    };

    postBackupScript = lib.mkOption {
      type = lib.types.lines;
      default = "";
      example = ''
        echo "snapshot $HWC_BACKUP_SNAPSHOT finished: $HWC_BACKUP_STATE"
      '';
      description = ''
        Shell commands run after every run, successful or not; `HWC_BACKUP_STATE` and
        `HWC_BACKUP_SNAPSHOT` tell how it went.
      '';
    };

    readWritePaths = lib.mkOption {
      type = lib.types.listOf lib.types.path;
      default = [ ];
      example = [ "/var/backup" ];
      description = ''
        Extra paths the backup units may write to, for the hooks. Everything else but the
        destination, `/var/lib/hwc-backup` and `/var/log/backup` is read-only to them.
      '';
    };

    health = {
      maxAge = lib.mkOption {
        type = lib.types.nullOr duration;
        default = null;
        defaultText = lib.literalMD "from {option}`schedule.frequency`: `48h` for daily, `8d` for weekly, `32d` for monthly …";
        example = "36h";
        description = ''
          The newest complete snapshot must be younger than this (units `s`, `m`, `h`, `d`, `w`)
          for the health check to pass.
        '';
      };

      minBackups = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 1;
        example = 3;
        description = "The health check fails with fewer complete snapshots than this.";
      };

      verifyMaxAge = lib.mkOption {
        type = lib.types.nullOr duration;
        default = null;
        example = "35d";
        description = ''
          The health check fails unless a verification (`backup-verify`) ran within this long.
          `null`: a verification that never ran is no failure. Damage found by the last
          verification always fails the check. With {option}`verify.enable`, pick a little more
          than the interval of {option}`verify.schedule`.
        '';
      };

      schedule = lib.mkOption {
        type = lib.types.nullOr lib.types.nonEmptyStr;
        default = "weekly";
        example = "daily";
        description = ''
          systemd calendar expression for `backup-health-check.timer` and, for each of the
          {option}`hosts`, `backup-health-check-host-<name>.timer`, active with
          {option}`schedule.enable`; `null` for no timer. A failed check is notified like a
          failed backup.
        '';
      };
    };

    verify = {
      enable = lib.mkEnableOption "`backup-verify.timer` (and `backup-verify-host-<name>.timer` for each of the {option}`hosts`), which re-reads the latest snapshot against its manifest";

      schedule = lib.mkOption {
        type = lib.types.nonEmptyStr;
        default = defaults.verify.schedule;
        example = "Sun *-*-01..07 04:00";
        description = "systemd calendar expression for `backup-verify.timer` and the pulled hosts' `backup-verify-host-<name>.timer`.";
      };

      sample = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 0;
        example = 100;
        description = "Also compare this many randomly chosen files with the live sources (`--sample`); local snapshots only.";
      };

      subset = lib.mkOption {
        type = lib.types.nullOr (lib.types.ints.between 1 100);
        default = null;
        example = 5;
        description = ''
          Percentage of the files of *every* snapshot each run of `backup-verify.timer` checks
          (`verify --subset N%`): each run hashes the next slice of the distinct files (by
          inode, so a file shared by many snapshots is read once), and ⌈100/N⌉ runs check
          everything once. `null`: each run verifies the latest snapshot in full.
        '';
      };
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr secretFile;
      default = null;
      example = lib.literalExpression "config.age.secrets.backup-env.path";
      description = ''
        File of `KEY=value` lines that systemd adds to the environment of every backup unit
        (`EnvironmentFile=`), read when a unit starts, never copied into the Nix store: secrets
        for the programs the runner starts (rclone's `RCLONE_CONFIG_<REMOTE>_<KEY>`, the hooks'
        credentials) or a proxy (`HTTPS_PROXY`) for the notifications. A path outside the store,
        as a string (agenix: `config.age.secrets.<name>.path`; sops-nix:
        `config.sops.secrets.<name>.path`).
      '';
    };

    metrics.textfileDir = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text-files";
      description = "Directory of the node exporter's textfile collector to write `hwc_backup_*` metrics to.";
    };

    databases = {
      stagingDir = lib.mkOption {
        type = lib.types.str;
        default = "/var/backup/databases";
        example = "/var/lib/hwc-backup-dumps";
        description = ''
          Where the database dumps are written before each snapshot (`postgresql/`, `mysql/`
          below it; mode 0700, owned by root). When a dump is enabled and no entry of
          {option}`local.sources` contains this directory, it is added to the sources, so
          every snapshot holds the dumps taken just before it. It must not lie inside the
          destination, nor contain one of {option}`local.sources`.
        '';
      };

      postgresql = {
        enable = lib.mkEnableOption "PostgreSQL dumps before every snapshot (a failed dump fails the run)";

        user = lib.mkOption {
          type = dbUser;
          default = "postgres";
          example = "backup";
          description = ''
            System user that `pg_dumpall`/`pg_dump` run as; it logs in to the server with peer
            authentication on the local socket, so it needs a database role of the same name
            that may read everything (the superuser `postgres` can).
          '';
        };

        databases = lib.mkOption {
          type = lib.types.listOf dbName;
          default = [ ];
          example = [
            "nextcloud"
            "gitea"
          ];
          description = ''
            Databases to dump one by one with `pg_dump --format=custom` into
            `postgresql/<name>.dump`, plus the roles with `pg_dumpall --globals-only` into
            `postgresql/globals.sql`. `[ ]` dumps the whole cluster with `pg_dumpall` into
            `postgresql/all.sql`.
          '';
        };

        host = lib.mkOption {
          type = lib.types.nullOr lib.types.nonEmptyStr;
          default = null;
          example = "/run/postgresql";
          description = "Server host name or socket directory (`--host`); `null` for libpq's default socket.";
        };

        port = lib.mkOption {
          type = lib.types.nullOr lib.types.port;
          default = null;
          example = 5433;
          description = "Server port (`--port`); `null` for libpq's default.";
        };

        binDir = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default =
            if config.services.postgresql.enable or false then
              "${config.services.postgresql.package}/bin"
            else
              null;
          defaultText = lib.literalExpression ''
            if config.services.postgresql.enable then "''${config.services.postgresql.package}/bin" else null
          '';
          example = lib.literalExpression ''"''${pkgs.postgresql_16}/bin"'';
          description = ''
            Directory holding `pg_dump` and `pg_dumpall`, of the server's major version or
            newer. `null` looks them up on `PATH`, which in the backup units holds only
            coreutils, findutils, grep, sed, systemd, util-linux and getent.
          '';
        };
      };

      sqlite = lib.mkOption {
        type = lib.types.listOf (lib.types.strMatching "(/[^/]+)+" // { description = "absolute path of a file"; });
        default = [ ];
        example = [ "/var/lib/app/db.sqlite" ];
        description = ''
          SQLite databases copied before every snapshot into `sqlite/<their absolute path>` below
          {option}`databases.stagingDir`, each as one consistent state: `sqlite3 -readonly DB
          "VACUUM INTO …"` reads it in a single read transaction, whatever the service writes
          meanwhile, and the copy must pass `PRAGMA quick_check`. A missing or unreadable
          database fails the run. The units may write each database's directory (opening a
          WAL database may create its `-wal`/`-shm` files). The service profiles add theirs.
        '';
      };

      mysql = {
        enable = lib.mkEnableOption "MySQL/MariaDB dumps before every snapshot (a failed dump fails the run)";

        user = lib.mkOption {
          type = dbUser;
          default = "root";
          example = "backup";
          description = ''
            System user that `mariadb-dump` (or `mysqldump`) runs as; with MariaDB's
            `unix_socket` authentication it logs in as the database user of the same name.
          '';
        };

        databases = lib.mkOption {
          type = lib.types.listOf dbName;
          default = [ ];
          example = [ "wordpress" ];
          description = ''
            Databases to dump one file each (`mysql/<name>.sql`); `[ ]` dumps everything with
            `--all-databases` into `mysql/all.sql`.
          '';
        };

        defaultsFile = lib.mkOption {
          type = lib.types.nullOr secretFile;
          default = null;
          example = "/run/agenix/mysql-backup.cnf";
          description = ''
            Option file with credentials (`--defaults-extra-file`), for a server that does not
            authenticate the dump's user by its socket: a path outside the Nix store, as a
            string.
          '';
        };

        socket = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          example = "/run/mysqld/mysqld.sock";
          description = "The server's socket (`--socket`); `null` for the client's default.";
        };

        binDir = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default =
            if config.services.mysql.enable or false then "${config.services.mysql.package}/bin" else null;
          defaultText = lib.literalExpression ''
            if config.services.mysql.enable then "''${config.services.mysql.package}/bin" else null
          '';
          example = lib.literalExpression ''"''${pkgs.mariadb}/bin"'';
          description = ''
            Directory holding `mariadb-dump` or `mysqldump`. `null` looks them up on `PATH`,
            which in the backup units holds only coreutils, findutils, grep, sed, systemd, util-linux and getent.
          '';
        };
      };
    };
    # Service profiles (nix/profiles/): presets that add a service's paths, excludes, database
    # and quiescing to the options above.
    profiles = builtins.listToAttrs (
      map (name: {
        inherit name;
        value = (profileSet.load name).options { inherit lib config pkgs; };
      }) profileSet.names
    );

    offsite = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule offsiteModule);
      default = { };
      example = lib.literalExpression ''
        {
          proton = {
            repository = "rclone:proton:backups/restic";
            passwordFile = config.age.secrets.restic-password.path;
          };
          nas = {
            repository = "/mnt/nas/restic";
            passwordFile = config.age.secrets.restic-password.path;
            schedule = "Sun 03:00";
            check.schedule = "monthly";
            keepDaily = 14;
          };
        }
      '';
      description = ''
        Offsite copies: standard restic repositories, each fed from the newest complete local
        snapshot (with its own time, host and paths, so that `restic restore latest --target /`
        puts every file back where it was), with its own retention
        (`restic forget` + `prune`). `hwc-backup offsite <name>` copies by hand;
        `hwc-backup restore --offsite <name> …` restores, also on a new machine with only the
        repository and the password file. Names are 1 to 64 letters, digits, `.`, `_` or `-`.
        Needs {option}`local.enable`.
      '';
    };

    resticPackage = lib.mkPackageOption pkgs "restic" {
      example = "pkgs.unstable.restic";
      extraDescription = "It writes, checks and restores the {option}`offsite` repositories.";
    };

    inhibitSleep = lib.mkOption {
      type = lib.types.bool;
      default = true;
      example = false;
      description = ''
        Keep the machine from suspending while a backup, pull, verification or offsite copy
        runs: each unit's command runs under
        `systemd-inhibit --what=sleep --mode=block`, as nixpkgs' restic and borgbackup modules
        do with `inhibitsSleep`. Works together with {option}`schedule.onlyOnAC`, which keeps
        the runs from starting on battery.
      '';
    };

    hosts = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule hostModule);
      default = { };
      example = lib.literalExpression ''
        {
          web1 = {
            address = "web1.lan";
            sshKeyFile = "/root/.ssh/backup_ed25519";
            sources = [ "/home" "/etc" "/var/lib" ];
            keepDaily = 14;
          };
        }
      '';
      description = ''
        Other machines this one pulls snapshots from over ssh (`hwc-backup pull --host <name>`),
        each into `<local.mountPoint>/<name>/`, with the destination settings of `local.*`
        (mountPoint, requireMountPoint, minSpaceGB), its retention unless overridden, and the
        notifications; {option}`local.enable` is not needed. Each gets
        `backup-host-<name>.service` and, with {option}`schedule.enable`,
        `backup-host-<name>.timer`. Names are 1 to 64 letters, digits, `.`, `_` or `-`, other
        than {option}`hostName`. The hosts
        run `hwc-backup agent` from {option}`agent.enable` (or an `authorized_keys` entry of
        their own), of the same hwc-backup version.
      '';
    };

    hostConcurrency = lib.mkOption {
      type = lib.types.ints.positive;
      default = 1;
      example = 2;
      description = ''
        How many of the {option}`hosts` may be pulled at the same time. The hosts, in name
        order, are dealt to this many queues (lock files in `/var/lib/hwc-backup`); a pull
        waits until the others of its queue are done, so at most this many run at once. The
        local `backup.service` is not counted.
      '';
    };

    agent = {
      enable = lib.mkEnableOption "serving pulls by a backup server: `authorized_keys` entries that can only run `hwc-backup agent` for {option}`agent.allowedPaths`";

      user = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.-]*";
        default = "root";
        example = "backup";
        description = ''
          User whose `authorized_keys` gets the entries, the user the agent runs as. It can
          only serve files it may read, so backing up `/home` or `/etc` takes `root` (sshd's
          default `PermitRootLogin = "prohibit-password"` allows these key-only logins). Another
          user must be declared in `users.users`.
        '';
      };

      authorizedKeys = lib.mkOption {
        type = lib.types.listOf oneLine;
        default = [ ];
        example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleOnlyExampleOnlyExampleOnlyExampleOnly root@nas" ];
        description = ''
          Public keys of the backup servers, as `ssh-keygen` writes them (type, key, optional
          comment). Each becomes an entry of {option}`agent.user`'s `authorized_keys` prefixed
          with `command="<hwc-backup> agent --allow …",restrict`: the key can start nothing
          but the agent, without a pty or forwarding.
        '';
      };

      allowedPaths = lib.mkOption {
        type = lib.types.listOf oneLine;
        default = [ ];
        example = [
          "/home"
          "/etc"
          "/var/lib"
        ];
        description = ''
          Absolute paths a server may back up (`--allow`): each source it asks for must be
          one of them or lie inside one. Fixed in `authorized_keys`, out of the server's reach.
        '';
      };

      excludePatterns = lib.mkOption {
        type = lib.types.listOf oneLine;
        default = [ ];
        example = [
          ".cache"
          "/home/*/.local/share/Trash/"
        ];
        description = ''
          Patterns the agent leaves out on top of the server's {option}`hosts.<name>.excludePatterns`
          (`--exclude`, the rules of {option}`local.excludePatterns`).
        '';
      };
    };
  };

  config = lib.mkMerge [
    (lib.mkIf (cfg.enable || cfg.agent.enable) {
      # render.nix includes the checks of each half only when that half is enabled.
      assertions = rendered.assertions;
      warnings = rendered.warnings;

      environment.systemPackages = [ cfg.package ];
    })

    (lib.mkIf cfg.enable {
      warnings = lib.optional (
        cfg.cloud.enable
        && cfg.protonDrive.enable
        && cfg.cloud.rcloneConfigFile == null
        && config ? age
        && !(config.age.secrets ? ${cfg.protonDrive.secretName})
      ) "hwc.system.services.backup.protonDrive.secretName: age.secrets.\"${cfg.protonDrive.secretName}\" is not declared, so the cloud push will find no rclone config."
      # The same for the offsites that take their rclone config from protonDrive.
      ++ lib.optional (
        cfg.protonDrive.enable
        && rendered.protonOffsites != [ ]
        && config ? age
        && !(config.age.secrets ? ${cfg.protonDrive.secretName})
      ) "hwc.system.services.backup.protonDrive.secretName: age.secrets.\"${cfg.protonDrive.secretName}\" is not declared, so the offsites ${lib.concatStringsSep ", " rendered.protonOffsites} will find no rclone config.";

      environment.etc."hwc-backup/config.json".source = planFile;

      # The units create these themselves (StateDirectory/LogsDirectory); tmpfiles makes them
      # exist for backup-now and backup-status run from a shell before any unit ran.
      # The staging directory must exist before a unit starts, as it is one of their
      # ReadWritePaths (a missing one would stay read-only to the runner).
      systemd.tmpfiles.rules = [
        "d ${rendered.plan.stateDir} 0700 root root - -"
        "d ${rendered.plan.logDir} 0700 root root - -"
      ]
      ++ lib.optional rendered.dumps "d ${rendered.plan.databases.stagingDir} 0700 root root - -";

      # Unit names: see ../nix/render.nix (backup.timer -> backup.service, backup-local,
      # backup-cloud, backup-health-check, backup-verify, backup-failure@,
      # backup-host-<name>.timer -> backup-host-<name>.service per pulled host,
      # backup-offsite-<name> and backup-offsite-check-<name> per offsite with a schedule, and
      # backup-on-mount with local.runOnMount).
      # Each service's `path` (util-linux, getent: the programs the runner starts by name) comes
      # from the render; see `path` in ../nix/render.nix.
      systemd.services =
        lib.mapAttrs (_: softDefaults) rendered.units.services
        # The service profiles' units (nix/profiles/, e.g. Nextcloud's maintenance mode).
        // lib.mapAttrs (_: softDefaults) rendered.profileUnits;
      systemd.timers = lib.mapAttrs (_: softDefaults) rendered.units.timers;

      system.checks = lib.optional (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) configCheck;

      # `nixos-rebuild switch` starts no backup. switch-to-configuration restarts a timer whose
      # definition changed (e.g. frequency weekly -> daily), and a restarted timer with
      # Persistent=true compares its stamp file (the time it last fired) with the new calendar:
      # an elapse in between fires the service at once. The activation, which runs before the
      # units are restarted, marks every timer of ours as having fired now, so a changed
      # schedule takes effect at its next elapse. Only on switch/test: at boot (no
      # NIXOS_ACTION) Persistent=true must still catch up on a run missed while the machine was
      # off. A timer that is not restarted reads its stamp only at its next start (boot), and
      # elapses between its real last run and the switch were either run or caught up already.
      system.activationScripts.hwc-backup-timers = lib.mkIf (rendered.activation != "") {
        text = rendered.activation;
        deps = [ ];
      };
    })

    # The client side of a pull: keys that can only start the agent (see render.nix).
    (lib.mkIf cfg.agent.enable {
      users.users.${cfg.agent.user}.openssh.authorizedKeys.keys = rendered.agent.authorizedKeys;

      warnings = lib.optional (
        !(config.services.openssh.enable or true)
      ) "hwc.system.services.backup.agent.enable is set but services.openssh.enable is not: no server can connect to the agent.";
    })
  ];
}
