//! Reading single records back from the data files by position: how queues kept on disk
//! get their messages' topic and payload when they are delivered (issue 11).
//!
//! A queued message that is already in a data file is kept in memory as a [`Location`]
//! (which file, which offset) instead of a copy; [`Reader::frame`] reads the frame there
//! with a positional read (`pread`), checks its CRC and hands the payload over. Reads go
//! through a read-ahead buffer of [`READ_AHEAD`] bytes: a queue is drained in the order it
//! was written, so consecutive messages usually sit next to each other in the log and one
//! `pread` serves dozens of them, and a message queued for several sessions that drain at
//! the same time is read from the disk once. A few files stay open ([`OPEN_FILES`]).
//!
//! The loop thread reads while the writer thread appends: a location is handed out only
//! for batches the writer has written (see `Store::take_located`), and a frame that looks
//! cut short in the buffer (read before the writer got further) is read again.
//!
//! What the broker sees is the [`FrameSource`] trait, so that it reads no files itself
//! (tests give it a fake).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::files;
use super::record::{self, FileKind, Frame};

/// Bytes read per `pread`: dozens of small messages.
pub const READ_AHEAD: usize = 64 * 1024;
/// Data files kept open for reading.
pub const OPEN_FILES: usize = 8;

/// Where a frame starts: a data file (its index and whether it is the snapshot or the log
/// of that index) and the offset of the frame in it, packed in 64 bits (24 for the file,
/// 40 for the offset: files up to 1 TiB, 8 million compactions). Never 0 (offset 0 is the
/// file header), so 0 can mean "nowhere" where a plain `u64` holds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location(u64);

/// Why a frame could not be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Opening or reading the file failed.
    Io(io::ErrorKind),
    /// No intact frame at that offset (the file was damaged or shortened since).
    Damaged,
    /// The file header is not one this build reads.
    BadHeader,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(kind) => write!(f, "read failed: {kind}"),
            ReadError::Damaged => f.write_str("no intact record at that offset"),
            ReadError::BadHeader => f.write_str("unreadable file header"),
        }
    }
}

/// Reads frames by [`Location`]: the narrow interface the broker is given.
pub trait FrameSource: Send {
    /// The payload of the frame at `at` and where the next frame starts.
    fn frame(&mut self, at: Location) -> Result<(&[u8], Location), ReadError>;

    /// Nothing is expected to be read soon (a queue was drained): give back open files
    /// (a compaction may have deleted them; an open handle would keep their space in
    /// use) and buffers.
    fn release(&mut self) {}
}

const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

impl Location {
    /// The frame at `offset` of snapshot (`snapshot`) or log `index`; `None` when the
    /// numbers do not fit (a file past 1 TiB, or 8 million compactions).
    pub fn new(index: u64, snapshot: bool, offset: u64) -> Option<Location> {
        let key = index.checked_mul(2)? | u64::from(snapshot);
        if key >> (64 - OFFSET_BITS) != 0
            || offset > OFFSET_MASK
            || offset < record::HEADER_LEN as u64
        {
            return None;
        }
        Some(Location(key << OFFSET_BITS | offset))
    }

    /// A location from [`Location::raw`]; `None` for 0 and other offsets inside the file
    /// header (which callers use as markers).
    pub fn from_raw(raw: u64) -> Option<Location> {
        (raw & OFFSET_MASK >= record::HEADER_LEN as u64).then_some(Location(raw))
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    /// The file, as one number (see [`Location::key_of`]).
    pub fn file_key(self) -> u32 {
        // 24 bits by construction.
        (self.0 >> OFFSET_BITS) as u32
    }

    pub fn offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    /// The key of data file `f`, as [`Location::file_key`] numbers files.
    pub fn key_of(f: &files::DataFile) -> u64 {
        f.index.saturating_mul(2) | u64::from(f.is_snapshot)
    }

    /// `len` bytes further in the same file.
    pub fn plus(self, len: u64) -> Option<Location> {
        let key = u64::from(self.file_key());
        Location::new(key >> 1, key & 1 == 1, self.offset().checked_add(len)?)
    }
}

/// The store's [`FrameSource`]: positional reads of the data directory's files.
pub struct Reader {
    dir: PathBuf,
    /// Open files: key, handle, format version. Most recently opened last.
    files: Vec<(u32, File, u16)>,
    /// Bytes `[buf_at, buf_at + buf.len())` of file `buf_key`.
    buf: Vec<u8>,
    buf_key: u32,
    buf_at: u64,
}

impl Reader {
    pub fn new(dir: PathBuf) -> Reader {
        Reader {
            dir,
            files: Vec::new(),
            buf: Vec::new(),
            buf_key: u32::MAX,
            buf_at: 0,
        }
    }

    /// The open file with `key` and its format version, opening it (and closing the
    /// oldest) when needed.
    fn file(&mut self, key: u32) -> Result<(&File, u16), ReadError> {
        if let Some(i) = self.files.iter().position(|(k, ..)| *k == key) {
            let (_, f, v) = &self.files[i];
            return Ok((f, *v));
        }
        let (index, snapshot) = (u64::from(key >> 1), key & 1 == 1);
        let (path, kind) = if snapshot {
            (files::snapshot_path(&self.dir, index), FileKind::Snapshot)
        } else {
            (files::log_path(&self.dir, index), FileKind::Log)
        };
        let file = File::open(path).map_err(|e| ReadError::Io(e.kind()))?;
        let mut head = [0u8; record::HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| ReadError::Io(e.kind()))?;
        let version = record::check_header(&head, kind).map_err(|_| ReadError::BadHeader)?;
        if self.files.len() >= OPEN_FILES {
            self.files.remove(0);
        }
        self.files.push((key, file, version));
        let (_, f, v) = &self.files[self.files.len() - 1];
        Ok((f, *v))
    }

    /// Fills the buffer with up to `want` bytes of file `key` from `at`.
    fn fill(&mut self, key: u32, at: u64, want: usize) -> Result<u16, ReadError> {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() > 4 * READ_AHEAD && want <= READ_AHEAD {
            buf = Vec::new(); // one huge message does not pin its buffer
        }
        buf.resize(want, 0);
        let (file, version) = match self.file(key) {
            Ok(f) => f,
            Err(e) => {
                self.buf_key = u32::MAX;
                return Err(e);
            }
        };
        let mut n = 0;
        while n < want {
            match file.read_at(&mut buf[n..], at + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf_key = u32::MAX;
                    return Err(ReadError::Io(e.kind()));
                }
            }
        }
        buf.truncate(n);
        self.buf = buf;
        self.buf_key = key;
        self.buf_at = at;
        Ok(version)
    }

    /// Where the frame at the start of the buffer is: payload start and frame length;
    /// `Err(Some(len))` when the buffer ends inside it (`len`: the whole frame, if known).
    fn bounds(&self, version: u16, from: usize) -> Result<(usize, usize), Option<usize>> {
        let buf = &self.buf[from..];
        if buf.is_empty() {
            return Err(None);
        }
        match record::read_frame_of(version, buf) {
            Frame::Complete { payload, len } => Ok((from + len - payload.len(), len)),
            Frame::Torn => {
                let head = if version == 1 {
                    record::V1_FRAME_HEADER_LEN
                } else {
                    record::FRAME_HEADER_LEN
                };
                let at = head - 8;
                Err(buf
                    .get(at..at + 4)
                    .map(|b| head + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize))
            }
            Frame::Corrupt => Err(Some(0)),
        }
    }
}

impl FrameSource for Reader {
    fn release(&mut self) {
        self.files.clear();
        self.buf = Vec::new();
        self.buf_key = u32::MAX;
    }

    fn frame(&mut self, at: Location) -> Result<(&[u8], Location), ReadError> {
        let (key, offset) = (at.file_key(), at.offset());
        let end = self.buf_at + self.buf.len() as u64;
        let mut found = None;
        if key == self.buf_key && offset >= self.buf_at && offset < end {
            // Open already, since the buffer came from it.
            let version = self.file(key)?.1;
            // Fits: `offset - buf_at` < buf.len().
            let from = (offset - self.buf_at) as usize;
            match self.bounds(version, from) {
                Ok(b) => found = Some(b),
                Err(Some(0)) => return Err(ReadError::Damaged),
                Err(_) => {} // cut short by the buffer's end: read again from here
            }
        }
        if found.is_none() {
            let version = self.fill(key, offset, READ_AHEAD)?;
            found = match self.bounds(version, 0) {
                Ok(b) => Some(b),
                Err(Some(len)) if len > self.buf.len() && len <= record::MAX_RECORD_LEN => {
                    // A frame longer than the read-ahead: read all of it.
                    let version = self.fill(key, offset, len)?;
                    self.bounds(version, 0).ok()
                }
                Err(_) => None,
            };
        }
        let (start, len) = found.ok_or(ReadError::Damaged)?;
        let from = usize::try_from(offset - self.buf_at).unwrap_or(0);
        let payload_end = from + len;
        let next = at.plus(len as u64).ok_or(ReadError::Damaged)?;
        Ok((&self.buf[start..payload_end], next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;
    use std::io::Write;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wrenmq-reader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn message(id: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        Record::Message {
            id,
            qos: 1,
            retain: false,
            topic: "t/x",
            payload: &vec![id as u8; len],
        }
        .encode(&mut out);
        out
    }

    fn id_at(r: &mut Reader, at: Location) -> (u64, usize, Location) {
        let (payload, next) = r.frame(at).unwrap();
        match record::decode_payload(payload).unwrap() {
            Record::Message { id, payload, .. } => (id, payload.len(), next),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn locations_pack_file_and_offset_and_reject_what_does_not_fit() {
        let l = Location::new(7, true, 4096).unwrap();
        assert_eq!((l.file_key(), l.offset()), (15, 4096));
        assert_eq!(Location::from_raw(l.raw()), Some(l));
        assert_eq!(Location::from_raw(0), None);
        assert_eq!(Location::new(1, false, 0), None, "offset 0 is the header");
        assert_eq!(Location::new(1, false, 11), None, "so is 11");
        assert_eq!(Location::from_raw(1), None);
        assert_eq!(Location::new(1, false, 1 << 40), None);
        assert_eq!(Location::new(1 << 23, false, 12), None);
        assert!(Location::new((1 << 23) - 1, true, (1 << 40) - 1).is_some());
    }

    #[test]
    fn frames_read_back_by_position_across_read_ahead_boundaries() {
        let dir = tempdir("positions");
        let mut file = record::header(FileKind::Log).to_vec();
        let mut at = Vec::new();
        // Small frames, then one larger than the read-ahead, then small ones again.
        for (id, len) in (1..300u64).map(|i| (i, if i == 150 { 3 * READ_AHEAD } else { 400 })) {
            at.push((id, len, file.len() as u64));
            file.extend_from_slice(&message(id, len));
        }
        std::fs::write(files::log_path(&dir, 3), &file).unwrap();
        let mut r = Reader::new(dir.clone());
        // In order, following `next`, and then out of order.
        let mut loc = Location::new(3, false, at[0].2).unwrap();
        for &(id, len, _) in &at[..at.len() - 1] {
            let (got, got_len, next) = id_at(&mut r, loc);
            assert_eq!((got, got_len), (id, len));
            loc = next;
        }
        for &(id, len, off) in at.iter().rev().step_by(7) {
            let (got, got_len, _) = id_at(&mut r, Location::new(3, false, off).unwrap());
            assert_eq!((got, got_len), (id, len));
        }
        // Not a frame start, a missing file: errors, not panics.
        let inside = Location::new(3, false, at[5].2 + 3).unwrap();
        assert_eq!(r.frame(inside).unwrap_err(), ReadError::Damaged);
        let missing = Location::new(4, false, 12).unwrap();
        assert!(matches!(r.frame(missing), Err(ReadError::Io(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn release_lets_go_of_files_a_compaction_deleted() {
        let dir = tempdir("release");
        let mut file = record::header(FileKind::Log).to_vec();
        file.extend_from_slice(&message(1, 10));
        std::fs::write(files::log_path(&dir, 2), &file).unwrap();
        let mut r = Reader::new(dir.clone());
        let at = Location::new(2, false, record::HEADER_LEN as u64).unwrap();
        assert_eq!(id_at(&mut r, at).0, 1);
        std::fs::remove_file(files::log_path(&dir, 2)).unwrap();
        r.release();
        assert!(r.files.is_empty() && r.buf.capacity() == 0);
        assert!(matches!(r.frame(at), Err(ReadError::Io(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_frame_appended_after_the_buffer_was_filled_is_read_again() {
        let dir = tempdir("append");
        let path = files::log_path(&dir, 1);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&record::header(FileKind::Log)).unwrap();
        let first = message(1, 10);
        file.write_all(&first).unwrap();
        let mut r = Reader::new(dir.clone());
        let loc = Location::new(1, false, record::HEADER_LEN as u64).unwrap();
        let (id, _, next) = id_at(&mut r, loc);
        assert_eq!(id, 1);
        // The writer appends half a frame, then the rest.
        let second = message(2, 10);
        file.write_all(&second[..5]).unwrap();
        assert_eq!(r.frame(next).unwrap_err(), ReadError::Damaged);
        file.write_all(&second[5..]).unwrap();
        assert_eq!(id_at(&mut r, next).0, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
