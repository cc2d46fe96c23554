//! PUBLISH (§3.3): decode, and the allocation-free encode the broker's hot path uses.
//!
//! `Publish::encode` writes straight into a connection's write buffer from borrowed
//! message data: one `reserve`, no temporary buffers.

use std::num::NonZeroU16;

use super::error::DecodeError;
use super::packet::{ProtocolVersion, Publish, QoS};
use super::properties::{
    properties_len, put_properties, read_properties, Properties, PropertyContext,
};
use super::reader::Reader;
use super::topic;
use super::writer::{packet_len, put_fixed_header, put_str, put_u16};
use super::PacketType;

impl<'a> Publish<'a> {
    /// Decodes the body; `flags` is the fixed header's low nibble, already checked for
    /// QoS 3 [MQTT-3.3.1-4] and DUP on QoS 0 [MQTT-3.3.1-2].
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Publish<'a>, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let topic = r.string()?;
        // Present exactly when QoS > 0, and never zero [MQTT-2.3.1-1] [MQTT-2.2.1-2].
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(NonZeroU16::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)?)
        };
        let properties = if version.is_v5() {
            read_properties(r, PropertyContext::Packet(PacketType::Publish))?
        } else {
            Properties::EMPTY
        };
        if topic.is_empty() {
            // 5.0 lets a topic alias stand in for the name (§3.3.2.3.4); otherwise a topic
            // name is at least one character [MQTT-4.7.3-1].
            if properties.topic_alias().is_none() {
                return Err(DecodeError::TopicNameMissing);
            }
        } else if !topic::is_valid_topic_name(topic) {
            return Err(DecodeError::InvalidTopicName); // [MQTT-3.3.2-2]
        }
        Ok(Publish {
            dup: flags & 0b1000 != 0,
            qos,
            retain: flags & 0b0001 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// First byte of the fixed header: type and DUP/QoS/RETAIN flags (§3.3.1).
    fn first_byte(&self) -> u8 {
        (PacketType::Publish as u8) << 4
            | u8::from(self.dup) << 3
            | (self.qos as u8) << 1
            | u8::from(self.retain)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2 + self.topic.len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version.is_v5() {
            n += properties_len(&self.properties);
        }
        n
    }

    /// Size of the whole encoded packet.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        packet_len(self.body_len(version))
    }

    /// Appends the packet for `version` (properties are dropped for 3.1/3.1.1). A QoS > 0
    /// publish without a packet id is a caller bug and is written with id 0.
    pub fn encode(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        let body = self.body_len(version);
        out.reserve(packet_len(body));
        put_fixed_header(out, self.first_byte(), body);
        put_str(out, self.topic);
        if self.qos != QoS::AtMostOnce {
            put_u16(out, self.packet_id.map_or(0, NonZeroU16::get));
        }
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
        out.extend_from_slice(self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_reserves_once() {
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b",
            packet_id: NonZeroU16::new(10),
            properties: Properties::EMPTY,
            payload: &[7; 300],
        };
        let mut out = Vec::new();
        p.encode(ProtocolVersion::V311, &mut out);
        assert_eq!(out.len(), p.encoded_len(ProtocolVersion::V311));
        assert_eq!(out.capacity(), out.len());
        assert_eq!(&out[..3], &[0x33, 0xB3, 0x02]); // QoS 1, retain, remaining 307
    }
}
