//! Deleting a tree below a [`Dir`]: fd-relative, never through a symlink, and without
//! recursion, so a tree tens of thousands of levels deep (which `rm -rf` handles) cannot
//! overflow the stack, and at most [`KEEP_OPEN`] directories are open at once.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{reopen_parent, Dir, Name, DIR_FLAGS};
use crate::error::{Error, IoContext, Result};

/// Directory fds kept open on the way down; above them, a level is re-opened through `..`
/// and checked by device and inode when the walk climbs back to it (as GNU `rm` does).
const KEEP_OPEN: usize = 64;

struct Level {
    dir: Option<Dir>,
    name: Name,
    dev: u64,
    ino: u64,
    /// Subdirectories still to delete, found when the level was emptied of its files (one
    /// pass over each directory, as `rm -rf` makes).
    subdirs: Vec<Name>,
    /// The length of the walk's relative path at this level (see [`Keep`]).
    rel_len: usize,
    /// Something below it is kept, so it stays.
    kept: bool,
}

/// Which entries a removal keeps: called with the entry's path relative to the parent the
/// removal started in (`name/sub/file`) and whether it is a directory (a kept directory is
/// kept whole). The directories holding a kept entry stay too.
pub type Keep<'a> = &'a dyn Fn(&[u8], bool) -> bool;

/// See the module docs. `name` is removed from `parent`; missing is fine.
pub(super) fn remove_tree(parent: &Dir, name: &Name) -> Result<()> {
    remove_tree_keeping(parent, name, None).map(|_| ())
}

/// [`remove_tree`], leaving alone what `keep` names and the directories holding it (`name`
/// itself is the caller's to decide). Returns whether `name` is gone.
pub(super) fn remove_tree_keeping(parent: &Dir, name: &Name, keep: Option<Keep>) -> Result<bool> {
    match parent.stat(name)? {
        None => return Ok(true),
        Some(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
            parent.remove_file(name)?;
            return Ok(true);
        }
        Some(_) => {}
    }
    let mut rel = name.as_bytes().to_vec();
    let mut stack = vec![descend(parent, name, 0, &rel, keep)?];
    loop {
        let depth = stack.len();
        let top = stack.last_mut().expect("the stack is not empty here");
        if let Some(sub) = top.subdirs.pop() {
            let dir = top.dir.as_ref().expect("the top level is always open");
            rel.truncate(top.rel_len);
            rel.push(b'/');
            rel.extend_from_slice(sub.as_bytes());
            let child = descend(dir, &sub, depth, &rel, keep)?;
            stack.push(child);
            if stack.len() > KEEP_OPEN {
                let i = stack.len() - KEEP_OPEN - 1;
                stack[i].dir = None;
            }
            continue;
        }
        let done = stack.pop().expect("the stack is not empty here");
        let done_dir = done.dir.expect("the top level is always open");
        if let Some(up) = stack.last_mut() {
            if up.dir.is_none() {
                up.dir = Some(reopen_level(&done_dir, up)?);
            }
        }
        drop(done_dir);
        let up = stack.last().map_or(parent, |l| l.dir.as_ref().expect("re-opened above"));
        let kept = done.kept
            || match rustix::fs::unlinkat(up.fd(), done.name.as_cstr(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => false,
                // Something appeared meanwhile; with entries to keep, that is not an error.
                Err(Errno::NOTEMPTY) if keep.is_some() => true,
                Err(e) => return Err(Error::io("remove directory", up.child_path(&done.name), e.into())),
            };
        match stack.last_mut() {
            Some(up) => up.kept |= kept,
            None => return Ok(!kept),
        }
    }
}

/// Removes every non-directory in `dir` (`rel` below the removal's parent) that `keep` does
/// not keep, and returns the names of its subdirectories to remove and whether it keeps any.
fn empty_files_of(dir: &Dir, rel: &[u8], keep: Option<Keep>) -> Result<(Vec<Name>, bool)> {
    let mut subs = Vec::new();
    let mut kept = false;
    let mut path = rel.to_vec();
    let reader = rustix::fs::Dir::read_from(dir.fd()).ctx("read directory", dir.path())?;
    for entry in reader {
        let entry = entry.ctx("read directory", dir.path())?;
        let Ok(name) = Name::new(entry.file_name().to_bytes()) else { continue }; // `.` and `..`
        let kind = match entry.file_type() {
            FileType::Unknown => match dir.stat(&name)? {
                Some(st) => FileType::from_raw_mode(st.st_mode),
                None => continue,
            },
            k => k,
        };
        let is_dir = kind == FileType::Directory;
        if let Some(keep) = keep {
            path.truncate(rel.len());
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
            if keep(&path, is_dir) {
                kept = true;
                continue;
            }
        }
        if is_dir {
            subs.push(name);
        } else {
            dir.remove_file(&name)?;
        }
    }
    Ok((subs, kept))
}

/// Opens `name` below `dir` for emptying, making it writable when we are not root (a
/// snapshot keeps the source's `0500` directories).
fn descend(dir: &Dir, name: &Name, depth: usize, rel: &[u8], keep: Option<Keep>) -> Result<Level> {
    let path = || if depth < 8 { dir.child_path(name) } else { dir.path().join(name.as_os_str()) };
    let fd = match rustix::fs::openat(dir.fd(), name.as_cstr(), DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ACCESS) => {
            make_writable_by_path(dir, name)?;
            rustix::fs::openat(dir.fd(), name.as_cstr(), DIR_FLAGS, Mode::empty()).ctx("open directory", path())?
        }
        Err(Errno::LOOP | Errno::NOTDIR) => return Err(dir.unexpected(name, "a directory")),
        Err(e) => return Err(Error::io("open directory", path(), e.into())),
    };
    let st = rustix::fs::fstat(&fd).ctx("inspect", path())?;
    if !rustix::process::geteuid().is_root() && st.st_mode & 0o700 != 0o700 {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700)).ctx("make writable", path())?;
    }
    // Deep below the start, messages name the top of the tree and the last component only,
    // so the memory for display paths stays linear in the depth.
    let shown = if depth < 8 { dir.child_path(name) } else { dir.path().to_path_buf() };
    let dir = Dir::from_fd(fd, shown);
    let (subdirs, kept) = empty_files_of(&dir, rel, keep)?;
    Ok(Level { dir: Some(dir), name: name.clone(), dev: st.st_dev, ino: st.st_ino, subdirs, rel_len: rel.len(), kept })
}

/// A directory we may not even open: `chmod u+rwx` through an `O_PATH` handle, which pins
/// the very inode (no symlink, no rename race), via its `/proc/self/fd` link.
fn make_writable_by_path(dir: &Dir, name: &Name) -> Result<()> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd: OwnedFd = rustix::fs::openat(dir.fd(), name.as_cstr(), flags, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => dir.unexpected(name, "a directory"),
        e => Error::io("open directory", dir.child_path(name), e.into()),
    })?;
    let st = rustix::fs::fstat(&fd).ctx("inspect", dir.child_path(name))?;
    let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))
        .ctx("make writable", dir.child_path(name))
}

/// Re-opens a level whose fd was closed on the way down (see [`reopen_parent`]).
fn reopen_level(child: &Dir, want: &Level) -> Result<Dir> {
    let fd = reopen_parent(child.fd(), (want.dev, want.ino)).ctx("open parent of", child.path())?;
    let fd = fd.ok_or_else(|| Error::Unsafe {
        path: child.path().to_path_buf(),
        message: "the tree was moved while it was being deleted; stopping".into(),
    })?;
    Ok(Dir::from_fd(fd, child.path().to_path_buf()))
}
