//! Changed-block writing: a new version of a large file written over a block-shared copy of
//! its previous version (a `FICLONE` of it, or the file itself in a writable btrfs snapshot),
//! touching only the blocks that differ, so that a 1-byte append to a 150 MB file costs a few
//! blocks on btrfs and XFS instead of 150 MB.
//!
//! **Finding changed blocks without reading the old copy.** Each regular file larger than
//! [`CHUNK`] (1 MiB) gets one hash per 1 MiB chunk, kept beside the manifest in the snapshot's
//! `.hwc-backup/chunks.v1` (the *sidecar*, format in `docs/chunks-sidecar.md` and below). The
//! chunk hashes are BLAKE3 chaining values of the 1 MiB subtrees of the file's own BLAKE3 tree
//! (`blake3::hazmat`), so they cost no hashing beyond the manifest's whole-file hash, which is
//! derived from them ([`ChunkHasher`]). The next run reads the source in full anyway (its
//! manifest hash needs it); for each chunk whose hash equals the previous version's, nothing
//! is read from or written to the destination. A chunk that differs is read back from the
//! destination and compared 4 KiB block by block, and only differing blocks are written, so a
//! change in the middle of a file costs about one block, not one chunk.
//!
//! Without previous chunk hashes (a snapshot written before the sidecar, a file that was
//! small, a garbled or stale sidecar record) [`write_changed`] is called with none: every
//! chunk is then compared against the destination block by block. That reads the old copy in
//! full but still writes only what differs, and trusts nothing it has not read.
//!
//! **What is guaranteed.** A "match" is only ever claimed from equal BLAKE3 chaining values
//! of the same offset and length, and the record's check, chunk count and file hash only catch
//! accidents (a torn or stale line, bit rot in the sidecar): they are unkeyed, so whoever can
//! write the disk can forge a record that passes them. The unchanged chunks are then taken
//! from the previous copy unread, so the new file is exactly as trustworthy as the previous
//! copy and its record — as a hard link to that copy is: a forged record, or a previous copy
//! whose bytes were changed with its size and mtime put back, leaves old bytes in the new file
//! while its manifest line has the hash of the source as read (computed from the source, never
//! from the destination). That snapshot is then wrong without any error at write time; a later
//! `verify` reports the file (its content no longer matches its manifest hash). What a wrong
//! sidecar cannot do is reach outside the snapshot or make a file wrong when the previous copy
//! and its record are as this program wrote them. The caller uses a record only when its size
//! and mtime equal the previous copy's (the same quick check a hard link rests on) and its
//! checks pass ([`Record`]); without one, every chunk is read back and compared.
//!
//! ## The sidecar, `chunks.v1`
//!
//! A text file, one line per file larger than 1 MiB, in the manifest's walk order
//! (`manifest::cmp_key`), so the next run reads it as a stream in lockstep with its walk
//! ([`ChunkCursor`]) and never holds more than one record:
//!
//! ```text
//! hwc-backup-chunks 1 1048576
//! <check> <p|e> <size> <mtime>.<nsec> <hash> <chunk hashes>  <path>
//! ```
//!
//! `<check>` is the first 8 bytes, in hex, of the BLAKE3 of the rest of the line after
//! `<check> ` (without the newline); `p`: the path is written as is, `e`: escaped as in the
//! manifest (`manifest::escape_path`); `<size>` in bytes and `<mtime>.<nsec>` are the file's
//! (and thus its copy's in the snapshot); `<hash>` its whole BLAKE3 (the manifest's); `<chunk
//! hashes>` the concatenated hex of one 32-byte chaining value per 1 MiB chunk (the last may be
//! shorter), `ceil(size / 1 MiB)` of them, which must merge into `<hash>` as BLAKE3's tree
//! does. A line that fails any check ends the reading: every later lookup finds nothing, and
//! those files are compared in full.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use rustix::fs::Stat;

use crate::error::Result;
use crate::fs::{Dir, Name};
use crate::store::manifest::{cmp_key, entry_path, escape_path, read_line_capped, unescape, Hash, LineWriter};

/// The chunk size: one hash per MiB of a file. A power of two multiple of BLAKE3's 1 KiB
/// chunk, so each chunk is a subtree of the file's BLAKE3 tree.
pub const CHUNK: u64 = 1 << 20;

/// The unit of comparison inside a chunk that differs: what is written when one byte changed.
pub const BLOCK: usize = 4096;

/// Files of more than this many bytes get chunk hashes in the sidecar.
pub const CHUNKED_ABOVE: u64 = CHUNK;

/// The sidecar's file name in a snapshot's `.hwc-backup/`.
pub const SIDECAR_FILE: &str = "chunks.v1";

const HEADER: &str = "hwc-backup-chunks 1 1048576";
/// The longest sidecar line read: 64 hex digits per MiB chunk of a 2 TiB file, and its path.
pub const MAX_SIDECAR_LINE: usize = (128 << 20) + crate::store::manifest::MAX_LINE;

/// Hashes a file's content as a stream, giving its BLAKE3 (exactly `blake3::hash` of the
/// whole) and the chaining value of each 1 MiB chunk.
pub struct ChunkHasher {
    current: blake3::Hasher,
    filled: u64,
    offset: u64,
    cvs: Vec<Hash>,
}

impl Default for ChunkHasher {
    fn default() -> Self {
        ChunkHasher::new()
    }
}

impl ChunkHasher {
    /// A hasher at offset 0.
    pub fn new() -> ChunkHasher {
        ChunkHasher { current: blake3::Hasher::new(), filled: 0, offset: 0, cvs: Vec::new() }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.filled == CHUNK {
                // More data follows a full chunk: it is not the root, seal it.
                self.cvs.push(self.current.finalize_non_root());
                self.offset += CHUNK;
                self.current = blake3::Hasher::new();
                self.current.set_input_offset(self.offset);
                self.filled = 0;
            }
            let take = (CHUNK - self.filled).min(data.len() as u64) as usize;
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
        }
    }

    /// The chaining value of the chunk being fed (`None` before its first byte).
    fn current_cv(&self) -> Option<Hash> {
        (self.filled > 0).then(|| self.current.finalize_non_root())
    }

    /// The file's BLAKE3 and its chunk hashes; no chunk hashes for a file of at most one chunk.
    pub fn finish(mut self) -> (Hash, Vec<Hash>) {
        if self.cvs.is_empty() {
            return (*self.current.finalize().as_bytes(), Vec::new());
        }
        self.cvs.push(self.current.finalize_non_root());
        let root = merge_root(&self.cvs);
        (root, self.cvs)
    }
}

/// The root of a tree of at least two 1 MiB subtrees (all full but the last): BLAKE3 splits
/// every node at the largest power of two of subtrees below its length.
fn merge_root(cvs: &[Hash]) -> Hash {
    let split = left_len(cvs.len());
    let (l, r) = (merge(&cvs[..split]), merge(&cvs[split..]));
    *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
}

fn merge(cvs: &[Hash]) -> Hash {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let split = left_len(cvs.len());
    merge_subtrees_non_root(&merge(&cvs[..split]), &merge(&cvs[split..]), Mode::Hash)
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// What [`write_changed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// The new content's BLAKE3 (for the manifest), from the source as read.
    pub hash: Hash,
    /// Its chunk hashes (for the sidecar; empty for a file of at most one chunk).
    pub chunks: Vec<Hash>,
    /// Its size, as read.
    pub size: u64,
    /// Bytes written to the destination.
    pub bytes_written: u64,
}

/// Makes `dst`, which holds the previous version of the file (a `FICLONE` of it, or the file
/// itself in a writable snapshot), equal to `src`, writing only what differs, and truncates it
/// to the new size. `prev`: the previous version's chunk hashes (from its sidecar record,
/// checked by the caller to describe `dst`'s content), or none: then every chunk is compared
/// against `dst` block by block. Reads `src` in full from offset 0 (positioned reads; its file
/// offset is not used); the caller checks afterwards that it did not change meanwhile.
/// `buf` is scratch space (grown to 2 MiB).
pub fn write_changed(src: &File, dst: &File, prev: &[Hash], buf: &mut Vec<u8>) -> io::Result<Delta> {
    let chunk = CHUNK as usize;
    buf.resize(2 * chunk, 0);
    let (sbuf, dbuf) = buf.split_at_mut(chunk);
    let old_len = dst.metadata()?.len();
    let mut hasher = ChunkHasher::new();
    let (mut off, mut written, mut index) = (0u64, 0u64, 0usize);
    loop {
        let n = read_full(src, &mut sbuf[..], off)?;
        if n == 0 {
            break;
        }
        hasher.update(&sbuf[..n]);
        let same =
            prev.get(index).is_some_and(|p| hasher.current_cv().as_ref() == Some(p)) && off + n as u64 <= old_len;
        if !same {
            written += write_differing(dst, &sbuf[..n], &mut dbuf[..n], off, old_len)?;
        }
        off += n as u64;
        index += 1;
        if n < chunk {
            break;
        }
    }
    if off != old_len {
        dst.set_len(off)?;
    }
    let (hash, chunks) = hasher.finish();
    Ok(Delta { hash, chunks, size: off, bytes_written: written })
}

/// Writes the blocks of `new` (at `off`) that differ from what `dst` holds there, reading
/// that into `old` (at least `new.len()` bytes); `old_len` is `dst`'s length before any write
/// (a block past it that is all zeros is left to the final `set_len`: a hole). Returns the
/// bytes written. For writers that get new content in pieces (a pull's delta) into a clone.
pub fn write_differing(dst: &File, new: &[u8], old: &mut [u8], off: u64, old_len: u64) -> io::Result<u64> {
    let have = if off < old_len { read_full(dst, old, off)? } else { 0 };
    let mut written = 0u64;
    let mut run: Option<usize> = None; // start of a run of blocks to write
    let mut at = 0usize;
    while at < new.len() {
        let end = (at + BLOCK).min(new.len());
        let block = &new[at..end];
        let differs = if end <= have {
            block != &old[at..end]
        } else {
            // Straddling the old end: write it whole; past it: only what is not zero.
            at < have || block.iter().any(|&b| b != 0)
        };
        match (differs, run) {
            (true, None) => run = Some(at),
            (false, Some(start)) => {
                dst.write_all_at(&new[start..at], off + start as u64)?;
                written += (at - start) as u64;
                run = None;
            }
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run {
        dst.write_all_at(&new[start..], off + start as u64)?;
        written += (new.len() - start) as u64;
    }
    Ok(written)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `FICLONE`: makes `dst` (an empty file open for writing) share all of `src`'s blocks. Fails
/// with `EOPNOTSUPP`, `EXDEV` or `EINVAL` where the filesystem cannot (ext4, tmpfs, another
/// filesystem): the caller then copies.
pub fn reflink(src: &File, dst: &File) -> io::Result<()> {
    Ok(rustix::fs::ioctl_ficlone(dst, src)?)
}

/// One file's sidecar record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
    /// Whole-file BLAKE3 (the manifest's).
    pub hash: Hash,
    /// One chaining value per 1 MiB chunk.
    pub chunks: Vec<Hash>,
}

impl Record {
    /// Whether this record describes the file `st` (a previous copy in the snapshot): same
    /// size and mtime to the nanosecond, as the hard-link quick check.
    pub fn describes(&self, st: &Stat) -> bool {
        u64::try_from(st.st_size).ok() == Some(self.size)
            && st.st_mtime == self.mtime
            && st.st_mtime_nsec as i64 == self.mtime_nsec
    }

    /// The record of a file with status `st` (size, mtime) just written with these hashes.
    /// `None` for a file of at most one chunk, or when the size read differs from `st`'s.
    pub fn of(st: &Stat, hash: Hash, chunks: Vec<Hash>) -> Option<Record> {
        let size = u64::try_from(st.st_size).ok()?;
        (size > CHUNKED_ABOVE && chunks.len() as u64 == size.div_ceil(CHUNK)).then_some(Record {
            size,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
            hash,
            chunks,
        })
    }
}

/// Streams sidecar records to `.hwc-backup/chunks.v1`, in walk order.
pub struct ChunkWriter(LineWriter);

impl ChunkWriter {
    /// Creates the sidecar in a snapshot's metadata directory (never over an existing file).
    pub fn create_in(meta: &Dir) -> Result<ChunkWriter> {
        let mut w = LineWriter::create_in(meta, &Name::fixed(SIDECAR_FILE))?;
        w.line().extend_from_slice(HEADER.as_bytes());
        w.end_line()?;
        Ok(ChunkWriter(w))
    }

    /// Appends the record of `dir/name` (relative to the snapshot root); keys must come in
    /// walk order.
    pub fn add(&mut self, dir: &[u8], name: &[u8], r: &Record) -> Result<()> {
        let path = entry_path(dir, name);
        let mut body = Vec::with_capacity(100 + r.chunks.len() * 64 + path.len());
        let (flag, shown) = match escape_path(&path) {
            Some(e) => ("e", e),
            None => ("p", path),
        };
        let hex = |h: &Hash| blake3::Hash::from_bytes(*h).to_hex();
        body.extend_from_slice(format!("{flag} {} {}.{} {} ", r.size, r.mtime, r.mtime_nsec, hex(&r.hash)).as_bytes());
        for c in &r.chunks {
            body.extend_from_slice(hex(c).as_bytes());
        }
        body.extend_from_slice(b"  ");
        body.extend_from_slice(&shown);
        let line = self.0.line();
        line.extend_from_slice(check(&body).as_bytes());
        line.push(b' ');
        line.extend_from_slice(&body);
        self.0.end_line()
    }

    /// Flushes the sidecar (no fsync of its own, like the manifest: see `LineWriter`).
    pub fn finish(self) -> Result<()> {
        self.0.finish()
    }
}

/// A line's integrity check: 16 hex digits of the BLAKE3 of its body.
fn check(body: &[u8]) -> String {
    blake3::hash(body).to_hex()[..16].to_string()
}

/// A parsed line: its key and record.
type Line = (Vec<u8>, Vec<u8>, Record);

fn parse(line: &[u8]) -> Option<Line> {
    let line = line.strip_suffix(b"\n")?;
    let (sum, body) = (line.get(..16)?, line.get(17..)?);
    if line.get(16) != Some(&b' ') || sum != check(body).as_bytes() {
        return None;
    }
    let sep = body.windows(2).position(|w| w == b"  ")?;
    let (fields, raw_path) = (&body[..sep], &body[sep + 2..]);
    let mut f = fields.split(|&c| c == b' ');
    let flag = f.next()?;
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
    let size: u64 = text(f.next()?)?.parse().ok()?;
    let mtime = text(f.next()?)?;
    let (secs, nsec) = mtime.split_once('.')?;
    let (mtime, mtime_nsec): (i64, i64) = (secs.parse().ok()?, nsec.parse().ok()?);
    let hash = *blake3::Hash::from_hex(f.next()?).ok()?.as_bytes();
    let hexes = f.next()?;
    if f.next().is_some() || size <= CHUNKED_ABOVE || hexes.len() as u64 != size.div_ceil(CHUNK) * 64 {
        return None;
    }
    let chunks =
        hexes.chunks(64).map(|h| blake3::Hash::from_hex(h).ok().map(|h| *h.as_bytes())).collect::<Option<Vec<_>>>()?;
    // The chunk hashes must be the file's: they merge into its BLAKE3.
    if merge_root(&chunks) != hash {
        return None;
    }
    let path = match flag {
        b"p" => raw_path.to_vec(),
        b"e" => unescape(raw_path)?,
        _ => return None,
    };
    let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (path[..i].to_vec(), path[i + 1..].to_vec()),
        None => (Vec::new(), path),
    };
    Some((dir, name, Record { size, mtime, mtime_nsec, hash, chunks }))
}

/// Looks up records in a previous snapshot's sidecar in walk order, streaming: each key must
/// be greater than the previous one. A missing, unreadable or garbled sidecar finds nothing
/// from the first bad line on ([`ChunkCursor::garbled`] tells).
pub struct ChunkCursor {
    input: Option<Box<dyn BufRead + Send>>,
    current: Option<Line>,
    line: Vec<u8>,
    garbled: bool,
}

impl ChunkCursor {
    /// The sidecar of the snapshot whose metadata directory is `meta` (`None`: none).
    pub fn open_in(meta: Option<&Dir>) -> ChunkCursor {
        let Some(meta) = meta else { return ChunkCursor::empty() };
        match meta.open_read(&Name::fixed(SIDECAR_FILE)) {
            Ok(Some(f)) => ChunkCursor::from_file(f),
            Ok(None) => ChunkCursor::empty(),
            // A symlink, FIFO or device planted as the sidecar: refused by the door, and
            // treated as a garbled sidecar (files are compared in full).
            Err(_) => ChunkCursor { garbled: true, ..ChunkCursor::empty() },
        }
    }

    /// A cursor over a sidecar already open (through the `fs` door). A line longer than
    /// [`MAX_SIDECAR_LINE`] garbles it (files are then compared in full).
    pub fn from_file(f: File) -> ChunkCursor {
        let mut input: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 16, f));
        let mut header = Vec::new();
        let ok = read_line_capped(&mut input, &mut header, HEADER.len() + 1).is_ok()
            && header == format!("{HEADER}\n").as_bytes();
        let mut c = ChunkCursor { input: ok.then_some(input), current: None, line: Vec::new(), garbled: !ok };
        c.advance();
        c
    }

    /// A cursor that finds nothing.
    pub fn empty() -> ChunkCursor {
        ChunkCursor { input: None, current: None, line: Vec::new(), garbled: false }
    }

    /// Whether a bad line (or header) was met, after which nothing more is found.
    pub fn garbled(&self) -> bool {
        self.garbled
    }

    /// The record of `dir/name`, if the sidecar has one.
    pub fn find(&mut self, dir: &[u8], name: &[u8]) -> Option<Record> {
        loop {
            let (d, n, _) = self.current.as_ref()?;
            match cmp_key(d, n, dir, name) {
                Ordering::Less => self.advance(),
                Ordering::Equal => {
                    let (_, _, r) = self.current.take()?;
                    self.advance();
                    return Some(r);
                }
                Ordering::Greater => return None,
            }
        }
    }

    fn advance(&mut self) {
        self.current = None;
        let Some(input) = self.input.as_mut() else { return };
        self.line.clear();
        match read_line_capped(input, &mut self.line, MAX_SIDECAR_LINE) {
            Ok(0) => self.input = None,
            Ok(_) => match parse(&self.line) {
                Some(l) => self.current = Some(l),
                None => {
                    self.garbled = true;
                    self.input = None;
                }
            },
            Err(_) => {
                self.garbled = true;
                self.input = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed).collect()
    }

    #[test]
    fn the_chunked_hash_is_blake3_of_the_whole() {
        let m = CHUNK as usize;
        for len in [0, 1, 1023, 1024, 1025, m - 1, m, m + 1, 2 * m, 2 * m + 7, 3 * m, 5 * m - 1, 8 * m + 1] {
            let d = data(len, 3);
            // Fed in odd pieces, as a copy loop does.
            let mut h = ChunkHasher::new();
            for piece in d.chunks(333_333) {
                h.update(piece);
            }
            let (root, chunks) = h.finish();
            assert_eq!(root, *blake3::hash(&d).as_bytes(), "len {len}");
            let want = if len as u64 > CHUNK { (len as u64).div_ceil(CHUNK) as usize } else { 0 };
            assert_eq!(chunks.len(), want, "len {len}");
        }
    }

    fn tmpfile(dir: &std::path::Path, name: &str, content: &[u8]) -> File {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::OpenOptions::new().read(true).write(true).open(p).unwrap()
    }

    fn chunks_of(d: &[u8]) -> Vec<Hash> {
        let mut h = ChunkHasher::new();
        h.update(d);
        h.finish().1
    }

    #[test]
    fn writes_only_what_differs_and_ends_equal() {
        let tmp = tempfile::tempdir().unwrap();
        let m = CHUNK as usize;
        let old = data(3 * m + 100, 1);
        // What changed, and the most bytes it may cost.
        let mut cases: Vec<(&str, Vec<u8>, u64)> = Vec::new();
        let mut append = old.clone();
        append.push(b'x');
        cases.push(("append one byte", append, 101));
        let mut middle = old.clone();
        middle[m + 5000] ^= 0xff;
        cases.push(("one byte in the middle", middle, BLOCK as u64));
        cases.push(("truncated", old[..2 * m + 10].to_vec(), 0));
        cases.push(("unchanged", old.clone(), 0));
        let mut grown = old.clone();
        grown.extend(std::iter::repeat_n(0u8, 2 * m));
        grown.extend_from_slice(b"tail");
        // The block holding the old end, then the last 104 bytes; the zeros become a hole.
        cases.push(("grown with zeros then a tail", grown, BLOCK as u64 + 104));
        for (what, new, most) in &cases {
            for prev in [chunks_of(&old), Vec::new(), vec![[7u8; 32]; 4]] {
                let src = tmpfile(tmp.path(), "src", new);
                let dst = tmpfile(tmp.path(), "dst", &old);
                let mut buf = Vec::new();
                let d = write_changed(&src, &dst, &prev, &mut buf).unwrap();
                assert_eq!(std::fs::read(tmp.path().join("dst")).unwrap(), *new, "{what}");
                assert_eq!(d.hash, *blake3::hash(new).as_bytes(), "{what}");
                assert_eq!(d.chunks, chunks_of(new), "{what}");
                assert_eq!(d.size, new.len() as u64);
                assert!(d.bytes_written <= *most, "{what}: wrote {}", d.bytes_written);
            }
        }
    }

    #[test]
    fn sidecar_round_trip_and_garbled_lines_end_the_reading() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = Dir::open_trusted(tmp.path()).unwrap();
        let rec = |size: u64, b: u8| {
            let chunks = vec![[b; 32]; size.div_ceil(CHUNK) as usize];
            Record { size, mtime: 1_700_000_000, mtime_nsec: 5, hash: merge_root(&chunks), chunks }
        };
        let mut w = ChunkWriter::create_in(&meta).unwrap();
        w.add(b"home", b"a", &rec(CHUNK + 1, 1)).unwrap();
        w.add(b"home", b"we\nird", &rec(5 * CHUNK, 2)).unwrap();
        w.add(b"home/x", b"b", &rec(3 * CHUNK + 9, 3)).unwrap();
        w.finish().unwrap();
        let open = || ChunkCursor::from_file(File::open(tmp.path().join(SIDECAR_FILE)).unwrap());
        let mut c = open();
        assert_eq!(c.find(b"home", b"a"), Some(rec(CHUNK + 1, 1)));
        assert_eq!(c.find(b"home", b"b"), None);
        assert_eq!(c.find(b"home", b"we\nird"), Some(rec(5 * CHUNK, 2)));
        assert_eq!(c.find(b"home/x", b"b"), Some(rec(3 * CHUNK + 9, 3)));
        assert!(!c.garbled());

        // One flipped hex digit in the second record: the first is found, nothing after.
        let p = tmp.path().join(SIDECAR_FILE);
        let mut text = std::fs::read(&p).unwrap();
        let second = text.iter().enumerate().filter(|(_, &c)| c == b'\n').nth(1).unwrap().0 + 1;
        let at = second + 40;
        text[at] = if text[at] == b'0' { b'1' } else { b'0' };
        std::fs::write(&p, &text).unwrap();
        let mut c = open();
        assert!(c.find(b"home", b"a").is_some());
        assert_eq!(c.find(b"home", b"we\nird"), None);
        assert_eq!(c.find(b"home/x", b"b"), None);
        assert!(c.garbled());

        // A correct line check over chunk hashes that do not merge into the file's hash.
        let mut forged = rec(CHUNK + 1, 1);
        forged.chunks[1] = [9; 32];
        std::fs::remove_file(&p).unwrap();
        let mut w = ChunkWriter::create_in(&meta).unwrap();
        w.add(b"home", b"a", &forged).unwrap();
        w.finish().unwrap();
        let mut c = open();
        assert_eq!(c.find(b"home", b"a"), None);
        assert!(c.garbled());

        std::fs::write(&p, b"not a sidecar\n").unwrap();
        let mut c = open();
        assert_eq!(c.find(b"home", b"a"), None);
        assert!(c.garbled());
    }

    #[test]
    fn a_record_describes_only_a_file_of_its_size_and_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, data(2 * CHUNK as usize + 1, 0)).unwrap();
        let st = rustix::fs::stat(&p).unwrap();
        let r = Record::of(&st, [0; 32], vec![[0; 32]; 3]).unwrap();
        assert!(r.describes(&st));
        let mut other = st;
        other.st_mtime_nsec = (other.st_mtime_nsec + 1) % 1_000_000_000;
        assert!(!r.describes(&other));
        other = st;
        other.st_size += 1;
        assert!(!r.describes(&other));
        assert!(Record::of(&st, [0; 32], vec![[0; 32]; 2]).is_none(), "wrong chunk count");
    }
}
