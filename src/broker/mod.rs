//! The broker state machine: sessions, subscriptions, retained messages, wills, QoS flows
//! and timers. Sans-IO: it takes decoded packets and `now`, and produces bytes to send per
//! connection, connections to close, and the next deadline.
//!
//! Vocabulary (after `quinn-proto`): `handle_*` feeds an input in; `poll_*` takes an output
//! out. The event loop calls `handle_*` for every input of a loop turn, then drains
//! `poll_close`, `poll_transmit` and asks `poll_timeout` how long it may sleep.

use std::time::Instant;

use crate::config::Config;
use crate::protocol::{DecodeError, Packet, ProtocolVersion};

/// Identifies one network connection. `index` is the event loop's slab key (dense, reused);
/// `generation` makes an id of a closed connection differ from the next user of its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub index: u32,
    pub generation: u32,
}

/// Why the event loop ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The peer closed its side (read returned 0).
    PeerClosed,
    /// A socket error other than would-block.
    IoError,
    /// The broker is shutting down.
    Shutdown,
}

/// A connection the broker has ended: write `final_bytes` (best effort) and close.
#[derive(Debug)]
pub struct Close {
    pub id: ConnId,
    pub final_bytes: Vec<u8>,
}

pub struct Broker {
    config: Config,
}

impl Broker {
    pub fn new(config: Config) -> Broker {
        Broker { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new network connection was accepted.
    pub fn handle_open(&mut self, _id: ConnId, _now: Instant) {}

    /// A decoded packet from `id`. Returns `false` if the broker closed the connection while
    /// handling it (the caller must not feed it more packets).
    pub fn handle_packet(&mut self, _id: ConnId, _packet: Packet<'_>, _now: Instant) -> bool {
        true
    }

    /// The bytes from `id` could not be decoded: the broker closes the connection (with the
    /// right reason code in 5.0) and publishes the will.
    pub fn handle_decode_error(&mut self, _id: ConnId, _err: DecodeError, _now: Instant) {}

    /// The event loop saw the connection end (EOF, socket error, shutdown).
    pub fn handle_disconnect(&mut self, _id: ConnId, _why: Disconnect, _now: Instant) {}

    /// Fire every deadline at or before `now` (keepalive, connect timeout, expiry).
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// The earliest pending deadline; `None` when nothing is scheduled.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    /// The protocol version the connection speaks (after CONNECT), for decoding.
    pub fn protocol_version(&self, _id: ConnId) -> Option<ProtocolVersion> {
        None
    }

    /// Whether the loop should keep reading from `id`: false while its write buffer is
    /// above the bound (back-pressure on a client that does not read its acks).
    pub fn wants_read(&self, _id: ConnId) -> bool {
        true
    }

    /// Next connection with new bytes to write (each returned once until written again).
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        None
    }

    /// Bytes waiting to be written to `id`.
    pub fn pending_output(&self, _id: ConnId) -> &[u8] {
        &[]
    }

    /// `n` bytes of `pending_output(id)` were written to the socket.
    pub fn consume_output(&mut self, _id: ConnId, _n: usize) {}

    /// Next connection the broker has ended.
    pub fn poll_close(&mut self) -> Option<Close> {
        None
    }
}
