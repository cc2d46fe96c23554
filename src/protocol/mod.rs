//! Sans-IO MQTT codec for 3.1, 3.1.1 and 5.0: bytes in, packets out, and back.
//!
//! Owns the wire format only. No sockets, no clock, no logging. [`decode`] works on a
//! partial buffer and says how much more it needs ([`Status::Partial`]) instead of failing,
//! and checks the remaining length against the configured maximum packet size before any
//! body byte is needed, so a peer cannot make us buffer an oversize packet.
//!
//! Module map: `packet` (the types), `decode`/`encode` (fixed header and dispatch), one
//! file per packet family for the variable header and payload, `properties` (5.0
//! properties), `reason` (reason and return codes), `topic` (topic name/filter rules and
//! matching), `error` (what can be wrong with the bytes).

mod error;
mod packet;
pub mod properties;
pub mod reason;
pub mod topic;

pub use error::DecodeError;
pub use packet::*;
pub use properties::{Properties, PropertiesBuf, Property};
pub use reason::ReasonCode;

/// Outcome of a decode attempt on a buffer that may hold only part of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole packet, and how many bytes of the buffer it used.
    Complete(T),
    /// The buffer ends before the packet does. `needed` is the total size of the packet
    /// when the fixed header is complete, otherwise a lower bound.
    Partial { needed: usize },
}

/// Decodes one packet from the front of `buf`.
///
/// `version` is the connection's protocol version once its CONNECT is known; before that
/// (`None`) packets are read with 3.1.1 rules (a CONNECT describes its own version).
/// `max_packet_size` bounds the whole packet, fixed header included, and is checked as soon
/// as the remaining length is readable. On success returns the packet and its length in
/// bytes; bytes after it are left alone.
pub fn decode<'a>(
    buf: &'a [u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Status<(Packet<'a>, usize)>, DecodeError> {
    // Placeholder until the codec lands: never completes a packet.
    let _ = (version, max_packet_size);
    Ok(Status::Partial {
        needed: buf.len() + 1,
    })
}

impl Packet<'_> {
    /// Appends the packet's wire form for `version` to `out`.
    pub fn encode(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        // Placeholder until the codec lands.
        let _ = (version, out);
    }
}
