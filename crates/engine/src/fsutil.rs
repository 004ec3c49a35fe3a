//! Small filesystem helpers shared by the engine: durable writes, mount points, free space.

use std::io::Write;
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
