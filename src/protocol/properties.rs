//! MQTT 5.0 properties (§2.2.2), kept as the raw, validated property block.
//!
//! Decoding validates a block once (known ids, allowed in this packet, no forbidden
//! duplicates, well-formed values) and keeps the bytes; readers iterate on demand. Keeping
//! the raw bytes means a PUBLISH's properties are forwarded to v5 subscribers by copying
//! one slice, and a 3.1.1 packet carries an empty block at no cost.

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
}

/// An owned property block under construction, for packets the broker encodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertiesBuf {
    buf: Vec<u8>,
}

impl PropertiesBuf {
    pub fn new() -> PropertiesBuf {
        PropertiesBuf::default()
    }

    pub fn as_properties(&self) -> Properties<'_> {
        Properties::from_encoded(&self.buf)
    }
}
