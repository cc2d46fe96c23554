//! Why the broker says no or ends a connection, and how each reason maps to the wire: the
//! broker's one place for reason codes (5.0) and CONNACK return codes (3.1/3.1.1). The
//! codec's decode errors map to theirs in `protocol/error.rs` (`DecodeError::reason_code`);
//! `CloseReason::Decode` forwards to it.
//!
//! - CONNECT refused: [`ConnectRefusal::code`] (and [`refusal_code`] for authentication);
//! - PUBLISH acknowledged: [`puback_code`], [`pubrec_code`] from [`Outcome`];
//! - SUBSCRIBE per filter: [`granted_code`], [`SubscribeRefusal::code`]; UNSUBSCRIBE:
//!   [`unsuback_code`]; PUBREL/PUBCOMP: [`packet_id_code`];
//! - connection ended: [`CloseReason::reason_code`] and [`CloseReason::last_packet`]; a
//!   client's DISCONNECT read back: [`CloseReason::of_client_disconnect`].

use std::fmt;

use crate::auth::Refusal;
use crate::protocol::{
    Connack, DecodeError, Disconnect, Packet, PacketType, Properties, ProtocolVersion, QoS,
    ReasonCode,
};

/// The CONNACK code refusing a client: 3.1/3.1.1 return codes, 5.0 reason codes.
///
/// Every refusal is "not authorized", 0x05 (3.1/3.1.1) or 0x87 (5.0), as Mosquitto 2.0
/// answers (`handle_connect.c`: `CONNACK_REFUSED_NOT_AUTHORIZED` / `MQTT_RC_NOT_AUTHORIZED`
/// for a wrong password and an unknown user alike; checked against 2.0.11). Clients and
/// scripts written against Mosquitto look for these codes, and one code for all refusals
/// does not tell a prober which part was wrong. The log line says why.
pub(super) fn refusal_code(refusal: Refusal, version: ProtocolVersion) -> ReasonCode {
    match (refusal, version) {
        (Refusal::NotAuthorized | Refusal::BadCredentials | Refusal::Busy, ProtocolVersion::V5) => {
            ReasonCode::NOT_AUTHORIZED
        }
        (Refusal::NotAuthorized | Refusal::BadCredentials | Refusal::Busy, _) => {
            ReasonCode::V3_NOT_AUTHORIZED
        }
    }
}

/// Why a CONNECT is refused: answered with CONNACK and closed [MQTT-3.2.2-4/5].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConnectRefusal {
    /// A 5.0 CONNECT names an authentication method; none is configured [MQTT-4.12.0-1].
    AuthenticationMethod,
    /// A client id over `max_client_id_length`.
    ClientIdTooLong,
    /// An empty client id a 3.1/3.1.1 client may not use [MQTT-3.1.3-8].
    EmptyClientId,
    /// `max_sessions` reached and the CONNECT needs a new session.
    SessionsFull,
    /// The password file or `allow_anonymous` does not admit the client.
    Auth(Refusal),
}

impl ConnectRefusal {
    /// The CONNACK code for `version`.
    pub(super) fn code(self, version: ProtocolVersion) -> ReasonCode {
        let v5 = version == ProtocolVersion::V5;
        match self {
            ConnectRefusal::AuthenticationMethod => ReasonCode::BAD_AUTHENTICATION_METHOD,
            ConnectRefusal::ClientIdTooLong if v5 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            ConnectRefusal::ClientIdTooLong | ConnectRefusal::EmptyClientId => {
                ReasonCode::V3_IDENTIFIER_REJECTED
            }
            ConnectRefusal::SessionsFull if v5 => ReasonCode::QUOTA_EXCEEDED,
            ConnectRefusal::SessionsFull => ReasonCode::V3_SERVER_UNAVAILABLE,
            ConnectRefusal::Auth(refusal) => refusal_code(refusal, version),
        }
    }
}

/// What became of a PUBLISH the broker accepted from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    NoSubscribers,
    NotAuthorized,
    /// Not accepted: a bound was reached (5.0 only).
    QuotaExceeded,
}

/// The reason code of a PUBACK: 5.0 tells the outcome; 3.1.1 has no codes.
pub(super) fn puback_code(o: Outcome, v5: bool) -> ReasonCode {
    if !v5 {
        return ReasonCode::SUCCESS;
    }
    match o {
        Outcome::Delivered => ReasonCode::SUCCESS,
        Outcome::NoSubscribers => ReasonCode::NO_MATCHING_SUBSCRIBERS,
        Outcome::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
        Outcome::QuotaExceeded => ReasonCode::QUOTA_EXCEEDED,
    }
}

/// The reason code of a PUBREC. It says only "not authorized" or "quota exceeded"; like
/// Mosquitto it does not report a missing subscriber (0x10 is allowed but tells the client
/// nothing it can act on before PUBREL). An error code ends the flow [MQTT-4.3.3-4].
pub(super) fn pubrec_code(o: Outcome, v5: bool) -> ReasonCode {
    match o {
        Outcome::NotAuthorized | Outcome::QuotaExceeded => puback_code(o, v5),
        Outcome::Delivered | Outcome::NoSubscribers => ReasonCode::SUCCESS,
    }
}

/// Why one filter of a SUBSCRIBE is not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SubscribeRefusal {
    /// The ACL does not allow it.
    NotAuthorized,
    /// A subscription limit (`max_filters_per_subscribe`, `max_subscriptions_per_client`,
    /// `max_subscriptions`).
    Quota,
}

impl SubscribeRefusal {
    /// The SUBACK code: 5.0 says why; 3.1.1 has only 0x80 failure.
    pub(super) fn code(self, v5: bool) -> ReasonCode {
        match self {
            _ if !v5 => ReasonCode::SUBACK_FAILURE,
            SubscribeRefusal::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            SubscribeRefusal::Quota => ReasonCode::QUOTA_EXCEEDED,
        }
    }
}

/// The SUBACK code of a granted filter: the maximum QoS granted [MQTT-3.8.4-7] (the
/// same byte in 3.1.1 and 5.0).
pub(super) fn granted_code(qos: QoS) -> ReasonCode {
    ReasonCode(qos as u8)
}

/// The 5.0 UNSUBACK code of one filter [MQTT-3.11.3-1].
pub(super) fn unsuback_code(existed: bool) -> ReasonCode {
    if existed {
        ReasonCode::SUCCESS
    } else {
        ReasonCode::NO_SUBSCRIPTION_EXISTED
    }
}

/// The reason code of a PUBREL/PUBCOMP answering an id: 0x92 "packet identifier not
/// found" for a 5.0 client when the id was unknown, success otherwise.
pub(super) fn packet_id_code(known: bool, v5: bool) -> ReasonCode {
    if known || !v5 {
        ReasonCode::SUCCESS
    } else {
        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
    }
}

/// A client broke a protocol rule that the decoder cannot see (it needs session state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolViolation {
    /// [MQTT-3.1.0-1] the first packet must be CONNECT.
    FirstPacketNotConnect(PacketType),
    /// [MQTT-3.1.0-2] a second CONNECT.
    SecondConnect,
    /// A packet only a server may send (CONNACK, SUBACK, UNSUBACK, PINGRESP).
    ServerOnlyPacket(PacketType),
    /// A 3.1.1 PUBLISH with an empty topic (only 5.0 topic aliases allow it).
    EmptyTopic,
    /// A topic alias of 0 or above the maximum we announced [MQTT-3.3.2-8/9].
    TopicAliasInvalid,
    /// A PUBLISH with an empty topic and an alias never set: a Protocol Error (5.0 §3.3.4,
    /// "PUBLISH Actions"; the rule has no numbered statement).
    UnknownTopicAlias,
    /// DISCONNECT raised the session expiry interval from 0: a Protocol Error (5.0
    /// §3.14.2.2.2; no numbered statement).
    SessionExpiryRaised,
    /// AUTH without an authentication method in CONNECT [MQTT-4.12.0-7].
    UnexpectedAuth,
    /// No Local set on a shared subscription [MQTT-3.8.3-4].
    NoLocalOnSharedSubscription,
    /// A PUBLISH from a client carrying a Subscription Identifier [MQTT-3.3.4-6].
    SubscriptionIdInPublish,
    /// `$share/...` without a share name or without a topic filter after it
    /// [MQTT-4.8.2-1/2].
    MalformedSharedSubscription,
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT: the will is discarded [MQTT-3.14.4-3].
    ClientDisconnect,
    /// The peer closed the socket without DISCONNECT.
    PeerClosed,
    /// A socket error.
    IoError,
    /// The broker is stopping.
    Shutdown,
    /// [MQTT-3.1.2-24] nothing received for 1.5 × keepalive.
    KeepAliveTimeout,
    /// No CONNECT arrived in time after the TCP connection was accepted.
    ConnectTimeout,
    /// [MQTT-3.1.4-2] another connection took over the client id.
    TakenOver,
    /// The bytes could not be decoded.
    Decode(DecodeError),
    Protocol(ProtocolViolation),
    /// CONNECT was refused with this CONNACK code.
    ConnectRefused(ReasonCode),
    /// The CONNACK would exceed the client's Maximum Packet Size [MQTT-3.1.2-24]: closed
    /// without one.
    ConnackTooLarge,
    /// A 5.0 client sent more QoS 2 PUBLISHes awaiting PUBREL than our receive maximum.
    ReceiveMaximumExceeded,
    /// A 5.0 client sent DISCONNECT with reason 0x04: publish the will.
    ClientDisconnectWithWill,
    /// The session's expiry interval ran out while offline (no connection to close).
    SessionExpired,
    /// A reload no longer admits the client (user removed or changed in the password file,
    /// anonymous access turned off).
    NotAuthorized,
    /// A 3.1/3.1.1 client sent a QoS 1/2 PUBLISH while the broker was over `memory_limit`:
    /// it has no way to be told no, so, as Mosquitto does, the connection is closed (the
    /// client resends the message after reconnecting).
    MemoryLimit,
    /// A 3.1/3.1.1 client sent a QoS 1/2 PUBLISH for a bridge whose outbound queue is full
    /// (`bridge_queue.rs`): closed as for [`CloseReason::MemoryLimit`].
    BridgeQueueFull,
}

impl CloseReason {
    /// A will is published on every close except a clean DISCONNECT [MQTT-3.1.2-8]; and on
    /// shutdown, where Mosquitto does not publish wills either.
    pub fn publishes_will(self) -> bool {
        !matches!(
            self,
            CloseReason::ClientDisconnect | CloseReason::Shutdown | CloseReason::SessionExpired
        )
    }

    /// Why a client's DISCONNECT with `reason` ends its connection: a 5.0 client may ask
    /// for its will with 0x04 [MQTT-3.14.4-3].
    pub(super) fn of_client_disconnect(reason: ReasonCode, v5: bool) -> CloseReason {
        if reason == ReasonCode::DISCONNECT_WITH_WILL && v5 {
            CloseReason::ClientDisconnectWithWill
        } else {
            CloseReason::ClientDisconnect
        }
    }

    /// Whether the broker, not the client or the network, ends the connection.
    fn server_initiated(self) -> bool {
        !matches!(
            self,
            CloseReason::ClientDisconnect
                | CloseReason::ClientDisconnectWithWill
                | CloseReason::PeerClosed
                | CloseReason::IoError
                | CloseReason::ConnectRefused(_)
        )
    }

    /// The packet written last on a connection the broker closes for this reason, and the
    /// version it is encoded for: a 5.0 client learns why the server closes its
    /// connection [MQTT-4.13.2-1]; a CONNECT with an unsupported protocol level is
    /// answered with CONNACK 0x01 [MQTT-3.1.2-2] in the 3.1.1 format, the only one every
    /// client version can read (a wrong protocol name is closed without CONNACK, as
    /// Mosquitto does).
    pub(super) fn last_packet(
        self,
        v5: bool,
        connected: bool,
    ) -> Option<(ProtocolVersion, Packet<'static>)> {
        match self {
            _ if v5 && connected && self.server_initiated() => {
                let d = Disconnect {
                    reason: self.reason_code(),
                    properties: Properties::EMPTY,
                };
                Some((ProtocolVersion::V5, Packet::Disconnect(d)))
            }
            CloseReason::Decode(DecodeError::UnsupportedProtocolVersion(_)) if !connected => {
                let c = Connack {
                    session_present: false,
                    code: ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION,
                    properties: Properties::EMPTY,
                };
                Some((ProtocolVersion::V311, Packet::Connack(c)))
            }
            _ => None,
        }
    }

    /// The 5.0 reason code a server-sent DISCONNECT carries for this close.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            CloseReason::ClientDisconnect | CloseReason::PeerClosed | CloseReason::IoError => {
                ReasonCode::NORMAL_DISCONNECTION
            }
            CloseReason::Shutdown => ReasonCode::SERVER_SHUTTING_DOWN,
            CloseReason::KeepAliveTimeout => ReasonCode::KEEP_ALIVE_TIMEOUT,
            CloseReason::ConnectTimeout => ReasonCode::MAXIMUM_CONNECT_TIME,
            CloseReason::TakenOver => ReasonCode::SESSION_TAKEN_OVER,
            CloseReason::Decode(e) => e.reason_code(),
            CloseReason::Protocol(ProtocolViolation::EmptyTopic) => ReasonCode::TOPIC_NAME_INVALID,
            CloseReason::Protocol(ProtocolViolation::TopicAliasInvalid) => {
                ReasonCode::TOPIC_ALIAS_INVALID
            }
            CloseReason::ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            CloseReason::ClientDisconnectWithWill | CloseReason::SessionExpired => {
                ReasonCode::NORMAL_DISCONNECTION
            }
            CloseReason::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            CloseReason::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            CloseReason::ConnectRefused(code) => code,
            CloseReason::ConnackTooLarge => ReasonCode::PACKET_TOO_LARGE,
            CloseReason::MemoryLimit | CloseReason::BridgeQueueFull => ReasonCode::QUOTA_EXCEEDED,
        }
    }
}

impl fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolViolation::FirstPacketNotConnect(t) => {
                write!(f, "first packet was {t}, not CONNECT")
            }
            ProtocolViolation::SecondConnect => f.write_str("second CONNECT on one connection"),
            ProtocolViolation::ServerOnlyPacket(t) => {
                write!(f, "client sent {t}, a server-only packet")
            }
            ProtocolViolation::EmptyTopic => f.write_str("PUBLISH with an empty topic"),
            ProtocolViolation::TopicAliasInvalid => f.write_str("topic alias out of range"),
            ProtocolViolation::UnknownTopicAlias => {
                f.write_str("PUBLISH with an unknown topic alias")
            }
            ProtocolViolation::SessionExpiryRaised => {
                f.write_str("DISCONNECT set a session expiry after CONNECT had 0")
            }
            ProtocolViolation::UnexpectedAuth => {
                f.write_str("AUTH without an authentication method")
            }
            ProtocolViolation::NoLocalOnSharedSubscription => {
                f.write_str("no local on a shared subscription")
            }
            ProtocolViolation::SubscriptionIdInPublish => {
                f.write_str("PUBLISH with a subscription identifier")
            }
            ProtocolViolation::MalformedSharedSubscription => {
                f.write_str("malformed $share subscription")
            }
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientDisconnect => f.write_str("client sent DISCONNECT"),
            CloseReason::PeerClosed => f.write_str("connection closed by peer"),
            CloseReason::IoError => f.write_str("socket error"),
            CloseReason::Shutdown => f.write_str("broker shutting down"),
            CloseReason::KeepAliveTimeout => f.write_str("keepalive timeout"),
            CloseReason::ConnectTimeout => f.write_str("no CONNECT in time"),
            CloseReason::TakenOver => f.write_str("session taken over by a new connection"),
            CloseReason::Decode(e) => write!(f, "malformed packet: {e}"),
            CloseReason::Protocol(p) => write!(f, "protocol error: {p}"),
            CloseReason::ConnectRefused(code) => {
                write!(f, "CONNECT refused with code 0x{:02X}", code.0)
            }
            CloseReason::ReceiveMaximumExceeded => f.write_str("receive maximum exceeded"),
            CloseReason::ConnackTooLarge => {
                f.write_str("CONNACK larger than the client's maximum packet size")
            }
            CloseReason::ClientDisconnectWithWill => {
                f.write_str("client sent DISCONNECT with will")
            }
            CloseReason::SessionExpired => f.write_str("session expired"),
            CloseReason::NotAuthorized => {
                f.write_str("no longer admitted by the reloaded configuration")
            }
            CloseReason::MemoryLimit => f.write_str("QoS 1/2 message refused: over memory_limit"),
            CloseReason::BridgeQueueFull => {
                f.write_str("QoS 1/2 message refused: a bridge's outbound queue is full")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion::{V311, V5};

    #[test]
    fn connect_refusals_use_each_versions_codes() {
        let cases = [
            (ConnectRefusal::ClientIdTooLong, 0x02, 0x85),
            (ConnectRefusal::EmptyClientId, 0x02, 0x02),
            (ConnectRefusal::SessionsFull, 0x03, 0x97),
            (ConnectRefusal::Auth(Refusal::BadCredentials), 0x05, 0x87),
        ];
        for (refusal, v311, v5) in cases {
            assert_eq!(refusal.code(V311).0, v311, "{refusal:?} 3.1.1");
            assert_eq!(refusal.code(V5).0, v5, "{refusal:?} 5.0");
        }
        assert_eq!(ConnectRefusal::AuthenticationMethod.code(V5).0, 0x8C);
    }

    #[test]
    fn unsupported_level_gets_a_311_connack_and_5_clients_a_disconnect() {
        let bad_level = CloseReason::Decode(DecodeError::UnsupportedProtocolVersion(9));
        let mut bytes = Vec::new();
        if let Some((version, packet)) = bad_level.last_packet(false, false) {
            packet.encode(version, &mut bytes);
        }
        assert_eq!(bytes, [0x20, 0x02, 0x00, 0x01]);
        let last = CloseReason::KeepAliveTimeout.last_packet(true, true);
        assert!(matches!(last, Some((V5, Packet::Disconnect(d))) if d.reason.0 == 0x8D));
        assert!(CloseReason::KeepAliveTimeout
            .last_packet(false, true)
            .is_none());
        assert!(CloseReason::ClientDisconnect
            .last_packet(true, true)
            .is_none());
    }

    #[test]
    fn pubrec_reports_only_refusals_and_3_1_1_gets_no_codes() {
        assert_eq!(
            pubrec_code(Outcome::NoSubscribers, true),
            ReasonCode::SUCCESS
        );
        assert_eq!(pubrec_code(Outcome::NotAuthorized, true).0, 0x87);
        assert_eq!(puback_code(Outcome::NoSubscribers, true).0, 0x10);
        assert_eq!(
            puback_code(Outcome::QuotaExceeded, false),
            ReasonCode::SUCCESS
        );
        assert_eq!(SubscribeRefusal::Quota.code(false).0, 0x80);
        assert_eq!(packet_id_code(false, true).0, 0x92);
    }
}
