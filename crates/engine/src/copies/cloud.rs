//! Pushing the newest complete snapshot to a cloud remote with rclone.
//!
//! Only the newest snapshot goes up, never the whole host directory: rclone does not know
//! hard links, so the tree of N snapshots would be uploaded N times. The remote holds
//!
//! ```text
//! <remote>/<host>/current/                the newest snapshot (sources by absolute path,
//!                                         plus .hwc-backup/ with meta.json and the manifest,
//!                                         so the remote copy can be checked with b3sum)
//! <remote>/<host>/history/<snapshot>/     files that pushing <snapshot> replaced or deleted
//!                                         (rclone --backup-dir); the oldest beyond
//!                                         cloud.keepHistory are purged
//! ```
//!
//! `<remote>` is the plan's `cloud.remote` (`name:path`); an rclone crypt remote there
//! encrypts everything. `syncMode` `sync` mirrors, `copy` never deletes on the remote, and
//! `move` is run as `copy`: rclone's move deletes the source files, and the source here is a
//! snapshot, so a move would gut the newest local backup.
//!
//! Before a mirror, a guard compares the snapshot with what the remote holds (`rclone size`)
//! and refuses to replace a full remote with an empty or much smaller snapshot. rclone only
//! ever reads the local snapshot. The outcome is kept in `<stateDir>/<host>/cloud.json` and in
//! the mounted drive's `destinations/<key>/cloud.json` (for health and metrics), and rclone's
//! own log of the last push in `cloud-rclone.log` beside the first
//! (both through [`crate::ops::state`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::Store;
use crate::ops::state::StateDir;
use crate::plan::{Cloud, SyncMode};
use crate::store::layout::{HostDir, Snapshot};
use crate::store::lock::HostLock;

pub use crate::ops::state::CloudRecord;

/// How to push, beyond the plan.
#[derive(Clone, Debug, Default)]
pub struct CloudOptions {
    /// Mirror even an empty or much smaller snapshot over the remote.
    pub allow_shrink: bool,
}

/// What a push did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudReport {
    /// Host name.
    pub host: String,
    /// Whether the remote now holds the snapshot.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// The snapshot pushed (`daily/NAME`).
    pub snapshot: Option<String>,
    /// Its local path.
    pub snapshot_path: Option<PathBuf>,
    /// `<remote>/<host>/current`.
    pub destination: String,
    /// `<remote>/<host>/history/<snapshot>`, when history is kept.
    pub history: Option<String>,
    /// The rclone verb run (`sync` or `copy`).
    pub verb: &'static str,
    /// Files and symlinks in the snapshot.
    pub files: u64,
    /// Bytes in the snapshot.
    pub bytes: u64,
    /// Files on the remote before the push (when the guard looked).
    pub remote_files_before: Option<u64>,
    /// Bytes on the remote before the push (when the guard looked).
    pub remote_bytes_before: Option<u64>,
    /// The rclone command line (without secrets: the config file is named, not read).
    pub command: Vec<String>,
    /// rclone's log of this push.
    pub log_file: Option<PathBuf>,
    /// Things worth knowing that did not fail the push.
    pub notes: Vec<String>,
    /// History folders removed beyond `cloud.keepHistory`.
    pub history_pruned: Vec<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
}

/// `<remote>/<host>` for a plan's `cloud.remote` (`name:` and `name:path/` both work).
pub fn remote_host_dir(remote: &str, host: &str) -> String {
    let base = remote.trim_end_matches('/');
    if base.ends_with(':') {
        format!("{base}{host}")
    } else {
        format!("{base}/{host}")
    }
}

/// The rclone binary: the plan's, or `rclone` on PATH.
pub fn rclone_binary(cloud: &Cloud) -> Result<PathBuf> {
    if let Some(p) = &cloud.rclone {
        return Ok(p.clone());
    }
    crate::ops::notify::find_program("rclone", &["/run/current-system/sw/bin/rclone"]).ok_or_else(|| Error::Command {
        what: "rclone".into(),
        message: "rclone is not installed (not on PATH); install it or set cloud.rclone".into(),
    })
}

/// Pushes the newest complete snapshot. Never returns an error: a failed push is a report
/// with `ok: false`, recorded like a good one. The host lock is held meanwhile, so pruning
/// cannot move the snapshot away under rclone.
pub fn push(store: &Store, cloud: &Cloud, opts: &CloudOptions) -> CloudReport {
    let remote = cloud.remote.clone().unwrap_or_default();
    let verb = match cloud.sync_mode {
        SyncMode::Sync => "sync",
        SyncMode::Copy | SyncMode::Move => "copy",
    };
    let mut report = CloudReport {
        host: store.host.clone(),
        ok: false,
        error: None,
        snapshot: None,
        snapshot_path: None,
        destination: format!("{}/current", remote_host_dir(&remote, &store.host)),
        history: None,
        verb,
        files: 0,
        bytes: 0,
        remote_files_before: None,
        remote_bytes_before: None,
        command: Vec::new(),
        log_file: None,
        notes: Vec::new(),
        history_pruned: Vec::new(),
        started_at: Timestamp::now(),
        finished_at: Timestamp::now(),
    };
    if cloud.sync_mode == SyncMode::Move {
        report
            .notes
            .push("syncMode \"move\" runs as \"copy\": moving would delete the files of the local snapshot".into());
    }
    if let Err(e) = push_inner(store, cloud, opts, &mut report) {
        report.error = Some(e.to_string());
    } else {
        report.ok = true;
    }
    report.finished_at = Timestamp::now();
    if let Err(e) = record(store, &report) {
        report.notes.push(format!("the push was not recorded: {e}"));
    }
    report
}

fn push_inner(store: &Store, cloud: &Cloud, opts: &CloudOptions, report: &mut CloudReport) -> Result<()> {
    if !cloud.enable {
        return Err(Error::config("cloud.enable", "is false; enable the cloud copy in the configuration first"));
    }
    let rclone = rclone_binary(cloud)?;
    let host = HostDir::open(&store.host_dir())?;
    let _lock = HostLock::acquire(&host, "cloud push")?;
    let snapshot = host.newest()?.ok_or_else(|| {
        Error::Guard(format!("there is no complete snapshot under {} to push", host.root().display()))
    })?;
    report.snapshot = Some(snapshot.id());
    report.snapshot_path = Some(snapshot.path.clone());
    let c = &snapshot.meta.counts;
    report.files = c.files + c.symlinks;
    report.bytes = c.bytes_copied + c.bytes_linked;

    let rc = Rclone::new(rclone, cloud);
    if cloud.sync_mode == SyncMode::Sync {
        let (files, bytes) = rc.size(&report.destination).map_err(|message| Error::Command {
            what: format!("rclone size {}", report.destination),
            message: format!("cannot read the remote: {message}; the local snapshot {} is untouched", snapshot.id()),
        })?;
        report.remote_files_before = Some(files);
        report.remote_bytes_before = Some(bytes);
        if !opts.allow_shrink {
            shrink_guard(&snapshot, report.files, report.bytes, files, bytes, &report.destination)?;
        }
    }
    let history_root = format!("{}/history", remote_host_dir(cloud.remote.as_deref().unwrap_or(""), &store.host));
    if cloud.keep_history > 0 {
        report.history = Some(format!("{history_root}/{}", snapshot.name));
    }

    let log = StateDir::of(store).rclone_log()?;
    report.log_file = Some(log.clone());
    let mut args: Vec<String> = vec![
        report.verb.into(),
        snapshot.path.display().to_string(),
        report.destination.clone(),
        // Symlinks become .rclonelink files instead of being skipped with a notice.
        "--links".into(),
        "--create-empty-src-dirs".into(),
        "--verbose".into(),
    ];
    if let Some(h) = &report.history {
        args.extend(["--backup-dir".into(), h.clone()]);
    }
    if let Some(b) = &cloud.bandwidth_limit {
        args.extend(["--bwlimit".into(), b.clone()]);
    }
    report.command =
        std::iter::once(rc.bin.display().to_string()).chain(rc.global_args()).chain(args.clone()).collect();
    rc.run_logged(&args, &log).map_err(|message| Error::Command {
        what: format!("rclone {} to {}", report.verb, report.destination),
        message: format!(
            "{message}; the local snapshot {} is untouched (rclone's log: {})",
            snapshot.id(),
            log.display()
        ),
    })?;
    if cloud.keep_history > 0 {
        match rc.prune_history(&history_root, cloud.keep_history as usize) {
            Ok(removed) => report.history_pruned = removed,
            Err(e) => report.notes.push(format!("old history folders were not purged: {e}")),
        }
    }
    Ok(())
}

/// The local shrink guard's rule, applied to the remote: refuse when the remote holds files
/// and the snapshot none, or when the snapshot has fewer than half the remote's files (with
/// at least 100 there) or bytes (with at least 1 GiB there).
fn shrink_guard(s: &Snapshot, files: u64, bytes: u64, rfiles: u64, rbytes: u64, dest: &str) -> Result<()> {
    // The remote also holds .hwc-backup/ (two files) that the snapshot counts leave out.
    let rfiles = rfiles.saturating_sub(2);
    let refuse = |what: String| {
        Err(Error::Guard(format!(
            "not mirroring snapshot {} over {dest}: {what}; run `hwc-backup cloud --allow-shrink` if this is intended",
            s.id()
        )))
    };
    if files == 0 && rfiles > 0 {
        return refuse(format!("the snapshot is empty but the remote holds {rfiles} files"));
    }
    if rfiles >= 100 && files * 2 < rfiles {
        return refuse(format!("the snapshot has {files} files, the remote {rfiles}"));
    }
    if rbytes >= 1 << 30 && bytes * 2 < rbytes {
        return refuse(format!(
            "the snapshot holds {}, the remote {}",
            crate::run::human_bytes(bytes),
            crate::run::human_bytes(rbytes)
        ));
    }
    Ok(())
}

/// Records the push for the job and for the drive the snapshot came from (the one mounted).
fn record(store: &Store, r: &CloudReport) -> Result<()> {
    for state in StateDir::scopes_now(store) {
        let mut rec = state.cloud().unwrap_or_default();
        rec.last_attempt = Some(r.finished_at);
        rec.last_ok = r.ok;
        rec.last_error = r.error.clone();
        rec.destination = r.destination.clone();
        if r.ok {
            rec.last_success = Some(r.finished_at);
            rec.last_success_snapshot = r.snapshot.clone();
            rec.last_success_files = r.files;
            rec.last_success_bytes = r.bytes;
        }
        state.write_cloud(&rec)?;
    }
    Ok(())
}

/// One rclone binary with the plan's global flags.
struct Rclone {
    bin: PathBuf,
    config: Option<PathBuf>,
}

impl Rclone {
    fn new(bin: PathBuf, cloud: &Cloud) -> Rclone {
        Rclone { bin, config: cloud.rclone_config_file.clone() }
    }

    fn global_args(&self) -> Vec<String> {
        match &self.config {
            Some(c) => vec!["--config".into(), c.display().to_string()],
            None => Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(self.global_args()).stdin(Stdio::null());
        c
    }

    /// Runs a short query; `Ok(None)` when rclone says the directory does not exist (exit 3).
    fn query(&self, args: &[&str]) -> std::result::Result<Option<String>, String> {
        let out = self.command().args(args).output().map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        if out.status.code() == Some(3) {
            return Ok(None);
        }
        Err(format!("exited with {}: {}", out.status, tail(&String::from_utf8_lossy(&out.stderr))))
    }

    /// Files and bytes under a remote directory; a missing directory holds nothing.
    fn size(&self, dir: &str) -> std::result::Result<(u64, u64), String> {
        #[derive(Deserialize)]
        struct Size {
            count: u64,
            bytes: i64,
        }
        let Some(text) = self.query(&["size", "--json", "--links", dir])? else { return Ok((0, 0)) };
        let s: Size = serde_json::from_str(text.trim())
            .map_err(|e| format!("unexpected output {text:?} from rclone size: {e}"))?;
        Ok((s.count, s.bytes.max(0) as u64))
    }

    /// Runs rclone with its stderr (the log) in `log`; the error is the tail of that log.
    #[expect(clippy::disallowed_methods, reason = "the log lives in the plan's state directory on this machine")]
    fn run_logged(&self, args: &[String], log: &Path) -> std::result::Result<(), String> {
        let file = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let status = self
            .command()
            .args(args)
            .stdout(file)
            .stderr(err)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        Err(format!("rclone exited with {status}: {}", tail(&text)))
    }

    /// Purges the oldest history folders beyond `keep` (names are snapshot names, so they
    /// sort by time).
    fn prune_history(&self, root: &str, keep: usize) -> std::result::Result<Vec<String>, String> {
        let Some(list) = self.query(&["lsf", "--dirs-only", root])? else { return Ok(Vec::new()) };
        let mut names: Vec<String> = list
            .lines()
            .map(|l| l.trim_end_matches('/').to_string())
            .filter(|n| crate::store::layout::parse_name(n).is_some())
            .collect();
        names.sort();
        let excess = names.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for name in names.into_iter().take(excess) {
            let dir = format!("{root}/{name}");
            self.query(&["purge", &dir])?.ok_or_else(|| format!("{dir} vanished"))?;
            removed.push(name);
        }
        Ok(removed)
    }
}

/// The last lines of rclone's output that say ERROR (or the last lines at all).
fn tail(text: &str) -> String {
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR") || l.contains("Failed")).collect();
    let lines: Vec<&str> = if errors.is_empty() { text.lines().collect() } else { errors };
    super::last_lines(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        assert_eq!(remote_host_dir("proton:Backups", "laptop"), "proton:Backups/laptop");
        assert_eq!(remote_host_dir("proton:Backups/", "laptop"), "proton:Backups/laptop");
        assert_eq!(remote_host_dir("proton:", "laptop"), "proton:laptop");
    }

    #[test]
    fn tail_prefers_errors() {
        let log = "INFO a\nERROR : x: failed\nINFO b\n";
        assert_eq!(tail(log), "ERROR : x: failed");
        assert_eq!(tail(""), "(no output)");
    }
}
