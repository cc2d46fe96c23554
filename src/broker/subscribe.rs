//! SUBSCRIBE and UNSUBSCRIBE: the session's subscription list, the shared table, SUBACK
//! codes and retained messages sent on subscribe (§3.8, §3.10).

use std::sync::Arc;

use super::message::Message;
use super::publish::Routed;
use log::debug;

use super::restore::options_byte;
use super::{conn_slot, Broker, ConnId, Lanes, SessionKey};
use crate::auth;
use crate::protocol::{
    Packet, Properties, QoS, ReasonCode, Suback, Subscribe, Unsuback, Unsubscribe,
};
use crate::store::Record;

impl Broker {
    pub(super) fn handle_subscribe(&mut self, id: ConnId, s: Subscribe<'_>) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained: Vec<(Arc<Message>, QoS)> = Vec::new();
        for (filter, options) in &s.filters {
            if !self.may_subscribe(key, filter) {
                debug!("subscription to {filter} refused: not allowed by the ACL");
                codes.push(ReasonCode::SUBACK_FAILURE);
                continue;
            }
            // Granted QoS is what was asked for: this broker supports all three levels.
            let granted = options.qos;
            let filter = self.subscriptions.subscribe(filter, key, *options);
            if let Some(session) = self.sessions.get_mut(key) {
                session.set_subscription(&filter, *options);
                if session.store_id != 0 {
                    let options = options_byte(*options);
                    self.journal.record(Record::Subscribe {
                        session: session.store_id,
                        filter: &filter,
                        options,
                    });
                }
            }
            codes.push(ReasonCode(granted as u8));
            // [MQTT-3.3.1-6] matching retained messages are sent after the SUBACK, with
            // RETAIN set [MQTT-3.3.1-8].
            self.retained
                .for_each_match(&filter, |m| retained.push((m.clone(), m.qos.min(granted))));
        }
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            let suback = Suback {
                packet_id: s.packet_id,
                properties: Properties::EMPTY,
                codes,
            };
            let mut lanes = Lanes {
                transmit: &mut self.transmit,
                journal: &self.journal,
                held_conns: &mut self.held_conns,
            };
            lanes.send(conn, id, &Packet::Suback(suback));
        }
        for (msg, qos) in &retained {
            // Retained messages are deliveries too: read access is checked per topic.
            if self.allowed(key, &msg.topic, auth::READ) {
                self.deliver(key, &mut Routed::from_message(msg), *qos, true);
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
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session) else {
            return false;
        };
        for filter in &u.filters {
            self.subscriptions.unsubscribe(filter, key);
            if let Some(session) = self.sessions.get_mut(key) {
                if session.remove_subscription(filter) && session.store_id != 0 {
                    self.journal.record(Record::Unsubscribe {
                        session: session.store_id,
                        filter,
                    });
                }
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK even when nothing matched.
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            let unsuback = Unsuback {
                packet_id: u.packet_id,
                properties: Properties::EMPTY,
                codes: Vec::new(),
            };
            let mut lanes = Lanes {
                transmit: &mut self.transmit,
                journal: &self.journal,
                held_conns: &mut self.held_conns,
            };
            lanes.send(conn, id, &Packet::Unsuback(unsuback));
        }
        true
    }
}
