//! `diff`: what changed between two snapshots (or below one path in them).
//!
//! Both trees are walked once ([`super::walk`]), keeping only `stat` results. A path whose
//! entries are the same inode in both snapshots (a hard link made by the run: the file did
//! not change) is settled without another system call. Everything else is compared field by
//! field: type, then content (regular files: size, then the BLAKE3 hash each snapshot's
//! manifest records — a file is read only when a manifest lacks it; symlinks: the target;
//! devices: the device number), then metadata (permissions, owner, group, mtime, xattrs —
//! xattrs, ACLs included, are read only for the entries that differ).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use serde::Serialize;

use super::walk::{self, Visit};
use crate::error::{Error, Result};
use crate::fs::beneath::{self, DirCache};
use crate::fs::{fsops, Name};
use crate::store::layout::{HostDir, Snapshot};
use crate::store::manifest::{Hash, ManifestReader};
use crate::store::meta::{MANIFEST_FILE, META_DIR};

/// The type of an entry, as shown.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO.
    Fifo,
    /// A character or block device.
    Device,
    /// A socket or anything else.
    Other,
}

impl Kind {
    /// From a status.
    pub fn of(st: &Stat) -> Kind {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::CharacterDevice | FileType::BlockDevice => Kind::Device,
            _ => Kind::Other,
        }
    }

    /// `file`, `dir` …
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Device => "device",
            Kind::Other => "other",
        }
    }
}

/// What the walk keeps of one entry.
#[derive(Clone, Debug)]
pub struct Info {
    /// Type.
    pub kind: Kind,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: (i64, i64),
    /// Device and inode.
    pub id: (u64, u64),
    /// Device number of a device node.
    pub rdev: u64,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
}

impl Info {
    /// From a visit and its status (reads a symlink's target).
    pub fn of(v: &Visit, st: &Stat) -> Info {
        let kind = Kind::of(st);
        let target = (kind == Kind::Symlink)
            .then(|| rustix::fs::readlinkat(v.dir, v.name, Vec::new()).ok().map(|t| t.into_bytes()))
            .flatten();
        Info {
            kind,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            id: (st.st_dev, st.st_ino),
            rdev: st.st_rdev,
            target,
        }
    }
}

/// How a path changed.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// Content differs (a file's bytes, a symlink's target, a device's number).
    Modified,
    /// Same content; permissions, owner, group, mtime or xattrs differ.
    Metadata,
    /// A different type of entry (file → directory, directory → symlink …).
    Type,
}

impl ChangeKind {
    /// The one-character mark: `+`, `-`, `M`, `m`, `T`.
    pub fn mark(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'm',
            ChangeKind::Type => 'T',
        }
    }
}

/// One changed path.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The path as it was on the host (`/home/alice/notes.txt`).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// How it changed.
    pub change: ChangeKind,
    /// Its type in the newer snapshot (the older one's when removed).
    pub kind: Kind,
    /// Its type in the older snapshot, for a type change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_kind: Option<Kind>,
    /// Size in the newer snapshot (0 when removed).
    pub size: u64,
    /// Size in the older snapshot (0 when added).
    pub old_size: u64,
    /// For a modified or metadata change: which of `content`, `target`, `device`, `mode`,
    /// `owner`, `group`, `mtime`, `xattrs` differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// Counts and bytes of a diff.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Paths added.
    pub added: u64,
    /// Paths removed.
    pub removed: u64,
    /// Paths whose content changed.
    pub modified: u64,
    /// Paths whose metadata only changed.
    pub metadata: u64,
    /// Paths whose type changed.
    pub type_changed: u64,
    /// Bytes of the regular files added (including those that replaced another type).
    pub bytes_added: u64,
    /// Bytes of the regular files removed (including those another type replaced).
    pub bytes_removed: u64,
    /// Bytes of the modified files, in the newer snapshot.
    pub bytes_modified: u64,
    /// Entries that are the same inode in both (hard-linked, never read).
    pub unchanged_linked: u64,
    /// Files read because a manifest did not list them.
    pub files_hashed: u64,
}

/// A whole diff.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// The older snapshot (`daily/NAME`).
    pub from: String,
    /// The newer snapshot.
    pub to: String,
    /// The path compared (`/` for everything).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Every changed path, in path order.
    pub changes: Vec<Change>,
    /// The counts.
    pub summary: Summary,
}

/// One side of a diff: a snapshot opened through the host directory, its entries in walk
/// order and by path.
struct Side {
    dir: crate::fs::Dir,
    entries: Vec<(Vec<u8>, Info)>,
    index: HashMap<Vec<u8>, usize>,
    manifest: Option<HashMap<Vec<u8>, Hash>>,
}

impl Side {
    fn load(host: &HostDir, s: &Snapshot, rel: &[u8]) -> Result<Side> {
        let dir = host.open_snapshot(s)?;
        let mut entries = Vec::new();
        walk::walk_path(dir.fd(), &s.path, rel, &mut |v| {
            entries.push((v.rel.to_vec(), Info::of(v, &v.stat()?)));
            Ok(true)
        })?;
        let index = entries.iter().enumerate().map(|(i, (p, _))| (p.clone(), i)).collect();
        Ok(Side { dir, entries, index, manifest: None })
    }

    /// The manifest's hashes of the files below `rel` (read once, when first needed; a
    /// missing or unreadable manifest gives none, and files are then read).
    fn hash_of(&mut self, rel: &[u8], prefix: &[u8]) -> Option<Hash> {
        if self.manifest.is_none() {
            let mut map = HashMap::new();
            // A manifest that is missing, not a regular file (a planted symlink is never
            // followed) or unreadable leaves the hashes unknown: files are then read.
            let opened = self.dir.open_dir(&Name::fixed(META_DIR)).and_then(|meta| {
                let name = Name::fixed(MANIFEST_FILE);
                let f = meta.open_read(&name)?;
                Ok(f.map(|f| ManifestReader::from_file(f, meta.child_path(&name))))
            });
            match opened {
                Ok(Some(mut r)) => loop {
                    match r.next_entry() {
                        Ok(Some(e)) => {
                            let mut p = e.dir;
                            walk::push(&mut p, &e.name);
                            if below(&p, prefix) {
                                map.insert(p, e.hash);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("{e}; comparing the rest by reading the files");
                            break;
                        }
                    }
                },
                Ok(None) => {
                    tracing::warn!("{}: no manifest; comparing by reading the files", self.dir.path().display())
                }
                Err(e) => tracing::warn!("{e}; comparing by reading the files"),
            }
            self.manifest = Some(map);
        }
        self.manifest.as_ref().and_then(|m| m.get(rel).copied())
    }
}

/// Whether `p` is `prefix` or below it.
fn below(p: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty() || (p.starts_with(prefix) && (p.len() == prefix.len() || p[prefix.len()] == b'/'))
}

/// Compares `old` with `new` below `path` (`/` for the whole snapshots).
pub fn diff(host: &HostDir, old: &Snapshot, new: &Snapshot, path: &Path) -> Result<Diff> {
    let rel = walk::rel_of(path)?;
    // Both trees are walked at once.
    let (a, b) = std::thread::scope(|scope| {
        let other = scope.spawn(|| Side::load(host, new, &rel));
        let a = Side::load(host, old, &rel);
        (a, other.join().expect("the walk does not panic"))
    });
    let (mut a, mut b) = (a?, b?);
    let mut changes = Vec::new();
    let mut sum = Summary::default();
    let a_fd = a.dir.fd().try_clone_to_owned().map_err(|e| Error::io("duplicate descriptor of", &old.path, e))?;
    let b_fd = b.dir.fd().try_clone_to_owned().map_err(|e| Error::io("duplicate descriptor of", &new.path, e))?;
    let mut a_dirs = DirCache::new(a_fd.as_fd());
    let mut b_dirs = DirCache::new(b_fd.as_fd());
    let mut buf = Vec::new();
    let shown = |p: &[u8]| PathBuf::from("/").join(std::ffi::OsStr::from_bytes(p));
    let b_entries = std::mem::take(&mut b.entries);
    for (p, bi) in &b_entries {
        let Some(&ai) = a.index.get(p) else {
            if bi.kind == Kind::File {
                sum.bytes_added += bi.size;
            }
            sum.added += 1;
            changes.push(change(shown(p), ChangeKind::Added, bi, None, Vec::new()));
            continue;
        };
        let ao = a.entries[ai].1.clone();
        if ao.id == bi.id {
            sum.unchanged_linked += 1;
            continue;
        }
        if ao.kind != bi.kind {
            sum.type_changed += 1;
            if bi.kind == Kind::File {
                sum.bytes_added += bi.size;
            }
            if ao.kind == Kind::File {
                sum.bytes_removed += ao.size;
            }
            changes.push(change(shown(p), ChangeKind::Type, bi, Some(&ao), Vec::new()));
            continue;
        }
        let mut what = Vec::new();
        match bi.kind {
            Kind::File => {
                let same = ao.size == bi.size && {
                    let ha = match a.hash_of(p, &rel) {
                        Some(h) => Some(h),
                        None => hash_at(&mut a_dirs, p, &mut buf).inspect(|_| sum.files_hashed += 1),
                    };
                    let hb = match b.hash_of(p, &rel) {
                        Some(h) => Some(h),
                        None => hash_at(&mut b_dirs, p, &mut buf).inspect(|_| sum.files_hashed += 1),
                    };
                    ha.is_some() && ha == hb
                };
                if !same {
                    what.push("content");
                }
            }
            Kind::Symlink if ao.target != bi.target => what.push("target"),
            Kind::Device if ao.rdev != bi.rdev => what.push("device"),
            _ => {}
        }
        let content = !what.is_empty();
        if ao.mode & 0o7777 != bi.mode & 0o7777 && bi.kind != Kind::Symlink {
            what.push("mode");
        }
        if ao.uid != bi.uid {
            what.push("owner");
        }
        if ao.gid != bi.gid {
            what.push("group");
        }
        if ao.mtime != bi.mtime {
            what.push("mtime");
        }
        if xattrs_at(&mut a_dirs, p) != xattrs_at(&mut b_dirs, p) {
            what.push("xattrs");
        }
        if content {
            sum.modified += 1;
            sum.bytes_modified += if bi.kind == Kind::File { bi.size } else { 0 };
            changes.push(change(shown(p), ChangeKind::Modified, bi, Some(&ao), what));
        } else if !what.is_empty() {
            sum.metadata += 1;
            changes.push(change(shown(p), ChangeKind::Metadata, bi, Some(&ao), what));
        }
    }
    let b_index = std::mem::take(&mut b.index);
    for (p, ai) in &a.entries {
        if !b_index.contains_key(p) {
            if ai.kind == Kind::File {
                sum.bytes_removed += ai.size;
            }
            sum.removed += 1;
            let mut c = change(shown(p), ChangeKind::Removed, ai, None, Vec::new());
            (c.size, c.old_size) = (0, ai.size);
            changes.push(c);
        }
    }
    changes
        .sort_by(|x, y| crate::store::manifest::cmp_dir(x.path.as_os_str().as_bytes(), y.path.as_os_str().as_bytes()));
    Ok(Diff { from: old.id(), to: new.id(), path: shown(&rel), changes, summary: sum })
}

fn change(path: PathBuf, kind: ChangeKind, new: &Info, old: Option<&Info>, what: Vec<&'static str>) -> Change {
    let type_change = kind == ChangeKind::Type;
    Change {
        path,
        change: kind,
        kind: new.kind,
        old_kind: old.filter(|_| type_change).map(|o| o.kind),
        size: if new.kind == Kind::File { new.size } else { 0 },
        old_size: old.filter(|o| o.kind == Kind::File).map_or(0, |o| o.size),
        what,
    }
}

/// `(directory, name)` of a relative path.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    }
}

/// Hashes the regular file `rel` below the cache's root, never through a symlink.
pub(crate) fn hash_at(dirs: &mut DirCache, rel: &[u8], buf: &mut Vec<u8>) -> Option<Hash> {
    let (d, n) = split(rel);
    let dir = dirs.dir(d).ok()?;
    let name = beneath::component(n).ok()?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir, &name, flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    fsops::hash_file(&std::fs::File::from(fd), buf).ok()
}

/// The sorted xattrs of `rel` (an error reads as none: both sides then compare alike only
/// when both fail).
fn xattrs_at(dirs: &mut DirCache, rel: &[u8]) -> Option<fsops::Xattrs> {
    let (d, n) = split(rel);
    let dir: BorrowedFd = dirs.dir(d).ok()?;
    let name = CString::new(n).ok()?;
    let mut x = fsops::read_xattrs_at(dir, &name).ok()?;
    x.sort();
    Some(x)
}
