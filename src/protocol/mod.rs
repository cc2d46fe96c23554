//! Sans-IO MQTT codec for 3.1, 3.1.1 and 5.0: bytes in, packets out, and back.
//!
//! Owns the wire format only. No sockets, no clock, no logging. [`decode`] works on a
//! partial buffer and says how much more it needs ([`Status::Partial`]) instead of failing,
//! and checks the remaining length against the configured maximum packet size before any
//! body byte is needed, so a peer cannot make us buffer an oversize packet.
//!
//! Module map: `packet` (the types), `packet_type` (the type nibble), `codec`
//! (`decode`/`encode` dispatch), `fixed_header` (flags, remaining length, size limit),
//! `reader`/`writer` (bounded cursor and MQTT data types), one file per packet family for
//! the variable header and payload (`connect`, `publish`, `ack`, `subscribe`,
//! `disconnect`), `properties` (5.0 properties: one table of §2.2.2.2, the property block
//! and its encoding), `reason` (reason and return codes), `topic` (topic name/filter rules and
//! matching), `error` (what can be wrong with the bytes, and its reason code: the codec's
//! one place for reason codes), `fuzzing` (harness bodies for `cfg(fuzzing)` and tests),
//! `vectors` and `tests` (test-only: codec vectors and round trips).

mod ack;
mod codec;
mod connect;
mod disconnect;
mod error;
mod fixed_header;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod packet;
mod packet_type;
pub mod properties;
mod publish;
mod reader;
pub mod reason;
mod subscribe;
#[cfg(test)]
mod tests;
pub mod topic;
#[cfg(test)]
mod vectors;
mod writer;

pub use codec::decode;
pub use error::DecodeError;
pub use packet::*;
pub use packet_type::PacketType;
pub use properties::{Properties, PropertiesBuf, Property};
pub use reason::ReasonCode;

/// Outcome of a decode attempt on a buffer that may hold only part of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole packet, and how many bytes of the buffer it used.
    Complete(T),
    /// The buffer ends before the packet does. `needed` is the total size of the packet
    /// when the fixed header is complete, otherwise a lower bound (`buf.len() + 1`).
    Partial { needed: usize },
}
