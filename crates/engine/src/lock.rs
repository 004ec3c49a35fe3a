//! One writer per host directory: `flock(2)` on `<host>/.lock`.
//!
//! The kernel releases the lock when the holder dies, however it dies, so there are no stale
//! locks to break (rsnapshot and restic users lose weeks to those). The holder writes who it
//! is into the file, for the message another run prints when it finds the lock taken.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{Error, IoContext, Result};

/// A held lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct HostLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl HostLock {
    /// Takes the lock without waiting; `Error::Locked` names the holder if it is taken.
    pub fn acquire(path: &Path, what: &str) -> Result<HostLock> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx("open lock file", path)?;
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown holder".to_string() } else { holder.to_string() };
            return Err(Error::Locked { path: path.to_path_buf(), holder });
        }
        let info = format!(
            "pid {} ({what}) since {}{}",
            std::process::id(),
            jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or(jiff::Timestamp::now()),
            std::env::var("INVOCATION_ID").map(|id| format!(", systemd invocation {id}")).unwrap_or_default()
        );
        file.set_len(0).ctx("write lock file", path)?;
        file.rewind().ctx("write lock file", path)?;
        file.write_all(info.as_bytes()).ctx("write lock file", path)?;
        Ok(HostLock { _file: file, path: path.to_path_buf() })
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
        let _ = self._file.set_len(0);
    }
}
