//! What can be wrong with bytes from a peer, and the one mapping from those faults to MQTT
//! 5.0 reason codes.
//!
//! One variant per distinct wire fault, small and `Copy` so the decoder never allocates on
//! the error path. [`DecodeError::reason_code`] is the only place that decides which reason
//! code a fault earns; the broker uses it for the DISCONNECT (or CONNACK) it sends.

use std::fmt;

use super::reason::ReasonCode;

/// Why a packet could not be decoded. Every variant ends the connection that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A variable byte integer longer than 4 bytes, or not in its shortest form
    /// [MQTT-1.5.5-1].
    MalformedVariableInt,
    /// The packet would exceed the configured maximum packet size (checked from the fixed
    /// header alone, before the body is buffered).
    PacketTooLarge { size: usize, max: u32 },
    /// Packet type 0, or 15 (AUTH) on a connection that is not MQTT 5.0.
    ReservedPacketType(u8),
    /// Fixed header flags other than those the packet type requires [MQTT-2.2.2-1/2], or
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    InvalidFlags { packet_type: u8, flags: u8 },
    /// PUBLISH with both QoS bits set [MQTT-3.3.1-4].
    InvalidQoS,
    /// A field runs past the end of the remaining length (or of its property block).
    Truncated,
    /// Bytes left over after the last field of the packet.
    TrailingBytes,
    /// A string that is not well-formed UTF-8 [MQTT-1.5.3-1].
    InvalidUtf8,
    /// A string containing U+0000 [MQTT-1.5.3-2], a control character or a non-character
    /// (rejected like Mosquitto does; see `reader::check_str`).
    DisallowedCodePoint,
    /// CONNECT protocol name is neither "MQTT" nor "MQIsdp" [MQTT-3.1.2-1].
    InvalidProtocolName,
    /// Known protocol name with a level we do not speak (the raw level byte) [MQTT-3.1.2-2].
    UnsupportedProtocolVersion(u8),
    /// CONNECT reserved flag bit 0 set [MQTT-3.1.2-3].
    ReservedConnectFlag,
    /// Will QoS/retain set without the will flag, or will QoS 3 [MQTT-3.1.2-11/13/14/15].
    InvalidWillFlags,
    /// 3.1/3.1.1 CONNECT with the password flag but not the user name flag [MQTT-3.1.2-22].
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags bits 7..1 set [MQTT-3.2.2-1].
    ReservedConnackFlag,
    /// A topic name (PUBLISH, will topic, response topic) with a wildcard, or an empty will
    /// topic [MQTT-3.3.2-2] [MQTT-4.7.3-1].
    InvalidTopicName,
    /// PUBLISH with an empty topic name and no topic alias [MQTT-3.3.2-1].
    TopicNameMissing,
    /// A topic filter that breaks the wildcard or length rules [MQTT-4.7.1-2/3] [MQTT-4.7.3-1].
    InvalidTopicFilter,
    /// A packet identifier of zero [MQTT-2.3.1-1].
    ZeroPacketId,
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter [MQTT-3.8.3-3] [MQTT-3.10.3-2].
    NoTopicFilters,
    /// SUBACK, or 5.0 UNSUBACK, without any reason code [MQTT-3.9.3-1] [MQTT-3.11.3-1].
    NoReasonCodes,
    /// Reserved bits set in a SUBSCRIBE options byte [MQTT-3.8.3-4] [MQTT-3.8.3-5].
    ReservedSubscriptionBits,
    /// Subscription options with QoS 3 or (5.0) retain handling 3.
    InvalidSubscriptionOptions,
    /// A property identifier that MQTT 5.0 does not define.
    InvalidPropertyId(u8),
    /// A property given twice where the spec allows it once.
    DuplicateProperty(u8),
    /// A property the spec does not allow in this packet (§2.2.2.2).
    PropertyNotAllowed(u8),
    /// A property value out of its range (e.g. receive maximum 0, a flag other than 0/1).
    InvalidPropertyValue(u8),
    /// A 5.0 PUBACK/PUBREC/PUBREL/PUBCOMP reason code that the packet's table does not list
    /// (§3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1).
    InvalidReasonCode { packet_type: u8, code: u8 },
}

impl DecodeError {
    /// The 5.0 reason code for a DISCONNECT (or CONNACK) caused by this error. This is the
    /// one place where decode errors map to reason codes.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            // §3.1.2.1/§3.1.2.2: the server MAY answer a CONNECT it cannot speak with
            // CONNACK 0x84 (0x01 in 3.1.1, which the broker derives itself).
            InvalidProtocolName | UnsupportedProtocolVersion(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            // The 5.0 text calls these a "Protocol Error" rather than malformed.
            ZeroPacketId // [MQTT-2.2.1-3]
            // A wildcard in a topic name [MQTT-3.3.2-2]: Mosquitto 2.0 answers 0x82, not
            // 0x90 ("not malformed, but not accepted", which fits a name the server
            // dislikes rather than one the spec forbids).
            | InvalidTopicName
            | TopicNameMissing // §3.3.2.1
            | NoTopicFilters // §3.8.3, §3.10.3
            | NoReasonCodes
            | InvalidSubscriptionOptions // §3.8.3.1
            | DuplicateProperty(_) // §3.x.2.x "more than once"
            | InvalidPropertyValue(_)
            // Not named by the spec; Mosquitto 2.0 answers a PUBACK/PUBREC/PUBREL/PUBCOMP
            // reason code outside the packet's table with DISCONNECT 0x82.
            | InvalidReasonCode { .. } => ReasonCode::PROTOCOL_ERROR,
            MalformedVariableInt
            | ReservedPacketType(_)
            | InvalidFlags { .. }
            | InvalidQoS
            | Truncated
            | TrailingBytes
            | InvalidUtf8
            | DisallowedCodePoint
            | ReservedConnectFlag
            | InvalidWillFlags
            | PasswordWithoutUsername
            | ReservedConnackFlag
            | InvalidTopicFilter
            | ReservedSubscriptionBits
            // §2.2.2.2: an identifier not valid for its packet type is a Malformed Packet.
            | InvalidPropertyId(_)
            | PropertyNotAllowed(_) => ReasonCode::MALFORMED_PACKET,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        match self {
            MalformedVariableInt => f.write_str("malformed variable byte integer"),
            PacketTooLarge { size, max } => {
                write!(
                    f,
                    "packet of {size} bytes exceeds maximum packet size {max}"
                )
            }
            ReservedPacketType(t) => write!(f, "reserved packet type {t}"),
            InvalidFlags { packet_type, flags } => {
                write!(f, "invalid flags 0x{flags:X} for packet type {packet_type}")
            }
            InvalidQoS => f.write_str("PUBLISH with QoS 3"),
            Truncated => f.write_str("field runs past the end of the packet"),
            TrailingBytes => f.write_str("bytes after the last field of the packet"),
            InvalidUtf8 => f.write_str("string is not well-formed UTF-8"),
            DisallowedCodePoint => f.write_str("string contains a disallowed code point"),
            InvalidProtocolName => f.write_str("unknown protocol name in CONNECT"),
            UnsupportedProtocolVersion(v) => write!(f, "unsupported protocol level {v}"),
            ReservedConnectFlag => f.write_str("CONNECT reserved flag is set"),
            InvalidWillFlags => f.write_str("invalid will QoS/retain flags in CONNECT"),
            PasswordWithoutUsername => f.write_str("password flag set without user name flag"),
            ReservedConnackFlag => f.write_str("CONNACK reserved flags are set"),
            InvalidTopicName => f.write_str("invalid topic name"),
            TopicNameMissing => f.write_str("PUBLISH without topic name or topic alias"),
            InvalidTopicFilter => f.write_str("invalid topic filter"),
            ZeroPacketId => f.write_str("packet identifier is zero"),
            NoTopicFilters => f.write_str("no topic filters"),
            NoReasonCodes => f.write_str("no reason codes"),
            ReservedSubscriptionBits => f.write_str("reserved subscription option bits set"),
            InvalidSubscriptionOptions => f.write_str("invalid subscription options"),
            InvalidPropertyId(id) => write!(f, "unknown property identifier 0x{id:02X}"),
            DuplicateProperty(id) => write!(f, "property 0x{id:02X} given more than once"),
            PropertyNotAllowed(id) => write!(f, "property 0x{id:02X} not allowed in this packet"),
            InvalidPropertyValue(id) => write!(f, "invalid value for property 0x{id:02X}"),
            InvalidReasonCode { packet_type, code } => {
                write!(
                    f,
                    "reason code 0x{code:02X} not valid for packet type {packet_type}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}
