//! The one depth-first traversal of a directory tree, for every walk that reads one: this
//! machine's sources (`source::local`), a pulled host's agent (`source::remote::agent`) and a
//! snapshot (`store::walk`). What a walk does in a directory is its own ([`Tree`]); the order,
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
//! - **Order.** A directory's subdirectories are entered in the order [`Tree::enter`] lists
//!   them (name order for every walk here), each finished before the next; a directory is left
//!   ([`Tree::leave`]) after all of them, the start directory last.

use std::ffi::{CStr, CString};

use crate::error::Result;

/// How many directories of the path down to the current one a walk of a source keeps open:
/// enough that a normal tree never closes one, few enough that a deep tree (or many walks at
/// once) does not run out of descriptors.
pub const OPEN_LEVELS: usize = 16;

/// The relative and absolute path of the directory a walk is in, kept by the traversal: `rel`
/// below the walk's root (no leading `/`), `abs` however the walk names it (the source's path
/// on its host, a snapshot's path in messages).
#[derive(Debug, Default)]
pub struct Paths {
    /// Relative to the walk's root.
    pub rel: Vec<u8>,
    /// Absolute.
    pub abs: Vec<u8>,
}

impl Paths {
    /// Paths at the start of a walk.
    pub fn new(rel: Vec<u8>, abs: Vec<u8>) -> Paths {
        Paths { rel, abs }
    }

    /// Appends one component to both paths.
    fn push(&mut self, name: &[u8]) {
        if !self.rel.is_empty() {
            self.rel.push(b'/');
        }
        self.rel.extend_from_slice(name);
        if self.abs != b"/" {
            self.abs.push(b'/');
        }
        self.abs.extend_from_slice(name);
    }

    fn truncate(&mut self, (rel, abs): (usize, usize)) {
        self.rel.truncate(rel);
        self.abs.truncate(abs);
    }

    fn lens(&self) -> (usize, usize) {
        (self.rel.len(), self.abs.len())
    }

    /// The paths of a directory above the current one.
    fn at(&self, (rel, abs): (usize, usize)) -> At<'_> {
        At { rel: &self.rel[..rel], abs: &self.abs[..abs] }
    }
}

/// The paths of a directory being closed or reopened (see [`Paths`]).
#[derive(Clone, Copy, Debug)]
pub struct At<'a> {
    /// Relative to the walk's root.
    pub rel: &'a [u8],
    /// Absolute.
    pub abs: &'a [u8],
}

/// A directory just entered: its handles, what the walk keeps with it until it is left, and
/// its subdirectories to walk, in order.
pub struct Entered<T: Tree + ?Sized> {
    /// Its open handles.
    pub open: T::Open,
    /// Kept until [`Tree::leave`].
    pub info: T::Info,
    /// Its subdirectories to enter, in walk order.
    pub subdirs: Vec<CString>,
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

    /// Enters the subdirectory `name` of the open directory `parent` (`paths` already name
    /// it): opens it and lists it (its non-directories are the walk's to handle now). `None`
    /// when there is nothing to walk below it (vanished, unreadable, another filesystem).
    fn enter(&mut self, parent: &Self::Open, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>>;

    /// Leaves a directory whose subdirectories are all done (`paths` name it).
    fn leave(&mut self, open: Self::Open, info: Self::Info, paths: &Paths) -> Result<()>;

    /// Closes a directory high above the current one (`at` names it), recording what it was.
    fn close(&mut self, open: Self::Open, at: At) -> Result<Self::Closed>;

    /// Opens again the directory `closed` through `..` of its open child `child` (`at` names
    /// the directory); an error when it is no longer the same directory.
    fn reopen(&mut self, child: &Self::Open, closed: Self::Closed, at: At) -> Result<Self::Open>;

    /// Checked before each step: `Err` (cancelled) stops the walk.
    fn check(&self) -> Result<()> {
        Ok(())
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
        let Some(name) = top.subdirs.next() else {
            // Every subdirectory is done: so is this directory.
            let done = stack.pop().expect("the stack is not empty");
            let Handles::Open(open) = done.handles else { unreachable!("the current directory is open") };
            if let Some(parent) = stack.last_mut() {
                if let Handles::Closed(_) = parent.handles {
                    let Handles::Closed(closed) = std::mem::replace(&mut parent.handles, Handles::Moving) else {
                        unreachable!()
                    };
                    parent.handles = Handles::Open(tree.reopen(&open, closed, paths.at(parent.lens))?);
                }
            }
            tree.leave(open, done.info, &paths)?;
            if let Some(parent) = stack.last() {
                paths.truncate(parent.lens);
            }
            continue;
        };
        let Handles::Open(parent) = &top.handles else { unreachable!("the current directory is open") };
        paths.push(name.to_bytes());
        match tree.enter(parent, &name, &paths)? {
            Some(child) => {
                stack.push(Level {
                    handles: Handles::Open(child.open),
                    info: child.info,
                    lens: paths.lens(),
                    subdirs: child.subdirs.into_iter(),
                });
                if let Some(i) = stack.len().checked_sub(open_levels + 1) {
                    let level = &mut stack[i];
                    if let Handles::Open(_) = level.handles {
                        let Handles::Open(open) = std::mem::replace(&mut level.handles, Handles::Moving) else {
                            unreachable!()
                        };
                        level.handles = Handles::Closed(tree.close(open, paths.at(level.lens))?);
                    }
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
        type Info = ();

        fn enter(&mut self, parent: &OwnedFd, name: &CStr, paths: &Paths) -> Result<Option<Entered<Self>>> {
            let fd = rustix::fs::openat(parent, name, crate::fs::DIR_FLAGS, Mode::empty()).unwrap();
            self.open += 1;
            self.most_open = self.most_open.max(self.open);
            self.events.push(format!("enter {}", String::from_utf8_lossy(&paths.rel)));
            let subdirs = list(&fd);
            Ok(Some(Entered { open: fd, info: (), subdirs }))
        }

        fn leave(&mut self, _: OwnedFd, (): (), paths: &Paths) -> Result<()> {
            self.open -= 1;
            self.events.push(format!("leave {}", String::from_utf8_lossy(&paths.rel)));
            Ok(())
        }

        fn close(&mut self, open: OwnedFd, _: At) -> Result<(u64, u64)> {
            self.open -= 1;
            let st = rustix::fs::fstat(&open).unwrap();
            Ok((st.st_dev, st.st_ino))
        }

        fn reopen(&mut self, child: &OwnedFd, closed: (u64, u64), _: At) -> Result<OwnedFd> {
            self.open += 1;
            Ok(crate::fs::reopen_parent(child.as_fd(), closed).unwrap().expect("the same directory"))
        }
    }

    fn walk(root: &std::path::Path, open_levels: usize) -> Recorder {
        let mut r = Recorder { events: Vec::new(), open: 1, most_open: 1 };
        let fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let subdirs = list(&fd);
        let start = Entered { open: fd, info: (), subdirs };
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
        let want = [
            "enter a",
            "enter a/w",
            "leave a/w",
            "enter a/x",
            "enter a/x/deep",
            "leave a/x/deep",
            "leave a/x",
            "leave a",
            "enter b",
            "enter b/y",
            "leave b/y",
            "leave b",
            "enter c",
            "leave c",
            "leave ",
        ];
        assert_eq!(r.events, want);
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
