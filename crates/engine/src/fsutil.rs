//! Small filesystem helpers shared by the engine: durable writes, mount points, free space.

use std::ffi::CStr;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// fsyncs a directory so that renames and creations inside it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).ctx("open directory", dir)?;
    f.sync_all().ctx("sync directory", dir)
}

/// Writes a small file so that after a crash it is either absent or complete: write to a
/// temporary name, fsync, rename over the target, fsync the directory.
pub fn write_durably(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(contents).ctx("write", &tmp)?;
    f.sync_all().ctx("sync", &tmp)?;
    drop(f);
    std::fs::rename(&tmp, path).ctx("rename into place", path)?;
    sync_dir(dir)
}

/// Whether `path` holds a filesystem of its own: its device differs from its parent's.
///
/// Not `/proc/self/mountinfo`: the systemd unit's `ReadWritePaths=` bind-mounts the
/// destination onto itself inside the sandbox, so mountinfo lists it as a mount point even
/// when the backup drive is unplugged and it is a bare directory on the root filesystem —
/// exactly the case this check exists to catch. A device number cannot be fooled that way.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let canonical = std::fs::canonicalize(path).ctx("resolve", path)?;
    let Some(parent) = canonical.parent() else { return Ok(true) }; // `/` is always mounted
    let dev = |p: &Path| rustix::fs::stat(p).map(|st| st.st_dev).ctx("inspect", p);
    Ok(dev(&canonical)? != dev(parent)?)
}

/// Free bytes available to unprivileged users at `path` (what `df` shows as "Avail").
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).ctx("query free space of", path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// This machine's host name.
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// Puts the calling thread in the idle I/O class (`ionice -c 3`) and returns the class the
/// kernel then reports for it ("idle" when it worked).
///
/// rustix has no `ioprio_set` and the engine forbids `unsafe`, so util-linux's `ionice`
/// makes the system call on this thread's id; Linux keeps I/O priority per thread, so only
/// this thread is affected. Without `ionice` the thread keeps its priority, as before.
pub fn idle_io_priority_for_this_thread() -> std::result::Result<String, String> {
    let tid = rustix::thread::gettid().as_raw_nonzero().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("ionice")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ionice: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match out.status.success() {
            true => Ok(text),
            false => Err(format!("ionice {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
        }
    };
    run(&["-c", "3", "-p", &tid])?;
    // `ionice -p TID` prints the class as the kernel has it: "idle", or "best-effort: prio 4".
    run(&["-p", &tid])
}

/// Removes a directory tree that may hold read-only directories (snapshots keep source
/// permissions, so a `0500` directory must be made writable before its entries go). A
/// symlink or a file at `path` is removed itself, never followed.
///
/// Works on descriptors without recursion, so neither the depth of the tree nor the length
/// of its paths is limited (a snapshot may hold paths far longer than `PATH_MAX`): the
/// directories above the current one keep their descriptors only for the last few levels,
/// the others are reopened through `..` and checked by device and inode.
pub fn remove_tree(path: &Path) -> Result<()> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (if p.as_os_str().is_empty() { Path::new(".") } else { p }, n),
        _ => return Err(Error::io("remove", path, std::io::Error::from(std::io::ErrorKind::InvalidInput))),
    };
    let parent_fd = match open_dir_fd(rustix::fs::CWD, parent) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Error::io("open directory", parent, e.into())),
    };
    let name = std::ffi::CString::new(name.as_bytes()).expect("paths hold no NUL");
    remove_tree_at(parent_fd.as_fd(), &name).map_err(|e| Error::io("remove", path, e))
}

/// How many directory levels `remove_tree_at` keeps open.
const OPEN_LEVELS: usize = 32;

fn open_dir_fd<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::OFlags;
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

/// Removes `name` below `dir` and everything in it; see [`remove_tree`].
pub fn remove_tree_at(dir: BorrowedFd, name: &CStr) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType};
    use rustix::io::Errno;
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    /// One directory on the way down: its descriptor while open, its identity, its name in
    /// its parent, and the subdirectories still to remove.
    struct Level {
        fd: Option<OwnedFd>,
        id: (u64, u64),
        name: std::ffi::CString,
        subdirs: Vec<std::ffi::CString>,
    }
    let enter = |parent: BorrowedFd, name: &CStr| -> std::io::Result<Level> {
        let fd = match open_dir_fd(parent, name) {
            Ok(fd) => fd,
            Err(Errno::ACCESS) => {
                // A directory without read or search permission for us: grant it first.
                rustix::fs::chmodat(parent, name, rustix::fs::Mode::from_raw_mode(0o700), AtFlags::empty())?;
                open_dir_fd(parent, name)?
            }
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if st.st_mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode((st.st_mode | 0o700) & 0o7777))?;
        }
        let mut subdirs = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let n = entry.file_name();
            if n == c"." || n == c".." {
                continue;
            }
            let mut ft = entry.file_type();
            if ft == FileType::Unknown {
                ft = FileType::from_raw_mode(rustix::fs::statat(&fd, n, AtFlags::SYMLINK_NOFOLLOW)?.st_mode);
            }
            if ft == FileType::Directory {
                subdirs.push(n.to_owned());
            } else {
                match rustix::fs::unlinkat(&fd, n, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Level { fd: Some(fd), id: (st.st_dev, st.st_ino), name: name.to_owned(), subdirs })
    };
    let mut stack = vec![enter(dir, name)?];
    while let Some(top) = stack.last_mut() {
        if let Some(sub) = top.subdirs.pop() {
            let level = enter(top.fd.as_ref().expect("the current directory is open").as_fd(), &sub)?;
            stack.push(level);
            if stack.len() > OPEN_LEVELS {
                let i = stack.len() - 1 - OPEN_LEVELS;
                stack[i].fd = None;
            }
            continue;
        }
        let done = stack.pop().expect("the stack is not empty");
        let fd = done.fd.expect("the current directory is open");
        let Some(parent) = stack.last_mut() else {
            drop(fd);
            return match rustix::fs::unlinkat(dir, &done.name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            };
        };
        if parent.fd.is_none() {
            let up = open_dir_fd(&fd, c"..")?;
            let st = rustix::fs::fstat(&up)?;
            if (st.st_dev, st.st_ino) != parent.id {
                return Err(std::io::Error::other("a directory was moved while its tree was being removed"));
            }
            parent.fd = Some(up);
        }
        drop(fd);
        match rustix::fs::unlinkat(parent.fd.as_ref().expect("reopened").as_fd(), &done.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags};

    /// `levels` nested directories named `d` below `root`, built fd-relatively (the path is
    /// far longer than PATH_MAX), a file at the bottom, and every tenth level read-only.
    fn deep_tree(root: &Path, levels: usize) {
        let mut fd = open_dir_fd(rustix::fs::CWD, root).unwrap();
        for i in 0..levels {
            rustix::fs::mkdirat(&fd, c"d", Mode::from_raw_mode(0o755)).unwrap();
            let next = open_dir_fd(&fd, c"d").unwrap();
            if i % 10 == 5 {
                rustix::fs::chmodat(&fd, c"d", Mode::from_raw_mode(0o500), rustix::fs::AtFlags::empty()).unwrap();
            }
            fd = next;
        }
        let f = rustix::fs::openat(&fd, c"f", OFlags::WRONLY | OFlags::CREATE, Mode::from_raw_mode(0o644)).unwrap();
        rustix::io::write(&f, b"bottom").unwrap();
    }

    #[test]
    fn removes_a_tree_deeper_than_the_stack_allows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        deep_tree(&root, 12_000);
        // On a small stack, as the trash is emptied on a thread of its own.
        let r = root.clone();
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || remove_tree(&r))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn removes_files_and_symlinks_without_following_them() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), "keep").unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("top-link")).unwrap();
        std::fs::write(tree.join("a/b/f"), "f").unwrap();
        std::fs::set_permissions(tree.join("a"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        remove_tree(&tree).unwrap();
        remove_tree(&dir.path().join("top-link")).unwrap();
        remove_tree(&dir.path().join("missing")).unwrap();
        assert!(!tree.exists() && !dir.path().join("top-link").exists());
        assert_eq!(std::fs::read_to_string(victim.join("keep")).unwrap(), "keep");
    }
}
