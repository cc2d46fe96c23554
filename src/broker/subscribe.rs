//! SUBSCRIBE and UNSUBSCRIBE: the session's subscription list, the shared table, SUBACK
//! codes and retained messages sent on subscribe (§3.8, §3.10).

use std::sync::Arc;
use std::time::Instant;

use super::message::Message;
use super::publish::Routed;
use log::debug;

use super::restore::options_byte;
use super::subscriptions::parse_shared;
use super::{conn_slot, Broker, ConnId, ProtocolViolation, SessionKey};
use crate::auth;
use crate::protocol::{
    Packet, Properties, QoS, ReasonCode, RetainHandling, Suback, Subscribe, Unsuback, Unsubscribe,
};
use crate::store::Record;

impl Broker {
    pub(super) fn handle_subscribe(&mut self, id: ConnId, s: Subscribe<'_>, now: Instant) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let Some(key) = conn.session else {
            return false;
        };
        let v5 = conn.v5.is_some();
        // [MQTT-4.8.2-1/2] a `$share/` filter without a share name or a filter after it is
        // a protocol error, as Mosquitto treats `$share` alone; checked before any filter
        // of the packet takes effect.
        if s.filters
            .iter()
            .any(|(f, _)| matches!(parse_shared(f), Some(Err(()))))
        {
            return self.violation(id, ProtocolViolation::MalformedSharedSubscription, now);
        }
        // One subscription identifier per SUBSCRIBE applies to all its filters [MQTT-3.8.2-?].
        let sub_id = s.properties.subscription_identifiers().next().unwrap_or(0);
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained: Vec<(Arc<Message>, QoS, bool)> = Vec::new();
        for (filter, options) in &s.filters {
            let shared = parse_shared(filter);
            if shared.is_some() && options.no_local {
                // [MQTT-3.8.3-4] no local on a shared subscription is a protocol error.
                return self.violation(id, ProtocolViolation::NoLocalOnSharedSubscription, now);
            }
            if !self.may_subscribe(key, filter) {
                debug!("subscription to {filter} refused: not allowed by the ACL");
                codes.push(if v5 {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::SUBACK_FAILURE
                });
                continue;
            }
            // Granted QoS is what was asked for: this broker supports all three levels.
            let granted = options.qos;
            let stored = self.subscriptions.subscribe(filter, key, *options, sub_id);
            let mut is_new = true;
            if let Some(session) = self.sessions.get_mut(key) {
                is_new = session.set_subscription(&stored, *options, sub_id);
                if session.store_id != 0 {
                    let options = options_byte(*options);
                    self.journal.record(Record::Subscribe {
                        session: session.store_id,
                        filter: &stored,
                        options,
                    });
                    if sub_id != 0 {
                        self.journal.record(Record::SubscriptionId {
                            session: session.store_id,
                            filter: &stored,
                            id: sub_id,
                        });
                    }
                }
            }
            codes.push(ReasonCode(granted as u8));
            // [MQTT-3.3.1-6] matching retained messages are sent after the SUBACK, with
            // RETAIN set [MQTT-3.3.1-8]; never for a shared subscription [MQTT-4.8.2-?];
            // retain handling 1 only for a new subscription, 2 never [MQTT-3.3.1-9..11].
            let send_retained = shared.is_none()
                && match options.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscribe => is_new,
                    RetainHandling::Never => false,
                };
            if send_retained {
                self.retained.for_each_match(&stored, |m| {
                    if !m.is_expired(now) {
                        retained.push((m.clone(), m.qos.min(granted), sub_id != 0));
                    }
                });
            }
        }
        let suback = Suback {
            packet_id: s.packet_id,
            properties: Properties::EMPTY,
            codes,
        };
        self.reply(id, &Packet::Suback(suback));
        let ids = [sub_id];
        for (msg, qos, with_id) in &retained {
            // Retained messages are deliveries too: read access is checked per topic.
            if self.allowed(key, &msg.topic, auth::READ) {
                let ids: &[u32] = if *with_id { &ids } else { &[] };
                self.deliver(key, &mut Routed::from_message(msg, now), *qos, true, ids);
            }
        }
        true
    }

    /// The ACL's subscribe check (see `auth::acl`); free without an ACL file.
    fn may_subscribe(&self, key: SessionKey, filter: &str) -> bool {
        if !self.auth.has_acl() {
            return true;
        }
        self.sessions.get(key).is_some_and(|s| {
            let client = auth::Client {
                username: s.username.as_deref(),
                client_id: &s.client_id,
            };
            self.auth.check_subscribe(client, filter)
        })
    }

    pub(super) fn handle_unsubscribe(&mut self, id: ConnId, u: Unsubscribe<'_>) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let Some(key) = conn.session else {
            return false;
        };
        let v5 = conn.v5.is_some();
        let mut codes = Vec::new();
        for filter in &u.filters {
            let existed = self.subscriptions.unsubscribe(filter, key);
            if let Some(session) = self.sessions.get_mut(key) {
                if session.remove_subscription(filter) && session.store_id != 0 {
                    self.journal.record(Record::Unsubscribe {
                        session: session.store_id,
                        filter,
                    });
                }
            }
            if v5 {
                // [MQTT-3.11.3-1] one reason code per filter.
                codes.push(if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                });
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK even when nothing matched.
        let unsuback = Unsuback {
            packet_id: u.packet_id,
            properties: Properties::EMPTY,
            codes,
        };
        self.reply(id, &Packet::Unsuback(unsuback));
        true
    }
}
