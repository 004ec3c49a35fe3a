//! Small filesystem helpers shared by the engine: durable writes, mount points, free space.

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// fsyncs a directory so that renames and creations inside it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::fs::Dir::open_trusted(dir)?.sync()
}

/// Writes a small file (state, records) so that after a crash it is either the old or the
/// new version: [`crate::fs::Dir::write_atomic`] in the file's directory, the one atomic
/// write of the engine. The directory is the caller's (a state or log directory from the
/// plan); the file name itself is never followed if it is a symlink.
pub fn write_durably(path: &Path, contents: &[u8]) -> Result<()> {
    let (dir, name) = split_file(path)?;
    crate::fs::Dir::open_trusted(dir)?.write_atomic(&name, contents)
}

/// Creates a directory the plan names on this machine (the state, log or metrics directory)
/// and its missing parents, as `mkdir -p` does. Never for the destination: its host
/// directory is created one component at a time through `fs::Dir`.
#[expect(clippy::disallowed_methods, reason = "the plan's own directories on this machine, not the destination")]
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
}

/// `(directory, name)` of a file path.
fn split_file(path: &Path) -> Result<(&Path, crate::fs::Name)> {
    crate::fs::Name::split_path(path)
        .ok_or_else(|| Error::Unsafe { path: path.to_path_buf(), message: "does not name a file".into() })
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

/// [`free_bytes`] of the filesystem an open directory is on (`fstatvfs`): the one a run holds,
/// even when its path was unmounted or mounted over meanwhile.
pub fn free_bytes_of(dir: &crate::fs::Dir) -> Result<u64> {
    let st = rustix::fs::fstatvfs(dir.fd()).ctx("query free space of", dir.path())?;
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
/// permissions, so a `0500` directory must be made writable before its entries go), without
/// following any symlink in it and without recursion ([`crate::fs::Dir::remove_tree`]).
pub fn remove_tree(path: &Path) -> Result<()> {
    let (dir, name) = split_file(path)?;
    match crate::fs::Dir::open_trusted(dir) {
        Ok(d) => d.remove_tree(&name),
        Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}
