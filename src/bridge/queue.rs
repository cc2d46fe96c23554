//! The bridge's outbound queue: messages waiting for the upstream, in order, until it
//! acknowledges them.
//!
//! [`OutboundQueue`] is what the state machine needs; [`MemQueue`] is a bounded in-memory
//! implementation for tests. The durable implementation is `net::bridge::SessionQueue`,
//! a view of the broker's bridge session (`broker/bridge_session.rs`): the session's
//! queue (kept on disk as 16-byte entries, `broker::ondisk`) holds what waits, its
//! inflight list the messages handed to the uplink under the packet ids it allocated
//! ([`OutboundQueue::packet_id`]), so acks can arrive out of order across QoS 1 and 2
//! and a restart resumes each flow under its id.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{Properties, PropertiesBuf, Property, QoS};

/// A message's place in the queue: increasing in queue order, never reused.
pub type QueueId = u64;

/// Where a queued message's bytes live. The broker's messages implement it, so a
/// forwarded message is shared with the broker, not copied: a copy of topic and payload
/// per message (two allocations) was a large share of the bridge's CPU per message with
/// musl's allocator.
pub trait Body: Send + Sync {
    /// The topic the message was published to (before any prefix remapping).
    fn topic(&self) -> &str;
    fn payload(&self) -> &[u8];
    /// A 5.0 PUBLISH property block (without Topic Alias or Subscription Identifier),
    /// forwarded to a 5.0 upstream, dropped for 3.1.1. Usually empty.
    fn properties(&self) -> &[u8];
    /// Seconds left of its MQTT 5 Message Expiry Interval, counted by its owner (the
    /// broker counts across restarts); `None`: it never expires.
    fn expiry_left(&self, _now: Instant) -> Option<u32> {
        None
    }
}

/// A [`Body`] of its own: the bridge's state notes, tests.
#[derive(Debug)]
pub struct Owned {
    pub topic: String,
    pub payload: Vec<u8>,
    pub properties: Vec<u8>,
}

impl Body for Owned {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn properties(&self) -> &[u8] {
        &self.properties
    }
}

/// A message as it is sent upstream: topic already remapped (see
/// [`crate::bridge::Settings::route_out`]), QoS already the lower of the message's and the
/// `topic` line's. Cheap to clone: it is held by the staged queue and by its flow while
/// in flight, and handed out by [`OutboundQueue::peek`].
#[derive(Clone)]
pub struct QueuedMessage {
    body: Arc<dyn Body>,
    /// The remote topic when a prefix remaps it; `None`: the body's topic.
    remote_topic: Option<Arc<str>>,
    /// Properties replacing the body's (a Message Expiry Interval set for this send).
    properties: Option<Arc<[u8]>>,
    pub qos: QoS,
    pub retain: bool,
}

impl QueuedMessage {
    /// A message sent under `body`'s own topic.
    pub fn shared(body: Arc<dyn Body>, qos: QoS, retain: bool) -> QueuedMessage {
        QueuedMessage {
            body,
            remote_topic: None,
            properties: None,
            qos,
            retain,
        }
    }

    /// A message with a body of its own and no properties.
    pub fn new(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> QueuedMessage {
        let body = Owned {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            properties: Vec::new(),
        };
        QueuedMessage::shared(Arc::new(body), qos, retain)
    }

    /// Sends it under `topic` instead of the body's (a remapped prefix).
    pub fn with_remote_topic(mut self, topic: &str) -> QueuedMessage {
        if topic != self.body.topic() {
            self.remote_topic = Some(topic.into());
        }
        self
    }

    /// Sends it with the encoded property block `raw` instead of the body's.
    pub fn with_properties(mut self, raw: &[u8]) -> QueuedMessage {
        self.properties = Some(raw.into());
        self
    }

    /// The remote topic name.
    pub fn topic(&self) -> &str {
        self.remote_topic.as_deref().unwrap_or(self.body.topic())
    }

    pub fn payload(&self) -> &[u8] {
        self.body.payload()
    }

    /// See [`Body::expiry_left`].
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        self.body.expiry_left(now)
    }

    /// The 5.0 property block sent with it (see [`Body::properties`]).
    pub fn properties(&self) -> &[u8] {
        self.properties
            .as_deref()
            .unwrap_or_else(|| self.body.properties())
    }

    /// Sets the Message Expiry Interval sent upstream to `left` seconds, replacing one set
    /// for an earlier send [MQTT-3.3.2-6].
    pub fn set_expiry(&mut self, left: u32) {
        let mut buf = PropertiesBuf::new();
        for p in Properties::from_encoded(self.properties()).iter() {
            if !matches!(p, Property::MessageExpiryInterval(_)) {
                buf.push(p);
            }
        }
        buf.push(Property::MessageExpiryInterval(left));
        self.properties = Some(buf.as_properties().raw().into());
    }
}

impl PartialEq for QueuedMessage {
    fn eq(&self, other: &QueuedMessage) -> bool {
        self.qos == other.qos
            && self.retain == other.retain
            && self.topic() == other.topic()
            && self.payload() == other.payload()
            && self.properties() == other.properties()
    }
}

impl Eq for QueuedMessage {}

impl fmt::Debug for QueuedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedMessage")
            .field("topic", &self.topic())
            .field("payload", &self.payload())
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("properties", &self.properties())
            .finish()
    }
}

/// Messages waiting for the upstream.
pub trait OutboundQueue {
    /// Appends to `out` up to `n` messages after `after` (`None`: from the oldest), oldest
    /// first. Messages handed out before stay in the queue until [`OutboundQueue::ack`].
    fn peek_into(&self, after: Option<QueueId>, n: usize, out: &mut Vec<(QueueId, QueuedMessage)>);
    /// [`OutboundQueue::peek_into`] a new vector.
    fn peek(&self, after: Option<QueueId>, n: usize) -> Vec<(QueueId, QueuedMessage)> {
        let mut out = Vec::new();
        self.peek_into(after, n, &mut out);
        out
    }
    /// The upstream has the message (PUBACK, PUBCOMP, or written for QoS 0): forget it.
    fn ack(&mut self, id: QueueId);
    /// Messages not yet acknowledged.
    fn len(&self) -> usize;
    /// The packet id message `id` is bound to, for a queue that keeps its own packet-id
    /// map (the broker's bridge session: the id is persisted with the message, so QoS 2
    /// resumes under the same id after a restart). `None`: the bridge allocates one.
    fn packet_id(&self, _id: QueueId) -> Option<crate::protocol::PacketId> {
        None
    }
    /// Whether packet id `pid` is bound to a message handed out by [`OutboundQueue::peek`]
    /// and not yet in flight: the bridge does not use it for a SUBSCRIBE.
    fn holds_packet_id(&self, _pid: u16) -> bool {
        false
    }
    /// The upstream sent PUBREC for message `id`: only PUBREL remains (a durable queue
    /// records it, so a restart resumes at PUBREL). True: recorded, the PUBREL may go;
    /// false: the PUBREL waits for [`crate::bridge::Bridge::handle_release_durable`].
    fn released(&mut self, _id: QueueId) -> bool {
        true
    }
    /// Seconds message `id` has left before it expires (MQTT 5 Message Expiry, counted
    /// from when it was published, across restarts for a durable queue); `Some(0)`: it
    /// has expired; `None`: it never does. A message that expired before it was first
    /// sent is dropped [MQTT-3.3.2-5]; every PUBLISH of it carries the time left
    /// [MQTT-3.3.2-6].
    fn expiry_left(&self, _id: QueueId, _now: Instant) -> Option<u32> {
        None
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why [`MemQueue::push`] refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bridge queue full")
    }
}

/// A bounded queue in memory. Full means full: a message over a bound is refused (the
/// caller tells the publisher), never one already accepted dropped.
#[derive(Debug)]
pub struct MemQueue {
    messages: BTreeMap<QueueId, QueuedMessage>,
    next: QueueId,
    bytes: usize,
    /// 0 = no limit.
    max_messages: usize,
    /// Topic + payload + properties bytes; 0 = no limit.
    max_bytes: usize,
    /// When messages pushed with [`MemQueue::push_expiring`] expire.
    expiries: BTreeMap<QueueId, Instant>,
}

impl MemQueue {
    pub fn new(max_messages: usize, max_bytes: usize) -> MemQueue {
        MemQueue {
            messages: BTreeMap::new(),
            next: 1,
            bytes: 0,
            max_messages,
            max_bytes,
            expiries: BTreeMap::new(),
        }
    }

    /// Like [`MemQueue::push`], for a message that expires at `at`.
    pub fn push_expiring(&mut self, msg: QueuedMessage, at: Instant) -> Result<QueueId, QueueFull> {
        let id = self.push(msg)?;
        self.expiries.insert(id, at);
        Ok(id)
    }

    /// Appends `msg`, or refuses it when a bound would be exceeded.
    pub fn push(&mut self, msg: QueuedMessage) -> Result<QueueId, QueueFull> {
        let size = size(&msg);
        if (self.max_messages > 0 && self.messages.len() >= self.max_messages)
            || (self.max_bytes > 0 && self.bytes + size > self.max_bytes)
        {
            return Err(QueueFull);
        }
        let id = self.next;
        self.next += 1;
        self.bytes += size;
        self.messages.insert(id, msg);
        Ok(id)
    }

    /// Bytes held (topic, payload and properties).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn size(m: &QueuedMessage) -> usize {
    m.topic().len() + m.payload().len() + m.properties().len()
}

impl OutboundQueue for MemQueue {
    fn peek_into(&self, after: Option<QueueId>, n: usize, out: &mut Vec<(QueueId, QueuedMessage)>) {
        let from = after.map_or(0, |a| a.saturating_add(1));
        out.extend(
            self.messages
                .range(from..)
                .take(n)
                .map(|(id, m)| (*id, m.clone())),
        );
    }

    fn ack(&mut self, id: QueueId) {
        if let Some(m) = self.messages.remove(&id) {
            self.bytes -= size(&m);
        }
        self.expiries.remove(&id);
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn expiry_left(&self, id: QueueId, now: Instant) -> Option<u32> {
        let left = self.expiries.get(&id)?.saturating_duration_since(now);
        // Rounded up, as the broker does: 0 only once it has expired.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &[u8]) -> QueuedMessage {
        QueuedMessage::new(topic, payload, QoS::AtLeastOnce, false)
    }

    #[test]
    fn peek_after_and_out_of_order_acks() {
        let mut q = MemQueue::new(0, 0);
        let ids: Vec<_> = (0..5).map(|i| q.push(msg("t", &[i])).unwrap()).collect();
        let first: Vec<_> = q.peek(None, 2).into_iter().map(|(id, _)| id).collect();
        assert_eq!(first, ids[..2]);
        let next: Vec<_> = q
            .peek(Some(ids[1]), 10)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(next, ids[2..]);
        q.ack(ids[2]);
        q.ack(ids[0]);
        q.ack(ids[0]); // twice is harmless
        assert_eq!(q.len(), 3);
        let left: Vec<_> = q.peek(None, 10).into_iter().map(|(id, _)| id).collect();
        assert_eq!(left, [ids[1], ids[3], ids[4]]);
    }

    #[test]
    fn bounds_refuse_new_messages_and_free_on_ack() {
        let mut q = MemQueue::new(2, 0);
        let a = q.push(msg("t", b"1")).unwrap();
        q.push(msg("t", b"2")).unwrap();
        assert_eq!(q.push(msg("t", b"3")), Err(QueueFull));
        q.ack(a);
        assert!(q.push(msg("t", b"3")).is_ok());

        let mut q = MemQueue::new(0, 10);
        q.push(msg("t", b"12345")).unwrap(); // 6 bytes
        assert_eq!(q.push(msg("t", b"12345")), Err(QueueFull));
        assert_eq!(q.bytes(), 6);
    }
}
