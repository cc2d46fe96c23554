//! Why the broker ends a connection, and how each reason maps to the wire.

use std::fmt;

use crate::auth::Refusal;
use crate::protocol::{DecodeError, PacketType, ProtocolVersion, ReasonCode};

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
    /// A PUBLISH with an empty topic and an alias never set [MQTT-3.3.4-?].
    UnknownTopicAlias,
    /// DISCONNECT raised the session expiry interval from 0 [MQTT-3.14.2-2].
    SessionExpiryRaised,
    /// AUTH without an authentication method in CONNECT [MQTT-3.15.2-?].
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
            CloseReason::MemoryLimit => ReasonCode::QUOTA_EXCEEDED,
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
        }
    }
}
