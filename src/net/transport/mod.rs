//! Transports: the layers between a connection's socket and the MQTT byte stream.
//!
//! ```text
//!  socket ──► [TLS: decrypt] ──► [WebSocket: unframe] ──► MQTT decoder (input.rs)
//!  socket ◄── [TLS: encrypt] ◄── [WebSocket: frame]   ◄── broker output buffer
//! ```
//!
//! A plain TCP connection has no [`Transport`] at all (`Connection::transport` is `None`,
//! one pointer): its bytes go from the loop's scratch buffer straight into the decoder and
//! from the broker's output buffer straight into the socket, as before, and it costs no
//! memory here. A connection with layers holds one boxed [`Transport`].
//!
//! Every layer is sans-IO: it turns bytes into bytes and never touches the socket (rustls
//! `read_tls`/`process_new_packets`/`reader`/`writer`/`write_tls`; the WebSocket layer is
//! `WsServer::read/write`). The connection does the socket I/O on the mio loop:
//! - reading: socket bytes → [`Transport::read`] → MQTT bytes appended to a buffer the loop
//!   shares between connections (so an idle connection holds no plaintext); anything a
//!   layer must answer (handshake, alerts, pongs) is queued inside the transport;
//! - writing: broker output → [`Transport::write`] (takes what fits, so the broker's
//!   output buffer keeps its back-pressure role) → [`Transport::write_to`] the socket
//!   while [`Transport::wants_write`];
//! - closing: [`Transport::seal_final`] turns a connection's last MQTT bytes (a refusing
//!   CONNACK, a DISCONNECT) into socket bytes, ending the session (close_notify).
//!
//! Buffers: the layers' own buffers grow on demand and shrink when drained (rustls
//! deframer; `out` below is freed when written).

// Built without any layer feature, no transport is ever constructed.
#![cfg_attr(
    not(any(feature = "tls", feature = "websockets")),
    allow(dead_code, unused_mut, unused_variables)
)]

#[cfg(feature = "tls")]
pub(crate) mod tls;
#[cfg(feature = "tls")]
mod unbuffered;
#[cfg(feature = "tls")]
mod x509;

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;

#[cfg(feature = "websockets")]
use super::websocket::{close_code, WsError, WsServer};
use crate::config::Config;

/// WebSocket frames queued for the layer below (socket or TLS) beyond which
/// [`Transport::write`] takes no more MQTT bytes: the broker's output buffer keeps its
/// back-pressure role, and a 1 MiB message goes out as 64 KiB frames, framed once each.
#[cfg(feature = "websockets")]
const WS_OUT_ROOM: usize = 64 * 1024;

#[cfg(feature = "tls")]
pub(crate) use tls::PeerIdentity;

/// Reads of connections still in a handshake per loop turn: a burst of TLS handshakes
/// (each costs a key exchange and a signature, milliseconds on a Pi) must not starve
/// established clients; the rest wait for the next turn.
pub(crate) const HANDSHAKES_PER_TURN: usize = 16;

/// What a listener puts under the MQTT stream of the connections it accepts, loaded from
/// the configuration at start-up and on reload (each accepted connection builds its own
/// [`Transport`] from it; the configuration inside is shared).
#[derive(Clone, Default)]
pub(crate) struct ListenerLayers {
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tls::ServerTls>,
    /// `protocol websockets`: the largest upgrade request header.
    #[cfg(feature = "websockets")]
    pub(crate) ws: Option<usize>,
}

impl ListenerLayers {
    /// The layers of the listener configured as `addr`: reads certificate files. The error
    /// names the listener and the file.
    pub(crate) fn load(config: &Config, addr: SocketAddr) -> Result<ListenerLayers, String> {
        let mut layers = ListenerLayers::default();
        if let Some(settings) = config.tls_for(addr) {
            #[cfg(feature = "tls")]
            {
                layers.tls = Some(
                    tls::ServerTls::load(settings)
                        .map_err(|e| format!("TLS listener {addr} ({}): {e}", settings.origin))?,
                );
            }
            #[cfg(not(feature = "tls"))]
            return Err(format!(
                "listener {addr} ({}) is configured for TLS, but this wrenmq was built \
                 without the `tls` feature",
                settings.origin
            ));
        }
        if config.is_websockets(addr) {
            #[cfg(feature = "websockets")]
            {
                layers.ws = Some(config.websockets_headers_size);
            }
            #[cfg(not(feature = "websockets"))]
            return Err(format!(
                "listener {addr} is configured for websockets, but this wrenmq was built \
                 without the `websockets` feature"
            ));
        }
        Ok(layers)
    }

    /// A new connection's transport; `None` for plain TCP.
    pub(crate) fn accept(&self) -> Result<Option<Box<Transport>>, TransportError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let t = Transport::tls_server(tls)?;
            #[cfg(feature = "websockets")]
            let t = Transport {
                ws: self.ws.map(WsServer::new),
                ..t
            };
            return Ok(Some(Box::new(t)));
        }
        #[cfg(feature = "websockets")]
        if let Some(max_header) = self.ws {
            return Ok(Some(Box::new(Transport {
                #[cfg(feature = "tls")]
                tls: None,
                ws: Some(WsServer::new(max_header)),
                out: Vec::new(),
                out_pos: 0,
                #[cfg(feature = "tls")]
                tls_failed: false,
            })));
        }
        Ok(None)
    }
}

/// Why a transport gave up on its peer.
#[derive(Debug)]
pub(crate) enum TransportError {
    #[cfg(feature = "tls")]
    Tls(tls::TlsError),
    #[cfg(feature = "websockets")]
    Ws(WsError),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            #[cfg(feature = "tls")]
            TransportError::Tls(ref e) => e.fmt(f),
            #[cfg(feature = "websockets")]
            TransportError::Ws(ref e) => e.fmt(f),
        }
    }
}

/// How a [`Transport::read`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// More may come.
    Open,
    /// The peer ended the session inside the transport (TLS close_notify, WebSocket
    /// close): treat like EOF once the bytes already returned are handled.
    Closed,
}

/// The layers of one connection (see the module docs). Always boxed by its owner.
pub(crate) struct Transport {
    #[cfg(feature = "tls")]
    tls: Option<tls::TlsLayer>,
    /// WebSocket framing, above TLS when both are present.
    #[cfg(feature = "websockets")]
    ws: Option<WsServer>,
    /// Bytes for the layer below that it has not taken yet: for the socket without TLS,
    /// WebSocket frames TLS had no room for with it. `out[out_pos..]` is pending; freed
    /// once written.
    out: Vec<u8>,
    out_pos: usize,
    /// TLS reported an error (and sent its alert): nothing more may be sealed by it
    /// (rustls asserts that no close_notify follows a fatal alert).
    #[cfg(feature = "tls")]
    tls_failed: bool,
}

impl Transport {
    /// A TLS server transport (a TLS listener's connection).
    #[cfg(feature = "tls")]
    pub(crate) fn tls_server(config: &tls::ServerTls) -> Result<Transport, TransportError> {
        Ok(Transport {
            tls: Some(tls::TlsLayer::server(config).map_err(TransportError::Tls)?),
            #[cfg(feature = "websockets")]
            ws: None,
            out: Vec::new(),
            out_pos: 0,
            tls_failed: false,
        })
    }

    /// A TLS client transport (an outbound connection, e.g. the bridge).
    #[cfg(feature = "tls")]
    #[allow(dead_code)] // The bridge (next issue) dials out with it.
    pub(crate) fn tls_client(
        config: &tls::ClientTls,
        server_name: &str,
    ) -> Result<Transport, TransportError> {
        Ok(Transport {
            tls: Some(tls::TlsLayer::client(config, server_name).map_err(TransportError::Tls)?),
            #[cfg(feature = "websockets")]
            ws: None,
            out: Vec::new(),
            out_pos: 0,
            tls_failed: false,
        })
    }

    /// Turns `input` (socket bytes) into MQTT bytes appended to `app`. On an error, what
    /// the layers had to say (an HTTP refusal, a close frame, a TLS alert) is pending: see
    /// [`Transport::write_to`].
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        app: &mut Vec<u8>,
    ) -> Result<ReadState, TransportError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            #[cfg(feature = "websockets")]
            if let Some(ws) = self.ws.as_mut() {
                // Decrypt into a buffer of this call's own: the WebSocket layer reads it
                // into `app`. Its answers (upgrade response, pongs, close) queue in `out`
                // behind frames waiting for room in TLS, then go to TLS as far as it has
                // room (the WebSocket layer bounds that backlog by skipping pongs).
                let mut plain = Vec::new();
                let tls_closed = match tls.read(input, &mut plain) {
                    Ok(closed) => closed,
                    Err(e) => {
                        self.tls_failed = true;
                        return Err(TransportError::Tls(e));
                    }
                };
                let result = ws.read(&plain, app, &mut self.out);
                push_pending(tls, &mut self.out, &mut self.out_pos);
                result.map_err(TransportError::Ws)?;
                return Ok(if tls_closed || ws.is_closed() {
                    ReadState::Closed
                } else {
                    ReadState::Open
                });
            }
            let closed = match tls.read(input, app) {
                Ok(closed) => closed,
                Err(e) => {
                    self.tls_failed = true;
                    return Err(TransportError::Tls(e));
                }
            };
            return Ok(if closed {
                ReadState::Closed
            } else {
                ReadState::Open
            });
        }
        #[cfg(feature = "websockets")]
        if let Some(ws) = self.ws.as_mut() {
            ws.read(input, app, &mut self.out)
                .map_err(TransportError::Ws)?;
            return Ok(if ws.is_closed() {
                ReadState::Closed
            } else {
                ReadState::Open
            });
        }
        // No layer that changes bytes (a plain connection has no Transport at all).
        app.extend_from_slice(input);
        Ok(ReadState::Open)
    }

    /// Takes as much of `app` (MQTT bytes) as the layers have room for; returns how much.
    pub(crate) fn write(&mut self, app: &[u8]) -> usize {
        #[cfg(feature = "websockets")]
        if let Some(ws) = self.ws.as_mut() {
            // Frames wait in `out` for the layer below; take MQTT bytes only while fewer
            // than WS_OUT_ROOM bytes wait, and frame them once.
            #[cfg(feature = "tls")]
            if let Some(tls) = self.tls.as_mut() {
                push_pending(tls, &mut self.out, &mut self.out_pos);
            }
            let waiting = self.out.len() - self.out_pos;
            let n = app.len().min(WS_OUT_ROOM.saturating_sub(waiting));
            if n == 0 {
                return 0;
            }
            ws.write(&app[..n], &mut self.out);
            #[cfg(feature = "tls")]
            if let Some(tls) = self.tls.as_mut() {
                push_pending(tls, &mut self.out, &mut self.out_pos);
            }
            return n;
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            return tls.write(app);
        }
        self.out.extend_from_slice(app);
        app.len()
    }

    /// Whether bytes wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            // Frames waiting for room in TLS count: `write_to` hands them over.
            return tls.wants_write() || self.out_pos < self.out.len();
        }
        self.out_pos < self.out.len()
    }

    /// Writes pending bytes to `w` (the socket) once; `Ok(0)` when nothing is pending or
    /// the socket took nothing.
    pub(crate) fn write_to(&mut self, w: &mut dyn Write) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            let n = tls.write_to(w)?;
            push_pending(tls, &mut self.out, &mut self.out_pos);
            return Ok(n);
        }
        let n = w.write(&self.out[self.out_pos..])?;
        // An offset, not `drain`: a large frame written in small pieces moves no bytes.
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out = Vec::new();
            self.out_pos = 0;
        }
        Ok(n)
    }

    /// Appends to `out` everything for the socket: what is pending, then `app` (final MQTT
    /// bytes, taken whole), then the end of the session (WebSocket close frame, TLS
    /// close_notify).
    pub(crate) fn seal_final(&mut self, app: &[u8], out: &mut Vec<u8>) {
        // Bytes the layer below has not taken yet come first.
        let mut pending = std::mem::take(&mut self.out);
        pending.drain(..std::mem::take(&mut self.out_pos));
        #[cfg(feature = "websockets")]
        if let Some(ws) = self.ws.as_mut() {
            // [RFC 6455 7.4.1] 1000: the broker ends the MQTT session normally (the
            // reason, if any, is in the final MQTT bytes). Nothing once a close was sent.
            ws.close(app, close_code::NORMAL, &mut pending);
            self.seal_below(&pending, out);
            return;
        }
        pending.extend_from_slice(app);
        self.seal_below(&pending, out);
    }

    /// The last words when the loop, not the broker, ends the connection (EOF, a socket
    /// or protocol error, the connect timeout): what still waits for the socket (an HTTP
    /// refusal, a WebSocket close answer) and, on an open WebSocket, a close frame. TLS
    /// alone adds nothing here, and a failed TLS layer seals nothing.
    pub(crate) fn seal_quiet(&mut self, out: &mut Vec<u8>) {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            #[cfg(feature = "websockets")]
            if self.ws.is_some() && !self.tls_failed {
                self.seal_final(&[], out);
            }
            return;
        }
        self.seal_final(&[], out);
    }

    /// The TLS end of [`Transport::seal_final`]: `bytes` for the socket, sealed by TLS if
    /// there is a TLS layer (one that failed can seal nothing: its alert was the end).
    fn seal_below(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            if !self.tls_failed {
                tls.seal_final(bytes, out);
            }
            return;
        }
        out.extend_from_slice(bytes);
    }

    /// Bytes of received input the layers hold (a partial TLS record or handshake
    /// message, a partial WebSocket upgrade request), for `memory_limit`.
    pub(crate) fn input_bytes(&self) -> usize {
        let mut held = 0;
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            held += tls.input_bytes();
        }
        #[cfg(feature = "websockets")]
        if let Some(ws) = self.ws.as_ref() {
            // The upgrade request until it is answered (at most websockets_headers_size).
            held += ws.buffered();
        }
        held
    }

    /// Whether a handshake is still in progress (its work counts against the loop's
    /// per-turn handshake budget). The WebSocket upgrade counts too: cheap (one SHA-1),
    /// but a burst of them is bounded all the same.
    pub(crate) fn is_handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(tls::TlsLayer::is_handshaking) {
            return true;
        }
        #[cfg(feature = "websockets")]
        if let Some(ws) = self.ws.as_ref() {
            return !ws.is_open() && !ws.is_closed();
        }
        false
    }

    /// Once the handshake is done, once: the user name the peer's certificate gives, for
    /// listeners that take it from there.
    #[cfg(feature = "tls")]
    pub(crate) fn poll_identity(&mut self) -> Option<PeerIdentity> {
        self.tls.as_mut().and_then(tls::TlsLayer::poll_identity)
    }
}

/// Hands WebSocket frames waiting in `out[*pos..]` to TLS as far as it has room.
#[cfg(all(feature = "tls", feature = "websockets"))]
fn push_pending(tls: &mut tls::TlsLayer, out: &mut Vec<u8>, pos: &mut usize) {
    while *pos < out.len() {
        let n = tls.write(&out[*pos..]);
        if n == 0 {
            return;
        }
        *pos += n;
    }
    *out = Vec::new();
    *pos = 0;
}

/// Without WebSockets nothing waits in `out` under TLS.
#[cfg(all(feature = "tls", not(feature = "websockets")))]
fn push_pending(_tls: &mut tls::TlsLayer, _out: &mut Vec<u8>, _pos: &mut usize) {}

#[cfg(all(test, feature = "websockets"))]
mod ws_tests {
    use super::*;
    use crate::net::websocket::fuzzing::{push_client_frame, REQUEST};

    /// The layers `load` gives a `protocol websockets` listener.
    fn ws_layers() -> ListenerLayers {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let config = Config {
            websockets: vec![addr],
            ..Config::in_memory()
        };
        let layers = ListenerLayers::load(&config, addr).unwrap();
        assert_eq!(layers.ws, Some(4096));
        layers
    }

    fn plain_ws() -> Transport {
        let layers = ws_layers();
        let mut t = *layers.accept().unwrap().unwrap();
        let mut app = Vec::new();
        assert_eq!(t.read(REQUEST, &mut app).unwrap(), ReadState::Open);
        let mut answer = Vec::new();
        while t.wants_write() {
            t.write_to(&mut answer).unwrap();
        }
        assert!(answer.starts_with(b"HTTP/1.1 101 "));
        t
    }

    /// A socket that takes at most `max` bytes per write.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.max);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn ws_write_takes_at_most_the_room_and_keeps_order_over_partial_writes() {
        let mut t = plain_ws();
        let msg: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut sock = Trickle {
            got: Vec::new(),
            max: 1000,
        };
        let mut taken = 0;
        while taken < msg.len() {
            let n = t.write(&msg[taken..]);
            assert!(n <= WS_OUT_ROOM, "took {n}");
            // Nothing more is taken while a full room waits.
            assert_eq!(t.write(&msg[taken + n..]), 0);
            taken += n;
            while t.wants_write() {
                t.write_to(&mut sock).unwrap();
            }
        }
        assert!(t.out.capacity() == 0, "out kept after it was written");
        // Unframe what went out: binary frames holding the message in order.
        let mut rest = &sock.got[..];
        let mut back = Vec::new();
        while !rest.is_empty() {
            assert_eq!(rest[0], 0x82);
            let (len, off) = match rest[1] {
                126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                n => (usize::from(n), 2),
            };
            back.extend_from_slice(&rest[off..off + len]);
            rest = &rest[off + len..];
        }
        assert!(back == msg);
    }

    #[test]
    fn ws_seal_final_sends_what_waits_then_the_last_bytes_then_close() {
        let mut t = plain_ws();
        assert_eq!(t.write(&[1, 2, 3]), 3);
        let mut out = Vec::new();
        t.seal_final(&[0xE0, 0x00], &mut out);
        assert_eq!(
            out,
            [0x82, 3, 1, 2, 3, 0x82, 2, 0xE0, 0x00, 0x88, 2, 0x03, 0xE8]
        );
        // A close answer queued by a read goes out when the connection closes.
        let mut t = plain_ws();
        let mut close = Vec::new();
        push_client_frame(&mut close, 0x88, &[0x03, 0xE8], [9, 8, 7, 6]);
        assert_eq!(t.read(&close, &mut Vec::new()).unwrap(), ReadState::Closed);
        let mut out = Vec::new();
        t.seal_final(&[], &mut out);
        assert_eq!(out, [0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn ws_upgrade_counts_as_a_handshake_and_its_buffer_as_held_input() {
        let layers = ws_layers();
        let mut t = layers.accept().unwrap().unwrap();
        assert!(t.is_handshaking());
        t.read(&REQUEST[..20], &mut Vec::new()).unwrap();
        assert!(t.input_bytes() >= 20);
        t.read(&REQUEST[20..], &mut Vec::new()).unwrap();
        assert!(!t.is_handshaking());
        assert_eq!(t.input_bytes(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_connection_pays_one_pointer_for_the_seam() {
        assert_eq!(
            std::mem::size_of::<Option<Box<Transport>>>(),
            std::mem::size_of::<usize>()
        );
    }
}
