//! The btrfs subvolume ioctls hwc-backup's btrfs store needs, called directly (no `btrfs`
//! program), every one relative to a directory the caller holds open:
//!
//! | what | ioctl |
//! |---|---|
//! | is this a btrfs filesystem / a subvolume root | `fstatfs` `f_type`, inode 256 |
//! | create an empty subvolume `name` in a directory | `BTRFS_IOC_SUBVOL_CREATE` |
//! | snapshot a subvolume as `name` in a directory | `BTRFS_IOC_SNAP_CREATE` |
//! | read / set the read-only flag | `BTRFS_IOC_SUBVOL_GETFLAGS` / `SETFLAGS` |
//! | delete the subvolume `name` of a directory | `BTRFS_IOC_SNAP_DESTROY_V2`, else `SNAP_DESTROY` |
//!
//! A name is one path component: the kernel looks it up in the directory given, without
//! following a symlink to another subvolume (a symlink is not a subvolume root, so deleting
//! one is refused with `EINVAL`). The `unsafe` of the workspace lives here only, through
//! `rustix::ioctl`, with the kernel's structs laid out `#[repr(C)]` and their sizes tested.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::ioctl::{opcode, Getter, Opcode, Setter, Updater};

/// `BTRFS_SUPER_MAGIC`, the `f_type` of a btrfs filesystem.
pub const SUPER_MAGIC: i64 = 0x9123_683E;
/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOL_ROOT_INO: u64 = 256;
/// `BTRFS_SUBVOL_RDONLY`.
const SUBVOL_RDONLY: u64 = 1 << 1;
const MAGIC: u8 = 0x94;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2` (the union of `size`/`qgroup_inherit` and `unused[4]`
/// as `unused`, the union of `name` and `subvolid` as `name`).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

const SNAP_CREATE: Opcode = opcode::write::<VolArgs>(MAGIC, 1);
const SUBVOL_CREATE: Opcode = opcode::write::<VolArgs>(MAGIC, 14);
const SNAP_DESTROY: Opcode = opcode::write::<VolArgs>(MAGIC, 15);
const SUBVOL_GETFLAGS: Opcode = opcode::read::<u64>(MAGIC, 25);
const SUBVOL_SETFLAGS: Opcode = opcode::write::<u64>(MAGIC, 26);
const SNAP_DESTROY_V2: Opcode = opcode::write::<VolArgsV2>(MAGIC, 63);
const SUBVOL_SYNC_WAIT: Opcode = opcode::write::<SubvolWait>(MAGIC, 65);
const INO_LOOKUP: Opcode = opcode::read_write::<InoLookup>(MAGIC, 18);
/// `BTRFS_SUBVOL_SPEC_BY_ID`: `SNAP_DESTROY_V2` names the subvolume by id (Linux 5.7).
const SUBVOL_SPEC_BY_ID: u64 = 1 << 4;

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookup {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `struct btrfs_ioctl_subvol_wait` (Linux 6.8).
#[repr(C)]
struct SubvolWait {
    subvolid: u64,
    mode: u32,
    count: u32,
}
/// `BTRFS_SUBVOL_SYNC_WAIT_FOR_QUEUED`.
const WAIT_FOR_QUEUED: u32 = 1;

fn vol_args(fd: i64, name: &CStr) -> io::Result<Box<VolArgs>> {
    let bytes = name.to_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') || bytes.len() >= 4088 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut args = Box::new(VolArgs { fd, name: [0; 4088] });
    args.name[..bytes.len()].copy_from_slice(bytes);
    Ok(args)
}

/// Whether `fd` lies on a btrfs filesystem.
pub fn is_btrfs(fd: impl AsFd) -> io::Result<bool> {
    let st = rustix::fs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == SUPER_MAGIC)
}

/// Whether the directory `fd` is the root of a btrfs subvolume.
pub fn is_subvolume(fd: impl AsFd) -> io::Result<bool> {
    let fd = fd.as_fd();
    let st = rustix::fs::fstat(fd)?;
    Ok(st.st_ino == SUBVOL_ROOT_INO && rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() && is_btrfs(fd)?)
}

/// Creates the empty subvolume `name` in the directory `dir`.
pub fn create_subvolume(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let args = vol_args(0, name)?;
    // SAFETY: SUBVOL_CREATE reads a `struct btrfs_ioctl_vol_args`, which `VolArgs` is.
    unsafe { rustix::ioctl::ioctl(dir, Setter::<SUBVOL_CREATE, VolArgs>::new(*args)) }?;
    Ok(())
}

/// Snapshots the subvolume whose root is open as `source` as a writable subvolume `name` in
/// the directory `dir` (same filesystem).
pub fn snapshot(source: BorrowedFd, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let args = vol_args(i64::from(source.as_raw_fd()), name)?;
    // SAFETY: SNAP_CREATE reads a `struct btrfs_ioctl_vol_args` whose `fd` is the source
    // subvolume, open for the duration of the call.
    unsafe { rustix::ioctl::ioctl(dir, Setter::<SNAP_CREATE, VolArgs>::new(*args)) }?;
    Ok(())
}

/// Whether the subvolume whose root is open as `fd` is read-only.
pub fn is_readonly(fd: BorrowedFd) -> io::Result<bool> {
    // SAFETY: SUBVOL_GETFLAGS writes one `u64`.
    let flags = unsafe { rustix::ioctl::ioctl(fd, Getter::<SUBVOL_GETFLAGS, u64>::new()) }?;
    Ok(flags & SUBVOL_RDONLY != 0)
}

/// Makes the subvolume whose root is open as `fd` read-only, or writable again.
pub fn set_readonly(fd: BorrowedFd, readonly: bool) -> io::Result<()> {
    // SAFETY: SUBVOL_GETFLAGS writes one `u64`.
    let flags = unsafe { rustix::ioctl::ioctl(fd, Getter::<SUBVOL_GETFLAGS, u64>::new()) }?;
    let want = if readonly { flags | SUBVOL_RDONLY } else { flags & !SUBVOL_RDONLY };
    if want == flags {
        return Ok(());
    }
    // SAFETY: SUBVOL_SETFLAGS reads one `u64`.
    unsafe { rustix::ioctl::ioctl(fd, Setter::<SUBVOL_SETFLAGS, u64>::new(want)) }?;
    Ok(())
}

/// Deletes the subvolume `name` of the directory `dir` (with everything in it, read-only or
/// not). Needs `CAP_SYS_ADMIN`, or the filesystem mounted `user_subvol_rm_allowed`; anything
/// at `name` that is not a subvolume root is refused by the kernel (`EINVAL`), a symlink too.
pub fn destroy_subvolume(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let v1 = vol_args(0, name)?;
    let mut v2 = Box::new(VolArgsV2 { fd: 0, transid: 0, flags: 0, unused: [0; 4], name: [0; 4040] });
    let bytes = name.to_bytes();
    if bytes.len() < v2.name.len() {
        v2.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: SNAP_DESTROY_V2 reads a `struct btrfs_ioctl_vol_args_v2`, which `VolArgsV2` is.
        match unsafe { rustix::ioctl::ioctl(dir, Setter::<SNAP_DESTROY_V2, VolArgsV2>::new(*v2)) } {
            Ok(()) => return Ok(()),
            // Kernels before 5.7 do not know the v2 call.
            Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // SAFETY: SNAP_DESTROY reads a `struct btrfs_ioctl_vol_args`, which `VolArgs` is.
    unsafe { rustix::ioctl::ioctl(dir, Setter::<SNAP_DESTROY, VolArgs>::new(*v1)) }?;
    Ok(())
}

/// The id of the subvolume the open file or directory `fd` is in (`BTRFS_IOC_INO_LOOKUP` of
/// its root directory, which needs no privilege).
pub fn subvolume_id(fd: BorrowedFd) -> io::Result<u64> {
    let mut args = Box::new(InoLookup { treeid: 0, objectid: SUBVOL_ROOT_INO, name: [0; 4080] });
    // SAFETY: INO_LOOKUP reads and writes a `struct btrfs_ioctl_ino_lookup_args`, which
    // `InoLookup` is.
    unsafe { rustix::ioctl::ioctl(fd, Updater::<INO_LOOKUP, InoLookup>::new(&mut args)) }?;
    Ok(args.treeid)
}

/// Deletes the subvolume with id `id` of the filesystem `fs` is on, wherever it is now: the
/// one a caller checked through its own descriptor, not whatever is at a name meanwhile.
/// `ErrorKind::Unsupported` before Linux 5.7 (the caller deletes by name then).
pub fn destroy_subvolume_by_id(fs: BorrowedFd, id: u64) -> io::Result<()> {
    let mut v2 = Box::new(VolArgsV2 { fd: 0, transid: 0, flags: SUBVOL_SPEC_BY_ID, unused: [0; 4], name: [0; 4040] });
    v2.name[..8].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: SNAP_DESTROY_V2 reads a `struct btrfs_ioctl_vol_args_v2`, which `VolArgsV2` is
    // (`subvolid` shares the union with `name`).
    match unsafe { rustix::ioctl::ioctl(fs, Setter::<SNAP_DESTROY_V2, VolArgsV2>::new(*v2)) } {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTTY) => Err(io::ErrorKind::Unsupported.into()),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the subvolumes deleted so far on the filesystem of `fd` are cleaned up, so
/// that their space is free (`BTRFS_IOC_SUBVOL_SYNC_WAIT`, Linux 6.8). `Ok(false)` on a kernel
/// without the call: the space comes back when the kernel's cleaner gets to it.
pub fn wait_for_deleted(fd: BorrowedFd) -> io::Result<bool> {
    let args = SubvolWait { subvolid: 0, mode: WAIT_FOR_QUEUED, count: 0 };
    // SAFETY: SUBVOL_SYNC_WAIT reads a `struct btrfs_ioctl_subvol_wait`, which `SubvolWait` is.
    match unsafe { rustix::ioctl::ioctl(fd, Setter::<SUBVOL_SYNC_WAIT, SubvolWait>::new(args)) } {
        // ENOENT: nothing is queued (any more).
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
        Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_are_laid_out_as_the_kernels() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::offset_of!(VolArgsV2, name), 56);
        assert_eq!(std::mem::size_of::<SubvolWait>(), 16);
        assert_eq!(std::mem::size_of::<InoLookup>(), 4096);
        assert_eq!(INO_LOOKUP as u64, 0xd000_9412);
        // As in linux/btrfs.h: _IOW(0x94, 1, struct btrfs_ioctl_vol_args) and friends.
        assert_eq!(SNAP_CREATE as u64, 0x5000_9401);
        assert_eq!(SNAP_DESTROY_V2 as u64, 0x5000_943f);
        assert_eq!(SUBVOL_GETFLAGS as u64, 0x8008_9419);
        assert_eq!(SUBVOL_SETFLAGS as u64, 0x4008_941a);
    }

    #[test]
    fn a_name_must_be_one_component() {
        for bad in [c"", c"a/b", c"../x", c".", c".."] {
            assert!(vol_args(0, bad).is_err(), "{bad:?}");
        }
        assert!(vol_args(0, c"ok").is_ok());
    }

    #[test]
    fn a_plain_directory_is_not_a_subvolume() {
        let d = std::env::temp_dir();
        let fd =
            rustix::fs::open(&d, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty())
                .unwrap();
        // /tmp is rarely a subvolume root; whatever it is, the answer agrees with its inode.
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!(is_subvolume(&fd).unwrap(), st.st_ino == SUBVOL_ROOT_INO && is_btrfs(&fd).unwrap());
    }
}
