//! How bytes reach a client. Every packet the broker writes goes through [`Output`], by
//! one of three routes:
//!
//! - **send now** ([`Output::now`], [`Broker::send_now`]): straight to the write buffer.
//!   CONNACK, PINGRESP and refusals: they promise nothing the log must keep first.
//! - **hold until durable** ([`Output::held`], [`Broker::send_held`]): acknowledgements
//!   (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK), QoS 2 deliveries and resent QoS 2
//!   PUBLISH/PUBREL. While the turn's journal batch has records they go to a held segment
//!   tagged with that batch, released by [`Broker::handle_durable`]: an acknowledgement
//!   must not outrun the record that makes it true, and a QoS 2 delivery must not reach a
//!   client twice after a crash.
//! - **deliver by QoS** ([`Output::delivery`]): QoS 0 and QoS 1 deliveries go at once (at
//!   worst a crash makes a QoS 1 message arrive twice, which QoS 1 allows, and the
//!   subscriber's inflight window refills without waiting for an fsync); QoS 2 is held.
//!   Unless the connection already holds output: then every delivery queues behind it, so
//!   the client sees packets in the order they were produced (a retained message after
//!   its SUBACK [MQTT-3.3.1-6], PUBACKs in order [MQTT-4.6.0-2]).
//!
//! The last bytes of a connection the broker closes (its write buffer, then a DISCONNECT or
//! the CONNACK of an unsupported protocol level, see `error.rs`) leave through
//! [`Outbox::into_final_bytes`] and `poll_close`; held output is dropped with it.
//!
//! The loop's side: `wants_read`, `poll_transmit`, `pending_output`, `consume_output` and
//! `handle_durable`. They see only [`ConnId`]s and bytes, so a transport under the MQTT
//! byte stream (TLS, WebSocket frames) consumes `pending_output` like plain TCP does, and
//! an outbound connection of a later bridge can own an [`Outbox`] and use the same three
//! routes and the same transmit list.
//!
//! [`Output`] holds the broker-wide lists (connections to transmit, connections holding
//! output); each connection's [`Outbox`] holds its buffers. They are separate so that a
//! caller holding a session and a connection can still borrow the output routes, as plain
//! disjoint fields (no macro).

use super::journal::Journal;
use super::{conn_slot, Broker, Conn, ConnId};
use crate::protocol::{Packet, ProtocolVersion, QoS};

/// Output waiting for batch `.0` to be durable, oldest batch first: one or two segments
/// while batches are open, none otherwise. Boxed and allocated only while not empty: every
/// connection carries one, 8 bytes instead of a `Vec`'s 24 (issue 11, per-connection
/// memory); a `Vec`, not a `VecDeque`, inside.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // boxed on purpose: 8 bytes per connection, not 24
struct Held(Option<Box<Vec<Segment>>>);

/// Output held for batch `.0`.
type Segment = (u64, Vec<u8>);

impl Held {
    fn as_slice(&self) -> &[Segment] {
        self.0.as_deref().map_or(&[], |v| v)
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn iter(&self) -> std::slice::Iter<'_, Segment> {
        self.as_slice().iter()
    }

    fn first(&self) -> Option<&Segment> {
        self.as_slice().first()
    }

    fn last(&self) -> Option<&Segment> {
        self.as_slice().last()
    }

    fn last_mut(&mut self) -> Option<&mut Segment> {
        self.0.as_mut()?.last_mut()
    }

    fn push(&mut self, segment: Segment) {
        self.0.get_or_insert_with(Box::default).push(segment);
    }

    /// Takes the oldest segment; gives the allocation back once none is left.
    fn pop_first(&mut self) -> Option<Segment> {
        let v = self.0.as_mut()?;
        let first = (!v.is_empty()).then(|| v.remove(0));
        if v.is_empty() {
            self.0 = None;
        }
        first
    }
}

/// One connection's output: what is ready to write and what waits for durability.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Encoded packets not yet written to the socket.
    pub(super) buf: Vec<u8>,
    /// Output waiting for its batch to be durable, oldest batch first.
    held: Held,
    /// The capacity of `buf` as last added to `Broker::out_bytes` (the low bits), and
    /// whether this connection is already in the transmit list ([`QUEUED`], the top bit).
    /// A `Vec`'s capacity never exceeds `isize::MAX`, so the top bit is free; a separate
    /// `bool` would pad every connection by 8 bytes.
    counted_queued: usize,
}

/// The bit of `Outbox::counted_queued` that says the connection is in the transmit list.
const QUEUED: usize = 1 << (usize::BITS - 1);

impl Outbox {
    /// Bytes written or held, not yet handed to the socket.
    pub(super) fn pending_len(&self) -> usize {
        self.buf.len() + self.held.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// The capacity last counted in `Broker::out_bytes` (given back on close).
    pub(super) fn counted(&self) -> usize {
        self.counted_queued & !QUEUED
    }

    fn set_counted(&mut self, capacity: usize) {
        self.counted_queued = (self.counted_queued & QUEUED) | (capacity & !QUEUED);
    }

    fn queued(&self) -> bool {
        self.counted_queued & QUEUED != 0
    }

    fn set_queued(&mut self, queued: bool) {
        self.counted_queued = if queued {
            self.counted_queued | QUEUED
        } else {
            self.counted_queued & !QUEUED
        };
    }

    /// What is written before the socket closes: the write buffer, then `last` (encoded
    /// for `version`). Held output is dropped: what it acknowledged is not yet durable.
    pub(super) fn into_final_bytes(self, last: Option<(ProtocolVersion, Packet<'_>)>) -> Vec<u8> {
        let mut bytes = self.buf;
        if let Some((version, packet)) = last {
            packet.encode(version, &mut bytes);
        }
        bytes
    }
}

/// Room made in an empty write buffer or held segment at its first packet. A drained write
/// buffer is freed (an idle connection holds none, see `consume_output`); starting a
/// turn's output at this size instead of 8, 16, 32... bytes saves most of the
/// reallocations of a busy one.
const OUT_INITIAL: usize = 256;

/// `buf`, allocated if it is not.
fn allocated(buf: &mut Vec<u8>) -> &mut Vec<u8> {
    if buf.capacity() == 0 {
        buf.reserve(OUT_INITIAL);
    }
    buf
}

/// Every way bytes reach a client (see the module docs): the three routes, the list of
/// connections with new bytes for the loop, and the list of connections holding output.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// Connections with new output since the loop last asked.
    transmit: Vec<ConnId>,
    /// Connections with held output.
    holding: Vec<ConnId>,
}

impl Output {
    /// Send now: the write buffer of `out`, marked for transmission.
    pub(super) fn now<'c>(&mut self, out: &'c mut Outbox, id: ConnId) -> &'c mut Vec<u8> {
        self.mark(out, id);
        allocated(&mut out.buf)
    }

    /// Hold until durable: the buffer for a packet that must not reach the client before
    /// the journal's open batch is durable. That is a held segment when the batch has
    /// records or the connection already holds output, the write buffer otherwise.
    pub(super) fn held<'c>(
        &mut self,
        out: &'c mut Outbox,
        id: ConnId,
        journal: &Journal,
    ) -> &'c mut Vec<u8> {
        self.mark(out, id);
        if !journal.holds {
            return allocated(&mut out.buf);
        }
        if let Some(seq) = journal.open_batch() {
            if out.held.is_empty() {
                self.holding.push(id);
            }
            if out.held.last().is_none_or(|(tag, _)| *tag != seq) {
                out.held.push((seq, Vec::new()));
            }
        }
        allocated(match out.held.last_mut() {
            Some((_, segment)) => segment,
            None => &mut out.buf,
        })
    }

    /// Deliver by QoS: the buffer a PUBLISH of `qos` goes to. QoS 2 is held; QoS 0 and 1
    /// go at once unless the connection already holds output (module docs).
    #[inline]
    pub(super) fn delivery<'c>(
        &mut self,
        out: &'c mut Outbox,
        id: ConnId,
        qos: QoS,
        journal: &Journal,
    ) -> &'c mut Vec<u8> {
        if qos == QoS::ExactlyOnce || !out.held.is_empty() {
            return self.held(out, id, journal);
        }
        self.now(out, id)
    }

    /// Encodes `packet` for `conn` and sends it now.
    pub(super) fn send_now(&mut self, conn: &mut Conn, id: ConnId, packet: &Packet<'_>) {
        let version = conn.version.unwrap_or(ProtocolVersion::V311);
        packet.encode(version, self.now(&mut conn.out, id));
    }

    /// Encodes `packet` for `conn`, held until durable.
    pub(super) fn send_held(
        &mut self,
        conn: &mut Conn,
        id: ConnId,
        packet: &Packet<'_>,
        journal: &Journal,
    ) {
        let version = conn.version.unwrap_or(ProtocolVersion::V311);
        packet.encode(version, self.held(&mut conn.out, id, journal));
    }

    /// Holds everything durable that `out` gets from now on until every batch already
    /// submitted is durable (a new connection of a session, see `send_connack`).
    pub(super) fn hold_behind_submitted(
        &mut self,
        out: &mut Outbox,
        id: ConnId,
        journal: &Journal,
    ) {
        let submitted = journal.seq.saturating_sub(1);
        if journal.holds && submitted > journal.durable && out.held.is_empty() {
            out.held.push((submitted, Vec::new()));
            self.holding.push(id);
        }
    }

    fn mark(&mut self, out: &mut Outbox, id: ConnId) {
        if !out.queued() {
            out.set_queued(true);
            self.transmit.push(id);
        }
    }

    /// Batches up to `durable` are durable: moves the held segments they cover into the
    /// write buffers.
    fn release(&mut self, conns: &mut [Option<Conn>], durable: u64) {
        let mut still = Vec::new();
        for id in std::mem::take(&mut self.holding) {
            let Some(conn) = conn_slot(conns, id) else {
                continue;
            };
            let out = &mut conn.out;
            let mut moved = false;
            while out.held.first().is_some_and(|(tag, _)| *tag <= durable) {
                let Some((_, segment)) = out.held.pop_first() else {
                    break;
                };
                if out.buf.is_empty() {
                    out.buf = segment;
                } else {
                    out.buf.extend_from_slice(&segment);
                }
                moved = true;
            }
            if moved {
                self.mark(out, id);
            }
            if !out.held.is_empty() {
                still.push(id);
            }
        }
        self.holding = still;
    }
}

/// Brings `out_bytes` up to date with `out`'s write buffer and held output: O(1) for the
/// buffer plus the held segments (one per journal batch not yet durable, usually none or
/// one), on the paths that already touch the buffer once per loop turn (`poll_transmit`,
/// `consume_output`; held output marks the connection for transmission too), so the total
/// lags output encoded this turn by at most one turn.
fn recount_out(out_bytes: &mut usize, out: &mut Outbox) {
    let held: usize = out.held.iter().map(|(_, b)| b.capacity()).sum();
    let now = out.buf.capacity() + held;
    *out_bytes = out_bytes.saturating_sub(out.counted()) + now;
    out.set_counted(now);
}

impl Broker {
    /// Sends `packet` to `id` now (see [`Output::send_now`]).
    pub(super) fn send_now(&mut self, id: ConnId, packet: &Packet<'_>) {
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            self.output.send_now(conn, id, packet);
            self.stats.control_sent += 1;
        }
    }

    /// Sends `packet` to `id`, held until the turn's records are durable (see
    /// [`Output::send_held`]): acknowledgements.
    pub(super) fn send_held(&mut self, id: ConnId, packet: &Packet<'_>) {
        if let Some(conn) = conn_slot(&mut self.conns, id) {
            self.output.send_held(conn, id, packet, &self.journal);
            self.stats.control_sent += 1;
        }
    }

    /// Whether the loop should keep reading from `id`: false while its write buffer is over
    /// `max_write_buffer`, so a client that does not read its acks cannot make us buffer
    /// without bound.
    pub fn wants_read(&self, id: ConnId) -> bool {
        match self.conns.get(id.index as usize) {
            Some(Some(c)) if c.generation == id.generation => {
                c.out.pending_len() <= self.config.max_write_buffer
            }
            _ => false,
        }
    }

    /// Next connection with new bytes to write (each returned once until it gets more).
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        while let Some(id) = self.output.transmit.pop() {
            if let Some(conn) = conn_slot(&mut self.conns, id) {
                conn.out.set_queued(false);
                recount_out(&mut self.out_bytes, &mut conn.out);
                if !conn.out.buf.is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The peer address of `id` as text, for the CONNECT log line (the loop calls it after
    /// `handle_open`; the broker itself knows no sockets). Kept only until CONNECT.
    pub fn set_peer(&mut self, id: ConnId, peer: String) {
        if conn_slot(&mut self.conns, id).is_some_and(|c| c.session().is_none()) {
            self.peers.insert(id, peer.into_boxed_str());
        }
    }

    /// Bytes waiting to be written to `id`.
    pub fn pending_output(&self, id: ConnId) -> &[u8] {
        match self.conns.get(id.index as usize) {
            Some(Some(c)) if c.generation == id.generation => &c.out.buf,
            _ => &[],
        }
    }

    /// `n` bytes of `pending_output(id)` were written to the socket.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let out = &mut conn.out;
        let n = n.min(out.buf.len());
        out.buf.drain(..n);
        self.stats.bytes_sent += n as u64;
        if out.buf.is_empty() {
            conn.slow_logged = false;
            // Idle connections keep no buffer at all (issue 11: the few bytes of a CONNACK
            // and SUBACK held 32 bytes of heap per idle client); a busy one allocates
            // again once per loop turn, not per packet.
            out.buf = Vec::new();
        }
        recount_out(&mut self.out_bytes, out);
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
        self.output.release(&mut self.conns, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;

    const ID: ConnId = ConnId {
        index: 0,
        generation: 1,
    };

    /// A journal whose open batch has a record, as after a turn that changed stored state.
    fn journal_with_open_batch() -> Journal {
        let mut journal = Journal::new(true);
        journal.record(Record::SessionDelete { session: 1 });
        journal
    }

    #[test]
    fn qos1_goes_at_once_while_qos2_and_acks_wait_for_the_open_batch() {
        let journal = journal_with_open_batch();
        let (mut output, mut out) = (Output::default(), Outbox::default());
        output
            .delivery(&mut out, ID, QoS::AtLeastOnce, &journal)
            .push(1);
        assert_eq!(out.buf, [1]);
        output
            .delivery(&mut out, ID, QoS::ExactlyOnce, &journal)
            .push(2);
        output.held(&mut out, ID, &journal).push(3);
        assert_eq!(out.buf, [1]);
        assert_eq!(out.pending_len(), 3);
        // Behind held output even QoS 0 waits, so the client sees packets in order.
        output
            .delivery(&mut out, ID, QoS::AtMostOnce, &journal)
            .push(4);
        assert_eq!(out.buf, [1]);
        assert_eq!(out.held.as_slice(), [(journal.seq, vec![2, 3, 4])]);
        // Listed once for the loop, and once as holding output.
        assert_eq!(output.transmit, [ID]);
        assert_eq!(output.holding, [ID]);
    }

    #[test]
    fn nothing_waits_without_an_open_batch_or_without_persistence() {
        for journal in [Journal::new(true), Journal::new(false)] {
            let (mut output, mut out) = (Output::default(), Outbox::default());
            output.held(&mut out, ID, &journal).push(1);
            output
                .delivery(&mut out, ID, QoS::ExactlyOnce, &journal)
                .push(2);
            output.now(&mut out, ID).push(3);
            assert_eq!(out.buf, [1, 2, 3]);
            assert!(output.holding.is_empty());
        }
    }

    #[test]
    fn transmit_flag_and_counted_capacity_do_not_disturb_each_other() {
        let mut out = Outbox::default();
        out.set_counted(usize::MAX >> 1);
        out.set_queued(true);
        assert_eq!(out.counted(), usize::MAX >> 1);
        out.set_counted(4096);
        assert!(out.queued());
        out.set_queued(false);
        assert_eq!((out.counted(), out.queued()), (4096, false));
    }

    #[test]
    fn final_bytes_are_the_write_buffer_then_the_last_packet_without_held_output() {
        let journal = journal_with_open_batch();
        let (mut output, mut out) = (Output::default(), Outbox::default());
        output.now(&mut out, ID).push(1);
        output.held(&mut out, ID, &journal).push(2);
        let bytes = out.into_final_bytes(Some((ProtocolVersion::V5, Packet::Pingresp)));
        assert_eq!(bytes, [1, 0xD0, 0x00]);
    }
}
