//! The bridge state machine's view of its local session's queue ([`SessionQueue`]):
//! messages moved from the session's queue into its inflight list (`Broker::bridge_take`,
//! which binds the packet id used upstream) a window's worth ahead of the uplink, and the
//! acks waiting to go back to the broker (`bridge_done`, `bridge_pubrec`). A staged
//! message shares the session's message (its [`Body`]), so the time left sent upstream
//! is the broker's (`Message::remaining_expiry`, counted across restarts).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::bridge::{Body, OutboundQueue, QueueId, QueuedMessage, Settings};
use crate::broker::{BridgeOut, Message};
use crate::protocol::{PacketId, QoS};

/// A message handed to the uplink, with the packet id the session bound to it.
pub(super) struct Staged {
    pub(super) id: QueueId,
    pub(super) pid: Option<PacketId>,
    pub(super) msg: QueuedMessage,
    /// The journal batch that moved it into flight: a QoS 2 message is not handed to the
    /// uplink before that batch is durable (`Broker::bridge_pending_batch`).
    pub(super) batch: u64,
}

/// Converts a session message to what goes upstream: `None` if no `out` line maps it
/// (the configuration changed since it was queued). Shares the broker's message.
pub(super) fn upstream(s: &Settings, o: &BridgeOut) -> Option<QueuedMessage> {
    let (topic, qos) = s.route_out(&o.msg.topic, o.qos)?;
    let body: Arc<dyn Body> = o.msg.clone();
    Some(QueuedMessage::shared(body, qos, o.retain).with_remote_topic(&topic))
}

impl Body for Message {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn properties(&self) -> &[u8] {
        &self.properties
    }
    fn expiry_left(&self, now: Instant) -> Option<u32> {
        self.remaining_expiry(now)
    }
}

/// The bridge state machine's view of its session's queue (see the module docs).
#[derive(Default)]
pub struct SessionQueue {
    pub(super) staged: VecDeque<Staged>,
    next_id: QueueId,
    /// Acknowledged upstream, not yet told to the broker.
    pub(super) done: Vec<PacketId>,
    pub(super) released: Vec<PacketId>,
    /// Messages still in the session's queue at the last sync.
    pub(super) waiting: usize,
    /// The highest journal batch known durable at the last sync.
    pub(super) durable: u64,
    /// Persistence holds acks until durable: a PUBREL waits for its PUBREC's record.
    pub(super) holds: bool,
}

impl SessionQueue {
    fn find(&self, id: QueueId) -> Option<usize> {
        self.staged.binary_search_by_key(&id, |s| s.id).ok()
    }

    pub(super) fn stage(
        &mut self,
        pid: Option<PacketId>,
        msg: QueuedMessage,
        batch: u64,
    ) -> QueueId {
        self.next_id += 1;
        let id = self.next_id;
        self.staged.push_back(Staged {
            id,
            pid,
            msg,
            batch,
        });
        id
    }

    /// Whether a staged QoS 2 message waits for its batch to be durable.
    pub(super) fn holds_back(&self) -> bool {
        self.staged
            .iter()
            .any(|s| s.msg.qos == QoS::ExactlyOnce && s.batch > self.durable)
    }
}

impl OutboundQueue for SessionQueue {
    fn peek_into(&self, after: Option<QueueId>, n: usize, out: &mut Vec<(QueueId, QueuedMessage)>) {
        let from = after.map_or(0, |a| self.staged.partition_point(|s| s.id <= a));
        // In order: nothing passes a QoS 2 message still waiting for the log.
        out.extend(
            self.staged
                .range(from..)
                .take_while(|s| s.msg.qos != QoS::ExactlyOnce || s.batch <= self.durable)
                .take(n)
                .map(|s| (s.id, s.msg.clone())),
        );
    }

    fn ack(&mut self, id: QueueId) {
        if let Some(i) = self.find(id) {
            if let Some(s) = self.staged.remove(i) {
                self.done.extend(s.pid);
            }
        }
    }

    fn len(&self) -> usize {
        self.staged.len() + self.waiting
    }

    fn packet_id(&self, id: QueueId) -> Option<PacketId> {
        self.find(id).and_then(|i| self.staged[i].pid)
    }

    fn holds_packet_id(&self, pid: u16) -> bool {
        self.staged
            .iter()
            .any(|s| s.pid.is_some_and(|p| p.get() == pid))
    }

    fn released(&mut self, id: QueueId) -> bool {
        match self.find(id).and_then(|i| self.staged[i].pid) {
            Some(pid) => {
                self.released.push(pid);
                !self.holds
            }
            None => true,
        }
    }

    fn expiry_left(&self, id: QueueId, now: Instant) -> Option<u32> {
        let i = self.find(id)?;
        self.staged[i].msg.expiry_left(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(qos: QoS, p: &str) -> QueuedMessage {
        QueuedMessage::new("t", p.as_bytes(), qos, false)
    }

    fn payloads(v: &[(QueueId, QueuedMessage)]) -> Vec<String> {
        v.iter()
            .map(|(_, m)| String::from_utf8(m.payload().to_vec()).unwrap())
            .collect()
    }

    fn settings(topic_line: &str) -> Settings {
        let text = format!("connection up\naddress up:1883\n{topic_line}\n");
        let parsed = crate::config::parse_str(&text, std::path::Path::new("/w.conf"))
            .unwrap_or_else(|e| panic!("{e}"));
        Settings::new(parsed.config.bridges[0].clone(), "gw", 20)
    }

    fn out(msg: &Arc<Message>, qos: QoS) -> BridgeOut {
        BridgeOut {
            packet_id: PacketId::new(1),
            msg: msg.clone(),
            qos,
            retain: false,
            released: false,
        }
    }

    #[test]
    fn a_forwarded_message_shares_the_brokers_bytes_and_only_a_remapped_topic_is_new() {
        let msg = Message::new("site/a", b"payload", QoS::AtLeastOnce, false);
        let same = upstream(
            &settings("topic site/# out 2"),
            &out(&msg, QoS::AtLeastOnce),
        )
        .expect("the out line maps it");
        assert_eq!(same.topic(), "site/a");
        assert_eq!(same.payload(), b"payload");
        assert_eq!(same.qos, QoS::AtLeastOnce, "the lower of the two QoS");
        assert!(
            std::ptr::eq(same.payload(), &msg.payload[..]),
            "payload shared"
        );
        assert!(std::ptr::eq(same.topic(), &*msg.topic), "topic shared");

        let mapped = upstream(
            &settings("topic # out 0 site/ gw1/"),
            &out(&msg, QoS::AtLeastOnce),
        )
        .expect("the out line maps it");
        assert_eq!(mapped.topic(), "gw1/a");
        assert_eq!(mapped.qos, QoS::AtMostOnce);
        assert!(
            std::ptr::eq(mapped.payload(), &msg.payload[..]),
            "payload shared"
        );

        assert!(upstream(
            &settings("topic other/# out 1"),
            &out(&msg, QoS::AtLeastOnce)
        )
        .is_none());
    }

    #[test]
    fn session_queue_holds_qos2_until_its_batch_is_durable_and_keeps_order() {
        let mut q = SessionQueue::default();
        let a = q.stage(PacketId::new(1), m(QoS::AtLeastOnce, "a"), 5);
        q.stage(PacketId::new(2), m(QoS::ExactlyOnce, "b"), 5);
        q.stage(PacketId::new(3), m(QoS::AtLeastOnce, "c"), 6);
        q.durable = 4;
        // QoS 1 may go before its record is durable (a duplicate at worst); nothing
        // passes the QoS 2 message that waits.
        assert_eq!(payloads(&q.peek(None, 10)), ["a"]);
        assert!(q.holds_back());
        q.durable = 5;
        assert_eq!(payloads(&q.peek(Some(a), 10)), ["b", "c"]);
        assert_eq!(q.packet_id(a).map(PacketId::get), Some(1));
        assert!(q.holds_packet_id(3) && !q.holds_packet_id(4));
        q.ack(a);
        q.ack(a);
        assert_eq!(q.done.iter().map(|p| p.get()).collect::<Vec<_>>(), [1]);
        assert_eq!(q.len(), 2);
    }
}
