//! PUBLISH from a client: topic aliases, validation, the `memory_limit` and bridge queue
//! refusals, the inbound QoS 2 state (ids awaiting PUBREL), retained storage and wills,
//! then routing (`routing.rs`) and the PUBACK/PUBREC answer.

use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};

use super::acks::ack;
use super::error::{puback_code, pubrec_code, Outcome};
use super::message::Message;
use super::routing::Routed;
use super::subscriptions::SessionKey;
use super::{conn_slot, Broker, CloseReason, ConnId, ProtocolViolation, TOPIC_ALIAS_MAXIMUM};
use crate::auth;
use crate::protocol::{Packet, PacketId, Publish, QoS, ReasonCode};
use crate::store::Record;

/// Clients may not publish to `$SYS` (Mosquitto denies it too), nor to `$share/...`.
fn publish_allowed(topic: &str) -> bool {
    !(topic == "$SYS" || topic.starts_with("$SYS/") || topic.starts_with("$share/"))
}

/// Why a PUBLISH is refused before it is routed (`Broker::refuse_publish`).
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// The broker is over `memory_limit` (`memory.rs`).
    Memory,
    /// The outbound queue of this bridge (an index of `bridge_queues`) is full
    /// (`bridge_queue.rs`).
    BridgeQueue(usize),
}

impl Broker {
    pub(super) fn handle_publish(&mut self, id: ConnId, p: Publish<'_>, now: Instant) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let Some(key) = conn.session() else {
            return false;
        };
        // [MQTT-3.3.4-6] a Subscription Identifier flows only from server to client. An
        // empty property block (every 3.1.1 PUBLISH) skips the scan.
        if !p.properties.is_empty() && p.properties.subscription_identifiers().next().is_some() {
            return self.violation(id, ProtocolViolation::SubscriptionIdInPublish, now);
        }
        // Resolve a 5.0 topic alias [MQTT-3.3.2-10..12]; the alias table is per connection.
        let mut aliased: Option<Box<str>> = None;
        if let Some(alias) = p.properties.topic_alias() {
            let Some(v5) = conn.v5.as_mut() else {
                return self.violation(id, ProtocolViolation::EmptyTopic, now);
            };
            if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
                return self.violation(id, ProtocolViolation::TopicAliasInvalid, now);
            }
            let slot = usize::from(alias - 1);
            if v5.aliases.len() <= slot {
                v5.aliases.resize(slot + 1, None);
            }
            if p.topic.is_empty() {
                match &v5.aliases[slot] {
                    Some(t) => aliased = Some(t.clone()),
                    None => return self.violation(id, ProtocolViolation::UnknownTopicAlias, now),
                }
            } else {
                v5.aliases[slot] = Some(p.topic.into());
            }
        }
        let topic: &str = aliased.as_deref().unwrap_or(p.topic);
        if topic.is_empty() {
            return self.violation(id, ProtocolViolation::EmptyTopic, now);
        }
        let v5 = conn.v5.is_some();
        self.stats.messages_received += 1;
        self.stats.publish_bytes_received += p.payload.len() as u64;
        // A retained clear frees memory, so it is let through.
        if !(p.retain && p.payload.is_empty()) && self.check_memory() {
            return self.refuse_publish(id, key, &p, v5, Refusal::Memory, now);
        }
        // A bridge's outbound queue at its cap (`bridge_queue.rs`).
        if let Some(bridge) = self.bridge_refusing(key, &p, topic) {
            return self.refuse_publish(id, key, &p, v5, Refusal::BridgeQueue(bridge), now);
        }
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(pid)) => {
                let outcome = self.accept_publish(key, &p, topic, v5, now);
                let reason = puback_code(outcome, v5);
                self.send_held(id, &Packet::Puback(ack(pid, reason)));
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                let receive_max = self.receive_maximum();
                let Some(session) = self.sessions.get_mut(key) else {
                    return false;
                };
                // [MQTT-4.3.3-2] a PUBLISH with a packet id still awaiting PUBREL is a
                // retransmission: acknowledge it again, do not deliver it again.
                let mut reason = ReasonCode::SUCCESS;
                if !session.awaiting_pubrel().contains(&pid) {
                    if session.awaiting_pubrel().len() >= usize::from(receive_max) {
                        if v5 {
                            // [MQTT-3.3.4-7] more unacknowledged QoS 2 than we allowed.
                            self.close(id, CloseReason::ReceiveMaximumExceeded, now, true);
                            return false;
                        }
                        // A 3.1.1 client was never told a limit: as Mosquitto does, the
                        // message over it is acknowledged and dropped, so the ids a client
                        // can make us track stay bounded (issue 11).
                        debug!(
                            "client {}: QoS 2 message {pid} dropped: {receive_max} already \
                             await PUBREL",
                            session.client_id
                        );
                        self.send_held(id, &Packet::Pubrec(ack(pid, reason)));
                        return true;
                    }
                    session.awaiting_pubrel_mut().push(pid);
                    let packet_id = pid.get();
                    self.journal
                        .session(session, |session| Record::AwaitPubrel {
                            session,
                            packet_id,
                        });
                    let outcome = self.accept_publish(key, &p, topic, v5, now);
                    reason = pubrec_code(outcome, v5);
                    if reason.is_error() {
                        // [MQTT-4.3.3-4] a PUBREC with an error code ends the flow: no
                        // PUBREL follows, and the id may be used for a new message.
                        self.forget_pubrel(key, pid);
                    }
                }
                self.send_held(id, &Packet::Pubrec(ack(pid, reason)));
            }
            _ => {
                self.accept_publish(key, &p, topic, v5, now);
            }
        }
        true
    }

    /// A PUBLISH the broker cannot take: over `memory_limit`, or for a bridge whose
    /// outbound queue is full. Mosquitto, whose allocations fail at its `memory_limit`,
    /// closes the connection of a client whose message it cannot store ("disconnected due
    /// to out of memory"). wrenmq drops QoS 0 (nothing promised it); refuses QoS 1/2 from a
    /// 5.0 client with PUBACK/PUBREC 0x97 quota exceeded, which ends the flow
    /// [MQTT-4.3.3-4] and keeps the connection; and closes a 3.1.1 client's connection as
    /// Mosquitto does, since PUBACK would claim a delivery that did not happen. A QoS 2
    /// retransmission already accepted is still acknowledged.
    fn refuse_publish(
        &mut self,
        id: ConnId,
        key: SessionKey,
        p: &Publish<'_>,
        v5: bool,
        why: Refusal,
        now: Instant,
    ) -> bool {
        let (Some(pid), true) = (p.packet_id, p.qos > QoS::AtMostOnce) else {
            self.count_refusal(why);
            return true;
        };
        let retransmission = p.qos == QoS::ExactlyOnce
            && self
                .sessions
                .get(key)
                .is_some_and(|s| s.awaiting_pubrel().contains(&pid));
        if retransmission {
            self.send_held(id, &Packet::Pubrec(ack(pid, ReasonCode::SUCCESS)));
            return true;
        }
        self.count_refusal(why);
        if !v5 {
            let reason = match why {
                Refusal::Memory => CloseReason::MemoryLimit,
                Refusal::BridgeQueue(_) => CloseReason::BridgeQueueFull,
            };
            self.close(id, reason, now, true);
            return false;
        }
        let reply = ack(pid, puback_code(Outcome::QuotaExceeded, v5));
        if p.qos == QoS::AtLeastOnce {
            self.send_held(id, &Packet::Puback(reply));
        } else {
            self.send_held(id, &Packet::Pubrec(reply));
        }
        true
    }

    fn count_refusal(&mut self, why: Refusal) {
        match why {
            Refusal::Memory => self.stats.dropped_memory_limit += 1,
            Refusal::BridgeQueue(bridge) => self.bridge_queue_refused(bridge),
        }
    }

    /// Drops `pid` from the session's inbound QoS 2 ids awaiting PUBREL.
    fn forget_pubrel(&mut self, key: SessionKey, pid: PacketId) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.awaiting_pubrel_mut().retain(|p| *p != pid);
        let packet_id = pid.get();
        self.journal
            .session(session, |session| Record::Released { session, packet_id });
        session.release_idle_flows();
    }

    /// The receive maximum we announce to 5.0 clients.
    pub(super) fn receive_maximum(&self) -> u16 {
        match self.config.max_inflight_messages {
            0 => u16::MAX,
            n => n,
        }
    }

    /// Stores a retained message and routes the message to its subscribers. A message the
    /// publisher may not write, or over `message_size_limit`, is dropped here; the caller
    /// still acknowledges it (3.1.1 has no way to say no; 5.0 gets a reason code).
    pub(super) fn accept_publish(
        &mut self,
        publisher: SessionKey,
        p: &Publish<'_>,
        topic: &str,
        v5: bool,
        now: Instant,
    ) -> Outcome {
        if !publish_allowed(topic) {
            return Outcome::NotAuthorized;
        }
        let limit = self.config.message_size_limit as usize;
        // MQTT 5 properties count too: they are stored and forwarded with the payload.
        let size = p.payload.len() + p.properties.raw().len();
        if limit > 0 && size > limit {
            debug!("dropped a {size}-byte message to {topic}: over message_size_limit");
            return Outcome::NoSubscribers;
        }
        if !self.allowed(publisher, topic, auth::WRITE) {
            debug!("dropped a message to {topic}: not allowed by the ACL");
            return Outcome::NotAuthorized;
        }
        let mut routed = Routed::from_publish(&self.meter, p, topic, publisher, now);
        if p.retain && self.config.retain_available {
            // The forwarded properties are at most the received ones.
            let len = topic.len() + p.payload.len() + p.properties.raw().len();
            if p.payload.is_empty() || self.retained_room(topic, len) {
                let msg = routed.shared(&self.meter);
                self.store_retained(&msg, now);
            } else if v5 && p.qos > QoS::AtMostOnce {
                // The publisher can be told: 0x97, and the message is not accepted at all
                // (a PUBACK error code means it was not published).
                return Outcome::QuotaExceeded;
            }
            // Otherwise (QoS 0, 3.1.1) it is still delivered live, only not retained.
        }
        if self.route(&mut routed) > 0 {
            Outcome::Delivered
        } else {
            Outcome::NoSubscribers
        }
    }

    /// Whether a retained message of `len` bytes may be stored for `topic` within
    /// `max_retained_messages` and `max_retained_bytes`; a refusal is logged once until a
    /// store succeeds again.
    fn retained_room(&mut self, topic: &str, len: usize) -> bool {
        let (max_messages, max_bytes) = (
            self.config.max_retained_messages,
            self.config.max_retained_bytes,
        );
        if self.retained.has_room(topic, len, max_messages, max_bytes) {
            self.retained_full_logged = false;
            return true;
        }
        if !self.retained_full_logged {
            self.retained_full_logged = true;
            warn!(
                "retained store full ({} messages, {} bytes; max_retained_messages {max_messages}, \
                 max_retained_bytes {max_bytes}): new retained messages are not stored",
                self.retained.len(),
                self.retained.bytes()
            );
        }
        false
    }

    /// Stores (or clears) a retained message and journals the change.
    pub(super) fn store_retained(&mut self, msg: &Arc<Message>, now: Instant) {
        self.retained.store(msg);
        if msg.payload.is_empty() {
            self.journal
                .record(Record::RetainClear { topic: &msg.topic });
        } else {
            let id = self.journal.message_id(msg, now);
            self.journal.record(Record::Retain {
                topic: &msg.topic,
                id,
            });
        }
    }

    /// Publishes a will as if its client had sent it (§3.1.2.5).
    pub(super) fn publish_will(&mut self, will: &Arc<Message>, now: Instant) {
        if !publish_allowed(&will.topic) {
            return;
        }
        if will.retain
            && self.config.retain_available
            && (will.payload.is_empty() || self.retained_room(&will.topic, will.stored_len()))
        {
            self.store_retained(will, now);
        }
        self.route(&mut Routed::from_message(will, now));
    }
}
