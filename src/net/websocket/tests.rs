use super::fuzzing::{push_client_frame, REQUEST};
use super::*;

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A CONNECT (3.1.1, client id "a") and a PINGREQ: two MQTT packets.
const CONNECT: &[u8] = &[
    0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'a',
];
const PINGREQ: &[u8] = &[0xC0, 0x00];

fn open() -> WsServer {
    let mut ws = WsServer::new(4096);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    ws.read(REQUEST, &mut app, &mut wire).unwrap();
    assert!(wire.starts_with(b"HTTP/1.1 101 "), "{}", text(&wire));
    assert!(app.is_empty());
    ws
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_client_frame(&mut out, b0, payload, MASK);
    out
}

fn handshake(request: &str) -> (Result<(), WsError>, String) {
    let mut ws = WsServer::new(4096);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    let r = ws.read(request.as_bytes(), &mut app, &mut wire);
    (r, text(&wire))
}

/// Reads `input` after the handshake; returns (MQTT bytes, answer, result, closed).
fn after_open(input: &[u8]) -> (Vec<u8>, Vec<u8>, Result<(), WsError>, bool) {
    let mut ws = open();
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    let r = ws.read(input, &mut app, &mut wire);
    (app, wire, r, ws.is_closed())
}

#[test]
fn handshake_answers_the_rfc_example_key() {
    // RFC 6455 section 1.3: key dGhlIHNhbXBsZSBub25jZQ== -> s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
    let (r, answer) = handshake(std::str::from_utf8(REQUEST).unwrap());
    assert_eq!(r, Ok(()));
    assert!(answer.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(answer.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"));
    assert!(answer.ends_with("\r\n\r\n"));
}

fn request_with(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[test]
fn handshake_chooses_the_offered_mqtt_subprotocol() {
    let (r, a) = handshake(&request_with("Sec-WebSocket-Protocol: mqttv3.1\r\n"));
    assert_eq!(r, Ok(()));
    assert!(a.contains("Sec-WebSocket-Protocol: mqttv3.1\r\n"), "{a}");
    let (r, a) = handshake(&request_with("Sec-WebSocket-Protocol: chat, mqtt\r\n"));
    assert_eq!(r, Ok(()));
    assert!(a.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{a}");
}

#[test]
fn handshake_without_subprotocol_is_accepted_without_one() {
    let (r, a) = handshake(&request_with(""));
    assert_eq!(r, Ok(()));
    assert!(a.starts_with("HTTP/1.1 101 "), "{a}");
    assert!(!a.contains("Sec-WebSocket-Protocol"), "{a}");
}

#[test]
fn handshake_with_only_other_subprotocols_is_refused() {
    let (r, a) = handshake(&request_with("Sec-WebSocket-Protocol: chat, MQTT\r\n"));
    assert_eq!(r, Err(WsError::NoMqttSubprotocol));
    assert!(a.starts_with("HTTP/1.1 400 "), "{a}");
}

#[test]
fn plain_http_request_gets_400() {
    let (r, a) = handshake("GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r, Err(WsError::NotUpgrade));
    assert!(a.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{a}");
}

#[test]
fn handshake_errors_get_their_status() {
    let bad_version = request_with("").replace("Version: 13", "Version: 8");
    let (r, a) = handshake(&bad_version);
    assert_eq!(r, Err(WsError::BadVersion));
    assert!(a.starts_with("HTTP/1.1 426 ") && a.contains("Sec-WebSocket-Version: 13\r\n"));
    let short_key = request_with("").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
    assert!(matches!(
        handshake(&short_key).0,
        Err(WsError::BadRequest(_))
    ));
    let post = request_with("").replace("GET", "POST");
    assert!(matches!(handshake(&post).0, Err(WsError::BadRequest(_))));
    let no_conn = request_with("").replace("keep-alive, Upgrade", "keep-alive");
    assert!(matches!(handshake(&no_conn).0, Err(WsError::BadRequest(_))));
    let (r, a) = handshake("\x10\x0d\x00\x04MQTT\r\n\r\n");
    assert!(matches!(r, Err(WsError::BadRequest(_))), "{r:?}");
    assert!(a.starts_with("HTTP/1.1 400 "));
}

#[test]
fn oversize_header_gets_431_without_waiting_for_its_end() {
    let mut ws = WsServer::new(100);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    ws.read(b"GET / HTTP/1.1\r\n", &mut app, &mut wire).unwrap();
    ws.read(line, &mut app, &mut wire).unwrap();
    assert!(wire.is_empty());
    assert_eq!(
        ws.read(line, &mut app, &mut wire),
        Err(WsError::HeaderTooLarge)
    );
    assert!(text(&wire).starts_with("HTTP/1.1 431 "));
    assert!(ws.is_closed());
    assert_eq!(ws.buffered(), 0, "request buffer kept after the close");
}

#[test]
fn header_of_exactly_the_limit_is_accepted() {
    let mut ws = WsServer::new(REQUEST.len());
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    assert_eq!(ws.read(REQUEST, &mut app, &mut wire), Ok(()));
    let mut ws = WsServer::new(REQUEST.len() - 1);
    wire.clear();
    assert_eq!(
        ws.read(REQUEST, &mut app, &mut wire),
        Err(WsError::HeaderTooLarge)
    );
}

#[test]
fn handshake_buffer_is_freed_once_open() {
    let mut ws = WsServer::new(4096);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    ws.read(&REQUEST[..10], &mut app, &mut wire).unwrap();
    assert!(ws.buffered() > 0);
    ws.read(&REQUEST[10..], &mut app, &mut wire).unwrap();
    assert_eq!(ws.buffered(), 0);
    assert!(ws.is_open());
}

/// The whole conversation (handshake, then frames) split at every byte boundary, and fed
/// one byte at a time, gives the same MQTT bytes and answers as one read.
#[test]
fn split_at_every_byte_boundary() {
    let mut stream = REQUEST.to_vec();
    // Two packets in one frame; a packet split over a fragmented message with a ping
    // between its fragments; a 300-byte frame (16-bit length); an empty binary frame.
    let mut two = CONNECT.to_vec();
    two.extend_from_slice(PINGREQ);
    stream.extend(frame(0x82, &two));
    stream.extend(frame(0x02, &CONNECT[..5]));
    stream.extend(frame(0x89, b"hi"));
    stream.extend(frame(0x00, &CONNECT[5..9]));
    stream.extend(frame(0x80, &CONNECT[9..]));
    let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    stream.extend(frame(0x82, &big));
    stream.extend(frame(0x82, &[]));
    let mut want_app = two.clone();
    want_app.extend_from_slice(CONNECT);
    want_app.extend_from_slice(&big);

    let mut ws = WsServer::new(4096);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    ws.read(&stream, &mut app, &mut wire).unwrap();
    assert_eq!(app, want_app);
    let want_wire = wire.clone();
    assert!(want_wire.ends_with(&[0x8A, 2, b'h', b'i']), "pong missing");

    for cut in 0..=stream.len() {
        let mut ws = WsServer::new(4096);
        let (mut app, mut wire) = (Vec::new(), Vec::new());
        ws.read(&stream[..cut], &mut app, &mut wire).unwrap();
        ws.read(&stream[cut..], &mut app, &mut wire).unwrap();
        assert_eq!(app, want_app, "cut at {cut}");
        assert_eq!(wire, want_wire, "cut at {cut}");
    }
    let mut ws = WsServer::new(4096);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    for b in &stream {
        ws.read(std::slice::from_ref(b), &mut app, &mut wire)
            .unwrap();
    }
    assert_eq!(app, want_app);
    assert_eq!(wire, want_wire);
}

#[test]
fn unmasking_is_right_at_every_phase_and_length() {
    for len in 0..40usize {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        for pos in 0..4 {
            let mut buf: Vec<u8> = payload
                .iter()
                .enumerate()
                .map(|(i, &x)| x ^ MASK[(pos + i) & 3])
                .collect();
            unmask(&mut buf, MASK, pos);
            assert_eq!(buf, payload, "len {len} pos {pos}");
        }
    }
}

#[test]
fn unmasked_frame_closes_with_1002() {
    let mut input = vec![0x82, 0x02];
    input.extend_from_slice(PINGREQ);
    let (app, wire, r, closed) = after_open(&input);
    assert_eq!(r, Err(WsError::Unmasked));
    assert!(closed && app.is_empty());
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xEA]);
}

#[test]
fn text_frame_closes_with_1003() {
    let (app, wire, r, _) = after_open(&frame(0x81, b"hello"));
    assert_eq!(r, Err(WsError::Text));
    assert!(app.is_empty());
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xEB]);
}

#[test]
fn frame_of_2_pow_63_bytes_closes_with_1009_without_allocating() {
    let mut input = vec![0x82, 0x80 | 127];
    input.extend_from_slice(&(1u64 << 63).to_be_bytes());
    input.extend_from_slice(&MASK);
    let mut ws = open();
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    assert_eq!(
        ws.read(&input, &mut app, &mut wire),
        Err(WsError::FrameTooLarge)
    );
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xF1]);
    assert_eq!(app.capacity(), 0);
    assert_eq!(ws.buffered(), 0);
}

#[test]
fn ping_is_answered_with_a_pong_carrying_its_payload() {
    let (app, wire, r, closed) = after_open(&frame(0x89, b"abc"));
    assert_eq!(r, Ok(()));
    assert!(!closed && app.is_empty());
    assert_eq!(wire, [0x8A, 3, b'a', b'b', b'c']);
    // A pong from the client is ignored.
    let (_, wire, r, _) = after_open(&frame(0x8A, b"x"));
    assert_eq!((r, wire.len()), (Ok(()), 0));
}

#[test]
fn close_is_answered_with_a_close_and_later_input_ignored() {
    let mut input = frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']);
    input.extend(frame(0x82, CONNECT));
    let (app, wire, r, closed) = after_open(&input);
    assert_eq!(r, Ok(()));
    assert!(closed);
    assert!(app.is_empty(), "data after close was passed on");
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xE8]);
    // An empty close gets an empty close.
    let (_, wire, _, closed) = after_open(&frame(0x88, &[]));
    assert!(closed);
    assert_eq!(wire, [0x88, 0x00]);
}

#[test]
fn bad_close_frames_are_protocol_errors() {
    let (_, wire, r, _) = after_open(&frame(0x88, &[0x03]));
    assert!(matches!(r, Err(WsError::Protocol(_))));
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xEA]);
    let (_, wire, _, _) = after_open(&frame(0x88, &[0x03, 0xED]));
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xEA], "1005 may not be sent");
    let (_, wire, _, _) = after_open(&frame(0x88, &[0x03, 0xE8, 0xFF]));
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xEF], "bad UTF-8 reason is 1007");
}

#[test]
fn control_frames_over_125_bytes_or_fragmented_are_refused() {
    let (_, wire, r, _) = after_open(&frame(0x89, &[0; 126]));
    assert_eq!(r, Err(WsError::Protocol("control frame over 125 bytes")));
    assert_eq!(wire, [0x88, 0x02, 0x03, 0xEA]);
    let (_, _, r, _) = after_open(&frame(0x09, b"x"));
    assert_eq!(r, Err(WsError::Protocol("fragmented control frame")));
    // 125 bytes is fine.
    let (_, wire, r, _) = after_open(&frame(0x89, &[7; 125]));
    assert_eq!(r, Ok(()));
    assert_eq!(wire.len(), 2 + 125);
}

#[test]
fn fragmentation_rules_are_enforced() {
    let (_, _, r, _) = after_open(&frame(0x80, b"x"));
    assert!(matches!(r, Err(WsError::Protocol(_))), "lone continuation");
    let mut input = frame(0x02, b"x");
    input.extend(frame(0x82, b"y"));
    let (app, _, r, _) = after_open(&input);
    assert!(
        matches!(r, Err(WsError::Protocol(_))),
        "interleaved message"
    );
    assert_eq!(app, b"x");
    let (_, _, r, _) = after_open(&frame(0xC2, b"x"));
    assert!(matches!(r, Err(WsError::Protocol(_))), "RSV1 set");
    let (_, _, r, _) = after_open(&frame(0x83, b"x"));
    assert!(matches!(r, Err(WsError::Protocol(_))), "reserved opcode");
}

#[test]
fn write_frames_mqtt_bytes_with_the_shortest_length() {
    let mut ws = open();
    let mut wire = Vec::new();
    ws.write(PINGREQ, &mut wire);
    assert_eq!(wire, [0x82, 0x02, 0xC0, 0x00]);
    for (len, hdr) in [(125usize, 2usize), (126, 4), (65535, 4), (65536, 10)] {
        wire.clear();
        ws.write(&vec![0xAB; len], &mut wire);
        assert_eq!(wire.len(), hdr + len, "len {len}");
        // Our own decoder reads it back (after masking it as a client would).
        let mut client = Vec::new();
        push_client_frame(&mut client, wire[0], &wire[hdr..], MASK);
        let mut app = Vec::new();
        let mut back = Vec::new();
        open().read(&client, &mut app, &mut back).unwrap();
        assert_eq!(app.len(), len);
    }
    ws.write(&[], &mut wire);
    let mut closed = open();
    closed
        .read(&frame(0x88, &[]), &mut Vec::new(), &mut Vec::new())
        .unwrap();
    wire.clear();
    closed.write(PINGREQ, &mut wire);
    assert!(wire.is_empty(), "data frame after close");
}

#[test]
fn one_mib_message_is_passed_through_without_growing_state() {
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let input = frame(0x82, &payload);
    let mut ws = open();
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    // In 64 KiB reads, as the loop would.
    for chunk in input.chunks(65536) {
        ws.read(chunk, &mut app, &mut wire).unwrap();
        assert_eq!(ws.buffered(), 0);
    }
    assert!(app == payload);
    assert!(wire.is_empty());
}

#[test]
fn first_frame_in_the_same_read_as_the_handshake_is_read() {
    let mut input = REQUEST.to_vec();
    input.extend(frame(0x82, CONNECT));
    let mut ws = WsServer::new(4096);
    let (mut app, mut wire) = (Vec::new(), Vec::new());
    ws.read(&input, &mut app, &mut wire).unwrap();
    assert_eq!(app, CONNECT);
}

#[test]
fn fuzz_harness_checks_generated_frames() {
    // Generated mode with a ping, a fragmented message and split points.
    let data = [
        0x01, 0x02, 0x00, 0x50, 0x00, 0x90, // mode 1, two cuts at 80 and 144
        0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, // ping + 3-byte fragment
        0x05, 0, 0, 0, 0, 20, 21, 22, 23, 24, // final 5-byte continuation
    ];
    super::fuzzing::websocket(&data);
    let (stream, payload, pings) = super::fuzzing::frames(&data[6..]);
    assert_eq!(pings, 1);
    assert_eq!(payload, [9, 10, 11, 20, 21, 22, 23, 24]);
    assert!(stream.len() > REQUEST.len());
}

#[test]
fn close_from_our_side_sends_last_bytes_then_close_once() {
    let mut ws = open();
    let mut wire = Vec::new();
    ws.close(&[0x20, 0x02, 0x00, 0x05], close_code::NORMAL, &mut wire);
    assert_eq!(wire, [0x82, 4, 0x20, 0x02, 0x00, 0x05, 0x88, 2, 0x03, 0xE8]);
    assert!(ws.is_closed());
    wire.clear();
    ws.close(&[], close_code::NORMAL, &mut wire);
    assert!(wire.is_empty(), "second close frame");
    // Before the handshake: nothing (the peer does not speak WebSocket yet).
    let mut fresh = WsServer::new(4096);
    fresh.close(&[1], close_code::NORMAL, &mut wire);
    assert!(wire.is_empty());
}

#[test]
fn pings_from_a_peer_that_reads_nothing_do_not_pile_up_pongs() {
    let mut ws = open();
    let ping = frame(0x89, &[0x55; 125]);
    let mut wire = Vec::new();
    for _ in 0..10_000 {
        ws.read(&ping, &mut Vec::new(), &mut wire).unwrap();
    }
    assert!(
        wire.len() < PONG_BACKLOG + 127,
        "{} bytes of pongs",
        wire.len()
    );
    assert!(!ws.is_closed());
}
