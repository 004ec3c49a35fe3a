//! Names that are one path component by type.

use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// One path component: not empty, not `.` or `..`, without `/` or NUL. A [`super::Dir`]
/// takes only these, so no operation through it can climb out of it or descend more than
/// one level at a time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(CString);

/// Why a byte string is not a [`Name`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a single file name: {why}")]
pub struct BadName {
    /// The refused bytes, lossily decoded.
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Name {
    /// Checks that `bytes` is one component.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Name, BadName> {
        let bytes = bytes.as_ref();
        let bad = |why| Err(BadName { name: String::from_utf8_lossy(bytes).into_owned(), why });
        match bytes {
            [] => bad("it is empty"),
            b"." | b".." => bad("it names a directory itself or its parent"),
            _ if bytes.contains(&b'/') => bad("it contains '/'"),
            _ => CString::new(bytes).map(Name).or_else(|_| bad("it contains a NUL byte")),
        }
    }

    /// A fixed name of the layout (`.lock`, `daily` …); panics on a name that is not one
    /// component, which only a programming error can produce.
    pub fn fixed(name: &str) -> Name {
        Name::new(name).unwrap_or_else(|e| panic!("fixed layout name: {e}"))
    }

    /// `(parent, last component)` of a path: where a file given by path lives and its name
    /// there (`.` for a bare name). `None` for `/`, `..`, or a path ending in `.`.
    pub fn split_path(path: &std::path::Path) -> Option<(&std::path::Path, Name)> {
        let name = Name::new(path.file_name()?.as_bytes()).ok()?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        Some((parent, name))
    }

    /// For system calls.
    pub fn as_cstr(&self) -> &CStr {
        &self.0
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// As an `OsStr`, for joining onto display paths.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(self.as_bytes())
    }

    /// The name as UTF-8, when it is.
    pub fn to_str(&self) -> Option<&str> {
        self.0.to_str().ok()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_components_are_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b", b"../x"] {
            assert!(Name::new(bad).is_err(), "{bad:?} was accepted");
        }
        for good in [&b"a"[..], b".lock", b"...", b"\xe9t\xe9", b"a b", b"-"] {
            assert_eq!(Name::new(good).unwrap().as_bytes(), good);
        }
    }
}
