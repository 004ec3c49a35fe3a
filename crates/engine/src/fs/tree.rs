//! The one depth-first traversal of a directory tree, for every walk that reads one: this
//! machine's sources (`source::local`), a pulled host's agent (`source::remote::agent`), a
//! snapshot (`store::walk`) and a restore's walk of a snapshot and its target
//! (`store::restore`). What a walk does in a directory is its own ([`Tree`]); the order,
//! the stack and the descriptors are this module's:
//!
//! - **No recursion.** The path from the start down to the current directory is an explicit
//!   stack, so no tree is too deep for the thread's stack (directories 20 000 levels deep, paths
//!   far beyond `PATH_MAX`, are walked).
//! - **Bounded descriptors.** Only the `open_levels` deepest directories of that path hold their
//!   handles; a directory higher up is closed ([`Tree::close`], which records what it was) and
//!   opened again through `..` of its child when the walk comes back to it ([`Tree::reopen`],
//!   which checks it is the same directory: one moved during the walk stops it with an error
//!   instead of letting it continue somewhere else).
//! - **Order.** The names a directory was entered with (its subdirectories, or all its
//!   entries for a walk that handles each through [`Tree::enter`], as a restore does) are
//!   visited in that order (name order for every walk here), a subdirectory's tree finished
//!   before the next name; a directory is left ([`Tree::leave`]) after all of them, the start
//!   directory last.

use std::ffi::{CStr, CString};

use crate::error::Result;

/// How many directories of the path down to the current one a walk of a source keeps open:
/// enough that a normal tree never closes one, few enough that a deep tree (or many walks at
/// once) does not run out of descriptors.
pub const OPEN_LEVELS: usize = 16;

/// Two paths of the entry a walk is at, each extended by the entry's name as the walk goes
/// down and cut back as it comes up: what they are is the walk's choice. The walks of a
/// source keep the path below the walk's root in `a` (no leading `/`) and the absolute one in
/// `b`; a restore the path in the snapshot in `a` and on the target in `b`. A `/` goes between
/// a path and a name unless the path is empty or ends with one.
#[derive(Debug, Default)]
pub struct Paths {
    /// The first path.
    pub a: Vec<u8>,
    /// The second path.
    pub b: Vec<u8>,
}

impl Paths {
    /// Paths at the start of a walk.
    pub fn new(a: Vec<u8>, b: Vec<u8>) -> Paths {
        Paths { a, b }
    }

    /// Appends one component to both paths.
    fn push(&mut self, name: &[u8]) {
        for p in [&mut self.a, &mut self.b] {
            if p.last().is_some_and(|&c| c != b'/') {
                p.push(b'/');
            }
            p.extend_from_slice(name);
        }
    }

    fn truncate(&mut self, (a, b): (usize, usize)) {
        self.a.truncate(a);
        self.b.truncate(b);
    }

    fn lens(&self) -> (usize, usize) {
        (self.a.len(), self.b.len())
    }

    /// The paths of a directory above the current one, and of its child (`child` the lengths of
    /// the child's paths).
    fn at(&self, (a, b): (usize, usize), (ca, cb): (usize, usize)) -> At<'_> {
        At { a: &self.a[..a], b: &self.b[..b], child_a: &self.a[..ca], child_b: &self.b[..cb] }
    }
}

/// The paths of a directory being closed or reopened (see [`Paths`]), and of its open child
/// through whose `..` it is reopened.
#[derive(Clone, Copy, Debug)]
pub struct At<'a> {
    /// The first path.
    pub a: &'a [u8],
    /// The second path.
    pub b: &'a [u8],
    /// The child's first path.
    pub child_a: &'a [u8],
    /// The child's second path.
    pub child_b: &'a [u8],
}

/// A directory just entered: its handles, what the walk keeps with it until it is left, and
/// its subdirectories to walk, in order.
pub struct Entered<T: Tree + ?Sized> {
    /// Its open handles.
    pub open: T::Open,
    /// Kept until [`Tree::leave`].
    pub info: T::Info,
    /// The names to visit in it, in walk order: its subdirectories, or every entry for a
    /// walk that handles each in [`Tree::enter`].
    pub subdirs: Vec<CString>,
}

/// The directory holding the entry a walk is at: its handles, and what the walk keeps with it
/// (which a walk may change: "something below was restored", say).
pub struct Parent<'p, T: Tree + ?Sized> {
    /// Its open handles.
    pub open: &'p T::Open,
    /// What the walk keeps with it.
    pub info: &'p mut T::Info,
}

/// What a walk does in each directory.
pub trait Tree {
    /// The handles of one open directory (one descriptor, or a source directory's together
    /// with its copies in the work tree and the previous snapshot).
    type Open;
    /// What a closed directory was (device and inode of each handle), checked on reopening.
    type Closed;
    /// Kept with each directory until it is left (its status, say).
    type Info;

    /// Visits the entry `name` of the directory `parent` (`paths` already name the entry), one
    /// of the names the parent was entered with: for a directory to walk, opens and lists it.
    /// `None` when there is nothing to walk below it (not a directory, vanished, unreadable,
    /// another filesystem).
    fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>>;

    /// Leaves a directory whose entries are all done (`paths` name it); `parent` is `None`
    /// for the directory the walk started in.
    fn leave(
        &mut self,
        open: Self::Open,
        info: Self::Info,
        parent: Option<Parent<'_, Self>>,
        paths: &Paths,
    ) -> Result<()>;

    /// Closes a directory high above the current one (`at` names it, `info` is what the walk
    /// keeps with it, `child` is its open subdirectory on the walk's path), recording what it
    /// was. What cannot be reopened through `child` (a directory whose child has no
    /// counterpart on that side) stays open in what is returned.
    fn close(&mut self, open: Self::Open, info: &Self::Info, child: &Self::Open, at: At) -> Result<Self::Closed>;

    /// Opens again the directory `closed` through `..` of its open child `child` (`at` names
    /// the directory); an error when it is no longer the same directory.
    fn reopen(&mut self, child: &Self::Open, closed: Self::Closed, info: &Self::Info, at: At) -> Result<Self::Open>;

    /// Checked before each step: `Err` (cancelled) stops the walk.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Checked before each step: `true` ends the walk early, successfully, without leaving
    /// the directories still on its path (a search that found what it looked for).
    fn stop(&self) -> bool {
        false
    }
}

/// A directory on the path from the start to the current one.
struct Level<T: Tree> {
    handles: Handles<T>,
    info: T::Info,
    lens: (usize, usize),
    subdirs: std::vec::IntoIter<CString>,
}

enum Handles<T: Tree> {
    Open(T::Open),
    Closed(T::Closed),
    /// Only between taking the handles and putting them back.
    Moving,
}

impl<T: Tree> Handles<T> {
    /// The handles, to be put back changed (closed, reopened).
    fn take(&mut self) -> Handles<T> {
        std::mem::replace(self, Handles::Moving)
    }
}

/// Walks the tree below the directory `start` (open, already entered by the caller: `paths`
/// name it), depth first, holding at most `open_levels` (at least 1) directories open.
pub fn depth_first<T: Tree>(tree: &mut T, start: Entered<T>, mut paths: Paths, open_levels: usize) -> Result<()> {
    let open_levels = open_levels.max(1);
    let mut stack: Vec<Level<T>> = vec![Level {
        handles: Handles::Open(start.open),
        info: start.info,
        lens: paths.lens(),
        subdirs: start.subdirs.into_iter(),
    }];
    while let Some(top) = stack.last_mut() {
        tree.check()?;
        if tree.stop() {
            return Ok(());
        }
        let Some(name) = top.subdirs.next() else {
            // Every entry is done: so is this directory.
            let done = stack.pop().expect("the stack is not empty");
            let Handles::Open(open) = done.handles else { unreachable!("the current directory is open") };
            let parent = match stack.last_mut() {
                Some(parent) => {
                    parent.handles = match parent.handles.take() {
                        Handles::Closed(closed) => {
                            let at = paths.at(parent.lens, paths.lens());
                            Handles::Open(tree.reopen(&open, closed, &parent.info, at)?)
                        }
                        open => open,
                    };
                    let Handles::Open(up) = &parent.handles else { unreachable!("just reopened") };
                    Some(Parent { open: up, info: &mut parent.info })
                }
                None => None,
            };
            tree.leave(open, done.info, parent, &paths)?;
            if let Some(parent) = stack.last() {
                paths.truncate(parent.lens);
            }
            continue;
        };
        let Handles::Open(open) = &top.handles else { unreachable!("the current directory is open") };
        paths.push(name.to_bytes());
        match tree.enter(Parent { open, info: &mut top.info }, &name, &paths)? {
            Some(child) => {
                stack.push(Level {
                    handles: Handles::Open(child.open),
                    info: child.info,
                    lens: paths.lens(),
                    subdirs: child.subdirs.into_iter(),
                });
                // The open levels are always the deepest ones (leaving a directory reopens only
                // its parent), so when the level `open_levels` above is open, so is its child.
                if let Some(i) = stack.len().checked_sub(open_levels + 1) {
                    let (above, below) = stack.split_at_mut(i + 1);
                    let (level, child) = (&mut above[i], &below[0]);
                    level.handles = match level.handles.take() {
                        Handles::Open(open) => {
                            let Handles::Open(child_open) = &child.handles else { unreachable!("below an open level") };
                            let at = paths.at(level.lens, child.lens);
                            Handles::Closed(tree.close(open, &level.info, child_open, at)?)
                        }
                        closed => closed,
                    };
                }
            }
            None => {
                let top = stack.last().expect("the stack is not empty");
                paths.truncate(top.lens);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::fs::{Mode, OFlags};

    /// Records the order of enter/leave and the most directories open at once.
    struct Recorder {
        events: Vec<String>,
        open: usize,
        most_open: usize,
        /// The walk stops once this many events are recorded.
        stop_after: usize,
    }

    /// `at` names a directory and its child one component below it.
    fn check_at(at: At) {
        for (dir, child) in [(at.a, at.child_a), (at.b, at.child_b)] {
            let rest = child.strip_prefix(dir).expect("the child's path extends its parent's");
            let name = if dir.is_empty() || dir.ends_with(b"/") { rest } else { rest.strip_prefix(b"/").expect("a /") };
            assert!(!name.is_empty() && !name.contains(&b'/'), "one component: {:?}", String::from_utf8_lossy(name));
        }
    }

    fn list(fd: &OwnedFd) -> Vec<CString> {
        let mut v: Vec<CString> = rustix::fs::Dir::read_from(fd)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type() == rustix::fs::FileType::Directory)
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        v.sort();
        v
    }

    impl Tree for Recorder {
        type Open = OwnedFd;
        type Closed = (u64, u64);
        /// Subdirectories entered (1 each) and left (100 each).
        type Info = u32;

        fn enter(&mut self, parent: Parent<'_, Self>, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
            let fd = rustix::fs::openat(parent.open, name, crate::fs::DIR_FLAGS, Mode::empty()).unwrap();
            *parent.info += 1;
            self.open += 1;
            self.most_open = self.most_open.max(self.open);
            self.events.push(format!("enter {}", String::from_utf8_lossy(&paths.a)));
            let subdirs = list(&fd);
            Ok(Some(Entered { open: fd, info: 0, subdirs }))
        }

        /// Leaving says how many subdirectories the directory had (counted in its `info` by
        /// `enter`), and tells its parent it was left (one more in its `info`).
        fn leave(&mut self, _: OwnedFd, entered: u32, parent: Option<Parent<'_, Self>>, paths: &Paths) -> Result<()> {
            self.open -= 1;
            if let Some(p) = parent {
                *p.info += 100;
            }
            self.events.push(format!("leave {} {entered}", String::from_utf8_lossy(&paths.a)));
            Ok(())
        }

        fn close(&mut self, open: OwnedFd, _: &u32, _: &OwnedFd, at: At) -> Result<(u64, u64)> {
            check_at(at);
            self.open -= 1;
            Ok(crate::fs::identity(open.as_fd()).unwrap())
        }

        fn reopen(&mut self, child: &OwnedFd, closed: (u64, u64), _: &u32, at: At) -> Result<OwnedFd> {
            check_at(at);
            self.open += 1;
            Ok(crate::fs::reopen_parent(child.as_fd(), closed).unwrap().expect("the same directory"))
        }

        fn stop(&self) -> bool {
            self.events.len() >= self.stop_after
        }
    }

    fn walk(root: &std::path::Path, open_levels: usize) -> Recorder {
        walk_until(root, open_levels, usize::MAX)
    }

    fn walk_until(root: &std::path::Path, open_levels: usize, stop_after: usize) -> Recorder {
        let mut r = Recorder { events: Vec::new(), open: 1, most_open: 1, stop_after };
        let fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let subdirs = list(&fd);
        let start = Entered { open: fd, info: 0, subdirs };
        depth_first(&mut r, start, Paths::new(Vec::new(), root.as_os_str().as_encoded_bytes().to_vec()), open_levels)
            .unwrap();
        r
    }

    #[test]
    fn each_directory_is_left_after_its_subdirectories_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        for p in ["b/y", "a/x/deep", "a/w", "c"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        let r = walk(d.path(), 16);
        // Each leave shows its directory's count: subdirectories entered (1) and left (100).
        let want = [
            "enter a",
            "enter a/w",
            "leave a/w 0",
            "enter a/x",
            "enter a/x/deep",
            "leave a/x/deep 0",
            "leave a/x 101",
            "leave a 202",
            "enter b",
            "enter b/y",
            "leave b/y 0",
            "leave b 101",
            "enter c",
            "leave c 0",
            "leave  303",
        ];
        assert_eq!(r.events, want);
    }

    /// Down, partly up and down again, many times: a chain 40 deep with a sibling beside
    /// every level (`d/…/d/x`), walked with 4 open levels, so levels closed on the way down are
    /// reopened and closed again.
    #[test]
    fn a_deep_tree_with_branches_reopens_and_closes_levels_again() {
        const DEPTH: usize = 40;
        let d = tempfile::tempdir().unwrap();
        let mut p = d.path().to_path_buf();
        for _ in 0..DEPTH {
            std::fs::create_dir_all(p.join("x/y")).unwrap();
            p.push("d");
            std::fs::create_dir(&p).unwrap();
        }
        for levels in [1, 4, 16] {
            let r = walk(d.path(), levels);
            // Each level holds d and x; each x holds y: 3 directories per level, entered and left.
            assert_eq!(r.events.len(), 2 * 3 * DEPTH + 1, "{levels} open levels");
            assert!(r.most_open <= levels + 1, "{} open at once with {levels} open levels", r.most_open);
            assert_eq!(r.events.last().unwrap(), &format!("leave  {}", 2 * 101));
        }
    }

    #[test]
    fn a_walk_that_stops_enters_and_leaves_nothing_more() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/x/deep", "b"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        let r = walk_until(d.path(), 1, 3);
        assert_eq!(r.events, ["enter a", "enter a/x", "enter a/x/deep"]);
    }

    #[test]
    fn a_deep_tree_holds_only_the_open_levels() {
        const DEPTH: usize = 3000;
        let d = tempfile::tempdir().unwrap();
        let mut fd = rustix::fs::open(d.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..DEPTH {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        drop(fd);
        for levels in [1, 4] {
            let r = walk(d.path(), levels);
            assert_eq!(r.events.len(), 2 * DEPTH + 1, "every level entered and left");
            assert!(r.most_open <= levels + 1, "{} open at once with {levels} open levels", r.most_open);
            assert_eq!(r.events[DEPTH - 1].matches('d').count(), DEPTH);
        }
        // Removed from the top, one level at a time.
        let top = d.path().join("d");
        while std::fs::rename(top.join("d"), d.path().join("x")).is_ok() {
            std::fs::remove_dir(&top).unwrap();
            std::fs::rename(d.path().join("x"), &top).unwrap();
        }
        std::fs::remove_dir(&top).unwrap();
    }
}
