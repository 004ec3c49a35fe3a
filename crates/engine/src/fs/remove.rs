//! Deleting a tree below a [`Dir`]: fd-relative, never through a symlink, and without
//! recursion (the one traversal, [`super::tree`]), so a tree tens of thousands of levels deep
//! (which `rm -rf` handles) cannot overflow the stack, and at most [`KEEP_OPEN`] directories
//! are open at once. Each directory is emptied of its files when it is entered (one pass over
//! it, as `rm -rf` makes) and removed from its parent when it is left.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::tree::{self, At, Entered, Parent, Paths, Tree};
use super::{reopen_parent, Dir, Name, DIR_FLAGS};
use crate::error::{Error, IoContext, Result};

/// Directory fds kept open on the way down; above them, a level is re-opened through `..`
/// and checked by device and inode when the walk climbs back to it (as GNU `rm` does).
const KEEP_OPEN: usize = 64;

/// What the removal keeps with a directory it is emptying, until it is left.
struct Level {
    name: Name,
    dev: u64,
    ino: u64,
    /// Its subdirectories with the mark [`Keep`] gave each, in the order they are entered
    /// (the traversal is handed the same names).
    subdirs: std::vec::IntoIter<(Name, bool)>,
    /// Something below it is kept, so it stays.
    kept: bool,
    /// Where its removed entries start in the list of what was removed (see [`Removal`]).
    tops_at: usize,
}

/// Which entries a removal keeps: called for each entry below the removed directory with its
/// path relative to the parent the removal started in (`name/sub/file`), whether it is a
/// directory, and the mark of the directory holding it. `None` keeps the entry (a kept
/// directory is kept whole); `Some(mark)` removes it, and a removed directory passes `mark`
/// on to what it holds. The directories holding a kept entry stay too.
pub type Keep<'a> = &'a dyn Fn(&[u8], bool, bool) -> Option<bool>;

/// What `remove_tree_keeping` removed (or, in a dry run, would remove).
#[derive(Debug, Default)]
pub struct Removal {
    /// The name is gone, with everything below it.
    pub gone: bool,
    /// What is removed, each at the top of what goes (a directory once, not what it held),
    /// relative to the parent the removal started in: `[name]` when it is gone.
    pub removed: Vec<Vec<u8>>,
}

/// See the module docs. `name` is removed from `parent`; missing is fine.
pub(super) fn remove_tree(parent: &Dir, name: &Name) -> Result<()> {
    remove_tree_keeping(parent, name, None, false).map(|_| ())
}

/// [`remove_tree`], leaving alone what `keep` keeps and the directories holding it (`name`
/// itself is the caller's to decide; its entries get the mark given with `keep`). With
/// `dry_run`, nothing is removed (nor made writable): the walk only says what would go.
pub(super) fn remove_tree_keeping(
    parent: &Dir,
    name: &Name,
    keep: Option<(Keep, bool)>,
    dry_run: bool,
) -> Result<Removal> {
    let gone = Removal { gone: true, removed: vec![name.as_bytes().to_vec()] };
    match parent.stat(name)? {
        None => return Ok(Removal { gone: true, removed: Vec::new() }),
        Some(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
            if !dry_run {
                parent.remove_file(name)?;
            }
            return Ok(gone);
        }
        Some(_) => {}
    }
    let (keep, mark) = match keep {
        Some((k, m)) => (Some(k), m),
        None => (None, true),
    };
    let rel = name.as_bytes().to_vec();
    let mount = super::fsops::mount_id(parent.fd()).ctx("inspect", parent.path())?;
    let mut walk = Walking { keep, dry_run, start: parent, mount, depth: 0, tops: Vec::new(), kept: false };
    let start = walk.descend(parent, name, &rel, mark)?;
    tree::depth_first(&mut walk, start, Paths::new(rel, Vec::new()), KEEP_OPEN)?;
    Ok(match walk.kept {
        true => Removal { gone: false, removed: walk.tops },
        false => gone,
    })
}

/// How a removal walks: what it keeps, and whether it removes anything; where it started,
/// and what it found (the path below that parent is `Paths::a`).
struct Walking<'a> {
    keep: Option<Keep<'a>>,
    dry_run: bool,
    /// The directory the removed one is in.
    start: &'a Dir,
    /// Its mount: a directory below on another one is a mount point, never entered (a bind
    /// mount of someone's data planted in `.trash` would otherwise be emptied).
    mount: u64,
    /// Levels below the removed directory (for display paths).
    depth: usize,
    /// What was removed where something stays, when there is something to keep.
    tops: Vec<Vec<u8>>,
    /// The removed directory itself stays (something below it is kept).
    kept: bool,
}

impl Tree for Walking<'_> {
    type Open = Dir;
    /// Nothing: a level's device and inode are recorded when it is entered.
    type Closed = ();
    type Info = Level;

    fn enter(&mut self, parent: Parent<'_, Self>, _: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
        let (name, mark) = parent.info.subdirs.next().expect("one subdirectory per name the traversal was given");
        self.depth += 1;
        self.descend(parent.open, &name, &paths.a, mark).map(Some)
    }

    fn leave(&mut self, dir: Dir, done: Level, parent: Option<Parent<'_, Self>>, paths: &Paths) -> Result<()> {
        drop(dir);
        let up = parent.as_ref().map_or(self.start, |p| p.open);
        let kept = done.kept
            || (!self.dry_run
                && match rustix::fs::unlinkat(up.fd(), done.name.as_cstr(), AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => false,
                    // Something appeared meanwhile; with entries to keep, that is not an error.
                    Err(Errno::NOTEMPTY) if self.keep.is_some() => true,
                    Err(e) => return Err(Error::io("remove directory", up.child_path(&done.name), e.into())),
                });
        if self.keep.is_some() && !kept {
            // Gone whole: listed once, in place of what it held.
            self.tops.truncate(done.tops_at);
            self.tops.push(paths.a.clone());
        }
        match parent {
            Some(p) => {
                p.info.kept |= kept;
                self.depth -= 1;
            }
            None => self.kept = kept,
        }
        Ok(())
    }

    fn close(&mut self, _: Dir, _: &Level, _: &Dir, _: At) -> Result<()> {
        Ok(())
    }

    fn reopen(&mut self, child: &Dir, (): (), level: &Level, _: At) -> Result<Dir> {
        reopen_level(child, level)
    }
}

impl Walking<'_> {
    /// Removes every non-directory in `dir` (`rel` below the removal's parent, `mark` its mark)
    /// that `keep` does not keep (listing it in `tops` when there is a `keep`), and returns
    /// the subdirectories to remove, with their marks, and whether it keeps anything.
    fn empty_files_of(&mut self, dir: &Dir, rel: &[u8], mark: bool) -> Result<(Vec<(Name, bool)>, bool)> {
        let keep = self.keep;
        let mut subs = Vec::new();
        let mut kept = false;
        let mut path = rel.to_vec();
        let reader = rustix::fs::Dir::read_from(dir.fd()).ctx("read directory", dir.path())?;
        for entry in reader {
            let entry = entry.ctx("read directory", dir.path())?;
            let Ok(name) = Name::new(entry.file_name().to_bytes()) else { continue }; // `.` and `..`
            let kind = match entry.file_type() {
                FileType::Unknown => match dir.stat(&name)? {
                    Some(st) => FileType::from_raw_mode(st.st_mode),
                    None => continue,
                },
                k => k,
            };
            let is_dir = kind == FileType::Directory;
            let mut sub_mark = true;
            if let Some(keep) = keep {
                path.truncate(rel.len());
                path.push(b'/');
                path.extend_from_slice(name.as_bytes());
                match keep(&path, is_dir, mark) {
                    None => {
                        kept = true;
                        continue;
                    }
                    Some(m) => sub_mark = m,
                }
                if !is_dir {
                    self.tops.push(path.clone());
                }
            }
            if is_dir {
                subs.push((name, sub_mark));
            } else if !self.dry_run {
                dir.remove_file(&name)?;
            }
        }
        Ok((subs, kept))
    }

    /// Opens `name` below `dir` for emptying (making it writable when we are not root: a
    /// snapshot keeps the source's `0500` directories), empties it of its files, and returns
    /// it with its subdirectories to remove (in the order the one pass over it found them,
    /// last first, as before the one traversal).
    fn descend(&mut self, dir: &Dir, name: &Name, rel: &[u8], mark: bool) -> Result<Entered<Self>> {
        let depth = self.depth;
        let path = || if depth < 8 { dir.child_path(name) } else { dir.path().join(name.as_os_str()) };
        let fd = match rustix::fs::openat(dir.fd(), name.as_cstr(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ACCESS) if !self.dry_run => {
                make_writable_by_path(dir, name)?;
                rustix::fs::openat(dir.fd(), name.as_cstr(), DIR_FLAGS, Mode::empty()).ctx("open directory", path())?
            }
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(dir.unexpected(name, "a directory")),
            Err(e) => return Err(Error::io("open directory", path(), e.into())),
        };
        if super::fsops::mount_id(fd.as_fd()).ctx("inspect", path())? != self.mount {
            return Err(Error::Unsafe {
                path: path(),
                message: "a mount point inside a tree being deleted; nothing below it is touched".into(),
            });
        }
        let st = rustix::fs::fstat(&fd).ctx("inspect", path())?;
        if !self.dry_run && !rustix::process::geteuid().is_root() && st.st_mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700)).ctx("make writable", path())?;
        }
        // Deep below the start, messages name the top of the tree and the last component only,
        // so the memory for display paths stays linear in the depth.
        let shown = if depth < 8 { dir.child_path(name) } else { dir.path().to_path_buf() };
        let dir = Dir::from_fd(fd, shown);
        let tops_at = self.tops.len();
        let (mut subdirs, kept) = self.empty_files_of(&dir, rel, mark)?;
        subdirs.reverse();
        let names = subdirs.iter().map(|(n, _)| n.as_cstr().to_owned()).collect();
        let level =
            Level { name: name.clone(), dev: st.st_dev, ino: st.st_ino, subdirs: subdirs.into_iter(), kept, tops_at };
        Ok(Entered { open: dir, info: level, subdirs: names })
    }
}

/// A directory we may not even open: `chmod u+rwx` through an `O_PATH` handle, which pins
/// the very inode (no symlink, no rename race), via its `/proc/self/fd` link.
fn make_writable_by_path(dir: &Dir, name: &Name) -> Result<()> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd: OwnedFd = rustix::fs::openat(dir.fd(), name.as_cstr(), flags, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => dir.unexpected(name, "a directory"),
        e => Error::io("open directory", dir.child_path(name), e.into()),
    })?;
    let st = rustix::fs::fstat(&fd).ctx("inspect", dir.child_path(name))?;
    rustix::fs::chmod(super::fsops::proc_path(fd.as_fd(), false), Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))
        .ctx("make writable", dir.child_path(name))
}

/// Re-opens a level whose fd was closed on the way down (see [`reopen_parent`]).
fn reopen_level(child: &Dir, want: &Level) -> Result<Dir> {
    let fd = reopen_parent(child.fd(), (want.dev, want.ino)).ctx("open parent of", child.path())?;
    let fd = fd.ok_or_else(|| Error::Unsafe {
        path: child.path().to_path_buf(),
        message: "the tree was moved while it was being deleted; stopping".into(),
    })?;
    Ok(Dir::from_fd(fd, child.path().to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every path below `root`, relative and sorted, symlinks not followed.
    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                if p.symlink_metadata().unwrap().is_dir() {
                    todo.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_tree_moved_while_it_is_deleted_stops_the_deletion_before_anything_outside() {
        // 100 levels, more than are kept open: the levels above are re-opened through `..`
        // on the way back up. Deep down, a middle directory is moved out of the tree, beside
        // files that are not being deleted; climbing back up from it would reach them.
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let mut deep = root.join("top");
        for i in 0..100 {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "f").unwrap();
        std::fs::write(t.path().join("victim.txt"), "precious").unwrap();
        std::fs::create_dir_all(t.path().join("victim-dir/sub")).unwrap();
        let middle: std::path::PathBuf = (0..10).fold(root.join("top"), |p, i| p.join(format!("d{i}")));
        let moved = std::cell::Cell::new(false);
        let keep = |rel: &[u8], _: bool, _: bool| {
            if !moved.get() && rel.ends_with(b"/d90") {
                std::fs::rename(&middle, t.path().join("moved")).unwrap();
                moved.set(true);
            }
            Some(true)
        };
        let dir = Dir::open_trusted(&root).unwrap();
        let e = dir.remove_tree_keeping(&Name::new("top").unwrap(), &keep, true, false).unwrap_err();
        assert!(moved.get());
        assert!(e.to_string().contains("the tree was moved while it was being deleted"), "{e}");
        assert_eq!(std::fs::read_to_string(t.path().join("victim.txt")).unwrap(), "precious");
        assert!(t.path().join("victim-dir/sub").is_dir());
        assert!(root.join("top").is_dir(), "the levels above the moved one stay");
    }

    #[test]
    fn the_mark_carries_down_what_is_kept_stays_and_a_dry_run_says_what_would_go() {
        let t = tempfile::tempdir().unwrap();
        let (root, victim) = (t.path().join("root"), t.path().join("victim"));
        std::fs::create_dir_all(victim.join("sub")).unwrap();
        std::fs::write(victim.join("x.txt"), "precious").unwrap();
        for f in ["top/a.txt", "top/b.log", "top/inc/c.log", "top/inc/deep/d.log", "top/only/e.log"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::create_dir_all(root.join("top/empty")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("top/link.txt")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("top/linkdir")).unwrap();
        // As restore's filter with `--include '*.txt' --include inc`: below `inc` everything
        // goes (the mark), elsewhere directories are walked and other files kept.
        let keep = |rel: &[u8], is_dir: bool, inside: bool| {
            if inside || (is_dir && rel.ends_with(b"/inc")) {
                Some(true)
            } else if is_dir || rel.ends_with(b".txt") {
                Some(false)
            } else {
                None
            }
        };
        let dir = Dir::open_trusted(&root).unwrap();
        let top = Name::new("top").unwrap();
        let before = (tree(&root), tree(&victim));
        let dry = dir.remove_tree_keeping(&top, &keep, false, true).unwrap();
        assert_eq!((tree(&root), tree(&victim)), before, "a dry run removes nothing");
        let real = dir.remove_tree_keeping(&top, &keep, false, false).unwrap();
        assert_eq!(dry.removed, real.removed);
        assert!(!real.gone && !dry.gone);
        let mut removed: Vec<String> = real.removed.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
        removed.sort();
        assert_eq!(removed, ["top/a.txt", "top/empty", "top/inc", "top/link.txt"]);
        assert_eq!(tree(&root), ["top", "top/b.log", "top/linkdir", "top/only", "top/only/e.log"]);
        assert_eq!(tree(&victim), before.1, "a symlink is removed as a link, never followed");
        // Nothing kept: the whole tree goes, listed once.
        let all = |_: &[u8], _: bool, _: bool| Some(true);
        let dry = dir.remove_tree_keeping(&top, &all, false, true).unwrap();
        assert!(dry.gone && dry.removed == [b"top".to_vec()] && root.join("top").exists());
        let real = dir.remove_tree_keeping(&top, &all, false, false).unwrap();
        assert!(real.gone && real.removed == [b"top".to_vec()] && !root.join("top").exists());
        assert_eq!(tree(&victim), before.1);
    }
}
