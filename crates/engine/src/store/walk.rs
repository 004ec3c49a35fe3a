//! The one walk of a snapshot tree, for everything that reads one (verify's search for
//! unexpected files, and history: `diff`, `find`, `du`): fd-relative, never through a symlink,
//! with an explicit stack and one open directory.
//!
//! A child directory is opened by name with `O_NOFOLLOW | O_DIRECTORY` from its parent; the
//! way back up is `..`, checked against the parent's device and inode, so a directory moved
//! during the walk stops it with an error instead of walking elsewhere. Entries of a
//! directory are visited in name order, then its subdirectories depth first.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Stat};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fs::tree::{self, At, Entered, Parent, Paths, Tree};
use crate::fs::{beneath, DIR_FLAGS};
use crate::store::meta::META_DIR;

/// One entry met by the walk.
pub struct Visit<'a> {
    /// The open directory that holds it.
    pub dir: BorrowedFd<'a>,
    /// Its name there.
    pub name: &'a CStr,
    /// Its path relative to the snapshot root (no leading `/`).
    pub rel: &'a [u8],
    /// Its type, not following a symlink.
    pub kind: FileType,
    /// Its inode number as the directory listing gives it (`d_ino`; `st_ino` when the walk
    /// read its status).
    pub ino: u64,
    /// The device of the directory that holds it (the entry's own, for anything but the
    /// root of a filesystem mounted below).
    pub dev: u64,
    /// Its status, not following a symlink, when the walk was asked to read it
    /// ([`Opts::stat`]); [`Visit::stat`] reads it otherwise.
    pub st: Option<&'a Stat>,
}

impl<'a> Visit<'a> {
    /// The entry a walk of a path starts at ([`find_start`]).
    pub fn of_start(start: &'a Start, kind: FileType) -> Visit<'a> {
        let (ino, dev) = (start.st.st_ino, start.st.st_dev);
        Visit { dir: start.parent.as_fd(), name: &start.name, rel: &start.rel, kind, ino, dev, st: Some(&start.st) }
    }

    /// Its type.
    pub fn kind(&self) -> FileType {
        self.kind
    }

    /// Its status (read now unless the walk read it already).
    pub fn stat(&self) -> Result<Stat> {
        match self.st {
            Some(st) => Ok(*st),
            None => rustix::fs::statat(self.dir, self.name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::io("inspect", PathBuf::from(OsStr::from_bytes(self.rel)), e.into())),
        }
    }
}

/// What a walk reads.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    /// Skip the snapshot's own `.hwc-backup/` at its root.
    pub skip_meta: bool,
    /// `stat` every entry (otherwise the type comes from the directory listing, and
    /// [`Visit::stat`] reads the status of the entries that need it).
    pub stat: bool,
}

impl Opts {
    /// Every entry of the tree with its status, without the snapshot's metadata.
    pub const TREE: Opts = Opts { skip_meta: true, stat: true };
    /// Every entry of the tree, with the type and inode number its directory lists, without
    /// the snapshot's metadata.
    pub const NAMES: Opts = Opts { skip_meta: true, stat: false };
}

/// `rel` joined onto the snapshot path, for messages.
pub fn show(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

/// Walks the directory `start` (open, at `prefix` relative to the snapshot root) and calls
/// `visit` for every entry below it; for a directory, `visit` returns whether to go into it.
/// At the snapshot root (`prefix` empty) the snapshot's own `.hwc-backup/` is skipped.
/// `root_path` names the snapshot in messages.
pub fn walk(
    start: BorrowedFd,
    prefix: &[u8],
    root_path: &Path,
    visit: &mut dyn FnMut(&Visit) -> Result<bool>,
) -> Result<()> {
    walk_with(start, prefix, root_path, Opts::TREE, visit)
}

/// [`walk`] with options: the snapshot's `.hwc-backup/` too (to count everything a snapshot
/// holds), or without a `stat` of every entry (to match names).
pub fn walk_with(
    start: BorrowedFd,
    prefix: &[u8],
    root_path: &Path,
    opts: Opts,
    visit: &mut dyn FnMut(&Visit) -> Result<bool>,
) -> Result<()> {
    let mut rel: Vec<u8> = prefix.to_vec();
    let cur = beneath::reopen(start).map_err(|e| Error::io("open directory", show(root_path, &rel), e))?;
    let subdirs = scan(cur.as_fd(), &mut rel, root_path, opts, visit)?;
    let mut walk = SnapshotTree { root_path, opts, visit, rel: Vec::new() };
    let start = Entered { open: cur, info: (), subdirs };
    // One open directory: a snapshot walk goes back up through `..`, checked.
    tree::depth_first(&mut walk, start, Paths::new(rel, Vec::new()), 1)
}

/// A snapshot's tree as [`tree::depth_first`] walks it (the path below the snapshot root in
/// `Paths::a`): each directory's entries are visited when it is entered.
struct SnapshotTree<'a, 'v> {
    root_path: &'a Path,
    opts: Opts,
    visit: &'a mut (dyn FnMut(&Visit) -> Result<bool> + 'v),
    /// The entries' paths as a directory is scanned (one buffer for the whole walk).
    rel: Vec<u8>,
}

impl Tree for SnapshotTree<'_, '_> {
    type Open = OwnedFd;
    type Closed = (u64, u64);
    type Info = ();

    fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
        let rel = &paths.a;
        let cur = match rustix::fs::openat(parent.open.as_fd(), name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // Removed meanwhile: nothing to walk.
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(Error::Unsafe {
                    path: show(self.root_path, rel),
                    message: "was replaced by something that is not a directory during the walk".into(),
                })
            }
            Err(e) => return Err(Error::io("open directory", show(self.root_path, rel), e.into())),
        };
        self.rel.clone_from(rel);
        let subdirs = scan(cur.as_fd(), &mut self.rel, self.root_path, self.opts, self.visit)?;
        Ok(Some(Entered { open: cur, info: (), subdirs }))
    }

    fn leave(&mut self, _: OwnedFd, (): (), _: Option<Parent<'_, Self>>, _: &Paths) -> Result<()> {
        Ok(())
    }

    fn close(&mut self, open: OwnedFd, (): &(), _: &OwnedFd, at: At) -> Result<(u64, u64)> {
        crate::fs::identity(open.as_fd()).map_err(|e| Error::io("inspect", show(self.root_path, at.a), e))
    }

    fn reopen(&mut self, child: &OwnedFd, closed: (u64, u64), (): &(), at: At) -> Result<OwnedFd> {
        let path = || show(self.root_path, at.a);
        crate::fs::reopen_parent(child.as_fd(), closed)
            .map_err(|e| Error::io("open directory", path(), e))?
            .ok_or_else(|| Error::Unsafe { path: path(), message: "was moved during the walk".into() })
    }
}

/// Appends `/name` (or `name` at the root) to a relative path.
pub fn push(rel: &mut Vec<u8>, name: &[u8]) {
    if !rel.is_empty() {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
}

/// Visits every entry of one directory in name order; returns the subdirectories to enter.
fn scan(
    dir: BorrowedFd,
    rel: &mut Vec<u8>,
    root: &Path,
    opts: Opts,
    visit: &mut dyn FnMut(&Visit) -> Result<bool>,
) -> Result<Vec<CString>> {
    let at_root = opts.skip_meta && rel.is_empty();
    let read_err = |e: Errno, rel: &[u8]| Error::io("read directory", show(root, rel), e.into());
    let dev = rustix::fs::fstat(dir).map_err(|e| Error::io("inspect", show(root, rel), e.into()))?.st_dev;
    // The names are kept in one buffer, each with its NUL, and sorted by their place in it:
    // one allocation per directory instead of one per entry (a verify of many snapshots lists
    // millions of entries).
    let mut arena: Vec<u8> = Vec::new();
    let mut names: Vec<(std::ops::Range<usize>, FileType, u64)> = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(|e| read_err(e, rel))? {
        let entry = entry.map_err(|e| read_err(e, rel))?;
        let name = entry.file_name();
        if name == c"." || name == c".." || (at_root && name.to_bytes() == META_DIR.as_bytes()) {
            continue;
        }
        let start = arena.len();
        arena.extend_from_slice(name.to_bytes_with_nul());
        names.push((start..arena.len(), entry.file_type(), entry.ino()));
    }
    names.sort_unstable_by(|a, b| arena[a.0.clone()].cmp(&arena[b.0.clone()]));
    let base = rel.len();
    let mut subdirs = Vec::new();
    for (range, kind, ino) in names {
        let name = CStr::from_bytes_with_nul(&arena[range]).expect("a name from the listing, with its NUL");
        rel.truncate(base);
        push(rel, name.to_bytes());
        let st = if opts.stat || kind == FileType::Unknown {
            match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(Error::io("inspect", show(root, rel), e.into())),
            }
        } else {
            None
        };
        let kind = st.as_ref().map_or(kind, |st| FileType::from_raw_mode(st.st_mode));
        let (ino, dev) = st.as_ref().map_or((ino, dev), |st| (st.st_ino, st.st_dev));
        let v = Visit { dir, name, rel, kind, ino, dev, st: st.as_ref() };
        let descend = visit(&v)?;
        if descend && kind == FileType::Directory {
            subdirs.push(name.to_owned());
        }
    }
    rel.truncate(base);
    Ok(subdirs)
}

/// Where a walk of `PATH` (as it was on the host, e.g. `/home/alice`) starts inside an open
/// snapshot: the entry itself (its directory, name and status), or `None` when the snapshot
/// does not hold it. A symlink on the way (`/home/link/x` with `link -> /etc`) is refused,
/// naming it; the last component itself may be anything.
pub struct Start {
    /// The directory holding the entry.
    pub parent: OwnedFd,
    /// Its name.
    pub name: CString,
    /// Its relative path.
    pub rel: Vec<u8>,
    /// Its status.
    pub st: Stat,
}

/// The relative form of an absolute path given by a user: `/home/alice/` → `home/alice`;
/// `.`, `..` and empty components are refused.
pub fn rel_of(path: &Path) -> Result<Vec<u8>> {
    let bytes = path.as_os_str().as_bytes();
    if !bytes.starts_with(b"/") {
        return Err(Error::config("PATH", format!("{} is not an absolute path", path.display())));
    }
    let parts: Vec<&[u8]> = bytes.split(|&c| c == b'/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == b"." || *c == b"..") {
        return Err(Error::config("PATH", format!("{} contains `.` or `..`", path.display())));
    }
    Ok(parts.join(&b'/'))
}

/// Finds `rel` (from [`rel_of`], not empty) below the open snapshot `snap`.
pub fn find_start(snap: BorrowedFd, snap_path: &Path, rel: &[u8]) -> Result<Option<Start>> {
    let (dir_part, name) = match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let parent = if dir_part.is_empty() {
        beneath::reopen(snap).map_err(|e| Error::io("open directory", snap_path, e))?
    } else {
        match beneath::open_dir(snap, dir_part) {
            Ok(fd) => fd,
            Err(r) if r.is_link() => {
                return Err(Error::Unsafe {
                    path: show(snap_path, &r.at),
                    message: format!(
                        "/{} is below a symlink in the snapshot; it is not followed",
                        String::from_utf8_lossy(rel)
                    ),
                })
            }
            Err(r) => match &r.why {
                beneath::Why::Io(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                beneath::Why::NotDirectory => return Ok(None),
                _ => return Err(Error::io("open directory", show(snap_path, &r.at), std::io::Error::from(r))),
            },
        }
    };
    let name = beneath::component(name).map_err(|e| Error::io("open", show(snap_path, rel), e))?;
    match rustix::fs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Start { parent, name, rel: rel.to_vec(), st })),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(Error::io("inspect", show(snap_path, rel), e.into())),
    }
}

/// Walks what `rel` names in an open snapshot: the snapshot (empty `rel`), or the entry and,
/// for a directory, everything below it. Nothing is visited when the snapshot lacks it.
pub fn walk_path(
    snap: BorrowedFd,
    snap_path: &Path,
    rel: &[u8],
    visit: &mut dyn FnMut(&Visit) -> Result<bool>,
) -> Result<()> {
    if rel.is_empty() {
        return walk(snap, b"", snap_path, visit);
    }
    let Some(start) = find_start(snap, snap_path, rel)? else { return Ok(()) };
    let kind = FileType::from_raw_mode(start.st.st_mode);
    let v = Visit::of_start(&start, kind);
    if visit(&v)? && kind == FileType::Directory {
        let fd = match rustix::fs::openat(start.parent.as_fd(), &start.name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => return Err(Error::io("open directory", show(snap_path, rel), e.into())),
        };
        walk(fd.as_fd(), rel, snap_path, visit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_in_order_skips_metadata_and_never_follows_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let snap = t.path().join("snap");
        std::fs::create_dir_all(snap.join(".hwc-backup")).unwrap();
        std::fs::create_dir_all(snap.join("a/b")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        std::fs::write(t.path().join("outside/secret"), "x").unwrap();
        std::fs::write(snap.join("a/z"), "1").unwrap();
        std::fs::write(snap.join("a/b/c"), "2").unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), snap.join("a/link")).unwrap();
        let fd = rustix::fs::open(&snap, DIR_FLAGS, Mode::empty()).unwrap();
        let mut seen = Vec::new();
        walk(fd.as_fd(), b"", &snap, &mut |v| {
            seen.push(String::from_utf8_lossy(v.rel).into_owned());
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, ["a", "a/b", "a/link", "a/z", "a/b/c"]);
        let mut below = Vec::new();
        walk_path(fd.as_fd(), &snap, b"a/b", &mut |v| {
            below.push(String::from_utf8_lossy(v.rel).into_owned());
            Ok(true)
        })
        .unwrap();
        assert_eq!(below, ["a/b", "a/b/c"]);
        let e = walk_path(fd.as_fd(), &snap, b"a/link/secret", &mut |_| Ok(true)).unwrap_err();
        assert!(e.to_string().contains("below a symlink"), "{e}");
        assert!(find_start(fd.as_fd(), &snap, b"a/missing/x").unwrap().is_none());
        assert_eq!(rel_of(Path::new("/home/alice/")).unwrap(), b"home/alice");
        assert!(rel_of(Path::new("/home/../etc")).is_err());
        assert!(rel_of(Path::new("home")).is_err());
    }

    #[test]
    fn walks_twenty_thousand_levels_with_one_open_directory() {
        const DEPTH: usize = 20_000;
        let t = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let root = rustix::fs::open(t.path(), DIR_FLAGS, Mode::empty()).unwrap();
        let mut cur = beneath::reopen(root.as_fd()).unwrap();
        for _ in 0..DEPTH {
            rustix::fs::mkdirat(&cur, c"d", Mode::from_raw_mode(0o755)).unwrap();
            cur = rustix::fs::openat(&cur, c"d", DIR_FLAGS, Mode::empty()).unwrap();
        }
        let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::CLOEXEC;
        drop(rustix::fs::openat(&cur, c"f", flags, Mode::from_raw_mode(0o644)).unwrap());
        drop(cur);
        let (mut entries, mut deepest) = (0usize, 0usize);
        walk(root.as_fd(), b"", t.path(), &mut |v| {
            entries += 1;
            deepest = deepest.max(v.rel.len());
            Ok(true)
        })
        .unwrap();
        assert_eq!(entries, DEPTH + 1);
        assert_eq!(deepest, DEPTH * 2 + 1, "the file's path is named in full");
        // Remove the chain bottom up, one descriptor at a time.
        let mut cur = beneath::reopen(root.as_fd()).unwrap();
        let mut depth = 0;
        while let Ok(next) = rustix::fs::openat(&cur, c"d", DIR_FLAGS, Mode::empty()) {
            cur = next;
            depth += 1;
        }
        rustix::fs::unlinkat(&cur, c"f", AtFlags::empty()).unwrap();
        for _ in 0..depth {
            cur = rustix::fs::openat(&cur, c"..", DIR_FLAGS, Mode::empty()).unwrap();
            rustix::fs::unlinkat(&cur, c"d", AtFlags::REMOVEDIR).unwrap();
        }
    }
}
