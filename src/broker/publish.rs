//! PUBLISH in and out: routing to subscribers, delivery within the inflight window, the
//! queue behind it, and the QoS 1/2 acknowledgement flows (§4.3).
//!
//! A message stays borrowed from the input buffer while it is routed. It is copied into an
//! `Arc<Message>` only when something must keep it (a queue, an inflight slot, the
//! retained store), and then once for all subscribers. QoS 0 to online subscribers is
//! encoded straight into their write buffers.

use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};

use super::message::Message;
use super::session::{Inflight, InflightState, Queued};
use super::subscriptions::SessionKey;
use super::{conn_slot, mark_transmit, Broker, ConnId, Lanes, ProtocolViolation};
use crate::auth;
use crate::protocol::{
    Ack, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
};
use crate::store::Record;

/// The message being routed: borrowed until a copy has to be kept.
pub(super) struct Routed<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
    shared: Option<Arc<Message>>,
}

impl<'a> Routed<'a> {
    fn from_publish(p: &Publish<'a>) -> Routed<'a> {
        Routed {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            shared: None,
        }
    }

    pub(super) fn from_message(m: &'a Arc<Message>) -> Routed<'a> {
        Routed {
            topic: &m.topic,
            payload: &m.payload,
            qos: m.qos,
            retain: m.retain,
            shared: Some(m.clone()),
        }
    }

    fn shared(&mut self) -> Arc<Message> {
        self.shared
            .get_or_insert_with(|| Message::new(self.topic, self.payload, self.qos, self.retain))
            .clone()
    }
}

fn ack(packet_id: PacketId) -> Ack<'static> {
    Ack {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    }
}

/// Clients may not publish to `$SYS` (Mosquitto denies it too); the message is dropped but
/// still acknowledged, as an ACL denial is in 3.1.1.
fn publish_allowed(topic: &str) -> bool {
    !(topic == "$SYS" || topic.starts_with("$SYS/"))
}

impl Broker {
    pub(super) fn handle_publish(&mut self, id: ConnId, p: Publish<'_>, now: Instant) -> bool {
        if p.topic.is_empty() {
            return self.violation(id, ProtocolViolation::EmptyTopic, now);
        }
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        self.stats.messages_received += 1;
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(pid)) => {
                self.accept_publish(key, &p);
                self.reply(id, &Packet::Puback(ack(pid)));
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                let Some(session) = self.sessions.get_mut(key) else {
                    return false;
                };
                // [MQTT-4.3.3-2] a PUBLISH with a packet id still awaiting PUBREL is a
                // retransmission: acknowledge it again, do not deliver it again.
                if !session.awaiting_pubrel.contains(&pid) {
                    session.awaiting_pubrel.push(pid);
                    if session.store_id != 0 {
                        let r = Record::AwaitPubrel {
                            session: session.store_id,
                            packet_id: pid.get(),
                        };
                        self.journal.record(r);
                    }
                    self.accept_publish(key, &p);
                }
                self.reply(id, &Packet::Pubrec(ack(pid)));
            }
            _ => self.accept_publish(key, &p),
        }
        true
    }

    /// Stores a retained message and routes the message to its subscribers. A message the
    /// publisher may not write, or over `message_size_limit`, is dropped here; the caller
    /// still acknowledges it, as 3.1.1 has no way to say no (Mosquitto does the same).
    fn accept_publish(&mut self, publisher: SessionKey, p: &Publish<'_>) {
        if !publish_allowed(p.topic) {
            return;
        }
        let limit = self.config.message_size_limit as usize;
        if limit > 0 && p.payload.len() > limit {
            debug!(
                "dropped a {}-byte message to {}: over message_size_limit",
                p.payload.len(),
                p.topic
            );
            return;
        }
        if !self.allowed(publisher, p.topic, auth::WRITE) {
            debug!("dropped a message to {}: not allowed by the ACL", p.topic);
            return;
        }
        let mut routed = Routed::from_publish(p);
        if p.retain && self.config.retain_available {
            let msg = routed.shared();
            self.store_retained(&msg);
        }
        self.route(&mut routed);
    }

    /// Stores (or clears) a retained message and journals the change.
    fn store_retained(&mut self, msg: &Arc<Message>) {
        self.retained.store(msg);
        if msg.payload.is_empty() {
            self.journal
                .record(Record::RetainClear { topic: &msg.topic });
        } else {
            let id = self.journal.message_id(msg);
            self.journal.record(Record::Retain {
                topic: &msg.topic,
                id,
            });
        }
    }

    /// Publishes a will as if its client had sent it (§3.1.2.5).
    pub(super) fn publish_will(&mut self, will: &Arc<Message>) {
        if !publish_allowed(&will.topic) {
            return;
        }
        if will.retain && self.config.retain_available {
            self.store_retained(will);
        }
        self.route(&mut Routed::from_message(will));
    }

    /// Delivers to every session with a matching subscription, once per session at the
    /// highest QoS of its matching subscriptions.
    pub(super) fn route(&mut self, routed: &mut Routed<'_>) {
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.subscriptions
            .collect_matches(routed.topic, &mut matches);
        if matches.len() > 1 {
            // Overlapping subscriptions of one session: deliver once, at the highest
            // granted QoS (the choice [MQTT-3.3.5-1] permits).
            matches.sort_unstable_by_key(|s| s.session);
            matches.dedup_by(|later, kept| {
                if later.session == kept.session {
                    kept.options.qos = kept.options.qos.max(later.options.qos);
                    true
                } else {
                    false
                }
            });
        }
        for m in &matches {
            // Read access is checked per delivered message, as Mosquitto does.
            if !self.allowed(m.session, routed.topic, auth::READ) {
                continue;
            }
            // [MQTT-3.8.4-6] delivered QoS is the minimum of published and granted QoS.
            let qos = routed.qos.min(m.options.qos);
            self.deliver(m.session, routed, qos, false);
        }
        self.matches = matches;
    }

    /// Sends one message to one session now if it can, queues it if it cannot.
    pub(super) fn deliver(
        &mut self,
        key: SessionKey,
        routed: &mut Routed<'_>,
        qos: QoS,
        retain: bool,
    ) {
        let max_inflight = usize::from(self.config.max_inflight_messages);
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let online = session
            .conn
            .and_then(|id| conn_slot(&mut self.conns, id).map(|c| (id, c)));
        match online {
            Some((id, conn)) if qos == QoS::AtMostOnce => {
                if conn.out.len() > self.config.max_write_buffer {
                    // Slow consumer: QoS 0 is dropped rather than buffered without bound.
                    self.stats.dropped_slow_consumer += 1;
                    if !conn.slow_logged {
                        conn.slow_logged = true;
                        warn!(
                            "client {} is not reading: dropping QoS 0 messages while {} bytes are unsent",
                            session.client_id,
                            conn.out.len()
                        );
                    }
                    return;
                }
                let publish = Publish {
                    dup: false,
                    qos,
                    retain,
                    topic: routed.topic,
                    packet_id: None,
                    properties: Properties::EMPTY,
                    payload: routed.payload,
                };
                publish.encode(conn.version.unwrap_or(ProtocolVersion::V311), &mut conn.out);
                mark_transmit(conn, id, &mut self.transmit);
                self.stats.messages_sent += 1;
            }
            Some((id, conn))
                if session.queue.is_empty()
                    && (max_inflight == 0 || session.inflight.len() < max_inflight) =>
            {
                let Some(packet_id) = session.allocate_packet_id() else {
                    return self.enqueue(key, routed, qos, retain);
                };
                let delivery = Queued {
                    msg: routed.shared(),
                    qos,
                    retain,
                };
                if session.store_id != 0 {
                    // Journal first: the delivery is held until this record is durable.
                    let id = self.journal.message_id(&delivery.msg);
                    let session = session.store_id;
                    let (packet_id, qos) = (packet_id.get(), qos as u8);
                    self.journal.record(Record::Inflight {
                        session,
                        packet_id,
                        id,
                        qos,
                        retain,
                    });
                }
                let mut lanes = Lanes {
                    transmit: &mut self.transmit,
                    journal: &self.journal,
                    held_conns: &mut self.held_conns,
                };
                let version = conn.version;
                encode_delivery(
                    version,
                    lanes.durable(conn, id),
                    packet_id,
                    &delivery,
                    false,
                );
                session.inflight.push_back(Inflight {
                    packet_id,
                    delivery,
                    state: initial_state(qos),
                });
                self.stats.messages_sent += 1;
            }
            Some(_) => self.enqueue(key, routed, qos, retain),
            None if qos > QoS::AtMostOnce || self.config.queue_qos0_messages => {
                self.enqueue(key, routed, qos, retain)
            }
            None => {}
        }
    }

    fn enqueue(&mut self, key: SessionKey, routed: &mut Routed<'_>, qos: QoS, retain: bool) {
        let limits = self.queue_limits();
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let msg = routed.shared();
        if session.enqueue(
            Queued {
                msg: msg.clone(),
                qos,
                retain,
            },
            limits,
        ) {
            if session.store_id != 0 {
                let id = self.journal.message_id(&msg);
                let r = Record::Enqueue {
                    session: session.store_id,
                    id,
                    qos: qos as u8,
                    retain,
                };
                self.journal.record(r);
            }
        } else {
            self.stats.dropped_queue_full += 1;
            if !session.overflow_logged {
                session.overflow_logged = true;
                warn!(
                    "queue of client {} is full ({} messages, {} bytes): dropping new messages until it drains",
                    session.client_id,
                    session.queue.len(),
                    session.queued_bytes
                );
            }
        }
    }

    /// Moves queued messages into the inflight window while it has room (after an ack, or
    /// when a session comes back online).
    pub(super) fn pump(&mut self, key: SessionKey) {
        let max_inflight = usize::from(self.config.max_inflight_messages);
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(id) = session.conn else { return };
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let store_id = session.store_id;
        let acl = self.auth.has_acl().then_some(&self.auth);
        while let Some(front) = session.queue.front() {
            if let Some(auth) = acl {
                let client = auth::Client {
                    username: session.username.as_deref(),
                    client_id: &session.client_id,
                };
                if !auth.check(client, &front.msg.topic, auth::READ) {
                    // Queued before a reload took the permission away.
                    session.dequeue();
                    if store_id != 0 {
                        self.journal.record(Record::Dequeue { session: store_id });
                    }
                    continue;
                }
            }
            let qos0 = front.qos == QoS::AtMostOnce;
            let packet_id = if qos0 {
                None
            } else if max_inflight != 0 && session.inflight.len() >= max_inflight {
                break;
            } else {
                match session.allocate_packet_id() {
                    Some(pid) => Some(pid),
                    None => break,
                }
            };
            let Some(q) = session.dequeue() else { break };
            if store_id != 0 {
                self.journal.record(match packet_id {
                    None => Record::Dequeue { session: store_id },
                    Some(pid) => Record::QueueToInflight {
                        session: store_id,
                        packet_id: pid.get(),
                    },
                });
            }
            let mut lanes = Lanes {
                transmit: &mut self.transmit,
                journal: &self.journal,
                held_conns: &mut self.held_conns,
            };
            let version = conn.version;
            let buf = lanes.durable(conn, id);
            match packet_id {
                None => {
                    let publish = Publish {
                        dup: false,
                        qos: QoS::AtMostOnce,
                        retain: q.retain,
                        topic: &q.msg.topic,
                        packet_id: None,
                        properties: Properties::EMPTY,
                        payload: &q.msg.payload,
                    };
                    publish.encode(version.unwrap_or(ProtocolVersion::V311), buf);
                }
                Some(packet_id) => {
                    encode_delivery(version, buf, packet_id, &q, false);
                    let state = initial_state(q.qos);
                    session.inflight.push_back(Inflight {
                        packet_id,
                        delivery: q,
                        state,
                    });
                }
            }
            self.stats.messages_sent += 1;
        }
    }

    pub(super) fn handle_puback(&mut self, id: ConnId, a: Ack<'_>) -> bool {
        self.complete_inflight(id, a.packet_id, InflightState::AwaitingPuback)
    }

    pub(super) fn handle_pubcomp(&mut self, id: ConnId, a: Ack<'_>) -> bool {
        self.complete_inflight(id, a.packet_id, InflightState::AwaitingPubcomp)
    }

    /// PUBREC: the message is received; release it with PUBREL [MQTT-4.3.3-1]. PUBREL is
    /// sent even for an unknown id so a client retrying PUBREC can finish its flow.
    pub(super) fn handle_pubrec(&mut self, id: ConnId, a: Ack<'_>) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        if let Some(session) = self.sessions.get_mut(key) {
            if let Some(i) = session.find_inflight(a.packet_id, InflightState::AwaitingPubrec) {
                session.inflight[i].state = InflightState::AwaitingPubcomp;
                if session.store_id != 0 {
                    let r = Record::Pubrec {
                        session: session.store_id,
                        packet_id: a.packet_id.get(),
                    };
                    self.journal.record(r);
                }
            }
        }
        self.reply(id, &Packet::Pubrel(ack(a.packet_id)));
        true
    }

    /// PUBREL: the inbound QoS 2 flow ends; the id may be reused [MQTT-4.3.3-2].
    pub(super) fn handle_pubrel(&mut self, id: ConnId, a: Ack<'_>) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        if let Some(session) = self.sessions.get_mut(key) {
            let before = session.awaiting_pubrel.len();
            session.awaiting_pubrel.retain(|p| *p != a.packet_id);
            if session.store_id != 0 && session.awaiting_pubrel.len() != before {
                let r = Record::Released {
                    session: session.store_id,
                    packet_id: a.packet_id.get(),
                };
                self.journal.record(r);
            }
        }
        self.reply(id, &Packet::Pubcomp(ack(a.packet_id)));
        true
    }

    /// Ends an outbound flow and lets the next queued message into the window. An ack for
    /// an id not in flight is ignored.
    fn complete_inflight(&mut self, id: ConnId, pid: PacketId, state: InflightState) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        if let Some(session) = self.sessions.get_mut(key) {
            if let Some(i) = session.find_inflight(pid, state) {
                session.inflight.remove(i);
                if session.store_id != 0 {
                    let r = Record::InflightDone {
                        session: session.store_id,
                        packet_id: pid.get(),
                    };
                    self.journal.record(r);
                }
                self.pump(key);
            }
        }
        true
    }

    /// Sends an acknowledgement, held until the turn's records are durable.
    fn reply(&mut self, id: ConnId, packet: &Packet<'_>) {
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            let mut lanes = Lanes {
                transmit: &mut self.transmit,
                journal: &self.journal,
                held_conns: &mut self.held_conns,
            };
            lanes.send(conn, id, packet);
        }
    }
}

fn initial_state(qos: QoS) -> InflightState {
    if qos == QoS::ExactlyOnce {
        InflightState::AwaitingPubrec
    } else {
        InflightState::AwaitingPuback
    }
}

pub(super) fn encode_delivery(
    version: Option<ProtocolVersion>,
    out: &mut Vec<u8>,
    packet_id: PacketId,
    q: &Queued,
    dup: bool,
) {
    let publish = Publish {
        dup,
        qos: q.qos,
        retain: q.retain,
        topic: &q.msg.topic,
        packet_id: Some(packet_id),
        properties: Properties::EMPTY,
        payload: &q.msg.payload,
    };
    publish.encode(version.unwrap_or(ProtocolVersion::V311), out);
}
