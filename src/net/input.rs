//! Input framing: turns the bytes of one read into packets, keeping only the tail of a
//! partial packet per connection.
//!
//! Owns the rule "idle connections hold no input bytes": bytes are decoded straight from
//! the loop's shared scratch buffer, and only an incomplete remainder is copied into the
//! connection's `tail`. While a tail exists, new bytes are appended to it only up to the
//! end of the packet it holds (as far as the decoder can tell), so the tail never holds
//! more than one packet; the rest is decoded from the scratch buffer again. A tail that is
//! fully consumed is replaced by `Vec::new()`, which frees its allocation.
//!
//! Memory policy: the decoder bounds `needed` by the maximum packet size before any body
//! byte arrives, but a peer can still announce a large packet and then send nothing. So a
//! tail reserves at most [`INITIAL_TAIL`] up front and then grows by doubling as the bytes
//! actually arrive, never beyond the announced packet size. Before CONNECT has been
//! handled the decoder is given `max_connect_packet_size` (100,000 bytes by default)
//! instead of `max_packet_size` (see `connection.rs`), so an unauthenticated socket can
//! make the broker hold at most that much.
//!
//! The decoder and the broker are reached through [`Framing`], so the tail logic is tested
//! here with a fake decoder.

use crate::protocol::{DecodeError, Packet, Status};

/// Largest up-front reservation for a partial packet.
pub(crate) const INITIAL_TAIL: usize = 16 * 1024;

/// Why input processing stopped early for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The broker ended the connection (`handle_packet` returned false, or a decode error
    /// was reported to it). It will appear in `poll_close`; feed it nothing more.
    BrokerClosed,
    /// The decoder claimed to consume zero bytes or more than it was given: a codec bug.
    /// The loop closes the connection as if on an I/O error rather than spin.
    CodecBug,
}

/// The decoder and the packet consumer, as seen by the framing code.
pub(crate) trait Framing {
    /// Decodes one packet from the front of `buf`.
    fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Status<(Packet<'a>, usize)>, DecodeError>;
    /// Hands over a decoded packet; false means "the connection is over, stop".
    fn packet(&mut self, packet: Packet<'_>) -> bool;
    /// Reports bytes that cannot be decoded; the connection is over after this.
    fn decode_error(&mut self, err: DecodeError);
}

/// Feeds `input` (fresh bytes from the socket) through `tail` and the decoder, handing
/// every complete packet to `framing` in order.
pub(crate) fn feed<F: Framing>(
    tail: &mut Vec<u8>,
    mut input: &[u8],
    framing: &mut F,
) -> Result<(), Stop> {
    // First complete the packet an earlier read left unfinished.
    while !tail.is_empty() {
        match decode_one(tail, framing)? {
            Step::Consumed(used) => {
                tail.drain(..used);
                if tail.is_empty() {
                    // Free the allocation: an idle connection holds no input bytes.
                    *tail = Vec::new();
                }
            }
            Step::Partial { .. } if input.is_empty() => return Ok(()),
            Step::Partial { needed } => {
                // At least one byte so that a lower-bound `needed` still makes progress.
                let take = needed.saturating_sub(tail.len()).clamp(1, input.len());
                grow_tail(tail, take, needed);
                tail.extend_from_slice(&input[..take]);
                input = &input[take..];
            }
        }
    }
    // No partial packet pending: decode straight from the input.
    while !input.is_empty() {
        match decode_one(input, framing)? {
            Step::Consumed(used) => input = &input[used..],
            Step::Partial { needed } => {
                grow_tail(tail, input.len(), needed);
                tail.extend_from_slice(input);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Outcome of one decode attempt that did not end the connection.
enum Step {
    /// A packet of this many bytes was decoded and handed over.
    Consumed(usize),
    /// The buffer holds only part of a packet of (at least) `needed` bytes.
    Partial { needed: usize },
}

/// Decodes one packet from the front of `buf` and hands it over.
fn decode_one<F: Framing>(buf: &[u8], framing: &mut F) -> Result<Step, Stop> {
    match framing.decode(buf) {
        Ok(Status::Complete((packet, used))) => {
            if used == 0 || used > buf.len() {
                return Err(Stop::CodecBug);
            }
            if framing.packet(packet) {
                Ok(Step::Consumed(used))
            } else {
                Err(Stop::BrokerClosed)
            }
        }
        Ok(Status::Partial { needed }) => Ok(Step::Partial { needed }),
        Err(err) => {
            framing.decode_error(err);
            Err(Stop::BrokerClosed)
        }
    }
}

/// Makes room for `extra` more bytes in `tail`, which is filling up towards a packet of
/// `needed` bytes: at most [`INITIAL_TAIL`] at first, then doubling, capped at `needed`.
fn grow_tail(tail: &mut Vec<u8>, extra: usize, needed: usize) {
    let want = tail.len() + extra;
    if tail.capacity() >= want {
        return;
    }
    let target = if tail.capacity() == 0 {
        needed.min(INITIAL_TAIL)
    } else {
        (tail.capacity() * 2).min(needed)
    }
    .max(want);
    tail.reserve_exact(target - tail.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy wire format: one length byte `n`, then `n` body bytes. Every packet decodes
    /// as `Pingreq`; the body is recorded. A length byte of 0xFF is a decode error.
    #[derive(Default)]
    struct Fake {
        bodies: Vec<Vec<u8>>,
        decode_calls: usize,
        errors: usize,
        stop_after: Option<usize>,
    }

    impl Framing for Fake {
        fn decode<'a>(
            &mut self,
            buf: &'a [u8],
        ) -> Result<Status<(Packet<'a>, usize)>, DecodeError> {
            self.decode_calls += 1;
            let Some(&len) = buf.first() else {
                return Ok(Status::Partial { needed: 1 });
            };
            if len == 0xFF {
                return Err(DecodeError::MalformedVariableInt);
            }
            let total = 1 + len as usize;
            if buf.len() < total {
                return Ok(Status::Partial { needed: total });
            }
            self.bodies.push(buf[1..total].to_vec());
            Ok(Status::Complete((Packet::Pingreq, total)))
        }

        fn packet(&mut self, packet: Packet<'_>) -> bool {
            assert_eq!(packet, Packet::Pingreq);
            self.stop_after.is_none_or(|n| self.bodies.len() < n)
        }

        fn decode_error(&mut self, _err: DecodeError) {
            self.errors += 1;
        }
    }

    fn stream() -> Vec<u8> {
        let mut bytes = Vec::new();
        for n in [0u8, 1, 5, 200, 3, 0, 64] {
            bytes.push(n);
            bytes.extend((0..n).map(|i| i.wrapping_mul(7)));
        }
        bytes
    }

    fn expected_bodies() -> Vec<Vec<u8>> {
        [0u8, 1, 5, 200, 3, 0, 64]
            .iter()
            .map(|&n| (0..n).map(|i| i.wrapping_mul(7)).collect())
            .collect()
    }

    #[test]
    fn whole_input_decodes_without_a_tail() {
        let mut tail = Vec::new();
        let mut fake = Fake::default();
        feed(&mut tail, &stream(), &mut fake).unwrap();
        assert_eq!(fake.bodies, expected_bodies());
        assert_eq!(tail.capacity(), 0);
    }

    #[test]
    fn every_split_gives_the_same_packets_and_frees_the_tail() {
        let bytes = stream();
        for chunk in 1..=bytes.len() {
            let mut tail = Vec::new();
            let mut fake = Fake::default();
            for piece in bytes.chunks(chunk) {
                feed(&mut tail, piece, &mut fake).unwrap();
                assert!(tail.len() <= 201, "tail holds at most one packet");
            }
            assert_eq!(fake.bodies, expected_bodies(), "chunk size {chunk}");
            assert!(tail.is_empty());
            assert_eq!(tail.capacity(), 0, "idle connection holds no input bytes");
        }
    }

    #[test]
    fn partial_tail_is_kept_until_completed() {
        let mut tail = Vec::new();
        let mut fake = Fake::default();
        feed(&mut tail, &[3, 1], &mut fake).unwrap();
        assert_eq!(tail, [3, 1]);
        assert!(fake.bodies.is_empty());
        feed(&mut tail, &[2, 3, 0, 1], &mut fake).unwrap();
        assert_eq!(fake.bodies, [vec![1, 2, 3], vec![]]);
        assert_eq!(tail, [1]);
    }

    #[test]
    fn tail_reservation_is_bounded_by_initial_tail() {
        let mut tail = Vec::new();
        grow_tail(&mut tail, 5, 2_000_000);
        assert!(tail.capacity() >= 5 && tail.capacity() <= INITIAL_TAIL);
        let mut small = Vec::new();
        grow_tail(&mut small, 2, 10);
        assert!(small.capacity() >= 10);
    }

    #[test]
    fn decode_error_stops_and_reports_once() {
        let mut tail = Vec::new();
        let mut fake = Fake::default();
        let err = feed(&mut tail, &[0, 0xFF, 0, 0], &mut fake);
        assert_eq!(err, Err(Stop::BrokerClosed));
        assert_eq!(fake.errors, 1);
        assert_eq!(fake.bodies.len(), 1);
    }

    #[test]
    fn broker_close_stops_further_packets() {
        let mut tail = Vec::new();
        let mut fake = Fake {
            stop_after: Some(2),
            ..Fake::default()
        };
        let err = feed(&mut tail, &[0, 0, 0, 0], &mut fake);
        assert_eq!(err, Err(Stop::BrokerClosed));
        assert_eq!(fake.bodies.len(), 2);
    }
}
