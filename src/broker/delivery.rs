//! Outbound PUBLISH: encoding a delivery for one connection, the inflight window, the
//! queue behind it and the pump that moves queued messages into the window (§4.3). QoS 0
//! to online subscribers is encoded straight into their write buffers.
//!
//! MQTT 5 on the way out: each delivery to a 5.0 client carries the message's forwarded
//! properties, the time left before it expires, and the identifiers of the subscriptions it
//! matched; a delivery larger than the client's maximum packet size is dropped for that
//! client [MQTT-3.1.2-25]. 3.1.1 clients get none of that, at no cost.

use std::time::Instant;

use log::warn;

use super::journal::Journal;
use super::message::Message;
use super::ondisk;
use super::output::Output;
use super::routing::Routed;
use super::session::{Inflight, InflightState, QueueLimits, Queued, Session};
use super::subscriptions::SessionKey;
use super::{conn_slot, Broker, Conn, ConnId, Stats};
use crate::auth;
use crate::protocol::{
    PacketId, Properties, PropertiesBuf, Property, ProtocolVersion, Publish, QoS,
};
use crate::store::Record;

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

impl Broker {
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
            .conn()
            .and_then(|id| conn_slot(&mut self.conns, id).map(|c| (id, c)));
        match online {
            Some((id, conn)) if qos == QoS::AtMostOnce => {
                if conn.out.buf().len() > self.config.max_write_buffer {
                    // Slow consumer: QoS 0 is dropped rather than buffered without bound.
                    self.stats.dropped_slow_consumer += 1;
                    if !conn.slow_logged {
                        conn.slow_logged = true;
                        warn!(
                            "client {} is not reading: dropping QoS 0 messages while {} bytes are unsent",
                            session.client_id,
                            conn.out.buf().len()
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
                // Straight to the write buffer, unless output is held (see `Output::delivery`).
                let buf = self.output.delivery(&mut conn.out, id, qos, &self.journal);
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
                    self.stats.publish_bytes_sent += o.payload.len() as u64;
                }
            }
            Some((id, conn)) if !session.has_queued() && session.inflight().len() < window => {
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
                // Journal first: a QoS 2 delivery is held until this record is durable.
                let msg = &delivery.msg;
                self.journal
                    .session_message(session, msg, now, |session, id| Record::Inflight {
                        session,
                        packet_id: packet_id.get(),
                        id,
                        qos: qos as u8,
                        retain,
                    });
                send_into_inflight(
                    (&mut self.output, &self.journal),
                    &mut self.scratch_props,
                    &mut self.stats,
                    session,
                    (id, conn),
                    delivery,
                    Some(packet_id),
                    now,
                );
            }
            Some(_) => self.enqueue(key, routed, qos, retain, sub_ids),
            // QoS 0 for an offline session is dropped [MQTT-3.1.2-5] unless configured
            // otherwise, or the session is a bridge whose uplink is up.
            None if qos > QoS::AtMostOnce
                || self.config.queue_qos0_messages
                || self.bridges_up.contains(&key) =>
            {
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
            .and_then(|s| s.conn())
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
        let bridge = self.bridge_queue_of(key);
        let msg = routed.shared(&self.meter);
        let limits = match bridge {
            // A bridge's queue has caps and a policy of its own (`bridge_queue.rs`).
            Some(i) if !self.bridge_admits(i, msg.stored_len()) => {
                return self.bridge_queue_refused(i)
            }
            Some(_) => QueueLimits::default(),
            None => self.queue_limits(),
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.enqueue(
            Queued {
                msg: msg.clone(),
                qos,
                retain,
                sub_ids: sub_ids.into(),
            },
            limits,
        ) {
            self.queued_entries += 1;
            let qos = qos as u8;
            self.journal
                .session_message(session, &msg, routed.now, |session, id| Record::Enqueue {
                    session,
                    id,
                    qos,
                    retain,
                });
            // An offline persistent session's queue moves to disk once written
            // (`ondisk.rs`).
            self.list_for_spill(key);
        } else if let Some(i) = bridge {
            self.bridge_queue_refused(i);
        } else {
            self.stats.dropped_queue_full += 1;
            if session.overflow_episode_starts() {
                warn!(
                    "queue of client {} is full ({} messages, {} bytes): dropping new messages until it drains",
                    session.client_id,
                    session.queued_len(),
                    session.queued_bytes()
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
            if let Some(id) = s.conn() {
                self.resend_inflight(key, id, window, now);
            }
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(id) = session.conn() else { return };
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let acl = self.auth.has_acl().then_some(&self.auth);
        loop {
            if session.needs_load() {
                // Read ahead what the window can take, and at least a batch (`ondisk.rs`).
                let room = window.saturating_sub(session.inflight().len());
                let n = room.max(ondisk::LOAD_AHEAD);
                let wall = self.journal.wall;
                self.queued_entries +=
                    ondisk::load_front(&mut self.disk, session, n, &self.meter, wall, now);
            }
            let Some(front) = session.front() else { break };
            let readable = acl.is_none_or(|auth| {
                let client = auth::Client {
                    username: session.username.as_deref(),
                    client_id: &session.client_id,
                };
                auth.check(session.listener, client, &front.msg.topic, auth::READ)
            });
            // [MQTT-3.3.2-5] an expired message is not delivered.
            if !readable
                || front.msg.is_expired(now)
                || !fits(conn, &mut self.scratch_props, front, now)
            {
                take_front(&mut self.journal, &mut self.queued_entries, session, None);
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
            let Some(q) = take_front(
                &mut self.journal,
                &mut self.queued_entries,
                session,
                packet_id,
            ) else {
                break;
            };
            send_into_inflight(
                (&mut self.output, &self.journal),
                &mut self.scratch_props,
                &mut self.stats,
                session,
                (id, conn),
                q,
                packet_id,
                now,
            );
        }
    }
}

/// Takes the front of `session`'s queue, counted and journaled: into the inflight window
/// under `packet_id` (QoS 1/2: `QueueToInflight`, the caller then records the flow) or out
/// of the queue for good (QoS 0, expired or not deliverable: `Dequeue`). Shared by the
/// pump and the bridge's uplink (`bridge_session.rs`).
#[inline]
pub(super) fn take_front(
    journal: &mut Journal,
    queued_entries: &mut usize,
    session: &mut Session,
    packet_id: Option<PacketId>,
) -> Option<Queued> {
    let q = session.dequeue()?;
    *queued_entries = queued_entries.saturating_sub(1);
    journal.session(session, |session| match packet_id {
        None => Record::Dequeue { session },
        Some(pid) => Record::QueueToInflight {
            session,
            packet_id: pid.get(),
        },
    });
    Some(q)
}

/// The one step `deliver` and `pump` share: encodes `q` for the connection by QoS
/// ([`Output::delivery`]) and, with a packet id (QoS 1/2), moves it into the session's inflight window. The
/// caller has allocated the id, checked the window and journaled the move.
#[allow(clippy::too_many_arguments)] // disjoint borrows of the broker's fields
#[inline]
fn send_into_inflight(
    (output, journal): (&mut Output, &Journal),
    scratch: &mut PropertiesBuf,
    stats: &mut Stats,
    session: &mut Session,
    (id, conn): (ConnId, &mut Conn),
    q: Queued,
    packet_id: Option<PacketId>,
    now: Instant,
) {
    let (version, max) = (conn.version, conn.max_packet());
    let payload_len = q.msg.payload.len();
    let buf = output.delivery(&mut conn.out, id, q.qos, journal);
    encode_publish(
        version,
        max,
        scratch,
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
    stats.messages_sent += 1;
    stats.publish_bytes_sent += payload_len as u64;
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
