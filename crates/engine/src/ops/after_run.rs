//! What happens around a job, in one place and one order.
//!
//! After a run (`now`, `pull`), [`after_run`] does, in this order:
//!
//! 1. records the run in `last-run.json`, the job's and the one of the drive that was mounted
//!    when it started ([`StateDir::scopes`]), always, also for a one-off run;
//! 2. for a configured run (a plan file, not `--source/--dest`): the `run.finished` log line;
//! 3. the cloud push, when the run published a snapshot, the job has a cloud copy (only this
//!    machine's own job can, when the plan enables it) and the caller asks for it (`now`
//!    without `--local-only`; never for `pull`); a failed push fails the job although the
//!    snapshot was published;
//! 4. the offsite copies whose `schedule` is null (restic; [`crate::copies::offsite`]), under
//!    the same conditions as the cloud push (`--local-only` skips both); a failed copy fails
//!    the job, names the repository and restic's error, and leaves the snapshot alone;
//! 5. for a configured run: the metrics textfile, then the notification (ntfy, webhook, mail
//!    by `onSuccess`/`onFailure`; the healthchecks ping for every outcome), then the
//!    `job.finished` log line;
//! 6. for a configured run that did not succeed (failed, partial, skipped, or a failed
//!    push): the systemd invocation is recorded as having notified by itself, so that
//!    `OnFailure=`'s `notify-failure` does not send the same failure twice. A skipped run
//!    exits 4, which systemd counts as a failure; recording it keeps `notify-failure` from
//!    turning a skip into a "FAILED" message.
//!
//! Everything after the run is best effort: a log directory that is missing, a metrics
//! directory that is read-only or a notification server that is down becomes a warning in
//! the returned report and never changes the outcome of the backup. The engine prints
//! nothing; the CLI prints the report.
//!
//! The side effects that leave the machine or the state directory (rclone, HTTP, mail, the
//! log and metrics files) go through [`Effects`], so the order and the decisions are tested
//! without a network ([`Live`] is the real thing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::state::{DestinationId, FinishedInvocation, Job as Recorded, Notification, StateDir, VerifyRecord};
use crate::copies::cloud::{self, CloudOptions, CloudReport};
use crate::copies::offsite::{self, OffsiteReport};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, Store};
use crate::ops::health::HealthReport;
use crate::ops::jsonlog::{self, Log};
use crate::ops::notify::{self, Delivery, Message};
use crate::plan::{Cloud, Notifications, Offsite};
use crate::run::{human_bytes, RunReport};
use crate::store::meta::RunState;
use crate::store::verify::VerifyReport;

/// The systemd unit of the whole run, named in "what to run next".
const BACKUP_UNIT: &str = "backup.service";
/// How long a record proves that a job reported its own failure (outside systemd).
const REPORTED_WITHIN: Duration = Duration::from_secs(600);
/// How long a recorded invocation proves that it notified (under systemd): a job records its
/// ID a moment before it exits and `OnFailure=` starts; an older record is an earlier failure.
const INVOCATION_FRESH_SECS: i64 = 120;
/// Health notifies the same failures at most once in this long.
const HEALTH_RENOTIFY_SECS: i64 = 24 * 3600;

/// The side effects of the sequence. The default methods are the real ones.
pub trait Effects {
    /// Pushes the newest snapshot to the cloud (and records the push).
    fn push_cloud(&self, store: &Store, cloud: &Cloud, opts: &CloudOptions) -> CloudReport {
        cloud::push(store, cloud, opts)
    }

    /// Copies the newest snapshot to an offsite restic repository (and records the copy).
    fn copy_offsite(&self, store: &Store, name: &str, offsite: &Offsite) -> OffsiteReport {
        offsite::copy(store, name, offsite)
    }

    /// Sends a message to the targets that want it.
    fn notify(&self, targets: &Notifications, msg: &Message) -> Vec<Delivery> {
        notify::notify(targets, msg)
    }

    /// The healthchecks `/start` ping.
    fn ping_start(&self, targets: &Notifications) -> Option<Delivery> {
        notify::ping_start(targets)
    }

    /// Appends a JSON log line.
    fn log(&self, job: &Job, which: Log, event: &str, fields: Value) -> Result<()> {
        jsonlog::append(&job.reporting.log_dir, which, job.host(), event, fields)
    }

    /// Rewrites the metrics textfile.
    fn write_metrics(&self, job: &Job) -> Result<Option<PathBuf>> {
        crate::ops::metrics::write(job)
    }
}

/// The real side effects.
pub struct Live;

impl Effects for Live {}

/// What systemd says about the invocation this process runs in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Systemd {
    /// `$INVOCATION_ID`: set when running as a systemd unit.
    pub invocation_id: Option<String>,
    /// `$MONITOR_INVOCATION_ID`: in an `OnFailure=` unit (systemd 251+), the invocation that
    /// failed.
    pub monitor_invocation_id: Option<String>,
}

impl Systemd {
    /// From this process's environment.
    pub fn from_env() -> Systemd {
        Systemd {
            invocation_id: std::env::var("INVOCATION_ID").ok(),
            monitor_invocation_id: std::env::var("MONITOR_INVOCATION_ID").ok(),
        }
    }
}

/// How the run was started, for [`after_run`].
#[derive(Clone, Debug, Default)]
pub struct AfterRun {
    /// The plan came from a file (not `--source/--dest`, not `pull --address`): logs,
    /// metrics and notifications are wanted. One-off runs write none of them.
    pub configured: bool,
    /// Push to the cloud when the plan enables it, and copy to the offsites whose `schedule`
    /// is null (`false` with `--local-only` and for a pull).
    pub push_cloud: bool,
    /// `--allow-shrink`: also lets the cloud mirror a much smaller snapshot.
    pub allow_shrink: bool,
    /// The systemd invocation, if any.
    pub systemd: Systemd,
}

/// What [`after_run`] did.
#[derive(Clone, Debug, Default)]
pub struct AfterRunReport {
    /// The cloud push, when one ran.
    pub cloud: Option<CloudReport>,
    /// The offsite copies that ran, in name order.
    pub offsite: Vec<OffsiteReport>,
    /// The notifications sent about the run.
    pub notifications: Vec<Delivery>,
    /// Best-effort steps that failed (the metrics file, a notification), for people.
    pub warnings: Vec<String>,
}

impl AfterRunReport {
    /// Whether a cloud push ran and failed: the job failed although the run itself may not
    /// have.
    pub fn cloud_failed(&self) -> bool {
        self.cloud.as_ref().is_some_and(|c| !c.ok)
    }

    /// Whether an offsite copy ran and failed (the job fails, the snapshot stays published).
    pub fn offsite_failed(&self) -> bool {
        self.offsite.iter().any(|o| !o.ok)
    }
}

/// The best-effort steps of one job, collecting their warnings.
struct Steps<'a> {
    job: &'a Job,
    fx: &'a dyn Effects,
    warnings: Vec<String>,
}

impl<'a> Steps<'a> {
    fn new(job: &'a Job, fx: &'a dyn Effects) -> Steps<'a> {
        Steps { job, fx, warnings: Vec::new() }
    }

    /// A log line; a failure is noted with `-v` only, since the log directory may simply
    /// not exist on a machine without the module.
    fn log(&self, which: Log, event: &str, fields: Value) {
        if let Err(e) = self.fx.log(self.job, which, event, fields) {
            tracing::info!("not logged: {e}");
        }
    }

    fn metrics(&mut self) {
        if let Err(e) = self.fx.write_metrics(self.job) {
            self.warnings.push(format!("metrics not written: {e}"));
        }
    }

    fn push_cloud(&self, cloud: &Cloud, allow_shrink: bool) -> CloudReport {
        let c = self.fx.push_cloud(&self.job.store, cloud, &CloudOptions { allow_shrink });
        self.log(Log::Cloud, "cloud.push", serde_json::to_value(&c).unwrap_or_default());
        c
    }

    fn copy_offsite(&self, name: &str, offsite: &Offsite) -> OffsiteReport {
        let o = self.fx.copy_offsite(&self.job.store, name, offsite);
        self.log(Log::Offsite, "offsite.copy", serde_json::to_value(&o).unwrap_or_default());
        o
    }

    /// Sends, and warns about every failed delivery.
    fn send(&mut self, msg: &Message, targets: &Notifications) -> Vec<Delivery> {
        let deliveries = self.fx.notify(targets, msg);
        self.warn_failed(&deliveries);
        deliveries
    }

    fn warn_failed(&mut self, deliveries: &[Delivery]) {
        for d in deliveries.iter().filter(|d| !d.ok) {
            let e = d.error.as_deref().unwrap_or("unknown error");
            self.warnings.push(format!("{} notification not delivered: {e}", d.target));
            self.log(Log::Coordinator, "notify.failed", json!({ "target": d.target, "error": e }));
        }
    }

    fn log_run(&self, r: &RunReport) {
        let secs = (r.finished_at.as_millisecond() - r.started_at.as_millisecond()) as f64 / 1000.0;
        self.log(
            Log::Local,
            "run.finished",
            json!({ "state": r.state, "error": r.error, "errorKind": r.error_kind, "snapshot": r.snapshot, "snapshotPath": r.snapshot_path,
                    "startedAt": r.started_at, "finishedAt": r.finished_at, "durationSeconds": secs,
                    "counts": r.counts, "warnings": r.counts.warnings, "cleanedUp": r.cleaned_up,
                    "pruned": r.prune.as_ref().map(|p| p.removals()),
                    "pruneRefused": r.prune.as_ref().and_then(|p| p.refused.clone()) }),
        );
    }
}

/// Before a configured run: the coordinator's `job.started` line and the healthchecks
/// `/start` ping. Returns warnings for people.
pub fn before_run(job: &Job, fx: &dyn Effects) -> Vec<String> {
    let mut steps = Steps::new(job, fx);
    steps.log(Log::Coordinator, "job.started", json!({ "job": "backup", "sources": job.sources.paths }));
    if let Some(d) = fx.ping_start(&job.reporting.notifications) {
        steps.warn_failed(&[d]);
    }
    steps.warnings
}

/// After a run: the sequence of the module docs.
pub fn after_run(job: &Job, report: &RunReport, how: &AfterRun, fx: &dyn Effects) -> AfterRunReport {
    let state = StateDir::of(&job.store);
    // Best effort: a missing state directory must never turn a good backup into a failed one.
    // The job's record, and the record of the drive the run found mounted.
    for scope in state.scopes(report.destination.as_ref()) {
        if let Err(e) = scope.write_last_run(report) {
            tracing::info!("not recording the last run: {e}");
        }
    }
    let mut steps = Steps::new(job, fx);
    let mut out = AfterRunReport::default();
    if how.configured {
        steps.log_run(report);
    }
    if let Some(cloud) = job.cloud().filter(|_| report.state.published() && how.push_cloud) {
        out.cloud = Some(steps.push_cloud(cloud, how.allow_shrink));
    }
    if report.state.published() && how.push_cloud {
        for (name, o) in job.offsites().into_iter().filter(|(_, o)| o.schedule.is_none()) {
            out.offsite.push(steps.copy_offsite(name, o));
        }
    }
    if how.configured {
        steps.metrics();
        let msg = run_message(job, report, out.cloud.as_ref(), &out.offsite);
        out.notifications = steps.send(&msg, &job.reporting.notifications);
        steps.log(
            Log::Coordinator,
            "job.finished",
            json!({ "job": "backup", "state": msg.state, "runState": report.state, "snapshot": report.snapshot,
                    "error": msg.error, "errorKind": msg.error_kind, "cloud": out.cloud.as_ref().map(|c| c.ok),
                    "offsite": out.offsite.iter().map(|o| (o.name.clone(), o.ok)).collect::<std::collections::BTreeMap<_, _>>(),
                    "notifications": out.notifications }),
        );
        if report.state != RunState::Success || out.cloud_failed() || out.offsite_failed() {
            record_failed_invocation(&state, &how.systemd);
        }
    }
    out.warnings = steps.warnings;
    out
}

/// What [`after_verify`] did.
#[derive(Clone, Debug, Default)]
pub struct AfterVerifyReport {
    /// The record kept, unless it could not be written.
    pub record: Option<VerifyRecord>,
    /// Best-effort steps that failed.
    pub warnings: Vec<String>,
}

/// After `verify` of the host directories of `destination`: records the outcome for health
/// and metrics, in the records of the drive there; with a job from a plan, also the `verify.finished` log line and the metrics
/// file.
pub fn after_verify(
    state: &StateDir,
    destination: &Path,
    job: Option<&Job>,
    reports: &[VerifyReport],
    fx: &dyn Effects,
) -> AfterVerifyReport {
    let id = DestinationId::of(destination);
    let rec = VerifyRecord::of(id.clone(), reports);
    // Only the drive's: a verify says nothing about another drive.
    let scoped = state.scopes(Some(&id)).pop().expect("a destination's scope");
    if let Err(e) = scoped.write_verify(&rec) {
        return AfterVerifyReport { record: None, warnings: vec![format!("the verify result was not recorded: {e}")] };
    }
    let mut warnings = Vec::new();
    // Damage is remembered per drive until `repair`: a later verify of other snapshots (or of
    // another slice) must not make it look clean. A snapshot read in full (no file skipped)
    // drops its records that it found clean.
    let mut damage = scoped.damage();
    let before = damage.clone();
    damage.merge_verify(reports, reports.iter().all(|r| r.files_skipped == 0));
    if damage != before {
        if let Err(e) = scoped.write_damage(&damage) {
            warnings.push(format!("the damage found was not recorded: {e}"));
        }
    }
    if let Some(job) = job {
        let mut steps = Steps::new(job, fx);
        steps.log(
            Log::Local,
            "verify.finished",
            json!({ "snapshots": rec.snapshots, "filesChecked": rec.files_checked,
                    "errors": rec.errors, "damaged": rec.damaged }),
        );
        steps.metrics();
        warnings = steps.warnings;
    }
    AfterVerifyReport { record: Some(rec), warnings }
}

/// What [`cloud_job`] did.
#[derive(Clone, Debug)]
pub struct CloudJobReport {
    /// The push.
    pub cloud: CloudReport,
    /// The notifications sent about it.
    pub notifications: Vec<Delivery>,
    /// Best-effort steps that failed.
    pub warnings: Vec<String>,
}

/// `cloud`: pushes the newest snapshot on its own, then the metrics, the notification (never
/// the healthchecks ping: it watches the backup job, and a push on its own timer must not
/// ping it) and the log lines. An error only when the job has no cloud copy (it is not this
/// machine's own job, or the plan does not enable it).
pub fn cloud_job(job: &Job, allow_shrink: bool, systemd: &Systemd, fx: &dyn Effects) -> Result<CloudJobReport> {
    let Some(cloud) = job.cloud() else {
        return Err(Error::config("cloud.enable", "is false; enable the cloud copy in the configuration first"));
    };
    let mut steps = Steps::new(job, fx);
    steps.log(Log::Coordinator, "job.started", json!({ "job": "cloud" }));
    let c = steps.push_cloud(cloud, allow_shrink);
    steps.metrics();
    let msg = cloud_message(job, &c);
    let targets = Notifications { healthchecks: None, ..job.reporting.notifications.clone() };
    let notifications = steps.send(&msg, &targets);
    steps.log(
        Log::Coordinator,
        "job.finished",
        json!({ "job": "cloud", "state": msg.state, "error": c.error, "notifications": notifications }),
    );
    if !c.ok {
        record_failed_invocation(&StateDir::of(&job.store), systemd);
    }
    Ok(CloudJobReport { cloud: c, notifications, warnings: steps.warnings })
}

/// What [`offsite_job`] did.
#[derive(Clone, Debug)]
pub struct OffsiteJobReport {
    /// The copies, in name order.
    pub offsite: Vec<OffsiteReport>,
    /// The notifications sent about them.
    pub notifications: Vec<Delivery>,
    /// Best-effort steps that failed.
    pub warnings: Vec<String>,
}

/// `offsite [NAME…]`: copies the newest snapshot to the named offsites (every one when
/// `names` is empty, whatever its schedule), then the metrics, one notification (never the
/// healthchecks ping) and the log lines. An error when the job has no such offsite.
pub fn offsite_job(job: &Job, names: &[String], systemd: &Systemd, fx: &dyn Effects) -> Result<OffsiteJobReport> {
    let all = job.offsites();
    for n in names {
        if !all.iter().any(|(k, _)| k == n) {
            let known: Vec<&str> = all.iter().map(|(k, _)| *k).collect();
            return Err(Error::config(
                format!("offsite.{n}"),
                format!(
                    "is not an offsite of this plan (declared: {})",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            ));
        }
    }
    if all.is_empty() {
        return Err(Error::config("offsite", "is empty; declare an offsite repository in the configuration first"));
    }
    let mut steps = Steps::new(job, fx);
    steps.log(Log::Coordinator, "job.started", json!({ "job": "offsite", "offsite": names }));
    let reports: Vec<OffsiteReport> = all
        .into_iter()
        .filter(|(k, _)| names.is_empty() || names.iter().any(|n| n == k))
        .map(|(k, o)| steps.copy_offsite(k, o))
        .collect();
    steps.metrics();
    let msg = offsite_message(job, &reports);
    let targets = Notifications { healthchecks: None, ..job.reporting.notifications.clone() };
    let notifications = steps.send(&msg, &targets);
    steps.log(
        Log::Coordinator,
        "job.finished",
        json!({ "job": "offsite", "state": msg.state, "error": msg.error, "notifications": notifications }),
    );
    if reports.iter().any(|o| !o.ok) {
        record_failed_invocation(&StateDir::of(&job.store), systemd);
    }
    Ok(OffsiteJobReport { offsite: reports, notifications, warnings: steps.warnings })
}

fn offsite_message(job: &Job, reports: &[OffsiteReport]) -> Message {
    let failed: Vec<&OffsiteReport> = reports.iter().filter(|o| !o.ok).collect();
    let mut details: Vec<String> = reports.iter().map(offsite_line).collect();
    details.dedup();
    Message {
        host: job.host().to_string(),
        job: "offsite".into(),
        state: if failed.is_empty() { RunState::Success } else { RunState::Failed },
        summary: if failed.is_empty() {
            format!("offsite copies of {} updated", job.host())
        } else {
            format!("offsite copy of {} failed; the local snapshots are untouched", job.host())
        },
        error: failed.first().and_then(|o| o.error.clone()),
        error_kind: None,
        details,
        next_steps: vec![
            "journalctl -u 'backup-offsite-*' -n 50 --no-pager".into(),
            "hwc-backup offsite (to retry)".into(),
            "backup-status".into(),
        ],
    }
}

fn offsite_line(o: &OffsiteReport) -> String {
    match (&o.error, &o.summary) {
        (Some(e), _) => format!("offsite {}: FAILED: {e}", o.name),
        (None, Some(s)) => format!(
            "offsite {}: {} copied to {} as {} ({} added)",
            o.name,
            o.snapshot.as_deref().unwrap_or("?"),
            o.repository,
            s.snapshot_id,
            human_bytes(s.data_added)
        ),
        (None, None) => {
            format!("offsite {}: {} already in {}", o.name, o.snapshot.as_deref().unwrap_or("?"), o.repository)
        }
    }
}

/// After `verify --offsite` with a plan: the `offsite.check` log line, the metrics, a
/// notification when the check failed (and `onSuccess` when it passed), and the invocation
/// recorded when it failed.
pub fn after_offsite_check(
    job: &Job,
    report: &offsite::CheckReport,
    systemd: &Systemd,
    fx: &dyn Effects,
) -> (Vec<Delivery>, Vec<String>) {
    let mut steps = Steps::new(job, fx);
    steps.log(Log::Offsite, "offsite.check", serde_json::to_value(report).unwrap_or_default());
    steps.metrics();
    let msg = Message {
        host: job.host().to_string(),
        job: format!("offsite-check {}", report.name),
        state: if report.ok { RunState::Success } else { RunState::Failed },
        summary: if report.ok {
            format!("offsite {} of {} checked: clean", report.name, job.host())
        } else {
            format!("offsite {} of {} FAILED its check; the local snapshots are untouched", report.name, job.host())
        },
        error: report.error.clone(),
        error_kind: None,
        details: vec![format!(
            "repository {}; data read: {}; {} files compared with the local manifest",
            report.repository,
            report.read_data_subset.as_deref().unwrap_or("none"),
            report.sampled
        )],
        next_steps: vec![
            format!("journalctl -u backup-offsite-check-{}.service -n 50 --no-pager", report.name),
            format!("hwc-backup verify --offsite {}", report.name),
        ],
    };
    let targets = Notifications { healthchecks: None, ..job.reporting.notifications.clone() };
    let notifications = steps.send(&msg, &targets);
    if !report.ok {
        record_failed_invocation(&StateDir::of(&job.store), systemd);
    }
    (notifications, steps.warnings)
}

/// What [`after_health`] did.
#[derive(Clone, Debug, Default)]
pub struct AfterHealthReport {
    /// The notifications sent (none when healthy, or when the same failures were notified
    /// within a day).
    pub notifications: Vec<Delivery>,
    /// Best-effort steps that failed.
    pub warnings: Vec<String>,
}

/// After `health`: records the report; with a plan (`configured`), also the log line, the
/// metrics, and a notification when the failures are new or a day old (an hourly timer must
/// not page every hour). The healthchecks ping is never sent: it is the backup job's dead
/// man's switch (a success ping would hide a dead job, a fail ping is the job's to send).
pub fn after_health(
    job: &Job,
    report: &HealthReport,
    configured: bool,
    systemd: &Systemd,
    fx: &dyn Effects,
) -> AfterHealthReport {
    let state = StateDir::of(&job.store);
    let mut out = AfterHealthReport::default();
    if let Err(e) = state.write_health(report) {
        out.warnings.push(format!("the health result was not recorded: {e}"));
    }
    if !configured {
        return out;
    }
    let mut steps = Steps::new(job, fx);
    steps.log(Log::Health, "health.check", serde_json::to_value(report).unwrap_or_default());
    steps.metrics();
    if !report.healthy {
        let failing: Vec<String> = report.failures().map(|c| c.name.clone()).collect();
        let key = failing.join(",");
        let mut notified = state.notified();
        let recent = notified
            .get(Recorded::Health.as_str())
            .is_some_and(|n| n.key == key && Timestamp::now().as_second() - n.time.as_second() < HEALTH_RENOTIFY_SECS);
        if recent {
            tracing::info!("not notifying: the same health failures were notified within a day");
        } else {
            let targets = Notifications { healthchecks: None, ..job.reporting.notifications.clone() };
            out.notifications = steps.send(&health_message(job, report), &targets);
            notified.insert(
                Recorded::Health.as_str().into(),
                Notification { time: Timestamp::now(), state: RunState::Failed, key },
            );
            if let Err(e) = state.write_notified(&notified) {
                tracing::info!("the health notification was not recorded: {e}");
            }
            steps.log(
                Log::Health,
                "health.notified",
                json!({ "failing": failing, "notifications": out.notifications }),
            );
        }
        record_failed_invocation(&state, systemd);
    }
    out.warnings.append(&mut steps.warnings);
    out
}

/// What [`unit_failed`] did.
#[derive(Clone, Debug, Default)]
pub struct UnitFailedReport {
    /// The job that already notified about this failure itself (nothing was sent).
    pub already_notified: Option<&'static str>,
    /// The notifications sent.
    pub notifications: Vec<Delivery>,
    /// Best-effort steps that failed.
    pub warnings: Vec<String>,
}

/// `notify-failure --unit UNIT` (systemd's `OnFailure=`): notifies that `unit` failed,
/// unless the job it runs finished and sent its own notification. `journal` is the tail of
/// the unit's journal, for the message.
///
/// Under systemd (251+) the `OnFailure=` unit is told which invocation failed: a job that
/// reached its end in failure recorded its invocation after notifying; a killed one never
/// did. A unit that failed as a dependency (its disk never mounted) never ran, so nothing
/// matches and it is notified. Only a manual call, outside systemd, falls back to the
/// records' age.
pub fn unit_failed(
    job: &Job,
    unit: &str,
    journal: Option<&str>,
    systemd: &Systemd,
    fx: &dyn Effects,
) -> UnitFailedReport {
    let state = StateDir::of(&job.store);
    let recorded = job_of_unit(unit);
    let recent = if systemd.invocation_id.is_some() {
        let id = systemd.monitor_invocation_id.as_deref().unwrap_or_default();
        let now = Timestamp::now().as_second();
        !id.is_empty()
            && state
                .finished_invocations()
                .iter()
                .any(|i| i.id == id && (0..=INVOCATION_FRESH_SECS).contains(&(now - i.time)))
    } else {
        state.failure_recorded_within(recorded, REPORTED_WITHIN)
    };
    let mut steps = Steps::new(job, fx);
    steps.log(Log::Coordinator, "unit.failed", json!({ "unit": unit, "alreadyNotified": recent, "journal": journal }));
    if recent {
        return UnitFailedReport { already_notified: Some(recorded.as_str()), ..Default::default() };
    }
    let mut details = Vec::new();
    if let Some(j) = journal {
        details.push(format!("last lines of journalctl -u {unit}:"));
        details.extend(j.lines().map(|l| format!("  {l}")));
    }
    let msg = Message {
        host: job.host().to_string(),
        job: unit.to_string(),
        state: RunState::Failed,
        summary: format!("systemd unit {unit} failed on {} (killed, timed out, or exited with an error)", job.host()),
        error: Some(format!("{unit} entered the failed state")),
        error_kind: None,
        details,
        next_steps: vec![
            format!("journalctl -u {unit} -n 100 --no-pager"),
            format!("systemctl status {unit}"),
            "backup-status".into(),
        ],
    };
    let notifications = steps.send(&msg, &job.reporting.notifications);
    UnitFailedReport { already_notified: None, notifications, warnings: steps.warnings }
}

/// The job a unit runs (`backup-cloud.service` → cloud), whose own failure notification
/// makes the unit's redundant. By the units' names as the module writes them; a pulled host
/// named "cloud1" is a backup.
fn job_of_unit(unit: &str) -> Recorded {
    if unit.starts_with("backup-cloud") {
        Recorded::Cloud
    } else if unit.starts_with("backup-offsite") {
        Recorded::Offsite
    } else if unit.starts_with("backup-health") {
        Recorded::Health
    } else {
        Recorded::Backup
    }
}

/// Records that this systemd invocation failed and notified by itself (no-op outside
/// systemd), with the time. A succeeded invocation is never recorded: for a unit that then
/// fails as a dependency (its disk never mounted) systemd passes that succeeded invocation's
/// ID, which must not silence the notification.
fn record_failed_invocation(state: &StateDir, systemd: &Systemd) {
    let Some(id) = &systemd.invocation_id else { return };
    let mut list: Vec<FinishedInvocation> = state.finished_invocations().into_iter().filter(|i| &i.id != id).collect();
    list.push(FinishedInvocation { id: id.clone(), time: Timestamp::now().as_second() });
    if let Err(e) = state.write_finished_invocations(&list) {
        tracing::info!("cannot record the finished invocation in {}: {e}", state.path().display());
    }
}

fn run_message(job: &Job, r: &RunReport, cloud: Option<&CloudReport>, offsites: &[OffsiteReport]) -> Message {
    let c = &r.counts;
    let mut details = Vec::new();
    let mut next = Vec::new();
    let mut state = r.state;
    let mut error = r.error.clone();
    let mut error_kind = r.error_kind;
    let summary = match r.state {
        RunState::Skipped => format!(
            "backup of {} skipped: another run holds the lock and does the work; nothing was done (not a failure)",
            job.host()
        ),
        RunState::Failed => {
            next.extend(next_steps_for(job, r.error_kind));
            next.push(format!("journalctl -u {BACKUP_UNIT} -n 50 --no-pager"));
            format!("backup of {} failed; nothing was published and earlier snapshots are untouched", job.host())
        }
        s => {
            details.push(format!(
                "snapshot: {}\nfiles: {} ({} copied, {}; {} linked)",
                r.snapshot.as_deref().unwrap_or("?"),
                c.files,
                c.copied,
                human_bytes(c.bytes_copied),
                c.linked
            ));
            if s == RunState::Partial {
                details.push(format!("{} warning(s):", c.warnings));
                details.extend(r.warnings.iter().take(10).map(|w| format!("  {}: {}", w.path.display(), w.message)));
                next.push("the snapshot's .hwc-backup/meta.json lists every warning".into());
            }
            format!(
                "backup of {} {}: {}",
                job.host(),
                if s == RunState::Partial { "published with warnings" } else { "succeeded" },
                r.snapshot.as_deref().unwrap_or("?")
            )
        }
    };
    if let Some(cl) = cloud {
        if cl.ok {
            details.push(format!("cloud: pushed to {}", cl.destination));
        } else {
            state = RunState::Failed;
            error = cl.error.clone();
            error_kind = None;
            details.push("the local snapshot was published; only the cloud copy failed".into());
            next.push("backup-cloud (to retry the push)".into());
            if let Some(l) = &cl.log_file {
                next.push(format!("less {}", l.display()));
            }
        }
    }
    details.extend(offsites.iter().map(offsite_line));
    if let Some(failed) = offsites.iter().find(|o| !o.ok) {
        state = RunState::Failed;
        error = failed.error.clone();
        error_kind = None;
        details.push("the local snapshot was published; only the offsite copy failed".into());
        next.push(format!("hwc-backup offsite {} (to retry the copy)", failed.name));
    }
    next.push("backup-status".into());
    Message {
        host: job.host().to_string(),
        job: "backup".into(),
        state,
        summary,
        error,
        error_kind,
        details,
        next_steps: next,
    }
}

/// What to do first about a failed run, by the kind of its error.
fn next_steps_for(job: &Job, kind: Option<ErrorKind>) -> Vec<String> {
    let dest = job.store.destination.path.display();
    match kind {
        Some(ErrorKind::Preflight) => vec![format!("is the destination {dest} mounted, and are the sources there?")],
        Some(ErrorKind::NoSpace) => {
            vec![
                format!("df -h {dest}"),
                "hwc-backup prune --dry-run (and fewer snapshots kept, or a bigger disk)".into(),
            ]
        }
        Some(ErrorKind::Guard) => {
            vec!["if the source really shrank on purpose: hwc-backup now --allow-shrink".into()]
        }
        Some(ErrorKind::Command) => vec!["the hook's or helper's output is in the error above".into()],
        _ => Vec::new(),
    }
}

fn cloud_message(job: &Job, c: &CloudReport) -> Message {
    let mut next = vec!["journalctl -u backup-cloud.service -n 50 --no-pager".to_string()];
    if let Some(l) = &c.log_file {
        next.push(format!("less {}", l.display()));
    }
    next.push("backup-status".into());
    Message {
        host: job.host().to_string(),
        job: "cloud".into(),
        state: if c.ok { RunState::Success } else { RunState::Failed },
        summary: if c.ok {
            format!("cloud copy of {} updated: {}", job.host(), c.snapshot.as_deref().unwrap_or("?"))
        } else {
            format!("cloud copy of {} failed; the local snapshots are untouched", job.host())
        },
        error: c.error.clone(),
        error_kind: None,
        details: vec![format!("remote: {}", c.destination)],
        next_steps: next,
    }
}

fn health_message(job: &Job, r: &HealthReport) -> Message {
    Message {
        host: job.host().to_string(),
        job: "health".into(),
        state: RunState::Failed,
        summary: format!("backups of {} are unhealthy", job.host()),
        error: r.failures().next().map(|c| c.message.clone()),
        error_kind: None,
        details: r.failures().map(|c| format!("{}: {}", c.name, c.message)).collect(),
        next_steps: vec![
            "backup-health".into(),
            format!("journalctl -u {BACKUP_UNIT} -n 50 --no-pager"),
            "backup-status".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records every side effect, in order; the cloud push succeeds or fails as told, the
    /// metrics directory is writable or not.
    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        cloud_fails: bool,
        metrics_fail: bool,
        offsite_fails: bool,
    }

    impl Fake {
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
        fn call(&self, what: String) {
            self.calls.borrow_mut().push(what);
        }
    }

    impl Effects for Fake {
        fn push_cloud(&self, store: &Store, _: &Cloud, _: &CloudOptions) -> CloudReport {
            self.call("cloud".into());
            let now = Timestamp::now();
            CloudReport {
                host: store.host.clone(),
                ok: !self.cloud_fails,
                error: self.cloud_fails.then(|| "rclone exited with 1".into()),
                snapshot: Some("daily/x".into()),
                snapshot_path: None,
                destination: "remote:h/current".into(),
                history: None,
                verb: "sync",
                files: 1,
                bytes: 1,
                remote_files_before: None,
                remote_bytes_before: None,
                command: Vec::new(),
                log_file: None,
                notes: Vec::new(),
                history_pruned: Vec::new(),
                started_at: now,
                finished_at: now,
            }
        }
        fn copy_offsite(&self, store: &Store, name: &str, o: &Offsite) -> OffsiteReport {
            self.call(format!("offsite {name}"));
            OffsiteReport {
                ok: !self.offsite_fails,
                error: self.offsite_fails.then(|| format!("offsite {name} ({}): Fatal: wrong password", o.repository)),
                snapshot: Some("daily/x".into()),
                ..OffsiteReport::started(store, name, o)
            }
        }
        fn notify(&self, targets: &Notifications, msg: &Message) -> Vec<Delivery> {
            let hc = if targets.healthchecks.is_some() { "+healthchecks" } else { "" };
            self.call(format!("notify {}{hc}", msg.state.as_str()));
            vec![Delivery { target: "webhook", ok: true, error: None }]
        }
        fn ping_start(&self, _: &Notifications) -> Option<Delivery> {
            self.call("ping start".into());
            Some(Delivery { target: "healthchecks", ok: false, error: Some("refused".into()) })
        }
        fn log(&self, _: &Job, _: Log, event: &str, _: Value) -> Result<()> {
            self.call(format!("log {event}"));
            Ok(())
        }
        fn write_metrics(&self, _: &Job) -> Result<Option<PathBuf>> {
            self.call("metrics".into());
            match self.metrics_fail {
                true => Err(Error::config("metrics.textfileDir", "read-only")),
                false => Ok(None),
            }
        }
    }

    fn plan(dir: &Path) -> crate::plan::Plan {
        let mut p = crate::plan::Plan::ad_hoc("h".into(), vec!["/src".into()], dir.join("dest"), vec![]);
        p.state_dir = dir.join("state");
        p.cloud.enable = true;
        p.notifications.healthchecks = Some(crate::plan::UrlTarget::inline("http://127.0.0.1:1/hc"));
        p
    }

    fn report(state: RunState, kind: Option<ErrorKind>) -> RunReport {
        let mut r = RunReport::new("h", Timestamp::now());
        r.state = state;
        r.error_kind = kind;
        r.error = kind.map(|k| format!("an error of kind {k}"));
        r.snapshot = state.published().then(|| "daily/x".into());
        r
    }

    fn configured(id: &str) -> AfterRun {
        AfterRun {
            configured: true,
            push_cloud: true,
            allow_shrink: false,
            systemd: Systemd { invocation_id: Some(id.into()), monitor_invocation_id: None },
        }
    }

    fn recorded_invocations(p: &Job) -> Vec<String> {
        StateDir::of(&p.store).finished_invocations().into_iter().map(|i| i.id).collect()
    }

    #[test]
    fn a_failed_run_is_recorded_measured_and_notified_once_without_a_push() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path()).local_job();
        let fx = Fake::default();
        let out = after_run(&p, &report(RunState::Failed, Some(ErrorKind::NoSpace)), &configured("inv1"), &fx);
        assert_eq!(
            fx.calls(),
            ["log run.finished", "metrics", "notify failed+healthchecks", "log job.finished"],
            "no cloud push after a failed run"
        );
        assert!(out.cloud.is_none() && !out.cloud_failed() && out.warnings.is_empty());
        assert_eq!(StateDir::of(&p.store).last_run().unwrap().state, RunState::Failed);
        assert_eq!(recorded_invocations(&p), ["inv1"], "notify-failure must not send it again");
    }

    #[test]
    fn a_skipped_run_is_a_notice_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path()).local_job();
        let fx = Fake::default();
        let out = after_run(&p, &report(RunState::Skipped, Some(ErrorKind::Locked)), &configured("inv2"), &fx);
        assert_eq!(fx.calls(), ["log run.finished", "metrics", "notify skipped+healthchecks", "log job.finished"]);
        assert!(!out.cloud_failed());
        let last = StateDir::of(&p.store).last_run().unwrap();
        assert_eq!((last.state, last.effective()), (RunState::Skipped, None));
        // It exits 4, which systemd counts as a failure: recorded, so OnFailure= stays quiet.
        assert_eq!(recorded_invocations(&p), ["inv2"]);
    }

    #[test]
    fn a_published_run_is_pushed_before_metrics_and_a_failed_push_fails_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path()).local_job();
        let fx = Fake { cloud_fails: true, ..Fake::default() };
        let out = after_run(&p, &report(RunState::Success, None), &configured("inv3"), &fx);
        assert_eq!(
            fx.calls(),
            [
                "log run.finished",
                "cloud",
                "log cloud.push",
                "metrics",
                "notify failed+healthchecks",
                "log job.finished"
            ]
        );
        assert!(out.cloud_failed());
        assert_eq!(StateDir::of(&p.store).last_run().unwrap().state, RunState::Success, "the run itself succeeded");
        assert_eq!(recorded_invocations(&p), ["inv3"]);

        // A good push, and --local-only.
        let fx = Fake::default();
        let out = after_run(&p, &report(RunState::Success, None), &configured("inv4"), &fx);
        assert!(fx.calls().contains(&"notify success+healthchecks".to_string()) && !out.cloud_failed());
        assert_eq!(recorded_invocations(&p), ["inv3"], "a success is never recorded");
        let fx = Fake::default();
        after_run(&p, &report(RunState::Success, None), &AfterRun { push_cloud: false, ..configured("inv5") }, &fx);
        assert!(!fx.calls().contains(&"cloud".to_string()), "{:?}", fx.calls());
    }

    #[test]
    fn unscheduled_offsites_are_copied_after_the_cloud_and_a_failed_copy_fails_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(dir.path());
        let o = |schedule: Option<&str>| crate::plan::Offsite {
            repository: "/mnt/nas/restic".into(),
            password_file: "/run/pw".into(),
            environment_file: None,
            rclone_config_file: None,
            restic: None,
            rclone: None,
            keep: Default::default(),
            schedule: schedule.map(String::from),
            check: Default::default(),
            bandwidth_limit: None,
            max_age: "7d".into(),
        };
        p.offsite.insert("nas".into(), o(None));
        p.offsite.insert("weekly".into(), o(Some("weekly")));
        let p = p.local_job();
        let fx = Fake { offsite_fails: true, ..Fake::default() };
        let out = after_run(&p, &report(RunState::Success, None), &configured("off1"), &fx);
        assert_eq!(
            fx.calls(),
            [
                "log run.finished",
                "cloud",
                "log cloud.push",
                "offsite nas",
                "log offsite.copy",
                "metrics",
                "notify failed+healthchecks",
                "log job.finished"
            ],
            "only the unscheduled offsite, after the cloud push, before the notification"
        );
        assert!(out.offsite_failed() && !out.cloud_failed());
        assert_eq!(recorded_invocations(&p), ["off1"]);
        let fx = Fake::default();
        after_run(&p, &report(RunState::Failed, None), &configured("off2"), &fx);
        assert!(!fx.calls().iter().any(|c| c.starts_with("offsite")), "nothing published, nothing copied");
        let fx = Fake::default();
        let r = offsite_job(&p, &[], &Systemd::default(), &fx).unwrap();
        assert_eq!(r.offsite.len(), 2, "`hwc-backup offsite` copies every one");
        assert!(offsite_job(&p, &["nope".into()], &Systemd::default(), &fx)
            .unwrap_err()
            .to_string()
            .contains("offsite.nope"));
    }

    #[test]
    fn a_one_off_run_is_recorded_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(dir.path());
        p.cloud.enable = false;
        let p = p.local_job();
        let fx = Fake::default();
        let how = AfterRun { configured: false, ..configured("inv6") };
        after_run(&p, &report(RunState::Failed, Some(ErrorKind::Preflight)), &how, &fx);
        assert!(fx.calls().is_empty(), "{:?}", fx.calls());
        assert_eq!(StateDir::of(&p.store).last_run().unwrap().state, RunState::Failed);
        assert!(recorded_invocations(&p).is_empty());
    }

    #[test]
    fn best_effort_steps_become_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path()).local_job();
        let fx = Fake { metrics_fail: true, ..Fake::default() };
        let out = after_run(&p, &report(RunState::Partial, None), &configured("inv7"), &fx);
        assert!(out.warnings.iter().any(|w| w.starts_with("metrics not written")), "{:?}", out.warnings);
        assert!(fx.calls().contains(&"notify partial+healthchecks".to_string()), "still notified");
        let w = before_run(&p, &fx);
        assert_eq!(w, ["healthchecks notification not delivered: refused"]);
        assert!(fx.calls().ends_with(&["log job.started".into(), "ping start".into(), "log notify.failed".into()]));
    }

    #[test]
    fn health_notifies_the_same_failures_once_and_never_pings_healthchecks() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path()).local_job();
        let unhealthy = crate::ops::health::check(&p.store, p.cloud(), Timestamp::now());
        assert!(!unhealthy.healthy, "no destination, no snapshot");
        let fx = Fake::default();
        let systemd = Systemd { invocation_id: Some("h1".into()), monitor_invocation_id: None };
        after_health(&p, &unhealthy, true, &systemd, &fx);
        after_health(&p, &unhealthy, true, &systemd, &fx);
        let notified: Vec<String> = fx.calls().into_iter().filter(|c| c.starts_with("notify")).collect();
        assert_eq!(notified, ["notify failed"], "once a day, without the healthchecks target");
        assert_eq!(StateDir::of(&p.store).health().as_ref(), Some(&unhealthy));
        assert_eq!(recorded_invocations(&p), ["h1"]);
        // Without a plan: recorded, nothing else.
        let fx = Fake::default();
        after_health(&p, &unhealthy, false, &systemd, &fx);
        assert!(fx.calls().is_empty(), "{:?}", fx.calls());
    }

    #[test]
    fn on_failure_is_quiet_only_for_an_invocation_that_notified_itself() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path()).local_job();
        let on_failure = |monitored: &str| {
            let systemd =
                Systemd { invocation_id: Some("notify-unit".into()), monitor_invocation_id: Some(monitored.into()) };
            let fx = Fake::default();
            let r = unit_failed(&p, "backup.service", Some("a line"), &systemd, &fx);
            (r.already_notified, fx.calls().iter().filter(|c| c.starts_with("notify")).count())
        };
        after_run(&p, &report(RunState::Failed, None), &configured("run1"), &Fake::default());
        assert_eq!(on_failure("run1"), (Some("backup"), 0));
        assert_eq!(on_failure("killed2"), (None, 1), "an invocation that recorded nothing was killed");
        let old = FinishedInvocation { id: "run1".into(), time: Timestamp::now().as_second() - 3600 };
        StateDir::of(&p.store).write_finished_invocations(&[old]).unwrap();
        assert_eq!(on_failure("run1"), (None, 1), "an old record is an earlier failure");
    }
}
