//! The on-disk layout of one host's snapshots (the seed's layout, kept exactly):
//!
//! ```text
//! <destination>/<host>/
//!   daily/2025-01-16_02-00-00/      a complete tree of every source, by absolute path
//!     .hwc-backup/meta.json         the snapshot's metadata (see `meta`)
//!     .hwc-backup/manifest.b3       a BLAKE3 hash of every regular file (b3sum format)
//!   weekly/…  monthly/…  (hourly/ and yearly/ when those rules are used)
//!   latest -> daily/2025-01-16_02-00-00
//!   .incomplete/<name>/             work in progress; never visible under a tier
//!   .trash/<name>/                  expired snapshots, deleted after the lock is released
//!   .lock                           flock(2) of the single writer; names the holder
//! ```
//!
//! A snapshot becomes visible by one `rename()` from `.incomplete/` into `daily/`, so readers
//! never see half a snapshot. Only directories under a tier with a readable `meta.json` are
//! complete snapshots.

use std::path::{Path, PathBuf};

use jiff::civil::DateTime;
use jiff::{Timestamp, Zoned};

use crate::error::{Error, IoContext, Result};
use crate::meta::{SnapshotMeta, META_DIR};
use crate::retention::Tier;

/// Every tier directory, finest first.
pub const TIERS: [Tier; 5] = [Tier::Hourly, Tier::Daily, Tier::Weekly, Tier::Monthly, Tier::Yearly];

/// The format of snapshot directory names (local time of the run's start).
const NAME_FORMAT: &str = "%Y-%m-%d_%H-%M-%S";

/// Paths inside one host directory.
#[derive(Clone, Debug)]
pub struct HostDir {
    root: PathBuf,
}

/// A complete snapshot found on disk.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The tier directory it lives in.
    pub tier: Tier,
    /// Its directory name (`2025-01-16_02-00-00`).
    pub name: String,
    /// Full path of the snapshot directory.
    pub path: PathBuf,
    /// Its metadata.
    pub meta: SnapshotMeta,
}

impl Snapshot {
    /// `daily/2025-01-16_02-00-00`: the name users type and `latest` points to.
    pub fn id(&self) -> String {
        format!("{}/{}", self.tier.as_str(), self.name)
    }

    /// The snapshot's start time.
    pub fn time(&self) -> Timestamp {
        self.meta.started_at
    }
}

impl HostDir {
    /// The host directory `<destination>/<host>`.
    pub fn new(root: PathBuf) -> HostDir {
        HostDir { root }
    }

    /// The host directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a tier.
    pub fn tier_dir(&self, tier: Tier) -> PathBuf {
        self.root.join(tier.as_str())
    }

    /// Where work in progress is built.
    pub fn incomplete_dir(&self) -> PathBuf {
        self.root.join(".incomplete")
    }

    /// Where expired snapshots wait for deletion.
    pub fn trash_dir(&self) -> PathBuf {
        self.root.join(".trash")
    }

    /// The writer's lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// The `latest` symlink.
    pub fn latest_path(&self) -> PathBuf {
        self.root.join("latest")
    }

    /// All complete snapshots, oldest first. A missing host directory means "none yet".
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let mut all = Vec::new();
        for tier in TIERS {
            let dir = self.tier_dir(tier);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read directory", &dir, e)),
            };
            for entry in entries {
                let entry = entry.ctx("read directory", &dir)?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if parse_name(&name).is_none() {
                    continue;
                }
                let path = entry.path();
                // A directory without readable metadata is not a complete snapshot; listing
                // skips it rather than failing, so one damaged snapshot cannot hide the rest.
                match SnapshotMeta::read(&path.join(META_DIR)) {
                    Ok(meta) => all.push(Snapshot { tier, name, path, meta }),
                    Err(e) => tracing::warn!("skipping {}: {e}", path.display()),
                }
            }
        }
        all.sort_by(|a, b| a.time().cmp(&b.time()).then_with(|| a.name.cmp(&b.name)));
        Ok(all)
    }

    /// The newest complete snapshot, if any.
    pub fn newest(&self) -> Result<Option<Snapshot>> {
        Ok(self.list()?.pop())
    }

    /// Resolves a user-given name: `latest`, `daily/2025-01-15_02-00-00`, or a bare
    /// `2025-01-15_02-00-00` (or a unique prefix of one, such as `2025-01-15`).
    pub fn resolve(&self, name: &str) -> Result<Snapshot> {
        let all = self.list()?;
        let not_found = |message: String| Error::Snapshot { name: name.to_string(), message };
        if name == "latest" {
            return crate::clock::pick_latest(&all, self.latest_name().as_deref(), Timestamp::now())
                .cloned()
                .ok_or_else(|| not_found(format!("there is no complete snapshot under {}", self.root.display())));
        }
        let matches: Vec<Snapshot> = all
            .into_iter()
            .filter(|s| s.id() == name || s.name == name || s.name.starts_with(name) || s.id().starts_with(name))
            .collect();
        let exact: Vec<&Snapshot> = matches.iter().filter(|s| s.id() == name || s.name == name).collect();
        if exact.len() == 1 {
            return Ok(exact[0].clone());
        }
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one match")),
            0 => Err(not_found(format!(
                "no such snapshot under {} (see `hwc-backup restore --list`)",
                self.root.display()
            ))),
            n => Err(not_found(format!(
                "is ambiguous: {n} snapshots match ({}…); give the full name",
                matches.iter().take(3).map(Snapshot::id).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Points `latest` at `target` (relative, e.g. `daily/NAME`) atomically: a new symlink is
    /// created beside it and renamed over the old one.
    pub fn set_latest(&self, target: &str) -> Result<()> {
        let tmp = self.root.join(".latest.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).ctx("create symlink", &tmp)?;
        std::fs::rename(&tmp, self.latest_path()).ctx("replace", self.latest_path())?;
        crate::fsutil::sync_dir(&self.root)
    }

    /// The snapshot name `latest` points at (the last component of its target), if it is a
    /// symlink.
    pub fn latest_name(&self) -> Option<String> {
        let target = std::fs::read_link(self.latest_path()).ok()?;
        target.file_name()?.to_str().map(str::to_owned)
    }

    /// Points `latest` at the snapshot it stands for ([`crate::clock::pick_latest`]: the one
    /// it names, wherever pruning moved it, else the newest not dated in the future), or
    /// removes it when there is none.
    pub fn refresh_latest(&self) -> Result<()> {
        let all = self.list()?;
        match crate::clock::pick_latest(&all, self.latest_name().as_deref(), Timestamp::now()).cloned() {
            Some(s) => {
                let want = s.id();
                let have = std::fs::read_link(self.latest_path()).ok();
                if have.as_deref() != Some(Path::new(&want)) {
                    self.set_latest(&want)?;
                }
                Ok(())
            }
            None => match std::fs::remove_file(self.latest_path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", self.latest_path(), e)),
                _ => Ok(()),
            },
        }
    }
}

/// The directory name for a snapshot started at `when`.
pub fn snapshot_name(when: &Zoned) -> String {
    when.strftime(NAME_FORMAT).to_string()
}

/// A name for a snapshot started at `when` that no existing snapshot has. Local wall time
/// repeats (the hour after clocks go back, a change of time zone), so a taken name gets a
/// suffix `_2`, `_3` … instead of failing the backup.
pub fn unique_name(when: &Zoned, existing: &[Snapshot]) -> String {
    let base = snapshot_name(when);
    let taken = |n: &str| existing.iter().any(|s| s.name == n);
    if !taken(&base) {
        return base;
    }
    (2..).map(|i| format!("{base}_{i}")).find(|n| !taken(n)).expect("an unused suffix exists")
}

/// Parses a snapshot directory name (with or without a `_N` suffix) into its civil time.
pub fn parse_name(name: &str) -> Option<DateTime> {
    if let Ok(dt) = DateTime::strptime(NAME_FORMAT, name) {
        return Some(dt);
    }
    let (base, suffix) = name.rsplit_once('_')?;
    let numeric = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) && !suffix.starts_with('0');
    if numeric {
        DateTime::strptime(NAME_FORMAT, base).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let z: Zoned = "2025-01-15T02:00:00+01:00[+01:00]".parse().unwrap();
        let n = snapshot_name(&z);
        assert_eq!(n, "2025-01-15_02-00-00");
        assert_eq!(parse_name(&n).unwrap().to_string(), "2025-01-15T02:00:00");
        assert!(parse_name("2025-01-15").is_none());
        assert_eq!(parse_name("2025-10-26_02-30-00_2").unwrap().to_string(), "2025-10-26T02:30:00");
        assert!(parse_name("2025-10-26_02-30-00_x").is_none());
        assert!(parse_name("2025-10-26_02-30-00_02").is_none());
        assert!(parse_name(".incomplete").is_none());
    }
}
