//! Every record the engine keeps between runs, and the one place that knows their files.
//!
//! The records live in `<stateDir>/<host>/` ([`StateDir`]), one small file each. Those that
//! describe a *destination* (what a backup drive holds and what was done with it) are also
//! kept per destination, in `<stateDir>/<host>/destinations/<key>/` ([`StateDir::destination`],
//! a `StateDir` of its own with the same files), so two drives rotated at one mount point each
//! keep their own history:
//!
//! | file | record | where | read by | written by |
//! |---|---|---|---|---|
//! | `last-run.json` | the last run's report ([`LastRun`] is the part that is read back) | host: the job's last attempt, whatever the drive (also "destination not mounted"); destination: the last run while that drive was mounted | health, metrics, `status`, `notify-failure` (host) | [`StateDir::write_last_run`] in every scope of [`StateDir::scopes`], after every `now` and `pull` |
//! | `last-verify.json` | [`VerifyRecord`]: the last verify of that drive | destination | health, metrics, `status` | [`StateDir::write_verify`], after every `verify` |
//! | `cloud.json` | [`CloudRecord`]: the last push and the last good one | host (the job's, for `notify-failure`) and the destination the pushed snapshot came from | health, metrics, `status`, `notify-failure` | [`StateDir::write_cloud`] in every scope, after every push |
//! | `destination.json` | [`SeenDestination`]: which drive the directory is for, and when it was last seen | destination | health, `status` (the last drive seen when none is mounted) | [`StateDir::scopes`] |
//! | `damage.json` | [`DamageRecord`]: damaged files found by verify and not yet repaired, and those `repair` marked lost | destination | health, the link decision of the next run (`store::place`), `repair` | [`StateDir::write_damage`], after every `verify` and `repair` |
//! | `verify-cursor.json` | [`VerifyCursor`]: the next slice of `verify --subset` | destination | `verify --subset` | [`StateDir::write_verify_cursor`] |
//! | `health.json` | the last [`HealthReport`] | host | metrics, `notify-failure` | [`StateDir::write_health`], after every `health` |
//! | `cloud-rclone.log` | rclone's own log of the last push | host | people | rclone ([`StateDir::rclone_log`]) |
//! | `notifications.json` | [`Notified`]: the last notification per job (health's once-a-day rule) | host | `health` | [`StateDir::write_notified`] |
//! | `finished-invocations` | [`FinishedInvocation`]s: systemd invocations that failed and notified by themselves | host | `notify-failure` | [`StateDir::write_finished_invocations`] |
//! | `offsite-<name>.json` | [`OffsiteRecord`]: the last copy to offsite `<name>`, the last good one, the last `restic check` and its rotation cursor | host: an offsite repository is fed by whichever drive is mounted, so its record is the job's, not a drive's | health, metrics, `verify --offsite` | [`StateDir::write_offsite`], after every offsite copy and check |
//!
//! **Keys.** Every record is keyed by host: a pulled host has its own directory
//! (`<stateDir>/web1/`), so its runs, verifies and notifications never mix with this
//! machine's. A destination is a [`DestinationId`]: the filesystem's UUID when the drive has
//! one (udev's `/dev/disk/by-uuid`, else `blkid -p` on the device; for btrfs the device
//! its mount names), else the resolved path;
//! its directory is `fs-<UUID>` or `path-<escaped path>` ([`DestinationId::key`]). A run is
//! recorded for the destination that was mounted when it started ([`DestinationId::mounted`]:
//! the directory exists and, with `requireMountPoint`, is a mount point), also when it failed
//! there (a pre-hook, a full disk); a run that found no drive is only the job's. Readers take
//! [`StateDir::records_of`] the drive mounted now: its own records, or when none is mounted
//! the job's last attempt and the records of the last drive seen, named.
//!
//! **Records written before destinations were kept** (no `destinations/` directory yet) are
//! taken as they are for whichever drive is mounted, as before, and are adopted (copied) by the
//! first drive that gets a record of its own; from then on a drive reads only its own. A
//! host-level `last-verify.json` from before counts only for the drive it names (or, one that
//! names none, for the adopting drive).
//!
//! Every write goes through [`crate::fs::fsutil::write_durably`] ([`crate::fs::Dir::write_atomic`]):
//! after a crash a record is the old or the new one, never half of one. Reads are forgiving:
//! a missing or unreadable record is `None` (or empty), never an error, because a lost state
//! directory must not stop a backup. Nothing here is ever written on the destination itself.

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
/// Damaged files found by verify, and those marked lost.
const DAMAGE_FILE: &str = "damage.json";
/// The next slice of `verify --subset`.
const VERIFY_CURSOR_FILE: &str = "verify-cursor.json";
/// The last health check's outcome.
const HEALTH_FILE: &str = "health.json";
/// The last cloud push and the last good one.
const CLOUD_FILE: &str = "cloud.json";
/// rclone's log of the last push.
const RCLONE_LOG: &str = "cloud-rclone.log";
/// The last notification per job.
const NOTIFIED_FILE: &str = "notifications.json";
/// The directory of the per-destination records.
const DESTINATIONS_DIR: &str = "destinations";
/// In a destination's directory: which destination it is, and when it was last seen.
const SEEN_FILE: &str = "destination.json";
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

    /// The records of one destination of this host, `<stateDir>/<host>/destinations/<key>/`:
    /// a `StateDir` of its own, so every record that describes a drive (last run, verify,
    /// cloud, and any added later) is read and written there with the same methods.
    pub fn destination(&self, id: &DestinationId) -> StateDir {
        StateDir { dir: self.dir.join(DESTINATIONS_DIR).join(id.key()) }
    }

    /// Where a record that describes the job *and* the drive it ran on is written: this
    /// host's directory and, when a destination is given, that destination's (noted as seen
    /// now). Writers loop over these; a destination whose note cannot be written is still
    /// returned (the record's own write reports the error).
    pub fn scopes(&self, destination: Option<&DestinationId>) -> Vec<StateDir> {
        let mut out = vec![self.clone()];
        if let Some(id) = destination {
            let scoped = self.destination(id);
            if !self.keeps_destinations() {
                self.adopt_older_records(&scoped, id);
            }
            let seen = SeenDestination { destination: id.clone(), seen_at: Timestamp::now() };
            if let Err(e) = scoped.write(SEEN_FILE, &seen) {
                tracing::info!("not noting destination {} as seen: {e}", id.describe());
            }
            out.push(scoped);
        }
        out
    }

    /// [`StateDir::scopes`] for a record about `store`'s job and the drive mounted at its
    /// destination now: what a writer of such a record (a cloud push, an offsite copy) loops
    /// over, reading and rewriting its record in each.
    pub fn scopes_now(store: &Store) -> Vec<StateDir> {
        StateDir::of(store).scopes(DestinationId::mounted(&store.destination).as_ref())
    }

    /// [`StateDir::records_of`] the drive mounted at `store`'s destination now: what health,
    /// metrics and `status` read.
    pub fn records_now(store: &Store) -> DestinationRecords {
        StateDir::of(store).records_of(DestinationId::mounted(&store.destination).as_ref())
    }

    /// Copies the records written before destinations were kept into the directory of the
    /// first drive that gets one: they were that drive's as far as anyone can tell, and a
    /// drive must not lose its last run or push on the upgrade (a verify only when it names
    /// this drive or none). Best effort, like every read here.
    fn adopt_older_records(&self, scoped: &StateDir, id: &DestinationId) {
        let mut copied = Vec::new();
        for name in [LAST_RUN_FILE, CLOUD_FILE] {
            if let Some(v) = self.read::<serde_json::Value>(name) {
                copied.push((name, scoped.write(name, &v)));
            }
        }
        if let Some(v) = self.verify(id) {
            copied.push((VERIFY_FILE, scoped.write_verify(&v)));
        }
        for (name, result) in copied {
            if let Err(e) = result {
                tracing::info!("not adopting the older {name} for {}: {e}", id.describe());
            }
        }
    }

    /// Whether any record was kept per destination (see the module docs on older records).
    fn keeps_destinations(&self) -> bool {
        std::fs::symlink_metadata(self.dir.join(DESTINATIONS_DIR)).is_ok_and(|m| m.is_dir())
    }

    /// The destinations of this host that have records, most recently seen first.
    pub fn seen_destinations(&self) -> Vec<SeenDestination> {
        let Ok(dir) = crate::fs::Dir::open_trusted(&self.dir.join(DESTINATIONS_DIR)) else { return Vec::new() };
        let mut seen: Vec<SeenDestination> = dir
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == rustix::fs::FileType::Directory)
            .filter_map(|e| StateDir { dir: dir.child_path(&e.name) }.read::<SeenDestination>(SEEN_FILE))
            .collect();
        seen.sort_by_key(|s| std::cmp::Reverse(s.seen_at));
        seen
    }

    /// The records that describe `mounted`, the drive at the destination now (see
    /// [`DestinationId::mounted`]); with none mounted, the job's last attempt and the records
    /// of the last drive seen.
    pub fn records_of(&self, mounted: Option<&DestinationId>) -> DestinationRecords {
        let keeps = self.keeps_destinations();
        let last_seen = if mounted.is_none() { self.seen_destinations().into_iter().next() } else { None };
        let drive = mounted.or(last_seen.as_ref().map(|s| &s.destination));
        let records = match drive {
            Some(id) if keeps => self.destination(id),
            _ => self.clone(),
        };
        DestinationRecords { mounted: mounted.cloned(), last_seen, records, host: self.clone(), legacy: !keeps }
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

    /// The last verify of `destination` recorded here; `None` when none is recorded, or when
    /// the last one recorded checked another destination (see the module docs).
    pub fn verify(&self, destination: &DestinationId) -> Option<VerifyRecord> {
        self.read::<VerifyRecord>(VERIFY_FILE).filter(|r| r.destination.as_ref().is_none_or(|d| d.same_as(destination)))
    }

    /// Records a verify's outcome.
    pub fn write_verify(&self, record: &VerifyRecord) -> Result<()> {
        self.write(VERIFY_FILE, record)
    }

    /// The damage recorded here (empty when none or unreadable).
    pub fn damage(&self) -> DamageRecord {
        self.read(DAMAGE_FILE).unwrap_or_default()
    }

    /// Records the damage.
    pub fn write_damage(&self, record: &DamageRecord) -> Result<()> {
        self.write(DAMAGE_FILE, record)
    }

    /// The cursor of `verify --subset` (none yet: the first slice).
    pub fn verify_cursor(&self) -> VerifyCursor {
        self.read(VERIFY_CURSOR_FILE).unwrap_or_default()
    }

    /// Records the cursor of `verify --subset`.
    pub fn write_verify_cursor(&self, cursor: &VerifyCursor) -> Result<()> {
        self.write(VERIFY_CURSOR_FILE, cursor)
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

    /// The drive at `destination` now, when one is there: the directory exists and, with
    /// `requireMountPoint`, is a mount point. `None` means no drive is mounted: a run then
    /// writes nothing, and its record is only the job's.
    pub fn mounted(destination: &crate::plan::Destination) -> Option<DestinationId> {
        let path = &destination.path;
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        let mounted = !destination.require_mount_point || crate::fs::fsutil::is_mount_point(path).unwrap_or(false);
        (is_dir && mounted).then(|| DestinationId::of(path))
    }

    /// The name of its directory under `destinations/`: `fs-<UUID>` when the filesystem is
    /// known, else `path-<the path, / as ->` (other bytes than letters, digits, `_` and `.` as
    /// `%HH`; a path too long for one name as `pathhash-<BLAKE3 of it>`). One component, always.
    pub fn key(&self) -> String {
        let uuid_ok =
            |u: &str| !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if let Some(u) = self.filesystem.as_deref().filter(|u| uuid_ok(u)) {
            return format!("fs-{u}");
        }
        use std::os::unix::ffi::OsStrExt;
        let bytes = self.path.as_os_str().as_bytes();
        let trimmed: &[u8] = {
            let t = bytes.strip_prefix(b"/").unwrap_or(bytes);
            t.strip_suffix(b"/").unwrap_or(t)
        };
        let mut out = String::from("path-");
        for (i, &b) in trimmed.iter().enumerate() {
            match b {
                b'/' => out.push('-'),
                b'.' if i == 0 => out.push_str("%2e"),
                b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' => out.push(b as char),
                b => out.push_str(&format!("%{b:02x}")),
            }
        }
        if out.len() > 200 {
            return format!("pathhash-{}", &blake3::hash(bytes).to_hex()[..32]);
        }
        out
    }

    /// In words: `drive 1234-abcd at /mnt/backup`, or the path alone.
    pub fn describe(&self) -> String {
        match &self.filesystem {
            Some(u) => format!("drive {u} at {}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// The same destination: the same filesystem when both know theirs, else the same path.
    pub fn same_as(&self, other: &DestinationId) -> bool {
        match (&self.filesystem, &other.filesystem) {
            (Some(a), Some(b)) => a == b,
            _ => self.path == other.path,
        }
    }
}

/// `destination.json` in a destination's directory: which drive it is, and when it was last
/// seen (a record was written for it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeenDestination {
    /// The drive.
    pub destination: DestinationId,
    /// When it was last seen.
    pub seen_at: Timestamp,
}

/// What [`StateDir::records_of`] found: the records of one drive, for health, metrics and
/// `status`.
#[derive(Clone, Debug)]
pub struct DestinationRecords {
    /// The drive mounted at the destination now, if any.
    pub mounted: Option<DestinationId>,
    /// With none mounted: the last drive seen, whose records these are.
    pub last_seen: Option<SeenDestination>,
    /// Where that drive's records are: its own directory, or the host's for a state directory
    /// written before destinations were kept. Read any drive-scoped record here (cloud, …).
    pub records: StateDir,
    host: StateDir,
    legacy: bool,
}

impl DestinationRecords {
    /// The drive these records are of: the mounted one, else the last one seen.
    pub fn drive(&self) -> Option<&DestinationId> {
        self.mounted.as_ref().or(self.last_seen.as_ref().map(|s| &s.destination))
    }

    /// The last run on the mounted drive; with none mounted, the job's last attempt (which
    /// says that no drive was there).
    pub fn last_run(&self) -> Option<LastRun> {
        self.run_scope().last_run()
    }

    /// The same, the whole report as recorded (what `status --json` shows).
    pub fn last_run_report(&self) -> Option<serde_json::Value> {
        self.run_scope().last_run_report()
    }

    fn run_scope(&self) -> &StateDir {
        if self.mounted.is_some() {
            &self.records
        } else {
            &self.host
        }
    }

    /// The last verify of the drive (a host-level record from before destinations were kept
    /// counts when it names this drive).
    pub fn verify(&self) -> Option<VerifyRecord> {
        let Some(id) = self.drive() else {
            return self.records.read(VERIFY_FILE).filter(|_: &VerifyRecord| self.legacy);
        };
        self.records.verify(id).or_else(|| {
            self.host
                .read::<VerifyRecord>(VERIFY_FILE)
                .filter(|r| r.destination.as_ref().is_some_and(|d| d.same_as(id)))
        })
    }

    /// The last cloud push of a snapshot of the drive.
    pub fn cloud(&self) -> Option<CloudRecord> {
        self.records.cloud()
    }
}

/// The UUID of the filesystem holding `path`: the name under which udev lists its block
/// device, or where udev does not run (a container, an early boot), what `blkid -p` reads
/// from the device itself. `None` for a filesystem without a block device (tmpfs, overlay,
/// NFS) or when neither can tell.
fn filesystem_uuid(path: &Path) -> Option<String> {
    let dev = rustix::fs::stat(path).ok()?.st_dev;
    let dev = if block_device_name(dev).is_some() { dev } else { mount_source_device(path)? };
    uuid_from_udev(dev).or_else(|| uuid_from_blkid(dev))
}

/// The kernel's name of block device `dev` (`loop0`, `sdb1`, `dm-0`), when it is one.
fn block_device_name(dev: u64) -> Option<String> {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_/".contains(c);
    (!name.is_empty() && name.chars().all(plain) && name.split('/').all(|c| !c.is_empty())).then(|| name.to_string())
}

/// For a filesystem whose files report a device number of their own (btrfs gives every
/// subvolume one): the block device `/proc/self/mountinfo` names as the source of the mount
/// holding `path` (the longest mount point above it, the last one listed when stacked).
fn mount_source_device(path: &Path) -> Option<u64> {
    let path = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    let entries = info.lines().filter_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        Some((unescape_mountinfo(before.split(' ').nth(4)?), after.split(' ').nth(1)?))
    });
    for (point, source) in entries {
        let point = PathBuf::from(point);
        let depth = point.components().count();
        if path.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, unescape_mountinfo(source)));
        }
    }
    let st = rustix::fs::stat(Path::new(&best?.1)).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::BlockDevice).then_some(st.st_rdev)
}

/// mountinfo writes a space, tab, newline and backslash in a path as `\040`, `\011`, `\012`,
/// `\134`.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn uuid_from_udev(dev: u64) -> Option<String> {
    const BY_UUID: &str = "/dev/disk/by-uuid";
    let dir = crate::fs::Dir::open_trusted(Path::new(BY_UUID)).ok()?;
    dir.entries().ok()?.into_iter().find_map(|e| {
        // The entries are udev's symlinks to the device nodes: followed on purpose.
        let st = rustix::fs::stat(dir.child_path(&e.name)).ok()?;
        (st.st_rdev == dev).then(|| e.name.to_string())
    })
}

fn uuid_from_blkid(dev: u64) -> Option<String> {
    // The device node, checked to be that device.
    let node = Path::new("/dev").join(block_device_name(dev)?);
    let st = rustix::fs::stat(&node).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::BlockDevice || st.st_rdev != dev {
        return None;
    }
    let blkid = ["blkid", "/run/current-system/sw/bin/blkid", "/usr/sbin/blkid", "/sbin/blkid"];
    let out = blkid.iter().find_map(|b| {
        std::process::Command::new(b)
            .args(["-p", "-o", "value", "-s", "UUID"])
            .arg(&node)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
    })?;
    let uuid = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !uuid.is_empty()).then_some(uuid)
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
    /// Of the errors, damaged files that `repair` has since replaced or marked lost.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repaired: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
            repaired: 0,
        }
    }

    /// Whether the verify found nothing wrong, or only damage repaired since.
    pub fn is_clean(&self) -> bool {
        self.errors <= self.repaired
    }
}

/// `damage.json`: damaged files a verify found, per place (snapshot and path), until `repair`
/// replaces them (then they go) or marks them lost (then they move to `lost`). Both lists keep
/// the damaged copy's inode, which the next run never hard-links (`store::place::Avoid`, handed to
/// the build with the link base).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DamageRecord {
    /// Not repaired yet: health's `verify` fails while one is in a snapshot that still exists.
    pub files: Vec<DamagedPlace>,
    /// Marked lost in their snapshot's `.hwc-backup/lost.json` (no good copy was found).
    pub lost: Vec<DamagedPlace>,
}

/// One damaged file in one snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DamagedPlace {
    /// `daily/NAME` when found (the tier may change since; the name does not).
    pub snapshot: String,
    /// `/dir/name`, for people (bytes that are not UTF-8 as U+FFFD).
    pub path: String,
    /// `dir/name` as the manifest has it, hex.
    pub raw: String,
    /// Device of the damaged copy.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// The content hash the manifest expects, hex.
    pub hash: String,
    /// When it was found.
    pub found_at: Timestamp,
}

impl DamagedPlace {
    /// The snapshot's name (`daily/NAME` → `NAME`).
    pub fn snapshot_name(&self) -> &str {
        self.snapshot.rsplit('/').next().unwrap_or(&self.snapshot)
    }

    fn same_place(&self, other: &DamagedPlace) -> bool {
        self.snapshot_name() == other.snapshot_name() && self.raw == other.raw
    }
}

impl DamageRecord {
    /// Takes in what a verify found: every changed file is recorded (unless marked lost
    /// already); a snapshot verified in full (`full`) drops its earlier records that this
    /// verify found clean.
    pub fn merge_verify(&mut self, reports: &[crate::store::verify::VerifyReport], full: bool) {
        let now = Timestamp::now();
        for r in reports {
            let name = r.snapshot.rsplit('/').next().unwrap_or(&r.snapshot).to_string();
            let found: Vec<DamagedPlace> = r
                .changed_files
                .iter()
                .map(|c| {
                    use std::os::unix::ffi::OsStrExt;
                    let raw = c.path.as_os_str().as_bytes();
                    DamagedPlace {
                        snapshot: r.snapshot.clone(),
                        path: c.path.to_string_lossy().into_owned(),
                        raw: crate::store::verify::hex_encode(raw.strip_prefix(b"/").unwrap_or(raw)),
                        dev: c.inode.0,
                        ino: c.inode.1,
                        hash: crate::store::verify::hex_encode(&c.expected),
                        found_at: now,
                    }
                })
                .collect();
            if full {
                self.files.retain(|p| p.snapshot_name() != name || found.iter().any(|f| f.same_place(p)));
            }
            for f in found {
                if self.lost.iter().any(|l| l.same_place(&f)) {
                    continue;
                }
                match self.files.iter_mut().find(|p| p.same_place(&f)) {
                    Some(p) => *p = DamagedPlace { found_at: p.found_at, ..f },
                    None => self.files.push(f),
                }
            }
        }
    }

    /// The unrepaired places in snapshots that still exist (by name).
    pub fn unrepaired<'a>(&'a self, existing: &'a [String]) -> impl Iterator<Item = &'a DamagedPlace> + 'a {
        self.files.iter().filter(move |p| existing.iter().any(|n| n == p.snapshot_name()))
    }

    /// The inodes never to hard-link: every damaged copy, repaired or not.
    pub fn inodes(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.files.iter().chain(&self.lost).map(|p| (p.dev, p.ino))
    }
}

/// `verify-cursor.json`: the slice the next `verify --subset` checks.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct VerifyCursor {
    /// Slices in the cycle (`⌈100 / N⌉` for `--subset N%`); another count starts over at 0.
    pub slices: u32,
    /// The next slice.
    pub next: u32,
}

impl VerifyCursor {
    /// The slice to check now for a cycle of `slices`.
    pub fn current(&self, slices: u32) -> u32 {
        if self.slices == slices && self.next < slices {
            self.next
        } else {
            0
        }
    }

    /// The cursor after checking slice `index` of `slices`.
    pub fn after(index: u32, slices: u32) -> VerifyCursor {
        VerifyCursor { slices, next: (index + 1) % slices.max(1) }
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

    fn drive(path: &str, uuid: Option<&str>) -> DestinationId {
        DestinationId { path: path.into(), filesystem: uuid.map(String::from) }
    }

    #[test]
    fn a_destination_key_is_one_plain_component() {
        assert_eq!(drive("/mnt/backup", Some("4f01-ab")).key(), "fs-4f01-ab");
        assert_eq!(drive("/mnt/backup", None).key(), "path-mnt-backup");
        assert_eq!(drive("/", None).key(), "path-");
        // Distinct paths stay distinct; nothing becomes `..`, a slash or a hidden name.
        assert_eq!(drive("/mnt/my-drive", None).key(), "path-mnt-my%2ddrive");
        assert_ne!(drive("/mnt/a-b", None).key(), drive("/mnt/a/b", None).key());
        assert_eq!(drive("/..", None).key(), "path-%2e.");
        // A filesystem "UUID" that is not one (a hostile drive's label) is not used as a name.
        for bad in ["../../etc", "a/b", "", ".hidden", &"x".repeat(65)] {
            let k = drive("/mnt/backup", Some(bad)).key();
            assert_eq!(k, "path-mnt-backup", "{bad:?}");
        }
        let long = format!("/{}", "d/".repeat(150));
        let k = drive(&long, None).key();
        assert!(k.len() < 100 && k.starts_with("pathhash-"), "{k}");
        for k in [k, drive("/mnt/\n\u{e9}\u{0}", None).key()] {
            assert!(crate::fs::Name::new(&k).is_ok() && !k.starts_with('.'), "{k}");
        }
    }

    #[test]
    fn each_drive_reads_its_own_records_and_older_records_count_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let host = StateDir::new(dir.path(), "h");
        let (a, b) = (drive("/mnt/backup", Some("aaaa")), drive("/mnt/backup", Some("bbbb")));
        let mut run = crate::run::RunReport::new("h", Timestamp::from_second(100).unwrap());
        run.state = RunState::Success;
        // Records written before destinations were kept count for whichever drive is mounted.
        host.write_last_run(&run).unwrap();
        host.write_cloud(&CloudRecord { last_ok: true, ..Default::default() }).unwrap();
        host.write_verify(&VerifyRecord::of(a.clone(), &[])).unwrap();
        assert!(host.records_of(Some(&b)).last_run().is_some());
        assert!(host.records_of(Some(&b)).cloud().is_some());
        assert!(host.records_of(Some(&b)).verify().is_none(), "it names drive a");
        // From the first record per destination on, a drive reads only its own.
        run.state = RunState::Failed;
        for scope in host.scopes(Some(&b)) {
            scope.write_last_run(&run).unwrap();
        }
        let on_a = host.records_of(Some(&a));
        assert_eq!((on_a.last_run(), on_a.cloud()), (None, None));
        assert!(on_a.verify().is_some(), "the old host-level verify names drive a");
        let on_b = host.records_of(Some(&b));
        assert_eq!(on_b.last_run().unwrap().state, RunState::Failed);
        assert!(on_b.cloud().is_some_and(|c| c.last_ok), "the older push is adopted by the first drive");
        assert!(on_b.verify().is_none());
        // A skip there carries the run before it on that drive.
        run.state = RunState::Skipped;
        host.destination(&b).write_last_run(&run).unwrap();
        let skip = host.records_of(Some(&b)).last_run().unwrap();
        assert_eq!(skip.effective().unwrap().state, RunState::Failed);
        // No drive mounted: the job's last attempt, and the last drive seen.
        let none = host.records_of(None);
        assert_eq!(none.last_seen.as_ref().map(|s| &s.destination), Some(&b));
        assert_eq!(none.drive(), Some(&b));
        assert_eq!(none.last_run().unwrap().state, RunState::Failed);
        assert!(dir.path().join("h/destinations/fs-bbbb/destination.json").is_file());
    }

    #[test]
    fn damage_is_kept_until_a_full_verify_finds_it_clean_and_lost_is_not_counted_again() {
        use crate::store::verify::{ChangedFile, VerifyReport};
        let report = |snapshot: &str, changed: &[(&str, u64)], skipped: u64| VerifyReport {
            snapshot: snapshot.into(),
            files_skipped: skipped,
            changed_files: changed
                .iter()
                .map(|(p, ino)| ChangedFile { path: PathBuf::from(p), inode: (1, *ino), expected: [7; 32] })
                .collect(),
            ..Default::default()
        };
        let mut d = DamageRecord::default();
        d.merge_verify(&[report("daily/a", &[("/x", 5)], 0), report("daily/b", &[("/x", 5)], 0)], true);
        assert_eq!(d.files.len(), 2);
        assert_eq!(d.files[0].raw, "78");
        // Found again: one record per place.
        d.merge_verify(&[report("daily/a", &[("/x", 5)], 0)], true);
        assert_eq!(d.files.len(), 2);
        // A subset that does not see it keeps it; a full verify of `a` finding it clean drops
        // `a`'s place only (also after `a` moved to another tier).
        d.merge_verify(&[report("daily/a", &[], 3)], false);
        assert_eq!(d.files.len(), 2);
        d.merge_verify(&[report("weekly/a", &[], 0)], true);
        assert_eq!(d.files.iter().map(|p| p.snapshot.as_str()).collect::<Vec<_>>(), ["daily/b"]);
        assert_eq!(d.unrepaired(&["b".into()]).count(), 1);
        assert_eq!(d.unrepaired(&["a".into()]).count(), 0, "a pruned snapshot's damage does not count");
        // Once marked lost, found again is not new damage; its inode stays avoided.
        d.lost = std::mem::take(&mut d.files);
        d.merge_verify(&[report("daily/b", &[("/x", 5)], 0)], true);
        assert!(d.files.is_empty());
        assert_eq!(d.inodes().collect::<Vec<_>>(), [(1, 5)]);
    }

    #[test]
    fn the_subset_cursor_cycles_and_restarts_when_the_count_changes() {
        let c = VerifyCursor::default();
        assert_eq!(c.current(4), 0);
        let c = VerifyCursor::after(3, 4);
        assert_eq!((c.next, c.current(4)), (0, 0));
        let c = VerifyCursor::after(1, 4);
        assert_eq!(c.current(4), 2);
        assert_eq!(c.current(20), 0, "another subset size starts over");
    }

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape_mountinfo(r"/mnt/my\040drive\134x"), "/mnt/my drive\\x");
        assert_eq!(unescape_mountinfo(r"/a\b\0"), r"/a\b\0");
        assert_eq!(unescape_mountinfo("/dev/sdb1"), "/dev/sdb1");
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
