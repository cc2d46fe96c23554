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
#![cfg_attr(not(feature = "tls"), allow(dead_code, unused_mut, unused_variables))]

#[cfg(feature = "tls")]
pub(crate) mod tls;
#[cfg(feature = "tls")]
mod unbuffered;
#[cfg(feature = "tls")]
mod x509;

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;

use crate::config::Config;

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
    // The WebSocket settings go here (`ws: Option<usize>`: max header bytes).
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
        Ok(layers)
    }

    /// A new connection's transport; `None` for plain TCP.
    pub(crate) fn accept(&self) -> Result<Option<Box<Transport>>, TransportError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Transport::tls_server(tls).map(|t| Some(Box::new(t)));
        }
        Ok(None)
    }
}

/// Why a transport gave up on its peer.
#[derive(Debug)]
pub(crate) enum TransportError {
    #[cfg(feature = "tls")]
    Tls(tls::TlsError),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            #[cfg(feature = "tls")]
            TransportError::Tls(ref e) => e.fmt(f),
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
    // The WebSocket layer goes here (`ws: Option<WsServer>`), above TLS; see `read` and
    // `write` for where it plugs in.
    /// Bytes for the socket produced by a layer with no TLS below it; unused with TLS
    /// (its records queue inside rustls).
    out: Vec<u8>,
}

impl Transport {
    /// A TLS server transport (a TLS listener's connection).
    #[cfg(feature = "tls")]
    pub(crate) fn tls_server(config: &tls::ServerTls) -> Result<Transport, TransportError> {
        Ok(Transport {
            tls: Some(tls::TlsLayer::server(config).map_err(TransportError::Tls)?),
            out: Vec::new(),
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
            out: Vec::new(),
        })
    }

    /// Turns `input` (socket bytes) into MQTT bytes appended to `app`.
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        app: &mut Vec<u8>,
    ) -> Result<ReadState, TransportError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            // With WebSockets above: decrypt into a buffer of its own, then
            // `ws.read(&plain, app, &mut wire)` and `tls.write(&wire)` (pongs, close).
            let closed = tls.read(input, app).map_err(TransportError::Tls)?;
            return Ok(if closed {
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
        // With WebSockets above: `ws.write(app, &mut frames)` and hand `frames` to TLS or
        // `out` (taking all of `app` only when the layer below has room).
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
            return tls.wants_write();
        }
        !self.out.is_empty()
    }

    /// Writes pending bytes to `w` (the socket) once; `Ok(0)` when nothing is pending or
    /// the socket took nothing.
    pub(crate) fn write_to(&mut self, w: &mut dyn Write) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            return tls.write_to(w);
        }
        let n = w.write(&self.out)?;
        self.out.drain(..n);
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        Ok(n)
    }

    /// Appends to `out` everything for the socket: what is pending, then `app` (final MQTT
    /// bytes, taken whole), then the end of the session (TLS close_notify).
    pub(crate) fn seal_final(&mut self, app: &[u8], out: &mut Vec<u8>) {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            tls.seal_final(app, out);
            return;
        }
        out.append(&mut self.out);
        out.extend_from_slice(app);
    }

    /// Bytes of received input the layers hold (a partial TLS record or handshake
    /// message), for `memory_limit`.
    pub(crate) fn input_bytes(&self) -> usize {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            return tls.input_bytes();
        }
        0
    }

    /// Whether a handshake is still in progress (its work counts against the loop's
    /// per-turn handshake budget).
    pub(crate) fn is_handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            return tls.is_handshaking();
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
