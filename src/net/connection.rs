//! Per-connection socket state and the socket half of reading and writing.
//!
//! A [`Connection`] owns the socket, the tail of a partial packet (see [`super::input`])
//! and whether WRITABLE interest is registered. Everything else about a client (session,
//! output buffer) lives in the broker.
//!
//! Read budget: one read pass takes at most [`READ_BUDGET`] bytes; a connection that hits
//! it is listed for the next turn (`queued`) and not read again in this one (its events
//! until then only find it listed). That is the per-turn bound without a per-connection
//! counter (8 bytes per idle client, issue 11).
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
use std::net::Shutdown;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::input::{self, Framing, Stop};
use super::transport::{ReadState, Transport};
use crate::broker::{Broker, ConnId};
use crate::protocol::{self, DecodeError, Packet, Status};

/// Bytes one connection may read in one pass (and so in one loop turn, see the module
/// docs) before others get their turn.
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

/// Kept small (issue 11, per-connection memory): the peer address is logged at accept and
/// not stored, a partial packet and lingering state share one box, the read budget is
/// per pass (module docs).
pub(crate) struct Connection {
    pub(crate) id: ConnId,
    pub(crate) state: State,
    stream: Option<TcpStream>,
    /// The layers between socket and MQTT (TLS, WebSocket); `None` for plain TCP, which
    /// reads and writes the socket directly (see `transport`).
    transport: Option<Box<Transport>>,
    /// The tail of a partial packet, or the graceful-close state; `None` between packets.
    /// One box for both (a lingering connection reads no more packets): 8 bytes per idle
    /// connection instead of 16, or an empty `Vec`'s 24 and a pointer (issue 11);
    /// allocated only when a read ends inside a packet, or when the connection lingers.
    side: Option<Box<Side>>,
    /// Whether WRITABLE interest is registered (output left after a flush).
    writable: bool,
    /// Reading is paused because the broker's output buffer for it is over the bound, or
    /// the journal queue is full.
    pub(crate) paused: bool,
    /// Listed in the loop's "still readable" work list: its read budget or the handshake
    /// budget of this turn is spent, so it is not read again before the next turn.
    pub(crate) queued: bool,
}

/// What a connection holds besides its socket, at times (see `Connection::side`).
enum Side {
    /// Bytes of a partial packet (never empty).
    Tail(Vec<u8>),
    /// Graceful-close state.
    Linger(Linger),
}

/// The graceful-close state in `side`, if the connection lingers.
fn linger_of(side: &mut Option<Box<Side>>) -> Option<&mut Linger> {
    match side.as_deref_mut() {
        Some(Side::Linger(l)) => Some(l),
        _ => None,
    }
}

/// What a lingering connection keeps (see the module docs).
#[derive(Default)]
struct Linger {
    /// Final bytes the socket has not taken yet.
    final_out: Vec<u8>,
    /// Input discarded so far.
    drained: usize,
    /// The peer has closed its side (no more reads).
    peer_done: bool,
    /// `final_out`'s allocation when lingering began, as reported for `memory_limit`.
    counted: usize,
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
        stream: TcpStream,
        transport: Option<Box<Transport>>,
    ) -> Connection {
        Connection {
            id,
            state: State::Open,
            stream: Some(stream),
            transport,
            side: None,
            writable: false,
            paused: false,
            queued: false,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Reads until `WouldBlock`, the pass's budget, back-pressure, EOF or an error,
    /// decoding and handing over every complete packet on the way.
    pub(crate) fn read(&mut self, cx: &mut ReadCtx<'_>) -> ReadEnd {
        let id = self.id;
        let Some(stream) = self.stream.as_mut() else {
            return ReadEnd::Drained;
        };
        if self.queued {
            // Already listed for the next turn: its budget for this one is spent.
            return ReadEnd::Capped;
        }
        let mut left = READ_BUDGET;
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
            if left == 0 {
                return ReadEnd::Capped;
            }
            let limit = left.min(cx.scratch.len());
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
            left -= n;
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
            let (before, fed, after) = match self.side.as_deref_mut() {
                Some(Side::Tail(tail)) => {
                    let before = tail.capacity();
                    let fed = input::feed(tail, bytes, &mut framing);
                    let after = tail.capacity();
                    if after == 0 {
                        self.side = None;
                    }
                    (before, fed, after)
                }
                // Not lingering: only open connections are read.
                _ => {
                    let mut tail = Vec::new();
                    let fed = input::feed(&mut tail, bytes, &mut framing);
                    let after = tail.capacity();
                    if after > 0 {
                        self.side = Some(Box::new(Side::Tail(tail)));
                    }
                    (0, fed, after)
                }
            };
            if after != before {
                // The broker counts partial input towards `memory_limit`.
                cx.broker.account_input(before, after);
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
        let tail = match self.side.as_deref() {
            Some(Side::Tail(t)) => t.capacity(),
            _ => 0,
        };
        tail + self.transport.as_deref().map_or(0, Transport::input_bytes)
    }

    /// Final bytes of a lingering connection as counted for `memory_limit` when it
    /// started lingering (given back when it closes).
    pub(crate) fn linger_bytes(&self) -> usize {
        match self.side.as_deref() {
            Some(Side::Linger(l)) => l.counted,
            _ => 0,
        }
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
        let mut pending = match self.side.take().map(|s| *s) {
            Some(Side::Linger(l)) => l.final_out,
            _ => Vec::new(),
        };
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
        // Counted as the loop reported it (`Core::linger`), before any transport framing.
        let counted = final_bytes.capacity();
        let final_out = match self.transport.take() {
            Some(mut t) => {
                let mut sealed = Vec::new();
                t.seal_final(&final_bytes, &mut sealed);
                sealed
            }
            None => final_bytes,
        };
        // The tail, if any, goes: nothing more is decoded.
        self.side = Some(Box::new(Side::Linger(Linger {
            counted,
            final_out,
            ..Linger::default()
        })));
        self.linger_write(registry, token)
    }

    /// Writes what the socket takes of the final bytes; once they are all out, shuts down
    /// the write side so the peer reads them followed by EOF.
    pub(crate) fn linger_write(&mut self, registry: &Registry, token: Token) -> LingerStep {
        let (Some(stream), Some(linger)) = (self.stream.as_mut(), linger_of(&mut self.side)) else {
            return LingerStep::Done;
        };
        while !linger.final_out.is_empty() {
            match stream.write(&linger.final_out) {
                Ok(0) => return LingerStep::Done,
                Ok(n) => {
                    linger.final_out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return LingerStep::Done,
            }
        }
        let want_writable = !linger.final_out.is_empty();
        if !want_writable {
            linger.final_out = Vec::new();
            if stream.shutdown(Shutdown::Write).is_err() || linger.peer_done {
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

    /// Reads and discards the peer's input until `WouldBlock`, within one pass's read
    /// budget and [`LINGER_MAX_BYTES`] in all.
    pub(crate) fn drain(&mut self, scratch: &mut [u8]) -> LingerStep {
        if linger_of(&mut self.side).is_some_and(|l| l.peer_done) {
            return LingerStep::Wait;
        }
        if self.queued {
            // Already listed for the next turn (see `read`).
            return LingerStep::Capped;
        }
        let (Some(stream), Some(linger)) = (self.stream.as_mut(), linger_of(&mut self.side)) else {
            return LingerStep::Done;
        };
        let mut left = READ_BUDGET;
        loop {
            if linger.drained >= LINGER_MAX_BYTES {
                break LingerStep::Done;
            }
            if left == 0 {
                break LingerStep::Capped;
            }
            let limit = left.min(scratch.len());
            match stream.read(&mut scratch[..limit]) {
                Ok(0) => {
                    // The peer closed its side. Final bytes not yet written may still
                    // reach it (it can read after a half-close): wait for them.
                    linger.peer_done = true;
                    break if linger.final_out.is_empty() {
                        LingerStep::Done
                    } else {
                        LingerStep::Wait
                    };
                }
                Ok(n) => {
                    left -= n;
                    linger.drained += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break LingerStep::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break LingerStep::Done,
            }
        }
    }
}

impl super::Core {
    /// Writes what a connection's own packets produced (its acknowledgements, and the
    /// deliveries its PUBACKs let out of its queue) right after reading it, rather than
    /// after every other connection's input of the turn: a subscriber limited by its
    /// inflight window then acknowledges the next messages while the loop is still busy
    /// with the publishers, and a burst of connecting clients reuses one write buffer
    /// instead of holding one per client until the end of the turn (issue 11: about 15
    /// bytes per idle client in RSS, from the heap holes those buffers left). Output it
    /// gets later in the turn is written at the end of the turn as before.
    pub(super) fn flush_own_output(
        &mut self,
        registry: &Registry,
        key: usize,
        id: ConnId,
        now: Instant,
    ) {
        // Also a transport's answer to what it read (TLS handshake records, alerts).
        let transport = self.conns.get(key).is_some_and(Connection::wants_flush);
        if transport
            || self.conns.get(key).is_some_and(Connection::is_open)
                && !self.broker.pending_output(id).is_empty()
        {
            self.flush(registry, key, now);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_record_stays_small() {
        // Issue 11 (per-connection memory): paid by every idle client, in the loop's slab,
        // whose entry (this enum, as slab 0.4 declares it) must find its tag in a niche.
        #[allow(dead_code)]
        enum Entry<T> {
            Vacant(usize),
            Occupied(T),
        }
        // mio's socket carries a selector id in debug builds (4 bytes in release, 16 here).
        let bound = if cfg!(debug_assertions) { 48 } else { 32 };
        assert!(
            size_of::<Connection>() <= bound,
            "{}",
            size_of::<Connection>()
        );
        assert_eq!(size_of::<Entry<Connection>>(), size_of::<Connection>());
    }

    #[test]
    fn lingering_final_bytes_stay_counted_until_the_close_gives_them_back() {
        // Issue 11: `memory_limit` did not count the final bytes of lingering connections.
        // What `linger_bytes` reports at the start is what the close gives back, even after
        // the bytes were written and their buffer freed.
        let poll = mio::Poll::new().expect("poll");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        let mut stream = TcpStream::from_std(accepted);
        let token = Token(7);
        poll.registry()
            .register(&mut stream, token, Interest::READABLE)
            .expect("register");
        let id = ConnId {
            index: 7,
            generation: 1,
        };
        let mut conn = Connection::new(id, stream, None);
        assert_eq!(conn.linger_bytes(), 0);
        let mut final_bytes = Vec::with_capacity(1000);
        final_bytes.extend_from_slice(&[0xE0, 0x00]);
        conn.linger(poll.registry(), token, final_bytes);
        assert_eq!(conn.linger_bytes(), 1000, "counted while lingering");
        assert!(
            linger_of(&mut conn.side).is_some_and(|l| l.final_out.is_empty()),
            "written at once"
        );
        assert_eq!(conn.linger_bytes(), 1000, "still the amount reported");
        conn.close(poll.registry(), &[], &mut [0u8; 64]);
        assert_eq!(conn.linger_bytes(), 0, "given back with the close");
        drop(client);
    }
}
