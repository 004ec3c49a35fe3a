//! The manifest: one BLAKE3 hash per regular file of a snapshot.
//!
//! The format is `b3sum`'s, with paths relative to the snapshot directory, so anyone can check
//! a snapshot without this tool: `cd SNAPSHOT && b3sum --check .hwc-backup/manifest.b3`.
//!
//! Each line is `<64 hex digits>  <path>\n`. A path is written as its bytes unless it holds a
//! backslash, a newline, a carriage return or bytes that are not UTF-8; then the line starts
//! with `\` and the path is escaped: `\\`, `\n` and `\r` exactly as b3sum writes them (b3sum
//! escapes `\r` since 1.5.5), and each byte of an invalid UTF-8 sequence as `\xHH`. b3sum
//! itself writes such a name lossily (U+FFFD) and cannot check it; with `\xHH` the name is kept
//! exactly, and `b3sum --check` reports that one line as an invalid escape and goes on with
//! the others, where a raw non-UTF-8 byte would stop it reading the whole manifest.
//! Manifests written before `\r` and `\xHH` existed read the same as before.
//!
//! Lines are written in the engine's walk order — directories in pre-order with sorted
//! names, and within a directory its files sorted by name, before its subdirectories. That
//! order is total over `(directory, name)` pairs (see [`cmp_key`]), which lets the next run
//! read the previous manifest as a stream in lockstep with its own walk and inherit the hash
//! of every hard-linked file without holding the whole tree in memory.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Compares two `(directory, name)` keys in walk order. Directories compare component by
/// component (a parent before its children); the name breaks ties. Equivalent to comparing
/// bytes with `/` ranked below every other byte.
pub fn cmp_key(a_dir: &[u8], a_name: &[u8], b_dir: &[u8], b_name: &[u8]) -> Ordering {
    // Most comparisons (a walk beside a manifest) are within one directory: one memcmp.
    if a_dir == b_dir {
        return a_name.cmp(b_name);
    }
    cmp_dir(a_dir, b_dir).then_with(|| a_name.cmp(b_name))
}

/// Compares directory paths component by component.
pub fn cmp_dir(a: &[u8], b: &[u8]) -> Ordering {
    let rank = |c: u8| if c == b'/' { 0u16 } else { u16::from(c) + 1 };
    a.iter().map(|&c| rank(c)).cmp(b.iter().map(|&c| rank(c)))
}

/// A snapshot metadata file written line by line (the manifest, the chunk sidecar of
/// `store::delta`): buffered, and not fsynced on its own: the only such file written for real
/// is a new snapshot's, and the run's `syncfs` before the publish makes it durable with every
/// other file of the snapshot (an fsync of its own is one more log commit on btrfs, 5–90 ms
/// measured, for nothing).
pub(crate) struct LineWriter {
    out: BufWriter<File>,
    path: PathBuf,
    line: Vec<u8>,
}

impl LineWriter {
    /// Writes into `f`, shown as `path` in errors.
    pub(crate) fn new(f: File, path: PathBuf) -> LineWriter {
        LineWriter { out: BufWriter::with_capacity(1 << 16, f), path, line: Vec::new() }
    }

    /// Creates the file `name` in an open directory (a snapshot's `.hwc-backup/`; never over
    /// an existing file).
    pub(crate) fn create_in(dir: &crate::fs::Dir, name: &crate::fs::Name) -> Result<LineWriter> {
        Ok(LineWriter::new(dir.create_file(name, 0o644)?, dir.child_path(name)))
    }

    /// The line buffer, emptied, for the caller to fill with one line (without its newline).
    pub(crate) fn line(&mut self) -> &mut Vec<u8> {
        self.line.clear();
        &mut self.line
    }

    /// Writes the line filled through [`Self::line`], with its newline.
    pub(crate) fn end_line(&mut self) -> Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line).ctx("write", &self.path)
    }

    /// Flushes the file (no fsync; see the type's docs).
    pub(crate) fn finish(self) -> Result<()> {
        let path = self.path;
        self.out.into_inner().map_err(|e| Error::io("write", &path, e.into_error()))?;
        Ok(())
    }
}

/// `dir/name`, relative to the snapshot root (`name` alone at the root).
pub(crate) fn entry_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + name.len() + 1);
    if !dir.is_empty() {
        path.extend_from_slice(dir);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Streams manifest lines to a file.
pub struct ManifestWriter(LineWriter);

impl ManifestWriter {
    /// Creates the manifest file `name` in an open directory (a snapshot's `.hwc-backup/`).
    pub fn create_in(dir: &crate::fs::Dir, name: &crate::fs::Name) -> Result<ManifestWriter> {
        LineWriter::create_in(dir, name).map(ManifestWriter)
    }

    /// Creates the manifest file at a path (tests and tools; the engine uses [`Self::create_in`]).
    #[expect(clippy::disallowed_methods, reason = "a path the caller owns, outside any destination")]
    pub fn create(path: &Path) -> Result<ManifestWriter> {
        let f = File::create(path).ctx("create", path)?;
        Ok(ManifestWriter(LineWriter::new(f, path.to_path_buf())))
    }

    /// Appends the hash of `dir/name` (relative to the snapshot root).
    pub fn add(&mut self, dir: &[u8], name: &[u8], hash: &Hash) -> Result<()> {
        let hex = blake3::Hash::from_bytes(*hash).to_hex();
        let path = entry_path(dir, name);
        let line = self.0.line();
        match escape_path(&path) {
            Some(escaped) => {
                line.push(b'\\');
                line.extend_from_slice(hex.as_bytes());
                line.extend_from_slice(b"  ");
                line.extend_from_slice(&escaped);
            }
            None => {
                line.extend_from_slice(hex.as_bytes());
                line.extend_from_slice(b"  ");
                line.extend_from_slice(&path);
            }
        }
        self.0.end_line()
    }

    /// Flushes the manifest (no fsync of its own: see `LineWriter`).
    pub fn finish(self) -> Result<()> {
        self.0.finish()
    }
}

/// One manifest line, split into directory and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Directory relative to the snapshot root (no leading or trailing `/`).
    pub dir: Vec<u8>,
    /// File name.
    pub name: Vec<u8>,
    /// Its hash.
    pub hash: Hash,
}

impl Entry {
    /// The path relative to the snapshot root.
    pub fn rel_path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let mut p = self.dir.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(&self.name);
        PathBuf::from(std::ffi::OsStr::from_bytes(&p))
    }
}

/// Reads a manifest line by line.
pub struct ManifestReader {
    input: Box<dyn BufRead + Send>,
    path: PathBuf,
    line: Vec<u8>,
    line_no: u64,
}

impl ManifestReader {
    /// Opens a manifest.
    pub fn open(path: &Path) -> Result<ManifestReader> {
        let f = File::open(path).ctx("open", path)?;
        Ok(ManifestReader::from_file(f, path.to_path_buf()))
    }

    /// Reads a manifest from a file already open (through [`crate::fs::Dir::open_read`]);
    /// `path` names it in messages.
    pub fn from_file(f: File, path: PathBuf) -> ManifestReader {
        ManifestReader { input: Box::new(BufReader::with_capacity(1 << 16, f)), path, line: Vec::new(), line_no: 0 }
    }

    /// The next entry, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let mut entry = Entry { dir: Vec::new(), name: Vec::new(), hash: [0; 32] };
        Ok(self.next_into(&mut entry)?.then_some(entry))
    }

    /// Reads the next entry into `entry`, reusing its buffers (a manifest of millions of
    /// lines read without an allocation per line); `false` at the end.
    pub fn next_into(&mut self, entry: &mut Entry) -> Result<bool> {
        self.line.clear();
        let n = read_line_capped(&mut self.input, &mut self.line, MAX_LINE).ctx("read", &self.path)?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        parse_line(&self.line, entry).then_some(true).ok_or_else(|| Error::Format {
            path: self.path.clone(),
            message: format!("line {} is not `<hash>  <path>`", self.line_no),
        })
    }
}

/// The longest manifest line read: a path of tens of thousands of levels fits, a planted
/// multi-gigabyte line without a newline does not make every run run out of memory.
pub const MAX_LINE: usize = 16 << 20;

/// `read_until(b'\n')` that reads at most `cap` bytes: a longer line is an `InvalidData`
/// error (the files it reads are in the backup destination, which anyone who can write the
/// disk can shape).
pub(crate) fn read_line_capped(input: &mut dyn BufRead, line: &mut Vec<u8>, cap: usize) -> std::io::Result<usize> {
    use std::io::Read;
    let n = input.take(cap as u64).read_until(b'\n', line)?;
    if n == cap && line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a line longer than {cap} bytes")));
    }
    Ok(n)
}

fn parse_line(line: &[u8], entry: &mut Entry) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    if line.len() < 66 || &line[64..66] != b"  " {
        return false;
    }
    let Some(hash) = hash_from_hex(&line[..64]) else { return false };
    let raw = &line[66..];
    let unescaped;
    let path = if escaped {
        match unescape(raw) {
            Some(p) => {
                unescaped = p;
                &unescaped[..]
            }
            None => return false,
        }
    } else {
        raw
    };
    let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    };
    entry.dir.clear();
    entry.dir.extend_from_slice(dir);
    entry.name.clear();
    entry.name.extend_from_slice(name);
    entry.hash = hash;
    true
}

/// The 32 bytes of 64 hex digits (either case); `None` when one is not a hex digit. A table
/// lookup per digit: a verify parses a manifest line per file of every snapshot it checks,
/// and `blake3::Hash::from_hex`'s branches per digit cost as much as the rest of the line.
fn hash_from_hex(hex: &[u8]) -> Option<Hash> {
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (TABLE[pair[0] as usize], TABLE[pair[1] as usize]);
        bad |= (hi | lo) & 0xf0;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (hex.len() == 64 && bad == 0).then_some(out)
}

/// The escaped form of a path, or `None` when it is written as it is (see the module docs).
pub fn escape_path(path: &[u8]) -> Option<Vec<u8>> {
    let plain = std::str::from_utf8(path).is_ok_and(|s| !s.contains(['\\', '\n', '\r']));
    if plain {
        return None;
    }
    let mut out = Vec::with_capacity(path.len() + 8);
    for chunk in path.utf8_chunks() {
        for &c in chunk.valid().as_bytes() {
            match c {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(c),
            }
        }
        for &c in chunk.invalid() {
            out.extend_from_slice(format!("\\x{c:02x}").as_bytes());
        }
    }
    Some(out)
}

/// The inverse of [`escape_path`]; `None` for an escape it does not know.
pub fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&c) = it.next() {
        if c == b'\\' {
            match it.next()? {
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b'x' => {
                    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
                    let (hi, lo) = (digit(*it.next()?)?, digit(*it.next()?)?);
                    out.push(hi << 4 | lo);
                }
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Looks up hashes in a previous manifest in walk order, streaming: each lookup key must be
/// greater than the previous one, and the reader never goes back.
pub struct Cursor {
    reader: Option<ManifestReader>,
    current: Option<Entry>,
}

impl Cursor {
    /// A cursor over the manifest at `path`; a missing or unreadable manifest gives a cursor
    /// that finds nothing (files are then hashed again rather than trusted blindly).
    pub fn open(path: &Path) -> Cursor {
        ManifestReader::open(path).map_or_else(|_| Cursor::empty(), Cursor::from_reader)
    }

    /// A cursor over the manifest `name` in an open metadata directory (`None`: no such
    /// directory); anything unreadable gives a cursor that finds nothing, as [`Cursor::open`].
    pub fn open_in(dir: Option<&crate::fs::Dir>, name: &crate::fs::Name) -> Cursor {
        let Some(dir) = dir else { return Cursor::empty() };
        match dir.open_read(name) {
            Ok(Some(f)) => Cursor::from_reader(ManifestReader::from_file(f, dir.child_path(name))),
            _ => Cursor::empty(),
        }
    }

    /// A cursor over a manifest already open.
    pub fn from_reader(mut r: ManifestReader) -> Cursor {
        let current = r.next_entry().ok().flatten();
        Cursor { reader: Some(r), current }
    }

    /// A cursor that finds nothing.
    pub fn empty() -> Cursor {
        Cursor { reader: None, current: None }
    }

    /// The hash recorded for `dir/name`, if the manifest has one.
    pub fn find(&mut self, dir: &[u8], name: &[u8]) -> Option<Hash> {
        loop {
            let cur = self.current.as_ref()?;
            match cmp_key(&cur.dir, &cur.name, dir, name) {
                Ordering::Less => self.advance(),
                Ordering::Equal => return Some(cur.hash),
                Ordering::Greater => return None,
            }
        }
    }

    fn advance(&mut self) {
        self.current = match &mut self.reader {
            Some(r) => r.next_entry().ok().flatten(),
            None => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_longer_than_the_cap_is_an_error_not_a_buffer_of_it() {
        let read = |text: &[u8], cap| {
            let mut input = std::io::Cursor::new(text.to_vec());
            let mut line = Vec::new();
            read_line_capped(&mut input, &mut line, cap).map(|n| (n, line))
        };
        assert_eq!(read(b"abc\ndef", 4).unwrap(), (4, b"abc\n".to_vec()));
        assert_eq!(read(b"abc", 4).unwrap(), (3, b"abc".to_vec()), "the last line needs no newline");
        let e = read(b"abcd\n", 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("longer than 4 bytes"), "{e}");
        // A manifest whose one line never ends: the reader stops at the cap.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.b3");
        std::fs::write(&p, vec![b'a'; MAX_LINE + 10]).unwrap();
        let mut r = ManifestReader::from_file(File::open(&p).unwrap(), p.clone());
        let e = r.next_entry().unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
    }

    #[test]
    fn hex_hashes_parse_in_either_case_and_nothing_else() {
        let h = blake3::hash(b"x");
        let hex = h.to_hex();
        assert_eq!(hash_from_hex(hex.as_bytes()), Some(*h.as_bytes()));
        assert_eq!(hash_from_hex(hex.to_uppercase().as_bytes()), Some(*h.as_bytes()));
        for bad in [b'g', b'/', b' ', b':', b'@', 0xff] {
            let mut b = hex.as_bytes().to_vec();
            b[17] = bad;
            assert_eq!(hash_from_hex(&b), None, "{bad}");
        }
        assert_eq!(hash_from_hex(&hex.as_bytes()[..62]), None);
    }

    #[test]
    fn directory_order_is_component_wise() {
        assert_eq!(cmp_dir(b"a", b"a/b"), Ordering::Less);
        assert_eq!(cmp_dir(b"a/b", b"a-c"), Ordering::Less, "'/' ranks below '-'");
        assert_eq!(cmp_dir(b"", b"a"), Ordering::Less);
        assert_eq!(cmp_dir(b"a/z", b"b"), Ordering::Less);
    }

    #[test]
    fn write_read_and_find() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.b3");
        let mut w = ManifestWriter::create(&path).unwrap();
        let h = |b: u8| [b; 32];
        w.add(b"home", b"a.txt", &h(1)).unwrap();
        w.add(b"home", b"we\\ird\nname", &h(2)).unwrap();
        w.add(b"home/a", b"x", &h(3)).unwrap();
        w.add(b"home/a-b", b"y", &h(4)).unwrap();
        w.finish().unwrap();
        let text = std::fs::read(&path).unwrap();
        assert!(text.starts_with(blake3::Hash::from_bytes(h(1)).to_hex().as_bytes()));
        assert!(text.windows(3).any(|w| w == b"\n\\0"), "escaped line starts with a backslash");

        let mut c = Cursor::open(&path);
        assert_eq!(c.find(b"home", b"a.txt"), Some(h(1)));
        assert_eq!(c.find(b"home", b"b.txt"), None);
        assert_eq!(c.find(b"home", b"we\\ird\nname"), Some(h(2)));
        assert_eq!(c.find(b"home/a", b"x"), Some(h(3)));
        assert_eq!(c.find(b"home/a-b", b"y"), Some(h(4)));
        assert_eq!(c.find(b"zzz", b"y"), None);
    }

    #[test]
    fn escapes_like_b3sum_and_keeps_non_utf8_names_exactly() {
        assert_eq!(escape_path(b"home/caf\xc3\xa9"), None, "valid UTF-8 is written as it is");
        assert_eq!(escape_path(b"a\\b\nc\rd").unwrap(), b"a\\\\b\\nc\\rd");
        assert_eq!(escape_path(b"caf\xe9/x").unwrap(), b"caf\\xe9/x");
        for raw in [&b"caf\xe9"[..], b"\xff\xfe\\\n\r", b"\\xe9 literally", b"ok\xc3"] {
            assert_eq!(unescape(&escape_path(raw).unwrap()).unwrap(), raw, "{raw:?}");
        }
        assert_eq!(unescape(b"\\q"), None);
        assert_eq!(unescape(b"\\x+f"), None);
        assert_eq!(unescape(b"\\x4"), None);
        // A line of an older manifest: only `\\` and `\n` escaped, `\r` raw.
        let old = format!("\\{}  a\\\\b\\nc\rd\n", "0".repeat(64));
        let mut e = Entry { dir: b"left over".to_vec(), name: Vec::new(), hash: [1; 32] };
        assert!(parse_line(old.as_bytes(), &mut e));
        assert_eq!((&e.dir[..], &e.name[..], e.hash), (&b""[..], &b"a\\b\nc\rd"[..], [0; 32]));
    }
}
