//! Application messages as the broker keeps them once they must outlive the packet they
//! came in: queued for an offline or busy subscriber, in flight, retained, or a will.
//!
//! One `Arc<Message>` is shared by every subscriber queue, inflight slot and the retained
//! store, so a fan-out to many subscribers holds one copy of topic and payload.

use std::sync::Arc;

use crate::protocol::{Publish, QoS};

/// A published message, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: Box<str>,
    pub payload: Box<[u8]>,
    /// QoS it was published with (the ceiling for every delivery).
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
}

impl Message {
    pub fn from_publish(p: &Publish<'_>) -> Arc<Message> {
        Arc::new(Message {
            topic: p.topic.into(),
            payload: p.payload.into(),
            qos: p.qos,
            retain: p.retain,
        })
    }

    /// Bytes a queued copy of this message costs, for `max_queued_bytes`.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }
}
