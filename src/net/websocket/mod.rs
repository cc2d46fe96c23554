//! MQTT over WebSockets, server side, sans-IO: bytes from the stream below (plain TCP or
//! decrypted TLS) in, MQTT bytes and bytes for the peer out. The MQTT decoder above is
//! incremental, so this layer only turns frames into a byte stream and back; it never
//! assembles a whole WebSocket message.
//!
//! Layers: `handshake` parses the HTTP upgrade request (RFC 6455 section 4.2) and writes the
//! `101` answer or an HTTP error; this file decodes frames (section 5) and encodes binary
//! frames for the output.
//!
//! Memory: during the handshake the request is buffered up to `websockets_headers_size`
//! (then answered `431`); after it, nothing grows. A frame header (at most 14 bytes) and a
//! control payload (at most 125 bytes, section 5.5) sit in fixed arrays; data payloads are
//! unmasked straight into the caller's `app` buffer as they arrive, so a 1 MiB message costs
//! one pass of XOR over its bytes and no copy of its own, and an idle connection holds no
//! heap memory here. A frame's length is checked against [`MAX_FRAME_LEN`] before anything
//! of it is read.
//!
//! Why not tungstenite: its `WebSocket` is driven through a blocking-style `Read + Write`
//! stream, hands out whole messages (so a 1 MiB message is buffered twice before MQTT sees
//! a byte) and keeps a 128 KiB read buffer per connection by default; its handshake needs
//! the `http` crate. httparse and sha1 do the handshake with a fraction of that.

#[cfg(any(fuzzing, test))]
pub(crate) mod fuzzing;
mod handshake;
#[cfg(test)]
mod tests;

use std::fmt;

/// Largest frame payload accepted (close 1009 above it). Payloads are streamed, so this
/// does not bound memory; it refuses absurd lengths such as 2^63 (whose top bit RFC 6455
/// section 5.2 forbids anyway) before any payload byte is read. 4 GiB is far above the
/// largest MQTT packet (256 MiB), and a frame may carry several packets.
pub(crate) const MAX_FRAME_LEN: u64 = 1 << 32;

/// Largest control frame payload [RFC 6455 5.5].
const MAX_CONTROL_LEN: usize = 125;

/// Bytes waiting for the peer (in the caller's `wire`) beyond which pings get no pong.
pub(crate) const PONG_BACKLOG: usize = 128 * 1024;

/// Close status codes [RFC 6455 7.4.1].
pub(crate) mod close_code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;
}

/// Opcodes [RFC 6455 5.2].
mod opcode {
    pub(super) const CONTINUATION: u8 = 0x0;
    pub(super) const TEXT: u8 = 0x1;
    pub(super) const BINARY: u8 = 0x2;
    pub(super) const CLOSE: u8 = 0x8;
    pub(super) const PING: u8 = 0x9;
    pub(super) const PONG: u8 = 0xA;
}

/// Why the WebSocket layer ended a connection. Whatever must go back to the peer (an HTTP
/// error answer or a close frame) has already been appended to `wire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WsError {
    /// The upgrade request is not a valid WebSocket handshake (answered 400).
    BadRequest(&'static str),
    /// A plain HTTP request, without `Upgrade: websocket` (answered 400; no files served).
    NotUpgrade,
    /// The request header is larger than `websockets_headers_size` (answered 431).
    HeaderTooLarge,
    /// `Sec-WebSocket-Version` is not 13 (answered 426 with the version we speak).
    BadVersion,
    /// The client offered sub-protocols but neither `mqtt` nor `mqttv3.1` (answered 400).
    NoMqttSubprotocol,
    /// A client frame without a mask [RFC 6455 5.1] (close 1002).
    Unmasked,
    /// A text frame: MQTT travels in binary frames [MQTT-6.0.0-1] (close 1003).
    Text,
    /// A frame longer than [`MAX_FRAME_LEN`] (close 1009).
    FrameTooLarge,
    /// Any other framing violation (close 1002, or 1007 for a bad close reason).
    Protocol(&'static str),
}

/// Where the layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the HTTP upgrade request.
    Handshake,
    /// Reading a frame header (`hdr_len` bytes of it so far).
    Header,
    /// Reading a frame's payload.
    Payload,
    /// A close frame was sent (ours or our answer to the peer's); input is discarded.
    Closed,
}

/// The frame being read.
#[derive(Clone, Copy, Debug)]
struct Frame {
    opcode: u8,
    mask: [u8; 4],
    /// Payload bytes still to read.
    remaining: u64,
    /// Payload bytes read so far (the mask's phase).
    pos: usize,
}

/// The server side of one WebSocket connection; see the module docs.
pub(crate) struct WsServer {
    max_header_bytes: usize,
    phase: Phase,
    /// The handshake request so far; empty (unallocated) once the handshake is done.
    request: Vec<u8>,
    /// How far `request` has been searched for the end of the header.
    scanned: usize,
    hdr: [u8; 14],
    hdr_len: usize,
    frame: Frame,
    /// Inside a fragmented binary message: continuation frames are expected.
    in_message: bool,
    control: [u8; MAX_CONTROL_LEN],
}

impl WsServer {
    /// A connection that has sent nothing yet; `max_header_bytes` bounds the upgrade
    /// request (Mosquitto's `websockets_headers_size`).
    pub(crate) fn new(max_header_bytes: usize) -> WsServer {
        WsServer {
            max_header_bytes,
            phase: Phase::Handshake,
            request: Vec::new(),
            scanned: 0,
            hdr: [0; 14],
            hdr_len: 0,
            frame: Frame {
                opcode: 0,
                mask: [0; 4],
                remaining: 0,
                pos: 0,
            },
            in_message: false,
            control: [0; MAX_CONTROL_LEN],
        }
    }

    /// Bytes read from the stream below. Appends MQTT bytes to `app` and bytes that must go
    /// back to the peer (handshake response, pong, close) to `wire`. After an error, or once
    /// [`is_closed`](Self::is_closed), the caller writes `wire` and ends the connection;
    /// further input is ignored.
    pub(crate) fn read(
        &mut self,
        mut input: &[u8],
        app: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(), WsError> {
        let result = self.read_inner(&mut input, app, wire);
        if let Err(e) = result {
            if self.phase != Phase::Handshake && self.phase != Phase::Closed {
                let code = match e {
                    WsError::Text => close_code::UNSUPPORTED_DATA,
                    WsError::FrameTooLarge => close_code::TOO_BIG,
                    WsError::Protocol(why) if why == BAD_CLOSE_REASON => {
                        close_code::INVALID_PAYLOAD
                    }
                    _ => close_code::PROTOCOL_ERROR,
                };
                push_close(wire, Some(code));
            }
            self.phase = Phase::Closed;
            self.request = Vec::new();
        }
        result
    }

    /// Wraps MQTT bytes into one binary frame appended to `wire`. Server frames are not
    /// masked [RFC 6455 5.1]. Nothing is sent after a close frame [RFC 6455 5.5.1].
    pub(crate) fn write(&mut self, app: &[u8], wire: &mut Vec<u8>) {
        if app.is_empty() || self.phase == Phase::Closed || self.phase == Phase::Handshake {
            return;
        }
        push_header(wire, opcode::BINARY, app.len() as u64);
        wire.extend_from_slice(app);
    }

    /// Ends the connection from our side: appends MQTT's last bytes (`app`, e.g. a
    /// refusing CONNACK) as a binary frame, then a close frame with `code`
    /// [RFC 6455 5.5.1], if the handshake is done and no close was sent yet. Before the
    /// handshake nothing is sent (the peer does not speak WebSocket yet).
    pub(crate) fn close(&mut self, app: &[u8], code: u16, wire: &mut Vec<u8>) {
        if !self.is_open() {
            return;
        }
        self.write(app, wire);
        push_close(wire, Some(code));
        self.phase = Phase::Closed;
    }

    /// A close frame has been sent: the connection ends once `wire` is written.
    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the upgrade handshake is complete (MQTT may flow).
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Header | Phase::Payload)
    }

    /// Heap bytes held (the partial handshake request), for `memory_limit`.
    pub(crate) fn buffered(&self) -> usize {
        self.request.capacity()
    }

    fn read_inner(
        &mut self,
        input: &mut &[u8],
        app: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(), WsError> {
        while !input.is_empty() {
            match self.phase {
                Phase::Handshake => self.read_handshake(input, wire)?,
                Phase::Header => self.read_header(input, wire)?,
                Phase::Payload => self.read_payload(input, app, wire)?,
                Phase::Closed => return Ok(()),
            }
        }
        Ok(())
    }

    /// Buffers the request until the blank line ending its header, then answers it.
    fn read_handshake(&mut self, input: &mut &[u8], wire: &mut Vec<u8>) -> Result<(), WsError> {
        let room = (self.max_header_bytes + 1).saturating_sub(self.request.len());
        let take = input.len().min(room);
        self.request.extend_from_slice(&input[..take]);
        // Search only the new bytes (and the 3 before them) for CRLF CRLF: no rescans.
        let from = self.scanned.saturating_sub(3);
        let end = self.request[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| from + i + 4);
        self.scanned = self.request.len();
        let Some(end) = end else {
            *input = &input[take..];
            if self.request.len() > self.max_header_bytes {
                handshake::refuse(wire, WsError::HeaderTooLarge);
                return Err(WsError::HeaderTooLarge);
            }
            return Ok(());
        };
        if end > self.max_header_bytes {
            handshake::refuse(wire, WsError::HeaderTooLarge);
            return Err(WsError::HeaderTooLarge);
        }
        // Bytes after the header are the first frames; hand them back to the loop.
        let extra = self.request.len() - end;
        *input = &input[take - extra..];
        let request = std::mem::take(&mut self.request);
        self.scanned = 0;
        match handshake::answer(&request[..end], wire) {
            Ok(()) => {
                self.phase = Phase::Header;
                self.hdr_len = 0;
                Ok(())
            }
            Err(e) => {
                handshake::refuse(wire, e);
                Err(e)
            }
        }
    }

    /// Collects header bytes; once the header is complete, checks it and starts the payload.
    fn read_header(&mut self, input: &mut &[u8], wire: &mut Vec<u8>) -> Result<(), WsError> {
        // Header size: 2, +2 or +8 for the extended length, +4 for the mask.
        loop {
            let need = match self.hdr_len {
                0 | 1 => 2,
                _ => match self.hdr[1] & 0x7F {
                    126 => 2 + 2 + 4,
                    127 => 2 + 8 + 4,
                    _ => 2 + 4,
                },
            };
            if self.hdr_len == need {
                break;
            }
            if input.is_empty() {
                return Ok(());
            }
            // Copy as many as are available at once (at most 14 bytes in all).
            let n = (need - self.hdr_len).min(input.len());
            self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&input[..n]);
            self.hdr_len += n;
            *input = &input[n..];
            if self.hdr_len == 2 {
                self.check_first_bytes()?;
            }
        }
        let (len, mask_at) = match self.hdr[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.hdr[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        if len > MAX_FRAME_LEN {
            return Err(WsError::FrameTooLarge);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.hdr[mask_at..mask_at + 4]);
        self.frame.mask = mask;
        self.frame.remaining = len;
        self.frame.pos = 0;
        self.hdr_len = 0;
        self.phase = Phase::Payload;
        if len == 0 {
            // No payload byte will come to finish it.
            self.finish_frame(wire)?;
        }
        Ok(())
    }

    /// Checks the first two header bytes: reserved bits, opcode, fragmentation, mask bit
    /// and control frame length, before the rest of the frame is read.
    fn check_first_bytes(&mut self) -> Result<(), WsError> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        // [RFC 6455 5.2] RSV1-3 must be 0 without a negotiated extension (none is).
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set"));
        }
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0F;
        // [RFC 6455 5.1] a server closes on an unmasked client frame.
        if b1 & 0x80 == 0 {
            return Err(WsError::Unmasked);
        }
        match op {
            opcode::CONTINUATION if !self.in_message => {
                return Err(WsError::Protocol("continuation frame outside a message"))
            }
            opcode::CONTINUATION => {}
            // [MQTT-6.0.0-1] MQTT control packets are sent in binary data frames.
            opcode::TEXT => return Err(WsError::Text),
            opcode::BINARY if self.in_message => {
                // [RFC 6455 5.4] fragments of one message are not interleaved with another.
                return Err(WsError::Protocol("new message inside a fragmented one"));
            }
            opcode::BINARY => {}
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                // [RFC 6455 5.5] control frames are not fragmented, payload <= 125 bytes.
                if !fin {
                    return Err(WsError::Protocol("fragmented control frame"));
                }
                if usize::from(b1 & 0x7F) > MAX_CONTROL_LEN {
                    return Err(WsError::Protocol("control frame over 125 bytes"));
                }
            }
            _ => return Err(WsError::Protocol("reserved opcode")),
        }
        if op <= opcode::BINARY {
            self.in_message = !fin;
        }
        self.frame.opcode = op;
        Ok(())
    }

    /// Unmasks payload bytes: data straight into `app`, control into the fixed buffer.
    fn read_payload(
        &mut self,
        input: &mut &[u8],
        app: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(), WsError> {
        let n = usize::try_from(self.frame.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let (chunk, rest) = input.split_at(n);
        *input = rest;
        let control = self.frame.opcode >= opcode::CLOSE;
        if control {
            // n <= 125 - pos: the length was checked in `check_first_bytes`.
            let dst = &mut self.control[self.frame.pos..self.frame.pos + n];
            dst.copy_from_slice(chunk);
            unmask(dst, self.frame.mask, self.frame.pos);
        } else {
            let start = app.len();
            app.extend_from_slice(chunk);
            unmask(&mut app[start..], self.frame.mask, self.frame.pos);
        }
        self.frame.pos += n;
        self.frame.remaining -= n as u64;
        if self.frame.remaining > 0 {
            return Ok(());
        }
        self.finish_frame(wire)
    }

    /// The current frame's payload is complete: answer it if it is a control frame.
    fn finish_frame(&mut self, wire: &mut Vec<u8>) -> Result<(), WsError> {
        self.phase = Phase::Header;
        if self.frame.opcode >= opcode::CLOSE {
            self.control_frame(wire)?;
        }
        Ok(())
    }

    /// Answers a complete control frame.
    fn control_frame(&mut self, wire: &mut Vec<u8>) -> Result<(), WsError> {
        let payload = &self.control[..self.frame.pos];
        match self.frame.opcode {
            // [RFC 6455 5.5.2] a pong carries the ping's payload. A peer that sends pings
            // and reads nothing would make pongs pile up: past PONG_BACKLOG bytes waiting
            // for the peer, pings go unanswered ([RFC 6455 5.5.3] allows answering only
            // the most recent ping).
            opcode::PING if wire.len() < PONG_BACKLOG => {
                push_header(wire, opcode::PONG, payload.len() as u64);
                wire.extend_from_slice(payload);
            }
            opcode::CLOSE => {
                // [RFC 6455 5.5.1] answer with a close, echoing the status code.
                let code = match payload.len() {
                    0 => None,
                    1 => return Err(WsError::Protocol("close payload of one byte")),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !valid_close_code(code) {
                            return Err(WsError::Protocol("invalid close code"));
                        }
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(WsError::Protocol(BAD_CLOSE_REASON));
                        }
                        Some(code)
                    }
                };
                push_close(wire, code);
                self.phase = Phase::Closed;
            }
            // Unsolicited pongs are allowed and ignored [RFC 6455 5.5.3].
            _ => {}
        }
        Ok(())
    }
}

/// The `Protocol` reason that maps to close 1007 rather than 1002.
const BAD_CLOSE_REASON: &str = "close reason is not UTF-8";

/// Close codes a peer may send [RFC 6455 7.4.1, 7.4.2]: 1004-1006 and 1015 are reserved
/// for local use, below 1000 and 1016-2999 unassigned or reserved for the RFC's extensions.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends a server (unmasked, final) frame header.
fn push_header(wire: &mut Vec<u8>, op: u8, len: u64) {
    wire.push(0x80 | op);
    if len < 126 {
        wire.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        wire.push(126);
        wire.extend_from_slice(&len.to_be_bytes());
    } else {
        wire.push(127);
        wire.extend_from_slice(&len.to_be_bytes());
    }
}

/// Appends a close frame, with a status code if given.
fn push_close(wire: &mut Vec<u8>, code: Option<u16>) {
    match code {
        Some(code) => {
            push_header(wire, opcode::CLOSE, 2);
            wire.extend_from_slice(&code.to_be_bytes());
        }
        None => push_header(wire, opcode::CLOSE, 0),
    }
}

/// XORs `buf` with `mask`, `buf[0]` being payload byte `pos` [RFC 6455 5.3]. Eight bytes
/// at a time: this runs over every MQTT byte a WebSocket client sends.
fn unmask(buf: &mut [u8], mask: [u8; 4], pos: usize) {
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(pos + i) & 3];
    }
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::BadRequest(why) => write!(f, "bad WebSocket handshake: {why}"),
            WsError::NotUpgrade => f.write_str("HTTP request without Upgrade: websocket"),
            WsError::HeaderTooLarge => f.write_str("HTTP header over websockets_headers_size"),
            WsError::BadVersion => f.write_str("Sec-WebSocket-Version is not 13"),
            WsError::NoMqttSubprotocol => {
                f.write_str("no mqtt or mqttv3.1 in Sec-WebSocket-Protocol")
            }
            WsError::Unmasked => f.write_str("unmasked client frame"),
            WsError::Text => f.write_str("text frame (MQTT needs binary frames)"),
            WsError::FrameTooLarge => write!(f, "frame longer than {MAX_FRAME_LEN} bytes"),
            WsError::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
        }
    }
}
