//! Placement: where a new snapshot's entry comes from — a hard link to the previous
//! snapshot's copy, or a fresh copy. Every build decides it here, the local walk
//! (`source::local`) and a pulled host (`source::remote::pull`) alike, so that a new way of
//! placing an entry (a reflink, say) is added in this one module plus the copy paths.
//!
//! Two steps, both free of syscalls of their own beyond the one `linkat`:
//!
//! 1. **The quick check** ([`unchanged`]): an entry is unchanged when its type, permissions,
//!    owner, size and mtime (to the nanosecond) match the previous copy's. This is rsync's rule
//!    plus mode and owner, which a hard link would otherwise silently carry over from the old
//!    copy. The new entry's side is a [`QuickAttrs`], made from a local `Stat` or from the
//!    `Meta` a pull agent sent; the previous copy's side is always a local `Stat`, which the
//!    caller already has (a pull also uses it to choose a delta base). A local build also
//!    compares extended attributes (ACLs included) where the source's ctime says they may
//!    have changed since the link base was made ([`xattrs_differ`]): `setfattr` and
//!    `setfacl` change nothing else the check sees. A pull does the same with the attributes
//!    the agent sends for such files ([`sent_xattrs_differ`]).
//! 2. **The link** ([`place`]): `linkat` from the previous snapshot's directory. When the
//!    previous copy has reached the filesystem's link count limit (`EMLINK`, 65 000 on ext4),
//!    the caller copies instead and the fallback is counted; a destination-wide error (no
//!    space, read-only, I/O error) is returned; any other failure means "copy".
//!
//! 3. **The block-sharing base** ([`share_base`]): a changed regular file of more than 1 MiB
//!    whose previous copy is a regular file of more than 1 MiB is written, where the
//!    destination supports `FICLONE` (btrfs, XFS with `reflink=1`), as a reflink of that copy
//!    plus only the changed blocks (`store::delta`); the copy paths try it and copy plainly
//!    when the filesystem refuses. The blocks a chunk record (or the block comparison) finds
//!    unchanged are the previous copy's: the result is as trustworthy as that copy, exactly as
//!    a hard link to it is (a copy changed on the disk with its size and mtime put back, or a
//!    forged record, gives a file its manifest hash does not match, which verify reports).
//!
//! A previous copy whose inode a verify found damaged ([`Avoid`], from the drive's damage
//! record, `ops::state::DamageRecord`, handed to the build with the link base) is never linked: the entry is copied afresh from the
//! source, so damage never spreads into a new snapshot.

use std::collections::HashSet;
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::RwLock;

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

use crate::fs::fsops;
use crate::store::delta::{self, Delta, Record};

/// What the quick check compares, whichever side it comes from (see [`QuickAttrs::of`] and
/// `proto::Meta::quick`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuickAttrs {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
}

impl QuickAttrs {
    /// The compared attributes of a local `Stat`.
    #[inline]
    pub fn of(st: &Stat) -> QuickAttrs {
        QuickAttrs {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            // The kernel never reports a negative size; the cast is one-to-one anyway, so two
            // stats compare exactly as their raw fields do.
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
        }
    }
}

/// The quick check: whether the entry described by `new` is unchanged since `prev`, the
/// previous snapshot's copy.
#[inline]
pub fn unchanged(new: &QuickAttrs, prev: &Stat) -> bool {
    *new == QuickAttrs::of(prev)
}

/// Whether the entry `name` of the source directory `src_dir` (status `new`) and its previous
/// copy in `prev_dir` (status `prev`) pass the quick check but differ in their extended
/// attributes (ACLs included): `setfattr` and `setfacl` change only the ctime, which cannot be
/// compared with a copy's. Asked only where the source's ctime is not older than
/// `settled_before` (the link base's walk start, `LinkBase::settled_before`; `None`: always),
/// so a run reads the attributes of the entries changed since, not of all. Attributes that
/// cannot be read count as different: the entry is copied.
pub fn xattrs_differ(
    src_dir: BorrowedFd,
    prev_dir: BorrowedFd,
    name: &CStr,
    new: &Stat,
    prev: &Stat,
    settled_before: Option<i64>,
) -> bool {
    if settled_before.is_some_and(|t| new.st_ctime < t) || !unchanged(&QuickAttrs::of(new), prev) {
        return false;
    }
    let all = |_: &[u8]| true; // this machine's own files: every attribute is kept
    fsops::read_xattrs_at(src_dir, name).map_or(true, |now| previous_xattrs_differ(prev_dir, name, now, all))
}

/// The pull's side of [`xattrs_differ`]: whether a file that passes the quick check (`new`,
/// as the agent sent it, against `prev`) has attributes `sent` (the agent sends them where
/// the file's ctime says they may have changed) other than its previous copy's. Only the
/// attributes a pulled file gets are compared (`fsops::kept_from_pulled_host`): a
/// `security.selinux` label the copy can never have would otherwise make it a copy every time.
pub fn sent_xattrs_differ(
    prev_dir: BorrowedFd,
    name: &CStr,
    new: &QuickAttrs,
    prev: &Stat,
    mut sent: fsops::Xattrs,
) -> bool {
    if !unchanged(new, prev) {
        return false;
    }
    sent.retain(|(n, _)| fsops::kept_from_pulled_host(n));
    previous_xattrs_differ(prev_dir, name, sent, fsops::kept_from_pulled_host)
}

/// Whether `now` differs from the attributes of the previous copy `name` in `prev_dir` whose
/// names pass `compared`, in any order of the names; unreadable ones count as different.
fn previous_xattrs_differ(
    prev_dir: BorrowedFd,
    name: &CStr,
    mut now: fsops::Xattrs,
    compared: fn(&[u8]) -> bool,
) -> bool {
    now.sort_unstable();
    match fsops::read_xattrs_at(prev_dir, name) {
        Ok(mut was) => {
            was.retain(|(n, _)| compared(n));
            was.sort_unstable();
            was != now
        }
        Err(_) => true,
    }
}

/// Inodes `(device, inode)` never used as a link base: damaged copies, which the run reads
/// from the drive's damage record and hands to the build with the link base.
#[derive(Clone, Debug, Default)]
pub struct Avoid(HashSet<(u64, u64)>);

impl FromIterator<(u64, u64)> for Avoid {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(inodes: I) -> Avoid {
        Avoid(inodes.into_iter().collect())
    }
}

impl Avoid {
    /// Whether the previous copy `st` is a damaged inode.
    #[inline]
    fn holds(&self, st: &Stat) -> bool {
        !self.0.is_empty() && self.0.contains(&(st.st_dev, st.st_ino))
    }
}

/// Where an entry comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Hard-linked to the previous snapshot's copy.
    Linked,
    /// To be copied by the caller. `emlink`: the entry was unchanged but its previous copy is
    /// at the link count limit, so a fresh inode chain starts (counted in `emlinkFallbacks`).
    Copy {
        /// The link failed with `EMLINK`.
        emlink: bool,
    },
}

/// The previous snapshot's side of an entry: the directory that holds its copy, that copy's
/// `Stat` (taken by the caller, without following a symlink), and the link base's damaged
/// inodes.
pub type Previous<'a> = (BorrowedFd<'a>, &'a Stat, &'a Avoid);

/// Decides where the entry `name` of `dst` comes from: a link to the previous copy when there
/// is one and the quick check passes and `linkat` succeeds, else a copy. `Err` only for a
/// destination-wide error of the link (`fsops::is_fatal_dest_error`).
#[inline]
pub fn place(prev: Option<Previous>, new: &QuickAttrs, dst: BorrowedFd, name: &CStr) -> io::Result<Placement> {
    match prev {
        Some((dir, st, avoid)) if unchanged(new, st) && !avoid.holds(st) => after_link(fsops::link_at(dir, dst, name)),
        _ => Ok(Placement::Copy { emlink: false }),
    }
}

/// How a build places an unchanged entry: the store's way of sharing it with the previous
/// snapshot (`store::btrfs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// A hard link to the previous copy (the hard-link store).
    #[default]
    Link,
    /// The work tree is a writable btrfs snapshot of the previous snapshot: an unchanged
    /// entry is already there and is left alone (no syscall); a changed one is removed by
    /// the caller and written anew.
    Keep,
    /// The work tree is a fresh btrfs subvolume and the previous snapshot a plain directory
    /// (the first btrfs-store run after hard-link history): an unchanged regular file is a
    /// reflink (`FICLONE`) of the previous copy, sharing its blocks; anything else a copy.
    Clone,
}

/// [`place`] for the store's [`Method`]. `Placement::Linked` means "shared with the previous
/// copy" whichever the method: its hash is inherited from the previous manifest.
#[inline]
pub fn place_by(
    method: Method,
    prev: Option<Previous>,
    new: &QuickAttrs,
    dst: BorrowedFd,
    name: &CStr,
) -> io::Result<Placement> {
    match method {
        Method::Link => place(prev, new, dst, name),
        Method::Keep => Ok(match prev {
            Some((_, st, avoid)) if unchanged(new, st) && !avoid.holds(st) => Placement::Linked,
            _ => Placement::Copy { emlink: false },
        }),
        Method::Clone => match prev {
            Some((dir, st, avoid))
                if unchanged(new, st)
                    && !avoid.holds(st)
                    && fsops::file_type(st) == rustix::fs::FileType::RegularFile =>
            {
                after_clone(clone_at(dir, st, dst, name), dst, name)
            }
            _ => Ok(Placement::Copy { emlink: false }),
        },
    }
}

/// For [`Method::Keep`]: whether the entry described by `new` stays as the work tree has it
/// (the previous copy passes the quick check and is not damaged). Everything else at its name
/// is removed before the entry is written.
#[inline]
pub fn keeps(prev: Option<&Stat>, new: &QuickAttrs, avoid: &Avoid) -> bool {
    prev.is_some_and(|st| unchanged(new, st) && !avoid.holds(st))
}

/// Reflinks the previous copy `name` of `dir` (whose stat is `st`) as `name` in `dst`, with
/// its owner, mode, extended attributes and times.
///
/// The previous copy is opened by [`open_previous`], as in [`share`].
fn clone_at(dir: BorrowedFd, st: &Stat, dst: BorrowedFd, name: &CStr) -> io::Result<()> {
    let (src, _) = open_previous(dir, name, st)?;
    let out = fsops::create_file_at(dst, name)?;
    rustix::fs::ioctl_ficlone(&out, &src)?;
    fsops::apply_meta_fd(Some(std::os::fd::AsFd::as_fd(&src)), std::os::fd::AsFd::as_fd(&out), st)
}

/// The previous copy `name` in `dir`, whose status the caller read as `st`: opened by
/// [`fsops::open_regular_at`] (whoever writes the disk may have swapped a symlink or a FIFO in
/// since, whose plain open would follow it or wait for a writer forever), and only while it is
/// still that file (device and inode). With its status now.
fn open_previous(dir: BorrowedFd, name: &CStr, st: &Stat) -> io::Result<(File, Stat)> {
    let (prev, now) = fsops::open_regular_at(dir, name)?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(io::Error::other("the previous copy was replaced"));
    }
    Ok((prev, now))
}

/// What the outcome of a reflink means: anything but a destination-wide error leaves no
/// partial file and means "copy".
fn after_clone(cloned: io::Result<()>, dst: BorrowedFd, name: &CStr) -> io::Result<Placement> {
    match cloned {
        Ok(()) => Ok(Placement::Linked),
        Err(e) => {
            let _ = rustix::fs::unlinkat(dst, name, rustix::fs::AtFlags::empty());
            if fsops::is_fatal_dest_error(&e) {
                Err(e)
            } else {
                Ok(Placement::Copy { emlink: false })
            }
        }
    }
}

/// The previous copy a changed regular file `new` may share blocks with: a regular file, not
/// damaged, and both of more than [`crate::store::delta::CHUNKED_ABOVE`] bytes (smaller files
/// are cheaper to copy than to clone and compare). `None`: copy plainly.
#[inline]
pub fn share_base<'a>(prev: Option<Previous<'a>>, new: &QuickAttrs) -> Option<Previous<'a>> {
    let (dir, st, avoid) = prev?;
    let big = |size: u64| size > crate::store::delta::CHUNKED_ABOVE;
    let ok = fsops::file_type(st) == FileType::RegularFile
        && new.mode & 0o170000 == 0o100000
        && big(new.size)
        && big(u64::try_from(st.st_size).unwrap_or(0))
        && !avoid.holds(st);
    ok.then_some((dir, st, avoid))
}

/// Devices whose filesystem refused `FICLONE` (ext4, tmpfs …): not asked again in this process.
static NO_CLONE: RwLock<Option<HashSet<u64>>> = RwLock::new(None);

/// Writes a changed file into `dst` (new, empty, open read and write, on the device `dev`) as
/// a reflink of its previous copy `base` (named `name` in its directory) plus only the blocks
/// that differ from `src` (`store::delta::write_changed`), using the previous copy's chunk
/// `record` when it describes that copy (size and mtime), else comparing block by block.
/// The previous copy is opened by [`open_previous`]. `None`: it cannot share blocks (`dst` is
/// untouched; copy plainly).
pub fn share(
    base: Previous,
    name: &CStr,
    record: Option<&Record>,
    src: &File,
    dst: &File,
    dev: u64,
    buf: &mut Vec<u8>,
) -> Option<io::Result<Delta>> {
    let (dir, st, _) = base;
    let (prev, now) = open_previous(dir, name, st).ok()?;
    if !clone_into(&prev, dst, dev) {
        return None;
    }
    let chunks = record.filter(|r| r.describes(&now)).map_or(&[][..], |r| &r.chunks);
    Some(delta::write_changed(src, dst, chunks, buf))
}

/// `FICLONE`s the previous copy `prev` (open, checked to be a regular file) into `dst` (new,
/// empty, open for writing on the device `dev`); `false` when the filesystem cannot (then it
/// is not asked again for `dev` in this process) or refuses this file. The pull writes a
/// changed file into such a clone comparing block by block (`delta::write_differing`).
pub fn clone_into(prev: &File, dst: &File, dev: u64) -> bool {
    if NO_CLONE.read().expect("no-clone devices poisoned").as_ref().is_some_and(|s| s.contains(&dev)) {
        return false;
    }
    match delta::reflink(prev, dst) {
        Ok(()) => true,
        Err(e) => {
            let refused = [Errno::OPNOTSUPP, Errno::NOTTY, Errno::XDEV, Errno::NOSYS];
            if refused.iter().any(|r| e.raw_os_error() == Some(r.raw_os_error())) {
                NO_CLONE.write().expect("no-clone devices poisoned").get_or_insert_with(HashSet::new).insert(dev);
            }
            false
        }
    }
}

/// What the outcome of `linkat` means.
fn after_link(linked: io::Result<()>) -> io::Result<Placement> {
    match linked {
        Ok(()) => Ok(Placement::Linked),
        // The link count limit: start a fresh inode chain instead of failing, and count it.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MLINK.raw_os_error()) => {
            Ok(Placement::Copy { emlink: true })
        }
        Err(e) if fsops::is_fatal_dest_error(&e) => Err(e),
        Err(_) => Ok(Placement::Copy { emlink: false }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags};
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        rustix::fs::open(p, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty())
            .unwrap()
    }

    /// A previous copy, its stat, and an empty destination directory.
    struct Scene {
        _tmp: tempfile::TempDir,
        prev_dir: OwnedFd,
        dst_dir: OwnedFd,
        st: Stat,
        dst_path: std::path::PathBuf,
    }

    fn scene() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let (prev, dst) = (tmp.path().join("prev"), tmp.path().join("dst"));
        std::fs::create_dir(&prev).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(prev.join("f"), "content\n").unwrap();
        let prev_dir = open_dir(&prev);
        let st = fsops::stat_at(prev_dir.as_fd(), c"f").unwrap();
        Scene { prev_dir, dst_dir: open_dir(&dst), st, dst_path: dst, _tmp: tmp }
    }

    #[test]
    fn all_compared_attributes_equal_is_a_link() {
        let s = scene();
        let new = QuickAttrs::of(&s.st);
        assert!(unchanged(&new, &s.st));
        let placed =
            place(Some((s.prev_dir.as_fd(), &s.st, &Avoid::default())), &new, s.dst_dir.as_fd(), c"f").unwrap();
        assert_eq!(placed, Placement::Linked);
        assert_eq!(std::fs::metadata(s.dst_path.join("f")).unwrap().ino(), s.st.st_ino);
    }

    #[test]
    fn any_compared_attribute_that_differs_is_a_copy() {
        let s = scene();
        let same = QuickAttrs::of(&s.st);
        type Change = fn(&mut QuickAttrs);
        let changes: [(&str, Change); 8] = [
            ("type", |a| a.mode = (a.mode & 0o7777) | 0o120000),
            ("permissions", |a| a.mode ^= 0o001),
            ("set-id bit", |a| a.mode ^= 0o4000),
            ("owner", |a| a.uid += 1),
            ("group", |a| a.gid += 1),
            ("size", |a| a.size += 1),
            ("mtime seconds", |a| a.mtime -= 1),
            ("mtime nanoseconds", |a| a.mtime_nsec = (a.mtime_nsec + 1) % 1_000_000_000),
        ];
        for (what, change) in changes {
            let mut new = same;
            change(&mut new);
            assert!(!unchanged(&new, &s.st), "{what}");
            let placed =
                place(Some((s.prev_dir.as_fd(), &s.st, &Avoid::default())), &new, s.dst_dir.as_fd(), c"f").unwrap();
            assert_eq!(placed, Placement::Copy { emlink: false }, "{what}");
            assert!(!s.dst_path.join("f").exists(), "{what}: nothing is linked");
        }
    }

    #[test]
    fn a_damaged_previous_copy_is_never_linked() {
        let s = scene();
        let new = QuickAttrs::of(&s.st);
        // Another inode on the list does not matter; this one does.
        let other: Avoid = [(s.st.st_dev, u64::MAX)].into_iter().collect();
        assert!(!other.holds(&s.st));
        let this: Avoid = [(s.st.st_dev, u64::MAX), (s.st.st_dev, s.st.st_ino)].into_iter().collect();
        let placed = place(Some((s.prev_dir.as_fd(), &s.st, &this)), &new, s.dst_dir.as_fd(), c"f").unwrap();
        assert_eq!(placed, Placement::Copy { emlink: false });
        assert!(!s.dst_path.join("f").exists());
    }

    #[test]
    fn no_previous_copy_is_a_copy() {
        let s = scene();
        let placed = place(None, &QuickAttrs::of(&s.st), s.dst_dir.as_fd(), c"f").unwrap();
        assert_eq!(placed, Placement::Copy { emlink: false });
    }

    #[test]
    fn attributes_not_compared_do_not_matter() {
        // atime, ctime, inode and link count are not part of the check.
        let s = scene();
        let mut other = s.st;
        other.st_atime -= 10;
        other.st_ctime -= 10;
        other.st_ino += 1;
        other.st_nlink += 1;
        assert!(unchanged(&QuickAttrs::of(&other), &s.st));
    }

    #[test]
    fn only_a_large_undamaged_regular_previous_copy_is_a_sharing_base() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("big"), vec![1u8; 2 << 20]).unwrap();
        std::fs::write(tmp.path().join("small"), b"x").unwrap();
        std::os::unix::fs::symlink("big", tmp.path().join("link")).unwrap();
        let dir = open_dir(tmp.path());
        let st = |n: &CStr| fsops::stat_at(dir.as_fd(), n).unwrap();
        let (big, small, link) = (st(c"big"), st(c"small"), st(c"link"));
        let mut new = QuickAttrs::of(&big);
        new.size += 1;
        let none = Avoid::default();
        assert!(share_base(Some((dir.as_fd(), &big, &none)), &new).is_some());
        assert!(share_base(None, &new).is_none());
        assert!(share_base(Some((dir.as_fd(), &small, &none)), &new).is_none(), "small previous copy");
        assert!(
            share_base(Some((dir.as_fd(), &link, &none)), &new).is_none(),
            "a symlink planted as the previous copy"
        );
        let mut tiny = new;
        tiny.size = 10;
        assert!(share_base(Some((dir.as_fd(), &big, &none)), &tiny).is_none(), "small new version");
        let damaged: Avoid = [(big.st_dev, big.st_ino)].into_iter().collect();
        assert!(share_base(Some((dir.as_fd(), &big, &damaged)), &new).is_none(), "damaged previous copy");
    }

    #[test]
    fn a_link_count_at_its_limit_is_a_copy_counted_as_emlink() {
        let emlink = io::Error::from(rustix::io::Errno::MLINK);
        assert_eq!(after_link(Err(emlink)).unwrap(), Placement::Copy { emlink: true });
    }

    #[test]
    fn a_destination_wide_link_error_is_returned_and_others_mean_copy() {
        let nospc = after_link(Err(io::Error::from(rustix::io::Errno::NOSPC))).unwrap_err();
        assert_eq!(nospc.raw_os_error(), Some(rustix::io::Errno::NOSPC.raw_os_error()));
        for e in [rustix::io::Errno::NOENT, rustix::io::Errno::PERM, rustix::io::Errno::XDEV] {
            assert_eq!(after_link(Err(io::Error::from(e))).unwrap(), Placement::Copy { emlink: false }, "{e:?}");
        }
        assert_eq!(after_link(Ok(())).unwrap(), Placement::Linked);
    }

    #[test]
    fn a_vanished_previous_copy_is_a_copy() {
        // The quick check passed on a stat taken earlier, then the link found nothing.
        let s = scene();
        let new = QuickAttrs::of(&s.st);
        rustix::fs::unlinkat(s.prev_dir.as_fd(), c"f", rustix::fs::AtFlags::empty()).unwrap();
        let placed =
            place(Some((s.prev_dir.as_fd(), &s.st, &Avoid::default())), &new, s.dst_dir.as_fd(), c"f").unwrap();
        assert_eq!(placed, Placement::Copy { emlink: false });
    }

    /// Method::Clone opens the previous copy after the caller's stat of it: a FIFO swapped in
    /// meanwhile by whoever writes the disk is refused at once (a copy), not waited on forever.
    #[test]
    fn clone_does_not_wait_on_a_fifo_swapped_in_after_the_stat() {
        let s = scene();
        let new = QuickAttrs::of(&s.st);
        let prev_path = s.dst_path.with_file_name("prev").join("f");
        std::fs::remove_file(&prev_path).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, &prev_path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let (prev_dir, dst_dir, st) = (s.prev_dir.try_clone().unwrap(), s.dst_dir.try_clone().unwrap(), s.st);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let placed =
                place_by(Method::Clone, Some((prev_dir.as_fd(), &st, &Avoid::default())), &new, dst_dir.as_fd(), c"f");
            let _ = tx.send(placed.map_err(|e| e.to_string()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        if got.is_err() {
            // Blocked in the open: a writer releases it, so that the test ends.
            let _ = rustix::fs::open(&prev_path, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty());
        }
        assert_eq!(got, Ok(Ok(Placement::Copy { emlink: false })), "waited on the FIFO");
        assert!(!s.dst_path.join("f").exists(), "nothing is left at the name");
    }

    /// A pulled host's attributes that its copies never get (`trusted.*`, `security.selinux`)
    /// do not make an unchanged file differ from its previous copy; a kept one does.
    #[test]
    fn attributes_a_pulled_copy_never_gets_are_not_compared() {
        let s = scene();
        let new = QuickAttrs::of(&s.st);
        let x = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        let dropped = vec![x("trusted.overlay.opaque", "y"), x("security.selinux", "system_u:object_r:etc_t:s0")];
        assert!(!sent_xattrs_differ(s.prev_dir.as_fd(), c"f", &new, &s.st, dropped.clone()));
        let kept = [dropped, vec![x("user.tag", "1")]].concat();
        assert!(sent_xattrs_differ(s.prev_dir.as_fd(), c"f", &new, &s.st, kept));
    }
}
