//! SUBSCRIBE (§3.8), SUBACK (§3.9), UNSUBSCRIBE (§3.10) and UNSUBACK (§3.11).
//!
//! These are the packets whose decode allocates: one `Vec` for the filter or reason-code
//! list. Every filter is checked with `topic::is_valid_topic_filter` after the string rules.

use std::num::NonZeroU16;

use super::error::DecodeError;
use super::packet::{
    PacketId, ProtocolVersion, QoS, RetainHandling, Suback, Subscribe, SubscriptionOptions,
    Unsuback, Unsubscribe,
};
use super::packet_type::PacketType;
use super::properties::{
    properties_len, put_properties, read_properties, Properties, PropertyContext,
};
use super::reader::Reader;
use super::reason::ReasonCode;
use super::topic;
use super::writer::{put_str, put_u16};

impl SubscriptionOptions {
    /// Parses an options byte (§3.8.3.1).
    pub(crate) fn from_byte(b: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        // 3.1.1: bits 7..2 reserved [MQTT-3-8.3-4]; 5.0: bits 7..6 [MQTT-3.8.3-5].
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if b & reserved != 0 {
            return Err(DecodeError::ReservedSubscriptionBits);
        }
        let qos = QoS::from_u8(b & 0b11).ok_or(DecodeError::InvalidSubscriptionOptions)?;
        let retain_handling = match (b >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::InvalidSubscriptionOptions), // §3.8.3.1
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: b & 0b0100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }

    /// The options byte; 3.1/3.1.1 carry only the QoS.
    pub fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version.is_v5() {
            b |= u8::from(self.no_local) << 2
                | u8::from(self.retain_as_published) << 3
                | (self.retain_handling as u8) << 4;
        }
        b
    }
}

fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    NonZeroU16::new(r.u16()?).ok_or(DecodeError::ZeroPacketId) // [MQTT-2.3.1-1]
}

fn properties<'a>(
    r: &mut Reader<'a>,
    packet_type: PacketType,
    version: ProtocolVersion,
) -> Result<Properties<'a>, DecodeError> {
    if version.is_v5() {
        read_properties(r, PropertyContext::Packet(packet_type))
    } else {
        Ok(Properties::EMPTY)
    }
}

fn optional_properties_len(p: &Properties<'_>, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        properties_len(p)
    } else {
        0
    }
}

fn filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let f = r.string()?;
    if topic::is_valid_topic_filter(f) {
        Ok(f)
    } else {
        Err(DecodeError::InvalidTopicFilter)
    }
}

/// The rest of the body as reason codes, at least one.
fn reason_codes(r: &mut Reader<'_>) -> Result<Vec<ReasonCode>, DecodeError> {
    let codes: Vec<ReasonCode> = r.rest().iter().map(|&b| ReasonCode(b)).collect();
    if codes.is_empty() {
        return Err(DecodeError::NoReasonCodes);
    }
    Ok(codes)
}

impl<'a> Subscribe<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Subscribe<'a>, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = properties(r, PacketType::Subscribe, version)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let f = filter(r)?;
            filters.push((f, SubscriptionOptions::from_byte(r.u8()?, version)?));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters); // [MQTT-3.8.3-3]
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + optional_properties_len(&self.properties, version)
            + self.filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>()
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        put_u16(out, self.packet_id.get());
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        for (f, o) in &self.filters {
            put_str(out, f);
            out.push(o.to_byte(version));
        }
    }
}

impl<'a> Suback<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Suback<'a>, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = properties(r, PacketType::Suback, version)?;
        let codes = reason_codes(r)?; // one per filter [MQTT-3.9.3-1]
        Ok(Suback {
            packet_id,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + optional_properties_len(&self.properties, version) + self.codes.len()
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        put_u16(out, self.packet_id.get());
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        out.extend(self.codes.iter().map(|c| c.0));
    }
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe<'a>, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = properties(r, PacketType::Unsubscribe, version)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(filter(r)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters); // [MQTT-3.10.3-2]
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + optional_properties_len(&self.properties, version)
            + self.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        put_u16(out, self.packet_id.get());
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        for f in &self.filters {
            put_str(out, f);
        }
    }
}

impl<'a> Unsuback<'a> {
    /// 3.1.1 UNSUBACK is just the packet id (§3.11); 5.0 adds properties and one reason
    /// code per filter.
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Unsuback<'a>, DecodeError> {
        let packet_id = packet_id(r)?;
        if !version.is_v5() {
            r.finish()?;
            return Ok(Unsuback {
                packet_id,
                properties: Properties::EMPTY,
                codes: Vec::new(),
            });
        }
        let properties = read_properties(r, PropertyContext::Packet(PacketType::Unsuback))?;
        let codes = reason_codes(r)?; // [MQTT-3.11.3-1]
        Ok(Unsuback {
            packet_id,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + properties_len(&self.properties) + self.codes.len()
        } else {
            2
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        put_u16(out, self.packet_id.get());
        if version.is_v5() {
            put_properties(out, &self.properties);
            out.extend(self.codes.iter().map(|c| c.0));
        }
    }
}
