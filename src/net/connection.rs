//! Per-connection socket state and the socket half of reading and writing.
//!
//! A [`Connection`] owns the socket, the peer address, the tail of a partial packet (see
//! [`super::input`]), whether WRITABLE interest is registered, and a per-turn read budget.
//! Everything else about a client (session, output buffer) lives in the broker.
//!
//! Invariants: `stream` is `Some` exactly while the connection is open, ending or
//! lingering; once it is `None` the slot only waits for the end of the event batch to be
//! freed, and every event or queued work item for it is ignored.
//!
//! Graceful close ("lingering"): when the broker ends a connection with final bytes (a
//! DISCONNECT, a refusing CONNACK), closing the socket at once while the peer is still
//! sending makes the kernel answer with RST: the peer's next write fails with EPIPE or
//! ECONNRESET and many clients never read the reason. So the connection first writes its
//! final bytes (as the socket accepts them), then shuts down its write side (FIN), and
//! reads and discards what the peer still sends until the peer closes, up to
//! [`LINGER_MAX_BYTES`] or the loop's linger deadline, whichever comes first. Nothing read
//! is kept; the broker no longer knows the connection.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::input::{self, Framing, Stop};
use super::transport::{ReadState, Transport};
use crate::broker::{Broker, ConnId};
use crate::protocol::{self, DecodeError, Packet, Status};

/// Bytes one connection may read in one loop turn before others get their turn.
pub(crate) const READ_BUDGET: usize = 256 * 1024;

/// Input a lingering connection discards before it is closed anyway: bounds the work one
/// peer can cause after its close was decided (the time bound is the loop's).
pub(crate) const LINGER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Reading and writing normally.
    Open,
    /// The broker ended it (packet refused, decode error): no more reads; waiting for its
    /// `poll_close` this turn, or closed at the end of the turn anyway.
    Ending,
    /// The broker is done with it: writing its final bytes, then discarding input until
    /// the peer closes or the linger bound is reached (see the module docs).
    Lingering,
    /// Socket closed; the slot is freed after the event batch.
    Closed,
}

pub(crate) struct Connection {
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) state: State,
    stream: Option<TcpStream>,
    /// The layers between socket and MQTT (TLS, WebSocket); `None` for plain TCP, which
    /// reads and writes the socket directly (see `transport`).
    transport: Option<Box<Transport>>,
    /// Bytes of a partial packet; empty (and unallocated) between packets.
    tail: Vec<u8>,
    /// Whether WRITABLE interest is registered (output left after a flush).
    writable: bool,
    /// Reading is paused because the broker's output buffer for it is over the bound, or
    /// the journal queue is full.
    pub(crate) paused: bool,
    /// Listed in the loop's "still readable" work list.
    pub(crate) queued: bool,
    /// Loop turn the read budget below belongs to.
    budget_turn: u64,
    /// Bytes read during `budget_turn`.
    budget_used: usize,
    /// Lingering: final bytes the socket has not taken yet.
    final_out: Vec<u8>,
    /// Lingering: input discarded so far.
    drained: usize,
    /// Lingering: the peer has closed its side (no more reads).
    peer_done: bool,
}

/// What a lingering connection needs next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LingerStep {
    /// Wait for more events (or the deadline).
    Wait,
    /// The turn's read budget is spent; more input may be waiting in the kernel.
    Capped,
    /// Close it now: the peer closed, the socket failed or the byte bound was reached.
    Done,
}

/// How a read pass over one connection ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The socket is drained (`WouldBlock`); wait for the next readable event.
    Drained,
    /// The turn's read budget is spent; more may be waiting in the kernel.
    Capped,
    /// The broker wants no more input until this connection's output drains, or the
    /// journal is over its budget until the writer catches up.
    Paused,
    /// The peer closed its side.
    PeerClosed,
    /// The socket failed.
    Failed(io::Error),
    /// The broker ended the connection while handling its input.
    BrokerClosed,
    /// The decoder misbehaved (see [`Stop::CodecBug`]).
    CodecBug,
    /// The loop's handshake budget for this turn is spent; read again next turn.
    HandshakeDeferred,
}

/// How a flush ended.
#[derive(Debug)]
pub(crate) enum FlushEnd {
    /// Everything the broker had for this connection was written.
    Drained,
    /// The socket is full; wait for a writable event.
    Blocked,
    /// The socket failed.
    Failed(io::Error),
}

/// What the read path needs from the rest of the loop, borrowed for one call.
pub(crate) struct ReadCtx<'a> {
    pub(crate) broker: &'a mut Broker,
    pub(crate) scratch: &'a mut [u8],
    pub(crate) max_packet_size: u32,
    pub(crate) turn: u64,
    pub(crate) now: Instant,
    /// Plaintext from transports (shared by all connections, empty between reads).
    pub(crate) plain: &'a mut Vec<u8>,
    /// Handshake steps (reads of a connection still handshaking) left in this turn.
    pub(crate) handshakes: &'a mut usize,
    /// Journal bytes this turn may still add before reading stops (journal back-pressure:
    /// the writer's queue plus this turn's records stay near `journal_queue_bytes`);
    /// `None` without persistence.
    pub(crate) journal_room: Option<usize>,
}

impl Connection {
    pub(crate) fn new(
        id: ConnId,
        peer: SocketAddr,
        stream: TcpStream,
        transport: Option<Box<Transport>>,
    ) -> Connection {
        Connection {
            id,
            peer,
            state: State::Open,
            stream: Some(stream),
            transport,
            tail: Vec::new(),
            writable: false,
            paused: false,
            queued: false,
            budget_turn: 0,
            budget_used: 0,
            final_out: Vec::new(),
            drained: 0,
            peer_done: false,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Reads until `WouldBlock`, the turn's budget, back-pressure, EOF or an error,
    /// decoding and handing over every complete packet on the way.
    pub(crate) fn read(&mut self, cx: &mut ReadCtx<'_>) -> ReadEnd {
        let id = self.id;
        let Some(stream) = self.stream.as_mut() else {
            return ReadEnd::Drained;
        };
        if self.budget_turn != cx.turn {
            self.budget_turn = cx.turn;
            self.budget_used = 0;
        }
        let mut handshake_counted = false;
        loop {
            if let Some(t) = self.transport.as_deref() {
                // A handshake step costs CPU (key exchange, signatures): a burst of new
                // TLS clients gets a bounded share of each turn.
                if t.is_handshaking() && !handshake_counted {
                    if *cx.handshakes == 0 {
                        return ReadEnd::HandshakeDeferred;
                    }
                    *cx.handshakes -= 1;
                    handshake_counted = true;
                }
            }
            if !cx.broker.wants_read(id)
                || cx
                    .journal_room
                    .is_some_and(|room| cx.broker.journal_bytes() >= room)
            {
                return ReadEnd::Paused;
            }
            let budget = READ_BUDGET.saturating_sub(self.budget_used);
            if budget == 0 {
                return ReadEnd::Capped;
            }
            let limit = budget.min(cx.scratch.len());
            let n = match stream.read(&mut cx.scratch[..limit]) {
                Ok(0) => return ReadEnd::PeerClosed,
                // A reset is the peer going away, as Mosquitto counts it ("closed its
                // connection"), not a socket error.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return ReadEnd::PeerClosed,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadEnd::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadEnd::Failed(e),
            };
            self.budget_used += n;
            cx.broker.count_received(n);
            let mut peer_closed = false;
            let bytes: &[u8] = match self.transport.as_deref_mut() {
                None => &cx.scratch[..n],
                Some(t) => {
                    cx.plain.clear();
                    let held = t.input_bytes();
                    let read = t.read(&cx.scratch[..n], cx.plain);
                    if t.input_bytes() != held {
                        // Partial TLS records and a partial WebSocket upgrade request count like a
                        // partial packet (`memory_limit`).
                        cx.broker.account_input(held, t.input_bytes());
                    }
                    match read {
                        Ok(ReadState::Open) => {}
                        Ok(ReadState::Closed) => peer_closed = true,
                        Err(e) => {
                            // Best effort: the alert rustls queued tells the peer why.
                            let _ = t.write_to(stream);
                            // The peer broke the transport's protocol (TLS).
                            return ReadEnd::Failed(io::Error::new(
                                io::ErrorKind::InvalidData,
                                e.to_string(),
                            ));
                        }
                    }
                    #[cfg(feature = "tls")]
                    if let Some(identity) = t.poll_identity() {
                        let name = match &identity {
                            super::transport::PeerIdentity::Name(n) => Some(n.as_str()),
                            super::transport::PeerIdentity::Missing => None,
                        };
                        cx.broker.handle_cert_identity(id, name);
                    }
                    &cx.plain[..]
                }
            };
            let mut framing = BrokerFraming {
                broker: &mut *cx.broker,
                id,
                max_packet_size: cx.max_packet_size,
                now: cx.now,
            };
            let before = self.tail.capacity();
            let fed = input::feed(&mut self.tail, bytes, &mut framing);
            if self.tail.capacity() != before {
                // The broker counts partial input towards `memory_limit`.
                cx.broker.account_input(before, self.tail.capacity());
            }
            match fed {
                Ok(()) => {}
                Err(Stop::BrokerClosed) => return ReadEnd::BrokerClosed,
                Err(Stop::CodecBug) => return ReadEnd::CodecBug,
            }
            if peer_closed {
                return ReadEnd::PeerClosed;
            }
        }
    }

    /// Whether the transport has bytes for the socket (a handshake answer after a read):
    /// the loop flushes then.
    pub(crate) fn wants_flush(&self) -> bool {
        self.is_open()
            && self
                .transport
                .as_deref()
                .is_some_and(Transport::wants_write)
    }

    /// Bytes held for a partial packet, TLS record or WebSocket upgrade request (their
    /// allocations), for `memory_limit`.
    pub(crate) fn tail_bytes(&self) -> usize {
        self.tail.capacity() + self.transport.as_deref().map_or(0, Transport::input_bytes)
    }

    /// Writes the broker's pending output for this connection until it is empty or the
    /// socket is full, and keeps WRITABLE interest registered exactly while output is left.
    pub(crate) fn flush(
        &mut self,
        broker: &mut Broker,
        registry: &Registry,
        token: Token,
    ) -> FlushEnd {
        let id = self.id;
        let Some(stream) = self.stream.as_mut() else {
            return FlushEnd::Drained;
        };
        let end = match self.transport.as_deref_mut() {
            Some(t) => flush_through(t, stream, broker, id),
            None => loop {
                let out = broker.pending_output(id);
                if out.is_empty() {
                    break FlushEnd::Drained;
                }
                match stream.write(out) {
                    Ok(0) => break FlushEnd::Failed(io::ErrorKind::WriteZero.into()),
                    Ok(n) => broker.consume_output(id, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break FlushEnd::Blocked,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break FlushEnd::Failed(e),
                }
            },
        };
        let want_writable = matches!(end, FlushEnd::Blocked);
        if want_writable != self.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = registry.reregister(stream, token, interest) {
                return FlushEnd::Failed(e);
            }
            self.writable = want_writable;
        }
        end
    }

    /// Closes the socket: writes `final_bytes` best effort (never blocking), sends FIN,
    /// discards unread input (closing with unread input would send RST, which can destroy
    /// the final bytes in flight), deregisters and drops the socket.
    /// A lingering connection writes what is left of its own final bytes.
    pub(crate) fn close(&mut self, registry: &Registry, final_bytes: &[u8], scratch: &mut [u8]) {
        let lingered = self.state == State::Lingering;
        self.state = State::Closed;
        self.tail = Vec::new();
        let mut pending = std::mem::take(&mut self.final_out);
        let final_bytes = if let Some(t) = self.transport.as_deref_mut() {
            if final_bytes.is_empty() {
                // The transport's own last words, if any (a WebSocket close answer still
                // unwritten, a close frame).
                t.seal_quiet(&mut pending);
            } else {
                t.seal_final(final_bytes, &mut pending);
            }
            &pending[..]
        } else if final_bytes.is_empty() {
            &pending[..]
        } else {
            final_bytes
        };
        self.transport = None;
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        if lingered && final_bytes.is_empty() {
            // FIN was sent and input drained as far as the linger bounds allowed.
            let _ = registry.deregister(&mut stream);
            return;
        }
        if !final_bytes.is_empty() {
            let mut rest = final_bytes;
            while !rest.is_empty() {
                match stream.write(rest) {
                    Ok(0) => break,
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = stream.shutdown(Shutdown::Write);
            // Bounded: one scratch buffer's worth at most.
            let _ = stream.read(scratch);
        }
        // Errors here mean the socket is already gone from the poll set; nothing to undo.
        let _ = registry.deregister(&mut stream);
    }

    /// Starts the graceful close: from now on the connection only writes `final_bytes`,
    /// then FIN, and discards input (see the module docs). The caller drains once right
    /// away: input already in the kernel raises no new edge-triggered event.
    pub(crate) fn linger(
        &mut self,
        registry: &Registry,
        token: Token,
        final_bytes: Vec<u8>,
    ) -> LingerStep {
        self.state = State::Lingering;
        self.tail = Vec::new();
        self.final_out = match self.transport.take() {
            Some(mut t) => {
                let mut sealed = Vec::new();
                t.seal_final(&final_bytes, &mut sealed);
                sealed
            }
            None => final_bytes,
        };
        self.drained = 0;
        self.linger_write(registry, token)
    }

    /// Writes what the socket takes of the final bytes; once they are all out, shuts down
    /// the write side so the peer reads them followed by EOF.
    pub(crate) fn linger_write(&mut self, registry: &Registry, token: Token) -> LingerStep {
        let Some(stream) = self.stream.as_mut() else {
            return LingerStep::Done;
        };
        while !self.final_out.is_empty() {
            match stream.write(&self.final_out) {
                Ok(0) => return LingerStep::Done,
                Ok(n) => {
                    self.final_out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return LingerStep::Done,
            }
        }
        let want_writable = !self.final_out.is_empty();
        if !want_writable {
            self.final_out = Vec::new();
            if stream.shutdown(Shutdown::Write).is_err() || self.peer_done {
                return LingerStep::Done;
            }
        }
        if want_writable != self.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry.reregister(stream, token, interest).is_err() {
                return LingerStep::Done;
            }
            self.writable = want_writable;
        }
        LingerStep::Wait
    }

    /// Reads and discards the peer's input until `WouldBlock`, within the turn's read
    /// budget and [`LINGER_MAX_BYTES`] in all.
    pub(crate) fn drain(&mut self, scratch: &mut [u8], turn: u64) -> LingerStep {
        if self.peer_done {
            return LingerStep::Wait;
        }
        let Some(stream) = self.stream.as_mut() else {
            return LingerStep::Done;
        };
        if self.budget_turn != turn {
            self.budget_turn = turn;
            self.budget_used = 0;
        }
        loop {
            if self.drained >= LINGER_MAX_BYTES {
                return LingerStep::Done;
            }
            let budget = READ_BUDGET.saturating_sub(self.budget_used);
            if budget == 0 {
                return LingerStep::Capped;
            }
            let limit = budget.min(scratch.len());
            match stream.read(&mut scratch[..limit]) {
                Ok(0) => {
                    // The peer closed its side. Final bytes not yet written may still
                    // reach it (it can read after a half-close): wait for them.
                    self.peer_done = true;
                    return if self.final_out.is_empty() {
                        LingerStep::Done
                    } else {
                        LingerStep::Wait
                    };
                }
                Ok(n) => {
                    self.budget_used += n;
                    self.drained += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return LingerStep::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return LingerStep::Done,
            }
        }
    }
}

/// Flushes a connection with a transport: pending transport bytes to the socket first,
/// then as much broker output as the transport takes, until the output is empty or the
/// socket is full.
fn flush_through(
    t: &mut Transport,
    stream: &mut TcpStream,
    broker: &mut Broker,
    id: ConnId,
) -> FlushEnd {
    loop {
        while t.wants_write() {
            match t.write_to(stream) {
                Ok(0) => return FlushEnd::Failed(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FlushEnd::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return FlushEnd::Failed(e),
            }
        }
        let out = broker.pending_output(id);
        if out.is_empty() {
            return FlushEnd::Drained;
        }
        let n = t.write(out);
        if n == 0 {
            // The transport's buffer is full yet nothing waits for the socket: cannot
            // happen with rustls (a full buffer is pending records); do not spin.
            return FlushEnd::Drained;
        }
        broker.consume_output(id, n);
    }
}

/// Adapts the real decoder and broker to [`Framing`].
struct BrokerFraming<'a> {
    broker: &'a mut Broker,
    id: ConnId,
    max_packet_size: u32,
    now: Instant,
}

impl Framing for BrokerFraming<'_> {
    fn decode<'b>(&mut self, buf: &'b [u8]) -> Result<Status<(Packet<'b>, usize)>, DecodeError> {
        // Asked per packet: CONNECT changes the version mid-buffer.
        let version = self.broker.protocol_version(self.id);
        // Before CONNECT the peer is unauthenticated: its first packet is held to the small
        // CONNECT limit, checked on the fixed header before any body byte is buffered, so
        // idle sockets announcing huge packets cannot fill memory (see input.rs).
        let max = match version {
            None => self
                .max_packet_size
                .min(self.broker.config().max_connect_packet_size),
            Some(_) => self.max_packet_size,
        };
        protocol::decode(buf, version, max)
    }

    fn packet(&mut self, packet: Packet<'_>) -> bool {
        self.broker.handle_packet(self.id, packet, self.now)
    }

    fn decode_error(&mut self, err: DecodeError) {
        log::debug!("{}: undecodable input: {err}", Id(self.id));
        self.broker.handle_decode_error(self.id, err, self.now);
    }
}

/// Short form of a connection id for log lines: `#index.generation`.
pub(crate) struct Id(pub(crate) ConnId);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.0.index, self.0.generation)
    }
}
