//! The `split` fuzz harness (target `split`, entry `crate::fuzzing::split`): the event
//! loop's framing (`input::feed`) fed a stream in arbitrary chunks hands over exactly the
//! packets, and stops at exactly the error, of a whole-buffer decode. Built only for
//! `cfg(fuzzing)` and tests.

use super::input::{self, Framing};
use crate::protocol::fuzzing::Bytes;
use crate::protocol::{self, DecodeError, Packet, ProtocolVersion, Status};

/// Target `split`: byte 0 chooses the maximum packet size, byte 1 how many split points
/// follow (as 16-bit offsets); the rest is the stream.
pub fn split(data: &[u8]) {
    let mut b = Bytes { data };
    let max_packet_size = match b.u8() % 4 {
        0 => u32::MAX,
        1 => 2_000_000,
        2 => 64,
        _ => 5,
    };
    let cuts = usize::from(b.u8() % 16);
    let mut points: Vec<usize> = (0..cuts).map(|_| usize::from(b.u16())).collect();
    let stream = b.data;
    points.retain(|&p| p <= stream.len());
    points.sort_unstable();

    // Reference: decode the whole buffer front to back, as one read would.
    let mut want: Vec<Packet<'_>> = Vec::new();
    let mut want_err = None;
    let mut version = None;
    let mut rest = stream;
    while !rest.is_empty() {
        match protocol::decode(rest, version, max_packet_size) {
            Ok(Status::Complete((p, used))) => {
                assert!(used > 0 && used <= rest.len(), "decoder used {used} bytes");
                if let Packet::Connect(c) = &p {
                    version = Some(c.version);
                }
                rest = &rest[used..];
                want.push(p);
            }
            Ok(Status::Partial { needed }) => {
                assert!(
                    needed > rest.len(),
                    "Partial needs {needed} of {}",
                    rest.len()
                );
                break;
            }
            Err(e) => {
                want_err = Some(e);
                break;
            }
        }
    }

    // The loop's framing, fed the same bytes in chunks.
    let mut framing = Recorder {
        want: &want,
        seen: 0,
        version: None,
        max_packet_size,
        error: None,
    };
    let mut tail = Vec::new();
    let mut start = 0;
    for end in points.into_iter().chain([stream.len()]) {
        if end < start {
            continue;
        }
        if input::feed(&mut tail, &stream[start..end], &mut framing).is_err() {
            break;
        }
        start = end;
    }
    assert_eq!(framing.seen, want.len(), "chunked framing lost packets");
    assert_eq!(framing.error, want_err, "chunked framing ended differently");
}

/// The split target's consumer: compares each packet with the reference as it arrives
/// (packets borrow the loop's buffers, so they cannot be collected).
struct Recorder<'w, 'a> {
    want: &'w [Packet<'a>],
    seen: usize,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
    error: Option<DecodeError>,
}

impl Framing for Recorder<'_, '_> {
    fn decode<'b>(&mut self, buf: &'b [u8]) -> Result<Status<(Packet<'b>, usize)>, DecodeError> {
        protocol::decode(buf, self.version, self.max_packet_size)
    }

    fn packet(&mut self, packet: Packet<'_>) -> bool {
        let Some(want) = self.want.get(self.seen) else {
            panic!("chunked framing produced an extra packet {packet:?}");
        };
        assert_eq!(&packet, want, "packet {} differs when split", self.seen);
        if let Packet::Connect(c) = &packet {
            self.version = Some(c.version);
        }
        self.seen += 1;
        true
    }

    fn decode_error(&mut self, err: DecodeError) {
        assert!(self.error.is_none(), "two decode errors on one stream");
        self.error = Some(err);
    }
}
