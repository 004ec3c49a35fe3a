//! Opening paths below an open directory, one component per system call, never following a
//! symlink and never going above it.
//!
//! A path in a snapshot can be far longer than `PATH_MAX` (the snapshot walk works on
//! `(directory fd, name)` pairs and stores whatever the source holds), and a symlink stored in
//! a snapshot points at the live system, not into the snapshot. So whatever reads a snapshot
//! by a path of its own (the manifest's, a user's) resolves it here: each component is opened
//! with `O_NOFOLLOW` relative to its parent, and the parent is closed as soon as the child is
//! open, so at most two descriptors are held whatever the depth.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

/// Flags for a directory opened on the way down.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The name of one component as a C string; `.`, `..`, empty names and NUL bytes are refused
/// (a path from a manifest or a user never needs them to stay below the root).
pub fn component(name: &[u8]) -> io::Result<CString> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "`.`, `..` or an empty path component"));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))
}

/// A new descriptor for the directory `dir` itself.
pub fn reopen(dir: BorrowedFd) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, c".", dir_flags(), Mode::empty())?)
}

/// Opens the directory `rel` (components separated by `/`) below `from`. A symlink or a
/// non-directory on the way fails (`ELOOP`/`ENOTDIR`); so does `..`.
pub fn open_dir(from: BorrowedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for name in rel.split(|&c| c == b'/').filter(|n| !n.is_empty()) {
        let name = component(name)?;
        let parent = cur.as_ref().map_or(from, |f| f.as_fd());
        let next = rustix::fs::openat(parent, &name, dir_flags(), Mode::empty())?;
        cur = Some(next); // the parent is closed here
    }
    match cur {
        Some(fd) => Ok(fd),
        None => reopen(from),
    }
}

/// Remembers the last directory opened below a root, so that a stream of paths in walk order
/// (the manifest's) opens each directory once and a child relative to its parent.
pub struct DirCache<'a> {
    root: BorrowedFd<'a>,
    last: Option<(Vec<u8>, OwnedFd)>,
}

impl<'a> DirCache<'a> {
    /// A cache below `root`.
    pub fn new(root: BorrowedFd<'a>) -> DirCache<'a> {
        DirCache { root, last: None }
    }

    /// The directory `rel` below the root (see [`open_dir`]).
    pub fn dir(&mut self, rel: &[u8]) -> io::Result<BorrowedFd<'_>> {
        let reuse = matches!(&self.last, Some((p, _)) if p == rel);
        if !reuse {
            let fd = match &self.last {
                // A descendant of the last directory: open only the rest.
                Some((p, fd))
                    if rel.len() > p.len() && rel.starts_with(p) && (p.is_empty() || rel[p.len()] == b'/') =>
                {
                    open_dir(fd.as_fd(), &rel[p.len()..])
                }
                _ => open_dir(self.root, rel),
            };
            match fd {
                Ok(fd) => self.last = Some((rel.to_vec(), fd)),
                Err(e) => {
                    self.last = None;
                    return Err(e);
                }
            }
        }
        Ok(self.last.as_ref().expect("set above").1.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_below_and_refuses_symlinks_and_dotdot() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        std::os::unix::fs::symlink("/", t.path().join("a/up")).unwrap();
        let root = rustix::fs::open(t.path(), dir_flags(), Mode::empty()).unwrap();
        assert!(open_dir(root.as_fd(), b"a/b/c").is_ok());
        assert!(open_dir(root.as_fd(), b"a/up").is_err(), "a symlink is never followed");
        assert!(open_dir(root.as_fd(), b"a/up/etc").is_err());
        assert!(open_dir(root.as_fd(), b"a/../a").is_err(), "`..` is refused");
        let mut cache = DirCache::new(root.as_fd());
        assert!(cache.dir(b"a").is_ok());
        assert!(cache.dir(b"a/b/c").is_ok());
        assert!(cache.dir(b"a/up").is_err());
        assert!(cache.dir(b"a/b").is_ok());
    }
}
