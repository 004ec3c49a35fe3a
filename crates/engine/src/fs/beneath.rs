//! Opening paths below an open directory, one component per system call, never following a
//! symlink and never going above it.
//!
//! A path in a snapshot can be far longer than `PATH_MAX` (the snapshot walk works on
//! `(directory fd, name)` pairs and stores whatever the source holds), and a symlink stored in
//! a snapshot points at the live system, not into the snapshot. So whatever reads a snapshot
//! by a path of its own (the manifest's, a user's) resolves it here: each component is opened
//! with `O_NOFOLLOW` relative to its parent, and the parent is closed as soon as the child is
//! open, so at most two descriptors are held whatever the depth.
//!
//! Both ends of a pull resolve paths here too (the server the agent's ancestor directories,
//! the agent the server's sources): a symlink anywhere on the way is refused, never
//! followed, whatever it points to and whenever it appeared, and the refusal names it.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{FileType, Mode, OFlags};

use crate::fs::fsops;

/// The name of one component as a C string; `.`, `..`, empty names and NUL bytes are refused
/// (a path from a manifest or a user never needs them to stay below the root).
pub fn component(name: &[u8]) -> io::Result<CString> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "`.`, `..` or an empty path component"));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))
}

/// `dir/name` split at its last `/`: (`dir`, `name`); (``, `name`) for a name alone.
pub fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// A new descriptor for the directory `dir` itself.
pub fn reopen(dir: BorrowedFd) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, c".", crate::fs::DIR_FLAGS, Mode::empty())?)
}

/// Why a path was not opened: the component where it stopped (the path up to and including
/// it, `/`-separated, relative to where the walk began) and what it is.
#[derive(Debug)]
pub struct Refused {
    /// The path up to the component that stopped the walk.
    pub at: Vec<u8>,
    /// What is there.
    pub why: Why,
}

/// What stopped a walk.
#[derive(Debug)]
pub enum Why {
    /// A symbolic link (never followed).
    Symlink,
    /// Something other than a directory.
    NotDirectory,
    /// A name that is not one plain component.
    NotPlain,
    /// Nothing, or a directory that cannot be opened: the system's error.
    Io(std::io::Error),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Symlink => f.write_str("a symbolic link (not followed)"),
            Why::NotDirectory => f.write_str("not a directory"),
            Why::NotPlain => f.write_str("not a plain file name"),
            Why::Io(e) => write!(f, "not usable: {e}"),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", String::from_utf8_lossy(&self.at), self.why)
    }
}

impl Refused {
    /// Whether the walk stopped at a symlink (an attempt to go through one).
    pub fn is_link(&self) -> bool {
        matches!(self.why, Why::Symlink)
    }
}

/// A name that may be used as one path component.
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Opens each directory of `components` in turn below `root`; returns the fd of each (the
/// last is the directory itself). An empty list opens nothing and returns an empty vector.
pub fn open_dirs(root: BorrowedFd, components: &[&[u8]]) -> Result<Vec<OwnedFd>, Refused> {
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(components.len());
    let mut at = Vec::new();
    for comp in components {
        let fd = step(fds.last().map_or(root, AsFd::as_fd), comp, &mut at)?;
        fds.push(fd);
    }
    Ok(fds)
}

/// Opens the directory `rel` (`/`-separated components, at least one) below `root`, holding
/// one descriptor at a time however deep it is.
pub fn open_dir(root: BorrowedFd, rel: &[u8]) -> Result<OwnedFd, Refused> {
    let mut at = Vec::new();
    let mut fd: Option<OwnedFd> = None;
    for comp in rel.split(|&c| c == b'/') {
        let next = step(fd.as_ref().map_or(root, AsFd::as_fd), comp, &mut at)?;
        fd = Some(next);
    }
    Ok(fd.expect("split yields at least one component"))
}

/// Opens directory `comp` in `dir`, `at` being the path so far (extended by `comp`).
fn step(dir: BorrowedFd, comp: &[u8], at: &mut Vec<u8>) -> Result<OwnedFd, Refused> {
    if !at.is_empty() {
        at.push(b'/');
    }
    at.extend_from_slice(comp);
    if !is_plain_name(comp) {
        return Err(Refused { at: at.clone(), why: Why::NotPlain });
    }
    let name = CString::new(comp).expect("checked: no NUL");
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    rustix::fs::openat(dir, &name, flags, Mode::empty()).map_err(|e| {
        let why = match fsops::stat_at(dir, &name).map(|st| fsops::file_type(&st)) {
            Ok(FileType::Symlink) => Why::Symlink,
            Ok(FileType::Directory) | Err(_) => Why::Io(e.into()),
            Ok(_) => Why::NotDirectory,
        };
        Refused { at: at.clone(), why }
    })
}

impl From<Refused> for io::Error {
    fn from(r: Refused) -> io::Error {
        match r.why {
            Why::Io(e) => e,
            Why::Symlink => io::Error::from_raw_os_error(rustix::io::Errno::LOOP.raw_os_error()),
            Why::NotDirectory => io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()),
            Why::NotPlain => io::Error::new(io::ErrorKind::InvalidInput, "`.`, `..`, an empty name or a NUL byte"),
        }
    }
}

/// [`open_dir`] for a manifest's directory part: leading `/` ignored, the empty path is
/// `from` itself.
fn open_rel(from: BorrowedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        return reopen(from);
    }
    Ok(open_dir(from, rel)?)
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
                    open_rel(fd.as_fd(), &rel[p.len()..])
                }
                _ => open_rel(self.root, rel),
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
        let root = rustix::fs::open(t.path(), crate::fs::DIR_FLAGS, Mode::empty()).unwrap();
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

#[cfg(test)]
mod refused_tests {
    use super::*;

    #[test]
    fn symlinks_anywhere_on_the_way_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(outside.join("target")).unwrap();
        std::fs::write(root.join("a/file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/inner")).unwrap();
        let fd = crate::source::local::open_dir(&root).unwrap();
        assert!(open_dir(fd.as_fd(), b"a/b").is_ok());
        for (rel, at, link) in [
            (&b"abs/target"[..], &b"abs"[..], true),
            (b"rel/target", b"rel", true),
            (b"rel", b"rel", true),
            (b"a/inner", b"a/inner", true),
            (b"a/file/x", b"a/file", false),
            (b"a/../a", b"a/..", false),
            (b"a//b", b"a/", false),
            (b"", b"", false),
            (b"/a", b"", false),
            (b"missing/x", b"missing", false),
        ] {
            let e = open_dir(fd.as_fd(), rel).unwrap_err();
            assert_eq!(e.at, at, "{}", String::from_utf8_lossy(rel));
            assert_eq!(e.is_link(), link, "{e}");
        }
    }
}
