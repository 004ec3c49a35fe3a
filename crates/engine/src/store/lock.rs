//! One writer per host directory: `flock(2)` on `<host>/.lock`.
//!
//! The kernel releases the lock when the holder dies, however it dies, so there are no stale
//! locks to break (rsnapshot and restic users lose weeks to those). The holder writes who it
//! is into the file, for the message another run prints when it finds the lock taken.
//!
//! The file is opened through the host directory's handle with `O_NOFOLLOW` and must be a
//! regular file with a single link, so a symlink or hard link planted as `.lock` cannot make
//! a run truncate a file elsewhere.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{Error, IoContext, Result};
use crate::fs::Name;
use crate::store::layout::{HostDir, LOCK};

/// A held lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct HostLock {
    file: std::fs::File,
    path: PathBuf,
}

impl HostLock {
    /// Takes the lock of `host` without waiting; `Error::Locked` names the holder if it is
    /// taken. The host directory must exist, and its fixed names must be what the layout
    /// says ([`HostDir::check`]): a writer never starts on a planted symlink.
    pub fn acquire(host: &HostDir, what: &str) -> Result<HostLock> {
        let dir = host.dir()?;
        host.check()?;
        let name = Name::fixed(LOCK);
        let path = dir.child_path(&name);
        let mut file = dir.open_lock_file(&name)?;
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = (&file).take(4096).read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown holder".to_string() } else { holder.to_string() };
            return Err(Error::Locked { path, holder });
        }
        let info = format!(
            "pid {} ({what}) since {}{}",
            std::process::id(),
            jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or(jiff::Timestamp::now()),
            std::env::var("INVOCATION_ID").map(|id| format!(", systemd invocation {id}")).unwrap_or_default()
        );
        file.set_len(0).ctx("write lock file", &path)?;
        file.rewind().ctx("write lock file", &path)?;
        file.write_all(info.as_bytes()).ctx("write lock file", &path)?;
        Ok(HostLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for HostLock {
    /// Clears the holder's description, so that a later "locked by" message never names a
    /// run that has ended. The kernel releases the lock itself when the file closes.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}
