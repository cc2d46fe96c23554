//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4–§3.7): one shape, four packet types.
//!
//! 3.1.1: exactly a packet id. 5.0: the reason code and the property length may be left
//! out (§3.4.2.1): remaining length 2 means SUCCESS without properties, 3 a reason code
//! without properties. The encoder always writes the shortest form. A 5.0 reason code outside
//! the packet's table is refused (`DecodeError::InvalidReasonCode`).

use std::num::NonZeroU16;

use super::error::DecodeError;
use super::packet::{Ack, ProtocolVersion};
use super::packet_type::PacketType;
use super::properties::{
    properties_len, put_properties, read_properties, Properties, PropertyContext,
};
use super::reader::Reader;
use super::reason::ReasonCode;
use super::writer::put_u16;

impl<'a> Ack<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        packet_type: PacketType,
        version: ProtocolVersion,
    ) -> Result<Ack<'a>, DecodeError> {
        let packet_id = NonZeroU16::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)?;
        let mut ack = Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::EMPTY,
        };
        if version.is_v5() && !r.is_empty() {
            ack.reason = ReasonCode(r.u8()?);
            if !valid_reason(packet_type, ack.reason) {
                return Err(DecodeError::InvalidReasonCode {
                    packet_type: packet_type as u8,
                    code: ack.reason.0,
                });
            }
            if !r.is_empty() {
                ack.properties = read_properties(r, PropertyContext::Packet(packet_type))?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() || (self.reason == ReasonCode::SUCCESS && self.properties.is_empty()) {
            2
        } else if self.properties.is_empty() {
            3
        } else {
            3 + properties_len(&self.properties)
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        put_u16(out, self.packet_id.get());
        let n = self.body_len(version);
        if n >= 3 {
            out.push(self.reason.0);
        }
        if n > 3 {
            put_properties(out, &self.properties);
        }
    }
}

/// Whether `code` is in the reason code table of `packet_type`: PUBACK and PUBREC share one
/// (§3.4.2.1, §3.5.2.1), PUBREL and PUBCOMP another (§3.6.2.1, §3.7.2.1).
fn valid_reason(packet_type: PacketType, code: ReasonCode) -> bool {
    match packet_type {
        PacketType::Pubrel | PacketType::Pubcomp => {
            matches!(
                code,
                ReasonCode::SUCCESS | ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            )
        }
        _ => matches!(
            code,
            ReasonCode::SUCCESS
                | ReasonCode::NO_MATCHING_SUBSCRIBERS
                | ReasonCode::UNSPECIFIED_ERROR
                | ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR
                | ReasonCode::NOT_AUTHORIZED
                | ReasonCode::TOPIC_NAME_INVALID
                | ReasonCode::PACKET_IDENTIFIER_IN_USE
                | ReasonCode::QUOTA_EXCEEDED
                | ReasonCode::PAYLOAD_FORMAT_INVALID
        ),
    }
}
