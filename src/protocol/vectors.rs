//! Data-driven codec tests over the hex vectors in `tests/data/codec/` (shared with the
//! fuzz seed corpus).
//!
//! File format: a vector starts with `=== name`; then `key: value` header lines
//! (`version: 3.1 | 3.1.1 | 5.0 | none`, and for malformed vectors `error: VariantName`
//! or a full `Debug` form, optionally `reason: 0xNN`; `canonical: no` marks a valid
//! vector whose re-encoding is a different, shorter form); then hex lines, `#` starting a
//! comment. Lines before the first `===` are the file's own comment.
//!
//! Every valid vector must decode completely, re-encode to the same bytes with the same
//! `encoded_len`, be `Partial` at every strict prefix (with `needed` the full size once
//! the fixed header is complete), stop at its own length when more bytes follow, and fit a
//! `max_packet_size` of exactly its size but not one less. Every malformed vector must
//! fail with the named error.

use super::*;

/// The vector files, compiled in so the test needs no I/O at run time.
pub(crate) const FILES: &[(&str, &str)] = &[
    (
        "valid_v3.txt",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/codec/valid_v3.txt"
        )),
    ),
    (
        "valid_v5.txt",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/codec/valid_v5.txt"
        )),
    ),
    (
        "malformed_v3.txt",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/codec/malformed_v3.txt"
        )),
    ),
    (
        "malformed_v5.txt",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/codec/malformed_v5.txt"
        )),
    ),
];

#[derive(Debug, Clone)]
pub(crate) struct Vector {
    pub file: &'static str,
    pub name: String,
    pub version: Option<ProtocolVersion>,
    pub error: Option<String>,
    pub reason: Option<u8>,
    pub canonical: bool,
    pub bytes: Vec<u8>,
}

impl Vector {
    fn label(&self) -> String {
        format!("{}: {}", self.file, self.name)
    }
}

pub(crate) fn parse_file(file: &'static str, text: &str) -> Vec<Vector> {
    let mut out: Vec<Vector> = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("===") {
            out.push(Vector {
                file,
                name: name.trim().to_string(),
                version: None,
                error: None,
                reason: None,
                canonical: true,
                bytes: Vec::new(),
            });
            continue;
        }
        let Some(v) = out.last_mut() else { continue };
        let data = line.split('#').next().unwrap_or("").trim();
        if data.is_empty() {
            continue;
        }
        if let Some((key, value)) = data.split_once(':') {
            let value = value.trim();
            match key.trim() {
                "version" => {
                    v.version = match value {
                        "3.1" => Some(ProtocolVersion::V31),
                        "3.1.1" => Some(ProtocolVersion::V311),
                        "5.0" => Some(ProtocolVersion::V5),
                        "none" => None,
                        other => panic!("{file}:{}: bad version {other}", lineno + 1),
                    }
                }
                "error" => v.error = Some(value.to_string()),
                "reason" => {
                    let hex = value.trim_start_matches("0x");
                    v.reason = Some(u8::from_str_radix(hex, 16).expect("reason hex"));
                }
                "canonical" => v.canonical = value != "no",
                other => panic!("{file}:{}: unknown key {other}", lineno + 1),
            }
            continue;
        }
        for tok in data.split_whitespace() {
            let b = u8::from_str_radix(tok, 16)
                .unwrap_or_else(|_| panic!("{file}:{}: bad hex {tok:?}", lineno + 1));
            v.bytes.push(b);
        }
    }
    out
}

pub(crate) fn all_vectors() -> Vec<Vector> {
    FILES
        .iter()
        .flat_map(|(f, text)| parse_file(f, text))
        .collect()
}

/// Version used to re-encode a decoded packet: a CONNECT carries its own.
fn encode_version(p: &Packet<'_>, v: Option<ProtocolVersion>) -> ProtocolVersion {
    match p {
        Packet::Connect(c) => c.version,
        _ => v.unwrap_or(ProtocolVersion::V311),
    }
}

fn header_len(bytes: &[u8]) -> usize {
    1 + bytes[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1
}

fn check_valid(v: &Vector) {
    let label = v.label();
    let bytes = &v.bytes;
    let n = bytes.len();
    let (packet, used) = match decode(bytes, v.version, u32::MAX) {
        Ok(Status::Complete(x)) => x,
        other => panic!("{label}: expected a packet, got {other:?}"),
    };
    assert_eq!(used, n, "{label}: consumed length");

    let ev = encode_version(&packet, v.version);
    let mut out = Vec::new();
    packet.encode(ev, &mut out);
    if v.canonical {
        assert_eq!(out, *bytes, "{label}: re-encoding differs");
        assert_eq!(packet.encoded_len(ev), n, "{label}: encoded_len");
    } else {
        assert_ne!(
            out, *bytes,
            "{label}: marked non-canonical but re-encodes the same"
        );
        assert_eq!(packet.encoded_len(ev), out.len(), "{label}: encoded_len");
        match decode(&out, v.version, u32::MAX) {
            Ok(Status::Complete((again, m))) => {
                assert_eq!(again, packet, "{label}: canonical form decodes differently");
                assert_eq!(m, out.len());
            }
            other => panic!("{label}: canonical re-encoding does not decode: {other:?}"),
        }
    }

    let hl = header_len(bytes);
    for k in 0..n {
        let expected = if k >= hl { n } else { k + 1 };
        match decode(&bytes[..k], v.version, u32::MAX) {
            Ok(Status::Partial { needed }) => {
                assert_eq!(needed, expected, "{label}: needed at prefix {k}")
            }
            other => panic!("{label}: prefix {k}: expected Partial, got {other:?}"),
        }
    }

    for suffix in [bytes.as_slice(), &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF], &[0x00]] {
        let mut more = bytes.clone();
        more.extend_from_slice(suffix);
        match decode(&more, v.version, u32::MAX) {
            Ok(Status::Complete((p, used))) => {
                assert_eq!(used, n, "{label}: stops at its own length");
                assert_eq!(p, packet, "{label}: same packet with bytes after it");
            }
            other => panic!("{label}: with trailing data: {other:?}"),
        }
    }

    assert!(
        matches!(decode(bytes, v.version, n as u32), Ok(Status::Complete(_))),
        "{label}: fits max_packet_size == its size"
    );
    assert_eq!(
        decode(&bytes[..hl], v.version, n as u32 - 1),
        Err(DecodeError::PacketTooLarge {
            size: n,
            max: n as u32 - 1
        }),
        "{label}: too large, from the fixed header alone"
    );
}

fn check_malformed(v: &Vector, expected: &str) {
    let label = v.label();
    let err = match decode(&v.bytes, v.version, u32::MAX) {
        Err(e) => e,
        other => panic!("{label}: expected {expected}, got {other:?}"),
    };
    let debug = format!("{err:?}");
    if expected.contains(['(', '{']) {
        assert_eq!(debug, expected, "{label}");
    } else {
        let name = debug.split([' ', '(', '{']).next().unwrap_or("");
        assert_eq!(name, expected, "{label}: got {debug}");
    }
    if let Some(r) = v.reason {
        assert_eq!(err.reason_code(), ReasonCode(r), "{label}: reason code");
    }
    // Prefixes must never panic, and cannot complete a packet.
    for k in 0..v.bytes.len() {
        assert!(
            !matches!(
                decode(&v.bytes[..k], v.version, u32::MAX),
                Ok(Status::Complete(_))
            ),
            "{label}: prefix {k} completed"
        );
    }
}

#[test]
fn every_vector_file_parses_and_is_nonempty() {
    for (f, text) in FILES {
        let vs = parse_file(f, text);
        assert!(!vs.is_empty(), "{f} has no vectors");
        for v in &vs {
            assert!(!v.bytes.is_empty(), "{}: no bytes", v.label());
        }
    }
}

#[test]
fn valid_vectors_round_trip() {
    let vs: Vec<_> = all_vectors()
        .into_iter()
        .filter(|v| v.error.is_none())
        .collect();
    assert!(vs.len() >= 30, "only {} valid vectors", vs.len());
    for v in &vs {
        check_valid(v);
    }
}

#[test]
fn malformed_vectors_fail_with_their_error() {
    let vs: Vec<_> = all_vectors()
        .into_iter()
        .filter(|v| v.error.is_some())
        .collect();
    assert!(vs.len() >= 30, "only {} malformed vectors", vs.len());
    for v in &vs {
        check_malformed(v, v.error.as_deref().unwrap_or_default());
    }
}

#[test]
fn every_packet_type_has_a_valid_vector_per_version() {
    use std::collections::HashSet;
    let mut seen: HashSet<(u8, bool)> = HashSet::new();
    for v in all_vectors().iter().filter(|v| v.error.is_none()) {
        if let Ok(Status::Complete((p, _))) = decode(&v.bytes, v.version, u32::MAX) {
            let v5 = encode_version(&p, v.version).is_v5();
            seen.insert((p.packet_type() as u8, v5));
        }
    }
    for t in 1..=15u8 {
        if t != 15 {
            assert!(seen.contains(&(t, false)), "no 3.1.1 vector for type {t}");
        }
        assert!(seen.contains(&(t, true)), "no 5.0 vector for type {t}");
    }
}

/// Feeding a stream one byte at a time gives the same packets as decoding it whole.
#[test]
fn byte_at_a_time_stream_matches_whole_buffer() {
    for version in [Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)] {
        let stream: Vec<u8> = all_vectors()
            .iter()
            .filter(|v| v.error.is_none() && v.version == version)
            .flat_map(|v| v.bytes.clone())
            .collect();
        assert!(!stream.is_empty());

        let mut whole = Vec::new();
        let mut rest = stream.as_slice();
        while !rest.is_empty() {
            match decode(rest, version, u32::MAX) {
                Ok(Status::Complete((p, n))) => {
                    whole.push(format!("{p:?}"));
                    rest = &rest[n..];
                }
                other => panic!("whole-buffer decode: {other:?}"),
            }
        }

        let mut pieces = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for &b in &stream {
            buf.push(b);
            if let Some(n) = match decode(&buf, version, u32::MAX) {
                Ok(Status::Complete((p, n))) => {
                    pieces.push(format!("{p:?}"));
                    Some(n)
                }
                Ok(Status::Partial { needed }) => {
                    assert!(needed > buf.len());
                    None
                }
                Err(e) => panic!("byte-at-a-time decode: {e}"),
            } {
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(pieces, whole);
    }
}
