//! Bringing state back from the data files, and writing it all out for a snapshot.
//!
//! Replay applies records in log order to an empty broker. A record that refers to a
//! message or session the files do not have (possible only after damage) is skipped and
//! counted. Restored sessions are offline; their clients find them on CONNECT with
//! session present = 1, and keep the user name they last connected with (ACL checks of
//! what is routed to them while offline use it).
//!
//! Expiry counts wall-clock time across the restart: with a [`WallClock`] given before
//! replay, an offline session's expiry counts from when it went offline and a message's
//! from when its record was written; a session or message whose time ran out while the
//! broker was down is dropped. Records without a time (v1 files, or written without a
//! wall clock) count from the restart.
//!
//! With a frame source (`Broker::set_frame_source`) and record locations, queued messages
//! are not read into memory: a `Message` record is remembered by where it is, and the
//! queues that refer to it get disk entries (see `ondisk.rs`). Only what must be in
//! memory (retained and in-flight messages) is read back, once.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU16;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::journal;
use super::message::{Message, NOWHERE};
use super::ondisk::{self, DiskEntry};
use super::session::{Inflight, InflightState, Queued, QueuedRef, Session};
use super::subscriptions::SessionKey;
use super::timers::Timer;
use super::{Broker, WallClock};
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};
use crate::store::{Location, Record};

/// A message replay has seen: in memory, or where its records are.
#[derive(Debug)]
enum Restored {
    Memory(Arc<Message>),
    Disk(DiskEntry),
}

/// Replay's lookup tables.
#[derive(Debug, Default)]
pub(super) struct Tables {
    messages: HashMap<u64, Restored>,
    /// The previous record when it was a `Message` kept on disk: its id and location (a
    /// `MessageExtra` right after it can be read back with it).
    last_message: Option<(u64, Location)>,
    sessions: HashMap<u64, SessionKey>,
    max_message: u64,
    max_session: u64,
    /// Records that referred to something missing.
    dangling: u64,
}

fn qos(v: u8) -> QoS {
    QoS::from_u8(v).unwrap_or(QoS::AtLeastOnce)
}

/// Subscription options packed in one byte, as in a 5.0 SUBSCRIBE (§3.8.3.1).
pub(super) fn options_byte(o: SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

fn options_from_byte(b: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: qos(b & 0x03),
        no_local: b & 0x04 != 0,
        retain_as_published: b & 0x08 != 0,
        retain_handling: match (b >> 4) & 0x03 {
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => RetainHandling::OnSubscribe,
        },
    }
}

impl Broker {
    /// About the size of [`Broker::snapshot`]'s output.
    fn snapshot_estimate(&self) -> usize {
        const RECORD: usize = 64;
        let retained: usize = self
            .retained
            .messages()
            .map(|m| m.stored_len() + RECORD)
            .sum();
        let sessions: usize = self
            .sessions
            .iter()
            .filter(|(_, s)| s.store_id() != 0)
            .map(|(_, s)| {
                let in_memory: usize = s.queue().iter().map(|q| q.msg.stored_len() + RECORD).sum();
                (2 + s.subscriptions.len() + s.inflight().len()) * RECORD
                    + s.client_id.len()
                    + s.queued_len() * 36
                    + in_memory
            })
            .sum();
        retained + sessions
    }
}

fn initial_state(q: QoS) -> InflightState {
    if q == QoS::ExactlyOnce {
        InflightState::AwaitingPubrec
    } else {
        InflightState::AwaitingPuback
    }
}

/// What is left of `total` after `elapsed_ms`; `None` when nothing is.
fn remaining(total: Duration, elapsed_ms: u64) -> Option<Duration> {
    let left = total.saturating_sub(Duration::from_millis(elapsed_ms));
    (!left.is_zero()).then_some(left)
}

impl Broker {
    /// Gives the broker the wall-clock reading that persisted times are derived from (see
    /// `journal.rs`). Call before replay, so that expiry counts across the restart.
    ///
    /// A reading before 2025 is not trusted (a board without a real-time clock that has
    /// not synchronised yet reads 1970): times written under it would make the next start,
    /// with the right time, count decades of downtime and drop every session and message
    /// with an expiry. Without a trusted clock, expiry counts from this start, as before.
    pub fn set_wall_clock(&mut self, wall: WallClock) {
        /// 2025-01-01T00:00:00Z in Unix milliseconds.
        const PLAUSIBLE_SINCE: u64 = 1_735_689_600_000;
        if wall.unix_ms < PLAUSIBLE_SINCE {
            warn!(
                "the system clock reads {} ms after 1970, before this release existed; session and message expiry count from this start",
                wall.unix_ms
            );
            self.journal.wall = None;
        } else {
            self.journal.wall = Some(wall);
        }
    }

    /// Wall-clock milliseconds elapsed at `now` since the persisted time `since` (0 =
    /// unknown: none). A clock set back counts as no time.
    fn elapsed_since(&self, since: u64, now: Instant) -> u64 {
        match self.journal.wall {
            Some(w) if since != 0 => w.unix_ms(now).saturating_sub(since),
            _ => 0,
        }
    }

    /// Applies one record read back from the data files. Call before any connection is
    /// opened, then [`Broker::finish_restore`].
    pub fn restore_record(&mut self, r: Record<'_>, now: Instant) {
        self.restore_record_at(r, None, now);
    }

    /// [`Broker::restore_record`] for a record whose frame is at `at` in the data files:
    /// queued messages then stay there (see the module docs).
    pub fn restore_record_at(&mut self, r: Record<'_>, at: Option<Location>, now: Instant) {
        let mut t = self.restoring.take().unwrap_or_default();
        let last = t.last_message.take();
        if !self.apply(&mut t, r, at, last, now) {
            t.dangling += 1;
        }
        self.restoring = Some(t);
    }

    /// Message `id` in memory, reading it back when replay left it on disk.
    fn restored_message(&mut self, t: &mut Tables, id: u64, now: Instant) -> Option<Arc<Message>> {
        let e = match t.messages.get(&id)? {
            Restored::Memory(m) => return Some(m.clone()),
            Restored::Disk(e) => *e,
        };
        let loader = self.disk.loader.as_mut()?;
        let wall = self.journal.wall;
        let m = loader
            .message(e.location()?, e.extra(), &self.meter, wall, now)
            .ok()?;
        t.messages.insert(id, Restored::Memory(m.clone()));
        Some(m)
    }

    /// Appends a restored delivery to `sid`'s queue: a disk entry when it can be one,
    /// else the message read back into memory.
    fn restore_enqueue(&mut self, t: &mut Tables, sid: u64, e: DiskEntry, now: Instant) -> bool {
        let Some(s) = t.sessions.get(&sid).and_then(|&k| self.sessions.get_mut(k)) else {
            return false;
        };
        if self.disk.loader.is_some() && s.push_disk(e, &self.meter) {
            return true;
        }
        let (Some(loader), Some(at)) = (self.disk.loader.as_mut(), e.location()) else {
            return false;
        };
        let Ok(msg) = loader.message(at, e.extra(), &self.meter, self.journal.wall, now) else {
            return false;
        };
        s.queued_bytes += msg.stored_len();
        s.queue_mut().push_back(Queued {
            sub_ids: Box::default(),
            msg,
            qos: e.qos(),
            retain: e.retain(),
        });
        true
    }

    /// Ends replay: numbering continues above the restored ids, the restored (offline)
    /// sessions' expiry goes on counting from when they went offline (from now when that
    /// is unknown), and sessions and messages that expired while the broker was down are
    /// dropped.
    pub fn finish_restore(&mut self, now: Instant) {
        let keys: Vec<SessionKey> = self.sessions.iter().map(|(k, _)| k).collect();
        let now_ms = self.journal.unix_ms(now);
        let mut expired = Vec::new();
        for key in keys {
            let epoch = self.next_epoch();
            let default = self.config.persistent_client_expiration;
            let Some(since) = self.sessions.get(key).map(|s| s.offline_since()) else {
                continue;
            };
            let elapsed = self.elapsed_since(since, now);
            let Some(s) = self.sessions.get_mut(key) else {
                continue;
            };
            s.epoch = epoch;
            if since == 0 {
                // Unknown: the countdown starts now, and the next snapshot says so.
                s.set_offline_since(now_ms);
            }
            let after = match s.expiry_interval {
                u32::MAX => default,
                secs => Some(Duration::from_secs(u64::from(secs))),
            };
            if let Some(after) = after {
                match remaining(after, elapsed) {
                    Some(left) => self.timers.schedule_in(
                        now,
                        left,
                        Timer::SessionExpiry(super::timer_key(key), epoch),
                    ),
                    None => expired.push(key),
                }
            }
            // [MQTT-3.3.2-5] a message whose expiry passed is not delivered (those kept
            // on disk are checked when they are read back for delivery).
            s.retain_queued(|q| !q.msg.is_expired(now));
            self.list_for_spill(key);
        }
        for key in expired {
            if let Some(c) = self.sessions.get(key).map(|s| s.client_id.clone()) {
                info!("session of {c} expired while the broker was stopped");
            }
            self.remove_session_quietly(key);
        }
        let stale: Vec<Arc<str>> = self
            .retained
            .messages()
            .filter(|m| m.is_expired(now))
            .map(|m| Arc::from(&*m.topic))
            .collect();
        for topic in stale {
            self.retained.remove(&topic);
        }
        // Replay filled the queues record by record: count their entries once, here
        // (`memory_used`).
        self.queued_entries = self.sessions.iter().map(|(_, s)| s.queue().len()).sum();
        if let Some(t) = self.restoring.take() {
            self.journal.resume_ids(t.max_message, t.max_session);
            if t.dangling > 0 {
                warn!(
                    "{} records referred to data the files no longer hold; skipped",
                    t.dangling
                );
            }
        }
    }

    /// Returns false if the record refers to something unknown. `last`: the previous
    /// record, when it was a `Message` left on disk.
    fn apply(
        &mut self,
        t: &mut Tables,
        r: Record<'_>,
        at: Option<Location>,
        last: Option<(u64, Location)>,
        now: Instant,
    ) -> bool {
        let session = |t: &Tables, id: u64| t.sessions.get(&id).copied();
        match r {
            Record::Message {
                id,
                qos: q,
                retain,
                topic,
                payload,
            } => {
                t.max_message = t.max_message.max(id);
                let bytes = topic.len() + payload.len();
                let disk = at.filter(|_| self.disk.loader.is_some());
                if let Some(e) =
                    disk.and_then(|at| DiskEntry::new(at, bytes, qos(q), retain, false))
                {
                    t.messages.insert(id, Restored::Disk(e));
                    t.last_message = disk.map(|at| (id, at));
                    return true;
                }
                let msg = Message::metered(
                    &self.meter,
                    topic,
                    payload,
                    qos(q),
                    retain,
                    Box::default(),
                    None,
                );
                msg.id.store(id, Ordering::Relaxed);
                t.messages.insert(id, Restored::Memory(msg));
            }
            Record::Retain { topic, id } => {
                let Some(msg) = self.restored_message(t, id, now) else {
                    return false;
                };
                if *msg.topic == *topic {
                    self.retained.store(&msg);
                }
            }
            Record::RetainClear { topic } => self.retained.remove(topic),
            Record::SessionOpen {
                session: sid,
                client_id,
            } => {
                let client: Arc<str> = Arc::from(client_id);
                if let Some(old) = self.client_ids.get(&self.sessions, &client) {
                    self.remove_session_quietly(old);
                }
                let mut s = Session::new(client.clone(), false);
                s.set_store_id(sid);
                let key = self.sessions.insert(s);
                self.client_ids.insert(&self.sessions, key);
                t.sessions.insert(sid, key);
                t.max_session = t.max_session.max(sid);
            }
            Record::SessionDelete { session: sid } => {
                let Some(key) = t.sessions.remove(&sid) else {
                    return false;
                };
                self.remove_session_quietly(key);
            }
            Record::Subscribe {
                session: sid,
                filter,
                options,
            } => {
                let Some(key) = session(t, sid) else {
                    return false;
                };
                let options = options_from_byte(options);
                let filter = self.subscriptions.subscribe(filter, key, options, 0);
                if let Some(s) = self.sessions.get_mut(key) {
                    s.set_subscription(&filter, options, 0);
                }
            }
            Record::Unsubscribe {
                session: sid,
                filter,
            } => {
                let Some(key) = session(t, sid) else {
                    return false;
                };
                self.subscriptions.unsubscribe(filter, key);
                if let Some(s) = self.sessions.get_mut(key) {
                    s.remove_subscription(filter);
                }
            }
            Record::Enqueue {
                session: sid,
                id,
                qos: q,
                retain,
            } => {
                let msg = match t.messages.get(&id) {
                    Some(Restored::Disk(e)) => {
                        let Some(at) = e.location() else { return false };
                        let (bytes, extra) = (e.bytes(), e.extra());
                        let Some(e) = DiskEntry::new(at, bytes, qos(q), retain, extra) else {
                            return false;
                        };
                        return self.restore_enqueue(t, sid, e, now);
                    }
                    Some(Restored::Memory(msg)) => msg.clone(),
                    None => return false,
                };
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                s.queued_bytes += msg.stored_len();
                s.queue_mut().push_back(Queued {
                    sub_ids: Box::default(),
                    msg,
                    qos: qos(q),
                    retain,
                });
            }
            Record::EnqueueAt {
                session: sid,
                qos: q,
                retain,
                extra,
                at,
                bytes,
            } => {
                let Some(at) = Location::from_raw(at) else {
                    return false;
                };
                let Some(e) = DiskEntry::new(at, bytes as usize, qos(q), retain, extra) else {
                    return false;
                };
                return self.restore_enqueue(t, sid, e, now);
            }
            Record::Dequeue { session: sid } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                s.drop_front();
            }
            Record::QueueToInflight {
                session: sid,
                packet_id,
            } => {
                let wall = self.journal.wall;
                let Some(s) = t.sessions.get(&sid).and_then(|&k| self.sessions.get_mut(k)) else {
                    return false;
                };
                if s.needs_load() {
                    ondisk::load_front(&mut self.disk, s, 1, &self.meter, wall, now);
                }
                let (Some(pid), Some(q)) = (NonZeroU16::new(packet_id), s.dequeue()) else {
                    return false;
                };
                let state = initial_state(q.qos);
                s.inflight_mut().push_back(Inflight {
                    packet_id: pid,
                    delivery: q,
                    state,
                });
                s.last_packet_id = packet_id;
            }
            Record::Inflight {
                session: sid,
                packet_id,
                id,
                qos: q,
                retain,
            } => {
                let (Some(key), Some(msg)) = (session(t, sid), self.restored_message(t, id, now))
                else {
                    return false;
                };
                let Some(s) = self.sessions.get_mut(key) else {
                    return false;
                };
                let Some(pid) = NonZeroU16::new(packet_id) else {
                    return false;
                };
                let delivery = Queued {
                    sub_ids: Box::default(),
                    msg,
                    qos: qos(q),
                    retain,
                };
                s.inflight_mut().push_back(Inflight {
                    packet_id: pid,
                    delivery,
                    state: initial_state(qos(q)),
                });
                s.last_packet_id = packet_id;
            }
            Record::Pubrec {
                session: sid,
                packet_id,
            } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                let Some(pid) = NonZeroU16::new(packet_id) else {
                    return false;
                };
                let Some(i) = s.find_inflight(pid, InflightState::AwaitingPubrec) else {
                    return false;
                };
                s.inflight_mut()[i].state = InflightState::AwaitingPubcomp;
            }
            Record::InflightDone {
                session: sid,
                packet_id,
            } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                let Some(i) = s
                    .inflight()
                    .iter()
                    .position(|f| f.packet_id.get() == packet_id)
                else {
                    return false;
                };
                s.inflight_mut().remove(i);
            }
            Record::AwaitPubrel {
                session: sid,
                packet_id,
            } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                let Some(pid) = NonZeroU16::new(packet_id) else {
                    return false;
                };
                if !s.awaiting_pubrel().contains(&pid) {
                    s.awaiting_pubrel_mut().push(pid);
                }
            }
            Record::SessionExpiry {
                session: sid,
                interval,
            } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                s.expiry_interval = interval;
            }
            Record::SubscriptionId {
                session: sid,
                filter,
                id,
            } => {
                let Some(key) = session(t, sid) else {
                    return false;
                };
                let Some(s) = self.sessions.get_mut(key) else {
                    return false;
                };
                let Some(sub) = s.subscriptions.get_mut(filter) else {
                    return false;
                };
                sub.id = id;
                let (filter, options) = (sub.filter.clone(), sub.options);
                self.subscriptions.subscribe(&filter, key, options, id);
            }
            Record::MessageExtra {
                id,
                expiry,
                written_at,
                properties,
            } => {
                let elapsed = self.elapsed_since(written_at, now);
                if let (Some(Restored::Disk(e)), Some((last, msg_at)), Some(at)) =
                    (t.messages.get_mut(&id), last, at)
                {
                    // Right after its message in the same file: read back with it.
                    if last == id && msg_at.file_key() == at.file_key() {
                        let bytes = e.bytes() + properties.len();
                        if let Some(with) = DiskEntry::new(msg_at, bytes, e.qos(), e.retain(), true)
                        {
                            *e = with;
                            return true;
                        }
                    }
                }
                let Some(m) = self.restored_message(t, id, now) else {
                    return false;
                };
                // Expired while the broker was down: due now, so never delivered.
                // Checked: a deadline past what `Instant` holds is never reached.
                let expires_at = (expiry != u32::MAX)
                    .then(|| {
                        let total = Duration::from_secs(u64::from(expiry));
                        now.checked_add(remaining(total, elapsed).unwrap_or(Duration::ZERO))
                    })
                    .flatten();
                let full = Message::metered(
                    &self.meter,
                    &m.topic,
                    &m.payload,
                    m.qos,
                    m.retain,
                    properties.into(),
                    expires_at,
                );
                full.id.store(id, Ordering::Relaxed);
                t.messages.insert(id, Restored::Memory(full));
            }
            Record::Released {
                session: sid,
                packet_id,
            } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                s.awaiting_pubrel_mut().retain(|p| p.get() != packet_id);
            }
            Record::SessionUser {
                session: sid,
                username,
            } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                s.username = username.map(Arc::from);
            }
            Record::SessionOffline {
                session: sid,
                since,
            } => {
                let Some(s) = self.restored_session(t, sid) else {
                    return false;
                };
                s.set_offline_since(since);
            }
        }
        true
    }

    /// The restored session the log calls `sid`.
    fn restored_session(&mut self, t: &Tables, sid: u64) -> Option<&mut Session> {
        t.sessions.get(&sid).and_then(|&k| self.sessions.get_mut(k))
    }

    /// Removes a session without journaling it (replay only).
    fn remove_session_quietly(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.try_remove(key) else {
            return;
        };
        for sub in &session.subscriptions {
            self.subscriptions.unsubscribe(&sub.filter, key);
        }
        self.client_ids.remove(&session.client_id, key);
    }

    /// The whole journaled state as framed records: what a snapshot holds. Messages are
    /// written once, before the first record that refers to them.
    pub fn snapshot(&self, now: Instant) -> Vec<u8> {
        self.snapshot_keeping(now).0
    }

    /// [`Broker::snapshot`], and the data files its on-disk queue entries point into (by
    /// `Location::file_key`), which compaction must keep.
    pub fn snapshot_keeping(&self, now: Instant) -> (Vec<u8>, Vec<u32>) {
        let mut keep: HashSet<u32> = HashSet::new();
        // Sized up front: one allocation, not a doubling series whose freed steps stay in
        // the heap (a million-entry queue's snapshot is tens of MB).
        let mut out = Vec::with_capacity(self.snapshot_estimate());
        let written_at = self.journal.unix_ms(now);
        let mut written: HashSet<u64> = HashSet::new();
        let mut message = |out: &mut Vec<u8>, m: &Arc<Message>| -> u64 {
            let id = m.id.load(Ordering::Relaxed);
            if written.insert(id) {
                Record::Message {
                    id,
                    qos: m.qos as u8,
                    retain: m.retain,
                    topic: &m.topic,
                    payload: &m.payload,
                }
                .encode(out);
                // Copied: where it was may be compacted away (see `message::NOWHERE`).
                m.loc.store(NOWHERE, Ordering::Relaxed);
                if !m.properties.is_empty() || m.expires_at.is_some() {
                    let expiry = m.remaining_expiry(now).unwrap_or(u32::MAX);
                    Record::MessageExtra {
                        id,
                        expiry,
                        written_at,
                        properties: &m.properties,
                    }
                    .encode(out);
                }
            }
            id
        };
        // `$SYS` is rebuilt at every start and never written (see `sys.rs`).
        for m in self
            .retained
            .messages()
            .filter(|m| !m.topic.starts_with("$SYS/"))
        {
            // Retained messages always have an id once persistence is on.
            let id = message(&mut out, m);
            Record::Retain {
                topic: &m.topic,
                id,
            }
            .encode(&mut out);
        }
        for (_, s) in self.sessions.iter().filter(|(_, s)| journal::persistent(s)) {
            let session = s.store_id();
            Record::SessionOpen {
                session,
                client_id: &s.client_id,
            }
            .encode(&mut out);
            if s.username.is_some() {
                Record::SessionUser {
                    session,
                    username: s.username.as_deref(),
                }
                .encode(&mut out);
            }
            if s.offline_since() != 0 {
                Record::SessionOffline {
                    session,
                    since: s.offline_since(),
                }
                .encode(&mut out);
            }
            if s.expiry_interval != u32::MAX {
                Record::SessionExpiry {
                    session,
                    interval: s.expiry_interval,
                }
                .encode(&mut out);
            }
            for sub in &s.subscriptions {
                let filter = &sub.filter;
                Record::Subscribe {
                    session,
                    filter,
                    options: options_byte(sub.options),
                }
                .encode(&mut out);
                if sub.id != 0 {
                    Record::SubscriptionId {
                        session,
                        filter,
                        id: sub.id,
                    }
                    .encode(&mut out);
                }
            }
            for f in s.inflight() {
                let d = &f.delivery;
                let id = message(&mut out, &d.msg);
                let packet_id = f.packet_id.get();
                Record::Inflight {
                    session,
                    packet_id,
                    id,
                    qos: d.qos as u8,
                    retain: d.retain,
                }
                .encode(&mut out);
                if f.state == InflightState::AwaitingPubcomp {
                    Record::Pubrec { session, packet_id }.encode(&mut out);
                }
            }
            s.for_each_queued(|q| match q {
                QueuedRef::Memory(q) if DiskEntry::of_queued(q).is_some() => {
                    // Written already: point at it rather than copy it.
                    let Some(e) = DiskEntry::of_queued(q) else {
                        return;
                    };
                    ondisk::enqueue_at(&mut out, &mut keep, session, e);
                }
                QueuedRef::Memory(q) => {
                    let id = message(&mut out, &q.msg);
                    Record::Enqueue {
                        session,
                        id,
                        qos: q.qos as u8,
                        retain: q.retain,
                    }
                    .encode(&mut out);
                }
                QueuedRef::Disk(e) => ondisk::enqueue_at(&mut out, &mut keep, session, e),
            });
            for p in s.awaiting_pubrel() {
                Record::AwaitPubrel {
                    session,
                    packet_id: p.get(),
                }
                .encode(&mut out);
            }
        }
        (out, keep.into_iter().collect())
    }
}
