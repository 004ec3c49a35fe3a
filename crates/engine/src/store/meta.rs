//! Per-snapshot metadata: `<snapshot>/.hwc-backup/meta.json`.
//!
//! It lives inside the snapshot directory so that publishing the tree and its metadata is
//! one rename. Times are stored in UTC together with the local offset of the run, because
//! retention reads calendar fields in the offset recorded at backup time (restic's rule).

use std::path::PathBuf;

use jiff::tz::Offset;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The metadata directory inside every snapshot.
pub const META_DIR: &str = ".hwc-backup";
/// The metadata file inside [`META_DIR`].
pub const META_FILE: &str = "meta.json";
/// The manifest file inside [`META_DIR`].
pub const MANIFEST_FILE: &str = "manifest.b3";

/// How a run ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Published, nothing to report.
    Success,
    /// Published, with warnings (a file vanished, changed while read, could not be read).
    Partial,
    /// Nothing published.
    Failed,
    /// Nothing done, and not a failure: another run held the host's lock (exit 4). Only a
    /// run's report has this state, never a snapshot.
    Skipped,
}

impl RunState {
    /// The lowercase name used in logs, metrics and hook environments.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Success => "success",
            RunState::Partial => "partial",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
        }
    }

    /// Whether the run published a snapshot (success or partial).
    pub fn published(self) -> bool {
        matches!(self, RunState::Success | RunState::Partial)
    }
}

/// What a snapshot run did, counted.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Counts {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// FIFOs and device nodes.
    pub specials: u64,
    /// Entries hard-linked to the previous snapshot.
    pub linked: u64,
    /// Regular files copied (new or changed).
    pub copied: u64,
    /// Bytes copied (for a reflinked file, only the blocks written).
    pub bytes_copied: u64,
    /// Of the copied files, those written as a reflink (`FICLONE`) of their previous copy plus
    /// only the changed blocks, on btrfs and XFS destinations (`store::delta`).
    pub reflinked: u64,
    /// Bytes shared with the previous snapshot through hard links.
    pub bytes_linked: u64,
    /// Warnings (see `warnings`).
    pub warnings: u64,
    /// Links that hit the filesystem's link-count limit and were copied instead.
    pub emlink_fallbacks: u64,
    /// Sockets, which cannot be backed up, skipped.
    pub sockets_skipped: u64,
    /// Device nodes of a pulled host not recreated (its plan's `devices` is off).
    pub devices_skipped: u64,
    /// Entries left out by the exclude patterns.
    pub excluded: u64,
    /// Directories kept without their contents for their `CACHEDIR.TAG` (`excludeCaches`).
    pub excluded_caches: u64,
    /// Directories kept without their contents for a marker file (`excludeIfPresent`).
    pub excluded_if_present: u64,
    /// Regular files left out for their size (`excludeLargerThan`).
    pub excluded_large: u64,
}

/// One thing that went wrong with one path without failing the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Warning {
    /// The source path.
    pub path: PathBuf,
    /// What happened.
    pub message: String,
}

/// The metadata of one snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    /// Version of this metadata format.
    pub format: u32,
    /// `hwc-backup <version>`.
    pub tool: String,
    /// Host name.
    pub host: String,
    /// Snapshot directory name.
    pub name: String,
    /// `success` or `partial` (failed runs publish nothing).
    pub state: RunState,
    /// Start of the run, UTC.
    pub started_at: Timestamp,
    /// End of the run, UTC.
    pub finished_at: Timestamp,
    /// When the walk of the sources began, by this machine's real clock (not `--now`): a
    /// source file whose ctime is older had no inode change (no new extended attribute or
    /// ACL) since this snapshot read it. The next run compares extended attributes only for
    /// files changed since ([`crate::store::record::LinkBase::settled_before`]). Absent in
    /// snapshots of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_started_at: Option<Timestamp>,
    /// For a pulled host: when its agent began the walk, by the host's own clock (its files'
    /// ctimes are in that clock). The next pull asks the agent for the extended attributes of
    /// files changed since. Absent for local runs and older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_walk_started_at: Option<Timestamp>,
    /// The local UTC offset at the start, e.g. `+01:00`.
    #[serde(with = "offset_text")]
    pub utc_offset: Offset,
    /// Sources, as given.
    pub sources: Vec<PathBuf>,
    /// Exclude patterns, as given.
    pub exclude_patterns: Vec<String>,
    /// The snapshot unchanged files were linked to (`daily/NAME`), if any.
    pub link_base: Option<String>,
    /// The counts.
    pub counts: Counts,
    /// Regular files under each source, for the shrink guard of the next run.
    #[serde(default)]
    pub files_per_source: std::collections::BTreeMap<PathBuf, u64>,
    /// The first warnings (at most [`MAX_WARNINGS_KEPT`]; `counts.warnings` has the total).
    pub warnings: Vec<Warning>,
    /// `/run/current-system` at backup time, on NixOS.
    pub nixos_system: Option<PathBuf>,
    /// How each source was read (`sourceSnapshots`): from which filesystem snapshot, taken
    /// when, or live and why. Absent when the run took no filesystem snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_reads: Vec<crate::source::fs_snapshot::SourceRead>,
    /// The services held still (`quiesce`) and for how long.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_units: Vec<crate::source::quiesce::HeldUnit>,
}

/// How many warnings are kept verbatim in the metadata.
pub const MAX_WARNINGS_KEPT: usize = 1000;

impl SnapshotMeta {
    /// `LinkBase::settled_before` for a run whose link base is this snapshot: its walk start
    /// less a second, on this machine's clock, or on the agent's for a pulled host (whose
    /// files' ctimes come from that clock). `None` for snapshots of older versions.
    pub fn settled_before(&self, pulled: bool) -> Option<i64> {
        let started = if pulled { self.client_walk_started_at } else { self.walk_started_at };
        started.map(|t| t.as_second().saturating_sub(1))
    }

    /// The start time in the recorded offset.
    pub fn started_local(&self) -> jiff::Zoned {
        self.started_at.to_zoned(jiff::tz::TimeZone::fixed(self.utc_offset))
    }

    /// Parses the text of a `meta.json` read from `path`.
    pub fn from_json(text: &[u8], path: PathBuf) -> Result<SnapshotMeta> {
        serde_json::from_slice(text).map_err(|e| Error::Format { path, message: e.to_string() })
    }

    /// Writes `meta.json` into an open metadata directory, atomically.
    pub fn write_to(&self, meta_dir: &crate::fs::Dir) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).expect("metadata serializes");
        text.push(b'\n');
        meta_dir.write_atomic(&crate::fs::Name::fixed(META_FILE), &text)
    }

    /// [`SnapshotMeta::write_to`] for a snapshot not published yet, whose publish makes it
    /// durable (`syncfs`) with the rest of the snapshot: no fsyncs of its own.
    pub fn write_unpublished(&self, meta_dir: &crate::fs::Dir) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).expect("metadata serializes");
        text.push(b'\n');
        meta_dir.write_atomic_unsynced(&crate::fs::Name::fixed(META_FILE), &text)
    }
}

/// The current NixOS system generation, if this is NixOS.
pub fn nixos_system() -> Option<PathBuf> {
    std::fs::read_link("/run/current-system").ok()
}

/// Offsets are stored as `+01:00`, as in RFC 3339.
mod offset_text {
    use jiff::tz::Offset;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(o: &Offset, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*o))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Offset, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a UTC offset like +01:00")))
    }

    pub fn format(o: Offset) -> String {
        let secs = o.seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let a = secs.unsigned_abs();
        format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    }

    pub fn parse(text: &str) -> Option<Offset> {
        let (sign, rest) = match text.as_bytes().first()? {
            b'+' => (1, &text[1..]),
            b'-' => (-1, &text[1..]),
            _ => return None,
        };
        let (h, m) = rest.split_once(':')?;
        let secs = sign * (h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60);
        Offset::from_seconds(secs).ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_round_trip() {
        for s in ["+01:00", "-05:30", "+00:00", "+14:00"] {
            assert_eq!(super::offset_text::format(super::offset_text::parse(s).unwrap()), s);
        }
    }
}
