//! The opening handshake, server side [RFC 6455 4.2]: checks the client's upgrade request
//! and writes the `101 Switching Protocols` answer, or an HTTP error before the close.
//!
//! Sub-protocols: MQTT 3.1.1 section 6 names `mqtt` (`mqttv3.1` for MQTT 3.1 clients); the
//! first of the client's offers that is one of these is chosen and echoed. A client that
//! offers none is accepted without a `Sec-WebSocket-Protocol` answer [RFC 6455 4.2.2] and
//! speaks MQTT all the same. Mosquitto 2.0.11 (libwebsockets 4.1) answers such a client
//! `101` but then binds it to its HTTP handler, so its MQTT bytes are never answered; it
//! drops a client that offers only other sub-protocols without an answer, which we answer
//! `400` instead. Names are compared exactly, as libwebsockets does (`MQTT` is refused).
//!
//! Any path is accepted (Mosquitto ignores it too). A request without `Upgrade: websocket`
//! (a browser fetching a page) gets `400`: no files are served (`http_dir` is refused).

use base64::Engine;
use sha1::{Digest, Sha1};

use super::WsError;

/// [RFC 6455 1.3] appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Header lines parsed at most; more is answered 431 like an oversize header.
const MAX_HEADERS: usize = 48;

/// Checks the request (its header, up to and with the blank line) and appends the `101`
/// answer to `wire`.
pub(super) fn answer(request: &[u8], wire: &mut Vec<u8>) -> Result<(), WsError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(WsError::BadRequest("incomplete request")),
        Err(httparse::Error::TooManyHeaders) => return Err(WsError::HeaderTooLarge),
        Err(_) => return Err(WsError::BadRequest("not an HTTP/1.1 request")),
    }
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut version = None;
    let mut key = None;
    let mut offered = false;
    let mut chosen: Option<&'static str> = None;
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            continue;
        };
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value.trim());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.trim());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                offered = true;
                if chosen.is_none() {
                    chosen = match p {
                        "mqtt" => Some("mqtt"),
                        "mqttv3.1" => Some("mqttv3.1"),
                        _ => None,
                    };
                }
            }
        }
    }
    // [RFC 6455 4.2.1] checks, in the order a plain HTTP client is best told about.
    if !upgrade {
        return Err(WsError::NotUpgrade);
    }
    if req.method != Some("GET") {
        return Err(WsError::BadRequest("method is not GET"));
    }
    if req.version != Some(1) {
        return Err(WsError::BadRequest("not HTTP/1.1"));
    }
    if !connection_upgrade {
        return Err(WsError::BadRequest("no Connection: Upgrade"));
    }
    if version != Some("13") {
        return Err(WsError::BadVersion);
    }
    let Some(key) = key else {
        return Err(WsError::BadRequest("no Sec-WebSocket-Key"));
    };
    // [RFC 6455 4.2.1 item 5] the key is 16 random bytes, base64-encoded.
    let engine = base64::engine::general_purpose::STANDARD;
    if !engine.decode(key).is_ok_and(|k| k.len() == 16) {
        return Err(WsError::BadRequest(
            "Sec-WebSocket-Key is not 16 bytes in base64",
        ));
    }
    if offered && chosen.is_none() {
        return Err(WsError::NoMqttSubprotocol);
    }
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    let accept = engine.encode(sha.finalize());
    wire.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    wire.extend_from_slice(b"Sec-WebSocket-Accept: ");
    wire.extend_from_slice(accept.as_bytes());
    wire.extend_from_slice(b"\r\n");
    if let Some(p) = chosen {
        wire.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        wire.extend_from_slice(p.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends the HTTP answer to a refused handshake; the connection closes after it.
pub(super) fn refuse(wire: &mut Vec<u8>, err: WsError) {
    let status: &[u8] = match err {
        WsError::HeaderTooLarge => b"431 Request Header Fields Too Large",
        WsError::BadVersion => b"426 Upgrade Required\r\nSec-WebSocket-Version: 13",
        _ => b"400 Bad Request",
    };
    wire.extend_from_slice(b"HTTP/1.1 ");
    wire.extend_from_slice(status);
    wire.extend_from_slice(b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
}

/// Whether the comma-separated header `value` contains `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
