//! The local side of a bridge (issue 14): an internal session of the broker, with no
//! connection, that stands for the bridge.
//!
//! - It is an ordinary persistent session (client id `local_clientid`, by default
//!   `<hostname>.<connection name>` as in Mosquitto), subscribed to the local filters of
//!   the `out`/`both` topic lines with No Local [MQTT-3.8.3-3] and Retain As Published, so
//!   it never receives what the bridge itself publishes locally (loop prevention on
//!   `both`) and keeps the RETAIN flag of what it forwards. Retain Handling is "never":
//!   a filter new to the session gets the matching retained messages queued once
//!   instead, so the upstream learns the current state, and a reconnect or restart
//!   replays nothing (only changes are queued, live).
//! - Since it never has a connection, everything routed to it is queued. Its queue *is*
//!   the bridge's outbound store-and-forward queue: journaled, spilled to disk as 16-byte
//!   entries once written (`ondisk.rs`), rebuilt after a restart. No second queue exists.
//! - [`Broker::bridge_take`] moves up to `n` queued messages into the session's inflight
//!   list, each under a packet id allocated by the session (journaled
//!   `QueueToInflight`): that id is the one used upstream, so the inflight list is the
//!   persisted packet-id map, and a restart resumes QoS 2 at PUBREL
//!   ([`Broker::bridge_inflight`]). Payloads kept on disk are read back through the same
//!   loader as deliveries to clients.
//! - [`Broker::bridge_pubrec`] and [`Broker::bridge_done`] record the upstream's PUBREC
//!   and PUBACK/PUBCOMP durably (`Pubrec`, `InflightDone`).
//! - [`Broker::bridge_publish`] publishes an inbound (`in`) message as the session;
//!   [`BridgeDurable`] tells the caller when to acknowledge it upstream. An inbound QoS 2
//!   packet id is the session's inbound QoS 2 state, journaled like a client's
//!   (`AwaitPubrel`, `Released`): [`Broker::bridge_receive_qos2`] before the publish (same
//!   batch), [`Broker::bridge_released`] at PUBREL, [`Broker::bridge_awaiting_pubrel`]
//!   after a restart.
//! - The queue's caps and the policy at them (refuse publishers, never drop what was
//!   acknowledged) are in `bridge_queue.rs`; they count what is queued and in flight.
//! - MQTT 5 Message Expiry: what expired while queued is dropped by
//!   [`Broker::bridge_take`] [MQTT-3.3.2-5]; [`BridgeOut::msg`] carries the deadline the
//!   broker keeps for every queued message (stored with the time it was written, so the
//!   wait counts across restarts), and the uplink sends `Message::remaining_expiry`
//!   [MQTT-3.3.2-6], the same mechanism as deliveries to clients.
//!
//! A client that connects with the bridge's local client id takes the session over like
//! any session; the bridge then re-creates it with [`Broker::bridge_session`]. Nothing
//! here runs unless a bridge is configured: without one, the publish path pays one check
//! of an empty list (`bridge_queue.rs`).
//!
//! What remains (issue 14): a restart cannot tell the flows the last run had sent from
//! those it had only taken for the uplink, so both are resumed as sent (DUP); an
//! expired QoS 2 one of them goes up with 1 s left.

use std::sync::Arc;
use std::time::Instant;

use super::delivery::take_front;
use super::message::Message;
use super::ondisk;
use super::restore::options_byte;
use super::routing::Routed;
use super::session::{Inflight, InflightState, Session};
use super::{Broker, SessionKey};
use crate::auth;
use crate::protocol::{PacketId, Properties, Publish, QoS, RetainHandling, SubscriptionOptions};
use crate::store::Record;

/// A message of the bridge's outbound queue handed to the uplink.
#[derive(Clone, Debug)]
pub struct BridgeOut {
    /// The packet id it is sent under; `None` for QoS 0 (already out of the queue).
    pub packet_id: Option<PacketId>,
    pub msg: Arc<Message>,
    /// The QoS of this delivery: min(published, the `topic` line's).
    pub qos: QoS,
    pub retain: bool,
    /// The upstream has it (PUBREC seen): only PUBREL remains to be sent.
    pub released: bool,
}

/// When an inbound message is durable locally, so that its ack may go upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeDurable {
    /// Nothing was journaled for it (no persistence, or nothing to keep): ack now.
    Now,
    /// Once batch `.0` is durable ([`Broker::durable_batch`] reaches it).
    After(u64),
}

impl Broker {
    /// Creates the bridge's local session, or takes back the one restored from the data
    /// files (its queue and in-flight messages kept), and makes its subscriptions exactly
    /// `filters` (local filter, QoS), acting as `username` for the ACL. `clean`: a session that is never journaled
    /// (`local_cleansession true`); an existing one is then discarded first.
    pub fn bridge_session(
        &mut self,
        client_id: &str,
        username: Option<&str>,
        clean: bool,
        filters: &[(String, QoS)],
        now: Instant,
    ) -> SessionKey {
        let client_id: Arc<str> = Arc::from(client_id);
        if let Some(key) = self.client_ids.get(&self.sessions, &client_id) {
            if let Some(conn) = self.sessions.get(key).and_then(|s| s.conn()) {
                // A client took the id: the bridge's claim comes first.
                self.close(conn, super::CloseReason::TakenOver, now, true);
            }
            if clean {
                self.end_session(key, now);
            }
        }
        let key = match self.client_ids.get(&self.sessions, &client_id) {
            Some(key) => key,
            None => {
                let key = self.sessions.insert(Session::new(client_id.clone(), clean));
                self.client_ids.insert(&self.sessions, key);
                key
            }
        };
        // A new epoch: an expiry timer armed for this session by a restore is void.
        let epoch = self.next_epoch();
        if let Some(session) = self.sessions.get_mut(key) {
            session.epoch = epoch;
            session.set_conn(None);
            session.set_pending_will(None);
            session.expiry_interval = u32::MAX;
            // Everything in flight is resent by the bridge on its next link.
            session.unsent = 0;
            // ACL checks of what it publishes and receives use `local_username`.
            let mut user_changed = session.username.as_deref() != username;
            if user_changed {
                session.username = username.map(Arc::from);
            }
            if !clean && self.journal.persist_session(session) {
                user_changed = session.username.is_some();
            }
            // Online as far as expiry goes: the countdown of a restored session stops.
            self.journal.session_online(session, user_changed);
        }
        self.bridge_queue_register(key, &client_id);
        self.bridge_subscriptions(key, filters, now);
        self.list_for_spill(key);
        key
    }

    /// Makes the session's subscriptions exactly `filters`, journaling the changes. A
    /// filter the session did not have yet gets the matching retained messages queued
    /// once (RETAIN set), so the upstream learns the current state; from then on only
    /// changes are queued, live, and a reconnect or restart replays nothing (Mosquitto
    /// sends every retained message again on each reconnect).
    pub(super) fn bridge_subscriptions(
        &mut self,
        key: SessionKey,
        filters: &[(String, QoS)],
        now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let stale: Vec<smol_str::SmolStr> = session
            .subscriptions
            .iter()
            .filter(|s| !filters.iter().any(|(f, _)| **f == *s.filter))
            .map(|s| s.filter.clone())
            .collect();
        for filter in stale {
            session.remove_subscription(&filter);
            self.subscriptions.unsubscribe(&filter, key);
            let filter = &*filter;
            self.journal
                .session(session, |session| Record::Unsubscribe { session, filter });
        }
        let mut new = Vec::new();
        for (filter, qos) in filters {
            let options = SubscriptionOptions {
                qos: *qos,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::Never,
            };
            let same = session
                .subscriptions
                .iter()
                .any(|s| *s.filter == **filter && s.options == options);
            if same {
                continue;
            }
            let stored = self.subscriptions.subscribe(filter, key, options, 0);
            if session.set_subscription(&stored, options, 0) {
                new.push((stored.clone(), *qos));
            }
            let (filter, options) = (&stored, options_byte(options));
            self.journal.session(session, |session| Record::Subscribe {
                session,
                filter,
                options,
            });
        }
        for (filter, qos) in new {
            self.bridge_queue_retained(key, &filter, qos, now);
        }
    }

    /// Queues the retained messages matching `filter` for the bridge (read access checked
    /// per topic, as for any subscriber). Once per new filter, at start-up or reload: the
    /// whole store is scanned at once, and the session's queue limits apply.
    fn bridge_queue_retained(&mut self, key: SessionKey, filter: &str, qos: QoS, now: Instant) {
        if !self.retained.may_match(filter) {
            return;
        }
        let mut matched = Vec::new();
        let mut from = 0;
        self.retained
            .scan(filter, &mut from, self.retained.seq(), usize::MAX, |m| {
                matched.push(m.clone());
                true
            });
        for msg in matched {
            if !msg.is_expired(now) && self.allowed(key, &msg.topic, auth::READ) {
                let qos = msg.qos.min(qos);
                self.deliver(key, &mut Routed::from_message(&msg, now), qos, true, &[]);
            }
        }
    }

    /// Messages of the bridge's session in flight (after a restart: what the last run had
    /// sent upstream and not seen acknowledged), in send order, to resend first.
    pub fn bridge_inflight(&self, key: SessionKey) -> Vec<BridgeOut> {
        let Some(session) = self.sessions.get(key) else {
            return Vec::new();
        };
        session
            .inflight()
            .iter()
            .map(|i| BridgeOut {
                packet_id: Some(i.packet_id),
                msg: i.delivery.msg.clone(),
                qos: i.delivery.qos,
                retain: i.delivery.retain,
                released: i.state == InflightState::AwaitingPubcomp,
            })
            .collect()
    }

    /// Messages waiting in the bridge's queue (not in flight).
    pub fn bridge_queued(&self, key: SessionKey) -> usize {
        self.sessions.get(key).map_or(0, Session::queued_len)
    }

    /// Takes up to `n` messages from the front of the bridge's queue, in order. QoS 1/2
    /// move into the session's inflight list under a new packet id (journaled, so the id
    /// survives a restart); QoS 0 leave the queue. Expired messages are dropped
    /// [MQTT-3.3.2-5]. Fewer than `n` when the queue runs out or no packet id is free.
    pub fn bridge_take(&mut self, key: SessionKey, n: usize, now: Instant) -> Vec<BridgeOut> {
        let mut out = Vec::new();
        self.bridge_take_into(key, n, now, &mut out);
        out
    }

    /// [`Broker::bridge_take`] appending to `out` (the uplink reuses one vector).
    pub fn bridge_take_into(
        &mut self,
        key: SessionKey,
        n: usize,
        now: Instant,
        out: &mut Vec<BridgeOut>,
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let start = out.len();
        let n = start + n;
        while out.len() < n {
            if session.needs_load() {
                let want = (n - out.len()).max(ondisk::LOAD_AHEAD);
                let wall = self.journal.wall;
                self.queued_entries +=
                    ondisk::load_front(&mut self.disk, session, want, &self.meter, wall, now);
            }
            let Some(front) = session.front() else { break };
            if front.msg.is_expired(now) {
                take_front(&mut self.journal, &mut self.queued_entries, session, None);
                continue;
            }
            let packet_id = if front.qos == QoS::AtMostOnce {
                None
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
            out.push(BridgeOut {
                packet_id,
                msg: q.msg.clone(),
                qos: q.qos,
                retain: q.retain,
                released: false,
            });
            if let Some(packet_id) = packet_id {
                let state = if q.qos == QoS::ExactlyOnce {
                    InflightState::AwaitingPubrec
                } else {
                    InflightState::AwaitingPuback
                };
                session.inflight_mut().push_back(Inflight {
                    packet_id,
                    delivery: q,
                    state,
                });
            }
        }
        self.stats.messages_sent += (out.len() - start) as u64;
        session.release_idle_flows();
        let added = out[start..]
            .iter()
            .filter(|o| o.packet_id.is_some())
            .map(|o| o.msg.stored_len())
            .sum();
        self.bridge_inflight_bytes(key, added, 0);
    }

    /// The bridge's uplink went up or down: while it is up, QoS 0 messages for `out`
    /// topics are queued for it and forwarded; while it is down they are dropped, as
    /// Mosquitto does (store-and-forward is for QoS 1/2, unless `queue_qos0_messages`).
    pub fn bridge_link(&mut self, key: SessionKey, up: bool) {
        self.bridges_up.retain(|k| *k != key);
        if up {
            self.bridges_up.push(key);
        } else {
            // What the uplink was draining from memory goes to disk now (`ondisk.rs`).
            self.list_for_spill(key);
        }
    }

    /// The upstream sent PUBREC for `pid`: only PUBREL remains, also after a restart.
    /// False if no QoS 2 message awaits PUBREC under that id.
    pub fn bridge_pubrec(&mut self, key: SessionKey, pid: PacketId) -> bool {
        let Some(session) = self.sessions.get_mut(key) else {
            return false;
        };
        let Some(i) = session.find_inflight(pid, InflightState::AwaitingPubrec) else {
            return false;
        };
        session.inflight_mut()[i].state = InflightState::AwaitingPubcomp;
        let packet_id = pid.get();
        self.journal
            .session(session, |session| Record::Pubrec { session, packet_id });
        true
    }

    /// The upstream has message `pid` for good (PUBACK, PUBCOMP, or a refusal that ends
    /// the flow): it leaves the queue, durably. False if no message is in flight under it.
    pub fn bridge_done(&mut self, key: SessionKey, pid: PacketId) -> bool {
        let Some(session) = self.sessions.get_mut(key) else {
            return false;
        };
        let Some(i) = session.inflight().iter().position(|f| f.packet_id == pid) else {
            return false;
        };
        let removed = session
            .inflight_mut()
            .remove(i)
            .map_or(0, |f| f.delivery.msg.stored_len());
        let packet_id = pid.get();
        self.journal
            .session(session, |session| Record::InflightDone {
                session,
                packet_id,
            });
        session.release_idle_flows();
        // The upstream has it: a full episode may end (`bridge_queue.rs`).
        self.bridge_inflight_bytes(key, 0, removed);
        true
    }

    /// Publishes an inbound (`in`) message locally as the bridge's session: retained
    /// storage, ACL (`local_username`), No Local towards its own subscriptions. Returns
    /// when the upstream may be acknowledged.
    #[allow(clippy::too_many_arguments)] // a PUBLISH's fields
    pub fn bridge_publish(
        &mut self,
        key: SessionKey,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: &[u8],
        now: Instant,
    ) -> BridgeDurable {
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: None,
            properties: Properties::from_encoded(properties),
            payload,
        };
        self.stats.messages_received += 1;
        self.stats.publish_bytes_received += payload.len() as u64;
        if topic == "$SYS" || topic.starts_with("$SYS/") {
            // The bridge's own state notification ($SYS/broker/connection/<id>/state, as
            // Mosquitto publishes it); clients may not publish under $SYS, the broker may.
            let msg = Message::metered(
                &self.meter,
                topic,
                payload,
                qos,
                retain,
                Box::default(),
                None,
            );
            if retain && self.config.retain_available {
                self.store_retained(&msg, now);
            }
            self.route(&mut Routed::from_message(&msg, now));
        } else if self.sessions.contains(key) {
            let v5 = !properties.is_empty();
            self.accept_publish(key, &p, topic, v5, now);
        }
        match self.journal.open_batch() {
            Some(seq) if self.journal.holds => BridgeDurable::After(seq),
            _ => BridgeDurable::Now,
        }
    }

    /// An inbound QoS 2 message under `pid` is about to be published locally: the id is
    /// recorded as awaiting PUBREL, journaled in the same batch as the message, so that a
    /// restart before the upstream's PUBREL still knows it (as for a client's inbound
    /// QoS 2, [MQTT-4.3.3-2]). False if it is recorded already: a redelivery, not to be
    /// published again.
    pub fn bridge_receive_qos2(&mut self, key: SessionKey, pid: PacketId) -> bool {
        let Some(session) = self.sessions.get_mut(key) else {
            return true;
        };
        if session.awaiting_pubrel().contains(&pid) {
            return false;
        }
        session.awaiting_pubrel_mut().push(pid);
        let packet_id = pid.get();
        self.journal
            .session(session, |session| Record::AwaitPubrel {
                session,
                packet_id,
            });
        true
    }

    /// The upstream released inbound QoS 2 message `pid` (PUBREL): the id is forgotten,
    /// durably. Returns when the PUBCOMP may go upstream: once everything journaled so
    /// far is durable (a PUBREL resent after a reconnect may find its release still on
    /// its way to the disk).
    pub fn bridge_released(&mut self, key: SessionKey, pid: PacketId) -> BridgeDurable {
        self.bridge_forget_inbound(key, |p| p == pid);
        self.bridge_barrier()
    }

    /// The upstream has no session for the bridge any more: every inbound QoS 2 id is void.
    pub fn bridge_inbound_reset(&mut self, key: SessionKey) {
        self.bridge_forget_inbound(key, |_| true);
    }

    fn bridge_forget_inbound(&mut self, key: SessionKey, which: impl Fn(PacketId) -> bool) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let gone: Vec<PacketId> = session
            .awaiting_pubrel()
            .iter()
            .copied()
            .filter(|p| which(*p))
            .collect();
        if gone.is_empty() {
            return;
        }
        session.awaiting_pubrel_mut().retain(|p| !which(*p));
        for pid in gone {
            let packet_id = pid.get();
            self.journal
                .session(session, |session| Record::Released { session, packet_id });
        }
        session.release_idle_flows();
    }

    /// Inbound QoS 2 ids published locally and not released by the upstream yet (after a
    /// restart: what the last run had recorded), for [`crate::bridge::Bridge::resume_inbound`].
    pub fn bridge_awaiting_pubrel(&self, key: SessionKey) -> Vec<PacketId> {
        self.sessions
            .get(key)
            .map_or_else(Vec::new, |s| s.awaiting_pubrel().to_vec())
    }

    /// When everything journaled so far (this turn's batch and those submitted before) is
    /// durable.
    pub fn bridge_barrier(&self) -> BridgeDurable {
        if !self.journal.holds {
            return BridgeDurable::Now;
        }
        let last = match self.journal.open_batch() {
            Some(open) => open,
            None => {
                self.journal.await_submitted();
                self.journal.seq.saturating_sub(1)
            }
        };
        if last > self.journal.durable {
            BridgeDurable::After(last)
        } else {
            BridgeDurable::Now
        }
    }

    /// The highest journal batch known durable (see [`BridgeDurable::After`]).
    pub fn durable_batch(&self) -> u64 {
        self.journal.durable
    }

    /// The batch that changes made now are journaled in, when output that depends on them
    /// must wait for it (persistence on and records written this turn); `None`: nothing
    /// to wait for. After [`Broker::bridge_take`], a QoS 2 message is written upstream
    /// only once this batch is durable: were it sent first and the record lost in a
    /// crash, the restarted bridge would send it again under a new packet id, and the
    /// upstream would deliver it twice.
    ///
    /// `wait`: somebody will wait for it (a QoS 2 message, a PUBREL), so it is fsynced at
    /// once; QoS 1 messages alone leave it to be fsynced lazily (`journal.rs`).
    pub fn bridge_pending_batch(&self, wait: bool) -> Option<u64> {
        if !self.journal.holds {
            return None;
        }
        if wait {
            self.journal.open_batch()
        } else {
            self.journal.open_seq()
        }
    }
}
