//! CONNECT: validation, authentication hook, session takeover and resumption, CONNACK.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use super::error::refusal_code;
use super::message::Message;
use super::publish::encode_delivery;
use super::session::{InflightState, Session};
use super::timers::Timer;
use super::{conn_slot, send, Broker, CloseReason, ConnId, Lanes};
use crate::protocol::{Ack, Connack, Connect, Packet, Properties, ProtocolVersion, ReasonCode};
use crate::store::Record;

/// A server-assigned client id, shaped like Mosquitto's (`auto-` and a random UUID), for a
/// client that connects with an empty id and a clean session [MQTT-3.1.3-6].
fn assign_client_id() -> String {
    // RandomState is seeded from the OS per instance: enough entropy for an id that only
    // has to be unique on this broker, without a dependency.
    let mut h1 = RandomState::new().build_hasher();
    h1.write_u64(0x77_72_65_6e);
    let a = h1.finish();
    let mut h2 = RandomState::new().build_hasher();
    h2.write_u64(a);
    let b = h2.finish();
    format!(
        "auto-{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

impl Broker {
    /// Handles the first CONNECT of a connection. Returns false if the connection was
    /// refused and closed.
    pub(super) fn handle_connect(&mut self, id: ConnId, c: Connect<'_>, now: Instant) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        conn.version = Some(c.version);

        if c.version == ProtocolVersion::V5 {
            // MQTT 5 behaviour arrives with its own issue; until then refuse it the way a
            // 5.0 client understands [MQTT-3.1.2-2].
            return self.refuse(id, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, now);
        }

        let client_id: Arc<str> = if c.client_id.is_empty() {
            // [MQTT-3.1.3-8] an empty id needs a clean session; 3.1 never allowed one.
            if !c.clean_start || c.version == ProtocolVersion::V31 {
                return self.refuse(id, ReasonCode::V3_IDENTIFIER_REJECTED, now);
            }
            Arc::from(assign_client_id())
        } else {
            Arc::from(c.client_id)
        };

        if let Err(refusal) = self.auth.authenticate(c.username, c.password) {
            info!(
                "client {client_id} refused{}: {refusal}",
                c.username
                    .map(|u| format!(" (user {u})"))
                    .unwrap_or_default()
            );
            return self.refuse(id, refusal_code(refusal, c.version), now);
        }

        // [MQTT-3.1.4-2] a second connection with the same client id takes over: the first
        // is closed (publishing its will) before the new one is attached.
        if let Some(&key) = self.client_ids.get(&client_id) {
            if let Some(old) = self.sessions.get(key).and_then(|s| s.conn) {
                self.close(old, CloseReason::TakenOver, now, true);
            }
        }
        // [MQTT-3.1.2-6] a clean session discards any previous one.
        if c.clean_start {
            if let Some(&key) = self.client_ids.get(&client_id) {
                self.remove_session(key);
            }
        }
        let (key, session_present) = match self.client_ids.get(&client_id) {
            Some(&key) => (key, true),
            None => {
                let mut session = Session::new(client_id.clone(), c.clean_start);
                if !c.clean_start && self.journal.enabled {
                    session.store_id = self.journal.new_session_id();
                    let r = Record::SessionOpen {
                        session: session.store_id,
                        client_id: &client_id,
                    };
                    self.journal.record(r);
                }
                let key = self.sessions.insert(session);
                self.client_ids.insert(client_id.clone(), key);
                (key, false)
            }
        };

        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        conn.session = Some(key);
        conn.will = c
            .will
            .as_ref()
            .map(|w| Message::new(w.topic, w.payload, w.qos, w.retain));
        if c.keep_alive > 0 {
            // [MQTT-3.1.2-24] the server allows one and a half keepalive periods.
            let limit = Duration::from_millis(u64::from(c.keep_alive) * 1500);
            conn.keep_alive = Some(limit);
            self.timers.schedule(now + limit, Timer::KeepAlive(id));
        }
        if let Some(session) = self.sessions.get_mut(key) {
            session.conn = Some(id);
            session.clean = c.clean_start;
            session.username = c.username.map(Arc::from);
        }
        info!(
            "client {client_id} connected (v{}, clean {}, keepalive {}s{})",
            c.version.level(),
            u8::from(c.clean_start),
            c.keep_alive,
            if session_present {
                ", session resumed"
            } else {
                ""
            }
        );

        let connack = Connack {
            // [MQTT-3.2.2-2/3] session present only when a stored session is resumed.
            session_present: session_present && !c.clean_start,
            code: ReasonCode::SUCCESS,
            properties: Properties::EMPTY,
        };
        send(conn, id, &mut self.transmit, &Packet::Connack(connack));
        self.resend_inflight(key, id);
        self.pump(key);
        true
    }

    /// Answers CONNACK with `code` and closes the connection [MQTT-3.2.2-4/5].
    fn refuse(&mut self, id: ConnId, code: ReasonCode, now: Instant) -> bool {
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            let connack = Connack {
                session_present: false,
                code,
                properties: Properties::EMPTY,
            };
            send(conn, id, &mut self.transmit, &Packet::Connack(connack));
        }
        self.close(id, CloseReason::ConnectRefused(code), now, true);
        false
    }

    /// [MQTT-4.4.0-1] on reconnect with a stored session, unacknowledged PUBLISH packets are
    /// resent with DUP set, and PUBREL for QoS 2 messages already past PUBREC.
    fn resend_inflight(&mut self, key: usize, id: ConnId) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let version = conn.version;
        let mut lanes = Lanes {
            transmit: &mut self.transmit,
            journal: &self.journal,
            held_conns: &mut self.held_conns,
        };
        for inflight in &session.inflight {
            let buf = lanes.durable(conn, id);
            match inflight.state {
                InflightState::AwaitingPuback | InflightState::AwaitingPubrec => {
                    encode_delivery(version, buf, inflight.packet_id, &inflight.delivery, true);
                }
                InflightState::AwaitingPubcomp => {
                    let ack = Ack {
                        packet_id: inflight.packet_id,
                        reason: ReasonCode::SUCCESS,
                        properties: Properties::EMPTY,
                    };
                    Packet::Pubrel(ack).encode(version.unwrap_or(ProtocolVersion::V311), buf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::assign_client_id;

    #[test]
    fn assigned_ids_look_like_mosquittos_and_differ() {
        let a = assign_client_id();
        let b = assign_client_id();
        assert_ne!(a, b);
        assert!(a.starts_with("auto-"));
        assert_eq!(a.len(), "auto-".len() + 36);
    }
}
