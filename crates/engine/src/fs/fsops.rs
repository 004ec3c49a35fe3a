//! Low-level operations on one entry, relative to open directory descriptors.
//!
//! Everything here works on `(directory fd, name)` pairs rather than full paths: the kernel
//! then resolves one component per call instead of the whole path, which is what makes a
//! hard-link snapshot cost about one `fstatat` and one `linkat` per unchanged file (rsync 3.5
//! re-resolves the link-dest path from `/` for every file; see the performance issue).

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Stat, Timestamps, XattrFlags};

use crate::store::delta::ChunkHasher;
use crate::store::manifest::Hash;

/// Flags for opening source entries: never follow a symlink swapped in under us, and do not
/// touch access times (where permitted).
fn src_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// `/proc/self/fd/N`: a path naming the very file `fd` holds, for calls that take a path;
/// `for_child`: `/proc/<pid>/fd/N`, which a program this process starts resolves the same way.
pub fn proc_path(fd: BorrowedFd, for_child: bool) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    match for_child {
        true => format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()).into(),
        false => format!("/proc/self/fd/{}", fd.as_raw_fd()).into(),
    }
}

/// Opens, with `flags`, the file an `O_PATH` descriptor pins (through its [`proc_path`]): the
/// same inode, whatever was renamed or planted at its name since.
pub fn reopen_pinned(pinned: BorrowedFd, flags: OFlags) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(proc_path(pinned, false), flags, Mode::empty())?)
}

/// The kernel's id of the mount `fd` is on (`statx` `STATX_MNT_ID`): a directory whose id
/// differs from its parent's is a mount point (a subvolume or a snapshot is not one: it shares
/// its filesystem's mount).
pub fn mount_id(fd: BorrowedFd) -> io::Result<u64> {
    let st = rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)?;
    Ok(st.stx_mnt_id)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd, name: &CStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Opens a directory below `dir` without following symlinks.
pub fn open_dir_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, src_flags() | OFlags::DIRECTORY, Mode::empty())?)
}

/// The file type bits of a `Stat`.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Whether the content may have changed between two stats of the same open file.
pub fn changed_while_open(before: &Stat, after: &Stat) -> bool {
    before.st_size != after.st_size
        || before.st_mtime != after.st_mtime
        || before.st_mtime_nsec != after.st_mtime_nsec
        || before.st_ctime != after.st_ctime
        || before.st_ctime_nsec != after.st_ctime_nsec
}

/// `linkat(from_dir/name, to_dir/name)`.
pub fn link_at(from: BorrowedFd, to: BorrowedFd, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::linkat(from, name, to, name, AtFlags::empty())?)
}

/// Opens a regular file that a walk listed as one, for reading: a snapshot's (restore) or a
/// live source's, without touching its access time where that is permitted. See
/// [`open_regular_at`].
pub fn open_source_file(dir: BorrowedFd, name: &CStr) -> io::Result<(File, Stat)> {
    // O_NOATIME is refused (EPERM) for files we do not own when we lack CAP_FOWNER.
    match open_regular_with(dir, name, OFlags::NOATIME) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => open_regular_at(dir, name),
        other => other,
    }
}

/// Opens the regular file `name` in `dir` for reading: never through a symlink, never
/// blocking on a FIFO or taking a terminal put in its place (`O_NONBLOCK`, which changes
/// nothing for a regular file's reads), and refusing anything that is not a regular file once
/// open — the type is checked on the open file, so nothing can be swapped in between. Whoever
/// can write a source tree, the backup disk or a pulled host's stream may have put something
/// else under the name since it was listed. Returns the open file's status too, which the
/// check read anyway.
pub fn open_regular_at(dir: BorrowedFd, name: &CStr) -> io::Result<(File, Stat)> {
    open_regular_with(dir, name, OFlags::empty())
}

fn open_regular_with(dir: BorrowedFd, name: &CStr, extra: OFlags) -> io::Result<(File, Stat)> {
    let fd = rustix::fs::openat(dir, name, src_flags() | OFlags::NONBLOCK | extra, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if file_type(&st) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file (replaced since it was listed?); not read",
        ));
    }
    Ok((fd.into(), st))
}

/// Creates a new file for writing; fails if it exists.
pub fn create_file_at(dir: BorrowedFd, name: &CStr) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    Ok(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?.into())
}

/// Creates a new file for reading and writing (a reflink target compared against what it
/// holds, `store::delta`); fails if it exists, never through a symlink.
pub fn create_rw_file_at(dir: BorrowedFd, name: &CStr) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    Ok(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?.into())
}

/// What a copy produced.
pub struct Copied {
    /// BLAKE3 of the whole logical content (holes hash as zeros).
    pub hash: Hash,
    /// Its 1 MiB chunk hashes (`store::delta`; empty for a file of at most 1 MiB).
    pub chunks: Vec<Hash>,
    /// Bytes of data written (holes are not written).
    pub bytes_written: u64,
}

/// Copies `src` to `dst`, hashing as it goes. Sparse files keep their holes: the data
/// segments are found with `SEEK_DATA`/`SEEK_HOLE`, holes are skipped on the destination and
/// fed to the hash as zeros, and the length is set at the end.
pub fn copy_contents(src: &File, st: &Stat, dst: &mut File, buf: &mut Vec<u8>) -> io::Result<Copied> {
    const BUF: usize = 1 << 20;
    buf.resize(BUF, 0);
    let mut hasher = ChunkHasher::new();
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let allocated = u64::try_from(st.st_blocks).unwrap_or(0) * 512;
    let written = if size > 0 && allocated < size {
        copy_sparse(src, dst, size, Some(&mut hasher), buf)?
    } else {
        copy_dense(src, dst, Some(&mut hasher), buf)?
    };
    let (hash, chunks) = hasher.finish();
    Ok(Copied { hash, chunks, bytes_written: written })
}

/// Copies `src` to `dst` without hashing (restore, repair): sparse files keep their holes,
/// dense ones go through `copy_file_range`, so the kernel moves the bytes without a round trip
/// through user space (and may share extents where the filesystem can). At most `st`'s size
/// is copied: a file on the backup disk that someone keeps appending to cannot make a restore
/// fill its target. Returns the bytes of data written.
pub fn copy_plain(src: &File, st: &Stat, dst: &mut File, buf: &mut Vec<u8>) -> io::Result<u64> {
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let allocated = u64::try_from(st.st_blocks).unwrap_or(0) * 512;
    if size > 0 && allocated < size {
        buf.resize(1 << 20, 0);
        return copy_sparse(src, dst, size, None, buf);
    }
    let mut total = 0u64;
    loop {
        if total >= size {
            return Ok(total);
        }
        let want = usize::try_from((size - total).min(1 << 30)).unwrap_or(1 << 30);
        match rustix::fs::copy_file_range(src, None, &*dst, None, want) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            // Another filesystem, an old kernel, or a file type it refuses: copy by hand,
            // from where the kernel stopped (both offsets moved together).
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL)
            | Err(rustix::io::Errno::OPNOTSUPP) => {
                buf.resize(1 << 20, 0);
                return Ok(total + copy_dense(&mut src.take(size - total), dst, None, buf)?);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn copy_dense(
    mut src: impl Read,
    dst: &mut File,
    mut hasher: Option<&mut ChunkHasher>,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn copy_sparse(
    src: &File,
    dst: &mut File,
    size: u64,
    mut hasher: Option<&mut ChunkHasher>,
    buf: &mut [u8],
) -> io::Result<u64> {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let mut pos = 0u64;
    let mut written = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            Err(rustix::io::Errno::NXIO) => size, // only a hole remains
            Err(e) => return Err(e.into()),
        };
        if let Some(h) = hasher.as_deref_mut() {
            let mut hole = data - pos;
            while hole > 0 {
                let n = hole.min(ZEROS.len() as u64) as usize;
                h.update(&ZEROS[..n]);
                hole -= n as u64;
            }
        }
        pos = data;
        if pos >= size {
            break;
        }
        let end = match rustix::fs::seek(src, SeekFrom::Hole(pos)) {
            Ok(h) => h.min(size),
            Err(e) => return Err(e.into()),
        };
        while pos < end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = src.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                break; // file shrank; the caller's re-stat reports it
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[..n]);
            }
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
            written += n as u64;
        }
    }
    dst.set_len(size)?;
    Ok(written)
}

/// Hashes a file's content.
pub fn hash_file(f: &File, buf: &mut Vec<u8>) -> io::Result<Hash> {
    buf.resize(1 << 20, 0);
    let mut hasher = blake3::Hasher::new();
    let mut f = f;
    loop {
        match f.read(buf) {
            Ok(0) => return Ok(*hasher.finalize().as_bytes()),
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copies extended attributes (POSIX ACLs are the `system.posix_acl_*` attributes, so they
/// come along) from one open file to another.
pub fn copy_xattrs_fd(src: BorrowedFd, dst: BorrowedFd) -> io::Result<()> {
    let names = list(|b| rustix::fs::flistxattr(src, b))?;
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        let name = CString::new(name).expect("split on NUL");
        let value = match list(|b| rustix::fs::fgetxattr(src, &name, b)) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => continue,
            Err(e) => return Err(e),
        };
        rustix::fs::fsetxattr(dst, &name, &value, XattrFlags::empty())?;
    }
    Ok(())
}

/// Copies extended attributes between paths without following symlinks (used for device
/// nodes and FIFOs, which cannot be opened safely).
pub fn copy_xattrs_path(src: &CStr, dst: &CStr) -> io::Result<()> {
    let names = list(|b| rustix::fs::llistxattr(src, b))?;
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        let name = CString::new(name).expect("split on NUL");
        let value = list(|b| rustix::fs::lgetxattr(src, &name, b))?;
        rustix::fs::lsetxattr(dst, &name, &value, XattrFlags::empty())?;
    }
    Ok(())
}

/// Calls a "fill this buffer" xattr function, growing the buffer on ERANGE.
fn list(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = f(&mut []).map_err(io::Error::from)?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn timestamps(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: st.st_atime as _, tv_nsec: st.st_atime_nsec as _ },
        last_modification: rustix::fs::Timespec { tv_sec: st.st_mtime as _, tv_nsec: st.st_mtime_nsec as _ },
    }
}

/// Whether this process may give files away (chown to other users).
pub fn can_chown() -> bool {
    rustix::process::geteuid().is_root()
}

/// Applies owner, mode, xattrs and times from `st`/`src` to an open destination. The order
/// matters: chown clears set-id bits, so mode comes after it; times come last because
/// setting xattrs does not touch mtime but writing would.
pub fn apply_meta_fd(src: Option<BorrowedFd>, dst: BorrowedFd, st: &Stat) -> io::Result<()> {
    if can_chown() {
        rustix::fs::fchown(dst, Some(uid(st)), Some(gid(st)))?;
    }
    rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    if let Some(src) = src {
        copy_xattrs_fd(src, dst)?;
    }
    rustix::fs::futimens(dst, &timestamps(st))?;
    Ok(())
}

/// For a directory kept from a writable snapshot of the previous snapshot (the btrfs store):
/// whether `dst` already has what [`apply_meta_fd`] would give it from `st` and `src` — the
/// owner (when this process may set it), the permission bits, the modification time to the
/// nanosecond and exactly the extended attributes of `src` (names and values). Then applying
/// it again would only rewrite the inode (on btrfs a copy-on-write of its metadata, committed
/// by the publish's `syncfs`) without changing anything `rsync -aHAX` compares. The access time
/// is not compared (kept, as an unchanged file's is). Reads only; any error means "no".
pub fn meta_matches_fd(src: Option<BorrowedFd>, dst: BorrowedFd, st: &Stat) -> bool {
    let Ok(now) = rustix::fs::fstat(dst) else { return false };
    if can_chown() && (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid) {
        return false;
    }
    if now.st_mode & 0o7777 != st.st_mode & 0o7777
        || (now.st_mtime, now.st_mtime_nsec) != (st.st_mtime, st.st_mtime_nsec)
    {
        return false;
    }
    let Some(src) = src else { return true };
    xattrs_of_fd(src).is_ok_and(|a| xattrs_of_fd(dst).is_ok_and(|b| a == b))
}

/// The extended attributes of an open file, sorted by name.
fn xattrs_of_fd(fd: BorrowedFd) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let names = list(|b| rustix::fs::flistxattr(fd, b))?;
    let mut out = Vec::new();
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        let name = CString::new(name).expect("split on NUL");
        let value = list(|b| rustix::fs::fgetxattr(fd, &name, b))?;
        out.push((name, value));
    }
    out.sort();
    Ok(out)
}

/// Removes the extended attributes of `dst` that `src` does not have: for a directory kept
/// from a writable snapshot of the previous snapshot, whose attributes [`apply_meta_fd`]
/// would otherwise only add to.
pub fn remove_extra_xattrs_fd(src: BorrowedFd, dst: BorrowedFd) -> io::Result<()> {
    let have = list(|b| rustix::fs::flistxattr(src, b))?;
    let have: HashSet<&[u8]> = have.split(|&c| c == 0).filter(|n| !n.is_empty()).collect();
    let names = list(|b| rustix::fs::flistxattr(dst, b))?;
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty() && !have.contains(n)) {
        let name = CString::new(name).expect("split on NUL");
        match rustix::fs::fremovexattr(dst, &name) {
            // Gone already, or one the destination keeps for itself (a security label the
            // kernel or an LSM sets and may refuse to drop): left, as a fresh directory
            // would have it too.
            Ok(())
            | Err(
                rustix::io::Errno::NODATA
                | rustix::io::Errno::PERM
                | rustix::io::Errno::ACCESS
                | rustix::io::Errno::NOTSUP,
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn uid(st: &Stat) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(st.st_uid)
}
fn gid(st: &Stat) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(st.st_gid)
}

/// Recreates the symlink `src_dir/name` as `dst_dir/dst_name` with its owner and times.
pub fn copy_symlink(
    src_dir: BorrowedFd,
    name: &CStr,
    dst_dir: BorrowedFd,
    dst_name: &CStr,
    st: &Stat,
) -> io::Result<()> {
    let target = rustix::fs::readlinkat(src_dir, name, Vec::new())?;
    rustix::fs::symlinkat(&target, dst_dir, dst_name)?;
    if can_chown() {
        rustix::fs::chownat(dst_dir, dst_name, Some(uid(st)), Some(gid(st)), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    rustix::fs::utimensat(dst_dir, dst_name, &timestamps(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Recreates the FIFO or device node `src_dir/name` as `dst_dir/dst_name` with its owner,
/// mode, xattrs and times.
pub fn copy_special(
    src_dir: BorrowedFd,
    name: &CStr,
    dst_dir: BorrowedFd,
    dst_name: &CStr,
    st: &Stat,
) -> io::Result<()> {
    let ft = file_type(st);
    rustix::fs::mknodat(dst_dir, dst_name, ft, Mode::from_raw_mode(st.st_mode & 0o7777), st.st_rdev)?;
    if can_chown() {
        rustix::fs::chownat(dst_dir, dst_name, Some(uid(st)), Some(gid(st)), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    rustix::fs::chmodat(dst_dir, dst_name, Mode::from_raw_mode(st.st_mode & 0o7777), AtFlags::empty())?;
    let (s, d) = (fd_path(src_dir, name), fd_path(dst_dir, dst_name));
    copy_xattrs_path(&s, &d)?;
    rustix::fs::utimensat(dst_dir, dst_name, &timestamps(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// `/proc/self/fd/N/name`: a path to `name` in an open directory, for the few calls that
/// have no `*at` form.
fn fd_path(dir: BorrowedFd, name: &CStr) -> CString {
    use std::os::unix::ffi::OsStringExt;
    let mut p = proc_path(dir, false).into_os_string().into_vec();
    p.push(b'/');
    p.extend_from_slice(name.to_bytes());
    CString::new(p).expect("no NUL in a file name")
}

/// Creates a directory that only we can enter while it is being filled; its real mode is
/// applied when it is complete.
pub fn make_dir_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    make_dir_with(dir, name, OFlags::empty())
}

/// [`make_dir_at`], the directory opened with `O_NOATIME` where this process may (the owner,
/// or root): for a writable snapshot of the previous snapshot (the btrfs store), where the
/// directory is usually there already and is listed to find what vanished. With `relatime`
/// that first listing would write its access time (older than its ctime or than a day, as in
/// every kept directory): on btrfs a copy-on-write of every directory's inode on every run,
/// committed by the publish's `syncfs`.
pub fn make_dir_at_noatime(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    match make_dir_with(dir, name, OFlags::NOATIME) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => make_dir_at(dir, name),
        other => other,
    }
}

fn make_dir_with(dir: BorrowedFd, name: &CStr, extra: OFlags) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | extra;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Whether an I/O error concerns the destination as a whole (no space, read-only, I/O
/// error) and must stop the run, rather than one source file.
pub fn is_fatal_dest_error(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let fatal = [Errno::NOSPC, Errno::DQUOT, Errno::ROFS, Errno::IO, Errno::NOMEM, Errno::MFILE, Errno::NFILE];
    e.raw_os_error().is_some_and(|c| fatal.iter().any(|f| f.raw_os_error() == c))
}

/// A borrowed fd from anything that has one.
pub fn fd<T: AsFd>(t: &T) -> BorrowedFd<'_> {
    t.as_fd()
}

/// Extended attributes as `(name, value)` pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads every extended attribute of an open file (for sending them elsewhere, e.g. to the
/// pull server; the local path copies fd to fd with [`copy_xattrs_fd`]).
pub fn read_xattrs_fd(fd: BorrowedFd) -> io::Result<Xattrs> {
    let names = list(|b| rustix::fs::flistxattr(fd, b))?;
    let mut out = Vec::new();
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split on NUL");
        match list(|b| rustix::fs::fgetxattr(fd, &cname, b)) {
            Ok(v) => out.push((name.to_vec(), v)),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Reads the extended attributes of `name` in `dir` without opening it (FIFOs, devices).
pub fn read_xattrs_at(dir: BorrowedFd, name: &CStr) -> io::Result<Xattrs> {
    let path = fd_path(dir, name);
    let names = list(|b| rustix::fs::llistxattr(&path, b))?;
    let mut out = Vec::new();
    for n in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(n).expect("split on NUL");
        out.push((n.to_vec(), list(|b| rustix::fs::lgetxattr(&path, &cname, b))?));
    }
    Ok(out)
}

/// Owner, permissions and times of an entry, given as values rather than as a `Stat` (the
/// pull server receives them over the wire).
#[derive(Clone, Copy, Debug)]
pub struct Attrs {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_mode` (only the permission bits are applied).
    pub mode: u32,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
}

impl Attrs {
    fn timestamps(&self) -> Timestamps {
        Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: self.atime.0 as _, tv_nsec: self.atime.1 as _ },
            last_modification: rustix::fs::Timespec { tv_sec: self.mtime.0 as _, tv_nsec: self.mtime.1 as _ },
        }
    }
}

/// Whether the extended attribute `name`, sent by a pulled host, is written on this machine:
/// `user.*`, the POSIX ACLs and file capabilities, which describe the file (`rsync -X` keeps
/// them). `trusted.*` and the other `security.*` attributes (`trusted.overlay.redirect`,
/// `security.selinux`, `security.ima`, `security.evm` …) tell this machine's kernel and LSMs
/// how to treat the file: written by root, they would let the other host decide that here.
pub fn kept_from_pulled_host(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || matches!(name, b"system.posix_acl_access" | b"system.posix_acl_default" | b"security.capability")
}

/// The attributes of `xattrs` that a pulled host's entry gets ([`kept_from_pulled_host`]).
pub fn pulled_xattrs_kept(xattrs: &[(Vec<u8>, Vec<u8>)]) -> impl Iterator<Item = &(Vec<u8>, Vec<u8>)> {
    xattrs.iter().filter(|(name, _)| {
        let kept = kept_from_pulled_host(name);
        if !kept {
            warn_dropped_once(name);
        }
        kept
    })
}

/// Warns about a pulled attribute not written, the first time this process drops that name
/// (one `pull` is one run), not once per file: a host with SELinux labels every file. At most
/// [`MAX_DROPPED_NAMED`] names: a hostile agent may send endlessly many.
fn warn_dropped_once(name: &[u8]) {
    static DROPPED: std::sync::Mutex<Option<HashSet<Vec<u8>>>> = std::sync::Mutex::new(None);
    let mut dropped = DROPPED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seen = dropped.get_or_insert_with(HashSet::new);
    if seen.len() < MAX_DROPPED_NAMED && seen.insert(name.to_vec()) {
        let more = if seen.len() == MAX_DROPPED_NAMED { "; further names are not reported" } else { "" };
        tracing::warn!(
            "extended attribute {} of a pulled host's file not written: only user.*, POSIX ACLs and \
             security.capability are, the others would change how this machine treats the file{more}",
            name.escape_ascii()
        );
    }
}

/// How many distinct dropped attribute names [`pulled_xattrs_kept`] warns about.
const MAX_DROPPED_NAMED: usize = 16;

/// [`apply_meta_fd`] from values, for a pulled host: owner, mode, xattrs (only those
/// [`kept_from_pulled_host`]), then times (same order, same reasons).
pub fn apply_attrs_fd(dst: BorrowedFd, a: &Attrs, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    if can_chown() {
        rustix::fs::fchown(dst, Some(rustix::fs::Uid::from_raw(a.uid)), Some(rustix::fs::Gid::from_raw(a.gid)))?;
    }
    rustix::fs::fchmod(dst, Mode::from_raw_mode(a.mode & 0o7777))?;
    for (name, value) in pulled_xattrs_kept(xattrs) {
        let name = CString::new(name.as_slice()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        rustix::fs::fsetxattr(dst, &name, value, XattrFlags::empty())?;
    }
    rustix::fs::futimens(dst, &a.timestamps())?;
    Ok(())
}

/// [`copy_symlink`] from values: creates `name -> target` with its owner and times.
pub fn make_symlink(dst_dir: BorrowedFd, name: &CStr, target: &[u8], a: &Attrs) -> io::Result<()> {
    rustix::fs::symlinkat(target, dst_dir, name)?;
    if can_chown() {
        let (u, g) = (rustix::fs::Uid::from_raw(a.uid), rustix::fs::Gid::from_raw(a.gid));
        rustix::fs::chownat(dst_dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    rustix::fs::utimensat(dst_dir, name, &a.timestamps(), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// [`copy_special`] from values, for a pulled host: a FIFO or device node with owner, mode,
/// xattrs (only those [`kept_from_pulled_host`]) and times.
pub fn make_special(dst_dir: BorrowedFd, name: &CStr, a: &Attrs, rdev: u64, xattrs: &Xattrs) -> io::Result<()> {
    let ft = FileType::from_raw_mode(a.mode);
    if !matches!(ft, FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a FIFO or device node"));
    }
    rustix::fs::mknodat(dst_dir, name, ft, Mode::from_raw_mode(a.mode & 0o7777), rdev)?;
    if can_chown() {
        let (u, g) = (rustix::fs::Uid::from_raw(a.uid), rustix::fs::Gid::from_raw(a.gid));
        rustix::fs::chownat(dst_dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    rustix::fs::chmodat(dst_dir, name, Mode::from_raw_mode(a.mode & 0o7777), AtFlags::empty())?;
    let path = fd_path(dst_dir, name);
    for (n, v) in pulled_xattrs_kept(xattrs) {
        let n = CString::new(n.as_slice()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        rustix::fs::lsetxattr(&path, &n, v, XattrFlags::empty())?;
    }
    rustix::fs::utimensat(dst_dir, name, &a.timestamps(), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_under_a_files_name_is_refused_at_once_not_waited_on() {
        let t = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, t.path().join("f"), FileType::Fifo, Mode::from_raw_mode(0o644), 0)
            .unwrap();
        let dir = rustix::fs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        // On a thread: without O_NONBLOCK the open waits for a writer that never comes.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(open_source_file(dir.as_fd(), c"f").map(|_| ()).map_err(|e| e.to_string())));
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the open waited for a writer");
        assert!(got.unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn a_plain_copy_stops_at_the_size_it_was_given() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("src"), b"0123456789").unwrap();
        let src = File::open(t.path().join("src")).unwrap();
        let st = rustix::fs::fstat(&src).unwrap();
        // The file grows after it was looked at (someone appends to it on the backup disk).
        std::fs::OpenOptions::new().append(true).open(t.path().join("src")).unwrap().write_all(b"more more").unwrap();
        let mut dst = File::create(t.path().join("dst")).unwrap();
        let n = copy_plain(&src, &st, &mut dst, &mut Vec::new()).unwrap();
        assert_eq!(n, 10);
        assert_eq!(std::fs::read(t.path().join("dst")).unwrap(), b"0123456789");
    }

    /// An attribute of every namespace a pulled host may send, as the agent sends them.
    fn sent() -> Xattrs {
        [
            "user.tag",
            "system.posix_acl_access",
            "security.capability",
            "trusted.overlay.redirect",
            "trusted.overlay.opaque",
            "security.selinux",
            "security.ima",
            "security.evm",
        ]
        .iter()
        .map(|n| (n.as_bytes().to_vec(), value_of(n)))
        .collect()
    }

    /// A value the kernel accepts for `name` (an ACL and a capability are parsed).
    fn value_of(name: &str) -> Vec<u8> {
        match name {
            // ACL version 2: owner rwx, user 1000 r--, group r-x, mask r-x, other r-x (a named
            // user, so that the kernel keeps it as an attribute rather than as mode bits).
            "system.posix_acl_access" => {
                let entry = |tag: u16, perm: u16, id: u32| {
                    [&tag.to_le_bytes()[..], &perm.to_le_bytes(), &id.to_le_bytes()].concat()
                };
                let none = u32::MAX;
                let entries = [
                    entry(0x01, 7, none),
                    entry(0x02, 4, 1000),
                    entry(0x04, 5, none),
                    entry(0x10, 5, none),
                    entry(0x20, 5, none),
                ];
                [2u32.to_le_bytes().to_vec(), entries.concat()].concat()
            }
            // VFS_CAP_REVISION_2, cap_net_bind_service permitted.
            "security.capability" => [0x0200_0000u32, 1 << 10, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect(),
            _ => b"planted".to_vec(),
        }
    }

    fn names(x: &Xattrs) -> Vec<String> {
        let mut n: Vec<String> = x.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect();
        n.sort();
        n
    }

    const KEPT: [&str; 3] = ["security.capability", "system.posix_acl_access", "user.tag"];

    #[test]
    fn only_user_acl_and_capability_attributes_are_kept_from_a_pulled_host() {
        let kept: Xattrs = pulled_xattrs_kept(&sent()).cloned().collect();
        assert_eq!(names(&kept), KEPT);
        assert!(kept_from_pulled_host(b"system.posix_acl_default"));
        assert!(!kept_from_pulled_host(b"system.nfs4_acl") && !kept_from_pulled_host(b"userx.a"));
    }

    /// The pull's writers apply only the kept attributes, to files and directories
    /// (`apply_attrs_fd`) as to FIFOs and device nodes (`make_special`).
    #[test]
    fn a_pulled_entry_gets_no_trusted_or_security_label_attributes() {
        assert!(rustix::process::geteuid().is_root(), "trusted.* and security.* need root: run the tests as root");
        // Under /var/tmp: a disk filesystem with user xattrs and ACLs (not every tmpfs has them).
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let d = rustix::fs::open(dir.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let a = Attrs { uid: 0, gid: 0, mode: 0o100644, atime: (1, 0), mtime: (2, 0) };
        let f = create_file_at(d.as_fd(), c"f").unwrap();
        apply_attrs_fd(f.as_fd(), &a, &sent()).unwrap();
        assert_eq!(names(&read_xattrs_fd(f.as_fd()).unwrap()), KEPT, "a file");
        // user.* is for regular files and directories only (the kernel refuses it on a FIFO).
        let special: Xattrs = sent().into_iter().filter(|(n, _)| !n.starts_with(b"user.")).collect();
        make_special(d.as_fd(), c"p", &Attrs { mode: 0o010644, ..a }, 0, &special).unwrap();
        assert_eq!(names(&read_xattrs_at(d.as_fd(), c"p").unwrap()), KEPT[..2], "a FIFO");
    }
}
