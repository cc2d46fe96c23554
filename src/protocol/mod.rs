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
