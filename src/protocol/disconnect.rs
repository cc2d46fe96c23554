//! DISCONNECT (§3.14) and AUTH (§3.15); PINGREQ/PINGRESP have no body and are handled by
//! the dispatcher.
//!
//! 3.1.1 DISCONNECT has no body. In 5.0 the reason code and properties may be left out
//! (remaining length 0 = normal disconnection / success, 1 = reason code only); the
//! encoder writes the shortest form. AUTH is decoded with the same leniency.

use super::error::DecodeError;
use super::packet::{Auth, Disconnect, ProtocolVersion};
use super::packet_type::PacketType;
use super::properties::{
    properties_len, put_properties, read_properties, Properties, PropertyContext,
};
use super::reader::Reader;
use super::reason::ReasonCode;

/// Reason code and properties, each optional at the end of the body.
fn decode_reason_and_properties<'a>(
    r: &mut Reader<'a>,
    packet_type: PacketType,
) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    let mut reason = ReasonCode::SUCCESS;
    let mut properties = Properties::EMPTY;
    if !r.is_empty() {
        reason = ReasonCode(r.u8()?);
        if !r.is_empty() {
            properties = read_properties(r, PropertyContext::Packet(packet_type))?;
        }
    }
    r.finish()?;
    Ok((reason, properties))
}

fn reason_and_properties_len(reason: ReasonCode, properties: &Properties<'_>) -> usize {
    if properties.is_empty() {
        usize::from(reason != ReasonCode::SUCCESS)
    } else {
        1 + properties_len(properties)
    }
}

fn encode_reason_and_properties(
    reason: ReasonCode,
    properties: &Properties<'_>,
    out: &mut Vec<u8>,
) {
    match reason_and_properties_len(reason, properties) {
        0 => {}
        1 => out.push(reason.0),
        _ => {
            out.push(reason.0);
            put_properties(out, properties);
        }
    }
}

impl<'a> Disconnect<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Disconnect<'a>, DecodeError> {
        if !version.is_v5() {
            r.finish()?; // 3.1.1 remaining length is 0 (§3.14.1)
            return Ok(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: Properties::EMPTY,
            });
        }
        let (reason, properties) = decode_reason_and_properties(r, PacketType::Disconnect)?;
        Ok(Disconnect { reason, properties })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            reason_and_properties_len(self.reason, &self.properties)
        } else {
            0
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        if version.is_v5() {
            encode_reason_and_properties(self.reason, &self.properties, out);
        }
    }
}

impl<'a> Auth<'a> {
    /// AUTH exists only in 5.0; the fixed header rejects it on other connections.
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Auth<'a>, DecodeError> {
        let (reason, properties) = decode_reason_and_properties(r, PacketType::Auth)?;
        Ok(Auth { reason, properties })
    }

    /// Only SUCCESS without properties may drop the body (§3.15.2.1); otherwise the
    /// property length is always written, since §3.15.2.2 gives no short form without it.
    pub(crate) fn body_len(&self) -> usize {
        if self.reason == ReasonCode::SUCCESS && self.properties.is_empty() {
            0
        } else {
            1 + properties_len(&self.properties)
        }
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        if self.body_len() > 0 {
            out.push(self.reason.0);
            put_properties(out, &self.properties);
        }
    }
}
