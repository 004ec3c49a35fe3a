//! btrfs subvolumes through a [`Dir`] (the btrfs store, `store::btrfs`): every call names one
//! entry of a held directory, never a path, through the ioctls of the `hwc-btrfs` crate.
//!
//! Two facts of the kernel shape this module:
//! - a **read-only subvolume cannot be renamed** into another directory (`EROFS`: the move
//!   updates its root inode), so [`Dir::rename`] clears the flag around such a rename and sets
//!   it again on the same descriptor, whatever the rename did;
//! - **deleting a subvolume** by ioctl needs `CAP_SYS_ADMIN` (or the mount option
//!   `user_subvol_rm_allowed`); without it [`Dir::remove_snapshot`] clears the read-only flag
//!   and deletes the tree entry by entry, which the kernel allows (an empty subvolume's root
//!   goes with `rmdir`).

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::Mode;
use rustix::io::Errno;

use super::{Dir, Name, DIR_FLAGS};
use crate::error::{Error, IoContext, Result};

impl Dir {
    /// Whether this directory lies on a btrfs filesystem.
    pub fn is_btrfs(&self) -> Result<bool> {
        hwc_btrfs::is_btrfs(self.fd()).ctx("inspect the filesystem of", self.path())
    }

    /// Whether this directory is the root of a btrfs subvolume.
    pub fn is_subvolume(&self) -> Result<bool> {
        hwc_btrfs::is_subvolume(self.fd()).ctx("inspect", self.path())
    }

    /// Creates the empty subvolume `name` in this directory and opens it.
    pub fn create_subvolume(&self, name: &Name) -> Result<Dir> {
        hwc_btrfs::create_subvolume(self.fd(), name.as_cstr()).ctx("create subvolume", self.child_path(name))?;
        self.open_dir(name)
    }

    /// Snapshots the subvolume `source` (held open; same filesystem) as the writable
    /// subvolume `name` in this directory, and opens it.
    pub fn snapshot_of(&self, source: &Dir, name: &Name) -> Result<Dir> {
        hwc_btrfs::snapshot(source.fd(), self.fd(), name.as_cstr())
            .ctx("snapshot subvolume into", self.child_path(name))?;
        self.open_dir(name)
    }

    /// Whether this directory is the root of a read-only subvolume (`false` for anything
    /// that is not a subvolume).
    pub fn is_readonly_subvolume(&self) -> Result<bool> {
        if !self.is_subvolume()? {
            return Ok(false);
        }
        hwc_btrfs::is_readonly(self.fd()).ctx("read the flags of subvolume", self.path())
    }

    /// Makes this subvolume read-only, or writable again.
    pub fn set_subvolume_readonly(&self, readonly: bool) -> Result<()> {
        hwc_btrfs::set_readonly(self.fd(), readonly).ctx("set the read-only flag of subvolume", self.path())
    }

    /// On btrfs: waits until the subvolumes deleted so far are cleaned up and their space is
    /// free (the kernel does it in the background); nothing elsewhere or on kernels before 6.8.
    pub fn wait_for_deleted_subvolumes(&self) -> Result<()> {
        if self.is_btrfs()? {
            hwc_btrfs::wait_for_deleted(self.fd()).ctx("wait for the deleted subvolumes of", self.path())?;
        }
        Ok(())
    }

    /// Deletes the snapshot `name` of this directory, whatever it is: a subvolume by the
    /// delete ioctl (falling back to clearing its read-only flag and deleting the tree when
    /// the ioctl is refused), anything else as [`Dir::remove_tree`]. Missing is fine.
    pub fn remove_snapshot(&self, name: &Name) -> Result<()> {
        let sub = match rustix::fs::openat(self.fd(), name.as_cstr(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Dir::from_fd(fd, self.child_path(name)),
            Err(Errno::NOENT) => return Ok(()),
            // A file, a symlink: not ours to treat as a subvolume.
            Err(Errno::NOTDIR | Errno::LOOP) => return self.remove_tree(name),
            Err(e) => return Err(Error::io("open directory", self.child_path(name), e.into())),
        };
        // A mount point (a bind mount of someone's subvolume or directory planted here): the
        // delete ioctl would look at what is under it and fail, and the fallback below would
        // clear the mounted subvolume's read-only flag and empty it.
        let mounts = (super::fsops::mount_id(self.fd()), super::fsops::mount_id(sub.fd()));
        if !matches!(mounts, (Ok(a), Ok(b)) if a == b) {
            return Err(Error::Unsafe {
                path: self.child_path(name),
                message: "a mount point where a snapshot was expected; not deleted".into(),
            });
        }
        // (A subvolume has a device number of its own; the kernel refuses to delete one that
        // is on another filesystem than `self`.)
        if !sub.is_subvolume()? {
            drop(sub);
            return self.remove_tree(name);
        }
        // By its id, read through the descriptor checked above: whatever is put at `name`
        // meanwhile is not what gets deleted.
        let deleted = match hwc_btrfs::subvolume_id(sub.fd()) {
            Ok(id) => match hwc_btrfs::destroy_subvolume_by_id(self.fd(), id) {
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    hwc_btrfs::destroy_subvolume(self.fd(), name.as_cstr())
                }
                other => other,
            },
            Err(e) => Err(e),
        };
        match deleted {
            Ok(()) => return Ok(()),
            Err(e) => tracing::debug!(
                "deleting subvolume {} by ioctl: {e}; deleting its files instead",
                self.child_path(name).display()
            ),
        }
        sub.set_subvolume_readonly(false)?;
        drop(sub);
        self.remove_tree(name)
    }
}

/// The rename of a read-only subvolume root, which the kernel refuses with `EROFS`: clear
/// the flag, rename, set it again (on the descriptor, so wherever the entry now is). `None`
/// when `from` is not a read-only subvolume (the caller returns its own error).
pub(super) fn rename_readonly(dir: &Dir, from: &Name, rename: impl FnOnce() -> Result<()>) -> Option<Result<()>> {
    let fd: OwnedFd = rustix::fs::openat(dir.fd(), from.as_cstr(), DIR_FLAGS, Mode::empty()).ok()?;
    let readonly = hwc_btrfs::is_subvolume(fd.as_fd()).ok()? && hwc_btrfs::is_readonly(fd.as_fd()).ok()?;
    if !readonly {
        return None;
    }
    let path = dir.child_path(from);
    if let Err(e) = hwc_btrfs::set_readonly(fd.as_fd(), false) {
        return Some(Err(Error::io("clear the read-only flag of subvolume", path, e)));
    }
    let renamed = rename();
    let sealed = hwc_btrfs::set_readonly(fd.as_fd(), true).ctx("set the read-only flag of subvolume", &path);
    Some(renamed.and(sealed))
}
