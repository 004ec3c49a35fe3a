//! The frames of the pull protocol and their encoding (see the module docs of `remote`).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::store::place::QuickAttrs;

/// The protocol version; both sides must speak the same one. Version 2: everything the agent
/// sends after `Ready` is one LZ4 frame stream ([`CompressedWriter`]). Version 3: the request
/// carries `excludeCaches`/`excludeIfPresent`/`excludeLargerThan` (`exclude_by`), and
/// `WalkEnd` what they left out. Version 4: the LZ4 blocks are linked, frame lengths are
/// varints, and a walk's `File` frame carries only what the server uses of a file's metadata
/// before its content arrives ([`file_meta`]: the quick check's fields and whether it has
/// holes), not its access time, device or allocation. Version 5: `Ready` carries the time the
/// agent's walk starts (its own clock), the request the time since which a file's attributes
/// may have changed ([`Request::xattrs_since`]), and a `File` frame the file's extended
/// attributes when its `ctime` is not older than that, so that a change of only an xattr or
/// ACL (which moves no field of the quick check) is seen.
pub const PROTOCOL: u32 = 5;
/// The first bytes each side writes.
pub const MAGIC: [u8; 4] = *b"HWCB";
/// The largest frame either side accepts: bigger lengths mean garbage or a hostile peer.
pub const MAX_FRAME: usize = 16 << 20;
/// How many walk frames the agent may send beyond the last one the server acknowledged.
pub const WINDOW: u64 = 16_384;

/// An entry's metadata, as `lstat` reports it on the client, plus its xattrs where sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Access time, seconds.
    pub atime: i64,
    /// Access time, nanoseconds.
    pub atime_nsec: u32,
    /// Device number of a device node.
    pub rdev: u64,
    /// Bytes allocated (`st_blocks * 512`): less than `size` means the file has holes.
    pub allocated: u64,
    /// Extended attributes (POSIX ACLs included). Sent for directories and special files in
    /// the walk, for regular files in `FileEnd`; empty elsewhere.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// The metadata of a `Stat`, without xattrs.
    pub fn of(st: &rustix::fs::Stat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            atime: st.st_atime,
            atime_nsec: st.st_atime_nsec as u32,
            rdev: st.st_rdev,
            allocated: u64::try_from(st.st_blocks).unwrap_or(0) * 512,
            xattrs: Vec::new(),
        }
    }

    /// The values `fsops` applies.
    pub fn attrs(&self) -> crate::fs::fsops::Attrs {
        crate::fs::fsops::Attrs {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
            atime: (self.atime, self.atime_nsec),
            mtime: (self.mtime, self.mtime_nsec),
        }
    }

    /// What the quick check compares (`store::place`).
    pub fn quick(&self) -> QuickAttrs {
        QuickAttrs {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            mtime: self.mtime,
            mtime_nsec: i64::from(self.mtime_nsec),
        }
    }
}

/// The server's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Absolute source paths on the client.
    pub sources: Vec<Vec<u8>>,
    /// Exclude patterns (`exclude` module semantics).
    pub excludes: Vec<String>,
    /// Stay on each source's filesystem.
    pub one_file_system: bool,
    /// Exclusions by tag file, marker file and size (`source::markers`).
    pub exclude_by: crate::source::markers::ExcludeBy,
    /// Send the extended attributes of every regular file whose `ctime` (the agent's clock)
    /// is at or after this second: the previous snapshot's walk start, less a second. Older
    /// files have not changed an attribute since that snapshot was read. `None` (no earlier
    /// walk known): send them for every file.
    pub xattrs_since: Option<i64>,
}

/// How the server wants a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum How {
    /// The whole content.
    Whole,
    /// A delta against the previous copy, whose `fast_rsync` signature this is.
    Delta(#[serde(with = "raw")] Vec<u8>),
}

/// Frames from the server to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToAgent {
    /// What to walk.
    Request(Request),
    /// Send this regular file (its walk frame number).
    Send {
        /// The file's id.
        id: u64,
        /// Whole or as a delta.
        how: How,
    },
    /// Every walk frame below this number is complete on the server.
    Ack {
        /// The first incomplete walk frame.
        upto: u64,
    },
    /// The snapshot is complete; exit.
    Done,
}

/// Frames from the agent to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromAgent {
    /// The request is accepted; the walk follows.
    Ready {
        /// When the walk starts, seconds since the epoch on the agent's clock (recorded with
        /// the snapshot; the next pull's [`Request::xattrs_since`]).
        walk_started: i64,
    },
    /// A fatal error (the agent exits after it).
    Error(String),
    /// Walk: source `index` of the request begins; its entry lives in directory `parent`
    /// (relative to `/`), which the server creates.
    Source {
        /// Index into the request's sources.
        index: u32,
        /// The parent directory, relative to `/` (`home` for `/home/alice`).
        parent: Vec<u8>,
    },
    /// Walk: the current source is complete.
    SourceEnd,
    /// Walk: a directory; its entries follow until the matching `DirEnd`.
    Dir {
        /// Its name.
        name: Vec<u8>,
        /// Its metadata (with xattrs).
        meta: Meta,
    },
    /// Walk: the current directory is complete.
    DirEnd,
    /// Walk: a regular file.
    File {
        /// Its name.
        name: Vec<u8>,
        /// Its metadata at listing time, as much of it as [`file_meta`] carries (the rest
        /// comes with `FileEnd` when the content is sent).
        #[serde(with = "file_meta")]
        meta: Meta,
        /// `(st_dev, st_ino)` when it has more than one link, to keep hard links as links.
        link: Option<(u64, u64)>,
        /// Its extended attributes (POSIX ACLs included) when its `ctime` is not older than
        /// [`Request::xattrs_since`]: the server compares them with the previous copy's before
        /// linking it. `None`: unchanged since then (or unreadable; the quick check decides).
        xattrs: Option<crate::fs::fsops::Xattrs>,
    },
    /// Walk: a symbolic link.
    Symlink {
        /// Its name.
        name: Vec<u8>,
        /// Its metadata.
        meta: Meta,
        /// What it points to.
        target: Vec<u8>,
    },
    /// Walk: a FIFO or device node.
    Special {
        /// Its name.
        name: Vec<u8>,
        /// Its metadata (with xattrs and `rdev`).
        meta: Meta,
    },
    /// Walk: a socket, which cannot be backed up (counted).
    Socket,
    /// Walk: a problem with one entry (the run ends partial).
    Warn {
        /// The absolute path on the client.
        path: Vec<u8>,
        /// What happened.
        message: String,
    },
    /// Walk: the end.
    WalkEnd {
        /// Entries left out by the excludes.
        excluded: u64,
        /// Directories kept without their contents for a `CACHEDIR.TAG`.
        excluded_caches: u64,
        /// Directories kept without their contents for a marker file.
        excluded_if_present: u64,
        /// Regular files left out for their size.
        excluded_large: u64,
        /// The directories above the sources, relative to `/`, deepest first, with metadata.
        ancestors: Vec<(Vec<u8>, Meta)>,
    },
    /// File content at `offset` (whole transfers).
    Data {
        /// The file's id.
        id: u64,
        /// Where the bytes go.
        offset: u64,
        /// The uncompressed length when `bytes` is LZ4-compressed.
        lz4: Option<u32>,
        /// The bytes.
        #[serde(with = "raw")]
        bytes: Vec<u8>,
    },
    /// The next window of a file as a librsync delta against the server's previous copy.
    Delta {
        /// The file's id.
        id: u64,
        /// The uncompressed length when `bytes` is LZ4-compressed.
        lz4: Option<u32>,
        /// The delta.
        #[serde(with = "raw")]
        bytes: Vec<u8>,
    },
    /// A file's content is complete.
    FileEnd {
        /// The file's id.
        id: u64,
        /// Bytes of content (the length the file must have).
        length: u64,
        /// BLAKE3 of the content.
        hash: [u8; 32],
        /// Metadata after reading, with xattrs.
        meta: Meta,
        /// It changed while being read.
        torn: bool,
    },
    /// A file could not be sent (vanished, unreadable).
    FileError {
        /// The file's id.
        id: u64,
        /// Why.
        message: String,
    },
}

impl FromAgent {
    /// Whether this frame is part of the numbered walk.
    pub fn is_walk(&self) -> bool {
        !matches!(
            self,
            FromAgent::Ready { .. }
                | FromAgent::Error(_)
                | FromAgent::Data { .. }
                | FromAgent::Delta { .. }
                | FromAgent::FileEnd { .. }
                | FromAgent::FileError { .. }
        )
    }
}

/// A walk's `File` frame carries the fields of [`Meta`] the server uses before the content
/// comes: those of the quick check (`mode`, `uid`, `gid`, `size`, `mtime`, `mtime_nsec`; a
/// file that matches the previous snapshot's copy in them is linked, and nothing more about it
/// is needed) and whether the file has holes. Access time, device number and allocation are
/// not sent: a linked file keeps the previous copy's, and a sent one gets those of its
/// `FileEnd`. Read back, `atime` is 0 and `allocated` is `size`, or 0 for a file with holes.
/// The mode takes two fixed bytes, the mtime's seconds four (until 2106) with the holes flag.
/// This is most of a pull's bytes when little changed: a 200 000-file tree lists every file.
pub mod file_meta {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Meta;

    #[derive(Serialize, Deserialize)]
    struct Sent {
        /// `st_mode` fits in 16 bits (type and permissions): two bytes, not a varint's three.
        #[serde(with = "postcard::fixint::le")]
        mode: u16,
        uid: u32,
        gid: u32,
        size: u64,
        mtime: Mtime,
        mtime_nsec: u32,
    }

    /// The mtime's seconds, and whether the file has holes, in five bytes for any time from
    /// 1970 to 2106 (a varint of the seconds alone takes five), ten otherwise.
    #[derive(Serialize, Deserialize)]
    enum Mtime {
        Dense(#[serde(with = "postcard::fixint::le")] u32),
        Holes(#[serde(with = "postcard::fixint::le")] u32),
        DenseWide(i64),
        HolesWide(i64),
    }

    /// Writes the fields the frame carries.
    pub fn serialize<S: Serializer>(m: &Meta, s: S) -> Result<S::Ok, S::Error> {
        let holes = m.allocated < m.size;
        let mtime = match (u32::try_from(m.mtime), holes) {
            (Ok(t), false) => Mtime::Dense(t),
            (Ok(t), true) => Mtime::Holes(t),
            (Err(_), false) => Mtime::DenseWide(m.mtime),
            (Err(_), true) => Mtime::HolesWide(m.mtime),
        };
        let mode = u16::try_from(m.mode).map_err(|_| serde::ser::Error::custom("a mode beyond 16 bits"))?;
        Sent { mode, uid: m.uid, gid: m.gid, size: m.size, mtime, mtime_nsec: m.mtime_nsec }.serialize(s)
    }

    /// Reads them back (the server checks the values, `pull::Server::file`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Meta, D::Error> {
        let f = Sent::deserialize(d)?;
        let (mtime, holes) = match f.mtime {
            Mtime::Dense(t) => (i64::from(t), false),
            Mtime::Holes(t) => (i64::from(t), true),
            Mtime::DenseWide(t) => (t, false),
            Mtime::HolesWide(t) => (t, true),
        };
        Ok(Meta {
            mode: u32::from(f.mode),
            uid: f.uid,
            gid: f.gid,
            size: f.size,
            mtime,
            mtime_nsec: f.mtime_nsec,
            allocated: if holes { 0 } else { f.size },
            ..Meta::default()
        })
    }
}

/// Byte buffers as one length and a copy (serde's default for `Vec<u8>` is a sequence of
/// separately encoded `u8`s: the same bytes on the wire, far slower to produce).
mod raw {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Why the hello failed.
#[derive(Debug)]
pub enum HelloError {
    /// Reading or writing failed (closed connection included).
    Io(io::Error),
    /// The peer sent something else than the magic (the bytes it sent).
    NotAnAgent(Vec<u8>),
    /// The peer speaks another version.
    Version(u32),
}

/// Writes our hello.
pub fn send_hello(w: &mut impl Write) -> io::Result<()> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&PROTOCOL.to_be_bytes());
    w.write_all(&b)?;
    w.flush()
}

/// Reads the peer's hello and checks it.
pub fn read_hello(r: &mut impl Read) -> Result<(), HelloError> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Err(HelloError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(0) => return Err(HelloError::NotAnAgent(b[..got].to_vec())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HelloError::Io(e)),
        }
        if b[..got.min(4)] != MAGIC[..got.min(4)] {
            return Err(HelloError::NotAnAgent(b[..got].to_vec()));
        }
    }
    let version = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    if version != PROTOCOL {
        return Err(HelloError::Version(version));
    }
    Ok(())
}

/// Writes one frame (not flushed): its length as a LEB128 varint (one byte for most walk
/// frames; four before protocol 4), then its body.
pub fn write_frame<T: Serialize>(w: &mut impl Write, frame: &T) -> io::Result<()> {
    let body = postcard::to_stdvec(frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {} bytes is too large", body.len())));
    }
    let (mut len, mut head) = (body.len(), Vec::with_capacity(4));
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            head.push(low);
            break;
        }
        head.push(low | 0x80);
    }
    w.write_all(&head)?;
    w.write_all(&body)
}

/// Reads a frame's length; `Ok(None)` at a clean end of stream (before its first byte). A
/// length of more than [`MAX_FRAME`], or of more bytes than it takes, is refused.
fn read_len(r: &mut impl Read) -> io::Result<Option<usize>> {
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8; 1];
        match r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && i == 0 => return Ok(None),
            Err(e) => return Err(e),
        }
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(len));
        }
    }
    // Four bytes carry 28 bits, more than MAX_FRAME needs.
    Err(io::Error::new(io::ErrorKind::InvalidData, "frame length exceeds the limit"))
}

/// Reads one frame; `Ok(None)` at a clean end of stream (before a length).
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<T>> {
    let Some(len) = read_len(r)? else { return Ok(None) };
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame length {len} exceeds the limit")));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    postcard::from_bytes(buf)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad frame: {e}")))
}

/// The agent's stream after `Ready`: the walk and the files as one LZ4 frame stream. The
/// walk alone is about a hundred bytes per entry (name and metadata, one frame each), which
/// made a pull of a 200 000-entry tree with 1% changed cross the wire as twice the bytes of
/// rsync's; compressed, the names' shared parts and the repeated metadata shrink it several
/// times. File data goes through too: compressing what already is compressed costs little.
pub struct CompressedWriter<W: Write>(lz4_flex::frame::FrameEncoder<W>);

impl<W: Write> CompressedWriter<W> {
    /// Starts the stream on `w`.
    pub fn new(w: W) -> Self {
        // Linked blocks (protocol 4): the agent flushes whenever its queue runs dry, so blocks
        // are often small, and a block compressed alone finds none of the names and metadata
        // it repeats from the ones before.
        let mut info = lz4_flex::frame::FrameInfo::new();
        info.block_mode = lz4_flex::frame::BlockMode::Linked;
        CompressedWriter(lz4_flex::frame::FrameEncoder::with_frame_info(info, w))
    }
}

impl<W: Write> Write for CompressedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    /// Ends the current block and flushes the writer below: the server must get every frame
    /// written so far (the encoder's own flush leaves the block in the writer below).
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_mut().flush()
    }
}

/// The server's side of [`CompressedWriter`].
pub fn compressed_reader<R: Read>(r: R) -> lz4_flex::frame::FrameDecoder<R> {
    lz4_flex::frame::FrameDecoder::new(r)
}

/// LZ4-compresses `data` when that saves at least an eighth; returns `(lz4, bytes)`.
pub fn maybe_compress(data: Vec<u8>) -> (Option<u32>, Vec<u8>) {
    let packed = lz4_flex::block::compress(&data);
    if packed.len() < data.len() - data.len() / 8 {
        (Some(data.len() as u32), packed)
    } else {
        (None, data)
    }
}

/// Undoes [`maybe_compress`].
pub fn decompress(lz4: Option<u32>, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    match lz4 {
        None => Ok(bytes),
        Some(n) if n as usize > MAX_FRAME * 4 => {
            Err(io::Error::new(io::ErrorKind::InvalidData, "compressed frame claims too large a size"))
        }
        Some(n) => lz4_flex::block::decompress(&bytes, n as usize)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad compressed data: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_garbage() {
        let mut wire = Vec::new();
        send_hello(&mut wire).unwrap();
        let f = FromAgent::File {
            name: b"a\xffb".to_vec(),
            meta: Meta { size: 7, ..Meta::default() },
            link: None,
            xattrs: None,
        };
        write_frame(&mut wire, &f).unwrap();
        let mut r = wire.as_slice();
        read_hello(&mut r).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_frame::<FromAgent>(&mut r, &mut buf).unwrap(), Some(f));
        assert_eq!(read_frame::<FromAgent>(&mut r, &mut buf).unwrap(), None);

        let mut r: &[u8] = b"bash: hwc-backup: command not found\n";
        assert!(matches!(read_hello(&mut r), Err(HelloError::NotAnAgent(b)) if b.starts_with(b"bash")));
        let mut r: &[u8] = b"HWCB\0\0\0\x09";
        assert!(matches!(read_hello(&mut r), Err(HelloError::Version(9))));
        let mut r: &[u8] = b"\xff\xff\xff\xff";
        assert!(read_frame::<FromAgent>(&mut r, &mut buf).is_err());
        // Lengths: beyond the limit, more than four bytes, cut short, and one of the limit.
        for bad in [&b"\xff\xff\xff\x7f"[..], b"\x80\x80\x80\x80\x01", b"\x80"] {
            let e = read_frame::<FromAgent>(&mut &bad[..], &mut buf).unwrap_err();
            assert!(matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof), "{e}");
        }
        let mut most = Vec::new();
        let big = FromAgent::Error("x".repeat(MAX_FRAME - 5));
        write_frame(&mut most, &big).unwrap();
        assert_eq!(read_frame::<FromAgent>(&mut most.as_slice(), &mut buf).unwrap(), Some(big));
    }

    #[test]
    fn the_compressed_stream_carries_frames_and_shrinks_a_walk() {
        let mut wire = Vec::new();
        let mut w = CompressedWriter::new(&mut wire);
        let frames: Vec<FromAgent> = (0..1000u64)
            .map(|i| FromAgent::File {
                name: format!("report_{i:07}.txt").into_bytes(),
                meta: Meta {
                    mode: 0o100644,
                    uid: 1000,
                    gid: 100,
                    size: i * 37,
                    mtime: 1_700_000_000,
                    ..Meta::default()
                },
                link: None,
                xattrs: None,
            })
            .collect();
        let mut plain = Vec::new();
        let mut alone = Vec::new();
        let mut independent = lz4_flex::frame::FrameEncoder::new(&mut alone);
        for (i, f) in frames.iter().enumerate() {
            write_frame(&mut w, f).unwrap();
            write_frame(&mut plain, f).unwrap();
            write_frame(&mut independent, f).unwrap();
            // The agent flushes whenever its queue runs dry, often after a few frames: the
            // blocks are linked, so a small one still finds what the ones before it hold.
            if i % 4 == 3 {
                w.flush().unwrap();
                independent.flush().unwrap();
            }
        }
        w.flush().unwrap();
        drop(w);
        independent.finish().unwrap();
        assert!(wire.len() * 2 < plain.len(), "{} compressed bytes for {} plain", wire.len(), plain.len());
        assert!(wire.len() * 3 < alone.len() * 2, "linked {} bytes, independent blocks {}", wire.len(), alone.len());
        let mut r = compressed_reader(wire.as_slice());
        let mut buf = Vec::new();
        for f in &frames {
            assert_eq!(read_frame::<FromAgent>(&mut r, &mut buf).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame::<FromAgent>(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn a_file_frame_carries_the_quick_check_and_holes_and_refuses_malformed_ones() {
        let meta = Meta {
            mode: 0o100640,
            uid: 1000,
            gid: 100,
            size: 1 << 20,
            mtime: 1_700_000_000,
            mtime_nsec: 123_456_789,
            atime: 1_800_000_000,
            atime_nsec: 5,
            rdev: 7,
            allocated: 4096,
            xattrs: Vec::new(),
        };
        let f = FromAgent::File { name: b"f".to_vec(), meta: meta.clone(), link: Some((3, 4)), xattrs: None };
        let mut wire = Vec::new();
        write_frame(&mut wire, &f).unwrap();
        let mut buf = Vec::new();
        let back = read_frame::<FromAgent>(&mut wire.as_slice(), &mut buf).unwrap().unwrap();
        let FromAgent::File { name, meta: got, link, xattrs } = back else { panic!("not a file: {back:?}") };
        assert_eq!((name.as_slice(), link, xattrs), (&b"f"[..], Some((3, 4)), None));
        assert_eq!(got.quick(), meta.quick());
        assert!(got.allocated < got.size, "the holes were lost");
        assert_eq!((got.atime, got.rdev), (0, 0), "not sent");
        // The whole walk frame of a file is small: name, the quick check, a flag, the link,
        // and one byte for "no attributes sent".
        assert!(wire.len() <= 1 + 1 + 2 + 2 + 2 + 1 + 4 + 5 + 5 + 3 + 1, "{} bytes", wire.len());
        // Attributes, when sent, come back as they were: an empty list is not "none sent".
        for x in [Some(Vec::new()), Some(vec![(b"user.k".to_vec(), b"\0v".to_vec())])] {
            let f = FromAgent::File { name: b"x".to_vec(), meta: meta.clone(), link: None, xattrs: x.clone() };
            let mut w = Vec::new();
            write_frame(&mut w, &f).unwrap();
            let Some(FromAgent::File { xattrs, .. }) = read_frame(&mut w.as_slice(), &mut buf).unwrap() else {
                panic!("not a file")
            };
            assert_eq!(xattrs, x);
        }
        // Times before 1970 or after 2106, with holes or without, come back as they were.
        for (mtime, allocated) in [(-1, 0), (1 << 40, 0), (-(1 << 40), 1 << 30), (0, 1 << 30), (u32::MAX as i64, 0)] {
            let m = Meta { mtime, allocated, ..meta.clone() };
            let mut w = Vec::new();
            let f = FromAgent::File { name: b"t".to_vec(), meta: m.clone(), link: None, xattrs: None };
            write_frame(&mut w, &f).unwrap();
            let Some(FromAgent::File { meta: got, .. }) = read_frame(&mut w.as_slice(), &mut buf).unwrap() else {
                panic!("not a file")
            };
            assert_eq!((got.mtime, got.allocated < got.size), (mtime, allocated < m.size));
        }

        // Cut anywhere: refused, never half read (the values are checked by the server).
        assert!(wire[0] < 0x80, "a one-byte length");
        for cut in 2..wire.len() {
            let mut bad = wire[..cut].to_vec();
            bad[0] = (cut - 1) as u8;
            let e = read_frame::<FromAgent>(&mut bad.as_slice(), &mut buf).unwrap_err();
            assert!(e.to_string().starts_with("bad frame"), "{cut}: {e}");
        }
    }

    #[test]
    fn compression_only_when_it_pays() {
        let (lz, b) = maybe_compress(vec![0u8; 100_000]);
        assert!(lz.is_some() && b.len() < 1000);
        assert_eq!(decompress(lz, b).unwrap(), vec![0u8; 100_000]);
        let random: Vec<u8> = (0..10_000).map(|_| fastrand::u8(..)).collect();
        let (lz, b) = maybe_compress(random.clone());
        assert_eq!((lz, b), (None, random));
    }
}
