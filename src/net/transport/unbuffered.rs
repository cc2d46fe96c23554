//! The server side of TLS on rustls's *unbuffered* API, so that an idle connection holds
//! no buffers at all: rustls's buffered `ServerConnection` keeps a receive buffer of at
//! least 4 KiB per connection forever (it is resized to `used + 4096` before every read),
//! which was most of an idle TLS connection's memory. Here the caller owns both buffers:
//! - `incoming`: received TLS bytes not consumed yet — only a partial record or a partial
//!   handshake message (bounded by [`MAX_INCOMING`]); empty and unallocated otherwise;
//! - `out`: records for the socket; unallocated once written.
//!
//! `process_tls_records` is driven until it needs more input (`BlockedHandshake`) or is
//! idle (`WriteTraffic`); handshake records it produces (`EncodeTlsData`) go to `out`, in
//! order, and count as transmitted (`TransmitTlsData::done`) because `out` keeps their
//! order ahead of anything written later.

use std::io::{self, Write};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};

use super::tls::{TlsError, SEND_BUFFER};

/// Unconsumed TLS input one connection may hold: the largest handshake message rustls
/// accepts (0xFFFF) plus a maximal record. More means a peer breaking the rules.
pub(crate) const MAX_INCOMING: usize = 0xFFFF + 16 * 1024 + 2048;

pub(crate) struct ServerSide {
    conn: UnbufferedServerConnection,
    incoming: Vec<u8>,
    out: Vec<u8>,
    /// How much of `out` the socket has taken.
    out_pos: usize,
}

impl ServerSide {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<ServerSide, TlsError> {
        Ok(ServerSide {
            conn: UnbufferedServerConnection::new(config).map_err(TlsError::Protocol)?,
            incoming: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// Decrypts `input`, appending the plaintext to `plain`; true once the peer sent
    /// close_notify.
    pub(crate) fn read(&mut self, input: &[u8], plain: &mut Vec<u8>) -> Result<bool, TlsError> {
        self.incoming.extend_from_slice(input);
        let closed = self.process(plain)?;
        if self.incoming.len() > MAX_INCOMING {
            return Err(TlsError::Buffer(io::Error::other(
                "unconsumed TLS input over the bound",
            )));
        }
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        Ok(closed)
    }

    /// Runs the state machine until it needs input or is idle.
    fn process(&mut self, plain: &mut Vec<u8>) -> Result<bool, TlsError> {
        let mut closed = false;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let more = match state.map_err(TlsError::Protocol)? {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(TlsError::Protocol)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    true
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    let start = self.out.len();
                    let mut need = 0;
                    loop {
                        self.out.resize(start + need, 0);
                        match e.encode(&mut self.out[start..]) {
                            Ok(n) => {
                                self.out.truncate(start + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) if required_size > need => need = required_size,
                            Err(e) => {
                                self.out.truncate(start);
                                return Err(TlsError::Buffer(io::Error::other(e.to_string())));
                            }
                        }
                    }
                    true
                }
                // `out` holds it, ahead of anything later.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    closed = true;
                    true
                }
                // BlockedHandshake (needs input), WriteTraffic (idle), Closed; early data
                // is not enabled.
                _ => false,
            };
            self.incoming.drain(..discard);
            if !more {
                return Ok(closed);
            }
        }
    }

    /// Runs `f` with the state that may encrypt application data, if the handshake is far
    /// enough; handshake records due first go to `out`.
    fn with_write_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        let mut plain = Vec::new();
        if self.process(&mut plain).is_err() {
            return None;
        }
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming);
        let result = match state {
            Ok(ConnectionState::WriteTraffic(mut w)) => Some(f(&mut w, &mut self.out)),
            _ => None,
        };
        self.incoming.drain(..discard);
        result
    }

    /// Encrypts as much of `plain` as the send bound leaves room for; returns how much.
    pub(crate) fn write(&mut self, plain: &[u8]) -> usize {
        let pending = self.out.len() - self.out_pos;
        let take = plain.len().min(SEND_BUFFER.saturating_sub(pending));
        if take == 0 {
            return 0;
        }
        self.with_write_traffic(|w, out| encrypt(w, &plain[..take], out).map_or(0, |()| take))
            .unwrap_or(0)
    }

    /// Encrypts all of `plain` and a close_notify, and moves everything pending to `out`.
    pub(crate) fn seal_final(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let _ = self.with_write_traffic(|w, buf| {
            let _ = encrypt(w, plain, buf);
            let start = buf.len();
            buf.resize(start + 64, 0);
            match w.queue_close_notify(&mut buf[start..]) {
                Ok(n) => buf.truncate(start + n),
                Err(_) => buf.truncate(start),
            }
        });
        out.extend_from_slice(&self.out[self.out_pos..]);
        self.out = Vec::new();
        self.out_pos = 0;
    }

    pub(crate) fn wants_write(&self) -> bool {
        self.out_pos < self.out.len()
    }

    pub(crate) fn write_to(&mut self, w: &mut dyn Write) -> io::Result<usize> {
        let n = w.write(&self.out[self.out_pos..])?;
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out = Vec::new();
            self.out_pos = 0;
        }
        Ok(n)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Received bytes held (the allocation of `incoming`); changes only in `read`.
    pub(crate) fn input_bytes(&self) -> usize {
        self.incoming.capacity()
    }

    /// Bytes of buffers held (their allocations).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.incoming.capacity() + self.out.capacity()
    }

    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }
}

/// Appends the records of `plain` to `out`.
fn encrypt(
    w: &mut WriteTraffic<'_, ServerConnectionData>,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncryptError> {
    let start = out.len();
    // Record overhead: 5-byte header, 16-byte tag, content type; per 16 KiB of data.
    let mut need = plain.len() + (plain.len() / 16384 + 1) * 32;
    loop {
        out.resize(start + need, 0);
        match w.encrypt(plain, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size }))
                if required_size > need =>
            {
                need = required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
}
