//! Sources read through read-only filesystem snapshots (`sourceSnapshots`, design §10): a
//! wrapper around [`LocalFs`], not a new walk.
//!
//! Before the walk, each btrfs subvolume that holds a source (and, without `oneFileSystem`,
//! each btrfs mount below one) gets a read-only snapshot, all taken one right after the
//! other. The walk then opens its directories there, through [`Roots`], while every recorded
//! path, exclude match, manifest line and message stays the original absolute path.
//!
//! # Where the snapshots live, and how they are found again
//!
//! In `<state dir>/source-snapshots/` ([`STATE_SUBDIR`]) when the state directory is on the
//! same btrfs filesystem (a snapshot can be placed anywhere on its filesystem): nothing is then
//! written into the source's subvolume. Otherwise in
//! `<subvolume root>/.hwc-backup-source-snapshots/` ([`PRIVATE_DIR`]): a directory owned by
//! root, mode 0700, on the subvolume itself, created by the runner and removed when empty. Their
//! entries are named `hwc-backup-<pid>-<unix seconds>-<n>`. Anything that is not exactly that
//! (a symlink, another owner or mode, another filesystem) is refused, never entered.
//!
//! The programs are reached only through descriptors the runner holds (`/proc/<pid>/fd/N`), so
//! renaming or replacing a path while they run cannot point them elsewhere; a snapshot is
//! deleted by its subvolume id, read from the descriptor of the snapshot itself.
//!
//! Snapshots are deleted when the build ends (success, failure, panic). After a `kill -9`,
//! the next run's cleanup deletes those whose name is ours, whose process is gone, that are
//! read-only subvolume roots in our private directory — and nothing else.
//!
//! The walk leaves the private directory out (it exists only while the run takes and reads
//! its snapshots). A nested subvolume that is not a mount point appears in a btrfs snapshot as
//! an empty placeholder directory; the walk reads it live instead, as the plain source would.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use rustix::fs::{Mode, Stat};
use serde::{Deserialize, Serialize};

use super::local::{BuildOptions, BuildResult, LinkBase, Progress, Roots};
use super::quiesce::{Held, HeldUnit};
use super::volume::{Volumes, Want};
use super::{LocalFs, Source};
use crate::error::{Error, Result};
use crate::fs::{Dir, Name};
use crate::job::Job;
use crate::plan::{Quiesce, SourceSnapshots};
use crate::store::manifest::ManifestWriter;

/// The private directory in a subvolume's root that holds its source snapshots.
pub const PRIVATE_DIR: &str = ".hwc-backup-source-snapshots";
/// The directory in the state directory that holds the source snapshots when the state
/// directory is on the same btrfs filesystem as the source.
pub const STATE_SUBDIR: &str = "source-snapshots";
/// The beginning of every source snapshot's name.
pub const NAME_PREFIX: &str = "hwc-backup-";

/// The inode number of a btrfs subvolume's root directory.
const BTRFS_SUBVOL_ROOT_INO: u64 = 256;
/// The inode number of the empty directory a snapshot shows in place of a nested subvolume.
const BTRFS_EMPTY_SUBVOL_DIR_INO: u64 = 2;

/// How one source was read, for meta.json and the run report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRead {
    /// The source, as given.
    pub source: PathBuf,
    /// `btrfs`, `zfs`, `lvm`, or `live` (no filesystem snapshot).
    pub kind: String,
    /// The subvolume snapshotted (its root, as mounted here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subvolume: Option<PathBuf>,
    /// The ZFS dataset (`pool/dataset`) or LVM logical volume (`vg/lv`) snapshotted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// When its snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<Timestamp>,
    /// Why it was read live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Without `oneFileSystem`: how each filesystem mounted below the source was read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<SourceRead>,
}

/// [`LocalFs`] seen through filesystem snapshots. See the module docs.
pub struct FsSnapshots {
    kind: SourceSnapshots,
    program: PathBuf,
    state_dir: Option<PathBuf>,
    zfs: Option<PathBuf>,
    lvm: Option<PathBuf>,
    lvm_size: Option<String>,
    quiesce: Vec<Quiesce>,
    read: Mutex<Vec<SourceRead>>,
    held: Mutex<Vec<HeldUnit>>,
}

impl FsSnapshots {
    /// A wrapper taking snapshots of `kind` (`auto`, `btrfs`, or `none` for quiescing alone;
    /// the others are refused by the plan's validation, and again here), holding the
    /// `quiesce` units still while it does.
    pub fn new(kind: SourceSnapshots, quiesce: Vec<Quiesce>) -> FsSnapshots {
        FsSnapshots {
            kind,
            program: PathBuf::from("btrfs"),
            state_dir: None,
            zfs: None,
            lvm: None,
            lvm_size: None,
            quiesce,
            read: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
        }
    }

    /// Puts the snapshots in `<state_dir>/source-snapshots/` when that is on the same btrfs
    /// filesystem as the source (nothing is then written into the source's subvolume).
    pub fn with_state_dir(mut self, state_dir: PathBuf) -> FsSnapshots {
        self.state_dir = Some(state_dir);
        self
    }

    /// Takes and deletes the snapshots with `program` instead of `btrfs` on PATH.
    pub fn with_program(mut self, program: PathBuf) -> FsSnapshots {
        self.program = program;
        self
    }

    /// ZFS and LVM snapshots with these programs (`None` = `zfs` / `lvm` on PATH) and this
    /// `lvmSnapshotSize` (`None` = the default).
    pub fn with_volumes(mut self, zfs: Option<PathBuf>, lvm: Option<PathBuf>, lvm_size: Option<String>) -> FsSnapshots {
        self.zfs = zfs;
        self.lvm = lvm;
        self.lvm_size = lvm_size;
        self
    }
}

/// The source a local job reads: [`LocalFs`], wrapped when the job asks for snapshots or
/// services held still.
pub fn local_source(job: &Job) -> Box<dyn Source + Sync> {
    let Some(local) = job.local() else { return Box::new(LocalFs) };
    match (local.source_snapshots, local.quiesce.is_empty()) {
        (SourceSnapshots::None, true) => Box::new(LocalFs),
        (kind, _) => {
            let s = FsSnapshots::new(kind, local.quiesce.to_vec())
                .with_state_dir(job.store.state_dir.clone())
                .with_volumes(
                    local.volume_snapshots.zfs.clone(),
                    local.volume_snapshots.lvm.clone(),
                    local.volume_snapshots.lvm_snapshot_size.clone(),
                );
            Box::new(match &local.btrfs {
                Some(p) => s.with_program(p.to_path_buf()),
                None => s,
            })
        }
    }
}

impl Source for FsSnapshots {
    fn preflight(&self, job: &Job) -> Result<()> {
        self.kind.supported()?;
        LocalFs.preflight(job)
    }

    fn build(
        &self,
        opts: &BuildOptions,
        work: &Dir,
        manifest: ManifestWriter,
        base: Option<LinkBase>,
        progress: Progress,
    ) -> Result<BuildResult> {
        self.kind.supported()?;
        if self.kind == SourceSnapshots::None {
            // Services held still without a filesystem snapshot: for the whole walk.
            if !self.quiesce.is_empty() {
                tracing::warn!("no filesystem snapshots: the quiesced services stay stopped for the whole walk");
            }
            let held = Held::hold(&self.quiesce, false)?;
            let built = LocalFs.build(opts, work, manifest, base, progress);
            let released = held.release();
            if let Ok(units) = &released {
                *self.held.lock().expect("not poisoned") = units.clone();
            }
            let built = built?;
            released?;
            return Ok(built);
        }
        let mut taken = Taken {
            program: self.program.clone(),
            state_dir: self.state_dir.clone(),
            subvolumes: Vec::new(),
            snaps: Vec::new(),
            vols: Volumes::new(self.zfs.clone(), self.lvm.clone(), self.lvm_size.as_deref(), self.state_dir.clone()),
        };
        let (mapping, held) = taken.take_all(opts.sources, opts.one_file_system, self.kind, &self.quiesce)?;
        *self.read.lock().expect("not poisoned") = mapping.reads.clone();
        let released_early = match held {
            Held2::Released(units) => {
                *self.held.lock().expect("not poisoned") = units;
                None
            }
            Held2::Still(h) => {
                // Said only when there are services to hold (none is the common case).
                if !self.quiesce.is_empty() {
                    tracing::warn!(
                        "no filesystem snapshot could be taken: the quiesced services stay stopped for the whole walk"
                    );
                }
                Some(h)
            }
        };
        let live: Vec<String> =
            mapping.reads.iter().filter(|r| r.kind == "live").map(|r| r.source.display().to_string()).collect();
        if !live.is_empty() {
            // Said once per run, not per file.
            tracing::info!("read live, without a filesystem snapshot: {}", live.join(", "));
        }
        let wrapped = BuildOptions {
            sources: opts.sources,
            excludes: opts.excludes,
            exclude_patterns: opts.exclude_patterns,
            one_file_system: opts.one_file_system,
            exclude_by: opts.exclude_by,
            threads: opts.threads,
            skip_dir: opts.skip_dir,
            cancel: opts.cancel,
            roots: Some(&mapping),
            method: opts.method,
        };
        let built = super::local::build(&wrapped, work, manifest, base, progress);
        drop(mapping);
        let released = released_early.map(Held::release).transpose();
        if let Ok(Some(units)) = &released {
            *self.held.lock().expect("not poisoned") = units.clone();
        }
        let removed = taken.remove_all();
        let built = built?;
        released?;
        removed?;
        Ok(built)
    }

    fn held_units(&self) -> Vec<HeldUnit> {
        self.held.lock().expect("not poisoned").clone()
    }

    fn nixos_system(&self) -> Option<PathBuf> {
        LocalFs.nixos_system()
    }

    fn source_reads(&self) -> Vec<SourceRead> {
        self.read.lock().expect("not poisoned").clone()
    }
}

/// The quiesced services after the snapshots: released already (what they went through), or
/// still held because no snapshot could be taken.
enum Held2 {
    Released(Vec<HeldUnit>),
    Still(Held),
}

/// One subvolume root holding sources, held open.
struct Subvolume {
    path: PathBuf,
    fd: Dir,
    private: Option<Dir>,
    /// Whether `private` is the state directory's `source-snapshots/` (same btrfs filesystem)
    /// rather than the subvolume root's [`PRIVATE_DIR`].
    in_state: bool,
}

impl Subvolume {
    /// The private directory's path, for messages.
    fn private_path(&self, state_dir: Option<&Path>) -> PathBuf {
        match (self.in_state, state_dir) {
            (true, Some(state)) => state.join(STATE_SUBDIR),
            _ => self.path.join(PRIVATE_DIR),
        }
    }
}

/// One snapshot taken by this run.
struct Snap {
    subvolume: usize,
    name: Name,
    fd: Dir,
    id: u64,
}

/// The subvolumes and snapshots of this run; deleted on drop, also on a panic.
struct Taken {
    program: PathBuf,
    state_dir: Option<PathBuf>,
    subvolumes: Vec<Subvolume>,
    snaps: Vec<Snap>,
    /// The ZFS datasets and LVM volumes, and their snapshots.
    vols: Volumes,
}

/// What a source is snapshotted as: a btrfs subvolume or a ZFS/LVM volume (indices).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    Sub(usize),
    Vol(usize),
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            tracing::warn!("{e}");
        }
    }
}

/// What the walk needs: original path prefixes → where to read them.
struct Mapping {
    /// (original, real, is a btrfs snapshot), longest original first.
    roots: Vec<(PathBuf, PathBuf, bool)>,
    /// Exact directories below a source to read elsewhere (mount points).
    redirects: HashMap<PathBuf, PathBuf>,
    /// Subvolume roots (original paths) whose private directory the walk leaves out.
    hidden: HashMap<PathBuf, CString>,
    reads: Vec<SourceRead>,
}

impl Roots for Mapping {
    fn resolve(&self, p: &Path) -> PathBuf {
        for (orig, real, _) in &self.roots {
            if let Ok(rest) = p.strip_prefix(orig) {
                return join_real(real, rest);
            }
        }
        p.to_path_buf()
    }

    fn redirect(&self, abs: &Path, st: &Stat) -> Option<PathBuf> {
        if let Some(real) = self.redirects.get(abs) {
            return Some(real.clone());
        }
        // A nested subvolume's placeholder in a snapshot: read it live, as the plain walk does.
        if st.st_ino == BTRFS_EMPTY_SUBVOL_DIR_INO && self.in_snapshot(abs) {
            return Some(abs.to_path_buf());
        }
        None
    }

    fn hidden(&self, abs: &Path) -> Option<&CStr> {
        self.hidden.get(abs).map(|c| c.as_c_str())
    }
}

impl Mapping {
    fn in_snapshot(&self, p: &Path) -> bool {
        self.roots.iter().find(|(orig, _, _)| p.starts_with(orig)).is_some_and(|r| r.2)
    }
}

/// `real` joined with `rest`; a bare `/proc/self/fd/N` gets a trailing `/` so that even
/// `lstat` reaches the directory behind the descriptor, not the link.
fn join_real(real: &Path, rest: &Path) -> PathBuf {
    if rest.as_os_str().is_empty() {
        let mut b = real.as_os_str().as_bytes().to_vec();
        if !b.ends_with(b"/") {
            b.push(b'/');
        }
        return PathBuf::from(OsStr::from_bytes(&b));
    }
    real.join(rest)
}

/// `/proc/self/fd/N` for this process, `/proc/<pid>/fd/N` for a child it starts.
fn fd_path(fd: BorrowedFd, for_child: bool) -> PathBuf {
    crate::fs::fsops::proc_path(fd, for_child)
}

/// Where a source can be snapshotted: its subvolume's root, or why not.
fn subvolume_of(path: &Path) -> std::result::Result<PathBuf, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve: {e}"))?;
    if canonical != path {
        return Err(format!("its path leads through a symlink to {}", canonical.display()));
    }
    let md = std::fs::symlink_metadata(path).map_err(|e| format!("cannot inspect: {e}"))?;
    let dir = if md.is_dir() { path } else { path.parent().unwrap_or(Path::new("/")) };
    let fs = crate::fs::fstype::of_path(dir).map_err(|e| format!("cannot inspect its filesystem: {e}"))?;
    if fs != crate::fs::fstype::BTRFS {
        return Err("its filesystem is not btrfs".to_string());
    }
    let st = rustix::fs::stat(dir).map_err(|e| format!("cannot inspect: {e}"))?;
    let mut root = dir.to_path_buf();
    let mut root_st = st;
    while let Some(parent) = root.parent() {
        match rustix::fs::stat(parent) {
            Ok(p) if p.st_dev == st.st_dev => {
                root = parent.to_path_buf();
                root_st = p;
            }
            _ => break,
        }
    }
    if root_st.st_ino != BTRFS_SUBVOL_ROOT_INO {
        return Err(format!(
            "the top of its subvolume as mounted here, {}, is not the subvolume's root (a bind mount or a subvolume mounted by path?)",
            root.display()
        ));
    }
    Ok(root)
}

/// Whether `p` (or its directory) is on a btrfs filesystem.
fn on_btrfs(p: &Path) -> bool {
    let dir = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => p,
        _ => p.parent().unwrap_or(Path::new("/")),
    };
    crate::fs::fstype::of_path(dir).is_ok_and(|t| t == crate::fs::fstype::BTRFS)
}

/// Mount points strictly below `dir`, with their filesystem types, from mountinfo.
fn mounts_below(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mp) = left.split(' ').nth(4) else { continue };
        let fstype = right.split(' ').next().unwrap_or("").to_string();
        let mp = PathBuf::from(OsStr::from_bytes(&unescape(mp)));
        if mp != dir && mp.starts_with(dir) && !out.iter().any(|(m, _)| m == &mp) {
            out.push((mp, fstype));
        }
    }
    out.sort();
    out
}

/// The device of the btrfs mount holding `p` (mountinfo's mount source): two paths with the
/// same one are on one btrfs filesystem, where a snapshot can be placed anywhere.
fn btrfs_device(p: &Path) -> Option<String> {
    let p = std::fs::canonicalize(p).ok()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mp) = left.split(' ').nth(4) else { continue };
        let mp = PathBuf::from(OsStr::from_bytes(&unescape(mp)));
        if !p.starts_with(&mp) {
            continue;
        }
        let mut r = right.split(' ');
        let (fstype, source) = (r.next().unwrap_or(""), r.next().unwrap_or(""));
        let len = mp.as_os_str().len();
        // The last of equal mount points is the one on top.
        if best.as_ref().is_none_or(|b| len >= b.0) {
            best = Some((len, fstype.to_string(), source.to_string()));
        }
    }
    best.filter(|b| b.1 == "btrfs").map(|b| b.2)
}

/// mountinfo's octal escapes (`\040` for a space).
pub(super) fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Runs `btrfs` with `args`; its output on success, else an error with what it said.
fn btrfs(program: &Path, args: &[&OsStr]) -> Result<String> {
    super::volume::run(program, args, "btrfs")
}

/// Whether the subvolume open as `fd` is read-only.
fn is_read_only(program: &Path, fd: BorrowedFd) -> bool {
    let p = fd_path(fd, true);
    btrfs(program, &[OsStr::new("property"), OsStr::new("get"), OsStr::new("-ts"), p.as_os_str(), OsStr::new("ro")])
        .is_ok_and(|o| o.trim() == "ro=true")
}

/// The subvolume id of the subvolume root open as `fd`.
fn subvolume_id(program: &Path, fd: BorrowedFd) -> Result<u64> {
    let p = fd_path(fd, true);
    let out = btrfs(program, &[OsStr::new("inspect-internal"), OsStr::new("rootid"), p.as_os_str()])?;
    out.trim()
        .parse()
        .map_err(|_| Error::Command { what: "btrfs".into(), message: format!("unexpected rootid {out:?}") })
}

/// Opens `parent/name` as the runner's private directory: a directory, not a symlink (through
/// the door, which refuses one naming it), owned by the runner, mode 0700, and (with `dev`) on
/// that device; anything else is refused as unsafe, never used.
pub(super) fn open_private_dir(parent: &Dir, name: &Name, dev: Option<u64>) -> Result<Dir> {
    checked_private(parent.open_dir(name)?, dev)
}

/// `dir`, opened by the caller, if it is the runner's private directory (see
/// [`open_private_dir`]); refused as unsafe otherwise.
pub(super) fn checked_private(dir: Dir, dev: Option<u64>) -> Result<Dir> {
    let st = dir.stat_self()?;
    let uid = rustix::process::geteuid().as_raw();
    if st.st_uid != uid || st.st_mode & 0o7777 != 0o700 || dev.is_some_and(|d| st.st_dev != d) {
        return Err(Error::Unsafe {
            path: dir.path().to_path_buf(),
            message: format!(
                "not the runner's private directory (owner {}, mode {:o}); refusing to use it",
                st.st_uid,
                st.st_mode & 0o7777
            ),
        });
    }
    Ok(dir)
}

/// The process id in one of our snapshot names, `hwc-backup-<pid>-<secs>-<n>`.
pub(super) fn our_name(name: &[u8]) -> Option<u32> {
    let rest = std::str::from_utf8(name.strip_prefix(NAME_PREFIX.as_bytes())?).ok()?;
    let mut parts = rest.split('-');
    let pid: u32 = parts.next()?.parse().ok()?;
    let _secs: u64 = parts.next()?.parse().ok()?;
    let _n: u32 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(pid)
}

impl Taken {
    /// Opens (creating it when missing) the private directory of subvolume `i`, checking it
    /// is ours: a real directory, owned by this user, mode 0700, on the subvolume.
    fn private_dir(&mut self, i: usize) -> Result<()> {
        if self.subvolumes[i].private.is_some() {
            return Ok(());
        }
        if let Some(fd) = self.state_private_dir(i)? {
            self.subvolumes[i].private = Some(fd);
            self.subvolumes[i].in_state = true;
            return Ok(());
        }
        let sv = &self.subvolumes[i];
        let name = Name::fixed(PRIVATE_DIR);
        let where_ = sv.fd.child_path(&name);
        let before = sv.fd.stat_self()?;
        match rustix::fs::mkdirat(sv.fd.fd(), name.as_cstr(), Mode::from_raw_mode(0o700)) {
            Ok(()) => keep_times(sv.fd.fd(), &before),
            Err(rustix::io::Errno::EXIST) => {}
            Err(rustix::io::Errno::ROFS) => {
                return Err(Error::io(
                    "create (read-only to this process: under the NixOS module set local.sourceSnapshots = \"btrfs\" or add the subvolume root to readWritePaths)",
                    &where_,
                    rustix::io::Errno::ROFS.into(),
                ))
            }
            Err(e) => return Err(Error::io("create", &where_, e.into())),
        }
        let root = sv.fd.stat_self()?;
        let dir = open_private_dir(&sv.fd, &name, Some(root.st_dev))?;
        self.subvolumes[i].private = Some(dir);
        Ok(())
    }

    /// `<state_dir>/source-snapshots/`, opened (created when missing) and checked like the
    /// subvolume's own private directory, when the state directory exists and is on the same
    /// btrfs filesystem as subvolume `i`; `None` otherwise.
    fn state_private_dir(&self, i: usize) -> Result<Option<Dir>> {
        let Some(state) = &self.state_dir else { return Ok(None) };
        let sv = &self.subvolumes[i];
        match (btrfs_device(state), btrfs_device(&sv.path)) {
            (Some(a), Some(b)) if a == b => {}
            _ => return Ok(None),
        }
        let Ok(state_dir) = Dir::open_trusted(state) else { return Ok(None) };
        let name = Name::fixed(STATE_SUBDIR);
        match rustix::fs::mkdirat(state_dir.fd(), name.as_cstr(), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                tracing::debug!("cannot use {}: {e}", state_dir.child_path(&name).display());
                return Ok(None);
            }
        }
        open_private_dir(&state_dir, &name, None).map(Some)
    }

    /// Deletes the leftovers of killed runs in subvolume `i`'s private directory.
    fn clean_leftovers(&mut self, i: usize) -> Result<()> {
        let sv = &self.subvolumes[i];
        let Some(dir) = &sv.private else { return Ok(()) };
        for entry in dir.entries()? {
            let bytes = entry.name.as_bytes();
            let Some(pid) = our_name(bytes) else { continue };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue; // a run still going (or this one)
            }
            let Ok(Some(leftover)) = dir.try_open_dir(&entry.name) else { continue };
            let Ok(st) = leftover.stat_self() else { continue };
            if st.st_ino != BTRFS_SUBVOL_ROOT_INO || !is_read_only(&self.program, leftover.fd()) {
                continue;
            }
            let id = subvolume_id(&self.program, leftover.fd())?;
            drop(leftover);
            if let Err(e) = delete(&self.program, sv.fd.fd(), id, &dir.child_path(&entry.name)) {
                // In the shared state directory it may be of another filesystem: its own
                // source's run deletes it.
                match sv.in_state {
                    true => tracing::debug!("{e}"),
                    false => return Err(e),
                }
                continue;
            }
            tracing::warn!(
                "removed the source snapshot {} left by an interrupted run",
                dir.child_path(&entry.name).display()
            );
        }
        Ok(())
    }

    fn subvolume_index(&mut self, root: &Path) -> Result<usize> {
        if let Some(i) = self.subvolumes.iter().position(|s| s.path == root) {
            return Ok(i);
        }
        let fd = Dir::open_trusted(root)?;
        self.subvolumes.push(Subvolume { path: root.to_path_buf(), fd, private: None, in_state: false });
        Ok(self.subvolumes.len() - 1)
    }

    /// What `s` is snapshotted as under `kind`, or why it is read live (`auto`); a source
    /// the asked-for kind cannot snapshot is an error.
    fn target_of(&mut self, s: &Path, kind: SourceSnapshots) -> Result<std::result::Result<Target, String>> {
        let refuse = |why: String| {
            Error::Preflight(format!("source {} cannot have a {} snapshot: {why}", s.display(), kind.as_str()))
        };
        let volume = |vols: &mut Volumes, want: Want| -> std::result::Result<usize, String> {
            let canonical = std::fs::canonicalize(s).map_err(|e| format!("cannot resolve: {e}"))?;
            if canonical != s {
                return Err(format!("its path leads through a symlink to {}", canonical.display()));
            }
            vols.find(s, want)
        };
        Ok(match kind {
            SourceSnapshots::Btrfs => match subvolume_of(s) {
                Ok(root) => Ok(Target::Sub(self.subvolume_index(&root)?)),
                Err(why) => return Err(refuse(why)),
            },
            SourceSnapshots::Zfs | SourceSnapshots::Lvm => {
                let want = if kind == SourceSnapshots::Zfs { Want::Zfs } else { Want::Lvm };
                match volume(&mut self.vols, want) {
                    Ok(i) => Ok(Target::Vol(i)),
                    Err(why) => return Err(refuse(why)),
                }
            }
            SourceSnapshots::Auto | SourceSnapshots::None => match subvolume_of(s) {
                Ok(root) => Ok(Target::Sub(self.subvolume_index(&root)?)),
                Err(why) if on_btrfs(s) => Err(why),
                Err(_) => volume(&mut self.vols, Want::Any).map(Target::Vol),
            },
        })
    }

    /// Finds what to snapshot, cleans up, takes every snapshot one right after the other.
    fn take_all(
        &mut self,
        sources: &[PathBuf],
        one_fs: bool,
        kind: SourceSnapshots,
        quiesce: &[Quiesce],
    ) -> Result<(Mapping, Held2)> {
        let strict = kind == SourceSnapshots::Btrfs;
        let strict_any = matches!(kind, SourceSnapshots::Btrfs | SourceSnapshots::Zfs | SourceSnapshots::Lvm);
        // (original path, what it is snapshotted as or why it is read live)
        let mut wanted: Vec<(PathBuf, std::result::Result<Target, String>)> = Vec::new();
        let mut reads = Vec::new();
        let mut below: Vec<(PathBuf, String)> = Vec::new();
        for s in sources {
            let t = self.target_of(s, kind)?;
            wanted.push((s.clone(), t));
            if std::fs::symlink_metadata(s).is_ok_and(|m| m.is_dir()) {
                below.extend(mounts_below(s));
            }
        }
        // Mounts below a source: with oneFileSystem, the walk must see them as the other
        // filesystems they are (read live: only the directory is kept); without, each one that
        // can (btrfs under "btrfs", ZFS or LVM under "zfs" or "lvm", any under "auto") gets its
        // own snapshot and the others are read live.
        let mut redirect_live = Vec::new();
        let mut below_snap: Vec<(PathBuf, Target)> = Vec::new();
        for (mp, fstype) in below {
            if !one_fs && fstype == "btrfs" && matches!(kind, SourceSnapshots::Btrfs | SourceSnapshots::Auto) {
                match subvolume_of(&mp) {
                    Ok(root) if root == mp => {
                        below_snap.push((mp.clone(), Target::Sub(self.subvolume_index(&root)?)));
                        continue;
                    }
                    Ok(_) | Err(_) if strict => {
                        return Err(Error::Preflight(format!(
                        "the btrfs mount {} below a source cannot have a snapshot of its own (not a subvolume root)",
                        mp.display()
                    )))
                    }
                    _ => {}
                }
            }
            let want = match kind {
                SourceSnapshots::Zfs => Some(Want::Zfs),
                SourceSnapshots::Lvm => Some(Want::Lvm),
                SourceSnapshots::Auto if fstype != "btrfs" => Some(Want::Any),
                _ => None,
            };
            let mut vol_why = None;
            if let (false, Some(want)) = (one_fs, want) {
                match self.vols.find(&mp, want) {
                    Ok(i) if self.vols.list[i].mount_point == mp => {
                        below_snap.push((mp.clone(), Target::Vol(i)));
                        continue;
                    }
                    Ok(_) => {}
                    Err(why) => vol_why = Some(why),
                }
            }
            let why = match (fstype.as_str(), vol_why) {
                ("btrfs", _) => "a btrfs mount that is not a subvolume's root".to_string(),
                (_, Some(why)) => why,
                (other, None) => format!("its filesystem is {other}, not {}", kind.as_str()),
            };
            redirect_live.push((mp, why));
        }
        let used: Vec<Target> = {
            let mut u: Vec<Target> = wanted.iter().filter_map(|w| w.1.as_ref().ok().copied()).collect();
            u.extend(below_snap.iter().map(|b| b.1));
            u.sort();
            u.dedup();
            u
        };
        let mut failed: HashMap<Target, String> = HashMap::new();
        for &t in &used {
            let prepared = match t {
                Target::Sub(i) => self.private_dir(i).and_then(|()| self.clean_leftovers(i)),
                Target::Vol(i) => self.vols.prepare(i),
            };
            if let Err(e) = prepared {
                if strict_any {
                    return Err(e);
                }
                tracing::warn!("{e}");
                failed.insert(t, e.to_string());
            }
        }
        // The snapshots, as close together as possible: nothing else between them, and the
        // services held still only for as long as they take.
        let snapshottable = used.iter().any(|t| !failed.contains_key(t));
        let held = Held::hold(quiesce, snapshottable)?;
        let secs = Timestamp::now().as_second();
        // Where each target's snapshot is read from, and when it was taken.
        let mut times: HashMap<Target, (PathBuf, Timestamp)> = HashMap::new();
        for (n, &t) in used.iter().enumerate() {
            if failed.contains_key(&t) {
                continue;
            }
            let name = format!("{NAME_PREFIX}{}-{secs}-{n}", std::process::id());
            let took = match t {
                Target::Sub(i) => self
                    .snapshot(i, Name::new(name).expect("a name of ours"))
                    .map(|k| join_real(&fd_path(self.snaps[k].fd.fd(), false), Path::new(""))),
                Target::Vol(i) => self.vols.take(i, &name),
            };
            match took {
                Ok(real) => {
                    times.insert(t, (real, Timestamp::now()));
                }
                Err(e) if !strict_any => {
                    tracing::warn!("{e}");
                    failed.insert(t, e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let held = match times.is_empty() {
            true => Held2::Still(held.for_whole_walk()),
            false => Held2::Released(held.release()?),
        };
        let origin_of = |t: &Target| -> PathBuf {
            match t {
                Target::Sub(i) => self.subvolumes[*i].path.clone(),
                Target::Vol(i) => self.vols.list[*i].mount_point.clone(),
            }
        };
        let mut roots = Vec::new();
        let mut hidden = HashMap::new();
        let private = CString::new(PRIVATE_DIR).expect("no NUL");
        for (t, (real, _)) in &times {
            // The btrfs placeholder check applies to btrfs snapshots only (inode 2 is the root
            // of an ext4 filesystem).
            roots.push((origin_of(t), real.clone(), matches!(t, Target::Sub(_))));
        }
        // Also where a snapshot failed after the directory was made: read live, it is there.
        for sv in self.subvolumes.iter().filter(|sv| sv.private.is_some() && !sv.in_state) {
            hidden.insert(sv.path.clone(), private.clone());
        }
        let mut redirects = HashMap::new();
        for (mp, t) in &below_snap {
            match times.get(t) {
                Some((real, _)) => redirects.insert(mp.clone(), real.clone()),
                None => redirects.insert(mp.clone(), mp.clone()),
            };
        }
        for (mp, _) in &redirect_live {
            redirects.insert(mp.clone(), mp.clone());
            // Below a snapshotted path, a live mount point is its own root again.
            roots.push((mp.clone(), mp.clone(), false));
        }
        // Longest original first, so the deepest mapping wins.
        roots.sort_by_key(|r| std::cmp::Reverse(r.0.as_os_str().len()));
        let read_of = |source: &Path, t: &Target| -> SourceRead {
            let taken = times.get(t);
            let (kind, subvolume, volume) = match (t, taken) {
                (_, None) => ("live", None, None),
                (Target::Sub(i), Some(_)) => ("btrfs", Some(self.subvolumes[*i].path.clone()), None),
                (Target::Vol(i), Some(_)) => {
                    let v = &self.vols.list[*i];
                    (v.kind_name(), Some(v.mount_point.clone()), Some(v.name()))
                }
            };
            SourceRead {
                source: source.to_path_buf(),
                kind: kind.into(),
                subvolume,
                volume,
                taken_at: taken.map(|t| t.1),
                note: failed.get(t).cloned(),
                mounts: Vec::new(),
            }
        };
        let mut mounts: Vec<SourceRead> = Vec::new();
        if !one_fs {
            for (mp, t) in &below_snap {
                mounts.push(read_of(mp, t));
            }
            for (mp, why) in &redirect_live {
                mounts.push(SourceRead {
                    source: mp.clone(),
                    kind: "live".into(),
                    subvolume: None,
                    volume: None,
                    taken_at: None,
                    note: Some(why.clone()),
                    mounts: Vec::new(),
                });
            }
            mounts.sort_by(|a, b| a.source.cmp(&b.source));
        }
        for (s, t) in &wanted {
            let mut read = match t {
                Ok(t) => read_of(s, t),
                Err(why) => SourceRead {
                    source: s.clone(),
                    kind: "live".into(),
                    subvolume: None,
                    volume: None,
                    taken_at: None,
                    note: Some(why.clone()),
                    mounts: Vec::new(),
                },
            };
            read.mounts = mounts.iter().filter(|m| m.source.starts_with(s)).cloned().collect();
            reads.push(read);
        }
        Ok((Mapping { roots, redirects, hidden, reads }, held))
    }

    /// Takes a read-only snapshot of subvolume `i` named `name` in its private directory;
    /// returns its index in `snaps`.
    fn snapshot(&mut self, i: usize, name: Name) -> Result<usize> {
        let sv = &self.subvolumes[i];
        let private = sv.private.as_ref().expect("prepared before");
        let dest = fd_path(private.fd(), true).join(name.as_os_str());
        let shown = sv.private_path(self.state_dir.as_deref()).join(name.as_os_str());
        btrfs(
            &self.program,
            &[
                OsStr::new("subvolume"),
                OsStr::new("snapshot"),
                OsStr::new("-r"),
                fd_path(sv.fd.fd(), true).as_os_str(),
                dest.as_os_str(),
            ],
        )
        .map_err(|e| {
            let hint = match e.to_string().contains("Read-only file system") {
                true => format!(
                    " (read-only to this process: under the NixOS module add {} to readWritePaths)",
                    sv.path.display()
                ),
                false => String::new(),
            };
            Error::Command {
                what: "btrfs snapshot".into(),
                message: format!("cannot snapshot {} into {}: {e}{hint}", sv.path.display(), shown.display()),
            }
        })?;
        let fd = private.open_dir(&name)?;
        let st = fd.stat_self()?;
        let id = subvolume_id(&self.program, fd.fd());
        if st.st_ino != BTRFS_SUBVOL_ROOT_INO || id.is_err() {
            return Err(Error::Unsafe { path: shown, message: "not the snapshot just taken".into() });
        }
        self.snaps.push(Snap { subvolume: i, name, fd, id: id? });
        Ok(self.snaps.len() - 1)
    }

    /// Deletes every snapshot taken, and the private directories when empty.
    fn remove_all(&mut self) -> Result<()> {
        let mut first_err = self.vols.remove_all().err();
        for snap in std::mem::take(&mut self.snaps) {
            let sv = &self.subvolumes[snap.subvolume];
            let shown = sv.private_path(self.state_dir.as_deref()).join(snap.name.as_os_str());
            drop(snap.fd);
            if let Err(e) = delete(&self.program, sv.fd.fd(), snap.id, &shown) {
                first_err.get_or_insert(e);
            }
        }
        for sv in &mut self.subvolumes {
            if sv.private.take().is_some() && !sv.in_state {
                let name = Name::fixed(PRIVATE_DIR);
                let before = sv.fd.stat_self();
                let removed = rustix::fs::unlinkat(sv.fd.fd(), name.as_cstr(), rustix::fs::AtFlags::REMOVEDIR);
                if let (Ok(()), Ok(before)) = (removed, before) {
                    keep_times(sv.fd.fd(), &before);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Puts back the times a subvolume root had before the runner added or removed its private
/// directory, so that neither the snapshot nor the live tree records the runner's visit
/// (only the change time moves).
fn keep_times(root: BorrowedFd, before: &Stat) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: before.st_atime as _, tv_nsec: before.st_atime_nsec as _ },
        last_modification: rustix::fs::Timespec { tv_sec: before.st_mtime as _, tv_nsec: before.st_mtime_nsec as _ },
    };
    if let Err(e) = rustix::fs::futimens(root, &times) {
        tracing::warn!("cannot put back the times of a subvolume root: {e}");
    }
}

/// Deletes the subvolume `id` of the filesystem whose subvolume root is open as `root`.
fn delete(program: &Path, root: BorrowedFd, id: u64, shown: &Path) -> Result<()> {
    let p = fd_path(root, true);
    let id_text = id.to_string();
    btrfs(
        program,
        &[OsStr::new("subvolume"), OsStr::new("delete"), OsStr::new("--subvolid"), OsStr::new(&id_text), p.as_os_str()],
    )
    .map(|_| ())
    .map_err(|e| Error::Command {
        what: "btrfs delete".into(),
        message: format!("cannot delete the source snapshot {}: {e}", shown.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(our_name(b"hwc-backup-12-1700000000-0"), Some(12));
        assert_eq!(our_name(b"hwc-backup-12-1700000000"), None);
        assert_eq!(our_name(b"hwc-backup-x-1-0"), None);
        assert_eq!(our_name(b"hwc-backup-12-1-0-extra"), None);
        assert_eq!(our_name(b"other-12-1-0"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape(r"/plain"), b"/plain");
    }

    #[test]
    fn bare_descriptor_paths_end_in_a_slash() {
        assert_eq!(join_real(Path::new("/proc/self/fd/5"), Path::new("")), PathBuf::from("/proc/self/fd/5/"));
        assert_eq!(join_real(Path::new("/proc/self/fd/5"), Path::new("a/b")), PathBuf::from("/proc/self/fd/5/a/b"));
    }
}
