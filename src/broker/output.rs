//! How bytes reach a client: the output lanes (send now, or hold until the open journal
//! batch is durable), the transmit list, and the loop's side of each connection's write
//! buffer (`wants_read`, `poll_transmit`, `pending_output`, `consume_output`) and of held
//! output (`handle_durable`).

use super::{conn_slot, journal, Broker, Conn, ConnId};
use crate::protocol::{Packet, ProtocolVersion};

/// Encodes `packet` into the connection's write buffer and marks it for transmission.
pub(super) fn send(conn: &mut Conn, id: ConnId, transmit: &mut Vec<ConnId>, packet: &Packet<'_>) {
    packet.encode(conn.version.unwrap_or(ProtocolVersion::V311), &mut conn.out);
    mark_transmit(conn, id, transmit);
}

/// Output lanes a connection's packets take: straight to the write buffer, or held until
/// the open batch is durable (acknowledgements and QoS 1/2 deliveries).
pub(super) struct Lanes<'a> {
    pub(super) transmit: &'a mut Vec<ConnId>,
    pub(super) journal: &'a journal::Journal,
    pub(super) held_conns: &'a mut Vec<ConnId>,
}

impl Lanes<'_> {
    /// The buffer a durable packet for `conn` is encoded into; marks the connection for
    /// transmission when it is the write buffer.
    pub(super) fn durable<'c>(&mut self, conn: &'c mut Conn, id: ConnId) -> &'c mut Vec<u8> {
        let buf = self
            .journal
            .target(&mut conn.out, &mut conn.held, id, self.held_conns);
        if !conn.transmit_queued {
            conn.transmit_queued = true;
            self.transmit.push(id);
        }
        buf
    }

    /// The buffer a PUBLISH of `qos` to `conn` goes to. QoS 2 deliveries wait for the
    /// batch (a redelivery after a crash must not reach the client twice); QoS 1 and 0
    /// deliveries go at once: at worst a crash makes a QoS 1 message arrive twice, which
    /// QoS 1 allows, and the subscriber's inflight window refills without waiting for an
    /// fsync. Unless the connection already holds output: then they queue behind it, so
    /// that the client sees packets in the order they were produced (a retained message
    /// after its SUBACK [MQTT-3.3.1-6]).
    pub(super) fn delivery<'c>(
        &mut self,
        conn: &'c mut Conn,
        id: ConnId,
        qos: crate::protocol::QoS,
    ) -> &'c mut Vec<u8> {
        if qos == crate::protocol::QoS::ExactlyOnce || !conn.held.is_empty() {
            return self.durable(conn, id);
        }
        if !conn.transmit_queued {
            conn.transmit_queued = true;
            self.transmit.push(id);
        }
        &mut conn.out
    }

    pub(super) fn send(&mut self, conn: &mut Conn, id: ConnId, packet: &Packet<'_>) {
        let version = conn.version.unwrap_or(ProtocolVersion::V311);
        packet.encode(version, self.durable(conn, id));
    }
}

/// Brings `out_bytes` up to date with `conn`'s write buffer: O(1), on the paths that
/// already touch the buffer once per loop turn (`poll_transmit`, `consume_output`), so
/// the total lags output encoded this turn by at most one turn.
pub(super) fn recount_out(out_bytes: &mut usize, conn: &mut Conn) {
    let now = conn.out.capacity();
    *out_bytes = out_bytes.saturating_sub(conn.counted_out) + now;
    conn.counted_out = now;
}

pub(super) fn mark_transmit(conn: &mut Conn, id: ConnId, transmit: &mut Vec<ConnId>) {
    if !conn.transmit_queued {
        conn.transmit_queued = true;
        transmit.push(id);
    }
}

impl Broker {
    /// Whether the loop should keep reading from `id`: false while its write buffer is over
    /// `max_write_buffer`, so a client that does not read its acks cannot make us buffer
    /// without bound.
    pub fn wants_read(&self, id: ConnId) -> bool {
        match self.conns.get(id.index as usize) {
            Some(Some(c)) if c.generation == id.generation => {
                let held: usize = c.held.iter().map(|(_, b)| b.len()).sum();
                c.out.len() + held <= self.config.max_write_buffer
            }
            _ => false,
        }
    }

    /// Next connection with new bytes to write (each returned once until it gets more).
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        while let Some(id) = self.transmit.pop() {
            if let Some(conn) = conn_slot(&mut self.conns, id) {
                conn.transmit_queued = false;
                recount_out(&mut self.out_bytes, conn);
                if !conn.out.is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The peer address of `id` as text, for the broker's log lines (the loop calls it
    /// after `handle_open`; the broker itself knows no sockets).
    pub fn set_peer(&mut self, id: ConnId, peer: String) {
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            conn.peer = Some(peer.into_boxed_str());
        }
    }

    /// Bytes waiting to be written to `id`.
    pub fn pending_output(&self, id: ConnId) -> &[u8] {
        match self.conns.get(id.index as usize) {
            Some(Some(c)) if c.generation == id.generation => &c.out,
            _ => &[],
        }
    }

    /// `n` bytes of `pending_output(id)` were written to the socket.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let n = n.min(conn.out.len());
        conn.out.drain(..n);
        self.stats.bytes_sent += n as u64;
        if conn.out.is_empty() {
            conn.slow_logged = false;
            // Idle connections keep no large buffer: a burst's buffer is given back.
            if conn.out.capacity() > 4096 {
                conn.out = Vec::new();
            }
        }
        recount_out(&mut self.out_bytes, conn);
        if !self.retained_jobs.is_empty() {
            self.retained_output_drained(id);
        }
    }

    /// Batches up to `seq` are durable: release the output that waited for them.
    pub fn handle_durable(&mut self, seq: u64) {
        if seq <= self.journal.durable {
            return;
        }
        self.journal.durable = seq;
        let mut still = Vec::new();
        for id in std::mem::take(&mut self.held_conns) {
            let Some(conn) = conn_slot(&mut self.conns, id) else {
                continue;
            };
            if journal::release(&mut conn.held, &mut conn.out, seq) {
                mark_transmit(conn, id, &mut self.transmit);
            }
            if !conn.held.is_empty() {
                still.push(id);
            }
        }
        self.held_conns = still;
    }
}
