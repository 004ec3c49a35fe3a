//! The on-disk layout of one host's snapshots (the seed's layout, kept exactly):
//!
//! ```text
//! <destination>/<host>/
//!   daily/2025-01-16_02-00-00/      a complete tree of every source, by absolute path
//!     .hwc-backup/meta.json         the snapshot's metadata (see `meta`)
//!     .hwc-backup/manifest.b3       a BLAKE3 hash of every regular file (b3sum format)
//!     .hwc-backup/pin.json          when pinned: never pruned (see `history::pin`)
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

use crate::error::{Error, Result};
use crate::fs::{Dir, Name};
use crate::store::history::pin::PinState;
use crate::store::lock::HostLock;
use crate::store::meta::{SnapshotMeta, META_DIR, META_FILE};
use crate::store::retention::Tier;

/// Every tier directory, finest first.
pub const TIERS: [Tier; 5] = [Tier::Hourly, Tier::Daily, Tier::Weekly, Tier::Monthly, Tier::Yearly];

/// The format of snapshot directory names (local time of the run's start).
const NAME_FORMAT: &str = "%Y-%m-%d_%H-%M-%S";

/// The fixed names inside a host directory.
pub const INCOMPLETE: &str = ".incomplete";
/// Expired snapshots and leftovers wait here for deletion.
pub const TRASH: &str = ".trash";
/// The writer's lock file.
pub const LOCK: &str = ".lock";
/// The symlink to the newest complete snapshot.
pub const LATEST: &str = "latest";

/// Largest `meta.json` read (a snapshot's metadata keeps at most 1000 warnings).
const META_LIMIT: u64 = 64 << 20;

/// One host's directory, held open: every operation inside it goes through its [`Dir`]
/// handle, so a symlink planted at a fixed name is refused, and an unmounted or renamed
/// destination cannot redirect a run that is under way. Operations that change it take the
/// held [`HostLock`], so they cannot be called without it.
#[derive(Debug)]
pub struct HostDir {
    root: PathBuf,
    /// `None` when the host directory does not exist yet (no snapshots).
    dir: Option<Dir>,
}

/// A complete snapshot found on disk.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The tier directory it lives in.
    pub tier: Tier,
    /// Its directory name (`2025-01-16_02-00-00`).
    pub name: String,
    /// Full path of the snapshot directory (for messages and for programs that take paths;
    /// the engine itself opens it with [`HostDir::open_snapshot`]).
    pub path: PathBuf,
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// Its pin (`.hwc-backup/pin.json`), if any.
    pub pin: PinState,
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
    /// Opens the host directory `root` (`<destination>/<host>`) for reading. A missing host
    /// directory (or destination) means "no snapshots here"; callers that must tell the two
    /// apart check the destination themselves. A symlink or a file in its place is refused.
    pub fn open(root: &Path) -> Result<HostDir> {
        let (dest, name) = split(root)?;
        let dest = match Dir::open_trusted(dest) {
            Ok(d) => d,
            Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {
                return Ok(HostDir { root: root.to_path_buf(), dir: None })
            }
            Err(e) => return Err(e),
        };
        let dir = dest.try_open_dir(&name)?;
        Ok(HostDir { root: root.to_path_buf(), dir })
    }

    /// Opens the host directory `host` below the destination handle, creating it `0700`
    /// when it is missing: snapshots keep their sources' modes, so nothing in them may be
    /// reachable by the server's other users unless the administrator opens it.
    pub fn create(dest: &Dir, host: &Name) -> Result<HostDir> {
        let dir = dest.create_dir(host, 0o700)?;
        Ok(HostDir { root: dest.child_path(host), dir: Some(dir) })
    }

    /// The host directory itself (for messages).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The open host directory; an error when it does not exist.
    pub fn dir(&self) -> Result<&Dir> {
        self.dir
            .as_ref()
            .ok_or_else(|| Error::io("open directory", &self.root, std::io::Error::from(std::io::ErrorKind::NotFound)))
    }

    /// The directory of a tier, when it exists.
    pub fn tier(&self, tier: Tier) -> Result<Option<Dir>> {
        match &self.dir {
            Some(d) => d.try_open_dir(&Name::fixed(tier.as_str())),
            None => Ok(None),
        }
    }

    /// The directory of a tier, created when missing.
    pub fn tier_for_write(&self, _lock: &HostLock, tier: Tier) -> Result<Dir> {
        self.dir()?.create_dir(&Name::fixed(tier.as_str()), 0o755)
    }

    /// Where work in progress is built, created when missing.
    pub fn incomplete(&self, _lock: &HostLock) -> Result<Dir> {
        self.dir()?.create_dir(&Name::fixed(INCOMPLETE), 0o700)
    }

    /// Where expired snapshots wait for deletion, created when missing.
    pub fn trash_for_write(&self, _lock: &HostLock) -> Result<Dir> {
        self.dir()?.create_dir(&Name::fixed(TRASH), 0o700)
    }

    /// The trash, when it exists (emptying it needs no lock: everything in it is already
    /// out of every tier).
    pub fn trash(&self) -> Result<Option<Dir>> {
        match &self.dir {
            Some(d) => d.try_open_dir(&Name::fixed(TRASH)),
            None => Ok(None),
        }
    }

    /// Opens a snapshot found by [`HostDir::list`], tier and name, never through a symlink.
    pub fn open_snapshot(&self, s: &Snapshot) -> Result<Dir> {
        self.tier_of(s)?.open_dir(&name_of(&s.name)?)
    }

    /// The tier directory holding `s`, opened as [`HostDir::open_snapshot`] opens it.
    pub fn tier_of(&self, s: &Snapshot) -> Result<Dir> {
        self.tier(s.tier)?.ok_or_else(|| Error::Snapshot {
            name: s.id(),
            message: "its tier directory is gone (pruned meanwhile?)".into(),
        })
    }

    /// All complete snapshots, oldest first. A missing host directory means "none yet"; a
    /// tier that is a symlink or a file is refused.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let mut all = Vec::new();
        for tier in TIERS {
            let Some(dir) = self.tier(tier)? else { continue };
            for entry in dir.entries()? {
                let Some(name) = entry.name.to_str().map(str::to_owned) else { continue };
                if parse_name(&name).is_none() {
                    continue;
                }
                let path = dir.child_path(&entry.name);
                if entry.kind != rustix::fs::FileType::Directory {
                    tracing::warn!("skipping {}: not a directory", path.display());
                    continue;
                }
                // A directory without readable metadata is not a complete snapshot; listing
                // skips it rather than failing, so one damaged snapshot cannot hide the rest.
                match read_meta(&dir, &entry.name) {
                    Ok((meta, pin)) => all.push(Snapshot { tier, name, path, meta, pin }),
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
            return crate::store::clock::pick_latest(&all, self.latest_name().as_deref(), Timestamp::now())
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
                "no such snapshot under {}{} (see `hwc-backup restore --list`)",
                self.root.display(),
                nearest(&self.list()?, name)
            ))),
            n => Err(not_found(format!(
                "is ambiguous: {n} snapshots match ({}…); give the full name",
                matches.iter().take(3).map(Snapshot::id).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Checks every fixed name of the layout: tiers, `.incomplete` and `.trash` must be
    /// directories, `latest` a symlink into a tier, `.lock` a regular file. Anything else (a
    /// symlink planted by whoever can write the disk) is refused with an error naming it,
    /// before a writer touches anything. Writers run it through [`HostLock::acquire`].
    pub fn check(&self) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let dirs = TIERS.iter().map(|t| t.as_str()).chain([INCOMPLETE, TRASH]);
        for fixed in dirs {
            dir.try_open_dir(&Name::fixed(fixed))?;
        }
        let lock = Name::fixed(LOCK);
        if let Some(st) = dir.stat(&lock)? {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
                return Err(dir.unexpected(&lock, "a regular file"));
            }
        }
        self.latest().map(|_| ())
    }

    /// Where `latest` points, when it exists. Anything but a symlink of the form
    /// `TIER/NAME` is refused: `latest` is ours to replace only when it is one.
    pub fn latest(&self) -> Result<Option<String>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let name = Name::fixed(LATEST);
        let Some(target) = dir.read_link(&name)? else { return Ok(None) };
        let text = String::from_utf8_lossy(&target).into_owned();
        let ours = text
            .split_once('/')
            .is_some_and(|(tier, snap)| TIERS.iter().any(|t| t.as_str() == tier) && parse_name(snap).is_some());
        if !ours {
            return Err(Error::Unsafe {
                path: dir.child_path(&name),
                message: format!(
                    "is a symlink to {text}, not into a tier of this host directory; refusing to replace it \
                     (remove it and the next run recreates it)"
                ),
            });
        }
        Ok(Some(text))
    }

    /// Points `latest` at `target` (relative, e.g. `daily/NAME`) atomically: a new symlink is
    /// created beside it and renamed over the old one.
    pub fn set_latest(&self, _lock: &HostLock, target: &str) -> Result<()> {
        let dir = self.dir()?;
        self.latest()?; // refuses a `latest` that is not ours to replace
        let tmp = Name::fixed(".latest.tmp");
        dir.remove_file(&tmp)?;
        dir.symlink(target.as_bytes(), &tmp)?;
        dir.rename(&tmp, dir, &Name::fixed(LATEST))?;
        dir.sync()
    }

    /// The snapshot name `latest` points at (the last component of its target), if it is a
    /// symlink of ours.
    pub fn latest_name(&self) -> Option<String> {
        let target = self.latest().ok()??;
        target.rsplit('/').next().map(str::to_owned)
    }

    /// Points `latest` at the snapshot it stands for ([`crate::store::clock::pick_latest`]: the one
    /// it names, wherever pruning moved it, else the newest not dated in the future), or
    /// removes it when there is none.
    pub fn refresh_latest(&self, lock: &HostLock) -> Result<()> {
        let all = self.list()?;
        match crate::store::clock::pick_latest(&all, self.latest_name().as_deref(), Timestamp::now()).cloned() {
            Some(s) => {
                let want = s.id();
                if self.latest()?.as_deref() != Some(want.as_str()) {
                    self.set_latest(lock, &want)?;
                }
                Ok(())
            }
            None => {
                if self.latest()?.is_some() {
                    self.dir()?.remove_file(&Name::fixed(LATEST))?;
                }
                Ok(())
            }
        }
    }
}

/// For a name that looks like a date or time but matches no snapshot: the nearest snapshots
/// before and after it (names sort as their times), e.g. `; nearest: daily/2025-01-14_02-00-00
/// (before), daily/2025-01-16_02-00-00 (after)`. Empty for anything else.
fn nearest(all: &[Snapshot], name: &str) -> String {
    let bare = name.rsplit('/').next().unwrap_or(name);
    let datelike = bare.len() >= 4 && bare.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    if !datelike || all.is_empty() {
        return String::new();
    }
    let before = all.iter().filter(|s| s.name.as_str() < bare).max_by(|a, b| a.name.cmp(&b.name));
    let after = all.iter().filter(|s| s.name.as_str() > bare).min_by(|a, b| a.name.cmp(&b.name));
    let mut parts = Vec::new();
    if let Some(b) = before {
        parts.push(format!("{} (before)", b.id()));
    }
    if let Some(a) = after {
        parts.push(format!("{} (after)", a.id()));
    }
    format!("; nearest: {}", parts.join(", "))
}

/// A snapshot name as a [`Name`] (it comes from a directory listing or a user).
pub fn name_of(name: &str) -> Result<Name> {
    Name::new(name).map_err(|e| Error::Snapshot { name: name.to_string(), message: e.to_string() })
}

/// `(destination, host)` of a host directory path.
fn split(root: &Path) -> Result<(&Path, Name)> {
    Name::split_path(root)
        .ok_or_else(|| Error::config("destination", format!("{} does not name a host directory", root.display())))
}

/// Reads `NAME/.hwc-backup/meta.json` and its pin below a tier, never through a symlink.
fn read_meta(tier: &Dir, name: &Name) -> Result<(SnapshotMeta, PinState)> {
    let snap = tier.open_dir(name)?;
    let meta_dir = snap.open_dir(&Name::fixed(META_DIR))?;
    let file = Name::fixed(META_FILE);
    let path = meta_dir.child_path(&file);
    let text = meta_dir
        .read_file(&file, META_LIMIT)?
        .ok_or_else(|| Error::io("read", &path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    let meta = SnapshotMeta::from_json(&text, path)?;
    Ok((meta, crate::store::history::pin::read_in(&snap)))
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
