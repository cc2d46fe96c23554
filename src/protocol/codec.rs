//! Packet-level dispatch: [`decode`] one packet from the front of a buffer, and
//! [`Packet::encode`] one packet onto the end of one.
//!
//! `decode` first parses the fixed header (type, flags, size limit; see `fixed_header`),
//! waits until the whole packet is buffered, then hands exactly the body to the packet's
//! own decoder, which must consume all of it.

use super::error::DecodeError;
use super::fixed_header::FixedHeader;
use super::packet::{Ack, Auth, Connack, Connect, Disconnect, Packet, ProtocolVersion};
use super::packet::{Publish, Suback, Subscribe, Unsuback, Unsubscribe};
use super::packet_type::PacketType;
use super::reader::Reader;
use super::writer::{packet_len, put_fixed_header};
use super::Status;

/// Decodes one packet from the front of `buf`.
///
/// `version` is the connection's protocol version once its CONNECT is known; before that
/// (`None`) packets are read with 3.1.1 rules (a CONNECT describes its own version).
/// `max_packet_size` bounds the whole packet, fixed header included, and is checked as soon
/// as the remaining length is readable. On success returns the packet and its length in
/// bytes; bytes after it are left alone. Never panics, whatever the input.
pub fn decode<'a>(
    buf: &'a [u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Status<(Packet<'a>, usize)>, DecodeError> {
    let header = match FixedHeader::parse(buf, version, max_packet_size)? {
        Status::Complete(h) => h,
        Status::Partial { needed } => return Ok(Status::Partial { needed }),
    };
    let total = header.packet_len();
    let Some(body) = buf.get(header.header_len..total) else {
        return Ok(Status::Partial { needed: total });
    };
    let v = version.unwrap_or(ProtocolVersion::V311);
    let mut r = Reader::new(body);
    let r = &mut r;
    let packet = match header.packet_type {
        PacketType::Connect => Packet::Connect(Connect::decode(r)?),
        PacketType::Connack => Packet::Connack(Connack::decode(r, v)?),
        PacketType::Publish => Packet::Publish(Publish::decode(r, header.flags, v)?),
        t @ PacketType::Puback => Packet::Puback(Ack::decode(r, t, v)?),
        t @ PacketType::Pubrec => Packet::Pubrec(Ack::decode(r, t, v)?),
        t @ PacketType::Pubrel => Packet::Pubrel(Ack::decode(r, t, v)?),
        t @ PacketType::Pubcomp => Packet::Pubcomp(Ack::decode(r, t, v)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(r, v)?),
        PacketType::Suback => Packet::Suback(Suback::decode(r, v)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(r, v)?),
        PacketType::Unsuback => Packet::Unsuback(Unsuback::decode(r, v)?),
        PacketType::Pingreq => {
            r.finish()?; // remaining length 0 (§3.12.1)
            Packet::Pingreq
        }
        PacketType::Pingresp => {
            r.finish()?; // §3.13.1
            Packet::Pingresp
        }
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(r, v)?),
        PacketType::Auth => Packet::Auth(Auth::decode(r)?),
    };
    Ok(Status::Complete((packet, total)))
}

impl Packet<'_> {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::Connack(_) => PacketType::Connack,
            Packet::Publish(_) => PacketType::Publish,
            Packet::Puback(_) => PacketType::Puback,
            Packet::Pubrec(_) => PacketType::Pubrec,
            Packet::Pubrel(_) => PacketType::Pubrel,
            Packet::Pubcomp(_) => PacketType::Pubcomp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::Suback(_) => PacketType::Suback,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::Unsuback(_) => PacketType::Unsuback,
            Packet::Pingreq => PacketType::Pingreq,
            Packet::Pingresp => PacketType::Pingresp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Remaining length for `version`. A CONNECT uses its own version.
    fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(p) => p.body_len(),
            Packet::Connack(p) => p.body_len(version),
            Packet::Publish(p) => p.body_len(version),
            Packet::Puback(p) | Packet::Pubrec(p) | Packet::Pubrel(p) | Packet::Pubcomp(p) => {
                p.body_len(version)
            }
            Packet::Subscribe(p) => p.body_len(version),
            Packet::Suback(p) => p.body_len(version),
            Packet::Unsubscribe(p) => p.body_len(version),
            Packet::Unsuback(p) => p.body_len(version),
            Packet::Pingreq | Packet::Pingresp => 0,
            Packet::Disconnect(p) => p.body_len(version),
            Packet::Auth(p) => p.body_len(),
        }
    }

    /// Size of the whole encoded packet for `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Publish(p) => p.encoded_len(version),
            _ => packet_len(self.body_len(version)),
        }
    }

    /// Appends the packet's wire form for `version` to `out`. A CONNECT is written with its
    /// own `version`; 5.0-only fields (properties, reason codes) are dropped for 3.1/3.1.1.
    /// An AUTH encoded for 3.1.1 is a caller bug (written as if for 5.0).
    pub fn encode(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        if let Packet::Publish(p) = self {
            p.encode(version, out);
            return;
        }
        let body = self.body_len(version);
        out.reserve(packet_len(body));
        let t = self.packet_type();
        let flags = t.fixed_flags().unwrap_or(0);
        put_fixed_header(out, (t as u8) << 4 | flags, body);
        match self {
            Packet::Connect(p) => p.encode_body(out),
            Packet::Connack(p) => p.encode_body(version, out),
            Packet::Publish(_) => {}
            Packet::Puback(p) | Packet::Pubrec(p) | Packet::Pubrel(p) | Packet::Pubcomp(p) => {
                p.encode_body(version, out)
            }
            Packet::Subscribe(p) => p.encode_body(version, out),
            Packet::Suback(p) => p.encode_body(version, out),
            Packet::Unsubscribe(p) => p.encode_body(version, out),
            Packet::Unsuback(p) => p.encode_body(version, out),
            Packet::Pingreq | Packet::Pingresp => {}
            Packet::Disconnect(p) => p.encode_body(version, out),
            Packet::Auth(p) => p.encode_body(out),
        }
    }
}
