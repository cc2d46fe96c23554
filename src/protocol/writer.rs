//! Appending MQTT data types to an output buffer, and their encoded sizes.
//!
//! Encoding is infallible: callers keep strings and binary fields at most 65535 bytes and
//! lengths within the variable byte integer range; longer values are truncated in the
//! length prefix (a caller bug, never a panic).

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Variable byte integer, shortest form [MQTT-1.5.5-1].
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let byte = (v % 128) as u8;
        v /= 128;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    put_u16(out, b.len() as u16);
    out.extend_from_slice(b);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bin(out, s.as_bytes());
}

/// Fixed header: first byte and remaining length.
pub(crate) fn put_fixed_header(out: &mut Vec<u8>, first: u8, remaining: usize) {
    out.push(first);
    put_varint(out, remaining);
}

/// Whole packet size for a body of `remaining` bytes.
pub(crate) fn packet_len(remaining: usize) -> usize {
    1 + varint_len(remaining) + remaining
}
