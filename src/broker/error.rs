//! Why the broker ends a connection, and how each reason maps to the wire.

use std::fmt;

use crate::auth::Refusal;
use crate::protocol::{DecodeError, PacketType, ProtocolVersion, ReasonCode};

/// The CONNACK code refusing a client: 3.1/3.1.1 return codes, 5.0 reason codes.
pub(super) fn refusal_code(refusal: Refusal, version: ProtocolVersion) -> ReasonCode {
    match (refusal, version) {
        (Refusal::NotAuthorized, ProtocolVersion::V5) => ReasonCode::NOT_AUTHORIZED,
        (Refusal::NotAuthorized, _) => ReasonCode::V3_NOT_AUTHORIZED,
        (Refusal::BadCredentials, ProtocolVersion::V5) => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        (Refusal::BadCredentials, _) => ReasonCode::V3_BAD_USER_NAME_OR_PASSWORD,
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
}

impl CloseReason {
    /// A will is published on every close except a clean DISCONNECT [MQTT-3.1.2-8]; and on
    /// shutdown, where Mosquitto does not publish wills either.
    pub fn publishes_will(self) -> bool {
        !matches!(self, CloseReason::ClientDisconnect | CloseReason::Shutdown)
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
            CloseReason::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            CloseReason::ConnectRefused(code) => code,
        }
    }
}

impl fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolViolation::FirstPacketNotConnect(t) => {
                write!(f, "first packet was {t:?}, not CONNECT")
            }
            ProtocolViolation::SecondConnect => f.write_str("second CONNECT on one connection"),
            ProtocolViolation::ServerOnlyPacket(t) => {
                write!(f, "client sent {t:?}, a server-only packet")
            }
            ProtocolViolation::EmptyTopic => f.write_str("PUBLISH with an empty topic"),
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
        }
    }
}
