//! [`Dir`]: an open directory through which only the entries directly below it are reached.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use super::{Name, DIR_FLAGS};
use crate::error::{Error, IoContext, Result};

/// An open directory. Every operation names a single [`Name`] inside it and never follows a
/// symlink there, so a symlink planted in the backup destination (`.incomplete -> /home`,
/// `daily -> /etc`) is refused instead of followed, and a directory that is renamed or
/// unmounted while we work cannot redirect us elsewhere: the fd stays on the directory we
/// opened. The path is kept only for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its name.
    pub name: Name,
    /// Its type, without following a symlink.
    pub kind: FileType,
}

/// The directory's fd, for code that keeps only the fd.
impl From<Dir> for OwnedFd {
    fn from(d: Dir) -> OwnedFd {
        d.fd
    }
}

impl Dir {
    /// Opens a directory the administrator named (the plan's destination, `--dest`):
    /// symlinks in *this* path are followed, as every tool does for a path it is given; from
    /// here on the directory is held by its fd and nothing below it is followed.
    pub fn open_trusted(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .ctx("open directory", path)?;
        Ok(Dir { fd, path: path.to_path_buf() })
    }

    /// Wraps a directory the caller opened from a path the administrator named (as
    /// [`Dir::open_trusted`] does, with the flags it needs, e.g. a restore's DEST opened with
    /// `O_NOFOLLOW`); anything but a directory is refused.
    pub fn from_trusted_fd(fd: OwnedFd, path: PathBuf) -> Result<Dir> {
        let st = rustix::fs::fstat(&fd).ctx("inspect", &path)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(Error::io("open directory", &path, Errno::NOTDIR.into()));
        }
        Ok(Dir { fd, path })
    }

    /// Wraps an fd opened with `O_DIRECTORY | O_NOFOLLOW` by code of this module.
    pub(super) fn from_fd(fd: OwnedFd, path: PathBuf) -> Dir {
        Dir { fd, path }
    }

    /// The path it was opened as (for messages and for programs that take paths).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path that names this very directory for as long as it is open, whatever is renamed
    /// or replaced on the way to it (`/proc/<pid>/fd/<fd>`): for a program that takes a path
    /// and must write *here*, never where someone who can rename a parent points it meanwhile.
    pub fn pinned_path(&self) -> PathBuf {
        super::fsops::proc_path(self.fd(), true)
    }

    /// Removes the directory `name` that this process created and still holds as `dir`: its
    /// contents are removed through `dir` itself (so a tree someone else moved in under the
    /// same name is never touched), then the name, only while it is still that directory.
    /// Returns `false` when the name was taken by something else meanwhile (the emptied
    /// directory is then wherever it was moved to).
    pub fn remove_created_dir(&self, name: &Name, dir: Dir) -> Result<bool> {
        for entry in dir.entries()? {
            dir.remove_tree(&entry.name)?;
        }
        let own = dir.stat_self()?;
        match self.stat(name)? {
            Some(st) if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino) => {}
            _ => return Ok(false),
        }
        match rustix::fs::unlinkat(&self.fd, name.as_cstr(), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            // Swapped for something else between the check and the removal: left alone.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
            Err(e) => Err(Error::io("remove", self.child_path(name), e.into())),
        }
    }

    /// The display path of an entry.
    pub fn child_path(&self, name: &Name) -> PathBuf {
        self.path.join(name.as_os_str())
    }

    /// The fd, for the fd-relative code that walks trees below this directory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory `name`; a symlink or anything else there is refused, naming it.
    pub fn open_dir(&self, name: &Name) -> Result<Dir> {
        self.try_open_dir(name)?
            .ok_or_else(|| Error::io("open directory", self.child_path(name), std::io::ErrorKind::NotFound.into()))
    }

    /// [`Dir::open_dir`], with `None` when nothing has that name.
    pub fn try_open_dir(&self, name: &Name) -> Result<Option<Dir>> {
        match rustix::fs::openat(&self.fd, name.as_cstr(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir { fd, path: self.child_path(name) })),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => Err(self.not_a_directory(name)),
            Err(e) => Err(Error::io("open directory", self.child_path(name), e.into())),
        }
    }

    /// Opens the directory `name`, creating it with `mode` first when it is missing.
    pub fn create_dir(&self, name: &Name, mode: u32) -> Result<Dir> {
        match rustix::fs::mkdirat(&self.fd, name.as_cstr(), Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => self.open_dir(name),
            Err(e) => Err(Error::io("create directory", self.child_path(name), e.into())),
        }
    }

    /// Creates the directory `name`, which must not exist yet.
    pub fn create_new_dir(&self, name: &Name, mode: u32) -> Result<Dir> {
        rustix::fs::mkdirat(&self.fd, name.as_cstr(), Mode::from_raw_mode(mode))
            .ctx("create directory", self.child_path(name))?;
        self.open_dir(name)
    }

    /// The entry's status without following a symlink; `None` when it does not exist.
    pub fn stat(&self, name: &Name) -> Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name.as_cstr(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("inspect", self.child_path(name), e.into())),
        }
    }

    /// The directory's own status.
    pub fn stat_self(&self) -> Result<Stat> {
        rustix::fs::fstat(&self.fd).ctx("inspect", &self.path)
    }

    /// Every entry but `.` and `..`, in the order the filesystem gives them.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let reader = rustix::fs::Dir::read_from(&self.fd).ctx("read directory", &self.path)?;
        for entry in reader {
            let entry = entry.ctx("read directory", &self.path)?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let name =
                Name::new(bytes).map_err(|e| Error::Unsafe { path: self.path.clone(), message: e.to_string() })?;
            let kind = match entry.file_type() {
                FileType::Unknown => match self.stat(&name)? {
                    Some(st) => FileType::from_raw_mode(st.st_mode),
                    None => continue, // removed meanwhile
                },
                kind => kind,
            };
            out.push(Entry { name, kind });
        }
        Ok(out)
    }

    /// Renames `from` in this directory to `to` in `to_dir` (possibly the same), replacing
    /// what is there as `rename(2)` does.
    /// A read-only btrfs subvolume (a snapshot of the btrfs store) is renamed too, its flag
    /// cleared around the rename (see `subvol.rs`).
    pub fn rename(&self, from: &Name, to_dir: &Dir, to: &Name) -> Result<()> {
        let once = || {
            rustix::fs::renameat(&self.fd, from.as_cstr(), &to_dir.fd, to.as_cstr())
                .ctx("rename", self.child_path(from))
        };
        match once() {
            Err(e) if e.io_error().and_then(std::io::Error::raw_os_error) == Some(Errno::ROFS.raw_os_error()) => {
                super::subvol::rename_readonly(self, from, once).unwrap_or(Err(e))
            }
            other => other,
        }
    }

    /// [`Dir::rename`] that fails with `EEXIST` instead of replacing anything.
    pub fn rename_noreplace(&self, from: &Name, to_dir: &Dir, to: &Name) -> Result<()> {
        let once = || {
            rustix::fs::renameat_with(&self.fd, from.as_cstr(), &to_dir.fd, to.as_cstr(), RenameFlags::NOREPLACE)
                .ctx("rename", self.child_path(from))
        };
        match once() {
            Err(e) if e.io_error().and_then(std::io::Error::raw_os_error) == Some(Errno::ROFS.raw_os_error()) => {
                super::subvol::rename_readonly(self, from, once).unwrap_or(Err(e))
            }
            other => other,
        }
    }

    /// Removes a non-directory entry; `false` when there was none.
    pub fn remove_file(&self, name: &Name) -> Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name.as_cstr(), AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io("remove", self.child_path(name), e.into())),
        }
    }

    /// Removes `name` and, if it is a directory, everything below it, without following any
    /// symlink and without recursion (see `remove.rs`). Missing is fine.
    pub fn remove_tree(&self, name: &Name) -> Result<()> {
        super::remove::remove_tree(self, name)
    }

    /// [`Dir::remove_tree`], but every entry below `name` that `keep` keeps (asked with its
    /// path relative to this directory, `name/sub/file`, whether it is a directory, and the
    /// mark of the directory holding it, `mark` for `name`'s own entries) stays, with the
    /// directories that hold it. Returns what went, each at its top; with `dry_run` nothing
    /// is removed and it returns what would go.
    pub fn remove_tree_keeping(
        &self,
        name: &Name,
        keep: super::remove::Keep,
        mark: bool,
        dry_run: bool,
    ) -> Result<super::remove::Removal> {
        super::remove::remove_tree_keeping(self, name, Some((keep, mark)), dry_run)
    }

    /// The target of the symlink `name`; `None` when nothing has that name, an error naming
    /// the entry when it is not a symlink.
    pub fn read_link(&self, name: &Name) -> Result<Option<Vec<u8>>> {
        match rustix::fs::readlinkat(&self.fd, name.as_cstr(), Vec::new()) {
            Ok(target) => Ok(Some(target.into_bytes())),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::INVAL) => Err(self.unexpected(name, "a symlink")),
            Err(e) => Err(Error::io("read symlink", self.child_path(name), e.into())),
        }
    }

    /// Creates the symlink `name -> target`.
    pub fn symlink(&self, target: &[u8], name: &Name) -> Result<()> {
        rustix::fs::symlinkat(target, &self.fd, name.as_cstr()).ctx("create symlink", self.child_path(name))
    }

    /// Reads a small regular file (metadata, state), refusing a symlink, a FIFO or a device
    /// (which could block or be huge) and anything over `limit` bytes. `None` when missing.
    pub fn read_file(&self, name: &Name, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.open_read(name)? else { return Ok(None) };
        let st = rustix::fs::fstat(&file).ctx("inspect", self.child_path(name))?;
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > limit {
            return Err(Error::Unsafe {
                path: self.child_path(name),
                message: format!("is {} bytes, more than the {limit} such a file can hold", st.st_size),
            });
        }
        let mut data = Vec::new();
        file.take(limit).read_to_end(&mut data).ctx("read", self.child_path(name))?;
        Ok(Some(data))
    }

    /// Opens the regular file `name` for reading, never through a symlink and never a FIFO
    /// or device; `None` when it does not exist.
    pub fn open_read(&self, name: &Name) -> Result<Option<File>> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        Ok(self.open_regular(name, flags)?.map(File::from))
    }

    /// Opens the regular file `name` with `flags`: first with `O_PATH` (which opens nothing:
    /// a device node planted here is not opened, so its driver's open has no effect), then,
    /// once `fstat` says it is a regular file, that very inode through `/proc/self/fd`.
    /// `None` when nothing has that name; a symlink or anything else is refused, naming it.
    fn open_regular(&self, name: &Name, flags: OFlags) -> Result<Option<OwnedFd>> {
        let path_flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let pinned = match rustix::fs::openat(&self.fd, name.as_cstr(), path_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Error::io("open", self.child_path(name), e.into())),
        };
        let st = rustix::fs::fstat(&pinned).ctx("inspect", self.child_path(name))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.unexpected(name, "a regular file"));
        }
        super::fsops::reopen_pinned(pinned.as_fd(), flags).ctx("open", self.child_path(name)).map(Some)
    }

    /// Creates a new regular file `name` for writing (`O_EXCL`: never an existing file, never
    /// through a symlink).
    pub fn create_file(&self, name: &Name, mode: u32) -> Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name.as_cstr(), flags, Mode::from_raw_mode(mode))
            .ctx("create", self.child_path(name))?;
        Ok(File::from(fd))
    }

    /// The one way to write a file so that after a crash it is either the old or the new
    /// version, never a mix: a temporary name beside it, fsync, rename over it, fsync here.
    pub fn write_atomic(&self, name: &Name, contents: &[u8]) -> Result<()> {
        let tmp = Name::new(format!(".{}.tmp", name))
            .map_err(|e| Error::Unsafe { path: self.child_path(name), message: e.to_string() })?;
        self.remove_file(&tmp)?;
        let mut f = self.create_file(&tmp, 0o644)?;
        f.write_all(contents).ctx("write", self.child_path(&tmp))?;
        f.sync_all().ctx("sync", self.child_path(&tmp))?;
        drop(f);
        self.rename(&tmp, self, name)?;
        self.sync()
    }

    /// [`Dir::write_atomic`] without its two fsyncs, for a file below a directory that is not
    /// visible yet and is made durable as a whole (`syncfs`) before it is published: a new
    /// snapshot's metadata. Readers still see the old or the new version, never a mix.
    pub fn write_atomic_unsynced(&self, name: &Name, contents: &[u8]) -> Result<()> {
        let tmp = Name::new(format!(".{}.tmp", name))
            .map_err(|e| Error::Unsafe { path: self.child_path(name), message: e.to_string() })?;
        self.remove_file(&tmp)?;
        let mut f = self.create_file(&tmp, 0o644)?;
        f.write_all(contents).ctx("write", self.child_path(&tmp))?;
        drop(f);
        self.rename(&tmp, self, name)
    }

    /// Opens (creating if needed) a lock file: a regular file with one link only, so a
    /// symlink or a hard link planted as `.lock` cannot make us truncate someone's file.
    pub fn open_lock_file(&self, name: &Name) -> Result<File> {
        let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let create = flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        // An existing one is opened as a regular file only (a device node there is never
        // opened); a missing one is created, and a race with another creator retried.
        let fd = loop {
            if let Some(fd) = self.open_regular(name, flags)? {
                break fd;
            }
            match rustix::fs::openat(&self.fd, name.as_cstr(), create, Mode::from_raw_mode(0o600)) {
                Ok(fd) => break fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::io("open lock file", self.child_path(name), e.into())),
            }
        };
        let st = rustix::fs::fstat(&fd).ctx("inspect", self.child_path(name))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.unexpected(name, "a regular file"));
        }
        if st.st_nlink != 1 {
            return Err(Error::Unsafe {
                path: self.child_path(name),
                message: format!("has {} hard links; a lock file of ours has one (remove it)", st.st_nlink),
            });
        }
        Ok(File::from(fd))
    }

    /// Makes the directory's entries (creations, renames) durable.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).ctx("sync directory", &self.path)
    }

    /// Makes everything written on this directory's filesystem durable.
    pub fn sync_filesystem(&self) -> Result<()> {
        rustix::fs::syncfs(&self.fd).ctx("sync filesystem of", &self.path)
    }

    /// The error for a fixed name that is not what the layout says it is.
    pub fn unexpected(&self, name: &Name, want: &str) -> Error {
        let path = self.child_path(name);
        let what = match self.stat(name) {
            Ok(Some(st)) => describe(self, name, &st),
            Ok(None) => "missing".to_string(),
            Err(e) => e.to_string(),
        };
        Error::Unsafe { path, message: format!("is {what}, not {want}; refusing to use it (remove or rename it)") }
    }

    fn not_a_directory(&self, name: &Name) -> Error {
        self.unexpected(name, "a directory")
    }
}

/// "a symlink to /home", "a regular file" …
fn describe(dir: &Dir, name: &Name, st: &Stat) -> String {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => match rustix::fs::readlinkat(&dir.fd, name.as_cstr(), Vec::new()) {
            Ok(t) => format!("a symlink to {}", String::from_utf8_lossy(t.as_bytes())),
            Err(_) => "a symlink".to_string(),
        },
        FileType::RegularFile => "a regular file".into(),
        FileType::Directory => "a directory".into(),
        FileType::Fifo => "a FIFO".into(),
        FileType::Socket => "a socket".into(),
        FileType::CharacterDevice | FileType::BlockDevice => "a device node".into(),
        FileType::Unknown => "of an unknown type".into(),
    }
}
