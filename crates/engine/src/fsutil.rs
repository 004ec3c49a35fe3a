//! Small filesystem helpers shared by the engine: durable writes, mount points, free space.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Whether `path` is a mount point, read from `/proc/self/mountinfo` (so bind mounts count
/// and a directory on the parent filesystem does not).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let canonical = std::fs::canonicalize(path).ctx("resolve", path)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx("read", "/proc/self/mountinfo")?;
    Ok(info.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| Path::new(&unescape_mount(m)) == canonical))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
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

/// Removes a directory tree that may hold read-only directories (snapshots keep source
/// permissions, so a `0500` directory must be made writable before its entries go).
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    make_dirs_writable(path)?;
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

fn make_dirs_writable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    if !md.is_dir() {
        return Ok(());
    }
    let mode = md.permissions().mode();
    if mode & 0o700 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700)).ctx("make writable", path)?;
    }
    for entry in std::fs::read_dir(path).ctx("read directory", path)? {
        make_dirs_writable(&entry.ctx("read directory", path)?.path())?;
    }
    Ok(())
}
