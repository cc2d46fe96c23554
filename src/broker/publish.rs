//! PUBLISH in and out: routing to subscribers, delivery within the inflight window, the
//! queue behind it, and the QoS 1/2 acknowledgement flows (§4.3).
//!
//! A message stays borrowed from the input buffer while it is routed. It is copied into an
//! `Arc<Message>` only when something must keep it (a queue, an inflight slot, the
//! retained store) or when it carries MQTT 5 properties, and then once for all
//! subscribers. QoS 0 to online subscribers is encoded straight into their write buffers.
//!
//! MQTT 5 on the way out: each delivery to a 5.0 client carries the message's forwarded
//! properties, the time left before it expires, and the identifiers of the subscriptions it
//! matched; a delivery larger than the client's maximum packet size is dropped for that
//! client [MQTT-3.1.2-25]. 3.1.1 clients get none of that, at no cost.

use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};

use super::message::{self, Message, Meter};
use super::session::{Inflight, InflightState, Queued};
use super::subscriptions::{SessionKey, Subscriber};
use super::{conn_slot, Broker, CloseReason, Conn, ConnId, ProtocolViolation, TOPIC_ALIAS_MAXIMUM};
use crate::auth;
use crate::protocol::{
    Ack, Packet, PacketId, Properties, PropertiesBuf, Property, ProtocolVersion, Publish, QoS,
    ReasonCode,
};
use crate::store::Record;

/// The message being routed: borrowed until a copy has to be kept.
pub(super) struct Routed<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
    /// The publishing session, for the no-local option [MQTT-3.8.3-3].
    origin: Option<SessionKey>,
    now: Instant,
    shared: Option<Arc<Message>>,
}

impl<'a> Routed<'a> {
    fn from_publish(
        meter: &Arc<Meter>,
        p: &Publish<'a>,
        topic: &'a str,
        origin: SessionKey,
        now: Instant,
    ) -> Routed<'a> {
        let mut routed = Routed {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            origin: Some(origin),
            now,
            shared: None,
        };
        if !p.properties.is_empty() {
            // A 5.0 message with properties is kept at once: every delivery needs its
            // filtered properties and expiry.
            let (properties, expires_at) = message::forwarded(&p.properties, now);
            routed.shared = Some(Message::metered(
                meter, topic, p.payload, p.qos, p.retain, properties, expires_at,
            ));
        }
        routed
    }

    pub(super) fn from_message(m: &'a Arc<Message>, now: Instant) -> Routed<'a> {
        Routed {
            topic: &m.topic,
            payload: &m.payload,
            qos: m.qos,
            retain: m.retain,
            origin: None,
            now,
            shared: Some(m.clone()),
        }
    }

    /// The message as an `Arc`, made (and counted in `meter`) the first time something
    /// must keep it.
    fn shared(&mut self, meter: &Arc<Meter>) -> Arc<Message> {
        self.shared
            .get_or_insert_with(|| {
                let (topic, payload) = (self.topic, self.payload);
                Message::metered(
                    meter,
                    topic,
                    payload,
                    self.qos,
                    self.retain,
                    Box::default(),
                    None,
                )
            })
            .clone()
    }
}

/// One outbound PUBLISH, before it is encoded for a particular connection.
pub(super) struct Outgoing<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub msg: Option<&'a Message>,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    pub sub_ids: &'a [u32],
}

impl Outgoing<'_> {
    pub(super) fn of_queued(q: &Queued, dup: bool) -> Outgoing<'_> {
        Outgoing {
            topic: &q.msg.topic,
            payload: &q.msg.payload,
            msg: Some(&q.msg),
            qos: q.qos,
            retain: q.retain,
            dup,
            sub_ids: &q.sub_ids,
        }
    }
}

/// Encodes `o` for a connection of `version` into `out` (`None`: only check the size).
/// Returns false, writing nothing, when the packet would exceed the client's maximum packet
/// size [MQTT-3.1.2-25].
pub(super) fn encode_publish(
    version: Option<ProtocolVersion>,
    max_packet: u32,
    scratch: &mut PropertiesBuf,
    out: Option<&mut Vec<u8>>,
    o: &Outgoing<'_>,
    packet_id: Option<PacketId>,
    now: Instant,
) -> bool {
    let version = version.unwrap_or(ProtocolVersion::V311);
    let mut publish = Publish {
        dup: o.dup,
        qos: o.qos,
        retain: o.retain,
        topic: o.topic,
        packet_id,
        properties: Properties::EMPTY,
        payload: o.payload,
    };
    if version != ProtocolVersion::V5 {
        if let Some(out) = out {
            publish.encode(version, out);
        }
        return true;
    }
    scratch.clear();
    if let Some(m) = o.msg {
        scratch.extend_encoded(&m.properties);
        if let Some(left) = m.remaining_expiry(now) {
            scratch.push(Property::MessageExpiryInterval(left));
        }
    }
    for id in o.sub_ids {
        scratch.push(Property::SubscriptionIdentifier(*id));
    }
    publish.properties = scratch.as_properties();
    if publish.encoded_len(version) > max_packet as usize {
        return false;
    }
    if let Some(out) = out {
        publish.encode(version, out);
    }
    true
}

fn ack(packet_id: PacketId, reason: ReasonCode) -> Ack<'static> {
    Ack {
        packet_id,
        reason,
        properties: Properties::EMPTY,
    }
}

/// Clients may not publish to `$SYS` (Mosquitto denies it too), nor to `$share/...`.
fn publish_allowed(topic: &str) -> bool {
    !(topic == "$SYS" || topic.starts_with("$SYS/") || topic.starts_with("$share/"))
}

/// Why an accepted PUBLISH reached nobody, for the 5.0 PUBACK/PUBREC reason code.
enum Outcome {
    Delivered,
    NoSubscribers,
    NotAuthorized,
    /// Not accepted: a bound was reached (5.0 only).
    QuotaExceeded,
}

impl Broker {
    pub(super) fn handle_publish(&mut self, id: ConnId, p: Publish<'_>, now: Instant) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let Some(key) = conn.session else {
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
        // A retained clear frees memory, so it is let through.
        if !(p.retain && p.payload.is_empty()) && self.check_memory() {
            return self.refuse_over_memory(id, key, &p, v5, now);
        }
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(pid)) => {
                let outcome = self.accept_publish(key, &p, topic, v5, now);
                let reason = if v5 {
                    outcome_code(outcome)
                } else {
                    ReasonCode::SUCCESS
                };
                self.reply(id, &Packet::Puback(ack(pid, reason)));
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
                        self.reply(id, &Packet::Pubrec(ack(pid, reason)));
                        return true;
                    }
                    session.awaiting_pubrel_mut().push(pid);
                    if session.store_id != 0 {
                        let r = Record::AwaitPubrel {
                            session: session.store_id,
                            packet_id: pid.get(),
                        };
                        self.journal.record(r);
                    }
                    let outcome = self.accept_publish(key, &p, topic, v5, now);
                    // PUBREC says only "not authorized" or "quota exceeded"; like Mosquitto
                    // it does not report a missing subscriber (0x10 is allowed but tells
                    // the client nothing it can act on before PUBREL).
                    if v5 && matches!(outcome, Outcome::NotAuthorized | Outcome::QuotaExceeded) {
                        reason = outcome_code(outcome);
                        // [MQTT-4.3.3-4] a PUBREC with an error code ends the flow: no
                        // PUBREL follows, and the id may be used for a new message.
                        self.forget_pubrel(key, pid);
                    }
                }
                self.reply(id, &Packet::Pubrec(ack(pid, reason)));
            }
            _ => {
                self.accept_publish(key, &p, topic, v5, now);
            }
        }
        true
    }

    /// A PUBLISH while the broker is over `memory_limit`. Mosquitto, whose allocations fail
    /// at its `memory_limit`, closes the connection of a client whose message it cannot
    /// store ("disconnected due to out of memory"). wrenmq drops QoS 0 (nothing promised
    /// it); refuses QoS 1/2 from a 5.0 client with PUBACK/PUBREC 0x97 quota exceeded,
    /// which ends the flow [MQTT-4.3.3-4] and keeps the connection; and closes a 3.1.1
    /// client's connection as Mosquitto does, since PUBACK would claim a delivery that did
    /// not happen. A QoS 2 retransmission already accepted is still acknowledged.
    fn refuse_over_memory(
        &mut self,
        id: ConnId,
        key: SessionKey,
        p: &Publish<'_>,
        v5: bool,
        now: Instant,
    ) -> bool {
        let (Some(pid), true) = (p.packet_id, p.qos > QoS::AtMostOnce) else {
            self.stats.dropped_memory_limit += 1;
            return true;
        };
        let retransmission = p.qos == QoS::ExactlyOnce
            && self
                .sessions
                .get(key)
                .is_some_and(|s| s.awaiting_pubrel().contains(&pid));
        if retransmission {
            self.reply(id, &Packet::Pubrec(ack(pid, ReasonCode::SUCCESS)));
            return true;
        }
        self.stats.dropped_memory_limit += 1;
        if !v5 {
            self.close(id, CloseReason::MemoryLimit, now, true);
            return false;
        }
        let reply = ack(pid, ReasonCode::QUOTA_EXCEEDED);
        if p.qos == QoS::AtLeastOnce {
            self.reply(id, &Packet::Puback(reply));
        } else {
            self.reply(id, &Packet::Pubrec(reply));
        }
        true
    }

    /// Drops `pid` from the session's inbound QoS 2 ids awaiting PUBREL.
    fn forget_pubrel(&mut self, key: SessionKey, pid: PacketId) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.awaiting_pubrel_mut().retain(|p| *p != pid);
        if session.store_id != 0 {
            self.journal.record(Record::Released {
                session: session.store_id,
                packet_id: pid.get(),
            });
        }
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
    fn accept_publish(
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
    fn store_retained(&mut self, msg: &Arc<Message>, now: Instant) {
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

    /// Delivers to every session with a matching subscription, once per session at the
    /// highest QoS of its matching subscriptions, and to one member of each matching
    /// shared group. Returns the number of sessions it went to.
    pub(super) fn route(&mut self, routed: &mut Routed<'_>) -> usize {
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.subscriptions
            .collect_matches(routed.topic, &mut matches);
        if let Some(origin) = routed.origin {
            // [MQTT-3.8.3-3] no local: not back to the session that published it.
            matches.retain(|m| !(m.options.no_local && m.session == origin));
        }
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|s| s.session);
        }
        let mut delivered = 0;
        let mut ids: Vec<u32> = Vec::new();
        let mut i = 0;
        while i < matches.len() {
            // Overlapping subscriptions of one session: deliver once, at the highest
            // granted QoS, with every matching subscription identifier [MQTT-3.3.4-3/5].
            let first = matches[i];
            let (mut qos, mut rap) = (first.options.qos, first.options.retain_as_published);
            ids.clear();
            let mut j = i;
            while j < matches.len() && matches[j].session == first.session {
                let m = matches[j];
                qos = qos.max(m.options.qos);
                rap |= m.options.retain_as_published;
                if m.id != 0 {
                    ids.push(m.id);
                }
                j += 1;
            }
            i = j;
            // Read access is checked per delivered message, as Mosquitto does.
            if !self.allowed(first.session, routed.topic, auth::READ) {
                continue;
            }
            // [MQTT-3.8.4-6] delivered QoS is the minimum of published and granted QoS;
            // RETAIN is kept only for "retain as published" [MQTT-3.3.1-12/13].
            let qos = routed.qos.min(qos);
            self.deliver(first.session, routed, qos, rap && routed.retain, &ids);
            delivered += 1;
        }
        self.matches = matches;
        if self.subscriptions.has_shared() {
            delivered += self.route_shared(routed);
        }
        delivered
    }

    /// Shared subscriptions: each matching group gets the message once, round robin among
    /// its members, preferring members that are online (a message that cannot go to one
    /// member right now goes to another); only when no member is online does it wait in the
    /// next member's queue.
    fn route_shared(&mut self, routed: &mut Routed<'_>) -> usize {
        let groups: Vec<usize> = self.subscriptions.shared_matches(routed.topic).collect();
        let mut delivered = 0;
        for g in groups {
            let Some(group) = self.subscriptions.shared_group_mut(g) else {
                continue;
            };
            let n = group.members.len();
            if n == 0 {
                continue;
            }
            let start = group.next % n;
            let online = |s: &Subscriber| {
                self.sessions
                    .get(s.session)
                    .is_some_and(|x| x.conn.is_some())
            };
            let pick = (0..n)
                .map(|k| (start + k) % n)
                .find(|&k| online(&group.members[k]))
                .unwrap_or(start);
            group.next = pick + 1;
            let member: Subscriber = group.members[pick];
            if !self.allowed(member.session, routed.topic, auth::READ) {
                continue;
            }
            let ids: &[u32] = if member.id != 0 { &[member.id] } else { &[] };
            let qos = routed.qos.min(member.options.qos);
            let retain = member.options.retain_as_published && routed.retain;
            self.deliver(member.session, routed, qos, retain, ids);
            delivered += 1;
        }
        delivered
    }

    /// Sends one message to one session now if it can, queues it if it cannot.
    pub(super) fn deliver(
        &mut self,
        key: SessionKey,
        routed: &mut Routed<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: &[u32],
    ) {
        let window = self.window(key);
        let now = routed.now;
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
                let o = Outgoing {
                    topic: routed.topic,
                    payload: routed.payload,
                    msg: routed.shared.as_deref(),
                    qos,
                    retain,
                    dup: false,
                    sub_ids,
                };
                let (version, max) = (conn.version, conn.max_packet());
                // Straight to the write buffer, unless output is held (see `Lanes::delivery`).
                let buf = lanes!(self).delivery(conn, id, qos);
                if encode_publish(
                    version,
                    max,
                    &mut self.scratch_props,
                    Some(buf),
                    &o,
                    None,
                    now,
                ) {
                    self.stats.messages_sent += 1;
                }
            }
            Some((id, conn)) if session.queue().is_empty() && session.inflight().len() < window => {
                let Some(packet_id) = session.allocate_packet_id() else {
                    return self.enqueue(key, routed, qos, retain, sub_ids);
                };
                let delivery = Queued {
                    msg: routed.shared(&self.meter),
                    qos,
                    retain,
                    sub_ids: sub_ids.into(),
                };
                if !fits(conn, &mut self.scratch_props, &delivery, now) {
                    // [MQTT-3.1.2-25] too large for this client: dropped as if delivered.
                    return;
                }
                if session.store_id != 0 {
                    // Journal first: the delivery is held until this record is durable.
                    let id = self.journal.message_id(&delivery.msg, now);
                    let (session, packet_id, qos) = (session.store_id, packet_id.get(), qos as u8);
                    self.journal.record(Record::Inflight {
                        session,
                        packet_id,
                        id,
                        qos,
                        retain,
                    });
                }
                let mut lanes = lanes!(self);
                let (version, max) = (conn.version, conn.max_packet());
                let buf = lanes.delivery(conn, id, qos);
                encode_publish(
                    version,
                    max,
                    &mut self.scratch_props,
                    Some(buf),
                    &Outgoing::of_queued(&delivery, false),
                    Some(packet_id),
                    now,
                );
                session.inflight_mut().push_back(Inflight {
                    packet_id,
                    delivery,
                    state: initial_state(qos),
                });
                self.stats.messages_sent += 1;
            }
            Some(_) => self.enqueue(key, routed, qos, retain, sub_ids),
            None if qos > QoS::AtMostOnce || self.config.queue_qos0_messages => {
                self.enqueue(key, routed, qos, retain, sub_ids)
            }
            None => {}
        }
    }

    /// The session's outbound QoS 1/2 window: `max_inflight_messages`, and for a 5.0 client
    /// no more than its receive maximum.
    fn window(&mut self, key: SessionKey) -> usize {
        let configured = match self.config.max_inflight_messages {
            0 => usize::from(u16::MAX),
            n => usize::from(n),
        };
        let client = self
            .sessions
            .get(key)
            .and_then(|s| s.conn)
            .and_then(|id| conn_slot(&mut self.conns, id))
            .and_then(|c| c.v5.as_ref().map(|v| usize::from(v.receive_maximum)));
        client.map_or(configured, |c| configured.min(c))
    }

    fn enqueue(
        &mut self,
        key: SessionKey,
        routed: &mut Routed<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: &[u32],
    ) {
        let limits = self.queue_limits();
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let msg = routed.shared(&self.meter);
        if session.enqueue(
            Queued {
                msg: msg.clone(),
                qos,
                retain,
                sub_ids: sub_ids.into(),
            },
            limits,
        ) {
            if session.store_id != 0 {
                let id = self.journal.message_id(&msg, routed.now);
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
                    session.queue().len(),
                    session.queued_bytes
                );
            }
        }
    }

    /// Moves queued messages into the inflight window while it has room (after an ack, or
    /// when a session comes back online). Expired messages, messages too large for the
    /// client and messages a reload no longer lets it read are dropped on the way.
    pub(super) fn pump(&mut self, key: SessionKey, now: Instant) {
        let window = self.window(key);
        // Messages in flight from an earlier connection go first.
        if let Some(s) = self.sessions.get(key).filter(|s| s.unsent > 0) {
            if let Some(id) = s.conn {
                self.resend_inflight(key, id, window, now);
            }
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(id) = session.conn else { return };
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let store_id = session.store_id;
        let acl = self.auth.has_acl().then_some(&self.auth);
        while let Some(front) = session.queue().front() {
            let readable = acl.is_none_or(|auth| {
                let client = auth::Client {
                    username: session.username.as_deref(),
                    client_id: &session.client_id,
                };
                auth.check(client, &front.msg.topic, auth::READ)
            });
            // [MQTT-3.3.2-5] an expired message is not delivered.
            if !readable
                || front.msg.is_expired(now)
                || !fits(conn, &mut self.scratch_props, front, now)
            {
                session.dequeue();
                if store_id != 0 {
                    self.journal.record(Record::Dequeue { session: store_id });
                }
                continue;
            }
            let packet_id = if front.qos == QoS::AtMostOnce {
                None
            } else if session.inflight().len() >= window {
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
            let mut lanes = lanes!(self);
            let (version, max) = (conn.version, conn.max_packet());
            let buf = lanes.delivery(conn, id, q.qos);
            encode_publish(
                version,
                max,
                &mut self.scratch_props,
                Some(buf),
                &Outgoing::of_queued(&q, false),
                packet_id,
                now,
            );
            if let Some(packet_id) = packet_id {
                let state = initial_state(q.qos);
                session.inflight_mut().push_back(Inflight {
                    packet_id,
                    delivery: q,
                    state,
                });
            }
            self.stats.messages_sent += 1;
        }
    }

    pub(super) fn handle_puback(&mut self, id: ConnId, a: Ack<'_>, now: Instant) -> bool {
        self.complete_inflight(id, a.packet_id, InflightState::AwaitingPuback, now)
    }

    pub(super) fn handle_pubcomp(&mut self, id: ConnId, a: Ack<'_>, now: Instant) -> bool {
        self.complete_inflight(id, a.packet_id, InflightState::AwaitingPubcomp, now)
    }

    /// PUBREC: the message is received; release it with PUBREL [MQTT-4.3.3-1]. PUBREL is
    /// sent even for an unknown id so a client retrying PUBREC can finish its flow (5.0
    /// says so with 0x92). A PUBREC with a failure code ends the flow [MQTT-4.3.3-4].
    pub(super) fn handle_pubrec(&mut self, id: ConnId, a: Ack<'_>, now: Instant) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        if a.reason.is_error() {
            return self.complete_inflight(id, a.packet_id, InflightState::AwaitingPubrec, now);
        }
        let mut known = false;
        if let Some(session) = self.sessions.get_mut(key) {
            if let Some(i) = session.find_inflight(a.packet_id, InflightState::AwaitingPubrec) {
                session.inflight_mut()[i].state = InflightState::AwaitingPubcomp;
                if session.store_id != 0 {
                    let r = Record::Pubrec {
                        session: session.store_id,
                        packet_id: a.packet_id.get(),
                    };
                    self.journal.record(r);
                }
                known = true;
            } else {
                known = session
                    .find_inflight(a.packet_id, InflightState::AwaitingPubcomp)
                    .is_some();
            }
        }
        let reason = self.packet_id_reason(id, known);
        self.reply(id, &Packet::Pubrel(ack(a.packet_id, reason)));
        true
    }

    /// PUBREL: the inbound QoS 2 flow ends; the id may be reused [MQTT-4.3.3-2].
    pub(super) fn handle_pubrel(&mut self, id: ConnId, a: Ack<'_>) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        let mut known = false;
        if let Some(session) = self.sessions.get_mut(key) {
            let before = session.awaiting_pubrel().len();
            session.awaiting_pubrel_mut().retain(|p| *p != a.packet_id);
            known = session.awaiting_pubrel().len() != before;
            if session.store_id != 0 && known {
                let r = Record::Released {
                    session: session.store_id,
                    packet_id: a.packet_id.get(),
                };
                self.journal.record(r);
            }
            session.release_idle_flows();
        }
        let reason = self.packet_id_reason(id, known);
        self.reply(id, &Packet::Pubcomp(ack(a.packet_id, reason)));
        true
    }

    /// Ends an outbound flow and lets the next queued message into the window. An ack for
    /// an id not in flight is ignored.
    fn complete_inflight(
        &mut self,
        id: ConnId,
        pid: PacketId,
        state: InflightState,
        now: Instant,
    ) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        if let Some(session) = self.sessions.get_mut(key) {
            if let Some(i) = session.find_inflight(pid, state) {
                // An acknowledgement of a message not resent on this connection yet (it
                // had arrived before the reconnect).
                if i >= session.inflight().len() - session.unsent.min(session.inflight().len()) {
                    session.unsent = session.unsent.saturating_sub(1);
                }
                session.inflight_mut().remove(i);
                if session.store_id != 0 {
                    let r = Record::InflightDone {
                        session: session.store_id,
                        packet_id: pid.get(),
                    };
                    self.journal.record(r);
                }
                self.pump(key, now);
                if let Some(session) = self.sessions.get_mut(key) {
                    session.release_idle_flows();
                }
            }
        }
        true
    }

    /// The reason code of a PUBREL/PUBCOMP answering an id: 0x92 "packet identifier not
    /// found" for a 5.0 client when the id was unknown, success otherwise.
    fn packet_id_reason(&mut self, id: ConnId, known: bool) -> ReasonCode {
        let v5 = conn_slot(&mut self.conns, id).is_some_and(|c| c.v5.is_some());
        if known || !v5 {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        }
    }

    /// Sends an acknowledgement, held until the turn's records are durable.
    pub(super) fn reply(&mut self, id: ConnId, packet: &Packet<'_>) {
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            let mut lanes = lanes!(self);
            lanes.send(conn, id, packet);
        }
    }
}

/// The 5.0 reason code of a PUBACK/PUBREC for an accepted message.
fn outcome_code(o: Outcome) -> ReasonCode {
    match o {
        Outcome::Delivered => ReasonCode::SUCCESS,
        Outcome::NoSubscribers => ReasonCode::NO_MATCHING_SUBSCRIBERS,
        Outcome::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
        Outcome::QuotaExceeded => ReasonCode::QUOTA_EXCEEDED,
    }
}

/// Whether `q` fits the client's maximum packet size (always, for 3.1.1 clients).
fn fits(conn: &Conn, scratch: &mut PropertiesBuf, q: &Queued, now: Instant) -> bool {
    let max = conn.max_packet();
    if max == u32::MAX {
        return true;
    }
    encode_publish(
        conn.version,
        max,
        scratch,
        None,
        &Outgoing::of_queued(q, false),
        PacketId::new(1),
        now,
    )
}

fn initial_state(qos: QoS) -> InflightState {
    if qos == QoS::ExactlyOnce {
        InflightState::AwaitingPubrec
    } else {
        InflightState::AwaitingPuback
    }
}
