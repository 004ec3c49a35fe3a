//! Filesystems told apart by the `f_type` of `statfs` (the numbers of Linux's `linux/magic.h`,
//! and OpenZFS's `ZFS_SUPER_MAGIC`), in one place.

use std::os::fd::AsFd;
use std::path::Path;

/// ext2, ext3 and ext4.
pub const EXT4: i64 = 0xEF53;
/// XFS.
pub const XFS: i64 = 0x5846_5342;
/// btrfs.
pub const BTRFS: i64 = hwc_btrfs::SUPER_MAGIC;
/// tmpfs.
pub const TMPFS: i64 = 0x0102_1994;
/// F2FS.
pub const F2FS: i64 = 0xF2F5_2010;
/// OpenZFS.
pub const ZFS: i64 = 0x2FC1_2FC1;

/// The filesystem type of the open file `fd`.
pub fn of(fd: impl AsFd) -> std::io::Result<i64> {
    Ok(f_type(rustix::fs::fstatfs(fd)?))
}

/// The filesystem type of `path` (followed as given).
pub fn of_path(path: &Path) -> std::io::Result<i64> {
    Ok(f_type(rustix::fs::statfs(path)?))
}

// `f_type`'s width differs between architectures.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn f_type(fs: rustix::fs::StatFs) -> i64 {
    i64::from(fs.f_type)
}
