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
    /// List snapshots, or restore a file or directory from one.
    Restore(RestoreArgs),
    /// Re-read a snapshot and compare every file with its manifest hash.
    Verify(VerifyArgs),
    /// Apply the retention policy: keep, move between tiers, expire.
    Prune(PruneArgs),
    /// Push the newest snapshot to the cloud remote with rclone.
    Cloud(CloudArgs),
    /// Check that the backups are recent, verified and copied; exit 1 when not.
    Health(HealthArgs),
    /// Notify that a systemd unit failed (for OnFailure=).
    NotifyFailure(NotifyFailureArgs),
    /// Pull a snapshot of another machine over ssh (a host of the plan, or given here).
    Pull(PullArgs),
    /// Serve a pull on stdin/stdout (run by the server through ssh; see `pull`).
    Agent(AgentArgs),
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
    /// Run as if the time were this (RFC 3339, e.g. 2025-01-15T02:00:00+01:00): a testing
    /// aid to simulate months of runs in seconds.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Do not prune after the run.
    #[arg(long)]
    pub no_prune: bool,
    /// Snapshot and prune only (no cloud push).
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
    /// Print the run report as JSON.
    #[arg(long)]
    pub json: bool,
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
    /// The file or directory as it was on the host, e.g. /home/alice/notes.txt.
    pub path: Option<PathBuf>,
    /// Where to put it.
    pub destination: Option<PathBuf>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Only list what would be written.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Verify every snapshot.
    #[arg(long, conflicts_with = "snapshot")]
    pub all: bool,
    /// Also compare N random files of the latest snapshot with the live source.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub sample: usize,
    /// Hashing threads, 1 to 256.
    #[arg(long, value_name = "N", value_parser = threads())]
    pub threads: Option<usize>,
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
    /// Recreate the host's device nodes (off: counted as skipped, not created); without a
    /// plan (with one: hosts.<name>.devices).
    #[arg(long)]
    pub devices: bool,
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
