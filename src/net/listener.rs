//! Listening sockets: binding the configured addresses and classifying accept errors.
//!
//! Binding: every configured address is bound. An IPv6 address that fails because the
//! host has no IPv6 (a common Raspberry Pi setup with `ipv6.disable=1`) is skipped with a
//! warning, so the default `[::1]:1883` listener does not stop the broker; any other
//! failure, or no listener at all, is an error naming the address.
//!
//! IPv6 sockets are bound with `IPV6_V6ONLY`, as Mosquitto does, so that a listener on
//! every interface (`0.0.0.0:P` and `[::]:P`) can bind both families on Linux, where a
//! dual-stack `[::]:P` would otherwise take the IPv4 port too.
//!
//! Accepting: errors that mean "out of descriptors or memory" (EMFILE, ENFILE, ENOBUFS,
//! ENOMEM) are [`AcceptError::Resources`]: the loop stops accepting and retries after a
//! backoff instead of spinning on a full backlog or ending. Everything else concerns one
//! connection (ECONNABORTED, EPROTO, EPERM from a firewall) and is skipped.

use std::io;
use std::net::SocketAddr;

use log::{info, warn};
use mio::net::TcpListener;

use super::transport::{ListenerLayers, Transport, TransportError};
use crate::config::Config;

/// One bound listening socket.
pub(crate) struct Listener {
    pub(crate) socket: TcpListener,
    /// The bound address, port 0 resolved.
    pub(crate) addr: SocketAddr,
    /// The address as configured (port 0 kept), which reload compares against.
    pub(crate) configured: SocketAddr,
    /// TLS (and later WebSocket) layers of its connections; replaced on reload.
    pub(crate) layers: ListenerLayers,
}

/// What an accept error means for the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// Try again later (`WouldBlock`): the backlog is empty.
    Drained,
    /// Retry the same call at once (`Interrupted`).
    Retry,
    /// Out of descriptors or memory: back off.
    Resources,
    /// This one connection failed; go on with the next.
    Skip,
}

/// Binds every address in `addrs`; see the module docs for which failures are skipped.
pub(crate) fn bind_all(addrs: &[SocketAddr]) -> io::Result<Vec<Listener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        match bind(addr) {
            Ok(socket) => {
                let configured = addr;
                let addr = socket.local_addr().unwrap_or(addr);
                info!("listening on {addr}");
                listeners.push(Listener {
                    socket,
                    addr,
                    configured,
                    layers: ListenerLayers::default(),
                });
            }
            Err(e) if addr.is_ipv6() && ipv6_unavailable(&e) => {
                warn!("not listening on {addr}: IPv6 is not available on this host ({e})");
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e}"),
                ));
            }
        }
    }
    if listeners.is_empty() {
        let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no usable listener address (tried: {})", list.join(", ")),
        ));
    }
    Ok(listeners)
}

/// The transport layers of every configured listener, in order; the error names the
/// listener and the file that could not be used (TLS certificates are read here).
pub(crate) fn load_layers(
    config: &Config,
    addrs: &[SocketAddr],
) -> Result<Vec<(SocketAddr, ListenerLayers)>, String> {
    addrs
        .iter()
        .map(|&a| ListenerLayers::load(config, a).map(|l| (a, l)))
        .collect()
}

/// Gives each bound listener the layers loaded for its configured address.
pub(crate) fn set_layers(listeners: &mut [Listener], layers: &[(SocketAddr, ListenerLayers)]) {
    for l in listeners {
        if let Some((_, layers)) = layers.iter().find(|(a, _)| *a == l.configured) {
            l.layers = layers.clone();
        }
    }
}

/// The transport for a connection accepted on the listener bound to `local`; `None` for
/// plain TCP.
pub(crate) fn transport_for(
    listeners: &[Listener],
    local: SocketAddr,
) -> Result<Option<Box<Transport>>, TransportError> {
    match listeners.iter().find(|l| l.addr == local) {
        Some(l) => l.layers.accept(),
        None => Ok(None),
    }
}

/// The configured address of the listener bound to `local` (which per-listener security
/// settings are keyed by).
pub(crate) fn configured_for(listeners: &[Listener], local: SocketAddr) -> Option<SocketAddr> {
    listeners
        .iter()
        .find(|l| l.addr == local)
        .map(|l| l.configured)
}

/// Binds one listening socket; IPv6 ones only for IPv6 (see the module docs).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.is_ipv4() {
        return TcpListener::bind(addr);
    }
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(true)?;
    // As mio's own bind does: a restarted broker can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Classifies an error from `accept`.
pub(crate) fn classify_accept_error(e: &io::Error) -> AcceptError {
    match e.kind() {
        io::ErrorKind::WouldBlock => AcceptError::Drained,
        io::ErrorKind::Interrupted => AcceptError::Retry,
        io::ErrorKind::OutOfMemory => AcceptError::Resources,
        _ => match e.raw_os_error() {
            Some(code) if errno::RESOURCES.contains(&code) => AcceptError::Resources,
            _ => AcceptError::Skip,
        },
    }
}

/// Whether a bind error on an IPv6 address means the host has no IPv6.
fn ipv6_unavailable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable
        || e.raw_os_error()
            .is_some_and(|code| code == errno::EAFNOSUPPORT || code == errno::EADDRNOTAVAIL)
}

/// The few errno values std does not map to an `ErrorKind`. Hard-coded because the crate
/// does not depend on `libc`; the values are from the kernels' public headers.
mod errno {
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const ENFILE: i32 = 23;
    pub(super) const EMFILE: i32 = 24;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) const ENOBUFS: i32 = 105;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) const ENOBUFS: i32 = 55;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) const EAFNOSUPPORT: i32 = 97;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) const EAFNOSUPPORT: i32 = 47;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) const EADDRNOTAVAIL: i32 = 99;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) const EADDRNOTAVAIL: i32 = 49;

    pub(super) const RESOURCES: [i32; 4] = [EMFILE, ENFILE, ENOBUFS, ENOMEM];
}

/// A peer address as Mosquitto prints it in log lines: `IP:port`, IPv6 without brackets.
pub(super) fn peer_text(peer: SocketAddr) -> String {
    format!("{}:{}", peer.ip(), peer.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(
            classify_accept_error(&os(errno::EMFILE)),
            AcceptError::Resources
        );
        assert_eq!(
            classify_accept_error(&os(errno::ENFILE)),
            AcceptError::Resources
        );
        assert_eq!(
            classify_accept_error(&os(errno::ENOBUFS)),
            AcceptError::Resources
        );
        assert_eq!(
            classify_accept_error(&os(errno::ENOMEM)),
            AcceptError::Resources
        );
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(classify_accept_error(&aborted), AcceptError::Skip);
        let would_block = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(classify_accept_error(&would_block), AcceptError::Drained);
        let interrupted = io::Error::from(io::ErrorKind::Interrupted);
        assert_eq!(classify_accept_error(&interrupted), AcceptError::Retry);
    }

    #[test]
    fn binding_port_zero_reports_the_real_port() {
        let listeners = bind_all(&[SocketAddr::from(([127, 0, 0, 1], 0))]).unwrap();
        assert_eq!(listeners.len(), 1);
        assert_ne!(listeners[0].addr.port(), 0);
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_bind_the_same_port() {
        let v4 = bind_all(&[SocketAddr::from(([0, 0, 0, 0], 0))]).unwrap();
        let port = v4[0].addr.port();
        // Skipped (not an error) on a host without IPv6.
        let both = bind_all(&[SocketAddr::from(([0u16; 8], port))]);
        match both {
            Ok(v6) => assert_eq!(v6[0].addr.port(), port),
            Err(e) => assert_ne!(e.kind(), io::ErrorKind::AddrInUse, "{e}"),
        }
    }

    #[test]
    fn binding_a_used_port_names_the_address() {
        let first = bind_all(&[SocketAddr::from(([127, 0, 0, 1], 0))]).unwrap();
        let err = match bind_all(&[first[0].addr]) {
            Ok(_) => panic!("second bind on {} succeeded", first[0].addr),
            Err(e) => e,
        };
        assert!(
            err.to_string().contains(&first[0].addr.to_string()),
            "{err}"
        );
    }
}
