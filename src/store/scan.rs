//! Reading the frames of one data file in bounded chunks.
//!
//! Recovery used to read whole files into memory; a log can be far larger than the RAM of
//! the boards wrenmq runs on. [`scan`] streams a file through a [`Window`]: a buffer that
//! holds the bytes from the frame being read (or the resynchronisation point being tried)
//! to what has been read ahead, at most one [`CHUNK`] beyond the frame. A frame longer
//! than 16 chunks (1 MiB) has its CRC checked as it streams past first, without keeping
//! it, and is buffered only when it matches: a damaged length field (up to
//! [`MAX_RECORD_LEN`], 300 MB) costs reading, not memory. So memory during recovery is
//! bounded by the largest intact record (at least 1 MiB), not by the file.
//!
//! The result is exactly that of reading the whole file at once ([`scan_slice`], kept as
//! the oracle for tests and the `store` fuzz target):
//! - a complete frame whose CRC matches is applied;
//! - anything else in a v2 file resumes at the next complete frame after its first byte
//!   (a "damaged stretch"); a v1 file stops there (its frames have no sync marker);
//! - with no complete frame left, the rest of the file is a torn tail when it is an
//!   incomplete frame or all zeros (an interrupted write), else a damaged stretch.
//!
//! [`MAX_RECORD_LEN`]: record::MAX_RECORD_LEN

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use super::record::{self, decode_payload, FileKind, Frame, Record, SYNC};

/// Bytes read from a data file per `read` call during recovery.
pub const CHUNK: usize = 64 * 1024;

/// What reading one file found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Records handed over.
    pub records: u64,
    /// Frames whose CRC matched but whose payload this build cannot decode (skipped).
    pub undecodable: u64,
    /// Damaged stretches skipped.
    pub damaged: u64,
    /// Bytes of damaged stretches.
    pub lost_bytes: u64,
    /// Bytes of a torn tail (an interrupted write).
    pub torn_bytes: u64,
}

impl Scan {
    /// Nothing damaged and nothing torn.
    pub fn intact(&self) -> bool {
        self.damaged == 0 && self.lost_bytes == 0 && self.torn_bytes == 0
    }
}

/// Why a file could not be scanned.
#[derive(Debug)]
pub enum ScanError {
    /// Reading failed.
    Io(io::Error),
    /// The header is unusable (not a data file, unknown version, wrong kind): nothing in
    /// the file is readable.
    Header(String),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Io(e) => write!(f, "read failed: {e}"),
            ScanError::Header(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> ScanError {
        ScanError::Io(e)
    }
}

/// A sliding view of a file: bytes `[base, base + buf.len())`, of which those before
/// `keep` are no longer needed and are dropped before the next read.
struct Window<R> {
    src: R,
    buf: Vec<u8>,
    base: u64,
    keep: u64,
    eof: bool,
    chunk: usize,
    /// Largest the buffer has been (for tests).
    peak: usize,
}

impl<R: Read + Seek> Window<R> {
    fn new(src: R, chunk: usize) -> Window<R> {
        Window {
            src,
            buf: Vec::new(),
            base: 0,
            keep: 0,
            eof: false,
            chunk: chunk.max(1),
            peak: 0,
        }
    }

    /// Frames longer than this are checked before they are buffered.
    fn check_first_above(&self) -> u64 {
        16 * self.chunk as u64
    }

    /// Whether the `len` bytes at `from` (after `prefix`) have CRC-32 `crc`, read a chunk
    /// at a time and not kept; `None` when the file ends first. Leaves the buffer as it was.
    fn crc_matches(
        &mut self,
        from: u64,
        len: u64,
        prefix: &[u8],
        crc: u32,
    ) -> io::Result<Option<bool>> {
        let mut h = crc32fast::Hasher::new();
        h.update(prefix);
        let end = from + len;
        let have_end = self.base + self.buf.len() as u64;
        let mut at = from;
        if at < have_end {
            let lo = usize::try_from(at - self.base).unwrap_or(usize::MAX);
            let hi = usize::try_from(end.min(have_end) - self.base).unwrap_or(usize::MAX);
            h.update(&self.buf[lo..hi]);
            at = end.min(have_end);
        }
        if at < end {
            if self.eof {
                return Ok(None);
            }
            // The source is positioned at `have_end`; read on from there, then go back.
            let mut scratch = vec![0u8; self.chunk];
            while at < end {
                let want = usize::try_from(end - at).map_or(self.chunk, |n| n.min(self.chunk));
                let n = match self.src.read(&mut scratch[..want]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    break;
                }
                h.update(&scratch[..n]);
                at += n as u64;
            }
            self.src.seek(SeekFrom::Start(have_end))?;
            if at < end {
                return Ok(None);
            }
        }
        Ok(Some(h.finalize() == crc))
    }

    /// Bytes `[from, end)` of the file, fewer when the file ends first. `from` must not be
    /// before the last [`Window::release`] point.
    fn get(&mut self, from: u64, end: u64) -> io::Result<&[u8]> {
        debug_assert!(from >= self.keep);
        while self.base + (self.buf.len() as u64) < end && !self.eof {
            // Drop what is no longer needed before growing: the buffer holds at most the
            // bytes from `keep` to `end` plus one chunk of read-ahead.
            let unneeded = usize::try_from(self.keep.saturating_sub(self.base))
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            if unneeded > 0 {
                self.buf.drain(..unneeded);
                self.base += unneeded as u64;
            }
            let old = self.buf.len();
            self.buf.resize(old + self.chunk, 0);
            let n = loop {
                match self.src.read(&mut self.buf[old..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.truncate(old);
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(old + n);
            self.peak = self.peak.max(self.buf.len());
            self.eof = n == 0;
        }
        let have_end = self.base + self.buf.len() as u64;
        let lo = usize::try_from(from.min(have_end) - self.base).unwrap_or(usize::MAX);
        let hi = usize::try_from(end.min(have_end) - self.base).unwrap_or(usize::MAX);
        Ok(&self.buf[lo..hi.max(lo)])
    }

    /// Bytes before `at` will not be asked for again.
    fn release(&mut self, at: u64) {
        self.keep = self.keep.max(at);
    }

    /// The frame of a file of format `version` at `at`; `None` at the end of the file.
    fn frame(&mut self, version: u16, at: u64) -> io::Result<Option<Frame<'_>>> {
        let head_len = if version == 1 {
            record::V1_FRAME_HEADER_LEN
        } else {
            record::FRAME_HEADER_LEN
        } as u64;
        let head = self.get(at, at + head_len)?;
        if head.is_empty() {
            return Ok(None);
        }
        if (head.len() as u64) < head_len {
            // The rest of the file: the reader says whether it is torn or damaged.
            let head = self.get(at, at + head_len)?;
            return Ok(Some(record::read_frame_of(version, head)));
        }
        let len_at = if version == 1 { 0 } else { SYNC.len() };
        if version != 1 && head[..SYNC.len()] != SYNC {
            return Ok(Some(Frame::Corrupt));
        }
        let len = u32::from_le_bytes([
            head[len_at],
            head[len_at + 1],
            head[len_at + 2],
            head[len_at + 3],
        ]) as u64;
        if len > record::MAX_RECORD_LEN as u64 {
            return Ok(Some(Frame::Corrupt));
        }
        let crc_at = if version == 1 { 4 } else { 8 };
        let crc = u32::from_le_bytes([
            head[crc_at],
            head[crc_at + 1],
            head[crc_at + 2],
            head[crc_at + 3],
        ]);
        // v2's CRC covers the length field too.
        let len_field = [
            head[len_at],
            head[len_at + 1],
            head[len_at + 2],
            head[len_at + 3],
        ];
        let prefix: &[u8] = if version == 1 { &[] } else { &len_field };
        if head_len + len > self.check_first_above() {
            match self.crc_matches(at + head_len, len, prefix, crc)? {
                None => return Ok(Some(Frame::Torn)),
                Some(false) => return Ok(Some(Frame::Corrupt)),
                Some(true) => {}
            }
        }
        // Exactly the frame (or the rest of the file, if shorter): the reader's verdict on
        // it is the same as on the whole rest of the file.
        let bytes = self.get(at, at + head_len + len)?;
        Ok(Some(record::read_frame_of(version, bytes)))
    }

    /// Where the next complete v2 frame starts at or after `from`, if any.
    fn next_frame(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut at = from;
        loop {
            self.release(at);
            let chunk = self.chunk as u64;
            let bytes = self.get(at, at + chunk.max(SYNC.len() as u64))?;
            if bytes.len() < SYNC.len() {
                return Ok(None);
            }
            match bytes.windows(SYNC.len()).position(|w| w == SYNC) {
                Some(i) => {
                    let candidate = at + i as u64;
                    if matches!(self.frame(2, candidate)?, Some(Frame::Complete { .. })) {
                        return Ok(Some(candidate));
                    }
                    at = candidate + 1;
                }
                // A marker may straddle the end of what was looked at.
                None => at += (bytes.len() - (SYNC.len() - 1)) as u64,
            }
        }
    }

    /// Length of the file from `at` to its end, and whether those bytes are all zeros.
    fn rest(&mut self, at: u64) -> io::Result<(u64, bool)> {
        self.src.seek(SeekFrom::Start(at))?;
        self.buf.clear();
        self.base = at;
        self.keep = at;
        self.eof = false;
        let (mut len, mut zeros) = (0u64, true);
        loop {
            let bytes = self.get(at + len, at + len + self.chunk as u64)?;
            if bytes.is_empty() {
                return Ok((len, zeros));
            }
            zeros = zeros && bytes.iter().all(|&b| b == 0);
            len += bytes.len() as u64;
            self.release(at + len);
        }
    }
}

/// Reads every frame of a file (header included) of the given kind, reading `chunk` bytes
/// at a time, and hands each record to `apply`. See the module docs.
pub fn scan<R: Read + Seek>(
    src: R,
    kind: FileKind,
    chunk: usize,
    mut apply: impl FnMut(Record<'_>),
) -> Result<Scan, ScanError> {
    scan_measured(src, kind, chunk, |r, _| apply(r)).map(|(s, _)| s)
}

/// [`scan`], handing each record over with the offset of its frame in the file (where
/// on-disk queues find it again, see `reader.rs`).
pub fn scan_at<R: Read + Seek>(
    src: R,
    kind: FileKind,
    chunk: usize,
    apply: impl FnMut(Record<'_>, u64),
) -> Result<Scan, ScanError> {
    scan_measured(src, kind, chunk, apply).map(|(s, _)| s)
}

/// [`scan`], also returning the largest the read buffer has been.
pub(crate) fn scan_measured<R: Read + Seek>(
    src: R,
    kind: FileKind,
    chunk: usize,
    mut apply: impl FnMut(Record<'_>, u64),
) -> Result<(Scan, usize), ScanError> {
    let mut w = Window::new(src, chunk);
    let header_len = record::HEADER_LEN as u64;
    let version = record::check_header(w.get(0, header_len)?, kind).map_err(ScanError::Header)?;
    let mut s = Scan::default();
    let mut at = header_len;
    loop {
        w.release(at);
        let torn = match w.frame(version, at)? {
            None => break,
            Some(Frame::Complete { payload, len }) => {
                match decode_payload(payload) {
                    Ok(r) => {
                        apply(r, at);
                        s.records += 1;
                    }
                    // A frame whose CRC matches but that this build cannot read: skip it.
                    Err(_) => s.undecodable += 1,
                }
                at += len as u64;
                continue;
            }
            Some(frame) => frame == Frame::Torn,
        };
        // v1 frames carry no sync marker, so a v1 file cannot be read past damage.
        let next = if version >= 2 {
            w.next_frame(at + 1)?
        } else {
            None
        };
        match next {
            Some(next) => {
                s.damaged += 1;
                s.lost_bytes += next - at;
                at = next;
            }
            None => {
                let (rest, zeros) = w.rest(at)?;
                // An incomplete last frame, or zeros where a file was extended but its
                // data never written: an interrupted write, not damage.
                if torn || zeros {
                    s.torn_bytes = rest;
                } else {
                    s.damaged += 1;
                    s.lost_bytes += rest;
                }
                break;
            }
        }
    }
    Ok((s, w.peak))
}

/// The same as [`scan`] over a file held in memory, written the straightforward way: the
/// oracle the streaming reader is tested and fuzzed against.
#[cfg(any(test, fuzzing))]
pub fn scan_slice(
    bytes: &[u8],
    kind: FileKind,
    mut apply: impl FnMut(Record<'_>),
) -> Result<Scan, String> {
    let version = record::check_header(bytes, kind)?;
    let mut s = Scan::default();
    let mut at = record::HEADER_LEN;
    while at < bytes.len() {
        let frame = record::read_frame_of(version, &bytes[at..]);
        if let Frame::Complete { payload, len } = frame {
            match decode_payload(payload) {
                Ok(r) => {
                    apply(r);
                    s.records += 1;
                }
                Err(_) => s.undecodable += 1,
            }
            at += len;
            continue;
        }
        let next = if version >= 2 {
            record::next_frame(bytes, at + 1)
        } else {
            None
        };
        match next {
            Some(next) => {
                s.damaged += 1;
                s.lost_bytes += (next - at) as u64;
                at = next;
            }
            None => {
                let rest = &bytes[at..];
                if frame == Frame::Torn || rest.iter().all(|&b| b == 0) {
                    s.torn_bytes = rest.len() as u64;
                } else {
                    s.damaged += 1;
                    s.lost_bytes += rest.len() as u64;
                }
                break;
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn message(id: u64, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        Record::Message {
            id,
            qos: 1,
            retain: false,
            topic: "t",
            payload: &vec![id as u8; size],
        }
        .encode(&mut out);
        out
    }

    fn ids(file: &[u8], chunk: usize) -> (Scan, usize, Vec<u64>) {
        let mut seen = Vec::new();
        let (s, peak) = scan_measured(Cursor::new(file), FileKind::Log, chunk, |r, _| {
            if let Record::Message { id, .. } = r {
                seen.push(id);
            }
        })
        .unwrap();
        let mut whole = Vec::new();
        let w = scan_slice(file, FileKind::Log, |r| {
            if let Record::Message { id, .. } = r {
                whole.push(id);
            }
        })
        .unwrap();
        assert_eq!((s, &seen), (w, &whole), "streamed = whole (chunk {chunk})");
        (s, peak, seen)
    }

    #[test]
    fn a_damaged_length_field_costs_reading_not_memory() {
        // ~4 MB of records; frame 10's length now claims 268 MB (below the format's
        // maximum, so only its CRC tells it is damaged). Buffering the claimed frame would
        // hold the rest of the file.
        let mut file = record::header(FileKind::Log).to_vec();
        let mut starts = Vec::new();
        for id in 0..4000 {
            starts.push(file.len());
            file.extend_from_slice(&message(id, 1000));
        }
        file[starts[10] + 4..starts[10] + 8].copy_from_slice(&0x0FFF_FFFFu32.to_le_bytes());
        let (s, peak, seen) = ids(&file, CHUNK);
        assert_eq!(seen.len(), 3999);
        assert!(!seen.contains(&10));
        assert_eq!(
            (s.damaged, s.lost_bytes as usize),
            (1, starts[11] - starts[10])
        );
        assert!(
            peak <= 16 * CHUNK + 2 * CHUNK,
            "read buffer peaked at {peak} bytes for a {} byte file",
            file.len()
        );
        // Small chunks: the same result, and the check-first path at every size.
        for chunk in [7, 64, 1000] {
            let (_, peak, seen) = ids(&file, chunk);
            assert_eq!(seen.len(), 3999);
            assert!(
                peak <= 16 * chunk + 2 * chunk + 1012,
                "chunk {chunk}: {peak}"
            );
        }
    }

    #[test]
    fn records_longer_than_the_check_first_size_are_read_and_a_torn_one_is_a_torn_tail() {
        let mut file = record::header(FileKind::Log).to_vec();
        file.extend_from_slice(&message(1, 3 << 20));
        file.extend_from_slice(&message(2, 10));
        let big = message(3, 2 << 20);
        file.extend_from_slice(&big[..big.len() - 1]);
        let (s, _, seen) = ids(&file, CHUNK);
        assert_eq!(seen, [1, 2]);
        assert_eq!((s.torn_bytes as usize, s.damaged), (big.len() - 1, 0));
        // A damaged byte inside the big one: skipped, the rest kept.
        let at = record::HEADER_LEN + 1_000_000;
        file[at] ^= 1;
        let (s, _, seen) = ids(&file, CHUNK);
        assert_eq!((seen, s.damaged), (vec![2], 1));
    }
}
