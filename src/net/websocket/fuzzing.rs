//! The `websocket` fuzz harness (target `websocket`, entry `crate::fuzzing::websocket`).
//! Built only for `cfg(fuzzing)` and tests.
//!
//! Properties:
//! - the layer never panics, and once it reports an error or a close it stays closed;
//! - split invariance: the stream fed in arbitrary chunks gives exactly the MQTT bytes, the
//!   bytes for the peer and the outcome of one whole read;
//! - round trip: MQTT bytes cut into valid masked frames (fragmented messages, pings in
//!   between) come out unchanged, and every ping is answered with its pong.

use super::{WsError, WsServer};
use crate::protocol::fuzzing::Bytes;

/// A valid upgrade request offering `mqtt`.
pub(crate) const REQUEST: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: mqtt\r\n\r\n";

/// Target `websocket`: byte 0 picks the mode (even: raw stream, odd: generated frames) and
/// the header limit; byte 1 how many split points (16-bit offsets) follow.
pub fn websocket(data: &[u8]) {
    let mut b = Bytes { data };
    let mode = b.u8();
    let max_header = if mode & 2 == 0 { 4096 } else { 64 };
    let cuts = usize::from(b.u8() % 16);
    let mut points: Vec<usize> = (0..cuts).map(|_| usize::from(b.u16())).collect();
    let stream: Vec<u8> = if mode & 1 == 0 {
        // Raw: after a valid handshake unless bit 2 asks for a raw request too.
        let mut s = if mode & 4 == 0 {
            REQUEST.to_vec()
        } else {
            Vec::new()
        };
        s.extend_from_slice(b.data);
        s
    } else {
        let (stream, payload, pings) = frames(b.data);
        let (app, wire, result) = feed_whole(max_header.max(REQUEST.len()), &stream);
        assert_eq!(result, Ok(()), "valid frames refused");
        assert_eq!(app, payload, "payload changed on its way through");
        assert_eq!(count_pongs(&wire), pings, "pings without pongs");
        stream
    };
    points.retain(|&p| p <= stream.len());
    points.sort_unstable();

    let (want_app, want_wire, want_result) = feed_whole(max_header, &stream);
    let mut ws = WsServer::new(max_header);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    let mut result = Ok(());
    let mut start = 0;
    for end in points.into_iter().chain([stream.len()]) {
        if end < start {
            continue;
        }
        let r = ws.read(&stream[start..end], &mut app, &mut wire);
        if r.is_err() {
            assert!(ws.is_closed(), "error without close");
            result = r;
            break;
        }
        if ws.is_closed() {
            // Further input is ignored.
            assert_eq!(ws.read(&stream[end..], &mut app, &mut wire), Ok(()));
            break;
        }
        start = end;
    }
    assert_eq!(result, want_result, "chunked read ended differently");
    assert_eq!(app, want_app, "chunked read gave other MQTT bytes");
    assert_eq!(wire, want_wire, "chunked read answered differently");
}

/// Reads `stream` in one call.
fn feed_whole(max_header: usize, stream: &[u8]) -> (Vec<u8>, Vec<u8>, Result<(), WsError>) {
    let mut ws = WsServer::new(max_header);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    let r = ws.read(stream, &mut app, &mut wire);
    (app, wire, r)
}

/// Builds a handshake and valid client frames from `data`: returns the stream, the MQTT
/// bytes it carries and how many pings it holds. Each step takes a control byte: low bits
/// the frame length, bit 7 a ping before it, bit 6 "message continues".
pub(crate) fn frames(data: &[u8]) -> (Vec<u8>, Vec<u8>, usize) {
    let mut b = Bytes { data };
    let mut stream = REQUEST.to_vec();
    let mut payload = Vec::new();
    let mut pings = 0;
    let mut in_message = false;
    while !b.data.is_empty() {
        let ctl = b.u8();
        if ctl & 0x80 != 0 {
            let mask = [b.u8(), b.u8(), b.u8(), b.u8()];
            push_client_frame(&mut stream, 0x89, &[1, 2, 3], mask);
            pings += 1;
        }
        let len = usize::from(ctl & 0x3F).min(b.data.len());
        let more = ctl & 0x40 != 0;
        let mask = [b.u8(), b.u8(), b.u8(), b.u8()];
        let len = len.min(b.data.len());
        let (chunk, rest) = b.data.split_at(len);
        b.data = rest;
        let op = if in_message { 0x0 } else { 0x2 };
        let fin = if more { 0 } else { 0x80 };
        push_client_frame(&mut stream, fin | op, chunk, mask);
        payload.extend_from_slice(chunk);
        in_message = more;
    }
    if in_message {
        push_client_frame(&mut stream, 0x80, &[], [0; 4]);
    }
    (stream, payload, pings)
}

/// Appends a masked client frame with first byte `b0`.
pub(crate) fn push_client_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(b0);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, &x)| x ^ mask[i & 3]));
}

/// Counts pong frames in what the server wrote after its `101` answer.
fn count_pongs(wire: &[u8]) -> usize {
    let Some(end) = wire.windows(4).position(|w| w == b"\r\n\r\n") else {
        return 0;
    };
    let mut rest = &wire[end + 4..];
    let mut n = 0;
    while rest.len() >= 2 {
        let len = usize::from(rest[1] & 0x7F);
        if rest[0] == 0x8A {
            n += 1;
        }
        rest = &rest[(2 + len).min(rest.len())..];
    }
    n
}
