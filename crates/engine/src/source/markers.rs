//! Exclusions decided by what a directory holds or by a file's size, not by name patterns:
//! `excludeCaches`, `excludeIfPresent` and `excludeLargerThan` (`source::exclude` has the
//! patterns).
//!
//! - **Caches**: a directory holding a regular file `CACHEDIR.TAG` whose first 43 bytes are
//!   `Signature: 8a477f597d28d172789f06886806bc55` (the Cache Directory Tagging
//!   Specification, <https://bford.info/cachedir/>) is kept with the tag file and nothing
//!   else, as `tar --exclude-caches` and restic's `--exclude-caches` do. A tag with any other
//!   first bytes, or one that is a symlink, a directory or a FIFO, tags nothing.
//! - **Marker files** (`excludeIfPresent = [ ".nobackup" ]`): a directory holding an entry
//!   with one of these names is kept with that entry and nothing else, as restic's
//!   `--exclude-if-present` does (the directory and the marker say, in the snapshot, why it
//!   is empty).
//! - **Size** (`excludeLargerThan = "4G"`): a regular file whose size (`st_size`, holes
//!   included) is larger than this is left out, as restic's `--exclude-larger-than`.
//!
//! Sizes are a whole number of bytes with an optional binary suffix `K`, `M`, `G`, `T` (powers
//! of 1024, either case, an optional `B` or `iB` after it): `4G`, `512MiB`, `100k`, `1048576`.
//!
//! The walks (this machine's, and the pull agent's) check a directory's names once when
//! they read it; the tag file is opened only when its name is there.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use rustix::fs::{FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// The tag file's name.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// What its first bytes must be.
pub const CACHEDIR_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The three settings, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludeBy {
    /// Leave out the contents of directories tagged with a valid `CACHEDIR.TAG`.
    pub caches: bool,
    /// Leave out the contents of directories holding one of these names.
    pub if_present: Vec<String>,
    /// Leave out regular files larger than this many bytes.
    pub larger_than: Option<u64>,
}

/// Why a directory's contents are left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tagged {
    /// It holds a valid `CACHEDIR.TAG`.
    pub cache: bool,
    /// It holds one of the `if_present` names.
    pub marker: bool,
}

impl Tagged {
    /// Whether anything tags it.
    pub fn any(self) -> bool {
        self.cache || self.marker
    }
}

impl ExcludeBy {
    /// From the plan's fields (or the command line's); the error names what is wrong.
    pub fn new(caches: bool, if_present: &[String], larger_than: Option<&str>) -> Result<ExcludeBy, String> {
        for name in if_present {
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                return Err(format!("{name:?} is not a file name (one path component, no '/')"));
            }
        }
        let larger_than = larger_than.map(parse_size).transpose()?;
        Ok(ExcludeBy { caches, if_present: if_present.to_vec(), larger_than })
    }

    /// Nothing to check.
    pub fn is_empty(&self) -> bool {
        !self.caches && self.if_present.is_empty() && self.larger_than.is_none()
    }

    /// Whether the directory `dir`, whose names `has` answers for, is tagged.
    pub fn tagged(&self, dir: BorrowedFd, has: impl Fn(&[u8]) -> bool) -> Tagged {
        let cache = self.caches && has(CACHEDIR_TAG.as_bytes()) && valid_tag(dir);
        let marker = self.if_present.iter().any(|m| has(m.as_bytes()));
        Tagged { cache, marker }
    }

    /// The entries a tagged directory keeps: its tag file and its markers.
    pub fn keeps(&self, tagged: Tagged, name: &[u8]) -> bool {
        (tagged.cache && name == CACHEDIR_TAG.as_bytes())
            || (tagged.marker && self.if_present.iter().any(|m| m.as_bytes() == name))
    }

    /// Whether a regular file of `size` bytes is left out.
    pub fn too_large(&self, size: u64) -> bool {
        self.larger_than.is_some_and(|limit| size > limit)
    }
}

/// Whether `dir/CACHEDIR.TAG` is a regular file starting with the signature. Opened without
/// following a symlink and without blocking on a FIFO.
fn valid_tag(dir: BorrowedFd) -> bool {
    let name: &CStr = c"CACHEDIR.TAG";
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) else { return false };
    if !rustix::fs::fstat(&fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile) {
        return false;
    }
    let mut buf = [0u8; 43];
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(&fd, &mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    &buf == CACHEDIR_SIGNATURE
}

/// Parses `4G`, `512MiB`, `100k`, `1048576` into bytes (see the module docs).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size like 4G, 512M, 100K or a number of bytes");
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let unit = t[digits..].trim_start().to_ascii_lowercase();
    // `B` alone is bytes; `iB` without a prefix is not a unit.
    let prefix = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(&unit);
    let shift = match prefix {
        "" if unit != "ib" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("100k"), Ok(100 << 10));
        assert_eq!(parse_size("100KB"), Ok(100 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("3 kb"), Ok(3 << 10));
        for bad in
            ["", "G", "-1G", "1.5G", "4X", "4 GiBs", "iB", "1iB", "1kbb", "1kibib", "1bb", "99999999999999999999T"]
        {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(ExcludeBy::new(false, &[".nobackup".into()], None).is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(ExcludeBy::new(false, &[bad.into()], None).is_err(), "{bad:?}");
        }
        assert!(ExcludeBy::new(false, &[], Some("4Q")).is_err());
    }
}
