//! Application messages as the broker keeps them once they must outlive the packet they
//! came in: queued for an offline or busy subscriber, in flight, retained, or a will.
//!
//! One `Arc<Message>` is shared by every subscriber queue, inflight slot and the retained
//! store, so a fan-out to many subscribers holds one copy of topic and payload.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::protocol::{Publish, QoS};

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
}

impl Message {
    pub fn new(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Arc<Message> {
        Arc::new(Message {
            id: AtomicU64::new(0),
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
        })
    }

    pub fn from_publish(p: &Publish<'_>) -> Arc<Message> {
        Message::new(p.topic, p.payload, p.qos, p.retain)
    }

    /// Bytes a queued copy of this message costs, for `max_queued_bytes`.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }
}

impl PartialEq for Message {
    /// Same content; the log id is bookkeeping.
    fn eq(&self, other: &Message) -> bool {
        self.topic == other.topic
            && self.payload == other.payload
            && self.qos == other.qos
            && self.retain == other.retain
    }
}

impl Eq for Message {}
