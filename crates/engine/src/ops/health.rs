//! Health: is the backup still doing its job? Each condition is a separate [`Check`] with
//! its own message, so a monitoring page or a notification says exactly what is wrong:
//!
//! | check | healthy when |
//! |---|---|
//! | `destination` | the destination is a directory, and a mount point when `requireMountPoint` |
//! | `freeSpace` | at least `destination.minFreeBytes` are free there |
//! | `newestSnapshot` | the newest complete snapshot is younger than `health.maxAge`, and not dated more than five minutes in the future (see [`crate::store::clock`]) |
//! | `snapshotCount` | there are at least `health.minBackups` complete snapshots |
//! | `lastRun` | the last run on the drive mounted now (its `last-run.json`) did not fail; a run skipped because another held the lock is not a failure, and does not hide the outcome of the run before it |
//! | `verify` | no damaged file found by any verify of the drive is still unrepaired (its damage record, whichever snapshots were verified since), the last verify found nothing wrong (or only damage `repair` has since fixed or marked lost) and, with `health.verifyMaxAge`, is that recent |
//! | `cloud` | with `cloud.enable`: the last good push of a snapshot of the drive is younger than `cloud.maxAge` |
//! | `offsite:<name>` | per offsite of this machine's job ([`check_job`]): the last good copy is younger than its `maxAge`, and its last `restic check` (if any) was clean |
//!
//! Everything here only reads. The records it reads (last run, last verify, cloud) and the
//! report it produces are kept by [`crate::ops::state`]. They are the records *of the drive
//! mounted at the destination now* ([`StateDir::records_of`]): a rotated drive is judged by its
//! own runs, verifies and pushes, never by the other drive's. With no drive mounted,
//! `destination` fails naming the last drive seen, `lastRun` is the job's last attempt, and
//! `verify` and `cloud` are the last seen drive's.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::job::Store;
use crate::ops::state::{DestinationId, SeenDestination, StateDir};
use crate::plan::Cloud;
use crate::store::layout::HostDir;
use crate::store::meta::RunState;

pub use crate::ops::state::{CloudRecord, LastRun, VerifyRecord};

/// One condition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// `destination`, `freeSpace`, `newestSnapshot`, `snapshotCount`, `lastRun`, `verify`, `cloud`.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was found, in words.
    pub message: String,
}

/// All conditions, and the numbers behind them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Host name.
    pub host: String,
    /// Every check passed.
    pub healthy: bool,
    /// When the check ran.
    pub checked_at: Timestamp,
    /// The checks, in the order of the table in the module docs.
    pub checks: Vec<Check>,
    /// Complete snapshots found.
    pub snapshots: usize,
    /// Start of the newest complete snapshot.
    pub newest_snapshot: Option<Timestamp>,
    /// Free bytes at the destination.
    pub free_bytes: Option<u64>,
    /// The drive mounted at the destination, whose records were checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<DestinationId>,
    /// With no drive mounted: the last one seen (whose verify and cloud records were checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_destination: Option<SeenDestination>,
}

impl HealthReport {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// Checks every condition of `store` at time `now`; the cloud copy's too when `cloud` is given
/// and enabled (only this machine's own job has one).
pub fn check(store: &Store, cloud: Option<&Cloud>, now: Timestamp) -> HealthReport {
    let mut checks = Vec::new();
    let mut push = |name: &str, r: std::result::Result<String, String>| {
        let (ok, message) = match r {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        checks.push(Check { name: name.into(), ok, message });
    };
    let dest = &store.destination.path;
    let mounted = DestinationId::mounted(&store.destination);
    let records = StateDir::of(store).records_of(mounted.as_ref());
    let seen_note = match &records.last_seen {
        Some(s) => {
            format!("; the last drive seen there: {}, {} ago", s.destination.describe(), words(age(now, s.seen_at)))
        }
        None => String::new(),
    };
    push("destination", check_destination(store).map_err(|e| e + &seen_note));
    let free = crate::fs::fsutil::free_bytes(dest).ok();
    push(
        "freeSpace",
        match free {
            None => Err(format!("cannot read the free space of {}", dest.display())),
            Some(f) if f < store.destination.min_free_bytes => Err(format!(
                "{} has {} free, less than the required {}",
                dest.display(),
                crate::run::human_bytes(f),
                crate::run::human_bytes(store.destination.min_free_bytes)
            )),
            Some(f) => Ok(format!("{} free", crate::run::human_bytes(f))),
        },
    );
    let host_root = store.host_dir();
    let listed = HostDir::open(&host_root).and_then(|h| h.list());
    let (count, newest) = match &listed {
        Ok(l) => (l.len(), l.last().map(|s| (s.id(), s.time()))),
        Err(_) => (0, None),
    };
    let max_age = store.max_age();
    push(
        "newestSnapshot",
        match (&listed, &newest) {
            (Err(e), _) => Err(format!("cannot list snapshots: {e}")),
            (Ok(_), None) => Err(format!("there is no complete snapshot under {}", host_root.display())),
            (Ok(_), Some((id, t))) => {
                let age = age(now, *t);
                if let Some(by) = crate::store::clock::ahead(*t, now) {
                    Err(format!(
                        "the newest snapshot {id} is dated {t}, {} in the future (a wrong clock or a mistyped \
                         --now?); it would hide a backup job that stopped: remove it if its date is wrong",
                        words(by)
                    ))
                } else if age > max_age {
                    Err(format!(
                        "the newest snapshot {id} is {} old, older than health.maxAge {}",
                        words(age),
                        store.health.max_age
                    ))
                } else {
                    Ok(format!("the newest snapshot {id} is {} old", words(age)))
                }
            }
        },
    );
    let min = store.health.min_backups as usize;
    push(
        "snapshotCount",
        if count < min {
            Err(format!("{count} complete snapshot(s), fewer than health.minBackups {min}"))
        } else {
            Ok(format!("{count} complete snapshot(s)"))
        },
    );
    push(
        "lastRun",
        match records.last_run() {
            None => Ok("no run recorded".into()),
            Some(r) => check_last_run(&r),
        },
    );
    // With no drive mounted, the verify and the push judged are the last seen drive's: say so.
    let whose = |r: std::result::Result<String, String>| match &records.last_seen {
        None => r,
        Some(s) => {
            let note = format!(" ({}, not mounted now)", s.destination.describe());
            r.map(|m| m + &note).map_err(|m| m + &note)
        }
    };
    let existing: Vec<String> = listed.as_ref().map(|l| l.iter().map(|s| s.name.clone()).collect()).unwrap_or_default();
    let damage = records.records.damage();
    push(
        "verify",
        whose(check_verify(store, records.verify(), now).and_then(|ok| check_damage(&damage, &existing).map(|()| ok))),
    );
    if let Some(cloud) = cloud.filter(|c| c.enable) {
        push("cloud", whose(check_cloud(cloud, records.cloud(), now)));
    }
    HealthReport {
        host: store.host.clone(),
        healthy: checks.iter().all(|c| c.ok),
        checked_at: now,
        checks,
        snapshots: count,
        newest_snapshot: newest.map(|(_, t)| t),
        free_bytes: free,
        destination: mounted,
        last_seen_destination: records.last_seen,
    }
}

/// [`check`] of a job: its store and cloud copy, and an `offsite:<name>` check per offsite
/// of this machine's job.
pub fn check_job(job: &crate::job::Job, now: Timestamp) -> HealthReport {
    let mut report = check(&job.store, job.cloud(), now);
    let state = StateDir::of(&job.store);
    for (name, o) in job.offsites() {
        let (ok, message) = match check_offsite(name, o, &state, now) {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        report.checks.push(Check { name: format!("offsite:{name}"), ok, message });
    }
    report.healthy = report.checks.iter().all(|c| c.ok);
    report
}

fn check_offsite(
    name: &str,
    o: &crate::plan::Offsite,
    state: &StateDir,
    now: Timestamp,
) -> std::result::Result<String, String> {
    let rec = state.offsite(name).unwrap_or_default();
    if rec.last_check_ok == Some(false) {
        return Err(format!(
            "the last check of offsite {name} ({}) failed: {}",
            o.repository,
            rec.last_check_error.as_deref().unwrap_or("unknown error")
        ));
    }
    let Some(t) = rec.last_success else {
        return Err(match rec.last_error {
            Some(e) => format!("offsite {name} ({}) has never been copied to: {e}", o.repository),
            None => format!("offsite {name} ({}) has never been copied to", o.repository),
        });
    };
    let age = age(now, t);
    let failing = match (rec.last_ok, &rec.last_error) {
        (false, Some(e)) => format!("; the last attempt failed: {e}"),
        _ => String::new(),
    };
    if age > o.max_age_duration() {
        return Err(format!(
            "the last good copy to offsite {name} ({}) is {} old, older than maxAge {}{failing}",
            o.repository,
            words(age),
            o.max_age
        ));
    }
    Ok(format!(
        "the last good copy to offsite {name} is {} old ({}){failing}",
        words(age),
        rec.last_success_snapshot.as_deref().unwrap_or("?")
    ))
}

fn check_last_run(r: &LastRun) -> std::result::Result<String, String> {
    let skipped = (r.state == RunState::Skipped).then(|| {
        format!(
            "the run started {} was skipped: {}",
            r.started_at,
            r.error.as_deref().unwrap_or("another run held the lock")
        )
    });
    let after = skipped.as_ref().map(|s| format!("; {s}")).unwrap_or_default();
    match r.effective() {
        None => Ok(skipped.unwrap_or_default()),
        Some(c) if c.state == RunState::Failed => Err(format!(
            "the last run, started {}, failed: {}{after}",
            c.started_at,
            c.error.as_deref().unwrap_or("unknown error")
        )),
        Some(c) => Ok(format!("the last run, started {}, ended {}{after}", c.started_at, c.state.as_str())),
    }
}

fn check_destination(store: &Store) -> std::result::Result<String, String> {
    let dest = &store.destination.path;
    match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("destination {} is not a directory", dest.display())),
        Err(e) => return Err(format!("destination {} is not reachable: {e}", dest.display())),
    }
    if store.destination.require_mount_point {
        match crate::fs::fsutil::is_mount_point(dest) {
            Ok(true) => return Ok(format!("{} is mounted", dest.display())),
            Ok(false) => {
                return Err(format!(
                    "destination {} is not a mount point (is the backup drive mounted?)",
                    dest.display()
                ))
            }
            Err(e) => return Err(format!("cannot tell whether {} is mounted: {e}", dest.display())),
        }
    }
    Ok(format!("{} is reachable", dest.display()))
}

fn check_verify(store: &Store, rec: Option<VerifyRecord>, now: Timestamp) -> std::result::Result<String, String> {
    let limit = store.verify_max_age();
    let Some(rec) = rec else {
        return match limit {
            Some(_) => Err("no verify has been recorded; run `backup-verify`".into()),
            None => Ok("no verify recorded yet".into()),
        };
    };
    let age = age(now, rec.finished_at);
    if !rec.is_clean() {
        return Err(format!(
            "the last verify ({} ago) found {} problem(s) in {}; run `hwc-backup repair` for damaged files, `backup-verify --all` to check every snapshot",
            words(age),
            rec.errors,
            rec.damaged.join(", ")
        ));
    }
    if let Some(l) = limit {
        if age > l {
            return Err(format!(
                "the last verify was {} ago, longer than health.verifyMaxAge {}",
                words(age),
                store.health.verify_max_age.as_deref().unwrap_or("")
            ));
        }
    }
    Ok(format!("the last verify ({} ago, {} files) was clean", words(age), rec.files_checked))
}

fn check_damage(damage: &crate::ops::state::DamageRecord, existing: &[String]) -> std::result::Result<(), String> {
    let open: Vec<_> = damage.unrepaired(existing).collect();
    if open.is_empty() {
        return Ok(());
    }
    let mut snapshots: Vec<&str> = open.iter().map(|p| p.snapshot.as_str()).collect();
    snapshots.sort();
    snapshots.dedup();
    let mut files: Vec<&str> = open.iter().map(|p| p.path.as_str()).collect();
    files.sort();
    files.dedup();
    Err(format!(
        "{} damaged file(s) ({}) in {} snapshot(s) ({}) are not repaired; run `hwc-backup repair`",
        files.len(),
        files.iter().take(5).copied().collect::<Vec<_>>().join(", "),
        snapshots.len(),
        snapshots.iter().take(5).copied().collect::<Vec<_>>().join(", ")
    ))
}

fn check_cloud(cloud: &Cloud, rec: Option<CloudRecord>, now: Timestamp) -> std::result::Result<String, String> {
    let rec = rec.unwrap_or_default();
    let last_error = rec
        .last_error
        .as_deref()
        .filter(|_| !rec.last_ok)
        .map(|e| format!("; the last push failed: {e}"))
        .unwrap_or_default();
    let Some(t) = rec.last_success else {
        return Err(format!("the snapshot has never been pushed to the cloud{last_error}"));
    };
    let age = age(now, t);
    if age > cloud.max_age_duration() {
        return Err(format!(
            "the last cloud push that succeeded was {} ago, longer than cloud.maxAge {}{last_error}",
            words(age),
            cloud.max_age
        ));
    }
    Ok(format!("pushed {} ago{last_error}", words(age)))
}

fn age(now: Timestamp, t: Timestamp) -> Duration {
    Duration::from_secs(now.as_second().saturating_sub(t.as_second()).max(0) as u64)
}

/// `3d 4h`, `5h 12m`, `40s`.
pub fn words(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::store::verify::VerifyReport;

    #[test]
    fn durations_in_words() {
        assert_eq!(words(Duration::from_secs(3 * 86400 + 4 * 3600 + 5)), "3d 4h");
        assert_eq!(words(Duration::from_secs(3600 + 120)), "1h 2m");
        assert_eq!(words(Duration::from_secs(40)), "40s");
    }

    #[test]
    fn verify_record_counts_every_kind_of_damage() {
        let dir = tempfile::tempdir().unwrap();
        let r = VerifyReport {
            snapshot: "daily/x".into(),
            files_checked: 10,
            changed: vec!["a".into()],
            missing: vec!["b".into(), "c".into()],
            ..Default::default()
        };
        let state = StateDir::new(dir.path(), "h");
        let dest = DestinationId::of(dir.path());
        let rec =
            VerifyRecord::of(dest.clone(), &[r, VerifyReport { snapshot: "daily/y".into(), ..Default::default() }]);
        state.write_verify(&rec).unwrap();
        assert_eq!(rec.errors, 3);
        assert_eq!(rec.damaged, vec!["daily/x".to_string()]);
        assert_eq!(state.verify(&dest).unwrap(), rec);
    }

    #[test]
    fn a_skipped_run_keeps_the_outcome_of_the_run_before() {
        let dir = tempfile::tempdir().unwrap();
        let records = StateDir::new(dir.path(), "h");
        let run = |state, kind, secs| {
            let mut r = crate::run::RunReport::new("h", Timestamp::from_second(secs).unwrap());
            r.state = state;
            r.error_kind = kind;
            r.error = kind.map(|k: ErrorKind| format!("an error of kind {k}"));
            records.write_last_run(&r).unwrap();
            records.last_run().unwrap()
        };
        // A skip with nothing before it.
        let r = run(RunState::Skipped, Some(ErrorKind::Locked), 100);
        assert_eq!((r.state, r.error_kind, r.effective()), (RunState::Skipped, Some(ErrorKind::Locked), None));
        assert!(check_last_run(&r).unwrap().contains("was skipped: an error of kind locked"));
        // A failure, then two skips: the failure stays visible.
        run(RunState::Failed, Some(ErrorKind::Preflight), 200);
        run(RunState::Skipped, Some(ErrorKind::Locked), 300);
        let r = run(RunState::Skipped, Some(ErrorKind::Locked), 400);
        assert_eq!(r.started_at.as_second(), 400);
        let c = r.effective().unwrap();
        assert_eq!(
            (c.state, c.started_at.as_second(), c.error_kind),
            (RunState::Failed, 200, Some(ErrorKind::Preflight))
        );
        let e = check_last_run(&r).unwrap_err();
        assert!(e.contains("failed: an error of kind preflight") && e.contains("was skipped"), "{e}");
        // A success, then a skip: healthy.
        run(RunState::Success, None, 500);
        let r = run(RunState::Skipped, Some(ErrorKind::Locked), 600);
        assert_eq!(r.effective().unwrap().started_at.as_second(), 500);
        assert!(check_last_run(&r).unwrap().starts_with("the last run, started"));
    }
}
