//! Application messages as the broker keeps them once they must outlive the packet they
//! came in: queued for an offline or busy subscriber, in flight, retained, or a will.
//!
//! One `Arc<Message>` is shared by every subscriber queue, inflight slot and the retained
//! store, so a fan-out to many subscribers holds one copy of topic and payload.
//!
//! Memory accounting (`memory_limit`): a message the broker creates carries a handle to
//! its broker's [`Meter`]; its bytes are added once when it is created and given back when
//! the last `Arc` drops it, however many queues, inflight slots and the retained store
//! share it. No scan ever recounts, and a path that forgets a message cannot make the
//! count drift: the count is tied to the value's life.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{Properties, PropertiesBuf, Property, Publish, QoS};

/// A published message, owned.
#[derive(Debug)]
pub struct Message {
    /// The message's number in the persistence log; 0 until something durable refers to it.
    pub id: AtomicU64,
    /// Where its `Message` record is in the data files (a packed `store::Location`), once
    /// the writer has written it; 0 until then; [`NOWHERE`] once a snapshot copied it
    /// (the file may go). Queues of offline sessions keep the location instead of the
    /// message (see `ondisk.rs`).
    pub loc: AtomicU64,
    pub topic: Box<str>,
    pub payload: Box<[u8]>,
    /// QoS it was published with (the ceiling for every delivery).
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// MQTT 5 properties forwarded unchanged to 5.0 subscribers (payload format indicator,
    /// content type, response topic, correlation data, user properties in order), as an
    /// encoded property block. Empty for 3.1.1 messages.
    pub properties: Box<[u8]>,
    /// MQTT 5 message expiry: after this instant the message is not delivered [MQTT-3.3.2-5].
    pub expires_at: Option<Instant>,
    /// The meter this message's bytes are counted in; `None` for messages built outside a
    /// broker (tests).
    meter: Option<Arc<Meter>>,
}

/// `Message::loc` of a message whose record may be gone with a compacted file: a queue
/// that wants to keep it on disk has it written again (`Journal::relocate`). Not a valid
/// location (offset 1 is inside the file header).
pub const NOWHERE: u64 = 1;

/// Bytes held by the live messages of one broker (see the module docs). Atomic only
/// because `Message` must stay `Sync`; the broker's one thread is the only user, so the
/// operations are uncontended.
#[derive(Debug, Default)]
pub struct Meter(AtomicUsize, AtomicUsize);

impl Meter {
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes held by something other than a message (on-disk queue
    /// indexes, see `ondisk.rs`).
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// Number of live messages (`$SYS/broker/store/messages/count`).
    pub fn count(&self) -> usize {
        self.1.load(Ordering::Relaxed)
    }
}

/// What a message costs besides its topic, payload and properties: the `Arc` allocation
/// that holds it (two reference counts and the struct).
const MESSAGE_OVERHEAD: usize = std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>();

impl Message {
    pub fn new(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Arc<Message> {
        Message::with_properties(topic, payload, qos, retain, Box::default(), None)
    }

    pub fn with_properties(
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: Box<[u8]>,
        expires_at: Option<Instant>,
    ) -> Arc<Message> {
        Arc::new(Message {
            id: AtomicU64::new(0),
            loc: AtomicU64::new(0),
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties,
            expires_at,
            meter: None,
        })
    }

    /// Like [`Message::with_properties`], counted in `meter` until the last reference is
    /// dropped.
    pub fn metered(
        meter: &Arc<Meter>,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: Box<[u8]>,
        expires_at: Option<Instant>,
    ) -> Arc<Message> {
        let m = Message {
            id: AtomicU64::new(0),
            loc: AtomicU64::new(0),
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties,
            expires_at,
            meter: Some(meter.clone()),
        };
        meter.0.fetch_add(m.memory_cost(), Ordering::Relaxed);
        meter.1.fetch_add(1, Ordering::Relaxed);
        Arc::new(m)
    }

    /// A message from a PUBLISH (or will) whose topic is `topic` (resolved from an alias).
    pub fn from_publish(p: &Publish<'_>, topic: &str, now: Instant) -> Arc<Message> {
        let (properties, expires_at) = forwarded(&p.properties, now);
        Message::with_properties(topic, p.payload, p.qos, p.retain, properties, expires_at)
    }

    /// Bytes this message holds, as `memory_limit` counts them.
    pub fn memory_cost(&self) -> usize {
        MESSAGE_OVERHEAD + self.stored_len()
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Seconds of life left, for the Message Expiry Interval sent on delivery
    /// [MQTT-3.3.2-6].
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            // Round up so a message is never delivered with 0 s left.
            u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0)).unwrap_or(u32::MAX)
        })
    }

    /// Bytes of topic, payload and MQTT 5 properties: what `max_queued_bytes` and
    /// `max_retained_bytes` count (issue 11: properties used to be left out, so a client
    /// could queue megabytes of user properties under a small byte cap).
    pub fn stored_len(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.len()
    }
}

/// The properties of an incoming PUBLISH or will that travel with the message, and its
/// expiry. The topic alias and subscription identifiers are per hop and are dropped; the
/// expiry interval is turned into an instant and re-sent as the time left.
pub fn forwarded(props: &Properties<'_>, now: Instant) -> (Box<[u8]>, Option<Instant>) {
    if props.is_empty() {
        return (Box::default(), None);
    }
    let mut buf = PropertiesBuf::new();
    let mut expires_at = None;
    for p in props.iter() {
        match p {
            Property::MessageExpiryInterval(secs) => {
                // Checked: a deadline past what `Instant` holds is never reached.
                expires_at = now.checked_add(Duration::from_secs(u64::from(secs)));
            }
            Property::TopicAlias(_)
            | Property::SubscriptionIdentifier(_)
            | Property::WillDelayInterval(_) => {}
            other => buf.push(other),
        }
    }
    (buf.as_properties().raw().into(), expires_at)
}

impl Drop for Message {
    fn drop(&mut self) {
        if let Some(meter) = &self.meter {
            meter.0.fetch_sub(self.memory_cost(), Ordering::Relaxed);
            meter.1.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl PartialEq for Message {
    /// Same content; the log id is bookkeeping.
    fn eq(&self, other: &Message) -> bool {
        self.topic == other.topic
            && self.payload == other.payload
            && self.qos == other.qos
            && self.retain == other.retain
            && self.properties == other.properties
    }
}

impl Eq for Message {}
