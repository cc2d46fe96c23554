//! Harness body of the `store` fuzz target (registered in `crate::fuzzing`): the loader
//! that reads data files back at start-up, fed arbitrary bytes.
//!
//! Byte 0 picks the file kind (bit 0: log or snapshot) and the mode (bits 1-2); byte 1
//! picks the read chunk (1 to 64 bytes, so that frames straddle chunk edges everywhere).
//! Properties, by mode:
//! - 0 (`raw`): the rest is a whole file. Reading it in chunks never panics and gives
//!   exactly the records and the counts of reading it whole ([`scan::scan_slice`]).
//! - 1 (`body`): the same, with a valid current header in front of the rest.
//! - 2 (`embedded`): the rest describes valid records with garbage before, between and
//!   after them (garbage without a sync marker, so that no frame can start in it, plus
//!   optionally a torn copy of a frame at the end); exactly those records are recovered,
//!   in order, however the garbage looks.
//! - 3 (`directory`): the rest is written as `wrenmq-1.log` or `wrenmq-1.snap` in a
//!   scratch directory and the real start-up recovery (`files::recover`) runs on it: it
//!   never fails or panics, and hands over the records the oracle reads (none when the
//!   header is unusable; the file is then set aside).
//!
//! Seeds (`fuzz/corpus/store/`): the golden files of `tests/data/store/` behind a two-byte
//! prefix (`00 07` log, `01 07` snapshot, `00 03` v1 log, `02 02` a log's body, `06 05` /
//! `07 05` through `recover`), a damaged log through `recover`, and two `embedded` inputs.

use std::io::Cursor;
use std::path::PathBuf;

use super::files;
use super::record::{self, FileKind, Record, SYNC};
use super::scan::{self, Scan};

/// Records as comparable values: their framed bytes.
fn framed(r: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out
}

/// Reads `file` in `chunk`-byte steps and whole; panics unless both agree. Returns what
/// was read.
fn read_both(file: &[u8], kind: FileKind, chunk: usize) -> Result<(Scan, Vec<Vec<u8>>), String> {
    let mut streamed = Vec::new();
    let s = scan::scan(Cursor::new(file), kind, chunk, |r| {
        streamed.push(framed(&r))
    });
    let mut whole = Vec::new();
    let w = scan::scan_slice(file, kind, |r| whole.push(framed(&r)));
    match (s, w) {
        (Ok(s), Ok(w)) => {
            assert_eq!(s, w, "counts differ (chunk {chunk})");
            assert!(streamed == whole, "records differ (chunk {chunk})");
            assert!(s.records as usize == whole.len());
            Ok((s, whole))
        }
        (Err(scan::ScanError::Header(a)), Err(b)) => {
            assert_eq!(a, b);
            Err(b)
        }
        (s, w) => panic!("streamed {s:?}, whole {w:?}"),
    }
}

/// Garbage from the fuzzer's bytes with every sync marker broken, so that no frame can
/// start inside it (nor straddle its end: a frame's first byte is the marker's first).
fn garbage(bytes: &[u8]) -> Vec<u8> {
    let mut g = bytes.to_vec();
    let mut i = 0;
    while i + SYNC.len() <= g.len() {
        if g[i..i + SYNC.len()] == SYNC {
            g[i] ^= 0x01;
        }
        i += 1;
    }
    g
}

/// A cursor that yields zeros once the input runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// Mode 2: a file of valid records among garbage; returns the file and the records.
fn embedded(kind: FileKind, input: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut inp = Input(input);
    let mut file = record::header(kind).to_vec();
    let mut expected = Vec::new();
    let topics = ["a", "a/b", "", "sensors/+/x", "\u{e9}t\u{e9}"];
    while !inp.0.is_empty() {
        let n = usize::from(inp.u8() % 64);
        file.extend_from_slice(&garbage(inp.take(n)));
        let tag = inp.u8();
        let id = (u64::from(inp.u8()) << 40) | u64::from(inp.u8());
        let r = match tag % 4 {
            0 => Record::Message {
                id,
                qos: tag >> 6,
                retain: tag & 4 != 0,
                topic: topics[usize::from(tag >> 2) % topics.len()],
                payload: inp.take(usize::from(inp.0.first().copied().unwrap_or(0))),
            },
            1 => Record::Dequeue { session: id },
            2 => Record::SessionUser {
                session: id,
                username: (tag & 8 != 0).then_some(topics[usize::from(tag >> 4) % topics.len()]),
            },
            _ => Record::MessageExtra {
                id,
                expiry: u32::from(tag),
                written_at: id,
                properties: inp.take(usize::from(tag >> 3)),
            },
        };
        let bytes = framed(&r);
        file.extend_from_slice(&bytes);
        expected.push(bytes);
    }
    // Sometimes a torn last frame: a write a power cut interrupted. Markers inside its
    // payload are broken too: a complete frame inside a torn one's payload is found (the
    // reader resumes at any complete frame) and is not what this property is about.
    if let Some(last) = expected.last() {
        if input.len().is_multiple_of(3) {
            let cut = input.len() % last.len();
            let head = cut.min(SYNC.len());
            file.extend_from_slice(&last[..head]);
            file.extend_from_slice(&garbage(&last[head..cut]));
        }
    }
    (file, expected)
}

/// Mode 3: the start-up recovery over a directory holding only this file.
fn directory(file: &[u8], kind: FileKind, oracle: &Result<(Scan, Vec<Vec<u8>>), String>) {
    let dir = scratch_dir();
    let _ = std::fs::remove_dir_all(&dir);
    files::create_dir(&dir).expect("scratch directory");
    let path = match kind {
        FileKind::Log => files::log_path(&dir, 1),
        FileKind::Snapshot => files::snapshot_path(&dir, 1),
    };
    std::fs::write(&path, file).expect("write the file");
    let mut got = Vec::new();
    let report =
        files::recover(&dir, |r| got.push(framed(&r))).expect("recovery fails only on I/O errors");
    match oracle {
        Ok((_, records)) => assert!(got == *records, "recovery read other records"),
        Err(_) => {
            assert!(got.is_empty());
            assert_eq!(report.set_aside.len(), 1, "an unreadable file is set aside");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "wrenmq-fuzz-store-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// Target `store`: see the module docs.
pub fn loader(data: &[u8]) {
    let mut inp = Input(data);
    let flags = inp.u8();
    let chunk = 1 + usize::from(inp.u8() % 64);
    let kind = if flags & 1 == 0 {
        FileKind::Log
    } else {
        FileKind::Snapshot
    };
    let rest = inp.0;
    match (flags >> 1) & 3 {
        0 => {
            let _ = read_both(rest, kind, chunk);
        }
        1 => {
            let mut file = record::header(kind).to_vec();
            file.extend_from_slice(rest);
            let _ = read_both(&file, kind, chunk);
        }
        2 => {
            let (file, expected) = embedded(kind, rest);
            let (_, got) = read_both(&file, kind, chunk).expect("a valid header");
            assert!(got == expected, "records among garbage were not recovered");
        }
        _ => {
            let oracle = read_both(rest, kind, chunk);
            directory(rest, kind, &oracle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_among_garbage_with_markers_broken_are_all_recovered() {
        // Garbage full of sync markers and zeros between records, a torn tail at the end.
        let mut data = vec![4, 3];
        for i in 0..40u8 {
            data.push(10 + i);
            for _ in 0..(10 + i) / 4 {
                data.extend_from_slice(&SYNC);
            }
            data.extend_from_slice(&[0; 2]);
            data.extend_from_slice(&[i.wrapping_mul(37), i, 7, 9, 1, 2, 3, 4, 5]);
        }
        let (file, expected) = embedded(FileKind::Snapshot, &data[2..]);
        assert!(expected.len() >= 20, "{}", expected.len());
        let (scan, got) = read_both(&file, FileKind::Snapshot, 3).unwrap();
        assert_eq!(got, expected);
        assert!(scan.damaged > 30, "the garbage was there: {scan:?}");
        loader(&data);
    }

    #[test]
    fn garbage_never_holds_a_sync_marker() {
        let g = garbage(&[
            0xD9, 0x5C, 0xA7, 0x3E, 0x5C, 0xA7, 0x3E, 0xD9, 0xD9, 0x5C, 0xA7, 0x3E,
        ]);
        assert!(!g.windows(4).any(|w| w == SYNC));
    }
}
