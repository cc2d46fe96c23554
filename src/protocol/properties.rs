//! MQTT 5.0 properties (§2.2.2), kept as the raw, validated property block.
//!
//! Decoding validates a block once (known ids, allowed in this packet, no forbidden
//! duplicates, well-formed values) and keeps the bytes; readers iterate on demand. Keeping
//! the raw bytes means a PUBLISH's properties are forwarded to v5 subscribers by copying
//! one slice, and a 3.1.1 packet carries an empty block at no cost.
//!
//! Owns: the identifier table (type, packets allowed in, repeatability, value range),
//! validation ([`read_properties`]), lazy iteration and typed getters, and encoding of single
//! properties ([`Property::encode`], [`PropertiesBuf`]).

use super::error::DecodeError;
use super::packet_type::PacketType;
use super::reader::{Reader, VARINT_MAX};
use super::topic;
use super::writer::{put_bin, put_str, put_u16, put_u32, put_varint, varint_len};

/// A validated property block (the bytes after the property length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Properties<'a> {
    raw: &'a [u8],
}

/// One property, borrowed from its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property<'a> {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    UserProperty(&'a str, &'a str),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// Where a property block sits: a packet's variable header, or the will properties of a
/// CONNECT payload (which allow a different set, §3.1.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PropertyContext {
    Packet(PacketType),
    Will,
}

/// An owned property block under construction, for packets the broker encodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertiesBuf {
    buf: Vec<u8>,
}

macro_rules! getter {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $name(&self) -> Option<$ty> {
            self.iter().find_map(|p| match p {
                Property::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

impl<'a> Properties<'a> {
    pub const EMPTY: Properties<'static> = Properties { raw: &[] };

    /// Wraps bytes this crate encoded itself (e.g. with [`PropertiesBuf`]) or already
    /// validated. Iteration over a block that is not well-formed stops early; it never panics.
    pub fn from_encoded(raw: &'a [u8]) -> Properties<'a> {
        Properties { raw }
    }

    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The properties in wire order. Stops at the first malformed byte.
    pub fn iter(&self) -> impl Iterator<Item = Property<'a>> {
        let mut r = Reader::new(self.raw);
        std::iter::from_fn(move || {
            if r.is_empty() {
                return None;
            }
            match read_property(&mut r) {
                Ok(p) => Some(p),
                Err(_) => {
                    r.rest();
                    None
                }
            }
        })
    }

    getter!(payload_format_indicator, PayloadFormatIndicator, u8);
    getter!(message_expiry_interval, MessageExpiryInterval, u32);
    getter!(content_type, ContentType, &'a str);
    getter!(response_topic, ResponseTopic, &'a str);
    getter!(correlation_data, CorrelationData, &'a [u8]);
    getter!(session_expiry_interval, SessionExpiryInterval, u32);
    getter!(
        assigned_client_identifier,
        AssignedClientIdentifier,
        &'a str
    );
    getter!(server_keep_alive, ServerKeepAlive, u16);
    getter!(authentication_method, AuthenticationMethod, &'a str);
    getter!(authentication_data, AuthenticationData, &'a [u8]);
    getter!(request_problem_information, RequestProblemInformation, u8);
    getter!(will_delay_interval, WillDelayInterval, u32);
    getter!(request_response_information, RequestResponseInformation, u8);
    getter!(response_information, ResponseInformation, &'a str);
    getter!(server_reference, ServerReference, &'a str);
    getter!(reason_string, ReasonString, &'a str);
    getter!(receive_maximum, ReceiveMaximum, u16);
    getter!(topic_alias_maximum, TopicAliasMaximum, u16);
    getter!(topic_alias, TopicAlias, u16);
    getter!(maximum_qos, MaximumQoS, u8);
    getter!(retain_available, RetainAvailable, u8);
    getter!(maximum_packet_size, MaximumPacketSize, u32);
    getter!(
        wildcard_subscription_available,
        WildcardSubscriptionAvailable,
        u8
    );
    getter!(
        subscription_identifier_available,
        SubscriptionIdentifierAvailable,
        u8
    );
    getter!(
        shared_subscription_available,
        SharedSubscriptionAvailable,
        u8
    );

    /// Every user property, in order (they may repeat, even with the same name).
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k, v)),
            _ => None,
        })
    }

    /// Every subscription identifier (several in a PUBLISH sent to a client, §3.3.2.3.8).
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + 'a {
        self.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(v),
            _ => None,
        })
    }
}

impl Property<'_> {
    /// Appends identifier and value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use Property::*;
        out.push(self.id());
        match *self {
            PayloadFormatIndicator(v)
            | RequestProblemInformation(v)
            | RequestResponseInformation(v)
            | MaximumQoS(v)
            | RetainAvailable(v)
            | WildcardSubscriptionAvailable(v)
            | SubscriptionIdentifierAvailable(v)
            | SharedSubscriptionAvailable(v) => out.push(v),
            ServerKeepAlive(v) | ReceiveMaximum(v) | TopicAliasMaximum(v) | TopicAlias(v) => {
                put_u16(out, v)
            }
            MessageExpiryInterval(v)
            | SessionExpiryInterval(v)
            | WillDelayInterval(v)
            | MaximumPacketSize(v) => put_u32(out, v),
            SubscriptionIdentifier(v) => put_varint(out, v as usize),
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => put_str(out, s),
            CorrelationData(b) | AuthenticationData(b) => put_bin(out, b),
            UserProperty(k, v) => {
                put_str(out, k);
                put_str(out, v);
            }
        }
    }

    /// Bytes [`Property::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        use Property::*;
        1 + match *self {
            PayloadFormatIndicator(_)
            | RequestProblemInformation(_)
            | RequestResponseInformation(_)
            | MaximumQoS(_)
            | RetainAvailable(_)
            | WildcardSubscriptionAvailable(_)
            | SubscriptionIdentifierAvailable(_)
            | SharedSubscriptionAvailable(_) => 1,
            ServerKeepAlive(_) | ReceiveMaximum(_) | TopicAliasMaximum(_) | TopicAlias(_) => 2,
            MessageExpiryInterval(_)
            | SessionExpiryInterval(_)
            | WillDelayInterval(_)
            | MaximumPacketSize(_) => 4,
            SubscriptionIdentifier(v) => varint_len(v as usize),
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => 2 + s.len(),
            CorrelationData(b) | AuthenticationData(b) => 2 + b.len(),
            UserProperty(k, v) => 4 + k.len() + v.len(),
        }
    }
}

impl PropertyContext {
    fn bit(self) -> u16 {
        match self {
            PropertyContext::Will => WILL,
            PropertyContext::Packet(t) => 1 << (t as u16),
        }
    }
}

impl PropertiesBuf {
    pub fn new() -> PropertiesBuf {
        PropertiesBuf::default()
    }

    /// Appends one encoded property. The caller keeps the block valid for the packet it
    /// goes into (allowed ids, no forbidden duplicates).
    pub fn push(&mut self, p: Property<'_>) {
        p.encode(&mut self.buf);
    }

    /// Appends properties already encoded (e.g. a stored message's forwarded block).
    pub fn extend_encoded(&mut self, raw: &[u8]) {
        self.buf.extend_from_slice(raw);
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_properties(&self) -> Properties<'_> {
        Properties::from_encoded(&self.buf)
    }
}

// Bit per context: bit 0 is the will properties, bit n is packet type n.
const WILL: u16 = 1;
const fn pkt(t: PacketType) -> u16 {
    1 << (t as u16)
}
const CONNECT: u16 = pkt(PacketType::Connect);
const CONNACK: u16 = pkt(PacketType::Connack);
const PUBLISH: u16 = pkt(PacketType::Publish);
const ACKS: u16 = pkt(PacketType::Puback)
    | pkt(PacketType::Pubrec)
    | pkt(PacketType::Pubrel)
    | pkt(PacketType::Pubcomp);
const SUBSCRIBE: u16 = pkt(PacketType::Subscribe);
const SUBACK: u16 = pkt(PacketType::Suback);
const UNSUBSCRIBE: u16 = pkt(PacketType::Unsubscribe);
const UNSUBACK: u16 = pkt(PacketType::Unsuback);
const DISCONNECT: u16 = pkt(PacketType::Disconnect);
const AUTH: u16 = pkt(PacketType::Auth);

/// Reads one value of the given type (§2.2.2.2) as `Property::$variant`.
macro_rules! read_typed {
    (Byte, $variant:ident, $r:ident) => {
        Property::$variant($r.u8()?)
    };
    (U16, $variant:ident, $r:ident) => {
        Property::$variant($r.u16()?)
    };
    (U32, $variant:ident, $r:ident) => {
        Property::$variant($r.u32()?)
    };
    (VarInt, $variant:ident, $r:ident) => {
        Property::$variant($r.varint()?)
    };
    (Str, $variant:ident, $r:ident) => {
        Property::$variant($r.string()?)
    };
    (Bin, $variant:ident, $r:ident) => {
        Property::$variant($r.binary()?)
    };
    (Pair, $variant:ident, $r:ident) => {{
        let k = $r.string()?;
        Property::$variant(k, $r.string()?)
    }};
}

/// Generates, from the one table below, the id constants, [`Property::id`], the context
/// lookup and the decoder, so an id, its variant, its value type and where it may appear
/// cannot drift apart. A repeated id is an unreachable-pattern lint error, a repeated name a
/// duplicate-definition error, and a variant missing from the table a non-exhaustive `id()`.
macro_rules! property_table {
    ($( ($id:literal, $konst:ident, $variant:ident, $ty:ident, $allowed:expr) ),* $(,)?) => {
        impl Property<'_> {
            $( pub const $konst: u8 = $id; )*

            /// The property identifier byte.
            pub fn id(&self) -> u8 {
                match self {
                    $( Property::$variant(..) => Self::$konst, )*
                }
            }
        }

        /// The contexts an id may appear in (bits as for [`PropertyContext::bit`]); `None`
        /// for an id the spec does not define.
        fn allowed_in(id: u8) -> Option<u16> {
            match id {
                $( $id => Some($allowed), )*
                _ => None,
            }
        }

        /// Reads the value of property `id`. An id not in the table is an error, never
        /// some other property's variant.
        fn read_value<'a>(id: u8, r: &mut Reader<'a>) -> Result<Property<'a>, DecodeError> {
            Ok(match id {
                $( $id => read_typed!($ty, $variant, r), )*
                _ => return Err(DecodeError::InvalidPropertyId(id)),
            })
        }
    };
}

// The table of §2.2.2.2: id, constant, variant, value type, contexts it may appear in.
property_table! {
    (0x01, PAYLOAD_FORMAT_INDICATOR, PayloadFormatIndicator, Byte, PUBLISH | WILL),
    (0x02, MESSAGE_EXPIRY_INTERVAL, MessageExpiryInterval, U32, PUBLISH | WILL),
    (0x03, CONTENT_TYPE, ContentType, Str, PUBLISH | WILL),
    (0x08, RESPONSE_TOPIC, ResponseTopic, Str, PUBLISH | WILL),
    (0x09, CORRELATION_DATA, CorrelationData, Bin, PUBLISH | WILL),
    (0x0B, SUBSCRIPTION_IDENTIFIER, SubscriptionIdentifier, VarInt, PUBLISH | SUBSCRIBE),
    (0x11, SESSION_EXPIRY_INTERVAL, SessionExpiryInterval, U32, CONNECT | CONNACK | DISCONNECT),
    (0x12, ASSIGNED_CLIENT_IDENTIFIER, AssignedClientIdentifier, Str, CONNACK),
    (0x13, SERVER_KEEP_ALIVE, ServerKeepAlive, U16, CONNACK),
    (0x15, AUTHENTICATION_METHOD, AuthenticationMethod, Str, CONNECT | CONNACK | AUTH),
    (0x16, AUTHENTICATION_DATA, AuthenticationData, Bin, CONNECT | CONNACK | AUTH),
    (0x17, REQUEST_PROBLEM_INFORMATION, RequestProblemInformation, Byte, CONNECT),
    (0x18, WILL_DELAY_INTERVAL, WillDelayInterval, U32, WILL),
    (0x19, REQUEST_RESPONSE_INFORMATION, RequestResponseInformation, Byte, CONNECT),
    (0x1A, RESPONSE_INFORMATION, ResponseInformation, Str, CONNACK),
    (0x1C, SERVER_REFERENCE, ServerReference, Str, CONNACK | DISCONNECT),
    (0x1F, REASON_STRING, ReasonString, Str,
        CONNACK | ACKS | SUBACK | UNSUBACK | DISCONNECT | AUTH),
    (0x21, RECEIVE_MAXIMUM, ReceiveMaximum, U16, CONNECT | CONNACK),
    (0x22, TOPIC_ALIAS_MAXIMUM, TopicAliasMaximum, U16, CONNECT | CONNACK),
    (0x23, TOPIC_ALIAS, TopicAlias, U16, PUBLISH),
    (0x24, MAXIMUM_QOS, MaximumQoS, Byte, CONNACK),
    (0x25, RETAIN_AVAILABLE, RetainAvailable, Byte, CONNACK),
    (0x26, USER_PROPERTY, UserProperty, Pair,
        CONNECT | CONNACK | PUBLISH | WILL | ACKS | SUBSCRIBE | SUBACK | UNSUBSCRIBE
            | UNSUBACK | DISCONNECT | AUTH),
    (0x27, MAXIMUM_PACKET_SIZE, MaximumPacketSize, U32, CONNECT | CONNACK),
    (0x28, WILDCARD_SUBSCRIPTION_AVAILABLE, WildcardSubscriptionAvailable, Byte, CONNACK),
    (0x29, SUBSCRIPTION_IDENTIFIER_AVAILABLE, SubscriptionIdentifierAvailable, Byte, CONNACK),
    (0x2A, SHARED_SUBSCRIPTION_AVAILABLE, SharedSubscriptionAvailable, Byte, CONNACK),
}

/// Reads one property (identifier and value) without checking where it may appear.
fn read_property<'a>(r: &mut Reader<'a>) -> Result<Property<'a>, DecodeError> {
    let id = r.u8()?;
    read_value(id, r)
}

/// Reads a property length and block from `r` and validates every property in it for
/// `ctx`: known id [§2.2.2.2], allowed in this context, not repeated unless the spec allows
/// it, value in range.
pub(crate) fn read_properties<'a>(
    r: &mut Reader<'a>,
    ctx: PropertyContext,
) -> Result<Properties<'a>, DecodeError> {
    let len = r.varint()?;
    let raw = r.take(len as usize)?;
    let mut block = Reader::new(raw);
    let mut seen: u64 = 0;
    while !block.is_empty() {
        let id = block.u8()?;
        let allowed = allowed_in(id).ok_or(DecodeError::InvalidPropertyId(id))?;
        if allowed & ctx.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed(id));
        }
        let p = read_value(id, &mut block)?;
        // User Property may repeat anywhere; Subscription Identifier only in PUBLISH
        // (§3.3.2.3.8); every other property at most once.
        let repeatable = id == Property::USER_PROPERTY
            || (id == Property::SUBSCRIPTION_IDENTIFIER
                && ctx == PropertyContext::Packet(PacketType::Publish));
        let bit = 1u64 << id; // ids are <= 0x2A, checked by `allowed_in`
        if seen & bit != 0 && !repeatable {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit;
        check_value(&p)?;
    }
    Ok(Properties { raw })
}

/// A 5.0 property block with its length prefix.
pub(crate) fn put_properties(out: &mut Vec<u8>, p: &Properties<'_>) {
    put_varint(out, p.raw().len());
    out.extend_from_slice(p.raw());
}

pub(crate) fn properties_len(p: &Properties<'_>) -> usize {
    varint_len(p.raw().len()) + p.raw().len()
}

/// Value ranges the spec gives for single properties.
fn check_value(p: &Property<'_>) -> Result<(), DecodeError> {
    use Property::*;
    let ok = match *p {
        // §3.3.2.3.2, §3.1.2.11.7, §3.1.2.11.6, §3.2.2.3.4/5, §3.2.2.3.11-13: 0 or 1.
        PayloadFormatIndicator(v)
        | RequestProblemInformation(v)
        | RequestResponseInformation(v)
        | MaximumQoS(v)
        | RetainAvailable(v)
        | WildcardSubscriptionAvailable(v)
        | SubscriptionIdentifierAvailable(v)
        | SharedSubscriptionAvailable(v) => v <= 1,
        // "It is a Protocol Error to include the Receive Maximum value of 0" §3.1.2.11.3;
        // same for Maximum Packet Size §3.1.2.11.4 and Topic Alias [MQTT-3.3.2-8].
        ReceiveMaximum(v) | TopicAlias(v) => v != 0,
        MaximumPacketSize(v) => v != 0,
        // 1..=268,435,455 [MQTT-3.8.2.1.2]; the varint reader bounds the top.
        SubscriptionIdentifier(v) => v != 0 && v <= VARINT_MAX,
        // The Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
        ResponseTopic(s) => topic::is_valid_topic_name(s),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidPropertyValue(p.id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(t: PacketType) -> PropertyContext {
        PropertyContext::Packet(t)
    }

    fn block(props: &[Property<'_>]) -> Vec<u8> {
        let mut b = PropertiesBuf::new();
        for p in props {
            b.push(*p);
        }
        let mut out = Vec::new();
        put_varint(&mut out, b.buf.len());
        out.extend_from_slice(&b.buf);
        out
    }

    fn validate(bytes: &[u8], c: PropertyContext) -> Result<Properties<'_>, DecodeError> {
        let mut r = Reader::new(bytes);
        let p = read_properties(&mut r, c)?;
        r.finish()?;
        Ok(p)
    }

    #[test]
    fn every_property_round_trips_through_encode_and_iter() {
        use Property::*;
        let all = [
            PayloadFormatIndicator(1),
            MessageExpiryInterval(7),
            ContentType("text/plain"),
            ResponseTopic("r/t"),
            CorrelationData(b"\x00\x01"),
            SubscriptionIdentifier(268_435_455),
            SessionExpiryInterval(60),
            AssignedClientIdentifier("auto-1"),
            ServerKeepAlive(30),
            AuthenticationMethod("SCRAM"),
            AuthenticationData(b"x"),
            RequestProblemInformation(0),
            WillDelayInterval(5),
            RequestResponseInformation(1),
            ResponseInformation("resp"),
            ServerReference("other:1883"),
            ReasonString("why"),
            ReceiveMaximum(10),
            TopicAliasMaximum(5),
            TopicAlias(3),
            MaximumQoS(1),
            RetainAvailable(0),
            UserProperty("k", "v"),
            MaximumPacketSize(1024),
            WildcardSubscriptionAvailable(1),
            SubscriptionIdentifierAvailable(1),
            SharedSubscriptionAvailable(0),
        ];
        for p in all {
            let mut out = Vec::new();
            p.encode(&mut out);
            assert_eq!(out.len(), p.encoded_len(), "{p:?}");
            let got: Vec<_> = Properties::from_encoded(&out).iter().collect();
            assert_eq!(got, [p]);
        }
    }

    #[test]
    fn getters_find_values() {
        let b = block(&[
            Property::SessionExpiryInterval(99),
            Property::UserProperty("a", "1"),
            Property::ReceiveMaximum(4),
            Property::UserProperty("a", "2"),
        ]);
        let p = validate(&b, ctx(PacketType::Connect)).unwrap();
        assert_eq!(p.session_expiry_interval(), Some(99));
        assert_eq!(p.receive_maximum(), Some(4));
        assert_eq!(p.maximum_packet_size(), None);
        assert_eq!(
            p.user_properties().collect::<Vec<_>>(),
            [("a", "1"), ("a", "2")]
        );
    }

    #[test]
    fn subscription_identifier_repeats_only_in_publish() {
        let b = block(&[
            Property::SubscriptionIdentifier(1),
            Property::SubscriptionIdentifier(2),
        ]);
        let p = validate(&b, ctx(PacketType::Publish)).unwrap();
        assert_eq!(p.subscription_identifiers().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            validate(&b, ctx(PacketType::Subscribe)),
            Err(DecodeError::DuplicateProperty(0x0B))
        );
    }

    #[test]
    fn duplicates_wrong_context_and_ranges_rejected() {
        let dup = block(&[Property::ReceiveMaximum(1), Property::ReceiveMaximum(2)]);
        assert_eq!(
            validate(&dup, ctx(PacketType::Connect)),
            Err(DecodeError::DuplicateProperty(0x21))
        );
        let will_delay = block(&[Property::WillDelayInterval(1)]);
        assert!(validate(&will_delay, PropertyContext::Will).is_ok());
        assert_eq!(
            validate(&will_delay, ctx(PacketType::Connect)),
            Err(DecodeError::PropertyNotAllowed(0x18))
        );
        for bad in [
            Property::ReceiveMaximum(0),
            Property::MaximumPacketSize(0),
            Property::RequestProblemInformation(2),
        ] {
            assert_eq!(
                validate(&block(&[bad]), ctx(PacketType::Connect)),
                Err(DecodeError::InvalidPropertyValue(bad.id()))
            );
        }
        assert_eq!(
            validate(
                &block(&[Property::SubscriptionIdentifier(0)]),
                ctx(PacketType::Subscribe)
            ),
            Err(DecodeError::InvalidPropertyValue(0x0B))
        );
        assert_eq!(
            validate(&[0x02, 0x00, 0x00], ctx(PacketType::Connect)),
            Err(DecodeError::InvalidPropertyId(0))
        );
        // Block length past the end, and a value past the end of its block.
        assert_eq!(
            validate(&[0x05, 0x21, 0x00], ctx(PacketType::Connect)),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            validate(&[0x02, 0x21, 0x00, 0x01], ctx(PacketType::Connect)),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn iter_stops_on_garbage() {
        let p = Properties::from_encoded(&[0x21, 0x00, 0x05, 0xFF, 0x01]);
        assert_eq!(p.iter().collect::<Vec<_>>(), [Property::ReceiveMaximum(5)]);
        let p = Properties::from_encoded(&[0x26, 0x00]);
        assert_eq!(p.iter().count(), 0);
    }
}
