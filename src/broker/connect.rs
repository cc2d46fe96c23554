//! CONNECT: validation, authentication hook, session takeover and resumption, CONNACK.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::delivery::{encode_publish, Outgoing};
use super::error::ConnectRefusal;
use super::message::{self, Message};
use super::session::{InflightState, Session};
use super::subscriptions::SessionKey;
use super::timers::Timer;
use super::{conn_slot, Broker, CloseReason, ConnId, V5Conn, TOPIC_ALIAS_MAXIMUM};
use crate::auth::Refusal;
use crate::protocol::{
    Ack, Connack, Connect, Packet, Properties, PropertiesBuf, Property, ProtocolVersion, ReasonCode,
};
use crate::store::Record;

/// Formats a server-assigned client id shaped like Mosquitto's (`auto-` and a UUID-like
/// string), for a client that connects with an empty id [MQTT-3.1.3-6]. The 128 bits come
/// from the broker's [`IdRng`](super::IdRng), seeded by the caller.
fn format_client_id(a: u64, b: u64) -> String {
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
    /// The TLS handshake of `id` finished on a listener that takes the user name from the
    /// client certificate: `name` is that user name, `None` if the certificate gives none
    /// (the CONNECT is then refused). The CONNECT's own user name and password are ignored.
    pub fn handle_cert_identity(&mut self, id: ConnId, name: Option<&str>) {
        if conn_slot(&mut self.conns, id).is_some() {
            self.cert_identities.insert(id, name.map(Arc::from));
        }
    }

    /// Handles the first CONNECT of a connection. Returns false if the connection was
    /// refused and closed.
    pub(super) fn handle_connect(&mut self, id: ConnId, c: Connect<'_>, now: Instant) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        conn.version = Some(c.version);
        if c.bridge {
            self.bridge_conns.insert(id);
        }
        let v5 = c.version == ProtocolVersion::V5;

        if v5 && c.properties.authentication_method().is_some() {
            // No enhanced authentication method is configured [MQTT-4.12.0-1].
            return self.refuse(id, ConnectRefusal::AuthenticationMethod, now);
        }
        let Some((client_id, assigned)) = self.assign_id(id, &c, v5, now) else {
            return false;
        };
        // A listener that names clients by their certificate: that name is the user name
        // (ACLs apply to it), whatever the CONNECT says; no password check (Mosquitto's
        // use_identity_as_username/use_subject_as_username).
        let cert_name = self.cert_identities.remove(&id);
        let c = match cert_name {
            None => {
                if !self.authenticate(id, &c, &client_id, now) {
                    return false;
                }
                c
            }
            Some(None) => {
                info!("client {client_id} refused: its TLS certificate gives no user name");
                return self.refuse(id, ConnectRefusal::Auth(Refusal::BadCredentials), now);
            }
            Some(Some(ref name)) => {
                if let Some(conn) = conn_slot(&mut self.conns, id) {
                    conn.cert_identity = true;
                }
                Connect {
                    username: Some(name),
                    password: None,
                    ..c
                }
            }
        };

        // 3.1.1: clean session 1 ends the session with the connection. 5.0: the session
        // expiry interval decides (0 = ends with it, the default) [MQTT-3.1.2-23].
        let expiry = if v5 {
            c.properties.session_expiry_interval().unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        let (keep_alive, props) = self.connack_properties(&c, &client_id, assigned, v5);
        // [MQTT-3.1.2-24] no packet larger than the client's Maximum Packet Size may be sent
        // to it, CONNACK included. Like Mosquitto, close without CONNACK, and before the
        // client id can take over a session or a connection.
        let client_max = c.properties.maximum_packet_size().unwrap_or(u32::MAX);
        let probe = Connack {
            session_present: false,
            code: ReasonCode::SUCCESS,
            properties: props.as_properties(),
        };
        if Packet::Connack(probe).encoded_len(c.version) > client_max as usize {
            info!("client {client_id} refused: its maximum packet size {client_max} is smaller than CONNACK");
            self.close(id, CloseReason::ConnackTooLarge, now, true);
            return false;
        }
        if !self.session_room(id, &client_id, now) {
            return false;
        }

        self.take_over(&client_id, c.clean_start, now);
        let (key, session_present) = self.attach_session(id, &client_id, &c, expiry);
        if !self.arm_will_and_keepalive(id, key, &c, keep_alive, client_max, expiry, now) {
            return false;
        }
        // Needed only for this line: an established connection keeps no copy.
        let peer = self.peers.remove(&id);
        if self.config.connection_messages {
            // Mosquitto's line (log tools match it); p is its protocol number.
            let p = match c.version {
                ProtocolVersion::V31 => 1,
                ProtocolVersion::V311 => 2,
                ProtocolVersion::V5 => 5,
            };
            // Mosquitto says "New bridge" for a client with the bridge bit.
            info!(
                "New {} connected from {} as {client_id} (p{p}, c{}, k{keep_alive}{}).",
                if c.bridge { "bridge" } else { "client" },
                peer.as_deref().unwrap_or("<unknown>"),
                u8::from(c.clean_start),
                c.username.map(|u| format!(", u'{u}'")).unwrap_or_default(),
            );
        }
        if session_present {
            debug!("client {client_id}: session resumed");
        }
        // [MQTT-3.2.2-2/3] session present only when a stored session is resumed.
        if !self.send_connack(id, session_present && !c.clean_start, &props) {
            return false;
        }
        self.resume_delivery(id, key, now);
        true
    }

    /// The client id of the session: the CONNECT's, or one assigned for an empty id.
    /// `None` when the id was refused (and the connection closed); the flag says whether
    /// the id was assigned.
    fn assign_id(
        &mut self,
        id: ConnId,
        c: &Connect<'_>,
        v5: bool,
        now: Instant,
    ) -> Option<(Arc<str>, bool)> {
        // MQTT allows 65,535 bytes; every session keeps its id (in the map, the session,
        // the log), so a bound keeps one CONNECT from pinning 64 KiB per session.
        let max_id = self.config.max_client_id_length;
        if max_id > 0 && c.client_id.len() > max_id {
            debug!(
                "client id of {} bytes refused: over max_client_id_length ({max_id})",
                c.client_id.len()
            );
            self.refuse(id, ConnectRefusal::ClientIdTooLong, now);
            return None;
        }

        let mut assigned = false;
        let client_id: Arc<str> = if c.client_id.is_empty() {
            // [MQTT-3.1.3-8] (3.1.1) an empty id needs a clean session; 3.1 never allowed
            // one. 5.0 assigns one either way [MQTT-3.1.3-6] and says so in CONNACK.
            if !v5 && (!c.clean_start || c.version == ProtocolVersion::V31) {
                self.refuse(id, ConnectRefusal::EmptyClientId, now);
                return None;
            }
            assigned = true;
            Arc::from(format_client_id(self.id_rng.next(), self.id_rng.next()))
        } else {
            Arc::from(c.client_id)
        };
        Some((client_id, assigned))
    }

    /// Checks the user name and password; a refusal answers CONNACK and closes.
    fn authenticate(&mut self, id: ConnId, c: &Connect<'_>, client_id: &str, now: Instant) -> bool {
        let listener = self.pending_listener(id);
        let checked = match self.auth.get_mut(listener) {
            Some(auth) => auth.authenticate(c.username, c.password, now),
            // A listener without settings of its own admits nobody.
            None => Err(Refusal::NotAuthorized),
        };
        if let Err(refusal) = checked {
            let user = c
                .username
                .map(|u| format!(" (user {u})"))
                .unwrap_or_default();
            // A flood over the failure budget is logged once by `Auth`, not per CONNECT.
            if refusal == crate::auth::Refusal::Busy {
                debug!("client {client_id} refused{user}: {refusal}");
            } else {
                info!("client {client_id} refused{user}: {refusal}");
            }
            return self.refuse(id, ConnectRefusal::Auth(refusal), now);
        }
        true
    }

    /// The keepalive the connection runs with and the CONNACK properties (5.0 only).
    fn connack_properties(
        &self,
        c: &Connect<'_>,
        client_id: &str,
        assigned: bool,
        v5: bool,
    ) -> (u16, PropertiesBuf) {
        // 5.0: the server may impose its own keepalive [MQTT-3.2.2-21] (Mosquitto's
        // `max_keepalive`, also applied when the client asks for none).
        let max_keepalive = self.config.max_keepalive;
        let mut keep_alive = c.keep_alive;
        let mut server_keep_alive = None;
        if v5 && (keep_alive == 0 || keep_alive > max_keepalive) && max_keepalive > 0 {
            keep_alive = max_keepalive;
            server_keep_alive = Some(max_keepalive);
        }
        let receive_maximum = self.receive_maximum();
        let mut props = PropertiesBuf::new();
        if v5 {
            if assigned {
                props.push(Property::AssignedClientIdentifier(client_id));
            }
            if let Some(ka) = server_keep_alive {
                props.push(Property::ServerKeepAlive(ka));
            }
            if receive_maximum != u16::MAX {
                props.push(Property::ReceiveMaximum(receive_maximum));
            }
            if self.config.max_packet_size < crate::config::MQTT_MAX_PACKET_SIZE {
                props.push(Property::MaximumPacketSize(self.config.max_packet_size));
            }
            props.push(Property::TopicAliasMaximum(TOPIC_ALIAS_MAXIMUM));
            if !self.config.retain_available {
                props.push(Property::RetainAvailable(0));
            }
        }
        (keep_alive, props)
    }

    /// `max_sessions`: false, after refusing the CONNECT, when it needs a new session and
    /// the table is full.
    fn session_room(&mut self, id: ConnId, client_id: &Arc<str>, now: Instant) -> bool {
        // `max_sessions`: a CONNECT that needs a new session is refused when the table is
        // full; resuming or taking over an existing one always works.
        let max_sessions = self.config.max_sessions;
        if max_sessions > 0
            && self.sessions.len() >= max_sessions
            && !self.client_ids.contains(&self.sessions, client_id)
        {
            if !self.sessions_full_logged {
                self.sessions_full_logged = true;
                warn!(
                    "max_sessions ({max_sessions}) reached: refusing CONNECTs that need a new \
                     session until one ends"
                );
            }
            debug!("client {client_id} refused: max_sessions reached");
            self.refuse(id, ConnectRefusal::SessionsFull, now);
            return false;
        }
        self.sessions_full_logged = false;
        true
    }

    /// Closes the connection that holds `client_id` now, and ends its session on a clean
    /// start.
    fn take_over(&mut self, client_id: &Arc<str>, clean_start: bool, now: Instant) {
        // [MQTT-3.1.4-2] a second connection with the same client id takes over: the first
        // is closed (publishing its will) before the new one is attached.
        if let Some(key) = self.client_ids.get(&self.sessions, client_id) {
            if let Some(old) = self.sessions.get(key).and_then(|s| s.conn) {
                if self.config.connection_messages {
                    info!("Client {client_id} already connected, closing old connection.");
                }
                self.close(old, CloseReason::TakenOver, now, true);
            }
        }
        // [MQTT-3.1.2-6] [MQTT-3.1.2-4] clean session / clean start discards any previous one.
        if clean_start {
            if let Some(key) = self.client_ids.get(&self.sessions, client_id) {
                self.end_session(key, now);
            }
        }
    }

    /// Attaches the connection to the client id's session (made if there is none),
    /// journals it if persistent and sets its expiry. Returns the session and whether it
    /// existed.
    fn attach_session(
        &mut self,
        id: ConnId,
        client_id: &Arc<str>,
        c: &Connect<'_>,
        expiry: u32,
    ) -> (SessionKey, bool) {
        let ends_with_connection = expiry == 0;
        let (key, session_present) = match self.client_ids.get(&self.sessions, client_id) {
            Some(key) => (key, true),
            None => {
                let session = Session::new(client_id.clone(), ends_with_connection);
                let key = self.sessions.insert(session);
                self.client_ids.insert(&self.sessions, key);
                (key, false)
            }
        };
        let epoch = self.next_epoch();
        let listener = self.pending_listener(id);
        self.conn_listeners.remove(&id);
        if let Some(session) = self.sessions.get_mut(key) {
            session.conn = Some(id);
            // Offline, the session keeps its last listener's ACL (mosquitto.conf(5),
            // per_listener_settings).
            session.listener = listener;
            session.epoch = epoch;
            let user_changed = session.username.as_deref() != c.username;
            if user_changed {
                session.username = c.username.map(Arc::from);
            }
            // [MQTT-3.1.3-9] a delayed will is dropped when the session resumes in time.
            session.set_pending_will(None);
            let mut user_changed = user_changed;
            if !ends_with_connection && self.journal.persist_session(session) {
                user_changed = session.username.is_some();
            }
            self.journal.session_online(session, user_changed);
        }
        self.set_session_expiry(key, expiry);
        (key, session_present)
    }

    /// Gives the connection its session, will and keepalive timer, and its 5.0 state.
    /// False if the connection is gone.
    #[allow(clippy::too_many_arguments)]
    fn arm_will_and_keepalive(
        &mut self,
        id: ConnId,
        key: SessionKey,
        c: &Connect<'_>,
        keep_alive: u16,
        client_max: u32,
        expiry: u32,
        now: Instant,
    ) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        conn.set_session(key);
        let will_props = c
            .will
            .as_ref()
            .map(|w| message::forwarded(&w.properties, now));
        conn.will = c
            .will
            .as_ref()
            .zip(will_props)
            .map(|(w, (properties, expires_at))| {
                Message::metered(
                    &self.meter,
                    w.topic,
                    w.payload,
                    w.qos,
                    w.retain,
                    properties,
                    expires_at,
                )
            });
        // A 5.0 property: 3.1.1 wills have none (kept in `V5Conn`).
        let will_delay = c
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval())
            .unwrap_or(0);
        if keep_alive > 0 {
            // [MQTT-3.1.2-24] the server allows one and a half keepalive periods.
            let ms = u32::from(keep_alive) * 1500;
            let limit = Duration::from_millis(u64::from(ms));
            conn.keep_alive = std::num::NonZeroU32::new(ms);
            // The connect-timeout entry fires at most `connect_timeout` from now and then
            // checks the keepalive (`handle_timeout`): a keepalive entry of its own is only
            // needed when the keepalive could run out before that.
            if limit < self.config.connect_timeout {
                conn.keepalive_entry = true;
                self.timers.schedule_in(now, limit, Timer::KeepAlive(id));
            }
        }
        if c.version == ProtocolVersion::V5 {
            conn.v5 = Some(Box::new(V5Conn {
                receive_maximum: c.properties.receive_maximum().unwrap_or(u16::MAX),
                maximum_packet_size: client_max,
                aliases: Vec::new(),
                connect_expiry: expiry,
                will_delay,
            }));
        }
        true
    }

    /// Answers CONNACK, and holds what follows on this connection until the batches
    /// already submitted are durable. False if the connection is gone.
    fn send_connack(&mut self, id: ConnId, session_present: bool, props: &PropertiesBuf) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let connack = Connack {
            session_present,
            code: ReasonCode::SUCCESS,
            properties: props.as_properties(),
        };
        self.output.send_now(conn, id, &Packet::Connack(connack));
        self.stats.control_sent += 1;
        self.stats.connects += 1;
        // An acknowledgement on this connection may answer a retransmission (PUBLISH with
        // DUP, PUBREL) whose original wrote its record in a batch that is still being made
        // durable; the first answer was held on the old connection and went with it. So
        // everything durable on the new connection waits for every batch already submitted
        // [MQTT-4.3.3-2]. CONNACK itself need not wait: a crash before the session's
        // records are durable shows at the next CONNECT as session present 0.
        self.output
            .hold_behind_submitted(&mut conn.out, id, &self.journal);
        true
    }

    /// Starts sending what the session has in flight, queued and retained-due on the new
    /// connection.
    fn resume_delivery(&mut self, id: ConnId, key: SessionKey, now: Instant) {
        // Every message in flight is unsent on this connection.
        if let Some(session) = self.sessions.get_mut(key) {
            session.unsent = u16::try_from(session.inflight().len()).unwrap_or(u16::MAX);
        }
        self.pump(key, now);
        // Retained messages a SUBSCRIBE on an earlier connection was still due go on here,
        // after what was already in flight or queued (see `Broker::close`).
        if let Some(job) = self.retained_parked.remove(&key) {
            self.retained_jobs.insert(id, job);
            self.retained_step(id, now);
        }
    }

    /// Answers CONNACK with the code of `refusal` and closes the connection
    /// [MQTT-3.2.2-4/5].
    fn refuse(&mut self, id: ConnId, refusal: ConnectRefusal, now: Instant) -> bool {
        let version = conn_slot(&mut self.conns, id).and_then(|c| c.version);
        let code = refusal.code(version.unwrap_or(ProtocolVersion::V311));
        let connack = Connack {
            session_present: false,
            code,
            properties: Properties::EMPTY,
        };
        self.send_now(id, &Packet::Connack(connack));
        self.close(id, CloseReason::ConnectRefused(code), now, true);
        false
    }

    /// [MQTT-4.4.0-1] on reconnect with a stored session, unacknowledged PUBLISH packets are
    /// resent with DUP set, and PUBREL for QoS 2 messages already past PUBREC. A message that
    /// expired meanwhile is dropped instead [MQTT-3.3.2-5], and so is one the client may no
    /// longer read (a reload changed the ACL, or it comes back under another user name):
    /// read access is checked on every send, as Mosquitto does, like the queue's in `pump`.
    ///
    /// The messages not yet resent on this connection are the last `Session::unsent` in
    /// flight; they go out oldest first while the window has room, so that a client that
    /// comes back with a smaller receive maximum gets no more than it allows and the rest
    /// as its acknowledgements make room [MQTT-3.3.4-9]. Messages past PUBREC count too
    /// (no PUBCOMP yet), as in `pump`. Called by `pump`.
    pub(super) fn resend_inflight(&mut self, key: usize, id: ConnId, window: usize, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let (version, max) = (conn.version, conn.max_packet());
        let listener = session.listener;
        let acl = self.auth.has_acl().then_some(&self.auth);
        let client = crate::auth::Client {
            username: session.username.as_deref(),
            client_id: &session.client_id,
        };
        let mut expired = Vec::new();
        let inflight_len = session.inflight().len();
        let unsent = (session.unsent as usize).min(inflight_len);
        let sent = inflight_len - unsent;
        let resend = unsent.min(window.saturating_sub(sent));
        session.unsent = u16::try_from(unsent - resend).unwrap_or(u16::MAX);
        for inflight in session.inflight().range(sent..sent + resend) {
            if inflight.state != InflightState::AwaitingPubcomp
                && acl.is_some_and(|a| {
                    !a.check(
                        listener,
                        client,
                        &inflight.delivery.msg.topic,
                        crate::auth::READ,
                    )
                })
            {
                expired.push(inflight.packet_id);
                continue;
            }
            let (out, journal) = (&mut conn.out, &self.journal);
            let buf = match inflight.state {
                InflightState::AwaitingPuback => {
                    self.output
                        .delivery(out, id, inflight.delivery.qos, journal)
                }
                _ => self.output.held(out, id, journal),
            };
            match inflight.state {
                InflightState::AwaitingPuback | InflightState::AwaitingPubrec => {
                    if inflight.delivery.msg.is_expired(now) {
                        expired.push(inflight.packet_id);
                        continue;
                    }
                    let o = Outgoing::of_queued(&inflight.delivery, true);
                    if !encode_publish(
                        version,
                        max,
                        &mut self.scratch_props,
                        Some(buf),
                        &o,
                        Some(inflight.packet_id),
                        now,
                    ) {
                        expired.push(inflight.packet_id);
                    }
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
        let dropped = !expired.is_empty();
        for pid in expired {
            session.inflight_mut().retain(|f| f.packet_id != pid);
            let packet_id = pid.get();
            self.journal
                .session(session, |session| Record::InflightDone {
                    session,
                    packet_id,
                });
        }
        // What was dropped made room for more.
        if dropped && session.unsent > 0 {
            self.resend_inflight(key, id, window, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::IdRng;
    use super::format_client_id;

    #[test]
    fn assigned_ids_look_like_mosquittos_and_differ() {
        let mut rng = IdRng::new(7);
        let a = format_client_id(rng.next(), rng.next());
        let b = format_client_id(rng.next(), rng.next());
        assert_ne!(a, b);
        assert!(a.starts_with("auto-"));
        assert_eq!(a.len(), "auto-".len() + 36);
    }

    #[test]
    fn assigned_ids_repeat_for_the_same_seed() {
        let (mut x, mut y) = (IdRng::new(42), IdRng::new(42));
        assert_eq!(x.next(), y.next());
        assert_ne!(IdRng::new(1).next(), IdRng::new(2).next());
    }
}
