//! Fuzz harness bodies, kept in the crate so `fuzz/fuzz_targets/*.rs` stay thin
//! (`wrenmq::protocol::fuzzing::decode_round_trip(data)`). Built for `cfg(fuzzing)` and for
//! the unit tests, which drive them with mutated test vectors.

use super::{decode, Packet, ProtocolVersion, Status};

/// Decodes `data` under every version and checks the codec's properties: no panic; a
/// complete packet never claims more bytes than given; its re-encoding decodes to the same
/// packet with `encoded_len` bytes; and a byte-at-a-time prefix walk agrees with the
/// whole-buffer result.
pub fn decode_round_trip(data: &[u8]) {
    for version in [
        None,
        Some(ProtocolVersion::V31),
        Some(ProtocolVersion::V311),
        Some(ProtocolVersion::V5),
    ] {
        let Ok(Status::Complete((packet, used))) = decode(data, version, u32::MAX) else {
            continue;
        };
        assert!(used <= data.len());
        let ev = match &packet {
            Packet::Connect(c) => c.version,
            _ => version.unwrap_or(ProtocolVersion::V311),
        };
        let mut out = Vec::new();
        packet.encode(ev, &mut out);
        assert_eq!(out.len(), packet.encoded_len(ev));
        match decode(&out, version, u32::MAX) {
            Ok(Status::Complete((again, n))) => {
                assert_eq!(n, out.len());
                assert_eq!(again, packet);
            }
            other => panic!("re-encoded {packet:?} as {out:02x?}: {other:?}"),
        }
        for k in 0..used {
            assert!(matches!(
                decode(&data[..k], version, u32::MAX),
                Ok(Status::Partial { .. }) | Err(_)
            ));
        }
    }
}

/// A cursor over the fuzzer's bytes, shared by the harnesses of `net` and `broker` (this
/// module is the one both reach without a cycle); running out yields zeros so every read is total.
pub(crate) struct Bytes<'a> {
    pub(crate) data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub(crate) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }
}
