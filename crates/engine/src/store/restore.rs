//! Restoring a file or directory from a snapshot.
//!
//! `restore(snapshot, /home/u/.config, /tmp/cfg)` recreates what `/home/u/.config` was at
//! snapshot time as `/tmp/cfg`, with owner, mode, times, xattrs/ACLs, symlinks, special files
//! and hard links. Nothing existing is overwritten unless `force` is set; that check covers
//! the whole tree before the first byte is written.
//!
//! With `delete`, each restored path is made the snapshot's, as `rsync -a --delete` with the
//! same filter rules makes it: an entry of the target is removed when the restore does not
//! write it there and the rules would transfer it (with `--include`: it matches one, or lies
//! below a directory that does, or is a directory; never what an `--exclude` matches). What
//! the rules leave out is protected, with the directories holding it; a directory the
//! snapshot has but with nothing included below it (rsync's `--prune-empty-dirs` leaves it
//! out) is left as it is, and removed when its deletions empty it. Removal goes through
//! directory descriptors ([`Dir::remove_tree_keeping`]), never through a symlink, and a dry
//! run walks the same removal without removing anything, so it lists exactly what goes,
//! each at the top of what goes.
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
//! Like the snapshot walk, the copy runs in parallel: one thread walks and creates every
//! entry (directories, links, symlinks, and each regular file empty, `O_EXCL | O_NOFOLLOW`),
//! and worker threads fill the created files, content then owner, mode, xattrs and times,
//! through the two descriptors the walk opened, never by name. A directory gets its times
//! once the walk leaves it (filling a file does not change them), and the staged publish
//! waits for every worker before its `syncfs`. A file renamed over an old one in a merge is
//! written by the walk itself, since it must be complete before the rename.
//!
//! The copy works on `(directory fd, name)` pairs, one component per
//! system call, and holds one directory listing per level, not a map of the tree. The survey
//! (the check before writing), the copy and the merge, and the search for a selected file
//! below a directory, are walks of the engine's one traversal, [`crate::fs::tree`], each
//! saying only what it does on entering and leaving a directory: no recursion, so no depth
//! limit from the thread's stack, and at most 32 levels keep their descriptors open (the
//! others are re-opened through `..` on both sides, checked by device and inode; a level
//! whose child has no directory on the target keeps its target's descriptor), so a tree tens
//! of thousands of levels deep restores under the default descriptor limit.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fs::fsops;
use crate::fs::tree::{self, Entered, Parent, Paths, Tree};
use crate::fs::{reopen_parent, Dir, Name, DIR_FLAGS};
use crate::source::exclude::{ExcludeSet, PatternError};
use crate::store::layout::Snapshot;
use crate::store::meta::{Counts, META_DIR};
use crate::store::record::Progress;

/// How to restore. Build it with `..Default::default()`: fields get added.
#[derive(Clone, Copy, Default)]
pub struct RestoreOptions<'a> {
    /// Overwrite existing files.
    pub force: bool,
    /// Only report what would be written.
    pub dry_run: bool,
    /// Make each restored path exactly the snapshot's: entries of the target that the
    /// snapshot does not have are removed (never through a symlink; entries the filter
    /// leaves out — excluded, or not included — are kept with the directories holding them,
    /// as rsync's `--delete` keeps them), and a directory where the snapshot has something
    /// else is replaced (which needs `force`).
    pub delete: bool,
    /// Which entries below each restored path are restored; `None`: all of them.
    pub filter: Option<&'a Filter>,
    /// Called as the restore goes.
    pub progress: Option<RestoreProgress<'a>>,
    /// Threads writing file contents beside the walk; 0: the machine's cores (at least 2).
    pub threads: usize,
    /// A backup destination the target must not be inside either, besides the snapshot's own
    /// (a restore from an offsite copy, whose snapshot is in a staging directory, passes the
    /// plan's).
    pub also_refuse_inside: Option<&'a Path>,
}

/// Progress of a restore.
#[derive(Clone, Copy)]
pub struct RestoreProgress<'a> {
    /// Called once before the first byte is written, with the entries and bytes of file
    /// content the whole restore writes.
    pub total: &'a (dyn Fn(u64, u64) + Sync),
    /// Called as entries are written: `files` counts entries, `bytes_copied` bytes of file
    /// content, both since the start of the restore.
    pub done: Progress<'a>,
}

/// Which entries below a restored path are restored, by rsync-style patterns (the rules of
/// backup excludes, [`crate::source::exclude`]) matched against each entry's path as it was
/// on the host (`/home/alice/docs/a.pdf`); the restored path itself is always restored.
///
/// - An entry matching an exclude pattern is not restored, nor anything below it.
/// - With include patterns, a non-directory is restored only when it matches one, or lies
///   below a directory that matches one; directories are walked to find them, and a
///   directory that would be left empty is not created (rsync's `--prune-empty-dirs`).
///   Excludes win over includes.
///
/// That is `rsync -a --exclude=E… --include=I… --include=I/*** --include='*/' --exclude='*'
/// --prune-empty-dirs` (without includes: `rsync -a --exclude=E…`); with `delete`, the same
/// command with `--delete`: the rules decide for the target's entries too, and what they
/// leave out there is protected.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    excludes: Option<ExcludeSet>,
    includes: Option<ExcludeSet>,
}

impl Filter {
    /// Compiles the patterns.
    pub fn new<S: AsRef<str>>(includes: &[S], excludes: &[S]) -> std::result::Result<Filter, PatternError> {
        let set = |p: &[S]| if p.is_empty() { Ok(None) } else { ExcludeSet::new(p).map(Some) };
        Ok(Filter { excludes: set(excludes)?, includes: set(includes)? })
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.excludes.is_none() && self.includes.is_none()
    }

    /// Whether include patterns were given.
    pub fn has_includes(&self) -> bool {
        self.includes.is_some()
    }

    /// Whether the entry at `host` (a directory when `is_dir`) is excluded.
    pub fn is_excluded(&self, host: &Path, is_dir: bool) -> bool {
        self.excludes.as_ref().is_some_and(|e| e.is_excluded(host, is_dir))
    }

    /// `None`: the entry is left out. `Some(all)`: it is restored, and `all` says whether
    /// everything below it is (it or a directory above it matched an include).
    fn select(&self, host: &Path, is_dir: bool, inside: bool) -> Option<bool> {
        if self.is_excluded(host, is_dir) {
            return None;
        }
        let all = match &self.includes {
            None => true,
            Some(i) => inside || i.is_excluded(host, is_dir),
        };
        (all || is_dir).then_some(all)
    }

    /// Whether everything below the restored path itself is restored.
    fn top(&self, host: &Path, is_dir: bool) -> bool {
        self.includes.as_ref().is_none_or(|i| i.is_excluded(host, is_dir))
    }
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
    /// The snapshot has no such entry (or the filter leaves it out there) and `delete` removes
    /// it: a directory with all it holds, listed once; when it holds entries the filter
    /// leaves out, it stays with them and what goes in it is listed instead.
    Deleted,
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
            Action::Deleted => "deleted",
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
    #[serde(serialize_with = "crate::store::verify::lossy_paths")]
    pub written: Vec<PathBuf>,
    /// Every entry of a dry run with what would happen to it. Empty for a real restore.
    pub changes: Vec<Change>,
    /// Paths that existed and are (or would be) replaced; a directory over a directory merges
    /// and an identical entry is left alone, so neither is listed.
    #[serde(serialize_with = "crate::store::verify::lossy_paths")]
    pub overwritten: Vec<PathBuf>,
    /// Directories where the snapshot has a file, symlink or special file: a restore never
    /// deletes a directory, so any entry here refuses the restore (`--force` or not).
    #[serde(serialize_with = "crate::store::verify::lossy_paths")]
    pub refused: Vec<PathBuf>,
    /// Entries of the target removed (or that would be) by `delete`, each at the top of what
    /// goes: a directory removed whole counts once.
    pub deleted: u64,
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
fn resolve_source(snapshot: &Snapshot, tier: &Dir, host_path: &Path) -> Result<Source> {
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
    // The snapshot is opened below its tier's handle without following a symlink: by its
    // path, a symlink swapped in for it (or for its tier) after the listing would make this
    // restore the live system's files.
    let root: OwnedFd = tier.open_dir(&crate::store::layout::name_of(&snapshot.name)?)?.into();
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
        let dir = tier.fd().try_clone_to_owned().ctx("duplicate descriptor of", &tier_dir)?;
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
pub fn path_in_snapshot(snapshot: &Snapshot, tier: &Dir, host_path: &Path) -> Result<PathBuf> {
    let src = resolve_source(snapshot, tier, host_path)?;
    Ok(join(&src.dir_path, &src.name))
}

fn join_paths(p: &[PathBuf]) -> String {
    p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Removes what an interrupted restore to the same target left (`.NAME.hwc-restore`), but only
/// where nobody else could have put it there: it must belong to this user, and the target's
/// directory must be writable by this user alone or sticky. Elsewhere (a group-writable
/// shared directory, say) someone could rename a tree they cannot delete under that name for
/// root to delete; the restore then stops and names the entry for a person to look at.
fn remove_leftover_staging(dst_parent: &Dir, name: &Name) -> Result<()> {
    let Some(st) = dst_parent.stat(name)? else { return Ok(()) };
    let parent = dst_parent.stat_self()?;
    let me = rustix::process::geteuid().as_raw();
    let sticky = parent.st_mode & 0o1000 != 0;
    let mine_alone = parent.st_uid == me && parent.st_mode & 0o022 == 0;
    if st.st_uid != me || !(sticky || mine_alone) {
        return Err(Error::Unsafe {
            path: dst_parent.child_path(name),
            message: "an earlier restore's staging entry where others can write; not removed: look at it and \
                      remove it, then restore again"
                .into(),
        });
    }
    dst_parent.remove_tree(name)
}

/// Refuses a target inside the backup destination (`<dest>` of `<dest>/<host>/<tier>/<name>`):
/// a published snapshot, a tier, the host directory or anything else there. Decided on the
/// directories the target would really be written in (symlinks and bind mounts included), by
/// device and inode.
fn refuse_inside_destination(snapshot: &Snapshot, target: &Path, also: Option<&Path>) -> Result<()> {
    for dest in snapshot.path.ancestors().nth(3).into_iter().chain(also) {
        refuse_inside(dest, target)?;
    }
    Ok(())
}

/// Refuses a target inside `dest` (see [`refuse_inside_destination`]).
fn refuse_inside(dest: &Path, target: &Path) -> Result<()> {
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

/// Restores `host_path` from `snapshot`, held by the directory `tier` (its tier directory,
/// opened through the host directory), to `target`.
///
/// `host_path` is found in the snapshot without following symlinks (see
/// `resolve_source`). A target that is an existing directory receives a file, symlink or
/// special file inside it (as `cp` does); a directory restored onto a directory merges. A
/// directory on the target is never deleted to make room (without `delete`): such a restore
/// is refused, with `force` too. Nothing below the target's own path is ever reached through
/// a symlink.
pub fn restore(
    snapshot: &Snapshot,
    tier: &Dir,
    host_path: &Path,
    target: &Path,
    opts: RestoreOptions,
) -> Result<RestoreReport> {
    let prepared = prepare(snapshot, tier, host_path, target, false, opts.also_refuse_inside)?;
    let mut reports = run_prepared(snapshot, vec![prepared], opts)?;
    Ok(reports.pop().expect("one path, one report"))
}

/// Restores several paths of `snapshot` into the directory `dest`, each as `dest/NAME` (as
/// `cp a b DIR` does; `dest` is created when missing). Conflicts are checked for all of them
/// before the first byte is written; two paths with the same last name are refused.
pub fn restore_into(
    snapshot: &Snapshot,
    tier: &Dir,
    host_paths: &[PathBuf],
    dest: &Path,
    opts: RestoreOptions,
) -> Result<Vec<RestoreReport>> {
    let mut names: Vec<&OsStr> = Vec::new();
    for p in host_paths {
        let Some(name) = p.file_name() else {
            return Err(Error::config(
                "PATH",
                format!("{} has no name to restore it under in {}; restore it alone", p.display(), dest.display()),
            ));
        };
        if names.contains(&name) {
            return Err(Error::config(
                "PATH",
                format!(
                    "two paths would both be restored as {}; restore them in separate calls",
                    dest.join(name).display()
                ),
            ));
        }
        names.push(name);
    }
    if let Ok(st) = rustix::fs::stat(dest) {
        if fsops::file_type(&st) != FileType::Directory {
            return Err(Error::config(
                "DEST",
                format!("{} is not a directory; several paths are restored into a directory", dest.display()),
            ));
        }
    }
    let prepared = host_paths
        .iter()
        .map(|p| prepare(snapshot, tier, p, &dest.join(p.file_name().expect("checked")), true, opts.also_refuse_inside))
        .collect::<Result<Vec<_>>>()?;
    run_prepared(snapshot, prepared, opts)
}

/// One path of a restore, found in the snapshot, with its target looked at.
struct Prepared {
    src: Source,
    report: RestoreReport,
    /// The directory holding the target, its path, and the target's name there.
    dst_parent: Option<Dir>,
    to_dir: PathBuf,
    to_name: CString,
    target: PathBuf,
    target_exists: bool,
}

fn prepare(
    snapshot: &Snapshot,
    tier: &Dir,
    host_path: &Path,
    target: &Path,
    into_parent: bool,
    also_refuse_inside: Option<&Path>,
) -> Result<Prepared> {
    let src = resolve_source(snapshot, tier, host_path)?;
    refuse_inside_destination(snapshot, target, also_refuse_inside)?;
    let src_is_dir = fsops::file_type(&src.st) == FileType::Directory;
    let (target, into_dir) = match rustix::fs::lstat(target) {
        Ok(st) if !into_parent && fsops::file_type(&st) == FileType::Directory && !src_is_dir => {
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
        Ok(fd) => Some(Dir::from_trusted_fd(fd, to_dir.clone())?),
        Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => None,
        Err(e) => return Err(e),
    };
    let target_exists = match &dst_parent {
        Some(d) => match rustix::fs::statat(d.fd(), &to_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => true,
            Err(rustix::io::Errno::NOENT) => false,
            Err(e) => return Err(Error::io("inspect", &target, e.into())),
        },
        None => false,
    };
    Ok(Prepared { src, report, dst_parent, to_dir, to_name, target, target_exists })
}

/// Surveys every prepared path, refuses before writing anything when one of them would be
/// refused, then writes them in order.
fn run_prepared(snapshot: &Snapshot, mut prepared: Vec<Prepared>, opts: RestoreOptions) -> Result<Vec<RestoreReport>> {
    let filter = opts.filter.filter(|f| !f.is_empty());
    let host_base = snapshot.path.as_os_str().len();
    // Every conflict is found before the first byte is written. A target that does not
    // exist has none, so only a dry run (which lists paths) or a progress display (which
    // needs the total) walks the tree twice.
    let full = opts.dry_run || opts.progress.is_some();
    for p in &mut prepared {
        if !(p.target_exists || full) {
            continue;
        }
        let mut survey = Survey {
            report: &mut p.report,
            list: opts.dry_run,
            full,
            root_id: p.src.root_id,
            filter,
            delete: opts.delete,
            host_base,
            hit: false,
        };
        survey.run(
            p.src.dir.as_fd(),
            &p.src.name,
            p.dst_parent.as_ref().map(|d| d.fd()),
            &p.to_name,
            &join(&p.src.dir_path, &p.src.name),
            &p.target,
        )?;
    }
    if opts.dry_run {
        return Ok(prepared.into_iter().map(|p| p.report).collect());
    }
    for p in &prepared {
        if let Some(first) = p.report.refused.first() {
            return Err(Error::Guard(format!(
                "{} is a directory and the snapshot has no directory there; restore never deletes a directory (move it away, or restore into it)",
                first.display()
            )));
        }
        if !opts.force {
            if let Some(first) = p.report.overwritten.first() {
                return Err(Error::WouldOverwrite { path: first.clone() });
            }
        }
    }
    if let Some(progress) = &opts.progress {
        let (entries, bytes) = prepared.iter().fold((0, 0), |(e, b), p| (e + p.report.entries, b + p.report.bytes));
        (progress.total)(entries, bytes);
    }
    let mut done = (0u64, 0u64);
    let mut reports = Vec::new();
    for p in prepared {
        let report = write_prepared(p, &opts, filter, host_base, done)?;
        done = (done.0 + report.entries, done.1 + report.bytes);
        reports.push(report);
    }
    Ok(reports)
}

fn write_prepared(
    p: Prepared,
    opts: &RestoreOptions,
    filter: Option<&Filter>,
    host_base: usize,
    done_before: (u64, u64),
) -> Result<RestoreReport> {
    let Prepared { src, mut report, dst_parent, to_dir, to_name, target, target_exists } = p;
    // The survey's counts are estimates of what follows; the copy counts again.
    report.entries = 0;
    report.bytes = 0;
    report.deleted = 0;
    let dst_parent = match dst_parent {
        Some(d) => d,
        None => {
            crate::fs::fsutil::ensure_dir(&to_dir)?;
            Dir::open_trusted(&to_dir)?
        }
    };
    let from = join(&src.dir_path, &src.name);
    // The walk runs on this thread; file contents and their metadata are written by workers.
    let copy = |report: &mut RestoreReport, dst_name: &CStr, merge: bool| -> Result<()> {
        let threads = match opts.threads {
            0 => crate::run::default_threads(),
            n => n,
        }
        .min(file_queue());
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let failed = AtomicBool::new(false);
        let (tx, rx) = crossbeam_channel::bounded::<FileJob>(file_queue());
        let walked = std::thread::scope(|scope| {
            for _ in 0..threads {
                let (rx, failure, failed) = (rx.clone(), &failure, &failed);
                scope.spawn(move || file_worker(rx, failure, failed));
            }
            drop(rx);
            let mut copier = Copier {
                dst_root: dst_parent.fd(),
                root_id: src.root_id,
                links: HashMap::new(),
                buf: Vec::new(),
                report,
                filter,
                delete: opts.delete,
                host_base,
                progress: opts.progress.map(|p| (p.done, done_before)),
                files: Some(tx),
                failed: &failed,
                hit: false,
                rel_start: 0,
            };
            copier.run(src.dir.as_fd(), &src.name, &from, &to_dir, dst_name, merge)
            // The copier (and the queue's sender with it) is dropped here: the workers finish
            // what is queued and stop, and the scope waits for them.
        });
        // A worker's error is the cause; the walk then only saw that it should stop.
        match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => walked,
        }
    };
    if target_exists {
        // Hard-link paths are relative to `to_dir`.
        copy(&mut report, &to_name, true)?;
    } else {
        let staging = cstr(OsStr::new(&format!(".{}.hwc-restore", to_name.to_string_lossy())));
        // Left by an interrupted restore to this target: removed without recursion, whatever its depth.
        let staging_name = Name::new(staging.to_bytes())
            .map_err(|e| Error::Unsafe { path: join(&to_dir, &staging), message: e.to_string() })?;
        remove_leftover_staging(&dst_parent, &staging_name)?;
        copy(&mut report, &staging, false)?;
        // One flush for the whole tree, then one rename: the target appears complete or not at all.
        dst_parent.sync_filesystem()?;
        rustix::fs::renameat_with(dst_parent.fd(), &staging, dst_parent.fd(), &to_name, RenameFlags::NOREPLACE)
            .map_err(|e| {
                if e == rustix::io::Errno::EXIST {
                    Error::WouldOverwrite { path: target.clone() }
                } else {
                    Error::io("rename into place", &target, e.into())
                }
            })?;
        dst_parent.sync()?;
    }
    Ok(report)
}

/// Directory levels a walk keeps open on the way down, with two descriptors each (the
/// snapshot's and the target's). Above them a level is closed, and re-opened through `..`
/// (checked by device and inode, as GNU `rm` does) when the walk climbs back to it, so a tree
/// of any depth needs about 70 descriptors, and no level of it costs stack.
const KEEP_OPEN: usize = 32;

/// `(device, inode)`.
type Id = (u64, u64);

/// The handles of one directory of a restore's walk ([`tree::depth_first`]): the snapshot's,
/// and the target's when there is one (a dry run also walks directories that are not there
/// yet).
type Fds = (OwnedFd, Option<OwnedFd>);

/// A directory of a restore's walk closed to spare descriptors: `(device, inode)` of the
/// snapshot's and of the target's, checked when it is re-opened through `..`. The target's
/// directory can be re-opened through its child's `..` only if that child is on the target
/// too: the last level on the target keeps its descriptor.
struct ClosedFds {
    src: Id,
    dst: Option<Id>,
    kept: Option<OwnedFd>,
}

/// Closes a level of a restore's walk (see [`Tree::close`]).
fn close_fds((src, dst): Fds, child: &Fds, at: tree::At) -> Result<ClosedFds> {
    let id = |fd: &OwnedFd, path: &[u8]| crate::fs::identity(fd.as_fd()).ctx("inspect", OsStr::from_bytes(path));
    let src = id(&src, at.a)?;
    Ok(match dst {
        Some(dst) if child.1.is_some() => ClosedFds { src, dst: Some(id(&dst, at.b)?), kept: None },
        kept => ClosedFds { src, dst: None, kept },
    })
}

/// Re-opens a level of a restore's walk through the `..` of its child on both sides,
/// refusing a directory that is not the one left (the tree was moved meanwhile; see
/// [`Tree::reopen`]).
fn reopen_fds(child: &Fds, closed: ClosedFds, at: tree::At) -> Result<Fds> {
    let up = |child: Option<&OwnedFd>, want: Id, shown: &[u8]| {
        let shown = Path::new(OsStr::from_bytes(shown));
        let child = child.expect("the child is open");
        reopen_parent(child.as_fd(), want).ctx("open parent of", shown)?.ok_or_else(|| Error::Unsafe {
            path: shown.to_path_buf(),
            message: "its parent directory was moved during the restore; stopping".into(),
        })
    };
    let src = up(Some(&child.0), closed.src, at.child_a)?;
    let dst = match closed.dst {
        Some(id) => Some(up(child.1.as_ref(), id, at.child_b)?),
        None => closed.kept,
    };
    Ok((src, dst))
}

/// A display path of a restore's walk (see [`Paths`]).
fn shown(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// Walks what a restore would write, on descriptors on both sides: counts it, lists it when
/// `list` is set, and sorts out what exists already. Below a directory that does not exist on
/// the target nothing can conflict, so without `full` the walk stops there.
struct Survey<'r> {
    report: &'r mut RestoreReport,
    list: bool,
    /// Walk every directory (for the list, or the total of a progress display).
    full: bool,
    root_id: (u64, u64),
    filter: Option<&'r Filter>,
    delete: bool,
    /// Where the path as it was on the host starts in a display path in the snapshot.
    host_base: usize,
    /// The last entry was a non-directory that is restored.
    hit: bool,
}

/// A directory to go down into: the snapshot's, the target's (if there is one) and its names.
type Below = (OwnedFd, Option<OwnedFd>, Vec<CString>, Mark);

/// What a walk keeps per directory for the filter.
#[derive(Clone, Copy)]
struct Mark {
    /// Everything below it is restored (see [`Filter::select`]).
    all: bool,
    /// It is new and would be left out if nothing below it is restored: the entry count
    /// right after it was counted.
    prune_at: Option<u64>,
    /// It is on the target, and left as it is (or with `delete` removed when emptied) if
    /// nothing below it is restored (see [`Pruned`]).
    pruned: Option<Pruned>,
    /// Something below it is restored (a non-directory the filter selects).
    selected: bool,
    /// Something of the target stays in it (if it is there).
    stays: bool,
}

/// A directory of the target that the snapshot has, but with nothing below it that the
/// filter restores: rsync's `--prune-empty-dirs` leaves it out of the transfer, so it stays
/// as it is (no mode or times set), and `--delete` treats it as extraneous — it removes what
/// the rules select in it, and it too when that leaves it empty. Where its own entry, what
/// it wrote and its deletions start in the report, to be taken back.
#[derive(Clone, Copy)]
struct Pruned {
    change: usize,
    written: usize,
    deleted: u64,
}

/// The path as it was on the host of an entry shown at `from` in the snapshot.
fn host_of(from: &Path, host_base: usize) -> &Path {
    match &from.as_os_str().as_bytes()[host_base.min(from.as_os_str().len())..] {
        b"" => Path::new("/"),
        rest => Path::new(OsStr::from_bytes(rest)),
    }
}

/// Whether an entry is restored: `Some(all)` as [`Filter::select`] says, `None` when it is
/// left out. `inside` is `None` for the restored path itself, which is always restored.
fn decide(filter: Option<&Filter>, host: &Path, is_dir: bool, inside: Option<bool>) -> Option<bool> {
    match (filter, inside) {
        (None, _) => Some(true),
        (Some(f), None) => Some(f.top(host, is_dir)),
        (Some(f), Some(inside)) => f.select(host, is_dir, inside),
    }
}

/// What `delete` does in one directory of the target.
#[derive(Default)]
struct Extraneous {
    /// The entries it removes: name, whether a directory, and the mark its entries get (see
    /// [`Filter::select`]).
    gone: Vec<(CString, bool, bool)>,
    /// Some entry stays: protected by the filter, or one the snapshot has there (a directory
    /// on both sides is the walk's to decide).
    stays: bool,
}

/// The entries of the target directory `dst` that the restore does not write there and the
/// filter does not protect: what `delete` removes, as `rsync --delete` with the same rules
/// does. An entry is left alone when the snapshot directory `src` (whose sorted names are
/// `src_names`) has one of that name that the filter restores (or walks); otherwise it goes
/// unless the filter leaves it out, judged as the target has it (type included), which is
/// how rsync protects the entries its rules do not transfer. A directory of the snapshot
/// with nothing restored below it counts as absent where the target has a non-directory
/// (see [`selects_below`]). `from` is the snapshot's directory (whose path as it was on the
/// host starts at `host_base`), `inside` what the filter said about it.
#[allow(clippy::too_many_arguments)]
fn extraneous(
    dst: BorrowedFd,
    to: &Path,
    src: BorrowedFd,
    from: &Path,
    src_names: &[CString],
    filter: Option<&Filter>,
    host_base: usize,
    inside: bool,
) -> Result<Extraneous> {
    let host_dir = host_of(from, host_base);
    let mut out = Extraneous::default();
    for entry in rustix::fs::Dir::read_from(dst).map_err(|e| Error::io("read directory", to, e.into()))? {
        let entry = entry.map_err(|e| Error::io("read directory", to, e.into()))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let name = name.to_owned();
        let in_snapshot = src_names.binary_search(&name).is_ok();
        if in_snapshot && filter.is_none() {
            out.stays = true;
            continue;
        }
        // The type the directory entry gives (one stat less per entry), or a stat.
        let is_dir = match entry.file_type() {
            FileType::Unknown => {
                let st = rustix::fs::statat(dst, &name, AtFlags::SYMLINK_NOFOLLOW).ctx("inspect", join(to, &name))?;
                fsops::file_type(&st) == FileType::Directory
            }
            kind => kind == FileType::Directory,
        };
        let Some(f) = filter else {
            out.gone.push((name, is_dir, true));
            continue;
        };
        let host = join(host_dir, &name);
        if in_snapshot {
            let theirs = rustix::fs::statat(src, &name, AtFlags::SYMLINK_NOFOLLOW).ctx("inspect", join(from, &name))?;
            let kind = fsops::file_type(&theirs);
            let restored = match f.select(&host, kind == FileType::Directory, inside) {
                // A directory over a non-directory only if something below it is restored.
                Some(all) if kind == FileType::Directory && !is_dir && f.has_includes() => {
                    selects_below(src, &name, &join(from, &name), f, host_base, all)?
                }
                selected => selected.is_some(),
            };
            // Restored (or walked) from the snapshot: not extraneous; a socket is never
            // restored, and what is there stays.
            if kind == FileType::Socket || restored {
                out.stays |= !(is_dir && kind == FileType::Directory);
                continue;
            }
        }
        match f.select(&host, is_dir, inside) {
            None => out.stays = true, // protected, as with rsync --delete
            Some(mark) => out.gone.push((name, is_dir, mark)),
        }
    }
    out.gone.sort(); // in a stable order, as the rest of a restore
    Ok(out)
}

/// Whether the filter restores a non-directory anywhere below the snapshot's directory
/// `src_dir/name` (shown as `from`, whose path as it was on the host starts at `host_base`;
/// `all` is what the filter said about it). Without one, the directory is not restored at all
/// (rsync's `--prune-empty-dirs`), so it replaces nothing on the target. An iterative walk
/// that stops at the first such entry, asked only where the target has a non-directory.
fn selects_below(
    src_dir: BorrowedFd,
    name: &CStr,
    from: &Path,
    filter: &Filter,
    host_base: usize,
    all: bool,
) -> Result<bool> {
    let (fd, names) = open_listed(src_dir, name, from)?;
    let mut search = Selects { filter, host_base, found: false };
    let start = Entered { open: (fd, None), info: all, subdirs: names };
    let from = from.as_os_str().as_bytes().to_vec();
    tree::depth_first(&mut search, start, Paths::new(from, Vec::new()), KEEP_OPEN)?;
    Ok(search.found)
}

/// The snapshot's directory `dir/name` (shown as `shown`), opened, and its names.
fn open_listed(dir: BorrowedFd, name: &CStr, shown: &Path) -> Result<(OwnedFd, Vec<CString>)> {
    let fd = fsops::open_dir_at(dir, name).ctx("open directory", shown)?;
    let names = names_in(fd.as_fd(), shown, false)?;
    Ok((fd, names))
}

/// The search of [`selects_below`], in the snapshot only (`Paths::a`); each directory keeps
/// what the filter said about it. It stops at the first non-directory the filter restores.
struct Selects<'f> {
    filter: &'f Filter,
    host_base: usize,
    found: bool,
}

impl Tree for Selects<'_> {
    type Open = Fds;
    type Closed = ClosedFds;
    type Info = bool;

    fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
        let (dir, from) = (parent.open.0.as_fd(), shown(&paths.a));
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ctx("inspect", from)?;
        let kind = fsops::file_type(&st);
        let is_dir = kind == FileType::Directory;
        match self.filter.select(host_of(from, self.host_base), is_dir, *parent.info) {
            Some(_) if !is_dir && kind != FileType::Socket => {
                self.found = true;
                Ok(None)
            }
            Some(all) if is_dir => {
                let (fd, names) = open_listed(dir, name, from)?;
                Ok(Some(Entered { open: (fd, None), info: all, subdirs: names }))
            }
            _ => Ok(None),
        }
    }

    fn leave(&mut self, _: Fds, _: bool, _: Option<Parent<'_, Self>>, _: &Paths) -> Result<()> {
        Ok(())
    }

    fn close(&mut self, open: Fds, _: &bool, child: &Fds, at: tree::At) -> Result<ClosedFds> {
        close_fds(open, child, at)
    }

    fn reopen(&mut self, child: &Fds, closed: ClosedFds, _: &bool, at: tree::At) -> Result<Fds> {
        reopen_fds(child, closed, at)
    }

    fn stop(&self) -> bool {
        self.found
    }
}

/// Removes `dir/name`, a directory of the target (shown as `to`; `host` is its path as it
/// would be on the host, which the patterns are matched against), with everything in it but
/// what the filter leaves out (its entries judged with `mark`, see [`Filter::select`]),
/// without following a symlink. With `dry_run` nothing is removed: it says what would go.
fn remove_dir(
    dir: BorrowedFd,
    name: &CStr,
    host: &Path,
    to: &Path,
    filter: Option<&Filter>,
    mark: bool,
    dry_run: bool,
) -> Result<crate::fs::Removal> {
    let parent = Dir::from_trusted_fd(
        dir.try_clone_to_owned().ctx("duplicate handle of", to)?,
        to.parent().unwrap_or(Path::new("")).to_path_buf(),
    )?;
    let name =
        Name::new(name.to_bytes()).map_err(|e| Error::Unsafe { path: to.to_path_buf(), message: e.to_string() })?;
    let Some(filter) = filter.filter(|f| !f.is_empty()) else {
        if !dry_run {
            parent.remove_tree(&name)?;
        }
        return Ok(crate::fs::Removal { gone: true, removed: vec![name.as_bytes().to_vec()] });
    };
    let host_parent = host.parent().unwrap_or(Path::new("/")).to_path_buf();
    let keep = move |rel: &[u8], is_dir: bool, inside: bool| {
        filter.select(&host_parent.join(OsStr::from_bytes(rel)), is_dir, inside)
    };
    parent.remove_tree_keeping(&name, &keep, mark, dry_run)
}

impl Survey<'_> {
    /// Surveys `src_dir/name` restored as `dst_dir/dst_name` (shown as `from` and `to`) and
    /// everything below it ([`tree::depth_first`]).
    fn run(
        &mut self,
        src_dir: BorrowedFd,
        name: &CStr,
        dst_dir: Option<BorrowedFd>,
        dst_name: &CStr,
        from: &Path,
        to: &Path,
    ) -> Result<()> {
        let Some((s, d, names, mark)) = self.entry(src_dir, name, dst_dir, dst_name, from, to, None)? else {
            return Ok(());
        };
        let start = Entered { open: (s, d), info: mark, subdirs: names };
        let paths = Paths::new(from.as_os_str().as_bytes().to_vec(), to.as_os_str().as_bytes().to_vec());
        tree::depth_first(self, start, paths, KEEP_OPEN)
    }
    /// One entry; returns the directory to go down into, if any.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        src_dir: BorrowedFd,
        name: &CStr,
        dst_dir: Option<BorrowedFd>,
        dst_name: &CStr,
        from: &Path,
        to: &Path,
        inside: Option<bool>,
    ) -> Result<Option<Below>> {
        let st = rustix::fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW).ctx("inspect", from)?;
        let kind = fsops::file_type(&st);
        if kind == FileType::Socket {
            return Ok(None); // sockets are not restored (nothing can listen on a copied one)
        }
        let host = host_of(from, self.host_base);
        let Some(all) = decide(self.filter, host, kind == FileType::Directory, inside) else { return Ok(None) };
        self.hit = kind != FileType::Directory;
        let existing = match dst_dir.map(|d| rustix::fs::statat(d, dst_name, AtFlags::SYMLINK_NOFOLLOW)) {
            None | Some(Err(rustix::io::Errno::NOENT)) => None,
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => return Err(Error::io("inspect", to, e.into())),
        };
        if let (Some(f), Some(_), Some(e)) = (self.filter.filter(|f| f.has_includes()), inside, &existing) {
            // A directory with nothing restored below it replaces nothing (rsync's
            // --prune-empty-dirs): what the target has there stays (`delete` judged it).
            if kind == FileType::Directory
                && fsops::file_type(e) != FileType::Directory
                && !selects_below(src_dir, name, from, f, self.host_base, all)?
            {
                return Ok(None);
            }
        }
        let action = match &existing {
            None => Action::New,
            Some(e) => match (kind, fsops::file_type(e)) {
                (FileType::Directory, FileType::Directory) => Action::Merged,
                // With `delete`, a directory is replaced too.
                (_, FileType::Directory) if self.delete => Action::Replaced,
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
        if kind != FileType::Directory || !(self.full || dst_child.is_some()) {
            return Ok(None);
        }
        let src_child = fsops::open_dir_at(src_dir, name).ctx("open directory", from)?;
        let is_root = (st.st_dev, st.st_ino) == self.root_id;
        let names = names_in(src_child.as_fd(), from, is_root)?;
        let has_includes = self.filter.is_some_and(Filter::has_includes);
        let pruned = (action == Action::Merged && inside.is_some() && has_includes).then(|| Pruned {
            change: self.report.changes.len().saturating_sub(1),
            written: self.report.written.len().saturating_sub(1),
            deleted: self.report.deleted,
        });
        let mut stays = false;
        if let (true, Some(d)) = (self.delete, &dst_child) {
            let found = extraneous(d.as_fd(), to, src_child.as_fd(), from, &names, self.filter, self.host_base, all)?;
            stays = found.stays;
            for (gone, is_dir, mark) in found.gone {
                let shown = join(to, &gone);
                if !(is_dir && self.list && self.filter.is_some()) {
                    self.report.deleted += 1;
                    if self.list {
                        self.report.changes.push(Change { path: shown, action: Action::Deleted });
                    }
                    continue;
                }
                // What the filter leaves out stays, with the directories holding it: the
                // dry run lists what goes, each at its top.
                let host = join(host, &gone);
                let removal = remove_dir(d.as_fd(), &gone, &host, &shown, self.filter, mark, true)?;
                stays |= !removal.gone;
                for rel in removal.removed {
                    self.report.deleted += 1;
                    let path = to.join(OsStr::from_bytes(&rel));
                    self.report.changes.push(Change { path, action: Action::Deleted });
                }
            }
        }
        let prune = action == Action::New && inside.is_some() && has_includes;
        let mark = Mark { all, prune_at: prune.then_some(self.report.entries), pruned, selected: false, stays };
        Ok(Some((src_child, dst_child, names, mark)))
    }
}

impl Tree for Survey<'_> {
    type Open = Fds;
    type Closed = ClosedFds;
    type Info = Mark;

    fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
        let (s, d) = (parent.open.0.as_fd(), parent.open.1.as_ref().map(|d| d.as_fd()));
        self.hit = false;
        let below = self.entry(s, name, d, name, shown(&paths.a), shown(&paths.b), Some(parent.info.all))?;
        if self.hit {
            (parent.info.selected, parent.info.stays) = (true, true);
        }
        Ok(below.map(|(s, d, names, mark)| Entered { open: (s, d), info: mark, subdirs: names }))
    }

    fn leave(&mut self, open: Fds, done: Mark, parent: Option<Parent<'_, Self>>, paths: &Paths) -> Result<()> {
        if done.prune_at == Some(self.report.entries) {
            // Nothing below it is restored: neither is it.
            self.report.entries -= 1;
            if self.list {
                self.report.changes.pop();
                self.report.written.pop();
            }
        }
        let mut stays = open.1.is_some();
        if let Some(p) = done.pruned.filter(|_| !done.selected) {
            self.report.entries -= 1; // nothing is written to it
            stays = !self.delete || done.stays;
            if !stays {
                // Emptied: it goes too, listed once in place of what it held.
                self.report.deleted = p.deleted + 1;
            }
            if self.list && stays {
                self.report.changes.remove(p.change);
                self.report.written.remove(p.written);
            } else if self.list {
                self.report.changes.truncate(p.change);
                self.report.written.truncate(p.written);
                let path = shown(&paths.b).to_path_buf();
                self.report.changes.push(Change { path, action: Action::Deleted });
            }
        }
        if let Some(up) = parent {
            up.info.selected |= done.selected;
            up.info.stays |= stays || done.selected;
        }
        Ok(())
    }

    fn close(&mut self, open: Fds, _: &Mark, child: &Fds, at: tree::At) -> Result<ClosedFds> {
        close_fds(open, child, at)
    }

    fn reopen(&mut self, child: &Fds, closed: ClosedFds, _: &Mark, at: tree::At) -> Result<Fds> {
        reopen_fds(child, closed, at)
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

/// The names in an open directory, sorted (so a restore writes in a stable order). In the
/// snapshot's own directory, its `.hwc-backup/` is left out: the snapshot's metadata is not
/// part of what it holds.
fn names_in(dir: BorrowedFd, path: &Path, is_snapshot_root: bool) -> Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(|e| Error::io("read directory", path, e.into()))? {
        let entry = entry.map_err(|e| Error::io("read directory", path, e.into()))?;
        let name = entry.file_name();
        if name == c"." || name == c".." || (is_snapshot_root && name.to_bytes() == META_DIR.as_bytes()) {
            continue;
        }
        names.push(name.to_owned());
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

/// A directory being filled: its status in the snapshot (applied once it is full), whether
/// its entries merge with what is there or are new, and what the filter says about it.
struct Filling {
    st: Stat,
    merge: bool,
    /// Everything below it is restored (see [`Filter::select`]).
    all: bool,
    /// It is new and is removed again when nothing was restored into it.
    prune: bool,
    /// It was on the target, and is left as it is (or with `delete` removed when emptied) if
    /// nothing below it is restored (see [`Pruned`]): the count of deletions before it.
    pruned: Option<u64>,
    /// Something below it is restored (a non-directory the filter selects).
    selected: bool,
}

/// A directory to go down into: the snapshot's, the target's, and how to fill it.
struct Descend {
    src: OwnedFd,
    dst: OwnedFd,
    names: Vec<CString>,
    filling: Filling,
}

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
    filter: Option<&'a Filter>,
    delete: bool,
    /// Where the path as it was on the host starts in a display path in the snapshot.
    host_base: usize,
    /// The callback, and what earlier paths of the same restore wrote (entries, bytes).
    progress: Option<(Progress<'a>, (u64, u64))>,
    /// Where a created file goes to have its content and metadata written by a worker;
    /// `None`: written here (a file renamed over an old one must be complete first).
    files: Option<crossbeam_channel::Sender<FileJob>>,
    /// Set by a worker that failed: the walk stops.
    failed: &'a AtomicBool,
    /// The last entry was a non-directory that is restored.
    hit: bool,
    /// Where, in the target's display path, the path relative to `dst_root` starts.
    rel_start: usize,
}

/// How many created files may wait for a worker (two descriptors each): 128, fewer under a
/// low open-file limit, which the walk's own descriptors (about 70) must fit in too.
fn file_queue() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    usize::try_from(soft.saturating_sub(96) / 4).unwrap_or(usize::MAX).clamp(1, 128)
}

/// A regular file the walk created on the target (empty, mode 0600, through `O_NOFOLLOW |
/// O_EXCL`), for a worker to fill: its content, then owner, mode, xattrs and times, all
/// through the two open descriptors, so nothing is looked up by name again. The directory
/// holding it gets its own times only after the walk has left it; filling a file created
/// there does not change them.
struct FileJob {
    src: std::fs::File,
    dst: std::fs::File,
    st: Stat,
    to: PathBuf,
}

/// Fills the files of the queue until it closes; the first failure is kept (and `failed`
/// set), the files queued after it are dropped unwritten.
fn file_worker(rx: crossbeam_channel::Receiver<FileJob>, failure: &Mutex<Option<Error>>, failed: &AtomicBool) {
    let mut buf = Vec::new();
    for job in rx {
        if failed.load(Ordering::Relaxed) {
            continue;
        }
        if let Err(e) = fill(job, &mut buf) {
            failed.store(true, Ordering::Relaxed);
            let mut first = failure.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(e);
        }
    }
}

fn fill(job: FileJob, buf: &mut Vec<u8>) -> Result<()> {
    let FileJob { src, mut dst, st, to } = job;
    fsops::copy_plain(&src, &st, &mut dst, buf).ctx("copy to", &to)?;
    fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), &st).ctx("set metadata of", &to)?;
    Ok(())
}

impl<'a> Copier<'a> {
    /// Restores `src_dir/name` (shown as `from`) as `dst_name` in `dst_root` (shown as
    /// `dst_path`) and everything below it: a copy where nothing is there yet, a merge
    /// (`merge`) where something may be. The walk is [`tree::depth_first`]'s; each directory
    /// gets its mode and times once all its entries are written.
    fn run(
        &mut self,
        src_dir: BorrowedFd,
        name: &CStr,
        from: &Path,
        dst_path: &Path,
        dst_name: &CStr,
        merge: bool,
    ) -> Result<()> {
        let dst_root = self.dst_root;
        let to = join(dst_path, dst_name);
        // Where, in the target's display path, the path relative to `dst_root` starts.
        self.rel_start = to.as_os_str().len() - dst_name.to_bytes().len();
        let found = self.entry(src_dir, name, dst_root, dst_name, from, &to, self.rel_start, merge, None)?;
        let Some(d) = found else { return Ok(()) };
        let start = Entered { open: (d.src, Some(d.dst)), info: d.filling, subdirs: d.names };
        let paths = Paths::new(from.as_os_str().as_bytes().to_vec(), to.as_os_str().as_bytes().to_vec());
        tree::depth_first(self, start, paths, KEEP_OPEN)
    }

    /// A new directory that the filter left empty is removed again (true); false when
    /// something was restored into it.
    fn prune_empty(&mut self, parent: BorrowedFd, to: &Path) -> Result<bool> {
        let gone = self.remove_if_empty(parent, to)?;
        if gone {
            self.report.entries -= 1;
        }
        Ok(gone)
    }

    /// Removes the directory the walk just left (`to`, through its parent's descriptor
    /// `parent`) when it is empty; true when it is gone.
    fn remove_if_empty(&mut self, parent: BorrowedFd, to: &Path) -> Result<bool> {
        let bytes = to.as_os_str().as_bytes();
        let name = cstr(OsStr::from_bytes(&bytes[bytes.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1)..]));
        match rustix::fs::unlinkat(parent, &name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(Error::io("remove empty directory", to, e.into())),
        }
    }

    /// One entry, copied or merged; returns the directory to go down into, if any. `to` is the
    /// target's display path, whose part from `rel_start` on is relative to `dst_root`.
    /// `inside` is what the filter said about the directory holding it (`None` for the
    /// restored path itself).
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        src_dir: BorrowedFd,
        name: &CStr,
        dst_dir: BorrowedFd,
        dst_name: &CStr,
        from: &Path,
        to: &Path,
        rel_start: usize,
        merge: bool,
        inside: Option<bool>,
    ) -> Result<Option<Descend>> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::Cancelled); // a worker failed; its error is the one reported
        }
        let rel = Path::new(OsStr::from_bytes(&to.as_os_str().as_bytes()[rel_start..]));
        let st = rustix::fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io("inspect", from, e.into()))?;
        let is_dir = fsops::file_type(&st) == FileType::Directory;
        let Some(all) = decide(self.filter, host_of(from, self.host_base), is_dir, inside) else { return Ok(None) };
        self.hit = !is_dir && fsops::file_type(&st) != FileType::Socket;
        let prune = inside.is_some() && self.filter.is_some_and(Filter::has_includes);
        let at = At { src_dir, name, dst_dir, from, rel, all, prune, inside };
        match merge {
            true => self.merge_entry(&at, &st, dst_name, to),
            false => self.copy_entry(&at, &st, dst_name, to),
        }
    }

    /// Copies the entry (whose status is `st`) to `dst_dir/dst_name` (shown as `to`), where
    /// nothing exists yet; a directory is created, and returned to be filled.
    fn copy_entry(&mut self, at: &At, st: &Stat, dst_name: &CStr, to: &Path) -> Result<Option<Descend>> {
        let At { src_dir, name, dst_dir, from, rel, .. } = *at;
        match fsops::file_type(st) {
            FileType::Directory => {
                let src = fsops::open_dir_at(src_dir, name).ctx("open directory", from)?;
                let dst = fsops::make_dir_at(dst_dir, dst_name).ctx("create directory", to)?;
                return self.filling(src, dst, st, at, false).map(Some);
            }
            FileType::RegularFile => {
                if self.link_to_earlier_copy(st, dst_dir, dst_name).ctx("create hard link", to)? {
                    return Ok(None);
                }
                let (src, now) = fsops::open_source_file(src_dir, name).ctx("open", from)?;
                // The file listed, not one put under its name since (whoever writes the backup
                // disk): its content and metadata are what `st` describes.
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(Error::io(
                        "open",
                        from,
                        std::io::Error::other(
                            "it was replaced since it was listed (the snapshot changed during the restore)",
                        ),
                    ));
                }
                let mut dst = fsops::create_file_at(dst_dir, dst_name).ctx("create", to)?;
                if st.st_nlink > 1 {
                    // Later links go to this inode, whether or not a worker has filled it yet.
                    let copy = rustix::fs::fstat(&dst).ctx("inspect", to)?;
                    self.links.entry((st.st_dev, st.st_ino)).or_insert((rel.to_path_buf(), (copy.st_dev, copy.st_ino)));
                }
                match &self.files {
                    Some(files) => {
                        let job = FileJob { src, dst, st: *st, to: to.to_path_buf() };
                        if files.send(job).is_err() {
                            return Err(Error::Cancelled);
                        }
                    }
                    None => {
                        fsops::copy_plain(&src, st, &mut dst, &mut self.buf).ctx("copy to", to)?;
                        fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), st).ctx("set metadata of", to)?;
                    }
                }
                self.report.entries += 1;
                self.report.bytes += st.st_size as u64;
                self.tick();
            }
            FileType::Symlink => {
                fsops::copy_symlink(src_dir, name, dst_dir, dst_name, st).ctx("create symlink", to)?;
                self.report.entries += 1;
            }
            FileType::Socket => {}
            _ => {
                fsops::copy_special(src_dir, name, dst_dir, dst_name, st).ctx("create", to)?;
                self.report.entries += 1;
            }
        }
        Ok(None)
    }

    /// Like [`Copier::copy_entry`], but `dst_dir/dst_name` may exist: a directory over a
    /// directory merges, an identical entry is left alone, and any other non-directory is
    /// replaced (the caller has checked `force`). A directory is never removed: the survey
    /// refused that before anything was written, and should one appear since, the restore
    /// stops here. Nothing on the target is followed if it is a symlink: it is replaced.
    fn merge_entry(&mut self, at: &At, st: &Stat, dst_name: &CStr, to: &Path) -> Result<Option<Descend>> {
        let At { src_dir, name, dst_dir, from, rel, .. } = *at;
        let st = *st;
        let existing = match rustix::fs::statat(dst_dir, dst_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return self.copy_entry(at, &st, dst_name, to),
            Err(e) => return Err(Error::io("inspect", to, e.into())),
        };
        let kind = fsops::file_type(&st);
        match (kind, fsops::file_type(&existing)) {
            (FileType::Socket, _) => {} // not restored, so nothing is replaced
            (FileType::Directory, FileType::Directory) => {
                let src = fsops::open_dir_at(src_dir, name).ctx("open directory", from)?;
                let dst = fsops::open_dir_at(dst_dir, dst_name).ctx("open directory", to)?;
                let filling = self.filling(src, dst, &st, at, true)?;
                if self.delete {
                    self.delete_extraneous(&filling, from, to)?;
                }
                return Ok(Some(filling));
            }
            (FileType::Directory, _)
                if at.prune
                    && !selects_below(src_dir, name, from, self.filter.expect("prune"), self.host_base, at.all)? =>
            {
                // Nothing below it is restored, so it replaces nothing (see `Survey::entry`).
            }
            (_, FileType::Directory) if self.delete => {
                // `delete` replaces a directory where the snapshot has something else (the
                // survey counted it as replaced, which needs `force`).
                let host = host_of(from, self.host_base).to_path_buf();
                let mark = decide(self.filter, &host, true, at.inside);
                let gone = match mark {
                    Some(mark) => remove_dir(dst_dir, dst_name, &host, to, self.filter, mark, false)?.gone,
                    None => false,
                };
                if !gone {
                    return Err(Error::Guard(format!(
                        "{} holds entries the patterns protect from deletion (excluded, or matching no include), so it cannot be replaced by the snapshot's {}",
                        to.display(),
                        from.display()
                    )));
                }
                return self.copy_entry(at, &st, dst_name, to);
            }
            (_, FileType::Directory) => {
                return Err(Error::Guard(format!(
                    "{} is a directory and the snapshot has no directory there; restore never deletes a directory",
                    to.display()
                )));
            }
            _ if same_entry(src_dir, name, &st, dst_dir, dst_name, &existing).ctx("compare with", to)? => {
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
                let tmp_path = join(to.parent().unwrap_or(Path::new("")), &tmp);
                remove_at(dst_dir, &tmp, &tmp_path)?;
                // Written here, not by a worker: it must be complete before it is renamed.
                let files = self.files.take();
                let copied = self.copy_entry(at, &st, &tmp, &tmp_path);
                self.files = files;
                copied?;
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let written = rustix::fs::openat(dst_dir, &tmp, flags, Mode::empty())
                    .map_err(|e| Error::io("open", &tmp_path, e.into()))?;
                rustix::fs::fsync(&written).ctx("flush", &tmp_path)?;
                rustix::fs::renameat(dst_dir, &tmp, dst_dir, dst_name).ctx("rename into place", to)?;
            }
            _ => {
                // A non-directory (a symlink planted where a directory goes, too) is unlinked,
                // never followed. A directory put in its place stays, even if the filter leaves
                // it empty: the survey counted it as replacing that entry, not as new.
                rustix::fs::unlinkat(dst_dir, dst_name, AtFlags::empty()).ctx("remove", to)?;
                return self.copy_entry(&At { prune: false, ..*at }, &st, dst_name, to);
            }
        }
        Ok(None)
    }

    /// A directory to fill: counted, and its names read.
    fn filling(&mut self, src: OwnedFd, dst: OwnedFd, st: &Stat, at: &At, merge: bool) -> Result<Descend> {
        self.report.entries += 1;
        let is_root = (st.st_dev, st.st_ino) == self.root_id;
        let names = names_in(src.as_fd(), at.from, is_root)?;
        let pruned = (merge && at.prune).then_some(self.report.deleted);
        let filling = Filling { st: *st, merge, all: at.all, prune: at.prune && !merge, pruned, selected: false };
        Ok(Descend { src, dst, names, filling })
    }

    /// Removes what the target directory of `d` holds that the restore does not write there
    /// and the filter does not protect (`delete`, see [`extraneous`]).
    fn delete_extraneous(&mut self, d: &Descend, from: &Path, to: &Path) -> Result<()> {
        let host_dir = host_of(from, self.host_base).to_path_buf();
        let found =
            extraneous(d.dst.as_fd(), to, d.src.as_fd(), from, &d.names, self.filter, self.host_base, d.filling.all)?;
        for (name, is_dir, mark) in found.gone {
            let shown = join(to, &name);
            match is_dir {
                true => {
                    let host = host_dir.join(OsStr::from_bytes(name.to_bytes()));
                    let removal = remove_dir(d.dst.as_fd(), &name, &host, &shown, self.filter, mark, false)?;
                    self.report.deleted += removal.removed.len() as u64;
                }
                false => {
                    rustix::fs::unlinkat(d.dst.as_fd(), &name, AtFlags::empty()).ctx("remove", &shown)?;
                    self.report.deleted += 1;
                }
            }
        }
        Ok(())
    }

    /// Reports progress, when asked to.
    fn tick(&self) {
        if let Some((progress, (entries, bytes))) = self.progress {
            progress(&Counts {
                files: entries + self.report.entries,
                bytes_copied: bytes + self.report.bytes,
                ..Counts::default()
            });
        }
    }

    /// For a file with several links whose first copy exists, links to that copy and
    /// returns true (after checking that the link reaches that very copy); otherwise returns
    /// false, and the caller records the copy it makes.
    fn link_to_earlier_copy(&mut self, st: &Stat, dst_dir: BorrowedFd, dst_name: &CStr) -> std::io::Result<bool> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let Some((first, id)) = self.links.get(&(st.st_dev, st.st_ino)) else { return Ok(false) };
        match rustix::fs::linkat(self.dst_root, first.as_path(), dst_dir, dst_name, AtFlags::empty()) {
            Ok(()) => {}
            // Deep in a tree, longer than PATH_MAX: reached one directory at a time.
            Err(rustix::io::Errno::NAMETOOLONG) => {
                let (dir, file) = open_parent_beneath(self.dst_root, first)?;
                rustix::fs::linkat(&dir, &file, dst_dir, dst_name, AtFlags::empty())?;
            }
            Err(e) => return Err(e.into()),
        }
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

impl Tree for Copier<'_> {
    type Open = Fds;
    type Closed = ClosedFds;
    type Info = Filling;

    fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
        let (merge, inside) = (parent.info.merge, parent.info.all);
        let s = parent.open.0.as_fd();
        let d = parent.open.1.as_ref().expect("the target directory is open").as_fd();
        self.hit = false;
        let (from, to) = (shown(&paths.a), shown(&paths.b));
        let below = self.entry(s, name, d, name, from, to, self.rel_start, merge, Some(inside))?;
        if self.hit {
            parent.info.selected = true;
        }
        Ok(below.map(|d| Entered { open: (d.src, Some(d.dst)), info: d.filling, subdirs: d.names }))
    }

    fn leave(&mut self, open: Fds, done: Filling, parent: Option<Parent<'_, Self>>, paths: &Paths) -> Result<()> {
        // The directory holding it on the target: its parent's, or the one the restore writes in.
        let up = match parent {
            Some(up) => {
                up.info.selected |= done.selected;
                up.open.1.as_ref().expect("the target directory is open").as_fd()
            }
            None => self.dst_root,
        };
        let to = shown(&paths.b);
        let (src, dst) = (open.0, open.1.expect("the directory has a target"));
        if done.prune && self.prune_empty(up, to)? {
            return Ok(());
        }
        if let Some(deleted) = done.pruned.filter(|_| !done.selected) {
            // Nothing below it is restored: as with rsync --prune-empty-dirs, it is left as it
            // is, or with `delete` removed when emptied (listed once).
            self.report.entries -= 1;
            drop(dst);
            if self.delete && self.remove_if_empty(up, to)? {
                self.report.deleted = deleted + 1;
            }
            return Ok(());
        }
        fsops::apply_meta_fd(Some(src.as_fd()), dst.as_fd(), &done.st).ctx("set metadata of", to)
    }

    fn close(&mut self, open: Fds, _: &Filling, child: &Fds, at: tree::At) -> Result<ClosedFds> {
        close_fds(open, child, at)
    }

    fn reopen(&mut self, child: &Fds, closed: ClosedFds, _: &Filling, at: tree::At) -> Result<Fds> {
        reopen_fds(child, closed, at)
    }
}

/// Where one entry of a copy comes from and goes to.
#[derive(Clone, Copy)]
struct At<'p> {
    src_dir: BorrowedFd<'p>,
    name: &'p CStr,
    dst_dir: BorrowedFd<'p>,
    /// The entry in the snapshot, for messages.
    from: &'p Path,
    /// Its path on the target relative to the copy's `dst_root` (for hard links).
    rel: &'p Path,
    /// What the filter says about it (see [`Filter::select`]).
    all: bool,
    /// A new directory here is removed again if nothing is restored into it.
    prune: bool,
    /// What the filter said about the directory holding it (`None` for the restored path).
    inside: Option<bool>,
}

/// The directory holding `rel` below `root` and the last name of `rel`, opened one
/// component at a time (`O_NOFOLLOW`), holding two descriptors at most, whatever the depth.
fn open_parent_beneath(root: BorrowedFd, rel: &Path) -> std::io::Result<(OwnedFd, CString)> {
    let bytes = rel.as_os_str().as_bytes();
    let mut parts = bytes.split(|&c| c == b'/').filter(|p| !p.is_empty() && *p != b".");
    let last = parts.next_back().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut dir = rustix::fs::openat(root, c".", DIR_FLAGS, Mode::empty())?;
    for part in parts {
        let part = CString::new(part).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        dir = rustix::fs::openat(&dir, &part, DIR_FLAGS, Mode::empty())?;
    }
    let last = CString::new(last).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok((dir, last))
}

fn split(p: &Path) -> (PathBuf, std::ffi::OsString) {
    let parent = p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    (parent, p.file_name().map(|n| n.to_os_string()).unwrap_or_default())
}

/// Removes `dir/name` (shown as `shown`; a whole tree if it is a directory) without following
/// a symlink anywhere and without recursion ([`Dir::remove_tree`]). For the entries this tool
/// names itself (`.NAME.hwc-restore`), never for a user's directory.
fn remove_at(dir: BorrowedFd, name: &CStr, shown: &Path) -> Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("inspect", shown, e.into())),
        Ok(st) if fsops::file_type(&st) == FileType::Directory => {
            let parent = shown.parent().unwrap_or(Path::new("")).to_path_buf();
            let name = Name::new(name.to_bytes())
                .map_err(|e| Error::Unsafe { path: shown.to_path_buf(), message: e.to_string() })?;
            let fd = dir.try_clone_to_owned().ctx("duplicate handle of", &parent)?;
            Dir::from_trusted_fd(fd, parent)?.remove_tree(&name)
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).ctx("remove", shown),
    }
}
