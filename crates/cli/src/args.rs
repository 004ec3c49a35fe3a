//! Command-line syntax (stage one of two: this only parses; `target` and the commands give
//! the values their meaning).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// hwc-backup: hard-linked, rotated, verifiable snapshots.
#[derive(Parser, Debug)]
#[command(name = "hwc-backup", version, about, long_about = None)]
pub struct Cli {
    /// Show more (-v: info, -vv: debug) on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which host directory a command works on: from the plan, or given directly.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The plan written by the NixOS module.
    #[arg(long, value_name = "FILE", env = "HWC_BACKUP_CONFIG")]
    pub config: Option<PathBuf>,
    /// The destination directory (instead of a plan).
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,
    /// The host name under the destination (default: this machine's hostname).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Where the last run is recorded without a plan (default /var/lib/hwc-backup).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Take a snapshot now (the plan's sources, or --source/--dest without a plan).
    Now(NowArgs),
    /// Show snapshots per tier, the last run, and free space.
    Status(StatusArgs),
    /// List snapshots, or restore files and directories from one.
    #[command(override_usage = "hwc-backup restore [OPTIONS] SNAPSHOT PATH... DEST\n       hwc-backup restore --list")]
    Restore(RestoreArgs),
    /// Re-read a snapshot and compare every file with its manifest hash.
    Verify(VerifyArgs),
    /// Apply the retention policy: keep, move between tiers, expire.
    Prune(PruneArgs),
    /// Replace damaged files found by verify with a good copy, or mark them lost.
    Repair(RepairArgs),
    /// Push the newest snapshot to the cloud remote with rclone.
    Cloud(CloudArgs),
    /// Copy the newest snapshot to the offsite restic repositories (all, or those named).
    Offsite(OffsiteArgs),
    /// Check that the backups are recent, verified and copied; exit 1 when not.
    Health(HealthArgs),
    /// Notify that a systemd unit failed (for OnFailure=).
    NotifyFailure(NotifyFailureArgs),
    /// Pull a snapshot of another machine over ssh (a host of the plan, or given here).
    Pull(PullArgs),
    /// Serve a pull on stdin/stdout (run by the server through ssh; see `pull`).
    Agent(AgentArgs),
    /// What changed between two snapshots (default: the two newest), below PATH if given.
    Diff(DiffArgs),
    /// Which snapshots hold paths matching a pattern (rsync's exclude rules), or one path.
    Find(FindArgs),
    /// The distinct versions of one path across the snapshots.
    Versions(VersionsArgs),
    /// Bytes per snapshot: only there, shared, and what deleting it would free.
    Du(DuArgs),
    /// Keep a snapshot from being pruned (until a date, with a note).
    Pin(PinArgs),
    /// Remove a snapshot's pin.
    Unpin(UnpinArgs),
    /// Work with plan files.
    Config {
        /// What to do with the plan.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a plan file; exit 0 when it is good, 2 with the field and value when not.
    Check {
        /// The plan.
        file: PathBuf,
    },
}

/// `now`.
#[derive(Args, Debug)]
pub struct NowArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// A source to back up (repeat for several); without a plan.
    #[arg(long = "source", value_name = "PATH")]
    pub sources: Vec<PathBuf>,
    /// An rsync-style exclude pattern (repeat for several); without a plan.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Exclusions by tag file, marker file and size; without a plan.
    #[command(flatten)]
    pub exclude_by: ExcludeByArgs,
    /// Refuse to run with less free space than this many GiB; without a plan.
    #[arg(long, value_name = "GIB")]
    pub min_free_gb: Option<u64>,
    /// Refuse to run unless --dest is a mount point; without a plan.
    #[arg(long)]
    pub require_mount_point: bool,
    /// Read the sources from read-only filesystem snapshots: auto, btrfs, zfs, lvm or none
    /// (the default without a plan); without a plan.
    #[arg(long, value_name = "KIND")]
    pub source_snapshots: Option<hwc_backup_engine::plan::SourceSnapshots>,
    /// How snapshots are stored: auto (btrfs subvolumes where the destination allows,
    /// else hard links; the default), hardlink, or btrfs. Overrides the plan's local.store.
    #[arg(long, value_name = "MODE")]
    pub store: Option<hwc_backup_engine::plan::StoreMode>,
    /// Run as if the time were this (RFC 3339, e.g. 2025-01-15T02:00:00+01:00): a testing
    /// aid to simulate months of runs in seconds.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Do not prune after the run.
    #[arg(long)]
    pub no_prune: bool,
    /// Snapshot and prune only (no cloud push, no offsite copy).
    #[arg(long)]
    pub local_only: bool,
    /// Accept a source that became empty or shrank by more than half.
    #[arg(long)]
    pub allow_shrink: bool,
    /// Worker threads, 1 to 256 (default: number of cores, at least 2).
    #[arg(long, value_name = "N", value_parser = threads())]
    pub threads: Option<usize>,
    /// Do not run when the newest complete snapshot on the destination is younger than this
    /// (e.g. 20h): exit 0, record nothing, notify nobody (the run-on-mount unit).
    #[arg(long, value_name = "DURATION")]
    pub min_interval: Option<String>,
    /// Say what a run would copy, link and exclude and the bytes it needs; write nothing.
    #[arg(long, conflicts_with_all = ["pin", "no_prune", "local_only"])]
    pub dry_run: bool,
    /// Pin the new snapshot: it is never pruned (see `pin`).
    #[arg(long)]
    pub pin: bool,
    /// The pin's note (with --pin).
    #[arg(long, value_name = "TEXT", requires = "pin")]
    pub note: Option<String>,
    /// Print the run report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--exclude-caches`, `--exclude-if-present`, `--exclude-larger-than` (the plan's
/// `excludeCaches`, `excludeIfPresent`, `excludeLargerThan`).
#[derive(Args, Debug, Clone, Default)]
pub struct ExcludeByArgs {
    /// Keep directories holding a valid CACHEDIR.TAG with the tag file only.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Keep directories holding an entry of this name with that entry only (repeat).
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Leave out regular files larger than this (4G, 512M, 100K, or bytes).
    #[arg(long, value_name = "SIZE")]
    pub exclude_larger_than: Option<String>,
}

impl ExcludeByArgs {
    /// Whether any was given.
    pub fn any(&self) -> bool {
        self.exclude_caches || !self.exclude_if_present.is_empty() || self.exclude_larger_than.is_some()
    }
}

/// The most worker threads a command takes: more would only exhaust memory or descriptors.
pub const MAX_THREADS: u64 = 256;

fn threads() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=MAX_THREADS)
}

/// `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// List the snapshots instead of restoring.
    #[arg(long)]
    pub list: bool,
    /// `latest`, `daily/2025-01-15_02-00-00`, or an unambiguous part of a name.
    pub snapshot: Option<String>,
    /// The files or directories as they were on the host (e.g. /home/alice/notes.txt), then
    /// where to put them: one PATH goes to DEST, several go into the directory DEST.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Restore only what matches this pattern (rsync rules, matched against the path on
    /// the host; repeat), with the directories leading to it.
    #[arg(long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Do not restore what matches this pattern (repeat; wins over --include).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Make each restored path exactly as in the snapshot: remove what the snapshot does
    /// not have there (what --include/--exclude leave out is kept, as with rsync --delete).
    #[arg(long)]
    pub delete: bool,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Only list what would be written.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore from the offsite restic repository NAME of the plan (without a plan: give
    /// --repository and --password-file, and no NAME).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub offsite: Option<String>,
    /// The restic repository, without a plan.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A restic repository named on the command line (no plan).
#[derive(Args, Debug, Clone, Default)]
pub struct RepoArgs {
    /// The restic repository (`/path`, `sftp:…`, `s3:…`, `rclone:remote:path`), without a plan.
    #[arg(long, value_name = "REPOSITORY")]
    pub repository: Option<String>,
    /// The repository's password file, without a plan.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The rclone config file for an `rclone:` repository, without a plan.
    #[arg(long, value_name = "FILE")]
    pub rclone_config: Option<PathBuf>,
    /// The restic program (default: restic on PATH), without a plan.
    #[arg(long, value_name = "PATH")]
    pub restic: Option<PathBuf>,
}

/// `offsite`.
#[derive(Args, Debug)]
pub struct OffsiteArgs {
    /// Target selection (a plan, or --dest DIR --host NAME with --repository).
    #[command(flatten)]
    pub target: Target,
    /// The offsites to copy to (default: every one of the plan).
    pub names: Vec<String>,
    /// The restic repository, without a plan.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// `restic forget --keep-last`, without a plan.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// `--keep-hourly`, without a plan.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// `--keep-daily`, without a plan (default 7).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// `--keep-weekly`, without a plan (default 5).
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// `--keep-monthly`, without a plan (default 12).
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// `--keep-yearly`, without a plan.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// `--keep-within` (a restic duration like 1y5m7d2h), without a plan.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// The snapshot (default `latest`).
    pub snapshot: Option<String>,
    /// Verify every snapshot (each distinct file, by inode, is read once).
    #[arg(long, conflicts_with = "snapshot")]
    pub all: bool,
    /// Verify these snapshots, comma-separated (each distinct file read once).
    #[arg(long, value_name = "A,B…", value_delimiter = ',', conflicts_with_all = ["snapshot", "all"])]
    pub snapshots: Vec<String>,
    /// Check the next slice of N% of the distinct files of every snapshot; ⌈100/N⌉ calls
    /// check each once (the cursor is kept per drive).
    #[arg(long, value_name = "N%", value_parser = subset_percent, conflicts_with_all = ["snapshot", "all", "snapshots"])]
    pub subset: Option<u32>,
    /// Also compare N random files of the latest snapshot with the live source.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub sample: usize,
    /// Hashing threads, 1 to 256.
    #[arg(long, value_name = "N", value_parser = threads())]
    pub threads: Option<usize>,
    /// Check the offsite restic repository NAME instead (`restic check`, rotating through the
    /// data, and a sample compared with the local manifest).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub offsite: Option<String>,
    /// With --offsite: read this share of the data (`N%`; default the plan's
    /// check.readDataSubset), a different part each time.
    #[arg(long, value_name = "N%")]
    pub read_data_subset: Option<String>,
    /// The restic repository, without a plan.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// Say what would be done without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// Show the decision without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide as if the time were this (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Then remove the oldest snapshots until the destination has its minFreeBytes free, as
    /// `local.makeRoom` does before a run (with --dry-run: list them, oldest first).
    #[arg(long)]
    pub make_room: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cloud`.
#[derive(Args, Debug)]
pub struct CloudArgs {
    /// Target selection (a plan is required).
    #[command(flatten)]
    pub target: Target,
    /// Mirror even an empty or much smaller snapshot over the remote.
    #[arg(long)]
    pub allow_shrink: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `health`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `notify-failure`.
#[derive(Args, Debug)]
pub struct NotifyFailureArgs {
    /// Target selection (a plan is required).
    #[command(flatten)]
    pub target: Target,
    /// The unit that failed (systemd passes it as %n).
    #[arg(long, value_name = "UNIT")]
    pub unit: String,
    /// Print the deliveries as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Maps the seed's command names (`backup-now` …) to subcommands, so the package can install
/// them as symlinks to one binary.
pub fn args_with_argv0_alias() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv0 = args.first().map(PathBuf::from).and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let sub = match argv0.as_deref() {
        Some("backup-now") => Some("now"),
        Some("backup-status") => Some("status"),
        Some("backup-restore") => Some("restore"),
        Some("backup-verify") => Some("verify"),
        Some("backup-cloud") => Some("cloud"),
        Some("backup-health") => Some("health"),
        _ => None,
    };
    if let Some(sub) = sub {
        args[0] = "hwc-backup".into();
        args.insert(1, sub.into());
    }
    args
}

/// `pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Target selection: `--host NAME` names the host (a key of the plan's `hosts`, or the
    /// directory name with --address).
    #[command(flatten)]
    pub target: Target,
    /// The host's address, to pull without a plan (with --user, --source, --dest).
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,
    /// The user the agent runs as on the host; without a plan.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// The ssh port; without a plan.
    #[arg(long, value_name = "PORT", default_value_t = 22)]
    pub port: u16,
    /// The private key; without a plan.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// An ssh -o option, Key=value (repeat); without a plan.
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub ssh_options: Vec<String>,
    /// The ssh program; without a plan.
    #[arg(long, value_name = "PATH")]
    pub ssh_program: Option<PathBuf>,
    /// The command run on the host; without a plan.
    #[arg(long, value_name = "COMMAND", default_value = "hwc-backup agent")]
    pub agent_command: String,
    /// A source path on the host (repeat); without a plan.
    #[arg(long = "source", value_name = "PATH")]
    pub sources: Vec<PathBuf>,
    /// An rsync-style exclude pattern (repeat); without a plan.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Exclusions by tag file, marker file and size, walked by the agent; without a plan.
    #[command(flatten)]
    pub exclude_by: ExcludeByArgs,
    /// Recreate the host's device nodes (off: counted as skipped, not created); without a
    /// plan (with one: hosts.<name>.devices).
    #[arg(long)]
    pub devices: bool,
    /// How the host's snapshots are stored: auto (btrfs subvolumes where the destination
    /// allows, else hard links; the default), hardlink, or btrfs. Overrides the plan's
    /// local.store.
    #[arg(long, value_name = "MODE")]
    pub store: Option<hwc_backup_engine::plan::StoreMode>,
    /// Run as if the time were this (RFC 3339); a testing aid.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Do not prune after the run.
    #[arg(long)]
    pub no_prune: bool,
    /// Accept a source that became empty or shrank by more than half.
    #[arg(long)]
    pub allow_shrink: bool,
    /// Print the run report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// A path the server may back up (repeat): every requested source must be one of them or
    /// lie inside one.
    #[arg(long = "allow", value_name = "PATH")]
    pub allow: Vec<PathBuf>,
    /// An exclude pattern applied on top of the server's (repeat).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// A JSON file `{"allow": [...], "excludePatterns": [...]}`, added to the arguments.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// `[OLD] [NEW] [PATH]`: snapshots (`latest`, `daily/NAME`, a bare name or an unambiguous
    /// part of one; default the two newest, or OLD against the newest) and an absolute PATH
    /// (an argument starting with `/`) to compare only below it.
    #[arg(value_name = "ARG", num_args = 0..=3)]
    pub args: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `find`.
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// Patterns as for excludes (`*.conf`, `.ssh/`, `/etc/nixos/**`).
    #[arg(value_name = "PATTERN", required_unless_present = "path")]
    pub patterns: Vec<String>,
    /// One absolute path instead of patterns (looked up, not searched: fast).
    #[arg(long, value_name = "ABS", conflicts_with = "patterns")]
    pub path: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `versions`.
#[derive(Args, Debug)]
pub struct VersionsArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// The path as it was on the host, e.g. /etc/nixos/configuration.nix.
    pub path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `du`.
#[derive(Args, Debug)]
pub struct DuArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pin`.
#[derive(Args, Debug)]
pub struct PinArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// `latest`, `daily/NAME`, a bare name or an unambiguous part of one.
    pub snapshot: String,
    /// Keep it only until this date (2025-03-01, local midnight) or time (RFC 3339).
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Why it is pinned.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `unpin`.
#[derive(Args, Debug)]
pub struct UnpinArgs {
    /// Target selection.
    #[command(flatten)]
    pub target: Target,
    /// The snapshot.
    pub snapshot: String,
}

/// `--subset N%` (the `%` is optional): 1 to 100.
fn subset_percent(text: &str) -> std::result::Result<u32, String> {
    let n = text.strip_suffix('%').unwrap_or(text);
    match n.parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a percentage from 1% to 100%")),
    }
}
