//! The fixed header (§2.1): packet type, flags and remaining length.
//!
//! Everything here is decided from at most 5 bytes, before the body is buffered: reserved
//! packet types, wrong flags, a malformed remaining length and an oversize packet are
//! errors as soon as the bytes that show them arrive.

use super::error::DecodeError;
use super::packet::ProtocolVersion;
use super::packet_type::PacketType;
use super::reader::{read_varint, VarInt};
use super::Status;

/// A parsed fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Bytes taken by the fixed header itself (2..=5).
    pub header_len: usize,
    pub remaining_len: usize,
}

impl FixedHeader {
    /// Size of the whole packet.
    pub(crate) fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    /// Parses the fixed header at the front of `buf`.
    ///
    /// `Partial { needed: buf.len() + 1 }` while the remaining length is incomplete. The
    /// packet size is checked against `max_packet_size` as soon as it is known.
    pub(crate) fn parse(
        buf: &[u8],
        version: Option<ProtocolVersion>,
        max_packet_size: u32,
    ) -> Result<Status<FixedHeader>, DecodeError> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(Status::Partial { needed: 1 });
        };
        let nibble = first >> 4;
        let flags = first & 0x0F;
        let packet_type = match PacketType::from_nibble(nibble) {
            // AUTH exists only in 5.0; before CONNECT (None) we use 3.1.1 rules.
            Some(PacketType::Auth) if version != Some(ProtocolVersion::V5) => {
                return Err(DecodeError::ReservedPacketType(nibble));
            }
            Some(t) => t,
            None => return Err(DecodeError::ReservedPacketType(nibble)),
        };
        check_flags(packet_type, flags)?;
        let (remaining_len, len_bytes) = match read_varint(rest) {
            VarInt::Value(v, n) => (v as usize, n),
            VarInt::Incomplete => {
                return Ok(Status::Partial {
                    needed: buf.len() + 1,
                })
            }
            VarInt::Malformed => return Err(DecodeError::MalformedVariableInt),
        };
        let header = FixedHeader {
            packet_type,
            flags,
            header_len: 1 + len_bytes,
            remaining_len,
        };
        let size = header.packet_len();
        if size > max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: max_packet_size,
            });
        }
        Ok(Status::Complete(header))
    }
}

/// Flags rules of §2.2.2 [MQTT-2.2.2-1/2], and the PUBLISH flag rules that need no body.
fn check_flags(packet_type: PacketType, flags: u8) -> Result<(), DecodeError> {
    let invalid = DecodeError::InvalidFlags {
        packet_type: packet_type as u8,
        flags,
    };
    match packet_type.fixed_flags() {
        Some(required) if flags != required => Err(invalid),
        Some(_) => Ok(()),
        None => {
            let qos = (flags >> 1) & 0b11;
            let dup = flags & 0b1000 != 0;
            if qos == 3 {
                Err(DecodeError::InvalidQoS) // [MQTT-3.3.1-4]
            } else if qos == 0 && dup {
                Err(invalid) // [MQTT-3.3.1-2]
            } else {
                Ok(())
            }
        }
    }
}
