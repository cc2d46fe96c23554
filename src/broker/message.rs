//! Application messages as the broker keeps them once they must outlive the packet they
//! came in: queued for an offline or busy subscriber, in flight, retained, or a will.
//!
//! One `Arc<Message>` is shared by every subscriber queue, inflight slot and the retained
//! store, so a fan-out to many subscribers holds one copy of topic and payload.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{Properties, PropertiesBuf, Property, Publish, QoS};

/// A published message, owned.
#[derive(Debug)]
pub struct Message {
    /// The message's number in the persistence log; 0 until something durable refers to it.
    pub id: AtomicU64,
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
}

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
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties,
            expires_at,
        })
    }

    /// A message from a PUBLISH (or will) whose topic is `topic` (resolved from an alias).
    pub fn from_publish(p: &Publish<'_>, topic: &str, now: Instant) -> Arc<Message> {
        let (properties, expires_at) = forwarded(&p.properties, now);
        Message::with_properties(topic, p.payload, p.qos, p.retain, properties, expires_at)
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

    /// Bytes a queued copy of this message costs, for `max_queued_bytes`.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
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
