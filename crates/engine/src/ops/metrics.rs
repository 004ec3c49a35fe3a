//! Prometheus metrics as a node-exporter textfile: `<textfileDir>/hwc_backup_<host>.prom`.
//!
//! The file is rebuilt whole after every run, verify, cloud push and health check from what is
//! on disk (the snapshots) and in `<stateDir>/<host>/` (the last run, verify and push *of the
//! drive mounted now*, as health reads them, and the last health check:
//! [`crate::ops::state`]), so any one command refreshes every value and none can leave another
//! stale. The metrics stay one set per host (no `destination` label): after a drive is swapped,
//! the next command shows the new drive's values.
//! It is written to a hidden temporary name in the same directory and renamed into place:
//! node-exporter reads only `*.prom` and never sees half a file.
//!
//! Times are Unix seconds (`*_timestamp_seconds`), so alerts read `time() - metric`; the
//! `*_age_seconds` values are as of `hwc_backup_metrics_written_timestamp_seconds`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::error::Result;
use crate::job::Job;
use crate::ops::state::{LastRun, StateDir};
use crate::store::layout::{HostDir, TIERS};
use crate::store::meta::RunState;

/// The metrics file for a host.
pub fn file_path(dir: &Path, host: &str) -> PathBuf {
    dir.join(format!("hwc_backup_{host}.prom"))
}

/// Writes the job's metrics file when `metrics.textfileDir` is set; returns its path.
pub fn write(job: &Job) -> Result<Option<PathBuf>> {
    let Some(dir) = &job.reporting.metrics.textfile_dir else { return Ok(None) };
    let text = render(job, Timestamp::now());
    let path = file_path(dir, job.host());
    write_atomically(&path, text.as_bytes())?;
    Ok(Some(path))
}

fn write_atomically(path: &Path, text: &[u8]) -> Result<()> {
    crate::fs::fsutil::ensure_dir(path.parent().unwrap_or(Path::new(".")))?;
    crate::fs::fsutil::write_durably(path, text)
}

/// The metrics text at time `now`.
pub fn render(job: &Job, now: Timestamp) -> String {
    let mut m = Metrics { out: String::new(), host: escape(job.host()) };
    let secs = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
    m.gauge("metrics_written_timestamp_seconds", "When this file was written.", &[(&[], secs(now))]);

    let state = StateDir::of(&job.store);
    let records = StateDir::records_now(&job.store);
    let last = records.last_run();
    if let Some(r) = last.as_ref().filter(|r| r.state == RunState::Skipped) {
        m.gauge(
            "last_skipped_timestamp_seconds",
            "Start of the last run, when it was skipped because another run held the lock.",
            &[(&[], secs(r.started_at))],
        );
    }
    // A skipped run is not the last run's outcome: the run before it is.
    if let Some(r) = last.as_ref().and_then(LastRun::effective) {
        m.gauge("last_run_timestamp_seconds", "End of the last backup run.", &[(&[], secs(r.finished_at))]);
        m.gauge("last_run_start_timestamp_seconds", "Start of the last backup run.", &[(&[], secs(r.started_at))]);
        let dur = (r.finished_at.as_millisecond() - r.started_at.as_millisecond()).max(0) as f64 / 1000.0;
        m.gauge("last_run_duration_seconds", "How long the last backup run took.", &[(&[], dur)]);
        let states = [RunState::Success, RunState::Partial, RunState::Failed];
        let values: Vec<([(&str, &str); 1], f64)> =
            states.iter().map(|s| ([("state", s.as_str())], f64::from(u8::from(*s == r.state)))).collect();
        let rows: Vec<(&[(&str, &str)], f64)> = values.iter().map(|(l, v)| (&l[..], *v)).collect();
        m.gauge("last_run_state", "1 for the state the last backup run ended in.", &rows);
        let c = &r.counts;
        m.gauge("last_run_files", "Regular files in the last run's snapshot.", &[(&[], c.files as f64)]);
        m.gauge("last_run_files_copied", "Files the last run copied (new or changed).", &[(&[], c.copied as f64)]);
        m.gauge(
            "last_run_files_linked",
            "Entries the last run hard-linked to the previous snapshot.",
            &[(&[], c.linked as f64)],
        );
        m.gauge("last_run_bytes_copied", "Bytes the last run copied.", &[(&[], c.bytes_copied as f64)]);
        m.gauge(
            "last_run_bytes_linked",
            "Bytes the last run shared through hard links.",
            &[(&[], c.bytes_linked as f64)],
        );
        m.gauge("last_run_warnings", "Warnings of the last run.", &[(&[], c.warnings as f64)]);
    }

    let snapshots = HostDir::open(&job.store.host_dir()).and_then(|h| h.list()).unwrap_or_default();
    let per_tier: Vec<([(&str, &str); 1], f64)> = TIERS
        .iter()
        .map(|t| ([("tier", t.as_str())], snapshots.iter().filter(|s| s.tier == *t).count() as f64))
        .collect();
    let rows: Vec<(&[(&str, &str)], f64)> = per_tier.iter().map(|(l, v)| (&l[..], *v)).collect();
    m.gauge("snapshots", "Complete snapshots per tier.", &rows);
    if let (Some(oldest), Some(newest)) = (snapshots.first(), snapshots.last()) {
        let age = |t: Timestamp| (now.as_second() - t.as_second()).max(0) as f64;
        m.gauge(
            "oldest_snapshot_timestamp_seconds",
            "Start of the oldest complete snapshot.",
            &[(&[], secs(oldest.time()))],
        );
        m.gauge(
            "newest_snapshot_timestamp_seconds",
            "Start of the newest complete snapshot.",
            &[(&[], secs(newest.time()))],
        );
        m.gauge(
            "oldest_snapshot_age_seconds",
            "Age of the oldest complete snapshot when this file was written.",
            &[(&[], age(oldest.time()))],
        );
        m.gauge(
            "newest_snapshot_age_seconds",
            "Age of the newest complete snapshot when this file was written.",
            &[(&[], age(newest.time()))],
        );
        m.gauge(
            "last_success_timestamp_seconds",
            "End of the last run that published a snapshot (success or partial).",
            &[(&[], secs(newest.meta.finished_at))],
        );
    }
    // The services the newest snapshot's run held still (`quiesce`), and for how long.
    if let Some(newest) = snapshots.last().filter(|s| !s.meta.held_units.is_empty()) {
        let values: Vec<([(&str, &str); 1], f64)> = newest
            .meta
            .held_units
            .iter()
            .map(|h| ([("unit", h.unit.as_str())], h.down_ms.unwrap_or(0) as f64 / 1000.0))
            .collect();
        let rows: Vec<(&[(&str, &str)], f64)> = values.iter().map(|(l, v)| (&l[..], *v)).collect();
        m.gauge(
            "newest_snapshot_unit_down_seconds",
            "How long the newest snapshot's run kept each quiesced unit stopped or frozen (0: it was not running).",
            &rows,
        );
    }
    if let Ok(free) = crate::fs::fsutil::free_bytes(&job.store.destination.path) {
        m.gauge("destination_free_bytes", "Free bytes at the destination.", &[(&[], free as f64)]);
    }

    if let Some(v) = records.verify() {
        m.gauge("verify_last_timestamp_seconds", "End of the last verify.", &[(&[], secs(v.finished_at))]);
        m.gauge(
            "verify_errors",
            "Damaged, missing or unexpected files the last verify found, less those repaired since.",
            &[(&[], v.errors.saturating_sub(v.repaired) as f64)],
        );
        m.gauge("verify_files_checked", "Files the last verify hashed.", &[(&[], v.files_checked as f64)]);
    }

    m.gauge(
        "cloud_enabled",
        "1 when the cloud copy is configured.",
        &[(&[], f64::from(u8::from(job.cloud().is_some())))],
    );
    if let Some(c) = records.cloud() {
        if let Some(t) = c.last_success {
            m.gauge(
                "cloud_last_success_timestamp_seconds",
                "End of the last cloud push that succeeded.",
                &[(&[], secs(t))],
            );
        }
        if let Some(t) = c.last_attempt {
            m.gauge("cloud_last_attempt_timestamp_seconds", "End of the last cloud push.", &[(&[], secs(t))]);
            m.gauge(
                "cloud_last_attempt_ok",
                "1 when the last cloud push succeeded.",
                &[(&[], f64::from(u8::from(c.last_ok)))],
            );
        }
    }

    let offsites: Vec<(&str, crate::ops::state::OffsiteRecord)> =
        job.offsites().into_iter().map(|(n, _)| (n, state.offsite(n).unwrap_or_default())).collect();
    if !offsites.is_empty() {
        let rows = |f: &dyn Fn(&crate::ops::state::OffsiteRecord) -> Option<f64>| -> Vec<(String, f64)> {
            offsites.iter().filter_map(|(n, r)| f(r).map(|v| (n.to_string(), v))).collect()
        };
        let families: [Family; 6] = [
            (
                "offsite_last_success_timestamp_seconds",
                "End of the last offsite copy that succeeded.",
                rows(&|r| r.last_success.map(secs)),
            ),
            (
                "offsite_last_attempt_timestamp_seconds",
                "End of the last offsite copy.",
                rows(&|r| r.last_attempt.map(secs)),
            ),
            (
                "offsite_last_attempt_ok",
                "1 when the last offsite copy succeeded.",
                rows(&|r| r.last_attempt.map(|_| f64::from(u8::from(r.last_ok)))),
            ),
            (
                "offsite_last_duration_seconds",
                "How long the last offsite copy took.",
                rows(&|r| r.last_attempt.map(|_| r.last_duration_seconds)),
            ),
            (
                "offsite_last_bytes_added",
                "Bytes the last good offsite copy added to the repository.",
                rows(&|r| r.last_success.map(|_| r.last_success_data_added as f64)),
            ),
            (
                "offsite_check_ok",
                "1 when the last restic check of the offsite (and its sample) was clean.",
                rows(&|r| r.last_check_ok.map(|ok| f64::from(u8::from(ok)))),
            ),
        ];
        for (name, help, values) in families {
            let labels: Vec<[(&str, &str); 1]> = values.iter().map(|(n, _)| [("name", n.as_str())]).collect();
            let rows: Vec<(&[(&str, &str)], f64)> =
                labels.iter().zip(&values).map(|(l, (_, v))| (&l[..], *v)).collect();
            if !rows.is_empty() {
                m.gauge(name, help, &rows);
            }
        }
    }

    if let Some(h) = state.health() {
        m.gauge("healthy", "1 when every health check passed.", &[(&[], f64::from(u8::from(h.healthy)))]);
        m.gauge("health_last_timestamp_seconds", "When the last health check ran.", &[(&[], secs(h.checked_at))]);
        let values: Vec<([(&str, &str); 1], f64)> =
            h.checks.iter().map(|c| ([("check", c.name.as_str())], f64::from(u8::from(c.ok)))).collect();
        let rows: Vec<(&[(&str, &str)], f64)> = values.iter().map(|(l, v)| (&l[..], *v)).collect();
        m.gauge("health_check_ok", "1 for each health check that passed.", &rows);
    }
    m.out
}

/// A metric family of the offsites: name, help, and a value per offsite name.
type Family = (&'static str, &'static str, Vec<(String, f64)>);

struct Metrics {
    out: String,
    host: String,
}

impl Metrics {
    /// One metric family: HELP, TYPE, and a sample per label set (each also labelled `host`).
    fn gauge(&mut self, name: &str, help: &str, rows: &[(&[(&str, &str)], f64)]) {
        let name = format!("hwc_backup_{name}");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} gauge");
        for (labels, value) in rows {
            let mut l = format!("host=\"{}\"", self.host);
            for (k, v) in labels.iter() {
                let _ = write!(l, ",{k}=\"{}\"", escape(v));
            }
            let _ = writeln!(self.out, "{name}{{{l}}} {}", number(*value));
        }
    }
}

/// Label values escape `\`, `"` and newline (the text format's rules).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Integers without a fraction, others with millisecond precision.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn numbers_and_escapes() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1.5), "1.500");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn renders_families_for_an_empty_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = Plan::ad_hoc("h".into(), vec!["/src".into()], dir.path().to_path_buf(), vec![]);
        plan.state_dir = dir.path().join("state");
        let text = render(&plan.local_job(), Timestamp::now());
        assert!(text.contains("# TYPE hwc_backup_snapshots gauge"));
        assert!(text.contains("hwc_backup_snapshots{host=\"h\",tier=\"daily\"} 0"));
        assert!(!text.contains("last_run_state"), "no run recorded yet: {text}");
    }

    #[test]
    fn written_atomically_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = Plan::ad_hoc("h".into(), vec!["/src".into()], dir.path().to_path_buf(), vec![]);
        plan.state_dir = dir.path().join("state");
        plan.metrics.textfile_dir = Some(dir.path().join("prom"));
        let p = write(&plan.local_job()).unwrap().unwrap();
        assert_eq!(p, dir.path().join("prom/hwc_backup_h.prom"));
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("prom")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind: {names:?}");
    }
}
