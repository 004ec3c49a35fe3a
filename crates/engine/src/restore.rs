//! Restoring a file or directory from a snapshot.
//!
//! `restore(snapshot, /home/u/.config, /tmp/cfg)` recreates what `/home/u/.config` was at
//! snapshot time as `/tmp/cfg`, with owner, mode, times, xattrs/ACLs, symlinks, special files
//! and hard links. Nothing existing is overwritten unless `force` is set; that check covers
//! the whole tree before the first byte is written.
//!
//! What it trusts: nothing it reads by name. The path is found in the snapshot one component
//! at a time without following a symlink stored there (it points at the live system, not
//! into the snapshot); on the target, everything below the target's own name is reached
//! through directory descriptors with `O_NOFOLLOW`, so a symlink planted there is replaced,
//! never written through; a directory on the target is never deleted (a non-directory over
//! it is refused, `force` or not); a target inside the backup destination is refused; and
//! the snapshot's own `.hwc-backup/` is never restored.
//!
//! Two ways of writing, both safe against an interruption or a power cut:
//!
//! - **The target does not exist** (the usual case): everything is written into a staging
//!   entry `.NAME.hwc-restore` beside the target, flushed with one `syncfs`, then renamed
//!   into place with `RENAME_NOREPLACE`. An interrupted restore leaves no partial target,
//!   only the staging entry, which the next restore to the same target removes. There is no
//!   `fsync` per file: that made restoring 200 000 files fifteen times slower than `cp -a`.
//! - **The target exists** (merging, which needs `force` when anything would be replaced):
//!   each file is written under a temporary name and renamed over the old one, after an
//!   `fsync` when it replaces an existing file, so a power cut never leaves a half-written
//!   file where a good one was.
//!
//! Like the snapshot walk, the copy works on `(directory fd, name)` pairs, one component per
//! system call, and holds one directory listing per level, not a map of the tree.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fsops;
use crate::layout::Snapshot;
use crate::meta::META_DIR;

/// How to restore.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Overwrite existing files.
    pub force: bool,
    /// Only report what would be written.
    pub dry_run: bool,
}

/// What a restore does (or would do) to one entry of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Nothing is there yet.
    New,
    /// Something else is there and is replaced (needs `force`).
    Replaced,
    /// The same entry is there already (type, mode, owner, size, mtime and content): it is
    /// left alone and needs no `force`.
    Unchanged,
    /// A directory over a directory: its entries are merged, its mode and times set.
    Merged,
    /// A directory is there where the snapshot has something else: never deleted, so the
    /// restore is refused.
    Refused,
}

impl Action {
    /// How the dry run shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::New => "new",
            Action::Replaced => "replaced",
            Action::Unchanged => "unchanged",
            Action::Merged => "merged",
            Action::Refused => "refused",
        }
    }
}

/// One entry of a dry run.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// The path on the target.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// What happens to it.
    pub action: Action,
}

/// What a restore did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// `daily/NAME`.
    pub snapshot: String,
    /// The path as it was on the host.
    #[serde(serialize_with = "lossy_path")]
    pub source: PathBuf,
    /// Where it went (`DEST/NAME` when DEST is a directory and the source is not).
    #[serde(serialize_with = "lossy_path")]
    pub target: PathBuf,
    /// Entries written (or that would be).
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Every path a dry run would write, in order. Empty for a real restore, which would
    /// otherwise hold one path per entry in memory.
    #[serde(serialize_with = "crate::verify::lossy_paths")]
    pub written: Vec<PathBuf>,
    /// Every entry of a dry run with what would happen to it. Empty for a real restore.
    pub changes: Vec<Change>,
    /// Paths that existed and are (or would be) replaced; a directory over a directory merges
    /// and an identical entry is left alone, so neither is listed.
    #[serde(serialize_with = "crate::verify::lossy_paths")]
    pub overwritten: Vec<PathBuf>,
    /// Directories where the snapshot has a file, symlink or special file: a restore never
    /// deletes a directory, so any entry here refuses the restore (`--force` or not).
    #[serde(serialize_with = "crate::verify::lossy_paths")]
    pub refused: Vec<PathBuf>,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// The entry to restore, found inside the snapshot without following any symlink.
struct Source {
    /// Its directory in the snapshot.
    dir: OwnedFd,
    /// That directory's path, for messages.
    dir_path: PathBuf,
    /// Its name there.
    name: CString,
    /// Its status.
    st: Stat,
    /// `(device, inode)` of the snapshot directory, whose `.hwc-backup/` is never restored.
    root_id: (u64, u64),
}

fn not_in_snapshot(snapshot: &Snapshot, host_path: &Path) -> Error {
    Error::Snapshot {
        name: snapshot.id(),
        message: format!(
            "{} is not in this snapshot (sources: {})",
            host_path.display(),
            join_paths(&snapshot.meta.sources)
        ),
    }
}

/// Finds `host_path` in the snapshot one component at a time, relative to the snapshot's
/// directory and never following a symlink: a symlink stored in the snapshot points at the
/// live system (`/srv/link -> /data`), and following it would restore live files (perhaps
/// the very ones a restore is meant to replace) as if they came from the backup. Only the
/// last component may be a symlink; it is restored as one.
fn resolve_source(snapshot: &Snapshot, host_path: &Path) -> Result<Source> {
    use std::path::Component;
    if !host_path.is_absolute() {
        return Err(Error::Snapshot {
            name: snapshot.id(),
            message: format!("{} is not an absolute path", host_path.display()),
        });
    }
    let rel = host_path.strip_prefix("/").expect("absolute");
    if rel.starts_with(META_DIR) || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::Snapshot {
            name: snapshot.id(),
            message: format!("{} is not a backed-up path", host_path.display()),
        });
    }
    let root = open_dir(&snapshot.path)?;
    let root_st = rustix::fs::fstat(&root).ctx("inspect", &snapshot.path)?;
    let root_id = (root_st.st_dev, root_st.st_ino);
    let names: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = names.split_last() else {
        // `/`: the whole snapshot, found as its own name in its tier directory.
        let tier_dir = snapshot.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = open_dir(&tier_dir)?;
        let name = cstr(OsStr::new(&snapshot.name));
        let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).ctx("inspect", &snapshot.path)?;
        return Ok(Source { dir, dir_path: tier_dir, name, st, root_id });
    };
    let mut dir = root;
    let mut dir_path = snapshot.path.clone();
    let mut host_prefix = PathBuf::from("/");
    for part in parents {
        let name = cstr(part);
        host_prefix.push(part);
        let inside = dir_path.join(part);
        let st = match rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {
                return Err(not_in_snapshot(snapshot, host_path))
            }
            Err(e) => return Err(Error::io("inspect", &inside, e.into())),
        };
        match fsops::file_type(&st) {
            FileType::Directory => {}
            FileType::Symlink => {
                let to = rustix::fs::readlinkat(&dir, &name, Vec::new()).ctx("read symlink", &inside)?;
                return Err(Error::Snapshot {
                    name: snapshot.id(),
                    message: format!(
                        "{} is below a symlink in the snapshot ({} -> {}); restore the link itself, or the path it points to",
                        host_path.display(),
                        host_prefix.display(),
                        Path::new(OsStr::from_bytes(to.as_bytes())).display()
                    ),
                });
            }
            _ => return Err(not_in_snapshot(snapshot, host_path)),
        }
        dir = fsops::open_dir_at(dir.as_fd(), &name).ctx("open directory", &inside)?;
        dir_path = inside;
    }
    let name = cstr(last);
    let st = match rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Err(not_in_snapshot(snapshot, host_path)),
        Err(e) => return Err(Error::io("inspect", dir_path.join(last), e.into())),
    };
    Ok(Source { dir, dir_path, name, st, root_id })
}

/// The path inside a snapshot of a path as it was on the host, checked as a restore checks
/// it: present, and not below a symlink stored in the snapshot.
pub fn path_in_snapshot(snapshot: &Snapshot, host_path: &Path) -> Result<PathBuf> {
    let src = resolve_source(snapshot, host_path)?;
    Ok(join(&src.dir_path, &src.name))
}

fn join_paths(p: &[PathBuf]) -> String {
    p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Refuses a target inside the backup destination (`<dest>` of `<dest>/<host>/<tier>/<name>`):
/// a published snapshot, a tier, the host directory or anything else there. Decided on the
/// directories the target would really be written in (symlinks and bind mounts included), by
/// device and inode.
fn refuse_inside_destination(snapshot: &Snapshot, target: &Path) -> Result<()> {
    let Some(dest) = snapshot.path.ancestors().nth(3) else { return Ok(()) };
    let Ok(dest_st) = rustix::fs::stat(dest) else { return Ok(()) };
    let id = |st: &Stat| (st.st_dev, st.st_ino);
    let absolute = std::path::absolute(target).ctx("resolve", target)?;
    // The target itself counts when it is a real directory (a file restored onto it lands
    // inside); a symlink there is replaced, never followed.
    let mut probe: Option<&Path> = match rustix::fs::lstat(&absolute) {
        Ok(st) if fsops::file_type(&st) == FileType::Directory => Some(absolute.as_path()),
        _ => absolute.parent(),
    };
    // The nearest directory that exists, resolved as the kernel would resolve it.
    while let Some(p) = probe {
        if let Ok(real) = std::fs::canonicalize(p) {
            for dir in real.ancestors() {
                if rustix::fs::stat(dir).is_ok_and(|st| id(&st) == id(&dest_st)) {
                    return Err(Error::config(
                        "DEST",
                        format!(
                            "{} is inside the backup destination {}; restore somewhere else",
                            target.display(),
                            dest.display()
                        ),
                    ));
                }
            }
            return Ok(());
        }
        probe = p.parent();
    }
    Ok(())
}

/// Restores `host_path` from `snapshot` to `target`.
///
/// `host_path` is found in the snapshot without following symlinks (see
/// [`resolve_source`]). A target that is an existing directory receives a file, symlink or
/// special file inside it (as `cp` does); a directory restored onto a directory merges. A
/// directory on the target is never deleted to make room: such a restore is refused, with
/// `force` too. Nothing below the target's own path is ever reached through a symlink.
pub fn restore(snapshot: &Snapshot, host_path: &Path, target: &Path, opts: RestoreOptions) -> Result<RestoreReport> {
    // The survey and the copy recurse once per directory level and hold two descriptors per
    // level. On a thread with a large stack (reserved, touched only as deep as the tree goes)
    // the descriptor limit is reached first, so a tree deeper than half of `ulimit -n` fails
    // with "Too many open files" naming the directory, instead of overflowing the stack.
    const STACK: usize = 256 << 20;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("restore".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || restore_here(snapshot, host_path, target, opts))
            .map_err(|e| Error::io("start the restore thread for", target, e))?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn restore_here(snapshot: &Snapshot, host_path: &Path, target: &Path, opts: RestoreOptions) -> Result<RestoreReport> {
    let src = resolve_source(snapshot, host_path)?;
    refuse_inside_destination(snapshot, target)?;
    let src_is_dir = fsops::file_type(&src.st) == FileType::Directory;
    let (target, into_dir) = match rustix::fs::lstat(target) {
        Ok(st) if fsops::file_type(&st) == FileType::Directory && !src_is_dir => {
            (target.join(OsStr::from_bytes(src.name.to_bytes())), true)
        }
        _ => (target.to_path_buf(), false),
    };
    let mut report = RestoreReport {
        snapshot: snapshot.id(),
        source: host_path.to_path_buf(),
        target: target.clone(),
        ..Default::default()
    };
    // `.`, `..`, `dir/..` or `/` name no entry of their own: the directory they resolve to
    // is the target (`/` itself is entered as `/` + `.`).
    let target = match target.file_name() {
        Some(_) => target,
        None => std::fs::canonicalize(&target).ctx("resolve", &target)?,
    };
    report.target = target.clone();
    let (to_dir, to_name) = match target.file_name() {
        Some(_) => split(&target),
        None => (target.clone(), ".".into()),
    };
    let to_name = cstr(&to_name);
    // DEST's parent is taken as given (symlinks there are followed, as by `cp`); DEST itself,
    // when the entry goes inside it, was a real directory and must still be one.
    let opened = match into_dir {
        true => rustix::fs::open(
            &to_dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open directory", &to_dir, e.into())),
        false => open_dir(&to_dir),
    };
    let dst_parent = match opened {
        Ok(fd) => Some(fd),
        Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => None,
        Err(e) => return Err(e),
    };
    let target_exists = match &dst_parent {
        Some(d) => match rustix::fs::statat(d, &to_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => true,
            Err(rustix::io::Errno::NOENT) => false,
            Err(e) => return Err(Error::io("inspect", &target, e.into())),
        },
        None => false,
    };
    // Every conflict is found before the first byte is written. A target that does not
    // exist has none, so only a dry run (which lists paths) walks the tree twice.
    if target_exists || opts.dry_run {
        let mut survey = Survey { report: &mut report, list: opts.dry_run, root_id: src.root_id };
        survey.entry(
            src.dir.as_fd(),
            &join(&src.dir_path, &src.name),
            &src.name,
            dst_parent.as_ref().map(|d| d.as_fd()),
            &target,
            &to_name,
        )?;
    }
    if opts.dry_run {
        return Ok(report);
    }
    if let Some(first) = report.refused.first() {
        return Err(Error::Guard(format!(
            "{} is a directory and the snapshot has no directory there; restore never deletes a directory (move it away, or restore into it)",
            first.display()
        )));
    }
    if !opts.force {
        if let Some(first) = report.overwritten.first() {
            return Err(Error::WouldOverwrite { path: first.clone() });
        }
    }
    report.entries = 0;
    report.bytes = 0;
    let dst_parent = match dst_parent {
        Some(d) => d,
        None => {
            crate::fsutil::ensure_dir(&to_dir)?;
            open_dir(&to_dir)?
        }
    };
    let mut copier = Copier {
        dst_root: dst_parent.as_fd(),
        root_id: src.root_id,
        links: HashMap::new(),
        buf: Vec::new(),
        report: &mut report,
    };
    let from_name = &src.name;
    if target_exists {
        copier.merge_entry(
            src.dir.as_fd(),
            &src.dir_path,
            dst_parent.as_fd(),
            &to_dir,
            from_name,
            &to_name,
            Path::new(OsStr::from_bytes(to_name.to_bytes())), // hard-link paths are relative to to_dir
        )?;
    } else {
        let staging = cstr(OsStr::new(&format!(".{}.hwc-restore", to_name.to_string_lossy())));
        remove_at(dst_parent.as_fd(), &to_dir, &staging)?; // left by an interrupted restore to this target
        let rel = Path::new(OsStr::from_bytes(staging.to_bytes()));
        copier.copy_entry(src.dir.as_fd(), &src.dir_path, dst_parent.as_fd(), &to_dir, from_name, &staging, rel)?;
        // One flush for the whole tree, then one rename: the target appears complete or not at all.
        rustix::fs::syncfs(&dst_parent).ctx("flush", &to_dir)?;
        rustix::fs::renameat_with(&dst_parent, &staging, &dst_parent, &to_name, RenameFlags::NOREPLACE).map_err(
            |e| {
                if e == rustix::io::Errno::EXIST {
                    Error::WouldOverwrite { path: target.clone() }
                } else {
                    Error::io("rename into place", &target, e.into())
                }
            },
        )?;
        rustix::fs::fsync(&dst_parent).ctx("flush", &to_dir)?;
    }
    Ok(report)
}

/// Walks what a restore would write, on descriptors on both sides: counts it, lists it when
/// `list` is set, and sorts out what exists already. Below a directory that does not exist on
/// the target nothing can conflict, so without `list` the walk stops there.
struct Survey<'r> {
    report: &'r mut RestoreReport,
    list: bool,
    root_id: (u64, u64),
}

impl Survey<'_> {
    fn entry(
        &mut self,
        src_dir: BorrowedFd,
        from: &Path,
        name: &CStr,
        dst_dir: Option<BorrowedFd>,
        to: &Path,
        dst_name: &CStr,
    ) -> Result<()> {
        let st = rustix::fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW).ctx("inspect", from)?;
        let kind = fsops::file_type(&st);
        if kind == FileType::Socket {
            return Ok(()); // sockets are not restored (nothing can listen on a copied one)
        }
        let existing = match dst_dir.map(|d| rustix::fs::statat(d, dst_name, AtFlags::SYMLINK_NOFOLLOW)) {
            None | Some(Err(rustix::io::Errno::NOENT)) => None,
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => return Err(Error::io("inspect", to, e.into())),
        };
        let action = match &existing {
            None => Action::New,
            Some(e) => match (kind, fsops::file_type(e)) {
                (FileType::Directory, FileType::Directory) => Action::Merged,
                (_, FileType::Directory) => Action::Refused,
                (FileType::Directory, _) => Action::Replaced,
                _ => {
                    let dst_dir = dst_dir.expect("exists");
                    if same_entry(src_dir, name, &st, dst_dir, dst_name, e).ctx("compare with", to)? {
                        Action::Unchanged
                    } else {
                        Action::Replaced
                    }
                }
            },
        };
        match action {
            Action::Replaced => self.report.overwritten.push(to.to_path_buf()),
            Action::Refused => self.report.refused.push(to.to_path_buf()),
            _ => {}
        }
        if matches!(action, Action::New | Action::Replaced | Action::Merged) {
            self.report.entries += 1;
            if kind == FileType::RegularFile {
                self.report.bytes += st.st_size as u64;
            }
        }
        if self.list {
            if matches!(action, Action::New | Action::Replaced | Action::Merged) {
                self.report.written.push(to.to_path_buf());
            }
            self.report.changes.push(Change { path: to.to_path_buf(), action });
        }
        let dst_child = match action {
            Action::Merged => Some(fsops::open_dir_at(dst_dir.expect("exists"), dst_name).ctx("open directory", to)?),
            _ => None,
        };
        if kind == FileType::Directory && (self.list || dst_child.is_some()) {
            let src_child = fsops::open_dir_at(src_dir, name).ctx("open directory", from)?;
            let is_root = (st.st_dev, st.st_ino) == self.root_id;
            for child in names_in(src_child.as_fd(), from)? {
                if is_root && child.to_bytes() == META_DIR.as_bytes() {
                    continue;
                }
                let (from, to) = (join(from, &child), join(to, &child));
                self.entry(src_child.as_fd(), &from, &child, dst_child.as_ref().map(|d| d.as_fd()), &to, &child)?;
            }
        }
        Ok(())
    }
}

/// Whether the target's non-directory entry is the snapshot's already: same type, mode,
/// owner (when we could set it), size and mtime, and the same content, link target or device.
fn same_entry(
    src_dir: BorrowedFd,
    name: &CStr,
    st: &Stat,
    dst_dir: BorrowedFd,
    dst_name: &CStr,
    existing: &Stat,
) -> std::io::Result<bool> {
    let owner_matters = fsops::can_chown();
    let kind = fsops::file_type(st);
    if st.st_mode != existing.st_mode
        || (owner_matters && (st.st_uid != existing.st_uid || st.st_gid != existing.st_gid))
        || st.st_size != existing.st_size
        || (kind != FileType::Symlink
            && (st.st_mtime != existing.st_mtime || st.st_mtime_nsec != existing.st_mtime_nsec))
    {
        return Ok(false);
    }
    match kind {
        FileType::RegularFile => {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
            let a: std::fs::File = rustix::fs::openat(src_dir, name, flags, Mode::empty())?.into();
            let b: std::fs::File = rustix::fs::openat(dst_dir, dst_name, flags, Mode::empty())?.into();
            same_content(a, b)
        }
        FileType::Symlink => Ok(rustix::fs::readlinkat(src_dir, name, Vec::new())?
            == rustix::fs::readlinkat(dst_dir, dst_name, Vec::new())?),
        FileType::CharacterDevice | FileType::BlockDevice => Ok(st.st_rdev == existing.st_rdev),
        _ => Ok(true),
    }
}

fn same_content(mut a: std::fs::File, mut b: std::fs::File) -> std::io::Result<bool> {
    use std::io::Read;
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y[..1])? == 0);
        }
        let mut got = 0;
        while got < n {
            match b.read(&mut y[got..n])? {
                0 => return Ok(false),
                m => got += m,
            }
        }
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// The names in an open directory, sorted (so a restore writes in a stable order).
fn names_in(dir: BorrowedFd, path: &Path) -> Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(|e| Error::io("read directory", path, e.into()))? {
        let entry = entry.map_err(|e| Error::io("read directory", path, e.into()))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::io("open directory", path, e.into()))
}

fn cstr(p: &OsStr) -> CString {
    CString::new(p.as_bytes()).expect("no NUL in paths")
}

fn join(dir: &Path, name: &CStr) -> PathBuf {
    dir.join(OsStr::from_bytes(name.to_bytes()))
}

/// [`Copier::copy_entry`] or [`Copier::merge_entry`].
type EntryFn<'a> = fn(&mut Copier<'a>, BorrowedFd, &Path, BorrowedFd, &Path, &CStr, &CStr, &Path) -> Result<()>;

/// The state of one restore's copy.
struct Copier<'a> {
    /// The directory that holds the target (or its staging entry); hard-link paths are
    /// relative to it.
    dst_root: BorrowedFd<'a>,
    /// `(device, inode)` of the snapshot directory, whose `.hwc-backup/` is not restored.
    root_id: (u64, u64),
    /// `(device, inode)` of a snapshot file with several links → where its first copy went,
    /// relative to `dst_root`. Only multiply-linked files are recorded.
    /// The first copy's own `(device, inode)` comes along: a link made later through that
    /// path is checked to reach it (a directory of the target swapped for a symlink in
    /// between would otherwise make the link point at any file of the filesystem).
    links: HashMap<(u64, u64), (PathBuf, (u64, u64))>,
    buf: Vec<u8>,
    report: &'a mut RestoreReport,
}

impl<'a> Copier<'a> {
    /// Copies `src_dir/name` (recursively) to `dst_dir/dst_name`, where nothing exists yet.
    /// `rel` is `dst_dir/dst_name` relative to `dst_root`.
    #[allow(clippy::too_many_arguments)]
    fn copy_entry(
        &mut self,
        src_dir: BorrowedFd,
        src_path: &Path,
        dst_dir: BorrowedFd,
        dst_path: &Path,
        name: &CStr,
        dst_name: &CStr,
        rel: &Path,
    ) -> Result<()> {
        let from = || join(src_path, name);
        let to = || join(dst_path, dst_name);
        let st = rustix::fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io("inspect", from(), e.into()))?;
        match fsops::file_type(&st) {
            FileType::Directory => {
                let src = fsops::open_dir_at(src_dir, name).ctx("open directory", from())?;
                let dst = fsops::make_dir_at(dst_dir, dst_name).ctx("create directory", to())?;
                self.fill_dir(&src, &from(), &dst, &to(), &st, rel, Self::copy_entry)?;
            }
            FileType::RegularFile => {
                if self.link_to_earlier_copy(&st, dst_dir, dst_name).ctx("create hard link", to())? {
                    return Ok(());
                }
                let src = fsops::open_source_file(src_dir, name).ctx("open", from())?;
                let mut dst = fsops::create_file_at(dst_dir, dst_name).ctx("create", to())?;
                fsops::copy_plain(&src, &st, &mut dst, &mut self.buf).ctx("copy to", to())?;
                fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), &st).ctx("set metadata of", to())?;
                if st.st_nlink > 1 {
                    let copy = rustix::fs::fstat(&dst).ctx("inspect", to())?;
                    self.links.entry((st.st_dev, st.st_ino)).or_insert((rel.to_path_buf(), (copy.st_dev, copy.st_ino)));
                }
                self.report.entries += 1;
                self.report.bytes += st.st_size as u64;
            }
            FileType::Symlink => {
                fsops::copy_symlink(src_dir, name, dst_dir, dst_name, &st).ctx("create symlink", to())?;
                self.report.entries += 1;
            }
            FileType::Socket => {}
            _ => {
                fsops::copy_special(src_dir, name, dst_dir, dst_name, &st).ctx("create", to())?;
                self.report.entries += 1;
            }
        }
        Ok(())
    }

    /// Like [`Copier::copy_entry`], but `dst_dir/name` may exist: a directory over a
    /// directory merges, an identical entry is left alone, and any other non-directory is
    /// replaced (the caller has checked `force`). A directory is never removed: the survey
    /// refused that before anything was written, and should one appear since, the restore
    /// stops here. Nothing on the target is followed if it is a symlink: it is replaced.
    #[allow(clippy::too_many_arguments)]
    fn merge_entry(
        &mut self,
        src_dir: BorrowedFd,
        src_path: &Path,
        dst_dir: BorrowedFd,
        dst_path: &Path,
        name: &CStr,
        dst_name: &CStr,
        rel: &Path,
    ) -> Result<()> {
        let from = || join(src_path, name);
        let to = || join(dst_path, dst_name);
        let existing = match rustix::fs::statat(dst_dir, dst_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => {
                return self.copy_entry(src_dir, src_path, dst_dir, dst_path, name, dst_name, rel)
            }
            Err(e) => return Err(Error::io("inspect", to(), e.into())),
        };
        let existing_kind = fsops::file_type(&existing);
        let st = rustix::fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io("inspect", from(), e.into()))?;
        let kind = fsops::file_type(&st);
        match (kind, existing_kind) {
            (FileType::Socket, _) => {} // not restored, so nothing is replaced
            (FileType::Directory, FileType::Directory) => {
                let src = fsops::open_dir_at(src_dir, name).ctx("open directory", from())?;
                let dst = fsops::open_dir_at(dst_dir, dst_name).ctx("open directory", to())?;
                self.fill_dir(&src, &from(), &dst, &to(), &st, rel, Self::merge_entry)?;
            }
            (_, FileType::Directory) => {
                return Err(Error::Guard(format!(
                    "{} is a directory and the snapshot has no directory there; restore never deletes a directory",
                    to().display()
                )));
            }
            _ if same_entry(src_dir, name, &st, dst_dir, dst_name, &existing).ctx("compare with", to())? => {
                // Already there: left alone, and still the copy later hard links point to.
                if kind == FileType::RegularFile && st.st_nlink > 1 {
                    let there = (existing.st_dev, existing.st_ino);
                    self.links.entry((st.st_dev, st.st_ino)).or_insert_with(|| (rel.to_path_buf(), there));
                }
            }
            (FileType::RegularFile, _) => {
                // Written beside the old entry and renamed over it, after an fsync, so a power
                // cut leaves the old file or the new one, never half of the new one.
                let tmp = cstr(OsStr::new(&format!(".{}.hwc-restore", dst_name.to_string_lossy())));
                let tmp_path = join(dst_path, &tmp);
                remove_at(dst_dir, dst_path, &tmp)?;
                self.copy_entry(src_dir, src_path, dst_dir, dst_path, name, &tmp, rel)?;
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let written = rustix::fs::openat(dst_dir, &tmp, flags, Mode::empty())
                    .map_err(|e| Error::io("open", &tmp_path, e.into()))?;
                rustix::fs::fsync(&written).ctx("flush", &tmp_path)?;
                rustix::fs::renameat(dst_dir, &tmp, dst_dir, dst_name).ctx("rename into place", to())?;
            }
            _ => {
                // A non-directory (a symlink planted where a directory goes, too) is unlinked,
                // never followed.
                rustix::fs::unlinkat(dst_dir, dst_name, AtFlags::empty()).ctx("remove", to())?;
                self.copy_entry(src_dir, src_path, dst_dir, dst_path, name, dst_name, rel)?;
            }
        }
        Ok(())
    }

    /// Restores every entry of the open directory `src` into `dst` with `each` (copy or
    /// merge), then gives `dst` its metadata: its mode and times only once it is full.
    #[allow(clippy::too_many_arguments)]
    fn fill_dir(
        &mut self,
        src: &OwnedFd,
        src_path: &Path,
        dst: &OwnedFd,
        dst_path: &Path,
        st: &Stat,
        rel: &Path,
        each: EntryFn<'a>,
    ) -> Result<()> {
        self.report.entries += 1;
        let is_root = (st.st_dev, st.st_ino) == self.root_id;
        for child in names_in(src.as_fd(), src_path)? {
            if is_root && child.to_bytes() == META_DIR.as_bytes() {
                continue; // the snapshot's own metadata is not part of what it holds
            }
            let child_rel = rel.join(OsStr::from_bytes(child.to_bytes()));
            each(self, src.as_fd(), src_path, dst.as_fd(), dst_path, &child, &child, &child_rel)?;
        }
        fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), st).ctx("set metadata of", dst_path)
    }

    /// For a file with several links whose first copy exists, links to that copy and
    /// returns true (after checking that the link reaches that very copy); otherwise returns
    /// false, and the caller records the copy it makes.
    fn link_to_earlier_copy(&mut self, st: &Stat, dst_dir: BorrowedFd, dst_name: &CStr) -> std::io::Result<bool> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let Some((first, id)) = self.links.get(&(st.st_dev, st.st_ino)) else { return Ok(false) };
        rustix::fs::linkat(self.dst_root, first.as_path(), dst_dir, dst_name, AtFlags::empty())?;
        let made = rustix::fs::statat(dst_dir, dst_name, AtFlags::SYMLINK_NOFOLLOW)?;
        if (made.st_dev, made.st_ino) != *id {
            rustix::fs::unlinkat(dst_dir, dst_name, AtFlags::empty())?;
            return Err(std::io::Error::other(format!(
                "{} is no longer the copy made earlier in this restore (was the target changed meanwhile?)",
                first.display()
            )));
        }
        self.report.entries += 1;
        Ok(true)
    }
}

fn split(p: &Path) -> (PathBuf, std::ffi::OsString) {
    let parent = p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    (parent, p.file_name().map(|n| n.to_os_string()).unwrap_or_default())
}

/// Removes `dir/name` (a whole tree if it is a directory) without following a symlink
/// anywhere: the tree is reached through the open directory (`/proc/self/fd/N/name`), not
/// through a path whose components could have been swapped for symlinks. For the entries this
/// tool names itself (`.NAME.hwc-restore`), never for a user's directory.
fn remove_at(dir: BorrowedFd, dir_path: &Path, name: &CStr) -> Result<()> {
    use std::os::fd::AsRawFd;
    let shown = join(dir_path, name);
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("inspect", &shown, e.into())),
        Ok(st) if fsops::file_type(&st) == FileType::Directory => {
            let via_fd =
                Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(OsStr::from_bytes(name.to_bytes()));
            crate::fsutil::remove_tree(&via_fd)
                .map_err(|e| Error::io("remove", &shown, std::io::Error::other(e.to_string())))
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).ctx("remove", &shown),
    }
}
