//! Routing a message to its subscribers: the sessions with a matching subscription, once
//! each at the highest QoS matched, and one member of each matching shared group.
//!
//! A message stays borrowed from the input buffer while it is routed. It is copied into an
//! `Arc<Message>` only when something must keep it (a queue, an inflight slot, the
//! retained store) or when it carries MQTT 5 properties, and then once for all
//! subscribers.

use std::sync::Arc;
use std::time::Instant;

use super::message::{self, Message, Meter};
use super::subscriptions::{SessionKey, Subscriber};
use super::Broker;
use crate::auth;
use crate::protocol::{Publish, QoS};

/// The message being routed: borrowed until a copy has to be kept.
pub(super) struct Routed<'a> {
    pub(super) topic: &'a str,
    pub(super) payload: &'a [u8],
    qos: QoS,
    retain: bool,
    /// The publishing session, for the no-local option [MQTT-3.8.3-3].
    origin: Option<SessionKey>,
    pub(super) now: Instant,
    pub(super) shared: Option<Arc<Message>>,
}

impl<'a> Routed<'a> {
    pub(super) fn from_publish(
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
    pub(super) fn shared(&mut self, meter: &Arc<Meter>) -> Arc<Message> {
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

impl Broker {
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
                    .is_some_and(|x| x.conn().is_some())
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
}
