//! Queues kept on disk (issue 11): with persistence on, a message queued for an offline
//! session is already in the data files, so the queue keeps where it is (a
//! [`DiskEntry`], 16 bytes) instead of the message, and reads it back when the client
//! is there to receive it.
//!
//! A session's queue is, in order: the first `loaded` entries of its in-memory queue
//! (read back from disk, waiting for the inflight window), its [`DiskQueue`], then the
//! rest of its in-memory queue (messages whose records the writer has not written yet,
//! and messages that cannot go to disk: those with MQTT 5 subscription identifiers,
//! which the log does not keep per delivery). See `Session` for the operations.
//!
//! - Live: the journal learns where each `Message` record landed once the writer has
//!   written its batch (`Broker::handle_written`) and stores it in the message; offline
//!   sessions that queued messages since ("spill" list) then swap their in-memory entries
//!   for disk entries, front first, and the messages are freed once nothing else holds
//!   them. Online sessions keep their queue in memory (it is being drained), and so does
//!   a bridge's session while its uplink is up and its queue is short
//!   ([`BRIDGE_IN_MEMORY`]): spilled, every forwarded message was read back from disk
//!   milliseconds after it was written.
//! - Restart: recovery knows where every record is, so queues are rebuilt as disk
//!   entries without reading a payload into memory.
//! - Snapshots write a disk entry as an `EnqueueAt` record (its location, no payload)
//!   and tell the store which files such records point into; the store keeps those files
//!   (see `store/mod.rs`). So compaction never copies queued payloads, and disk use is
//!   the live state plus the old logs that queued messages still live in.
//! - Delivery: the pump reads ahead up to the client's free inflight window (at least
//!   [`LOAD_AHEAD`] entries) through a [`Loader`], whose reads go through the store's
//!   read-ahead buffer (one `pread` per 64 KiB of queue). A message several sessions
//!   queued is read once while any of them still holds it (a small cache of weak
//!   references by location).
//! - A record that cannot be read back (the file was damaged or removed by hand) is
//!   dropped from the queue with a log line: the same policy as damage found at
//!   recovery.
//!
//! `memory_limit` counts the 16 bytes of each disk entry (through the message meter, tied
//! to the entry's life like a message's bytes), not the payload on disk.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use log::warn;

use super::journal::WallClock;
use super::message::{Message, Meter};
use super::session::{Queued, Session, Spill};
use super::{Broker, SessionKey};
use crate::protocol::QoS;
use crate::store::record::decode_payload;
use crate::store::{FrameSource, Location, ReadError, Record};

/// A bridge's queue stays in memory while its uplink is up and it holds at most this many
/// messages and [`BRIDGE_IN_MEMORY_BYTES`]; beyond, or with the uplink down, it goes to
/// disk like an offline session's.
pub const BRIDGE_IN_MEMORY: usize = 4096;
pub const BRIDGE_IN_MEMORY_BYTES: usize = 4 << 20;

/// Entries read ahead per pump step at least, so that one `pread` serves many.
pub const LOAD_AHEAD: usize = 32;
/// Slots of the cache of recently read messages.
const CACHE_SLOTS: usize = 256;

const QOS_MASK: u8 = 0x03;
const RETAIN: u8 = 0x04;
const EXTRA: u8 = 0x08;

/// A queued message that lives in the data files: where its `Message` record is, the
/// bytes it counts against `max_queued_bytes`, and this delivery's QoS and RETAIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskEntry {
    at: u64,
    bytes: u32,
    flags: u8,
}

/// What one disk entry costs in memory.
pub const ENTRY_COST: usize = std::mem::size_of::<DiskEntry>();

impl DiskEntry {
    /// `extra`: the message's `MessageExtra` record follows its `Message` record.
    pub fn new(at: Location, bytes: usize, qos: QoS, retain: bool, extra: bool) -> Option<Self> {
        Some(DiskEntry {
            at: at.raw(),
            bytes: u32::try_from(bytes).ok()?,
            flags: qos as u8 | if retain { RETAIN } else { 0 } | if extra { EXTRA } else { 0 },
        })
    }

    /// The disk entry for an in-memory one, once its message has a location and when
    /// nothing is lost by the swap (no subscription identifiers).
    pub fn of_queued(q: &Queued) -> Option<DiskEntry> {
        if !q.sub_ids.is_empty() {
            return None;
        }
        let at = Location::from_raw(q.msg.loc.load(Ordering::Relaxed))?;
        let extra = !q.msg.properties.is_empty() || q.msg.expires_at.is_some();
        DiskEntry::new(at, q.msg.stored_len(), q.qos, q.retain, extra)
    }

    pub fn location(&self) -> Option<Location> {
        Location::from_raw(self.at)
    }

    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    pub fn qos(&self) -> QoS {
        QoS::from_u8(self.flags & QOS_MASK).unwrap_or(QoS::AtLeastOnce)
    }

    pub fn retain(&self) -> bool {
        self.flags & RETAIN != 0
    }

    pub fn extra(&self) -> bool {
        self.flags & EXTRA != 0
    }
}

/// A session's disk entries, counted in the broker's meter while they live.
#[derive(Debug, Default)]
pub struct DiskQueue {
    entries: VecDeque<DiskEntry>,
    meter: Option<Arc<Meter>>,
}

impl DiskQueue {
    pub fn push_back(&mut self, e: DiskEntry, meter: &Arc<Meter>) {
        self.meter
            .get_or_insert_with(|| meter.clone())
            .add(ENTRY_COST);
        self.entries.push_back(e);
    }

    pub fn pop_front(&mut self) -> Option<DiskEntry> {
        let e = self.entries.pop_front()?;
        if let Some(m) = &self.meter {
            m.sub(ENTRY_COST);
        }
        if self.entries.is_empty() && self.entries.capacity() > 64 {
            self.entries = VecDeque::new();
        }
        Some(e)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &DiskEntry> {
        self.entries.iter()
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.sub(self.entries.len() * ENTRY_COST);
        }
    }
}

/// Why a disk entry could not be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    Read(ReadError),
    /// The frame is intact but not the message record it should be.
    NotAMessage,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read(e) => e.fmt(f),
            LoadError::NotAMessage => f.write_str("the record there is not a message"),
        }
    }
}

/// Reads disk entries back into messages (see the module docs).
pub struct Loader {
    source: Box<dyn FrameSource>,
    cache: Vec<(u64, Weak<Message>)>,
    /// Entries that could not be read back, since start.
    pub failed: u64,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("failed", &self.failed)
            .finish()
    }
}

impl Loader {
    pub fn new(source: Box<dyn FrameSource>) -> Loader {
        Loader {
            source,
            cache: vec![(0, Weak::new()); CACHE_SLOTS],
            failed: 0,
        }
    }

    /// The delivery `e` stands for; `None` (logged) when its record cannot be read.
    pub fn load(
        &mut self,
        e: DiskEntry,
        meter: &Arc<Meter>,
        wall: Option<WallClock>,
        now: Instant,
    ) -> Option<Queued> {
        let slot = (e.at ^ (e.at >> 21)) as usize % CACHE_SLOTS;
        let cached = match &self.cache[slot] {
            (at, m) if *at == e.at => m.upgrade(),
            _ => None,
        };
        let msg = match cached {
            Some(m) => m,
            None => match self.read(e, meter, wall, now) {
                Ok(m) => {
                    self.cache[slot] = (e.at, Arc::downgrade(&m));
                    m
                }
                Err(why) => {
                    self.failed += 1;
                    if self.failed == 1 || self.failed.is_power_of_two() {
                        warn!(
                            "a queued message could not be read back from the data files ({why}); dropped ({} so far)",
                            self.failed
                        );
                    }
                    return None;
                }
            },
        };
        Some(Queued {
            msg,
            qos: e.qos(),
            retain: e.retain(),
            sub_ids: Box::default(),
        })
    }

    /// The message whose `Message` record is at `at` (with its `MessageExtra` right after
    /// it when `extra`), read back into memory (retained and in-flight messages at replay).
    pub fn message(
        &mut self,
        at: Location,
        extra: bool,
        meter: &Arc<Meter>,
        wall: Option<WallClock>,
        now: Instant,
    ) -> Result<Arc<Message>, LoadError> {
        let e =
            DiskEntry::new(at, 0, QoS::AtMostOnce, false, extra).ok_or(LoadError::NotAMessage)?;
        self.read(e, meter, wall, now)
    }

    fn read(
        &mut self,
        e: DiskEntry,
        meter: &Arc<Meter>,
        wall: Option<WallClock>,
        now: Instant,
    ) -> Result<Arc<Message>, LoadError> {
        let at = e.location().ok_or(LoadError::NotAMessage)?;
        let (frame, next) = self.source.frame(at).map_err(LoadError::Read)?;
        let Ok(Record::Message {
            id,
            qos,
            retain,
            topic,
            payload,
        }) = decode_payload(frame)
        else {
            return Err(LoadError::NotAMessage);
        };
        let qos = QoS::from_u8(qos).unwrap_or(QoS::AtLeastOnce);
        let msg = if e.extra() {
            // The next read reuses the buffer this frame is in: copy it out first.
            let (topic, payload) = (topic.to_owned(), payload.to_vec());
            let (frame, _) = self.source.frame(next).map_err(LoadError::Read)?;
            let Ok(Record::MessageExtra {
                id: extra_id,
                expiry,
                written_at,
                properties,
            }) = decode_payload(frame)
            else {
                return Err(LoadError::NotAMessage);
            };
            if extra_id != id {
                return Err(LoadError::NotAMessage);
            }
            let expires_at = expires_at(expiry, written_at, wall, now);
            Message::metered(
                meter,
                &topic,
                &payload,
                qos,
                retain,
                properties.into(),
                expires_at,
            )
        } else {
            Message::metered(meter, topic, payload, qos, retain, Box::default(), None)
        };
        msg.id.store(id, Ordering::Relaxed);
        msg.loc.store(at.raw(), Ordering::Relaxed);
        Ok(msg)
    }
}

/// The expiry instant of a message whose `MessageExtra` says `expiry` seconds were left
/// at `written_at` (Unix ms; 0 unknown: counts from now). `None`: it never expires.
pub fn expires_at(
    expiry: u32,
    written_at: u64,
    wall: Option<WallClock>,
    now: Instant,
) -> Option<Instant> {
    if expiry == u32::MAX {
        return None;
    }
    let elapsed = match wall {
        Some(w) if written_at != 0 => w.unix_ms(now).saturating_sub(written_at),
        _ => 0,
    };
    let total = Duration::from_secs(u64::from(expiry));
    // Expired already: due now, so never delivered. Checked: a deadline past what
    // `Instant` holds is never reached.
    now.checked_add(total.saturating_sub(Duration::from_millis(elapsed)))
}

/// The `EnqueueAt` record of disk entry `e` of `session`; its file is kept.
pub(super) fn enqueue_at(out: &mut Vec<u8>, keep: &mut HashSet<u32>, session: u64, e: DiskEntry) {
    let Some(at) = e.location() else { return };
    keep.insert(at.file_key());
    Record::EnqueueAt {
        session,
        qos: e.qos() as u8,
        retain: e.retain(),
        extra: e.extra(),
        at: at.raw(),
        // Fits: disk entries count at most u32::MAX bytes.
        bytes: e.bytes() as u32,
    }
    .encode(out);
}

/// The broker's side of on-disk queues.
#[derive(Debug, Default)]
pub(super) struct DiskState {
    /// Reads disk entries back; `None` keeps every queue in memory (persistence off).
    pub loader: Option<Loader>,
    /// Offline sessions with queued messages in memory that may move to disk once written.
    pub spill: Vec<SessionKey>,
}

impl Broker {
    /// Gives the broker the reader of its data files, which turns on queues kept on disk
    /// (see `ondisk.rs`). Call before replay, so that recovery builds them.
    pub fn set_frame_source(&mut self, source: Box<dyn FrameSource>) {
        self.disk.loader = Some(Loader::new(source));
        self.journal.locating = true;
    }

    /// The writer has written batches: `written` says where each starts. Messages in them
    /// learn their location, and offline sessions move what they can of their queues to
    /// disk.
    pub fn handle_written(&mut self, written: &[(u64, Location)], now: Instant) {
        if written.is_empty() || self.disk.loader.is_none() {
            return;
        }
        self.journal.locate(written);
        let meter = &self.meter;
        let sessions = &mut self.sessions;
        let journal = &mut self.journal;
        let entries = &mut self.queued_entries;
        let bridges_up = &self.bridges_up;
        self.disk.spill.retain(|&key| {
            let Some(s) = sessions.get_mut(key) else {
                return false;
            };
            let in_memory = s.queue().len();
            let draining = bridges_up.contains(&key)
                && s.queued_len() <= BRIDGE_IN_MEMORY
                && s.queued_bytes() <= BRIDGE_IN_MEMORY_BYTES;
            let waiting = s.conn().is_none()
                && !draining
                && s.spill(meter, |m| journal.relocate(m, now)) == Spill::Waiting;
            // Spilled entries are counted as disk entries now (`memory_limit`).
            *entries = entries.saturating_sub(in_memory.saturating_sub(s.queue().len()));
            if !waiting {
                s.unlist_for_spill();
            }
            waiting
        });
    }

    /// Lists an offline persistent session whose queue has messages in memory for moving
    /// to disk once they are written.
    pub(super) fn list_for_spill(&mut self, key: SessionKey) {
        if self.disk.loader.is_none() {
            return;
        }
        if let Some(s) = self.sessions.get_mut(key) {
            if s.store_id() != 0
                && s.conn().is_none()
                && !s.queue().is_empty()
                && s.list_for_spill()
            {
                self.disk.spill.push(key);
            }
        }
    }
}

/// Loads up to `n` entries at the front of `session`'s disk queue (see `Session::front`);
/// without a loader they cannot be read and are dropped. Returns how many are now in
/// memory (queue entries `memory_limit` counts).
pub(super) fn load_front(
    disk: &mut DiskState,
    session: &mut Session,
    n: usize,
    meter: &Arc<Meter>,
    wall: Option<WallClock>,
    now: Instant,
) -> usize {
    match disk.loader.as_mut() {
        Some(loader) => {
            let loaded = session.load_front(n, |e| loader.load(e, meter, wall, now));
            if !session.needs_load() && session.queued_len() == session.queue().len() {
                loader.source.release();
            }
            loaded
        }
        None => session.load_front(n, |_| None),
    }
}
