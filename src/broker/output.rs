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

/// Output held for batch `.0`.
type Segment = (u64, Vec<u8>);

/// One connection's output: what is ready to write and what waits for durability. Boxed
/// and allocated only while the connection has output (written, held or listed for the
/// loop): an idle connection carries 8 bytes for it instead of 40 (issue 11,
/// per-connection memory). A busy one allocates it with its write buffer at its first
/// packet of a turn, and gives both back once drained (see `consume_output`).
#[derive(Debug, Default)]
pub(super) struct Outbox(Option<Box<Pending>>);

#[derive(Debug, Default)]
struct Pending {
    /// Encoded packets not yet written to the socket.
    buf: Vec<u8>,
    /// Output waiting for its batch to be durable, oldest batch first: one or two
    /// segments while batches are open, none otherwise.
    held: Vec<Segment>,
    /// The capacity of `buf` and the held segments as last added to `Broker::out_bytes`
    /// (the low bits), and whether this connection is already in the transmit list
    /// ([`QUEUED`], the top bit). A `Vec`'s capacity never exceeds `isize::MAX`, so the
    /// top bit is free; a separate `bool` would take the box from 56 to 64 bytes (a larger
    /// heap chunk).
    counted_queued: usize,
}

/// The bit of `Pending::counted_queued` that says the connection is in the transmit list.
const QUEUED: usize = 1 << (usize::BITS - 1);

/// Empty output boxes kept for reuse. Busy connections take one and give it back every
/// turn; through the allocator, those small frees fill its fast bins, which it then
/// consolidates at every larger request (measured: about 250 instructions per message of
/// QoS 1 fan-in). A few dozen boxes of 56 bytes cost nothing by comparison.
const SPARE_MAX: usize = 64;

/// The spare boxes: boxed on purpose, a connection takes the box itself.
#[allow(clippy::vec_box)]
type Spare = Vec<Box<Pending>>;

impl Outbox {
    /// The output, allocated if the connection had none.
    #[cfg(test)]
    fn pending(&mut self) -> &mut Pending {
        self.0.get_or_insert_with(Box::default)
    }

    /// Encoded packets not yet written to the socket.
    pub(super) fn buf(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |p| &p.buf)
    }

    #[inline]
    fn held(&self) -> &[Segment] {
        self.0.as_deref().map_or(&[], |p| &p.held)
    }

    /// Bytes written or held, not yet handed to the socket.
    pub(super) fn pending_len(&self) -> usize {
        self.0.as_deref().map_or(0, |p| {
            p.buf.len() + p.held.iter().map(|(_, b)| b.len()).sum::<usize>()
        })
    }

    /// The capacity last counted in `Broker::out_bytes` (given back on close).
    pub(super) fn counted(&self) -> usize {
        self.0.as_deref().map_or(0, |p| p.counted_queued & !QUEUED)
    }

    /// Taken off the transmit list.
    fn unlist(&mut self) {
        if let Some(p) = self.0.as_deref_mut() {
            p.counted_queued &= !QUEUED;
        }
    }

    /// Gives the allocation back to `spare` (or the heap), and its count in `out_bytes`,
    /// once nothing is written or held and the connection is not on the transmit list.
    fn release_if_idle(&mut self, out_bytes: &mut usize, spare: &mut Spare) {
        let idle = self.0.as_deref().is_some_and(|p| {
            p.buf.is_empty() && p.held.is_empty() && p.counted_queued & QUEUED == 0
        });
        if !idle {
            return;
        }
        if let Some(mut p) = self.0.take() {
            *out_bytes = out_bytes.saturating_sub(p.counted_queued);
            if spare.len() < SPARE_MAX {
                *p = Pending::default();
                spare.push(p);
            }
        }
    }

    /// What is written before the socket closes: the write buffer, then `last` (encoded
    /// for `version`). Held output is dropped: what it acknowledged is not yet durable.
    pub(super) fn into_final_bytes(self, last: Option<(ProtocolVersion, Packet<'_>)>) -> Vec<u8> {
        let mut bytes = self.0.map(|p| p.buf).unwrap_or_default();
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
    /// Empty output boxes for reuse (at most [`SPARE_MAX`]).
    spare: Spare,
}

impl Output {
    /// Send now: the write buffer of `out`, marked for transmission.
    #[inline]
    pub(super) fn now<'c>(&mut self, out: &'c mut Outbox, id: ConnId) -> &'c mut Vec<u8> {
        allocated(&mut self.mark(out, id).buf)
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
        let p = self.mark(out, id);
        if !journal.holds {
            return allocated(&mut p.buf);
        }
        if let Some(seq) = journal.open_batch() {
            if p.held.is_empty() {
                self.holding.push(id);
            }
            if p.held.last().is_none_or(|(tag, _)| *tag != seq) {
                p.held.push((seq, Vec::new()));
            }
        }
        allocated(match p.held.last_mut() {
            Some((_, segment)) => segment,
            None => &mut p.buf,
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
        if qos == QoS::ExactlyOnce || !out.held().is_empty() {
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
        if journal.holds && submitted > journal.durable && out.held().is_empty() {
            journal.await_submitted();
            let spare = &mut self.spare;
            let p = out.0.get_or_insert_with(|| spare.pop().unwrap_or_default());
            p.held.push((submitted, Vec::new()));
            self.holding.push(id);
        }
    }

    /// Lists `out` for transmission (once) and returns its output.
    #[inline]
    fn mark<'c>(&mut self, out: &'c mut Outbox, id: ConnId) -> &'c mut Pending {
        let spare = &mut self.spare;
        let p = out.0.get_or_insert_with(|| spare.pop().unwrap_or_default());
        if p.counted_queued & QUEUED == 0 {
            p.counted_queued |= QUEUED;
            self.transmit.push(id);
        }
        p
    }

    /// Batches up to `durable` are durable: moves the held segments they cover into the
    /// write buffers.
    fn release(&mut self, conns: &mut [Option<Conn>], durable: u64) {
        let mut still = Vec::new();
        for id in std::mem::take(&mut self.holding) {
            let Some(conn) = conn_slot(conns, id) else {
                continue;
            };
            let Some(p) = conn.out.0.as_deref_mut() else {
                continue;
            };
            let covered = p.held.iter().take_while(|(tag, _)| *tag <= durable).count();
            for (_, segment) in p.held.drain(..covered) {
                if p.buf.is_empty() {
                    p.buf = segment;
                } else {
                    p.buf.extend_from_slice(&segment);
                }
            }
            if !p.held.is_empty() {
                still.push(id);
            } else {
                // Held segments are one or two at a time: give a grown list back.
                p.held = Vec::new();
            }
            if covered > 0 {
                self.mark(&mut conn.out, id);
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
    let Some(p) = out.0.as_deref_mut() else {
        return;
    };
    let held: usize = p.held.iter().map(|(_, b)| b.capacity()).sum();
    let now = p.buf.capacity() + held;
    *out_bytes = out_bytes.saturating_sub(p.counted_queued & !QUEUED) + now;
    p.counted_queued = (p.counted_queued & QUEUED) | (now & !QUEUED);
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
                conn.out.unlist();
                recount_out(&mut self.out_bytes, &mut conn.out);
                if !conn.out.buf().is_empty() {
                    return Some(id);
                }
                conn.out
                    .release_if_idle(&mut self.out_bytes, &mut self.output.spare);
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
            Some(Some(c)) if c.generation == id.generation => c.out.buf(),
            _ => &[],
        }
    }

    /// `n` bytes of `pending_output(id)` were written to the socket.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return;
        };
        let Some(p) = conn.out.0.as_deref_mut() else {
            return;
        };
        let n = n.min(p.buf.len());
        p.buf.drain(..n);
        self.stats.bytes_sent += n as u64;
        if p.buf.is_empty() {
            conn.slow_logged = false;
            // Idle connections keep no buffer at all (issue 11: the few bytes of a CONNACK
            // and SUBACK held 32 bytes of heap per idle client); a busy one allocates
            // again once per loop turn, not per packet.
            p.buf = Vec::new();
        }
        recount_out(&mut self.out_bytes, &mut conn.out);
        conn.out
            .release_if_idle(&mut self.out_bytes, &mut self.output.spare);
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
        assert_eq!(out.buf(), [1]);
        output
            .delivery(&mut out, ID, QoS::ExactlyOnce, &journal)
            .push(2);
        output.held(&mut out, ID, &journal).push(3);
        assert_eq!(out.buf(), [1]);
        assert_eq!(out.pending_len(), 3);
        // Behind held output even QoS 0 waits, so the client sees packets in order.
        output
            .delivery(&mut out, ID, QoS::AtMostOnce, &journal)
            .push(4);
        assert_eq!(out.buf(), [1]);
        assert_eq!(out.held(), [(journal.seq, vec![2, 3, 4])]);
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
            assert_eq!(out.buf(), [1, 2, 3]);
            assert!(output.holding.is_empty());
        }
    }

    #[test]
    fn transmit_flag_and_counted_capacity_do_not_disturb_each_other() {
        let mut out_bytes = 0;
        let (mut output, mut out) = (Output::default(), Outbox::default());
        output.now(&mut out, ID).push(1);
        recount_out(&mut out_bytes, &mut out);
        assert_eq!((out.counted(), out_bytes), (OUT_INITIAL, OUT_INITIAL));
        assert_eq!(output.transmit, [ID], "listed");
        out.release_if_idle(&mut out_bytes, &mut output.spare);
        assert!(out.0.is_some(), "kept while listed and not empty");
        out.pending().buf.clear();
        out.release_if_idle(&mut out_bytes, &mut output.spare);
        assert!(out.0.is_some(), "kept while listed");
        out.unlist();
        assert_eq!(out.counted(), OUT_INITIAL, "the count survives the flag");
        out.release_if_idle(&mut out_bytes, &mut output.spare);
        assert!(out.0.is_none(), "given back");
        assert_eq!(out_bytes, 0, "with its count");
        assert_eq!(output.spare.len(), 1, "kept for reuse");
        output.now(&mut out, ID);
        assert!(output.spare.is_empty(), "reused");
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
