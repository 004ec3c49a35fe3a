//! `diff`: what changed between two snapshots (or below one path in them).
//!
//! Both trees are walked once ([`crate::store::walk`]), keeping only `stat` results. A path whose
//! entries are the same inode in both snapshots (a hard link made by the run: the file did
//! not change) is settled without another system call. Everything else is compared field by
//! field: type, then content (regular files: size, then the BLAKE3 hash each snapshot's
//! manifest records — a file is read only when a manifest lacks it; symlinks: the target;
//! devices: the device number), then metadata (permissions, owner, group, mtime, xattrs —
//! xattrs, ACLs included, are read only for the entries that differ).

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fs::beneath::{self, DirCache};
use crate::fs::{fsops, Name};
use crate::store::layout::{HostDir, Snapshot};
use crate::store::manifest::{Entry, Hash, ManifestReader};
use crate::store::meta::{MANIFEST_FILE, META_DIR};
use crate::store::walk::{self, Visit};

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
/// order (the manifest's order: [`crate::store::manifest::cmp_key`] of directory and name),
/// and its manifest, scanned forward as the diff goes.
struct Side {
    dir: crate::fs::Dir,
    entries: Vec<(Vec<u8>, Info)>,
    manifest: Option<Scan>,
}

impl Side {
    fn load(host: &HostDir, s: &Snapshot, rel: &[u8]) -> Result<Side> {
        let dir = host.open_snapshot(s)?;
        let mut entries = Vec::new();
        walk::walk_path(dir.fd(), &s.path, rel, &mut |v| {
            entries.push((v.rel.to_vec(), Info::of(v, &v.stat()?)));
            Ok(true)
        })?;
        Ok(Side { dir, entries, manifest: None })
    }

    /// The manifest's hash of the file `rel`. Lookups come in walk order, so the manifest
    /// (opened when first needed) is read forward as a stream, one line of at most
    /// `manifest::MAX_LINE` bytes at a time: whoever writes the disk can plant a manifest of
    /// many gigabytes, which must not be held in memory. A manifest that is missing, not a
    /// regular file (a planted symlink is never followed) or unreadable knows nothing: files
    /// are then read.
    fn hash_of(&mut self, rel: &[u8]) -> Option<Hash> {
        let dir = &self.dir;
        let scan = self.manifest.get_or_insert_with(|| {
            let opened = dir.open_dir(&Name::fixed(META_DIR)).and_then(|meta| {
                let name = Name::fixed(MANIFEST_FILE);
                Ok(meta.open_read(&name)?.map(|f| ManifestReader::from_file(f, meta.child_path(&name))))
            });
            match opened {
                Ok(Some(reader)) => Scan::new(reader),
                Ok(None) => {
                    tracing::warn!("{}: no manifest; comparing by reading the files", dir.path().display());
                    Scan::empty()
                }
                Err(e) => {
                    tracing::warn!("{e}; comparing by reading the files");
                    Scan::empty()
                }
            }
        });
        let (d, n) = split(rel);
        scan.find(d, n)
    }
}

/// A manifest read forward by keys in walk order, holding one entry: the first not yet
/// passed.
struct Scan {
    reader: Option<ManifestReader>,
    current: Option<Entry>,
}

impl Scan {
    fn new(reader: ManifestReader) -> Scan {
        let mut scan = Scan { reader: Some(reader), current: None };
        scan.advance();
        scan
    }

    fn empty() -> Scan {
        Scan { reader: None, current: None }
    }

    fn find(&mut self, dir: &[u8], name: &[u8]) -> Option<Hash> {
        loop {
            let cur = self.current.as_ref()?;
            match crate::store::manifest::cmp_key(&cur.dir, &cur.name, dir, name) {
                std::cmp::Ordering::Less => self.advance(),
                std::cmp::Ordering::Equal => return Some(cur.hash),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }

    /// Reads the next entry, skipping lines that are not one (as verify reports them). A read
    /// error, a line longer than `manifest::MAX_LINE` included, ends the reading: the files
    /// after it are read.
    fn advance(&mut self) {
        let Some(reader) = self.reader.as_mut() else { return };
        let mut entry = self.current.take().unwrap_or(Entry { dir: Vec::new(), name: Vec::new(), hash: [0; 32] });
        loop {
            match reader.next_into(&mut entry) {
                Ok(true) => {
                    self.current = Some(entry);
                    return;
                }
                Ok(false) => break,
                Err(Error::Format { .. }) => continue,
                Err(e) => {
                    tracing::warn!("{e}; comparing the rest by reading the files");
                    break;
                }
            }
        }
        self.reader = None;
    }
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
    let a_entries = std::mem::take(&mut a.entries);
    let b_entries = std::mem::take(&mut b.entries);
    // Both lists are in the same total order: one merge pass pairs them.
    let (mut i, mut j) = (0, 0);
    while i < a_entries.len() || j < b_entries.len() {
        let order = match (a_entries.get(i), b_entries.get(j)) {
            (Some((pa, _)), Some((pb, _))) => {
                let ((da, na), (db, nb)) = (split(pa), split(pb));
                crate::store::manifest::cmp_key(da, na, db, nb)
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        if order == std::cmp::Ordering::Less {
            let (p, ai) = &a_entries[i];
            i += 1;
            if ai.kind == Kind::File {
                sum.bytes_removed += ai.size;
            }
            sum.removed += 1;
            let mut c = change(shown(p), ChangeKind::Removed, ai, None, Vec::new());
            (c.size, c.old_size) = (0, ai.size);
            changes.push(c);
            continue;
        }
        let (p, bi) = &b_entries[j];
        j += 1;
        if order == std::cmp::Ordering::Greater {
            if bi.kind == Kind::File {
                sum.bytes_added += bi.size;
            }
            sum.added += 1;
            changes.push(change(shown(p), ChangeKind::Added, bi, None, Vec::new()));
            continue;
        }
        let ao = &a_entries[i].1;
        i += 1;
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
            changes.push(change(shown(p), ChangeKind::Type, bi, Some(ao), Vec::new()));
            continue;
        }
        let mut what = Vec::new();
        match bi.kind {
            Kind::File => {
                let same = ao.size == bi.size && {
                    let ha = match a.hash_of(p) {
                        Some(h) => Some(h),
                        None => hash_at(&mut a_dirs, p, &mut buf).inspect(|_| sum.files_hashed += 1),
                    };
                    let hb = match b.hash_of(p) {
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
            changes.push(change(shown(p), ChangeKind::Modified, bi, Some(ao), what));
        } else if !what.is_empty() {
            sum.metadata += 1;
            changes.push(change(shown(p), ChangeKind::Metadata, bi, Some(ao), what));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::ManifestWriter;

    #[test]
    fn the_manifest_scan_finds_keys_in_walk_order_escaped_ones_too() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("m");
        let mut w = ManifestWriter::create(&path).unwrap();
        let h = |b: u8| [b; 32];
        w.add(b"a", b"we\nird", &h(2)).unwrap();
        w.add(b"a", b"x", &h(1)).unwrap();
        w.add(b"a/b", b"y", &h(3)).unwrap();
        w.add(b"a-c", b"z", &h(4)).unwrap();
        w.finish().unwrap();
        let mut scan = Scan::new(ManifestReader::open(&path).unwrap());
        assert_eq!(scan.find(b"a", b"missing"), None);
        assert_eq!(scan.find(b"a", b"we\nird"), Some(h(2)));
        assert_eq!(scan.find(b"a", b"x"), Some(h(1)));
        assert_eq!(scan.find(b"a/b", b"y"), Some(h(3)));
        assert_eq!(scan.find(b"a-c", b"z"), Some(h(4)));
        assert_eq!(scan.find(b"zzz", b"z"), None);
        let mut empty = Scan::empty();
        assert_eq!(empty.find(b"a", b"x"), None);
    }

    #[test]
    fn the_manifest_scan_skips_foreign_lines_and_stops_at_an_endless_one() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("m");
        let line = |h: &str, p: &str| format!("{}  {p}\n", h.repeat(64));
        let text = [line("1", "a/x"), "not a line of ours\n".into(), line("2", "a/y")].concat();
        let endless = vec![b'z'; crate::store::manifest::MAX_LINE + 1];
        std::fs::write(&path, [text.as_bytes(), &endless, line("3", "b/z").as_bytes()].concat()).unwrap();
        let mut scan = Scan::new(ManifestReader::open(&path).unwrap());
        assert_eq!(scan.find(b"a", b"x"), Some([0x11; 32]));
        assert_eq!(scan.find(b"a", b"y"), Some([0x22; 32]), "the foreign line is skipped");
        assert_eq!(scan.find(b"b", b"z"), None, "nothing is believed after a line over the cap");
    }
}
