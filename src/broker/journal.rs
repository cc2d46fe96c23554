//! The broker's side of persistence: turning state changes into log records, and telling
//! the output (`output.rs`) which batch the packets that promise durability must wait for.
//!
//! What is journaled: retained messages, and persistent sessions (clean session 0) with
//! their subscriptions, queued and in-flight messages and inbound QoS 2 packet ids. Clean
//! sessions are never journaled: they end with their connection, so a restart has nothing
//! of theirs to bring back, and traffic between clean sessions costs no disk writes.
//!
//! Group commit: records of one loop turn form one batch with sequence number `seq`
//! ([`Journal::open_batch`] while it has records). Output that promises durability waits
//! for that batch: `output.rs` holds acknowledgements and QoS 2 deliveries in the
//! connection's held segment for `seq`, released by `Broker::handle_durable` once the
//! store reports that batch durable: fsynced under `fsync = batch`, written to the file
//! under `interval` and `never` (so a crash of the process never loses an acknowledged
//! message; only a power cut can, in those two modes). QoS 0 and QoS 1 deliveries, CONNACK
//! and PINGRESP do not wait (a QoS 1 delivery sent before its record is durable can at
//! worst arrive twice after a crash, which QoS 1 allows), except that a connection with
//! held output holds every delivery behind it, so the client sees packets in order.
//! Which packet takes which route is decided in `output.rs` only.
//!
//! Waiting is what makes a batch urgent: a batch whose number somebody took to wait for
//! ([`Journal::open_batch`]) is fsynced at once; one nobody waits for (a bridge's record
//! of what the upstream acknowledged, QoS 1 messages taken for the uplink) is submitted
//! lazily (`store::Store::submit_lazy`): written soon, fsynced with the next urgent
//! batch or soon after. Waiting for a batch already submitted ([`Journal::await_submitted`])
//! asks the store to fsync what it holds lazily.
//!
//! Wall-clock time: expiry must count across a restart, and `Instant` starts again with
//! every boot, so records that start a countdown (a session going offline, a message's
//! expiry) carry Unix milliseconds. The broker never reads a clock: the caller hands it a
//! [`WallClock`] reading (`Broker::set_wall_clock`), and times are derived from it and the
//! monotonic `now` of each call. Without one (tests, persistence off) those records carry
//! 0, "unknown", and a restart counts from zero as v1 files do.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::message::Message;
use super::session::Session;
use crate::store::{Location, Record};

/// One reading of the wall clock: at monotonic instant `at` it was `unix_ms` milliseconds
/// after the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    pub at: Instant,
    pub unix_ms: u64,
}

impl WallClock {
    /// The wall-clock time at `now` (saturating: never before the reading).
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

#[derive(Debug)]
pub(super) struct Journal {
    /// Persistence is on.
    pub enabled: bool,
    /// Acknowledgements wait for the store (always, when persistence is on).
    pub holds: bool,
    /// Records of the open batch.
    buf: Vec<u8>,
    /// Number the open batch will be submitted under.
    pub seq: u64,
    /// Highest batch known durable.
    pub durable: u64,
    /// Somebody waits for the open batch (took its number from `open_batch`).
    awaited: Cell<bool>,
    /// Whether the batch `take_batch` returned last is waited for.
    pub taken_awaited: bool,
    /// The last batch submitted with nobody waiting for it.
    lazy_submitted: u64,
    /// Somebody waits for a batch submitted lazily: the store should fsync now.
    sync_submitted: Cell<bool>,
    next_message_id: u64,
    next_session_id: u64,
    /// Where persisted times come from; `None` until the caller gives one.
    pub wall: Option<WallClock>,
    /// Messages learn where their records land (queues kept on disk, `ondisk.rs`).
    pub locating: bool,
    /// Messages whose `Message` records are in batches not written yet: batch, offset of
    /// the frame in it, the message (weak: a message nothing holds needs no location).
    unlocated: VecDeque<(u64, usize, Weak<Message>)>,
}

/// The most room a new batch is given ahead (see `Journal::take_batch`): idle, the open
/// batch holds at most this much memory unused.
const BATCH_CAPACITY_HINT: usize = 64 * 1024;

impl Journal {
    pub fn new(enabled: bool) -> Journal {
        Journal {
            enabled,
            holds: enabled,
            buf: Vec::new(),
            seq: 1,
            durable: 0,
            awaited: Cell::new(false),
            taken_awaited: false,
            lazy_submitted: 0,
            sync_submitted: Cell::new(false),
            next_message_id: 1,
            next_session_id: 1,
            wall: None,
            locating: false,
            unlocated: VecDeque::new(),
        }
    }

    pub fn record(&mut self, r: Record<'_>) {
        if self.enabled {
            r.encode(&mut self.buf);
        }
    }

    /// The message's id in the log, writing its record the first time it is referenced.
    pub fn message_id(&mut self, msg: &Arc<Message>, now: Instant) -> u64 {
        let id = msg.id.load(Ordering::Relaxed);
        if id != 0 || !self.enabled {
            return id;
        }
        let id = self.next_message_id;
        self.next_message_id += 1;
        msg.id.store(id, Ordering::Relaxed);
        self.write_message(id, msg, now);
        id
    }

    /// Writes message `msg`'s records again, for a message whose earlier records may be
    /// compacted away (`message::NOWHERE`) and that a queue wants to keep on disk: it
    /// learns its new location once they are written.
    pub fn relocate(&mut self, msg: &Arc<Message>, now: Instant) {
        let id = msg.id.load(Ordering::Relaxed);
        if id == 0 || !self.enabled {
            return;
        }
        msg.loc.store(0, Ordering::Relaxed);
        self.write_message(id, msg, now);
    }

    /// The `Message` (and `MessageExtra`) records of message `id`.
    fn write_message(&mut self, id: u64, msg: &Arc<Message>, now: Instant) {
        if self.locating {
            let at = self.buf.len();
            self.unlocated
                .push_back((self.seq, at, Arc::downgrade(msg)));
        }
        self.record(Record::Message {
            id,
            qos: msg.qos as u8,
            retain: msg.retain,
            topic: &msg.topic,
            payload: &msg.payload,
        });
        if !msg.properties.is_empty() || msg.expires_at.is_some() {
            let expiry = msg.remaining_expiry(now).unwrap_or(u32::MAX);
            let written_at = self.unix_ms(now);
            self.record(Record::MessageExtra {
                id,
                expiry,
                written_at,
                properties: &msg.properties,
            });
        }
    }

    /// The writer wrote batches starting where `written` says: the messages in them learn
    /// their location.
    pub fn locate(&mut self, written: &[(u64, Location)]) {
        for &(seq, start) in written {
            while let Some((s, at, msg)) = self.unlocated.front() {
                if *s > seq {
                    break;
                }
                if *s == seq {
                    if let (Some(msg), Some(loc)) = (msg.upgrade(), start.plus(*at as u64)) {
                        msg.loc.store(loc.raw(), Ordering::Relaxed);
                    }
                }
                self.unlocated.pop_front();
            }
        }
        if self.unlocated.is_empty() && self.unlocated.capacity() > 1024 {
            self.unlocated = VecDeque::new();
        }
    }

    /// Unix milliseconds at `now` for a persisted time; 0 (unknown) without a wall clock.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        self.wall.map_or(0, |w| w.unix_ms(now))
    }

    /// Journals a change to `session` if it is persistent, with the record `change` makes
    /// of its store id. The one place that decides which sessions are in the log: only
    /// those [`Journal::persist_session`] gave a store id; a clean session's changes are
    /// never written.
    #[inline]
    pub fn session<'r>(&mut self, session: &Session, change: impl FnOnce(u64) -> Record<'r>) {
        if persistent(session) {
            self.record(change(session.store_id()));
        }
    }

    /// [`Journal::session`] for a change that refers to `msg`: the message's own record is
    /// written first, the first time the log refers to it; `change` gets the session's
    /// store id and the message's.
    #[inline]
    pub fn session_message<'r>(
        &mut self,
        session: &Session,
        msg: &Arc<Message>,
        now: Instant,
        change: impl FnOnce(u64, u64) -> Record<'r>,
    ) {
        if persistent(session) {
            let id = self.message_id(msg, now);
            self.record(change(session.store_id(), id));
        }
    }

    /// Makes `session` persistent, unless it is already or persistence is off: it gets a
    /// store id and its opening record. True if it became persistent now.
    pub fn persist_session(&mut self, session: &mut Session) -> bool {
        if persistent(session) || !self.enabled {
            return false;
        }
        session.set_store_id(self.new_session_id());
        self.record(Record::SessionOpen {
            session: session.store_id(),
            client_id: &session.client_id,
        });
        true
    }

    /// Records for a persistent session whose client (re)connected: its user name when it
    /// changed (after a restart, ACL checks of the offline session use it) and that it is
    /// online again (its expiry countdown stops).
    pub fn session_online(&mut self, session: &mut Session, user_changed: bool) {
        if user_changed {
            let username = session.username.as_deref();
            self.session(session, |session| Record::SessionUser { session, username });
        }
        // Only a persistent session has a time it went offline.
        if session.offline_since() != 0 {
            session.set_offline_since(0);
            self.session(session, |session| Record::SessionOffline {
                session,
                since: 0,
            });
        }
    }

    /// Records when a persistent session went offline: its expiry countdown must go on
    /// across a restart. Nothing without a wall clock (the time is unknown).
    pub fn session_offline(&mut self, session: &mut Session, now: Instant) {
        if !persistent(session) {
            return;
        }
        session.set_offline_since(self.unix_ms(now));
        if session.offline_since() != 0 {
            let since = session.offline_since();
            self.session(session, |session| Record::SessionOffline { session, since });
        }
    }

    pub fn new_session_id(&mut self) -> u64 {
        let id = self.next_session_id;
        self.next_session_id += 1;
        id
    }

    /// After recovery: continue numbering above what the files used.
    pub fn resume_ids(&mut self, max_message: u64, max_session: u64) {
        self.next_message_id = self.next_message_id.max(max_message + 1);
        self.next_session_id = self.next_session_id.max(max_session + 1);
    }

    /// Bytes of the open batch.
    pub fn open_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Takes the open batch, if it has records.
    pub fn take_batch(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.buf.is_empty() {
            return None;
        }
        let seq = self.seq;
        self.seq += 1;
        self.taken_awaited = self.awaited.replace(false);
        if !self.taken_awaited {
            self.lazy_submitted = seq;
        }
        // The next batch starts with room for one like this (up to `BATCH_CAPACITY_HINT`):
        // grown from empty, a busy turn's batch was reallocated and copied a dozen times,
        // a large share of the CPU per message under load.
        let next = Vec::with_capacity(self.buf.len().min(BATCH_CAPACITY_HINT));
        Some((seq, std::mem::replace(&mut self.buf, next)))
    }

    /// The batch records written now go into, if it has any yet, for output that waits
    /// for it (see `output.rs`): the batch is then fsynced at once (module docs).
    pub fn open_batch(&self) -> Option<u64> {
        let open = self.open_seq();
        if open.is_some() {
            self.awaited.set(true);
        }
        open
    }

    /// The open batch's number, if it has records, without waiting for it.
    pub fn open_seq(&self) -> Option<u64> {
        (!self.buf.is_empty()).then_some(self.seq)
    }

    /// Somebody waits for every batch submitted so far: if one was submitted lazily and
    /// is not durable yet, the store is asked to fsync it now ([`Journal::take_sync`]).
    pub fn await_submitted(&self) {
        if self.lazy_submitted > self.durable {
            self.sync_submitted.set(true);
        }
    }

    /// Whether the store should fsync its lazily written batches now (see
    /// [`Journal::await_submitted`]); asks once.
    pub fn take_sync(&self) -> bool {
        self.sync_submitted.replace(false)
    }
}

/// Whether `session` is in the log: it has a store id (see [`Journal::persist_session`]).
#[inline]
pub(super) fn persistent(session: &Session) -> bool {
    session.store_id() != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_persisted_session_is_journaled() {
        let mut journal = Journal::new(true);
        let mut session = Session::new(Arc::from("c"), false);
        journal.session(&session, |session| Record::SessionDelete { session });
        assert_eq!(
            journal.open_batch(),
            None,
            "a session without store id writes nothing"
        );
        assert!(journal.persist_session(&mut session));
        assert!(!journal.persist_session(&mut session), "persisted once");
        let opened = journal.open_bytes();
        journal.session(&session, |session| Record::SessionDelete { session });
        assert!(journal.open_bytes() > opened);
        assert_eq!(journal.open_batch(), Some(journal.seq));
    }

    #[test]
    fn a_batch_is_urgent_only_when_somebody_took_its_number() {
        let mut journal = Journal::new(true);
        let mut session = Session::new(Arc::from("c"), false);
        journal.persist_session(&mut session);
        // Looked at, not waited for: lazy.
        assert_eq!(journal.open_seq(), Some(1));
        let (seq, _) = journal.take_batch().expect("records");
        assert!(!journal.taken_awaited, "nobody waits for batch {seq}");
        // Waiting for a lazy batch already submitted asks the store to fsync, once.
        journal.await_submitted();
        assert!(journal.take_sync() && !journal.take_sync());
        journal.durable = seq;
        journal.await_submitted();
        assert!(!journal.take_sync(), "durable already: nothing to ask");
        // A waiter makes the open batch urgent; the next one starts lazy again.
        journal.session(&session, |session| Record::SessionDelete { session });
        assert_eq!(journal.open_batch(), Some(2));
        journal.take_batch().expect("records");
        assert!(journal.taken_awaited);
        journal.session(&session, |session| Record::SessionDelete { session });
        journal.take_batch().expect("records");
        assert!(!journal.taken_awaited);
        // An empty batch has no number to wait for and stays lazy.
        assert_eq!(journal.open_batch(), None);
    }

    #[test]
    fn no_session_is_persisted_without_persistence() {
        let mut journal = Journal::new(false);
        let mut session = Session::new(Arc::from("c"), false);
        assert!(!journal.persist_session(&mut session));
        assert_eq!(session.store_id(), 0);
    }
}
