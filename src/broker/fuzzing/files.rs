//! The data files of the `broker` harness: byte vectors by `Location::file_key`, read
//! through the same `FrameSource` interface as the store's reader, so that queues move to
//! disk, snapshots point into older files and restarts rebuild disk entries as in the
//! real broker. Files are never deleted here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::record::{self, read_frame, FileKind, Frame};
use crate::store::{FrameSource, Location, ReadError};

#[derive(Clone, Default)]
pub(super) struct Files {
    files: Arc<Mutex<HashMap<u32, Vec<u8>>>>,
    /// The payload of the last frame read (a `FrameSource` lends it out).
    last: Vec<u8>,
}

impl Files {
    /// Appends `bytes` to snapshot or log `index` (created with its header); where they
    /// start.
    pub(super) fn append(&self, index: u64, snapshot: bool, bytes: &[u8]) -> Option<Location> {
        let key = Location::new(index, snapshot, record::HEADER_LEN as u64)?.file_key();
        let mut files = self.files.lock().ok()?;
        let kind = if snapshot {
            FileKind::Snapshot
        } else {
            FileKind::Log
        };
        let file = files
            .entry(key)
            .or_insert_with(|| record::header(kind).to_vec());
        let at = Location::new(index, snapshot, file.len() as u64);
        file.extend_from_slice(bytes);
        at
    }

    /// The frames of snapshot or log `index`, each with its location.
    pub(super) fn frames(&self, index: u64, snapshot: bool) -> Vec<(Location, Vec<u8>)> {
        let Some(key) = Location::new(index, snapshot, record::HEADER_LEN as u64) else {
            return Vec::new();
        };
        let files = self.files.lock().expect("not poisoned");
        let Some(file) = files.get(&key.file_key()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut at = record::HEADER_LEN;
        while at < file.len() {
            let Frame::Complete { payload, len } = read_frame(&file[at..]) else {
                panic!("the journal wrote a bad frame at {at}");
            };
            let loc = Location::new(index, snapshot, at as u64).expect("small offsets");
            out.push((loc, payload.to_vec()));
            at += len;
        }
        out
    }
}

impl FrameSource for Files {
    fn frame(&mut self, at: Location) -> Result<(&[u8], Location), ReadError> {
        let files = self.files.lock().map_err(|_| ReadError::Damaged)?;
        let file = files.get(&at.file_key()).ok_or(ReadError::Damaged)?;
        let from = usize::try_from(at.offset()).map_err(|_| ReadError::Damaged)?;
        let Frame::Complete { payload, len } = read_frame(file.get(from..).unwrap_or(&[])) else {
            return Err(ReadError::Damaged);
        };
        self.last = payload.to_vec();
        drop(files);
        let next = at.plus(len as u64).ok_or(ReadError::Damaged)?;
        Ok((&self.last, next))
    }
}
