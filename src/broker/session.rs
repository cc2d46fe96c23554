//! Sessions: the state of one client id that outlives its network connections (§4.1).
//!
//! A session owns its subscriptions (mirrored in the subscription table), the messages
//! queued for it, its outbound messages in flight, the inbound QoS 2 packet ids awaiting
//! PUBREL and its packet-id counter. It holds no socket and no clock, only plain data;
//! `journal.rs` records its changes and `restore.rs` rebuilds it after a restart.
//!
//! Queue overflow policy: when a message would exceed `max_queued_messages` or
//! `max_queued_bytes` (topic, payload and MQTT 5 properties), the new message is dropped
//! for this session (the oldest queued ones stay, as in Mosquitto) and the broker logs it
//! once until the queue has drained.

use std::collections::{HashMap, VecDeque};
use std::num::{NonZeroU16, NonZeroU64};
use std::sync::Arc;

use smol_str::SmolStr;

use super::message::{Message, Meter};
use super::ondisk::{DiskEntry, DiskQueue};
use super::ConnId;
use crate::protocol::{PacketId, QoS, SubscriptionOptions};

/// A message waiting for the inflight window (or for the client to come back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub msg: Arc<Message>,
    /// QoS of this delivery: min(published, granted).
    pub qos: QoS,
    /// RETAIN flag of this delivery (retained messages sent on subscribe, or "retain as
    /// published" subscriptions).
    pub retain: bool,
    /// MQTT 5 subscription identifiers of the matching subscriptions (usually none).
    pub sub_ids: Box<[u32]>,
}

/// What one queued delivery costs `memory_limit` besides its message (counted once by the
/// message itself, however many queues share it): the queue entry.
pub const QUEUED_ENTRY: usize = std::mem::size_of::<Queued>();

/// One subscription of a session, as the client asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The filter as subscribed, `$share/{group}/` prefix included (the subscription
    /// table's text: inline when short, else the same `Arc`).
    pub filter: SmolStr,
    pub options: SubscriptionOptions,
    /// MQTT 5 subscription identifier; 0 = none.
    pub id: u32,
}

/// Where an outbound QoS 1/2 delivery stands (§4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflightState {
    /// QoS 1 PUBLISH sent.
    AwaitingPuback,
    /// QoS 2 PUBLISH sent.
    AwaitingPubrec,
    /// PUBREL sent (the message itself is no longer needed).
    AwaitingPubcomp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflight {
    pub packet_id: PacketId,
    pub delivery: Queued,
    pub state: InflightState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// 0 = no limit.
    pub max_messages: usize,
    /// 0 = no limit.
    pub max_bytes: usize,
}

/// The parts of a session that only traffic fills, with the counters that go with its
/// queue (issue 11: an idle session carries none of them).
#[derive(Debug, Default)]
struct Flows {
    /// Bytes of the queued messages (see [`Session::queued_bytes`]).
    queued_bytes: usize,
    /// Messages dropped because the queue was full, or unreadable from disk, since the
    /// queue was last empty (saturating; a drop with an empty queue, a message alone over
    /// `max_queued_bytes`, is counted only by the broker's statistics).
    dropped: u32,
    /// Whether the current overflow episode has been logged.
    overflow_logged: bool,
    /// Queued messages in memory: the first `loaded` come before `disk` (read back from
    /// it), the rest after it (see `ondisk.rs`).
    queue: VecDeque<Queued>,
    /// Queued messages kept in the data files.
    disk: DiskQueue,
    loaded: usize,
    /// On the broker's list of sessions whose queue may move to disk.
    spill_listed: bool,
    /// In send order; acknowledgements usually arrive in the same order.
    inflight: VecDeque<Inflight>,
    /// Inbound QoS 2 packet ids whose PUBREL has not arrived: a PUBLISH reusing one is a
    /// retransmission and is not forwarded again [MQTT-4.3.3-2].
    awaiting_pubrel: Vec<PacketId>,
}

/// One queued message, wherever it is kept.
#[derive(Debug)]
pub enum QueuedRef<'a> {
    Memory(&'a Queued),
    Disk(DiskEntry),
}

/// How far [`Session::spill`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spill {
    /// Everything in memory went to disk.
    Done,
    /// The next message is not written yet: try again after the next write.
    Waiting,
    /// The next message cannot go to disk; it and what follows stay in memory.
    Stuck,
}

/// The parts of a session only some sessions use (see `Session::rare`).
#[derive(Debug, Default)]
struct Rare {
    /// A will waiting for its delay (5.0 will delay interval) while the session is offline.
    pending_will: Option<Arc<Message>>,
    /// The session's number in the persistence log; 0 for sessions that are not journaled
    /// (clean sessions, or persistence off).
    store_id: u64,
    /// When a stored session went offline, in Unix milliseconds (its expiry counts from
    /// then, across restarts); 0 while online or when unknown.
    offline_since: u64,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.pending_will.is_none() && self.store_id == 0 && self.offline_since == 0
    }
}

/// A session's connection in 8 bytes instead of the 12 of an `Option<ConnId>` (issue 11):
/// the id's two halves in one `u64`, plus one so that none is 0. Connection indexes are
/// the loop's slab keys, far below `u32::MAX`, so the sum does not wrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PackedConn(Option<NonZeroU64>);

impl PackedConn {
    fn new(conn: Option<ConnId>) -> PackedConn {
        PackedConn(conn.and_then(|c| {
            let v = (u64::from(c.index) << 32) | u64::from(c.generation);
            NonZeroU64::new(v.wrapping_add(1))
        }))
    }

    fn get(self) -> Option<ConnId> {
        self.0.map(|v| {
            let v = v.get() - 1;
            ConnId {
                index: (v >> 32) as u32,
                generation: v as u32,
            }
        })
    }
}

static NO_QUEUE: VecDeque<Queued> = VecDeque::new();
static NO_INFLIGHT: VecDeque<Inflight> = VecDeque::new();
static NO_IDS: Vec<PacketId> = Vec::new();

#[derive(Debug)]
pub struct Session {
    /// Inline up to 23 bytes (most client ids): no allocation of its own (issue 11).
    pub client_id: SmolStr,
    /// User name of the last CONNECT, for ACL checks (also while offline).
    pub username: Option<Arc<str>>,
    /// The connection currently attached, if the client is online (see [`Session::conn`]).
    conn: PackedConn,
    /// Ends with its connection: clean session (3.1.1) or session expiry interval 0 (5.0)
    /// [MQTT-3.1.2-6] [MQTT-3.1.2-23].
    pub clean: bool,
    /// Seconds an offline session is kept (5.0 session expiry interval; `u32::MAX` never
    /// expires). Ignored when `clean`.
    pub expiry_interval: u32,
    /// Changes whenever the session goes online or offline, so that a timer armed for an
    /// earlier offline period does nothing (broker-wide counter, never reused).
    pub epoch: u32,
    /// A delayed will and the session's place in the persistence log: boxed, as most
    /// sessions have neither (24 bytes less per session, issue 11).
    rare: Option<Box<Rare>>,
    pub subscriptions: Subscriptions,
    /// Queue, in-flight messages and inbound QoS 2 ids; allocated only while one of them is
    /// not empty, so an idle session costs 8 bytes for them instead of 88.
    flows: Option<Box<Flows>>,
    pub(super) last_packet_id: u16,
    /// The listener (`AuthSet` index) of its current or last connection, whose ACL applies
    /// (`per_listener_settings true`); `auth::UNKNOWN_LISTENER` until it connects (a
    /// session restored from disk).
    pub listener: u8,
    /// How many of the last messages in flight have not been sent on the current
    /// connection yet (resent after a reconnect as the client's window allows, see
    /// `Broker::resend_inflight`). At most 65,535: each holds a packet id.
    pub(super) unsent: u16,
}

impl Session {
    pub fn new(client_id: impl Into<SmolStr>, clean: bool) -> Session {
        Session {
            client_id: client_id.into(),
            username: None,
            conn: PackedConn::default(),
            clean,
            expiry_interval: u32::MAX,
            epoch: 0,
            rare: None,
            subscriptions: Subscriptions::default(),
            flows: None,
            last_packet_id: 0,
            listener: crate::auth::UNKNOWN_LISTENER,
            unsent: 0,
        }
    }

    /// The connection currently attached, if the client is online.
    pub fn conn(&self) -> Option<ConnId> {
        self.conn.get()
    }

    pub fn set_conn(&mut self, conn: Option<ConnId>) {
        self.conn = PackedConn::new(conn);
    }

    /// Bytes of the queued messages, in memory and on disk (topic, payload and MQTT 5
    /// properties): what `max_queued_bytes` bounds.
    pub fn queued_bytes(&self) -> usize {
        self.flows.as_ref().map_or(0, |f| f.queued_bytes)
    }

    /// Messages dropped from the queue since it was last empty (see `Flows::dropped`).
    pub fn dropped(&self) -> u32 {
        self.flows.as_ref().map_or(0, |f| f.dropped)
    }

    /// Marks the current overflow episode as logged; true if it was not yet (log it then).
    /// The episode ends when the queue drains.
    pub fn overflow_episode_starts(&mut self) -> bool {
        let f = self.flows.get_or_insert_with(Box::default);
        !std::mem::replace(&mut f.overflow_logged, true)
    }

    /// The session's number in the persistence log; 0 for sessions that are not journaled
    /// (clean sessions, or persistence off).
    pub fn store_id(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.store_id)
    }

    pub fn set_store_id(&mut self, id: u64) {
        self.change_rare(|r| r.store_id = id);
    }

    /// When a stored session went offline, in Unix milliseconds; 0 while online or when
    /// unknown.
    pub fn offline_since(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.offline_since)
    }

    pub fn set_offline_since(&mut self, unix_ms: u64) {
        self.change_rare(|r| r.offline_since = unix_ms);
    }

    /// Sets (or clears) the will waiting for its delay while the session is offline.
    pub fn set_pending_will(&mut self, will: Option<Arc<Message>>) {
        self.change_rare(|r| r.pending_will = will);
    }

    pub fn take_pending_will(&mut self) -> Option<Arc<Message>> {
        let mut will = None;
        self.change_rare(|r| will = r.pending_will.take());
        will
    }

    /// Applies `f` to the rare parts, allocating them only if they end up non-empty and
    /// giving them back once empty again.
    fn change_rare(&mut self, f: impl FnOnce(&mut Rare)) {
        match &mut self.rare {
            Some(r) => {
                f(r);
                if r.is_empty() {
                    self.rare = None;
                }
            }
            None => {
                let mut r = Rare::default();
                f(&mut r);
                if !r.is_empty() {
                    self.rare = Some(Box::new(r));
                }
            }
        }
    }

    /// Messages waiting for the inflight window or for the client.
    pub fn queue(&self) -> &VecDeque<Queued> {
        self.flows.as_ref().map_or(&NO_QUEUE, |f| &f.queue)
    }

    pub fn queue_mut(&mut self) -> &mut VecDeque<Queued> {
        &mut self.flows.get_or_insert_with(Box::default).queue
    }

    /// Outbound QoS 1/2 messages sent and not yet acknowledged, in send order.
    pub fn inflight(&self) -> &VecDeque<Inflight> {
        self.flows.as_ref().map_or(&NO_INFLIGHT, |f| &f.inflight)
    }

    pub fn inflight_mut(&mut self) -> &mut VecDeque<Inflight> {
        &mut self.flows.get_or_insert_with(Box::default).inflight
    }

    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub fn awaiting_pubrel(&self) -> &[PacketId] {
        self.flows.as_ref().map_or(&NO_IDS, |f| &f.awaiting_pubrel)
    }

    pub fn awaiting_pubrel_mut(&mut self) -> &mut Vec<PacketId> {
        &mut self.flows.get_or_insert_with(Box::default).awaiting_pubrel
    }

    /// Gives the flow containers back once all three are empty (an idle session).
    pub fn release_idle_flows(&mut self) {
        if self.flows.as_ref().is_some_and(|f| {
            f.queue.is_empty()
                && f.disk.is_empty()
                && f.inflight.is_empty()
                && f.awaiting_pubrel.is_empty()
        }) {
            self.flows = None;
        }
    }

    /// A packet id not used by any message in flight [MQTT-2.3.1-2]; `None` if all 65,535
    /// are in use.
    ///
    /// Ids are handed out in order, so the next one is almost always free and one scan of
    /// the window confirms it. When it is not (an old message still in flight as the ids
    /// come round), the ids in use are marked in a bitmap on the stack and the first free
    /// one taken: O(window + 65,536 / 64) instead of a scan per candidate, which was
    /// quadratic with a large window (issue 11).
    pub fn allocate_packet_id(&mut self) -> Option<PacketId> {
        fn after(id: u16) -> u16 {
            id.checked_add(1).unwrap_or(1)
        }
        let inflight = self.inflight();
        if inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        let mut id = after(self.last_packet_id);
        if inflight.iter().any(|i| i.packet_id.get() == id) {
            let mut used = [0u64; 1024];
            for i in inflight {
                let v = usize::from(i.packet_id.get());
                used[v / 64] |= 1 << (v % 64);
            }
            // Fewer than 65,535 ids are in use, so a free one exists.
            while used[usize::from(id) / 64] & (1 << (id % 64)) != 0 {
                id = after(id);
            }
        }
        self.last_packet_id = id;
        NonZeroU16::new(id)
    }

    /// Messages queued, in memory and on disk.
    pub fn queued_len(&self) -> usize {
        self.flows
            .as_ref()
            .map_or(0, |f| f.queue.len() + f.disk.len())
    }

    pub fn has_queued(&self) -> bool {
        self.queued_len() > 0
    }

    /// The next queued message, when it is in memory; `None` when the queue is empty or
    /// its front is on disk (see [`Session::needs_load`]).
    pub fn front(&self) -> Option<&Queued> {
        let f = self.flows.as_ref()?;
        if f.loaded > 0 || f.disk.is_empty() {
            f.queue.front()
        } else {
            None
        }
    }

    /// Whether the front of the queue is on disk and must be loaded to be sent.
    pub fn needs_load(&self) -> bool {
        self.flows
            .as_ref()
            .is_some_and(|f| f.loaded == 0 && !f.disk.is_empty())
    }

    /// Moves up to `n` entries from the front of the disk queue into memory, in order,
    /// through `load`; an entry `load` cannot read is dropped. Returns how many loaded.
    pub fn load_front(
        &mut self,
        n: usize,
        mut load: impl FnMut(DiskEntry) -> Option<Queued>,
    ) -> usize {
        let Some(f) = self.flows.as_mut() else {
            return 0;
        };
        let mut done = 0;
        while done < n {
            let Some(e) = f.disk.pop_front() else { break };
            match load(e) {
                Some(q) => {
                    f.queue.insert(f.loaded, q);
                    f.loaded += 1;
                    done += 1;
                }
                None => {
                    f.queued_bytes -= e.bytes();
                    f.dropped = f.dropped.saturating_add(1);
                }
            }
        }
        done
    }

    /// Appends a disk entry; false (nothing changed) when messages in memory would have
    /// to come before it (order is kept).
    pub fn push_disk(&mut self, e: DiskEntry, meter: &Arc<Meter>) -> bool {
        let f = self.flows.get_or_insert_with(Box::default);
        if f.queue.len() > f.loaded {
            return false;
        }
        f.queued_bytes += e.bytes();
        f.disk.push_back(e, meter);
        true
    }

    /// Moves the in-memory messages after the disk queue to it, front first, as long as
    /// their records are written (see `ondisk.rs`). A message whose record a compaction
    /// may have removed (`message::NOWHERE`) is handed to `relocate` (to be written again)
    /// and waited for.
    pub fn spill(&mut self, meter: &Arc<Meter>, mut relocate: impl FnMut(&Arc<Message>)) -> Spill {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(f) = self.flows.as_mut() else {
            return Spill::Done;
        };
        while let Some(q) = f.queue.get(f.loaded) {
            let Some(e) = DiskEntry::of_queued(q) else {
                if !q.sub_ids.is_empty() || q.msg.id.load(Relaxed) == 0 {
                    return Spill::Stuck;
                }
                if q.msg.loc.load(Relaxed) == super::message::NOWHERE {
                    relocate(&q.msg);
                }
                return Spill::Waiting;
            };
            f.queue.remove(f.loaded);
            f.disk.push_back(e, meter);
        }
        if f.queue.is_empty() && f.queue.capacity() > 64 {
            f.queue = VecDeque::new();
        }
        Spill::Done
    }

    /// Marks the session as listed for spilling; true if it was not already.
    pub fn list_for_spill(&mut self) -> bool {
        let f = self.flows.get_or_insert_with(Box::default);
        !std::mem::replace(&mut f.spill_listed, true)
    }

    pub fn unlist_for_spill(&mut self) {
        if let Some(f) = self.flows.as_mut() {
            f.spill_listed = false;
        }
    }

    /// Every queued message in order, in memory or on disk.
    pub fn for_each_queued(&self, mut each: impl FnMut(QueuedRef<'_>)) {
        let Some(f) = self.flows.as_ref() else { return };
        let (loaded, rest) = (f.queue.range(..f.loaded), f.queue.range(f.loaded..));
        loaded.for_each(|q| each(QueuedRef::Memory(q)));
        f.disk.iter().for_each(|&e| each(QueuedRef::Disk(e)));
        rest.for_each(|q| each(QueuedRef::Memory(q)));
    }

    /// Drops queued messages in memory for which `keep` is false (restore only: nothing
    /// is loaded then).
    pub fn retain_queued(&mut self, keep: impl FnMut(&Queued) -> bool) {
        let Some(f) = self.flows.as_mut() else { return };
        let before = f.queue.len();
        f.queue.retain(keep);
        if f.queue.len() != before {
            f.loaded = f.loaded.min(f.queue.len());
            f.queued_bytes = f.queue.iter().map(|q| q.msg.stored_len()).sum::<usize>()
                + f.disk.iter().map(DiskEntry::bytes).sum::<usize>();
            self.release_idle_flows();
        }
    }

    /// Drops the first queued message, on disk or in memory, without reading it.
    pub fn drop_front(&mut self) -> bool {
        if self.needs_load() {
            let Some(f) = self.flows.as_mut() else {
                return false;
            };
            let Some(e) = f.disk.pop_front() else {
                return false;
            };
            f.queued_bytes -= e.bytes();
            return true;
        }
        self.dequeue().is_some()
    }

    /// Queues a delivery. Returns false, leaving the queue unchanged, when a limit is hit.
    pub fn enqueue(&mut self, q: Queued, limits: QueueLimits) -> bool {
        let bytes = q.msg.stored_len();
        let full_count = limits.max_messages > 0 && self.queued_len() >= limits.max_messages;
        let full_bytes = limits.max_bytes > 0 && self.queued_bytes() + bytes > limits.max_bytes;
        if full_count || full_bytes {
            if let Some(f) = self.flows.as_mut() {
                f.dropped = f.dropped.saturating_add(1);
            }
            return false;
        }
        self.push_queued(q);
        true
    }

    /// Appends a delivery whatever the limits (a restore brings back what was queued).
    #[inline]
    pub fn push_queued(&mut self, q: Queued) {
        let f = self.flows.get_or_insert_with(Box::default);
        f.queued_bytes += q.msg.stored_len();
        f.queue.push_back(q);
    }

    /// Takes the first queued message when it is in memory (see [`Session::front`]).
    pub fn dequeue(&mut self) -> Option<Queued> {
        let f = self.flows.as_mut()?;
        if f.loaded == 0 && !f.disk.is_empty() {
            return None;
        }
        let q = f.queue.pop_front()?;
        f.loaded = f.loaded.saturating_sub(1);
        f.queued_bytes -= q.msg.stored_len();
        if f.queue.is_empty() && f.disk.is_empty() {
            f.overflow_logged = false;
            f.dropped = 0;
        }
        Some(q)
    }

    /// Position of the in-flight message with `id` in state `state`.
    pub fn find_inflight(&self, id: PacketId, state: InflightState) -> Option<usize> {
        self.inflight()
            .iter()
            .position(|i| i.packet_id == id && i.state == state)
    }

    /// Records a subscription; returns true if it is new for this session.
    pub fn set_subscription(
        &mut self,
        filter: &SmolStr,
        options: SubscriptionOptions,
        id: u32,
    ) -> bool {
        self.subscriptions.set(filter, options, id)
    }

    pub fn remove_subscription(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter)
    }
}

/// A session's subscriptions, in no particular order, findable by filter in O(1).
///
/// Most sessions hold one subscription: it is stored inline, with no allocation (issue 11:
/// a vector with room for four cost 112 bytes of heap per idle client). A handful more
/// are a boxed list scanned linearly; past [`Subscriptions::INDEX_FROM`] a hash index
/// (filter -> position) is built, so that a client subscribing n filters costs O(n), not
/// O(n²) (issue 11: 60,000 filters stalled the loop for seconds).
#[derive(Debug, Default)]
pub struct Subscriptions(Subs);

#[derive(Debug, Default)]
enum Subs {
    #[default]
    Empty,
    One(Subscription),
    Many(Box<ManySubs>),
}

#[derive(Debug, Default)]
struct ManySubs {
    list: Vec<Subscription>,
    index: Option<HashMap<SmolStr, usize>>,
}

impl Subscriptions {
    /// Below this many subscriptions a linear scan is cheaper than hashing.
    const INDEX_FROM: usize = 16;

    fn position(&self, filter: &str) -> Option<usize> {
        match &self.0 {
            Subs::Empty => None,
            Subs::One(s) => (&*s.filter == filter).then_some(0),
            Subs::Many(m) => match &m.index {
                Some(index) => index.get(filter).copied(),
                None => m.list.iter().position(|s| &*s.filter == filter),
            },
        }
    }

    /// Whether `filter` is subscribed.
    pub fn contains(&self, filter: &str) -> bool {
        self.position(filter).is_some()
    }

    /// The subscription to `filter`, to change its options or identifier (not its filter).
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut Subscription> {
        let i = self.position(filter)?;
        match &mut self.0 {
            Subs::Empty => None,
            Subs::One(s) => Some(s),
            Subs::Many(m) => m.list.get_mut(i),
        }
    }

    /// Adds or replaces [MQTT-3.8.4-3] the subscription to `filter`; true if it is new.
    pub fn set(&mut self, filter: &SmolStr, options: SubscriptionOptions, id: u32) -> bool {
        if let Some(s) = self.get_mut(filter) {
            s.options = options;
            s.id = id;
            return false;
        }
        let sub = Subscription {
            filter: filter.clone(),
            options,
            id,
        };
        match std::mem::take(&mut self.0) {
            Subs::Empty => self.0 = Subs::One(sub),
            Subs::One(first) => {
                self.0 = Subs::Many(Box::new(ManySubs {
                    list: vec![first, sub],
                    index: None,
                }));
            }
            Subs::Many(mut m) => {
                let at = m.list.len();
                m.list.push(sub);
                match &mut m.index {
                    Some(index) => {
                        index.insert(filter.clone(), at);
                    }
                    None if m.list.len() > Self::INDEX_FROM => m.rebuild_index(),
                    None => {}
                }
                self.0 = Subs::Many(m);
            }
        }
        true
    }

    /// Removes the subscription to `filter`; true if it existed.
    pub fn remove(&mut self, filter: &str) -> bool {
        let Some(i) = self.position(filter) else {
            return false;
        };
        if let Subs::Many(m) = &mut self.0 {
            m.list.swap_remove(i);
            if let Some(index) = &mut m.index {
                index.remove(filter);
                if let Some(moved) = m.list.get(i) {
                    index.insert(moved.filter.clone(), i);
                }
            }
            self.shrink();
        } else {
            self.0 = Subs::Empty;
        }
        true
    }

    /// Keeps only the subscriptions for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Subscription) -> bool) {
        match &mut self.0 {
            Subs::Empty => {}
            Subs::One(s) => {
                if !keep(s) {
                    self.0 = Subs::Empty;
                }
            }
            Subs::Many(m) => {
                m.list.retain(keep);
                if m.index.is_some() {
                    m.rebuild_index();
                }
                self.shrink();
            }
        }
    }

    /// Goes back to the inline forms when a list is down to one subscription or none,
    /// giving back its allocations.
    fn shrink(&mut self) {
        if let Subs::Many(m) = &mut self.0 {
            if m.list.len() <= 1 {
                self.0 = m.list.pop().map_or(Subs::Empty, Subs::One);
            }
        }
    }

    /// Whether the hash index is built (for tests).
    #[cfg(test)]
    fn indexed(&self) -> bool {
        matches!(&self.0, Subs::Many(m) if m.index.is_some())
    }
}

impl ManySubs {
    fn rebuild_index(&mut self) {
        let index = self
            .list
            .iter()
            .enumerate()
            .map(|(i, s)| (s.filter.clone(), i))
            .collect();
        self.index = Some(index);
    }
}

impl std::ops::Deref for Subscriptions {
    type Target = [Subscription];

    fn deref(&self) -> &[Subscription] {
        match &self.0 {
            Subs::Empty => &[],
            Subs::One(s) => std::slice::from_ref(s),
            Subs::Many(m) => &m.list,
        }
    }
}

impl<'a> IntoIterator for &'a Subscriptions {
    type Item = &'a Subscription;
    type IntoIter = std::slice::Iter<'a, Subscription>;

    fn into_iter(self) -> Self::IntoIter {
        let list: &'a [Subscription] = self;
        list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(payload: &[u8]) -> Queued {
        Queued {
            msg: Message::new("t", payload, QoS::AtLeastOnce, false),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: Box::default(),
        }
    }

    #[test]
    fn queue_drops_new_messages_at_either_bound() {
        let mut s = Session::new(Arc::from("c"), false);
        let limits = QueueLimits {
            max_messages: 2,
            max_bytes: 0,
        };
        assert!(s.enqueue(q(b"1"), limits));
        assert!(s.enqueue(q(b"2"), limits));
        assert!(!s.enqueue(q(b"3"), limits));
        assert_eq!(s.dropped(), 1);
        assert_eq!(&*s.dequeue().unwrap().msg.payload, b"1");
        // Topic bytes count: "2" on topic "t" is 2 bytes, "abc" 4.
        let limits = QueueLimits {
            max_messages: 0,
            max_bytes: 6,
        };
        assert!(s.enqueue(q(b"abc"), limits));
        assert!(!s.enqueue(q(b"de"), limits));
        assert_eq!(s.queued_bytes(), 6);
    }

    #[test]
    fn max_queued_bytes_counts_mqtt5_properties() {
        // Issue 11: a message with a small payload and kilobytes of user properties used to
        // count as its payload only.
        let mut s = Session::new(Arc::from("c"), false);
        let limits = QueueLimits {
            max_messages: 0,
            max_bytes: 1000,
        };
        let heavy = |payload: &[u8]| Queued {
            msg: Message::with_properties(
                "t",
                payload,
                QoS::AtLeastOnce,
                false,
                vec![0u8; 600].into(),
                None,
            ),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: Box::default(),
        };
        assert!(s.enqueue(heavy(b"x"), limits));
        assert_eq!(s.queued_bytes(), 602);
        assert!(!s.enqueue(heavy(b"y"), limits), "602 + 602 > 1000");
        s.dequeue();
        assert_eq!(s.queued_bytes(), 0);
    }

    #[test]
    fn subscriptions_index_agrees_with_the_list() {
        let mut subs = Subscriptions::default();
        let filters: Vec<SmolStr> = (0..100)
            .map(|i| SmolStr::from(format!("f/{i}/+")))
            .collect();
        let opts = SubscriptionOptions::default();
        for f in &filters {
            assert!(subs.set(f, opts, 0));
        }
        assert!(subs.indexed(), "indexed past INDEX_FROM");
        assert!(!subs.set(&filters[7], opts, 9), "a repeat replaces");
        assert_eq!(subs.get_mut("f/7/+").map(|s| s.id), Some(9));
        for f in filters.iter().step_by(3) {
            assert!(subs.remove(f));
            assert!(!subs.remove(f));
        }
        subs.retain(|s| &*s.filter != "f/1/+");
        for (i, f) in filters.iter().enumerate() {
            let want = i % 3 != 0 && i != 1;
            assert_eq!(subs.contains(f), want, "{f}");
            let listed = subs.iter().any(|s| s.filter == *f);
            assert_eq!(listed, want, "{f}");
        }
        for f in &filters {
            subs.remove(f);
        }
        assert!(subs.is_empty() && matches!(subs.0, Subs::Empty));
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut s = Session::new(Arc::from("c"), false);
        s.last_packet_id = u16::MAX - 1;
        let a = s.allocate_packet_id().unwrap();
        assert_eq!(a.get(), u16::MAX);
        s.inflight_mut().push_back(Inflight {
            packet_id: NonZeroU16::new(1).unwrap(),
            delivery: q(b""),
            state: InflightState::AwaitingPuback,
        });
        assert_eq!(s.allocate_packet_id().unwrap().get(), 2);
    }

    #[test]
    fn packet_id_allocation_with_a_full_window_finds_the_one_free_id() {
        let mut s = Session::new(Arc::from("c"), false);
        let d = q(b"");
        for id in (1..=u16::MAX).filter(|&i| i != 40_000) {
            s.inflight_mut().push_back(Inflight {
                packet_id: NonZeroU16::new(id).unwrap(),
                delivery: d.clone(),
                state: InflightState::AwaitingPuback,
            });
        }
        s.last_packet_id = 7;
        assert_eq!(s.allocate_packet_id().map(|p| p.get()), Some(40_000));
        s.inflight_mut().push_back(Inflight {
            packet_id: NonZeroU16::new(40_000).unwrap(),
            delivery: d,
            state: InflightState::AwaitingPuback,
        });
        assert_eq!(s.allocate_packet_id(), None, "all 65,535 in use");
    }
}
