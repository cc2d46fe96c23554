//! The packet types: one struct per MQTT control packet, borrowed from the input buffer.
//!
//! A decoded packet borrows its strings, payload and property block from the bytes it was
//! decoded from, so decoding allocates only for the lists a SUBSCRIBE, UNSUBSCRIBE, SUBACK
//! or UNSUBACK carries. The broker copies what it keeps (a message it must queue, a
//! subscription it must remember); a QoS 0 message forwarded to online subscribers is never
//! copied into the heap.
//!
//! Invariants the decoder guarantees (and the encoder assumes): strings are well-formed
//! UTF-8 without U+0000; `Publish::topic` has no wildcard; every `Subscribe` filter is a
//! valid topic filter; packet ids that the spec requires are non-zero; the property block
//! holds only properties allowed in that packet, each at most once where the spec says so.

use std::num::NonZeroU16;

use super::properties::Properties;
use super::reason::ReasonCode;

/// Packet identifier: non-zero by construction [MQTT-2.3.1-1].
pub type PacketId = NonZeroU16;

/// The protocol level byte of CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1, protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0, protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => "MQTT",
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service. QoS 3 does not exist on the wire: the decoder rejects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Every MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    Connack(Connack<'a>),
    Publish(Publish<'a>),
    Puback(Ack<'a>),
    Pubrec(Ack<'a>),
    Pubrel(Ack<'a>),
    Pubcomp(Ack<'a>),
    Subscribe(Subscribe<'a>),
    Suback(Suback<'a>),
    Unsubscribe(Unsubscribe<'a>),
    Unsuback(Unsuback<'a>),
    Pingreq,
    Pingresp,
    Disconnect(Disconnect<'a>),
    /// MQTT 5 only.
    Auth(Auth<'a>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    pub version: ProtocolVersion,
    /// "Clean session" in 3.1/3.1.1, "clean start" in 5.0.
    pub clean_start: bool,
    /// Seconds; 0 disables keepalive.
    pub keep_alive: u16,
    /// Empty unless `version` is 5.0.
    pub properties: Properties<'a>,
    /// May be empty (the server then assigns one, or rejects it).
    pub client_id: &'a str,
    pub will: Option<Will<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// 3.1/3.1.1 only: the level byte carries the bridge bit 0x80 (Mosquitto's
    /// `try_private`): the client is a bridge, whose subscriptions get No Local and Retain
    /// As Published. Always false on 5.0, which has those options per subscription.
    pub bridge: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will<'a> {
    /// A valid topic name (no wildcards, not empty).
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (5.0 only).
    pub properties: Properties<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connack<'a> {
    pub session_present: bool,
    /// The 3.1.1 return code (0x00..=0x05) or the 5.0 reason code.
    pub code: ReasonCode,
    pub properties: Properties<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// No wildcards. Empty only in 5.0 when a topic alias property is present.
    pub topic: &'a str,
    /// `Some` exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    pub properties: Properties<'a>,
    pub payload: &'a [u8],
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack<'a> {
    pub packet_id: PacketId,
    /// Always `SUCCESS` in 3.1.1; in 5.0 omitted on the wire when it is `SUCCESS` and there
    /// are no properties.
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

/// Retain handling subscription option (5.0) [MQTT-3.3.1-9..11].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send retained messages only if the subscription did not already exist.
    OnNewSubscribe = 1,
    /// Do not send retained messages.
    Never = 2,
}

/// The options byte of one SUBSCRIBE entry. In 3.1.1 only `qos` is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe<'a> {
    pub packet_id: PacketId,
    pub properties: Properties<'a>,
    /// At least one entry [MQTT-3.8.3-3]; every filter syntactically valid.
    pub filters: Vec<(&'a str, SubscriptionOptions)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suback<'a> {
    pub packet_id: PacketId,
    pub properties: Properties<'a>,
    /// One per filter: granted QoS (0x00..=0x02) or a failure code (0x80 and above).
    pub codes: Vec<ReasonCode>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    pub packet_id: PacketId,
    pub properties: Properties<'a>,
    /// At least one entry [MQTT-3.10.3-2].
    pub filters: Vec<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsuback<'a> {
    pub packet_id: PacketId,
    pub properties: Properties<'a>,
    /// 5.0 only: one reason code per filter. Empty for 3.1.1.
    pub codes: Vec<ReasonCode>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// Always `SUCCESS` (normal disconnection) before 5.0.
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth<'a> {
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}
