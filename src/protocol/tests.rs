//! Codec unit tests that are not table-driven: remaining-length boundaries, the size limit
//! before the body, encoding built packets, and mutation fuzzing of the vectors.

use std::num::NonZeroU16;

use super::vectors::all_vectors;
use super::writer::{put_varint, varint_len};
use super::*;

fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

const BOUNDARIES: &[(usize, &[u8])] = &[
    (0, &[0x00]),
    (127, &[0x7F]),
    (128, &[0x80, 0x01]),
    (16_383, &[0xFF, 0x7F]),
    (16_384, &[0x80, 0x80, 0x01]),
    (2_097_151, &[0xFF, 0xFF, 0x7F]),
    (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
    (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
];

#[test]
fn remaining_length_boundaries_encode_and_decode() {
    for &(n, wire) in BOUNDARIES {
        let mut out = Vec::new();
        put_varint(&mut out, n);
        assert_eq!(out, wire, "encoding {n}");
        assert_eq!(varint_len(n), wire.len());

        // The fixed header alone says how big the packet is.
        let mut header = vec![0x30];
        header.extend_from_slice(wire);
        if n == 0 {
            // Nothing to wait for: a PINGREQ is complete, an empty PUBLISH truncated.
            header[0] = 0xC0;
            assert_eq!(
                decode(&header, Some(ProtocolVersion::V311), u32::MAX),
                Ok(Status::Complete((Packet::Pingreq, 2)))
            );
            continue;
        }
        assert_eq!(
            decode(&header, Some(ProtocolVersion::V311), u32::MAX),
            Ok(Status::Partial {
                needed: 1 + wire.len() + n
            }),
            "remaining length {n}"
        );
    }
}

#[test]
fn remaining_length_boundaries_full_packets_round_trip() {
    // PUBLISH "t" QoS 0 with a payload filling the remaining length (up to 2 MiB).
    for &(n, wire) in BOUNDARIES
        .iter()
        .filter(|(n, _)| (3..=2_097_152).contains(n))
    {
        let payload = vec![0xA5; n - 3];
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t",
            packet_id: None,
            properties: Properties::EMPTY,
            payload: &payload,
        };
        let mut out = Vec::new();
        p.encode(ProtocolVersion::V311, &mut out);
        assert_eq!(&out[1..1 + wire.len()], wire);
        assert_eq!(out.len(), p.encoded_len(ProtocolVersion::V311));
        match decode(&out, Some(ProtocolVersion::V311), u32::MAX) {
            Ok(Status::Complete((Packet::Publish(q), used))) => {
                assert_eq!(used, out.len());
                assert_eq!(q, p);
            }
            other => panic!("{n}: {other:?}"),
        }
    }
}

#[test]
fn remaining_length_of_five_bytes_is_malformed() {
    for buf in [
        &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01][..],
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF][..], // known bad at the 4th byte already
    ] {
        assert_eq!(
            decode(buf, Some(ProtocolVersion::V311), u32::MAX),
            Err(DecodeError::MalformedVariableInt)
        );
    }
}

#[test]
fn partial_needs_one_more_byte_until_header_is_complete() {
    let v = Some(ProtocolVersion::V311);
    assert_eq!(decode(&[], v, 100), Ok(Status::Partial { needed: 1 }));
    assert_eq!(decode(&[0x30], v, 100), Ok(Status::Partial { needed: 2 }));
    assert_eq!(
        decode(&[0x30, 0x80], v, 100),
        Ok(Status::Partial { needed: 3 })
    );
    assert_eq!(
        decode(&[0x30, 0x80, 0x80], v, 100_000),
        Ok(Status::Partial { needed: 4 })
    );
}

#[test]
fn packet_too_large_is_checked_from_the_fixed_header_alone() {
    let v = Some(ProtocolVersion::V311);
    // 2 header bytes + 1024 body bytes would be 1027; only the header is present.
    assert_eq!(
        decode(&[0x30, 0x80, 0x08], v, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 1027,
            max: 1024
        })
    );
    assert_eq!(
        decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], v, 1 << 20),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1 << 20
        })
    );
    // Exactly at the limit is fine, and still Partial without the body.
    assert_eq!(
        decode(&[0x30, 0x80, 0x08], v, 1027),
        Ok(Status::Partial { needed: 1027 })
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 9, max: 8 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
}

#[test]
fn broker_built_connack_with_properties_round_trips() {
    let mut props = PropertiesBuf::new();
    props.push(Property::ReceiveMaximum(20));
    props.push(Property::MaximumQoS(1));
    props.push(Property::AssignedClientIdentifier("auto-7"));
    props.push(Property::UserProperty("region", "eu"));
    let connack = Packet::Connack(Connack {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: props.as_properties(),
    });
    let mut out = Vec::new();
    connack.encode(ProtocolVersion::V5, &mut out);
    assert_eq!(out.len(), connack.encoded_len(ProtocolVersion::V5));
    let Ok(Status::Complete((Packet::Connack(c), _))) =
        decode(&out, Some(ProtocolVersion::V5), u32::MAX)
    else {
        panic!("{out:02x?}");
    };
    assert_eq!(c.properties.receive_maximum(), Some(20));
    assert_eq!(c.properties.maximum_qos(), Some(1));
    assert_eq!(c.properties.assigned_client_identifier(), Some("auto-7"));
    assert_eq!(
        c.properties.user_properties().collect::<Vec<_>>(),
        [("region", "eu")]
    );

    // The same packet for a 3.1.1 client drops the properties.
    let mut v3 = Vec::new();
    connack.encode(ProtocolVersion::V311, &mut v3);
    assert_eq!(v3, [0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn publish_encode_for_v311_drops_properties() {
    let mut props = PropertiesBuf::new();
    props.push(Property::MessageExpiryInterval(5));
    let p = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "a",
        packet_id: Some(pid(0x0102)),
        properties: props.as_properties(),
        payload: b"x",
    };
    let mut out = Vec::new();
    p.encode(ProtocolVersion::V311, &mut out);
    assert_eq!(out, [0x3C, 0x06, 0x00, 0x01, b'a', 0x01, 0x02, b'x']);
    out.clear();
    p.encode(ProtocolVersion::V5, &mut out);
    assert_eq!(
        out,
        [0x3C, 0x0C, 0x00, 0x01, b'a', 0x01, 0x02, 0x05, 0x02, 0, 0, 0, 5, b'x']
    );
    // Through `Packet::encode` as well, appending to what is already in the buffer.
    let mut buf = vec![0xEE];
    Packet::Publish(p.clone()).encode(ProtocolVersion::V5, &mut buf);
    assert_eq!(&buf[1..], &out[..]);
}

#[test]
fn subscription_options_byte_round_trips() {
    for b in 0..=0xFFu8 {
        match SubscriptionOptions::from_byte(b, ProtocolVersion::V5) {
            Ok(o) => assert_eq!(o.to_byte(ProtocolVersion::V5), b),
            Err(e) => assert!(b & 0xC0 != 0 || b & 3 == 3 || (b >> 4) & 3 == 3, "{b}: {e}"),
        }
    }
}

#[test]
fn every_error_has_a_message_and_a_failure_reason_code() {
    let errors = [
        DecodeError::MalformedVariableInt,
        DecodeError::PacketTooLarge { size: 2, max: 1 },
        DecodeError::ReservedPacketType(0),
        DecodeError::InvalidFlags {
            packet_type: 1,
            flags: 1,
        },
        DecodeError::InvalidQoS,
        DecodeError::Truncated,
        DecodeError::TrailingBytes,
        DecodeError::InvalidUtf8,
        DecodeError::DisallowedCodePoint,
        DecodeError::InvalidProtocolName,
        DecodeError::UnsupportedProtocolVersion(6),
        DecodeError::ReservedConnectFlag,
        DecodeError::InvalidWillFlags,
        DecodeError::PasswordWithoutUsername,
        DecodeError::ReservedConnackFlag,
        DecodeError::InvalidTopicName,
        DecodeError::TopicNameMissing,
        DecodeError::InvalidTopicFilter,
        DecodeError::ZeroPacketId,
        DecodeError::NoTopicFilters,
        DecodeError::NoReasonCodes,
        DecodeError::ReservedSubscriptionBits,
        DecodeError::InvalidSubscriptionOptions,
        DecodeError::InvalidPropertyId(0),
        DecodeError::DuplicateProperty(0x11),
        DecodeError::PropertyNotAllowed(0x18),
        DecodeError::InvalidPropertyValue(0x21),
        DecodeError::InvalidReasonCode {
            packet_type: 4,
            code: 0x05,
        },
    ];
    for e in errors {
        assert!(!e.to_string().is_empty());
        assert!(e.reason_code().is_error(), "{e:?}");
    }
}

/// Every single-byte mutation of every vector, plus pseudo-random buffers, through the
/// fuzz harness: no panic, and whatever decodes re-encodes to something that decodes the
/// same.
#[test]
fn mutated_vectors_never_panic_and_round_trip() {
    for v in all_vectors() {
        fuzzing::decode_round_trip(&v.bytes);
        for i in 0..v.bytes.len() {
            for x in [
                0x00,
                0x01,
                0x7F,
                0x80,
                0xFF,
                v.bytes[i] ^ 0x02,
                v.bytes[i] ^ 0x40,
            ] {
                let mut m = v.bytes.clone();
                m[i] = x;
                fuzzing::decode_round_trip(&m);
            }
        }
        fuzzing::decode_round_trip(&v.bytes[..v.bytes.len() / 2]);
    }
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = buf.first_mut() {
            // Favour valid types so bodies get exercised, and keep lengths plausible.
            *first = (*first & 0xF0).max(0x10) | (*first & 0x0F);
        }
        if buf.len() > 1 {
            buf[1] = (len - 2) as u8;
        }
        fuzzing::decode_round_trip(&buf);
    }
}
