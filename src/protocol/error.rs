//! What can be wrong with bytes from a peer.

use std::fmt;

use super::reason::ReasonCode;

/// Why a packet could not be decoded. Every variant ends the connection that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A variable byte integer (e.g. the remaining length) longer than 4 bytes.
    MalformedVariableInt,
    /// The packet would exceed the configured maximum packet size (checked from the fixed
    /// header alone, before the body is buffered).
    PacketTooLarge { size: usize, max: u32 },
}

impl DecodeError {
    /// The 5.0 reason code for a DISCONNECT (or CONNACK) caused by this error. This is the
    /// one place where decode errors map to reason codes.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::MalformedVariableInt => ReasonCode::MALFORMED_PACKET,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::MalformedVariableInt => f.write_str("malformed variable byte integer"),
            DecodeError::PacketTooLarge { size, max } => {
                write!(
                    f,
                    "packet of {size} bytes exceeds maximum packet size {max}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}
