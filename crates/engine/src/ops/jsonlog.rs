//! JSON-lines logs in the plan's `logDir` (the seed's `/var/log/backup/`): one object per
//! event, one line per object, so `jq` and log shippers read them without a parser for our
//! prose.
//!
//! Logging is best effort: [`append`] returns an error for the caller to mention, but nothing
//! in the engine fails a backup because a log could not be written (a missing or read-only
//! log directory must not cost a snapshot).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The log files, by the seed's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// `backup-local.log`: snapshot runs, hooks, database dumps, pruning.
    Local,
    /// `backup-cloud.log`: rclone pushes.
    Cloud,
    /// `backup-coordinator.log`: the job as a whole: start, end, notifications.
    Coordinator,
    /// `backup-health.log`: health checks.
    Health,
    /// `backup-offsite.log`: restic copies and checks of the offsite repositories.
    Offsite,
}

impl Log {
    /// The file name inside the log directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Log::Local => "backup-local.log",
            Log::Cloud => "backup-cloud.log",
            Log::Coordinator => "backup-coordinator.log",
            Log::Health => "backup-health.log",
            Log::Offsite => "backup-offsite.log",
        }
    }

    /// The full path in `log_dir`.
    pub fn path(self, log_dir: &Path) -> PathBuf {
        log_dir.join(self.file_name())
    }
}

/// Appends one event: `{"time": …, "host": …, "event": …, <fields>}`.
///
/// `fields` should be a JSON object; anything else is stored under `"data"`. The directory is
/// created when missing. The line is written with a single `write` on an `O_APPEND` file, so
/// concurrent writers (the timer run and a manual `backup-health`) never interleave inside a
/// line.
pub fn append(log_dir: &Path, log: Log, host: &str, event: &str, fields: Value) -> Result<()> {
    let mut obj = Map::new();
    obj.insert("time".into(), Value::String(jiff::Timestamp::now().to_string()));
    obj.insert("host".into(), Value::String(host.to_string()));
    obj.insert("event".into(), Value::String(event.to_string()));
    match fields {
        Value::Object(m) => {
            for (k, v) in m {
                obj.entry(k).or_insert(v);
            }
        }
        Value::Null => {}
        other => {
            obj.insert("data".into(), other);
        }
    }
    let mut line = serde_json::to_vec(&Value::Object(obj)).expect("JSON values serialize");
    line.push(b'\n');
    crate::fs::fsutil::ensure_dir(log_dir)?;
    let path = log.path(log_dir);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io("open log", &path, e))?;
    f.write_all(&line).map_err(|e| Error::io("append to log", &path, e))
}

/// The plain-text log inside a snapshot's metadata directory: what the pre-hook and the
/// database dumps printed, kept with the snapshot they belong to.
pub const SNAPSHOT_LOG: &str = "run.log";

/// Writes `<meta_dir>/run.log`: one `== what ==` section per entry, in order. Call it while
/// the snapshot is still being built (before its metadata is written), so the log is
/// published with the snapshot by the same rename.
pub fn write_snapshot_log(meta_dir: &crate::fs::Dir, sections: &[(String, String)]) -> Result<()> {
    if sections.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for (what, output) in sections {
        text.push_str(&format!("== {what} ==\n"));
        text.push_str(output);
        if !output.is_empty() && !output.ends_with('\n') {
            text.push('\n');
        }
    }
    meta_dir.write_atomic(&crate::fs::Name::fixed(SNAPSHOT_LOG), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("nested/log");
        append(&logs, Log::Local, "h", "run.started", serde_json::json!({ "sources": 2 })).unwrap();
        append(&logs, Log::Local, "h", "run.finished", serde_json::json!({ "state": "success", "event": "x" }))
            .unwrap();
        let text = std::fs::read_to_string(logs.join("backup-local.log")).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "run.started");
        assert_eq!(lines[0]["sources"], 2);
        // A field cannot overwrite the envelope.
        assert_eq!(lines[1]["event"], "run.finished");
        assert_eq!(lines[1]["host"], "h");
    }

    #[test]
    fn unwritable_dir_is_an_error_not_a_panic() {
        let e = append(Path::new("/proc/no-such-dir"), Log::Health, "h", "x", Value::Null).unwrap_err();
        assert!(e.to_string().contains("/proc/no-such-dir"), "{e}");
    }
}
