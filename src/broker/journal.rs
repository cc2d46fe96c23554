//! The broker's side of persistence: turning state changes into log records, and holding
//! back the packets that promise durability until the records they depend on are on disk.
//!
//! What is journaled: retained messages, and persistent sessions (clean session 0) with
//! their subscriptions, queued and in-flight messages and inbound QoS 2 packet ids. Clean
//! sessions are never journaled: they end with their connection, so a restart has nothing
//! of theirs to bring back, and traffic between clean sessions costs no disk writes.
//!
//! Group commit: records of one loop turn form one batch with sequence number `seq`. An
//! acknowledgement or QoS 1/2 delivery produced while the batch has records is put in the
//! connection's held segment for `seq`, and released by `Broker::handle_durable` once the
//! store reports that batch durable: fsynced under `fsync = batch`, written to the file
//! under `interval` and `never` (so a crash of the process never loses an acknowledged
//! message; only a power cut can, in those two modes). A connection with
//! held output holds everything durable after it too, so PUBACKs keep their order
//! [MQTT-4.6.0-2]. QoS 0 and QoS 1 deliveries, CONNACK and PINGRESP never wait (a QoS 1
//! delivery sent before its record is durable can at worst arrive twice after a crash,
//! which QoS 1 allows; QoS 2 deliveries wait, so that they cannot).
//!
//! Wall-clock time: expiry must count across a restart, and `Instant` starts again with
//! every boot, so records that start a countdown (a session going offline, a message's
//! expiry) carry Unix milliseconds. The broker never reads a clock: the caller hands it a
//! [`WallClock`] reading (`Broker::set_wall_clock`), and times are derived from it and the
//! monotonic `now` of each call. Without one (tests, persistence off) those records carry
//! 0, "unknown", and a restart counts from zero as v1 files do.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::message::Message;
use super::session::Session;
use super::ConnId;
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

/// Output waiting for batch `.0` to be durable.
/// A `Vec`, not a `VecDeque`: it holds one or two segments, and every connection carries
/// one (8 bytes less each).
pub(super) type Held = Vec<(u64, Vec<u8>)>;

impl Journal {
    pub fn new(enabled: bool) -> Journal {
        Journal {
            enabled,
            holds: enabled,
            buf: Vec::new(),
            seq: 1,
            durable: 0,
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

    /// Records for a stored session whose client (re)connected: its user name when it
    /// changed (after a restart, ACL checks of the offline session use it) and that it is
    /// online again (its expiry countdown stops).
    pub fn session_online(&mut self, session: &mut Session, user_changed: bool) {
        if user_changed {
            self.record(Record::SessionUser {
                session: session.store_id,
                username: session.username.as_deref(),
            });
        }
        if session.offline_since != 0 {
            session.offline_since = 0;
            self.record(Record::SessionOffline {
                session: session.store_id,
                since: 0,
            });
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

    /// Takes the open batch, if it has records.
    /// Bytes of the open batch.
    pub fn open_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn take_batch(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.buf.is_empty() {
            return None;
        }
        let seq = self.seq;
        self.seq += 1;
        Some((seq, std::mem::take(&mut self.buf)))
    }

    /// The buffer durable output for a connection goes to: its write buffer, or a held
    /// segment. `held_conns` learns about connections that start holding.
    pub fn target<'a>(
        &self,
        out: &'a mut Vec<u8>,
        held: &'a mut Held,
        id: ConnId,
        held_conns: &mut Vec<ConnId>,
    ) -> &'a mut Vec<u8> {
        if !self.holds {
            return out;
        }
        if !self.buf.is_empty() {
            if held.is_empty() {
                held_conns.push(id);
            }
            if held.last().is_none_or(|(tag, _)| *tag != self.seq) {
                held.push((self.seq, Vec::new()));
            }
        }
        match held.last_mut() {
            Some((_, segment)) => segment,
            None => out,
        }
    }
}

/// Moves the held segments of batches up to `durable` into `out`; true if any moved.
pub(super) fn release(held: &mut Held, out: &mut Vec<u8>, durable: u64) -> bool {
    let mut moved = false;
    while held.first().is_some_and(|(tag, _)| *tag <= durable) {
        let (_, segment) = held.remove(0);
        if out.is_empty() {
            *out = segment;
        } else {
            out.extend_from_slice(&segment);
        }
        moved = true;
    }
    moved
}
