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

/// Filesystems of the kernel's own making, whose "regular files" are not data that was backed
/// up (`/proc/kcore` says it is 128 TiB; reading some has side effects): proc, sysfs, debugfs,
/// tracefs, securityfs, configfs, cgroup v1 and v2, bpf, efivarfs, pstore.
pub const KERNEL_MADE: [i64; 11] = [
    0x9fa0,
    0x6265_6572,
    0x6462_6720,
    0x7472_6163,
    0x7363_6673,
    0x6265_6570,
    0x0027_e0eb,
    0x6367_7270,
    0xcafe_4a11,
    0xde5e_81e4,
    0x6165_676c,
];

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
