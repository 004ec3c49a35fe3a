//! Every record the engine keeps between runs, and the one place that knows their files.
//!
//! The records live in `<stateDir>/<host>/` ([`StateDir`]), one small file each:
//!
//! | file | record | read by | written by |
//! |---|---|---|---|
//! | `last-run.json` | the last run's report ([`LastRun`] is the part that is read back) | health, metrics, `status`, `notify-failure` | [`StateDir::write_last_run`], after every `now` and `pull` |
//! | `last-verify.json` | [`VerifyRecord`]: the last verify, *of the destination it names* | health, metrics | [`StateDir::write_verify`], after every `verify` |
//! | `health.json` | the last [`HealthReport`] | metrics, `notify-failure` | [`StateDir::write_health`], after every `health` |
//! | `cloud.json` | [`CloudRecord`]: the last push and the last good one | health, metrics, `notify-failure` | [`StateDir::write_cloud`], after every push |
//! | `cloud-rclone.log` | rclone's own log of the last push | people | rclone ([`StateDir::rclone_log`]) |
//! | `offsite-<name>.json` | [`OffsiteRecord`]: the last copy to offsite `<name>`, the last good one, the last `restic check` and its rotation cursor | health, metrics, `verify --offsite` | [`StateDir::write_offsite`], after every offsite copy and check |
//! | `notifications.json` | [`Notified`]: the last notification per job (health's once-a-day rule) | `health` | [`StateDir::write_notified`] |
//! | `finished-invocations` | [`FinishedInvocation`]s: systemd invocations that failed and notified by themselves | `notify-failure` | [`StateDir::write_finished_invocations`] |
//!
//! **Keys.** Every record is keyed by host: a pulled host has its own directory
//! (`<stateDir>/web1/`), so its runs, verifies and notifications never mix with this
//! machine's. The records that describe *the destination's contents* are also keyed by the
//! destination: today that is the verify record, which names the destination it checked
//! ([`DestinationId`]: the filesystem's UUID when the drive has one, else the resolved path).
//! A verify record of another destination reads as no record at all, so a rotated backup
//! drive never inherits the other drive's clean verify (nor its damage). A record written
//! before this field existed names no destination and is taken as it is. The last run,
//! health, cloud and notification records describe the *job* (did the backup of this host
//! run, is it healthy, did the push work), which does not change with the drive, and stay
//! keyed by host only. The destination-keyed records keep their file, one per host: the last
//! verify of whichever drive was verified last.
//!
//! Every write goes through [`crate::fs::fsutil::write_durably`] ([`crate::fs::Dir::write_atomic`]):
//! after a crash a record is the old or the new one, never half of one. Reads are forgiving:
//! a missing or unreadable record is `None` (or empty), never an error, because a lost state
//! directory must not stop a backup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Result};
use crate::job::Store;
use crate::ops::health::HealthReport;
use crate::run::RunReport;
use crate::store::meta::{Counts, RunState};

/// The last run's report.
const LAST_RUN_FILE: &str = "last-run.json";
/// The last verify's outcome.
const VERIFY_FILE: &str = "last-verify.json";
/// The last health check's outcome.
const HEALTH_FILE: &str = "health.json";
/// The last cloud push and the last good one.
const CLOUD_FILE: &str = "cloud.json";
/// rclone's log of the last push.
const RCLONE_LOG: &str = "cloud-rclone.log";
/// The last notification per job.
const NOTIFIED_FILE: &str = "notifications.json";
/// Invocations that failed after notifying by themselves.
const FINISHED_INVOCATIONS_FILE: &str = "finished-invocations";
/// How many finished invocations are kept (backup, cloud and health may fail close together).
const FINISHED_INVOCATIONS_KEPT: usize = 20;

/// `<stateDir>/<host>/`: where the records of one host live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The records of a store's host (a pulled host's store gives the pulled host's).
    pub fn of(store: &Store) -> StateDir {
        StateDir { dir: store.host_state_dir() }
    }

    /// The records of `host` under a state directory (for commands without a plan).
    pub fn new(state_dir: &Path, host: &str) -> StateDir {
        StateDir { dir: state_dir.join(host) }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The last run (the part health and metrics read); `None` when none is recorded.
    pub fn last_run(&self) -> Option<LastRun> {
        self.read(LAST_RUN_FILE)
    }

    /// The last run's whole report as it was recorded (what `status --json` shows).
    pub fn last_run_report(&self) -> Option<serde_json::Value> {
        self.read(LAST_RUN_FILE)
    }

    /// Records a run's report. A skipped run (another run held the lock) is recorded as such,
    /// and carries the last run that was not skipped as `lastCompleted`, so its outcome stays
    /// visible.
    pub fn write_last_run(&self, report: &RunReport) -> Result<()> {
        let mut value = serde_json::to_value(report).expect("reports serialize");
        if report.state == RunState::Skipped {
            let carried = match self.last_run_report() {
                Some(p) if p["state"] == RunState::Skipped.as_str() => p.get("lastCompleted").cloned(),
                other => other,
            };
            if let Some(c) = carried.filter(|c| !c.is_null()) {
                value["lastCompleted"] = c;
            }
        }
        self.write(LAST_RUN_FILE, &value)
    }

    /// The last verify of `destination`; `None` when none is recorded, or when the last one
    /// recorded checked another destination (see the module docs).
    pub fn verify(&self, destination: &DestinationId) -> Option<VerifyRecord> {
        self.read::<VerifyRecord>(VERIFY_FILE).filter(|r| r.destination.as_ref().is_none_or(|d| d.same_as(destination)))
    }

    /// Records a verify's outcome.
    pub fn write_verify(&self, record: &VerifyRecord) -> Result<()> {
        self.write(VERIFY_FILE, record)
    }

    /// The last health check.
    pub fn health(&self) -> Option<HealthReport> {
        self.read(HEALTH_FILE)
    }

    /// Records a health check.
    pub fn write_health(&self, report: &HealthReport) -> Result<()> {
        self.write(HEALTH_FILE, report)
    }

    /// The cloud record; `None` when nothing was ever pushed (or it cannot be read).
    pub fn cloud(&self) -> Option<CloudRecord> {
        self.read(CLOUD_FILE)
    }

    /// Records the cloud record.
    pub fn write_cloud(&self, record: &CloudRecord) -> Result<()> {
        self.write(CLOUD_FILE, record)
    }

    /// The record of offsite `name`; `None` when nothing was ever copied or checked.
    pub fn offsite(&self, name: &str) -> Option<OffsiteRecord> {
        self.read(&offsite_file(name))
    }

    /// Records the record of offsite `name`.
    pub fn write_offsite(&self, name: &str, record: &OffsiteRecord) -> Result<()> {
        self.write(&offsite_file(name), record)
    }

    /// Where rclone logs the push (the directory is created).
    pub fn rclone_log(&self) -> Result<PathBuf> {
        crate::fs::fsutil::ensure_dir(&self.dir)?;
        Ok(self.dir.join(RCLONE_LOG))
    }

    /// The last notification per job.
    pub fn notified(&self) -> Notified {
        self.read(NOTIFIED_FILE).unwrap_or_default()
    }

    /// Records the last notification per job.
    pub fn write_notified(&self, notified: &Notified) -> Result<()> {
        self.write(NOTIFIED_FILE, notified)
    }

    /// The invocations that failed after notifying by themselves, oldest first.
    pub fn finished_invocations(&self) -> Vec<FinishedInvocation> {
        let text = std::fs::read_to_string(self.dir.join(FINISHED_INVOCATIONS_FILE)).unwrap_or_default();
        text.lines().filter(|l| !l.is_empty()).filter_map(FinishedInvocation::parse).collect()
    }

    /// Records them, as `ID UNIX_SECONDS` lines, keeping the last twenty.
    pub fn write_finished_invocations(&self, list: &[FinishedInvocation]) -> Result<()> {
        let keep = list.len().saturating_sub(FINISHED_INVOCATIONS_KEPT);
        let text: String = list[keep..].iter().map(|i| format!("{} {}\n", i.id, i.time)).collect();
        self.write_bytes(FINISHED_INVOCATIONS_FILE, text.as_bytes())
    }

    /// Whether the record of `job` was rewritten within `within` and says the job failed: the
    /// job reached its end and reported the failure itself. Modification times, not the
    /// records' contents, because a run with a testing clock records simulated times.
    pub fn failure_recorded_within(&self, job: Job, within: Duration) -> bool {
        let fresh = |name: &str| {
            std::fs::metadata(self.dir.join(name))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < within))
        };
        let cloud_failed = || fresh(CLOUD_FILE) && self.cloud().is_some_and(|c| !c.last_ok);
        let offsite_failed = || {
            let Ok(dir) = crate::fs::Dir::open_trusted(&self.dir) else { return false };
            dir.entries().unwrap_or_default().iter().filter_map(|e| e.name.to_str()).any(|n| {
                let Some(name) = n.strip_prefix("offsite-").and_then(|n| n.strip_suffix(".json")) else { return false };
                fresh(n) && self.offsite(name).is_some_and(|o| !o.last_ok || o.last_check_ok == Some(false))
            })
        };
        match job {
            Job::Cloud => cloud_failed(),
            Job::Offsite => offsite_failed(),
            Job::Health => fresh(HEALTH_FILE) && self.health().is_some_and(|h| !h.healthy),
            Job::Backup => {
                let run_failed = fresh(LAST_RUN_FILE) && self.last_run().is_some_and(|r| r.state != RunState::Success);
                run_failed || cloud_failed() || offsite_failed()
            }
        }
    }

    fn read<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let bytes = std::fs::read(self.dir.join(name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(value).expect("records serialize");
        text.push(b'\n');
        self.write_bytes(name, &text)
    }

    fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<()> {
        crate::fs::fsutil::ensure_dir(&self.dir)?;
        crate::fs::fsutil::write_durably(&self.dir.join(name), bytes)
    }
}

/// The jobs that keep records: what a systemd unit runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// `now` or `pull` (`backup.service`, `backup-host-NAME.service`).
    Backup,
    /// `cloud` (`backup-cloud.service`).
    Cloud,
    /// `health` (`backup-health.service`).
    Health,
    /// `offsite` and `verify --offsite` (`backup-offsite-NAME.service`,
    /// `backup-offsite-check-NAME.service`).
    Offsite,
}

impl Job {
    /// Its name in messages and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::Cloud => "cloud",
            Job::Health => "health",
            Job::Offsite => "offsite",
        }
    }
}

/// The parts of the last run's report that health and metrics read.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// How it ended.
    pub state: RunState,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What kind of failure it was.
    #[serde(default)]
    pub error_kind: Option<ErrorKind>,
    /// `daily/NAME`.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// Counts of the build.
    #[serde(default)]
    pub counts: Counts,
    /// For a skipped run: the last run before it that was not skipped, carried over by
    /// [`StateDir::write_last_run`] so that a skip never hides a failure.
    #[serde(default)]
    pub last_completed: Option<Box<LastRun>>,
}

impl LastRun {
    /// The run whose outcome counts for health and metrics: this one, or for a skipped run
    /// the last one before it that ran (`None` when none did).
    pub fn effective(&self) -> Option<&LastRun> {
        match self.state {
            RunState::Skipped => self.last_completed.as_deref(),
            _ => Some(self),
        }
    }
}

/// Which destination a record describes: the filesystem's UUID when the drive has one (so a
/// rotated drive mounted at the same path is another destination, and the same drive
/// mounted elsewhere is the same), and the resolved path.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationId {
    /// The destination directory, symlinks resolved when it exists.
    pub path: PathBuf,
    /// The UUID of the filesystem holding it (`/dev/disk/by-uuid`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
}

impl DestinationId {
    /// The destination at `path` as it is now (what is mounted there).
    pub fn of(path: &Path) -> DestinationId {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let filesystem = filesystem_uuid(&path);
        DestinationId { path, filesystem }
    }

    /// The same destination: the same filesystem when both know theirs, else the same path.
    pub fn same_as(&self, other: &DestinationId) -> bool {
        match (&self.filesystem, &other.filesystem) {
            (Some(a), Some(b)) => a == b,
            _ => self.path == other.path,
        }
    }
}

/// The UUID under which udev lists the block device holding `path`, if any.
fn filesystem_uuid(path: &Path) -> Option<String> {
    const BY_UUID: &str = "/dev/disk/by-uuid";
    let dev = rustix::fs::stat(path).ok()?.st_dev;
    let dir = crate::fs::Dir::open_trusted(Path::new(BY_UUID)).ok()?;
    dir.entries().ok()?.into_iter().find_map(|e| {
        // The entries are udev's symlinks to the device nodes: followed on purpose.
        let st = rustix::fs::stat(dir.child_path(&e.name)).ok()?;
        (st.st_rdev == dev).then(|| e.name.to_string())
    })
}

/// The outcome of the last verify, kept for health and metrics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRecord {
    /// When it finished.
    pub finished_at: Timestamp,
    /// Snapshots verified.
    pub snapshots: Vec<String>,
    /// Files hashed.
    pub files_checked: u64,
    /// Changed, missing, unexpected and sample-mismatched files, added up.
    pub errors: u64,
    /// The snapshots with errors.
    pub damaged: Vec<String>,
    /// The destination verified (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<DestinationId>,
}

impl VerifyRecord {
    /// The record of a verify of `destination` that produced `reports`, finished now.
    pub fn of(destination: DestinationId, reports: &[crate::store::verify::VerifyReport]) -> VerifyRecord {
        let errors = |r: &crate::store::verify::VerifyReport| {
            (r.changed.len() + r.missing.len() + r.unexpected.len() + r.sample_mismatches.len()) as u64
        };
        VerifyRecord {
            finished_at: Timestamp::now(),
            snapshots: reports.iter().map(|r| r.snapshot.clone()).collect(),
            files_checked: reports.iter().map(|r| r.files_checked).sum(),
            errors: reports.iter().map(errors).sum(),
            damaged: reports.iter().filter(|r| !r.is_clean()).map(|r| r.snapshot.clone()).collect(),
            destination: Some(destination),
        }
    }

    /// Whether the verify found nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.errors == 0
    }
}

/// `cloud.json`: the last push and the last good one.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CloudRecord {
    /// When the last push that succeeded finished.
    pub last_success: Option<Timestamp>,
    /// Which snapshot it pushed.
    pub last_success_snapshot: Option<String>,
    /// Files and bytes it pushed.
    pub last_success_files: u64,
    /// Bytes it pushed.
    pub last_success_bytes: u64,
    /// When the last push (good or bad) finished.
    pub last_attempt: Option<Timestamp>,
    /// Whether it succeeded.
    pub last_ok: bool,
    /// Its error.
    pub last_error: Option<String>,
    /// The remote directory.
    pub destination: String,
}

/// `offsite-<name>` is a plan key (`[A-Za-z0-9._-]{1,64}`, not `.`/`..`), so one plain file name.
fn offsite_file(name: &str) -> String {
    format!("offsite-{name}.json")
}

/// `offsite-<name>.json`: the last copy to a restic repository, the last good one, and the
/// last `restic check`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct OffsiteRecord {
    /// The repository (as the plan names it).
    pub repository: String,
    /// When the last copy (good or bad) finished.
    pub last_attempt: Option<Timestamp>,
    /// Whether it succeeded.
    pub last_ok: bool,
    /// Its error.
    pub last_error: Option<String>,
    /// How long it took, seconds.
    pub last_duration_seconds: f64,
    /// When the last copy that succeeded finished.
    pub last_success: Option<Timestamp>,
    /// The local snapshot it copied (`daily/NAME`).
    pub last_success_snapshot: Option<String>,
    /// The restic snapshot that holds it.
    pub last_success_restic_snapshot: Option<String>,
    /// Bytes restic added to the repository for it.
    pub last_success_data_added: u64,
    /// Bytes restic read for it.
    pub last_success_bytes_processed: u64,
    /// Files new, changed and unmodified in it (restic's summary).
    pub last_success_files: [u64; 3],
    /// When the last `restic check` finished.
    pub last_check: Option<Timestamp>,
    /// Whether it found the repository clean (and the sample equal to the manifest).
    pub last_check_ok: Option<bool>,
    /// Its error.
    pub last_check_error: Option<String>,
    /// The next `--read-data-subset n/t` part to read (1-based), so checks rotate through the
    /// whole repository.
    pub check_cursor: u32,
}

/// One job's last notification.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    /// When it was sent.
    pub time: Timestamp,
    /// The state it reported.
    pub state: RunState,
    /// What it was about (health: the failing checks, comma-separated).
    pub key: String,
}

/// `notifications.json`: the last notification per job name.
pub type Notified = BTreeMap<String, Notification>;

/// A systemd invocation that failed after sending its own notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedInvocation {
    /// `$INVOCATION_ID`.
    pub id: String,
    /// When it was recorded (Unix seconds).
    pub time: i64,
}

impl FinishedInvocation {
    fn parse(line: &str) -> Option<FinishedInvocation> {
        let mut parts = line.split(' ');
        let id = parts.next()?.to_string();
        // A line without a time can never be fresh: dropped.
        let time = parts.next()?.parse().ok()?;
        Some(FinishedInvocation { id, time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_of_another_drive_is_no_verify() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path(), "h");
        let drive =
            |uuid: Option<&str>| DestinationId { path: "/mnt/backup".into(), filesystem: uuid.map(String::from) };
        let mut rec = VerifyRecord::of(drive(Some("aaaa")), &[]);
        state.write_verify(&rec).unwrap();
        assert_eq!(state.verify(&drive(Some("aaaa"))).as_ref(), Some(&rec));
        assert_eq!(state.verify(&drive(Some("bbbb"))), None, "a rotated drive at the same path");
        assert!(state.verify(&drive(None)).is_some(), "no UUID known now: compared by path");
        let elsewhere = DestinationId { path: "/media/usb".into(), filesystem: None };
        assert_eq!(state.verify(&elsewhere), None);
        // A record from before destinations were kept is taken as it is.
        rec.destination = None;
        state.write_verify(&rec).unwrap();
        assert!(state.verify(&drive(Some("bbbb"))).is_some());
    }

    #[test]
    fn finished_invocations_keep_the_last_twenty() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path(), "h");
        let list: Vec<_> = (0..25).map(|i| FinishedInvocation { id: format!("id{i}"), time: i }).collect();
        state.write_finished_invocations(&list).unwrap();
        let back = state.finished_invocations();
        assert_eq!((back.len(), back[0].id.as_str()), (20, "id5"));
        let text = std::fs::read_to_string(dir.path().join("h/finished-invocations")).unwrap();
        assert!(text.starts_with("id5 5\n"), "{text}");
    }
}
