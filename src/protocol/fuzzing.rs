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
