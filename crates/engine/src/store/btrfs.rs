//! The btrfs store (`local.store`, `destination.store`, `--store`): on a btrfs destination
//! every snapshot is a subvolume, made as a writable snapshot of the previous one, so a run
//! pays for what changed, not for a `link()` per unchanged file.
//!
//! | the previous snapshot is | the run's work tree under `.incomplete/` | unchanged entries |
//! |---|---|---|
//! | a subvolume | a writable snapshot of it | left where they are ([`Method::Keep`]): the walk writes what changed and removes what vanished |
//! | a plain directory (hard-link history), or none | a fresh, empty subvolume | reflinked from it (`FICLONE`, [`Method::Clone`]): blocks shared, no data copied |
//! | anything, for a pulled host | a fresh, empty subvolume | reflinked from it ([`Method::Clone`]) |
//!
//! Then the manifest is written as in the hard-link store, the subvolume is made read-only
//! and published by the same rename into `daily/` (the kernel refuses to move a read-only
//! subvolume into another directory, so the flag is set right after the rename, on the same
//! descriptor; a run killed between the two leaves a complete but writable snapshot, which
//! the next run seals — [`seal_published`]). Prune deletes a subvolume with the delete ioctl
//! (`fs::Dir::remove_snapshot`), falling back to deleting its files.
//!
//! `auto` (the default) uses subvolumes when the host directory is on btrfs and creating one
//! there works, else hard links, and says which it used. A pull writes a fresh tree from the
//! agent's stream and has no in-place mode, so a pulled host's snapshot is always a fresh
//! subvolume whose unchanged files are reflinks of the previous copies: one `FICLONE` per
//! unchanged file where the hard-link store makes one `link()`, and a snapshot deleted with
//! one ioctl.

use crate::error::{Error, IoContext, Result};
use crate::fs::{Dir, Name};
use crate::plan::StoreMode;
use crate::store::layout::HostDir;
use crate::store::place::Method;

/// A run's work tree, made for the store mode in use.
pub struct Work {
    /// The work tree, under `.incomplete/`.
    pub dir: Dir,
    /// How unchanged entries are shared with the previous snapshot.
    pub method: Method,
    /// Whether it is a subvolume (sealed read-only at publish).
    pub subvolume: bool,
}

/// Creates the work tree `name` in `incomplete` for `mode`, from the previous snapshot
/// `base` (held open). `in_place`: the build can write into a copy of the previous snapshot
/// (a local walk; not a pull, which fills an empty tree). `btrfs` on anything but btrfs, or
/// where no subvolume can be created, is an error naming the destination; `auto` then falls
/// back to a plain directory.
pub fn create_work(mode: StoreMode, incomplete: &Dir, name: &Name, base: Option<&Dir>, in_place: bool) -> Result<Work> {
    let plain = |incomplete: &Dir| -> Result<Work> {
        Ok(Work { dir: incomplete.create_new_dir(name, 0o755)?, method: Method::Link, subvolume: false })
    };
    if mode == StoreMode::Hardlink {
        return plain(incomplete);
    }
    if !incomplete.is_btrfs()? {
        if mode == StoreMode::Btrfs {
            return Err(Error::Preflight(format!(
                "store = \"btrfs\" but {} is not on a btrfs filesystem (use \"auto\" or \"hardlink\")",
                incomplete.path().display()
            )));
        }
        return plain(incomplete);
    }
    let from_snapshot = match base {
        Some(b) if in_place && b.is_subvolume()? => Some(b),
        _ => None,
    };
    let fresh = || {
        incomplete.create_subvolume(name).map(|dir| Work {
            dir,
            method: if base.is_some() { Method::Clone } else { Method::Link },
            subvolume: true,
        })
    };
    let made = match from_snapshot {
        Some(b) => match incomplete.snapshot_of(b, name) {
            Ok(dir) => Ok(Work { dir, method: Method::Keep, subvolume: true }),
            // Another filesystem (a subvolume elsewhere): start afresh.
            Err(e) if e.io_error().and_then(std::io::Error::raw_os_error) == Some(libc_exdev()) => fresh(),
            Err(e) => Err(e),
        },
        None => fresh(),
    };
    match made {
        Ok(w) => Ok(w),
        Err(e) if mode == StoreMode::Btrfs => Err(Error::Preflight(format!(
            "store = \"btrfs\": {e} (the runner needs to own the previous snapshot and write {})",
            incomplete.path().display()
        ))),
        Err(e) => {
            tracing::warn!("store = \"auto\": {e}; storing this snapshot with hard links");
            // A subvolume made but not opened would take the name the plain directory needs.
            incomplete.remove_snapshot(name)?;
            plain(incomplete)
        }
    }
}

fn libc_exdev() -> i32 {
    rustix::io::Errno::XDEV.raw_os_error()
}

/// Makes every published snapshot that is a writable subvolume read-only (one left so by a
/// run killed between its publishing rename and the flag, or by a repair interrupted while
/// it wrote). Only on btrfs; names the snapshots sealed.
pub fn seal_published(host: &HostDir) -> Result<Vec<String>> {
    let mut sealed = Vec::new();
    if !host.dir()?.is_btrfs()? {
        return Ok(sealed);
    }
    let mount = crate::fs::fsops::mount_id(host.dir()?.fd()).ctx("inspect", host.root())?;
    for s in host.list()? {
        // One snapshot that cannot be sealed (a mount point planted at its name, a subvolume
        // this user may not change) is named; it must not stop every run.
        let seal = || -> Result<bool> {
            let dir = host.open_snapshot(&s)?;
            if crate::fs::fsops::mount_id(dir.fd()).ctx("inspect", dir.path())? != mount {
                return Err(Error::Unsafe {
                    path: dir.path().to_path_buf(),
                    message: "a mount point where a snapshot was expected; not made read-only".into(),
                });
            }
            if dir.is_subvolume()? && !dir.is_readonly_subvolume()? {
                dir.set_subvolume_readonly(true)?;
                return Ok(true);
            }
            Ok(false)
        };
        match seal() {
            Ok(true) => sealed.push(s.id()),
            Ok(false) => {}
            Err(e) => tracing::warn!("making the published snapshots read-only: {e}"),
        }
    }
    if !sealed.is_empty() {
        tracing::info!("made read-only: {}", sealed.join(", "));
    }
    Ok(sealed)
}

/// Runs `write` on the snapshot `dir` with its read-only flag cleared when it is a read-only
/// subvolume, and sets the flag again afterwards whatever `write` did (a pin, a repair).
pub fn writable<T>(dir: &Dir, write: impl FnOnce() -> Result<T>) -> Result<T> {
    if !dir.is_readonly_subvolume()? {
        return write();
    }
    dir.set_subvolume_readonly(false)?;
    let out = write();
    let sealed = dir.set_subvolume_readonly(true);
    let out = out?;
    sealed?;
    Ok(out)
}
