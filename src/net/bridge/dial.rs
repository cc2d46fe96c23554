//! Opening a bridge's TCP connections (the uplink and the primary probe): the address
//! of an `address` entry (an IP literal at once, a host name through the resolver
//! thread), then a non-blocking `connect` to each resolved address in turn, from
//! `bridge_bind_address` when one is set, until one connects.
//!
//! For the state machine a dial is one attempt: `handle_connected` once a socket is up,
//! `handle_closed` once the lookup failed or every address did (it then moves to the
//! next `address` entry or backs off). Its dial deadline covers the lookup too.
//!
//! The socket is built with socket2 so that it can be bound before it connects (mio's
//! `TcpStream::connect` cannot bind); the port is left to the kernel. A bind address of
//! one family cannot reach an address of the other, so such addresses are skipped
//! ([`usable`]) rather than tried and failed.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry};
use socket2::{Domain, Protocol, Socket, Type};

use super::resolve::{self, Answer, Request, Resolver, Wake};
use super::Uplink;
use crate::net::token;

/// Host name lookups: the resolver thread, started the first time a bridge needs it.
pub(super) struct Dns {
    resolver: Option<Resolver>,
    wake: Wake,
    next_id: u64,
}

/// Where a bridge's dial and probe stand, besides their sockets.
#[derive(Default)]
pub(super) struct Dialing {
    /// Addresses of the current dial still to try, in order.
    rest: VecDeque<SocketAddr>,
    /// The address the uplink is connecting or connected to.
    current: Option<SocketAddr>,
    /// `Action::Dial { index }` waits for the lookup of that entry's host name.
    wait: Option<usize>,
    probe_rest: VecDeque<SocketAddr>,
    /// `Action::Probe { index }` waits for a lookup.
    probe_wait: Option<usize>,
    /// The one lookup this bridge has on the resolver thread: id, host, port.
    lookup: Option<(u64, String, u16)>,
}

impl Dns {
    pub(super) fn new(wake: Wake) -> Dns {
        Dns {
            resolver: None,
            wake,
            next_id: 0,
        }
    }

    /// Queues a lookup; its id, or why it cannot be made.
    fn ask(&mut self, host: &str, port: u16) -> Result<u64, String> {
        if self.resolver.is_none() {
            let r = Resolver::start(self.wake.clone())
                .map_err(|e| format!("cannot start the resolver thread: {e}"))?;
            self.resolver = Some(r);
        }
        self.next_id += 1;
        let req = Request {
            id: self.next_id,
            host: host.to_string(),
            port,
        };
        match self.resolver.as_mut().map(|r| r.ask(req)) {
            Some(true) => Ok(self.next_id),
            _ => Err("too many lookups pending".into()),
        }
    }

    pub(super) fn answers(&self) -> Vec<Answer> {
        self.resolver
            .as_ref()
            .map(Resolver::answers)
            .unwrap_or_default()
    }
}

impl Dialing {
    /// Whether lookup `id` is this bridge's.
    pub(super) fn asked(&self, id: u64) -> bool {
        self.lookup.as_ref().is_some_and(|(l, ..)| *l == id)
    }

    pub(super) fn current(&self) -> Option<SocketAddr> {
        self.current
    }

    /// The uplink's dial ended (or the link): nothing more to try. A lookup still on
    /// the thread stays counted, so a new dial waits for it instead of asking again.
    pub(super) fn abandon(&mut self) {
        self.rest.clear();
        self.current = None;
        self.wait = None;
    }
}

impl Uplink {
    /// `Action::Dial`: the entry's addresses, now for an IP literal, else once resolved.
    pub(super) fn dial(&mut self, registry: &Registry, dns: &mut Dns, index: usize, now: Instant) {
        self.drop_stream(registry);
        let Some(a) = self.bridge.address(index) else {
            self.bridge.handle_closed(now);
            return;
        };
        match resolve::literal(&a.host) {
            Some(ip) => {
                self.dial.rest.push_back(SocketAddr::new(ip, a.port));
                self.connect_next(registry, now);
            }
            None => {
                self.dial.wait = Some(index);
                self.ask(dns, now);
            }
        }
    }

    /// `Action::Probe`: whether the primary accepts connections, without disturbing the
    /// link.
    pub(super) fn probe(&mut self, registry: &Registry, dns: &mut Dns, index: usize, now: Instant) {
        if self.probe.is_some() || self.dial.probe_wait.is_some() {
            return; // the last probe is still under way
        }
        let Some(a) = self.bridge.address(index) else {
            self.bridge.handle_probe(now, false);
            return;
        };
        match resolve::literal(&a.host) {
            Some(ip) => {
                self.dial.probe_rest.push_back(SocketAddr::new(ip, a.port));
                self.probe_next(registry, now);
            }
            None => {
                self.dial.probe_wait = Some(index);
                self.ask(dns, now);
            }
        }
    }

    /// Sends the lookup a waiting dial (first) or probe needs, unless one is on the
    /// thread already: its answer comes first. A lookup that cannot be made fails now.
    fn ask(&mut self, dns: &mut Dns, now: Instant) {
        if self.dial.lookup.is_some() {
            return;
        }
        let Some(index) = self.dial.wait.or(self.dial.probe_wait) else {
            return;
        };
        let Some(a) = self.bridge.address(index).cloned() else {
            return;
        };
        match dns.ask(&a.host, a.port) {
            Ok(id) => self.dial.lookup = Some((id, a.host, a.port)),
            Err(e) => {
                let dial = self.dial.wait == Some(index);
                let probe = self.dial.probe_wait == Some(index);
                self.lookup_failed(&a.host, &e, dial, probe, now);
            }
        }
    }

    /// The resolver's answer to this bridge's lookup.
    pub(super) fn handle_answer(
        &mut self,
        registry: &Registry,
        dns: &mut Dns,
        answer: Answer,
        now: Instant,
    ) {
        let Some((_, host, port)) = self.dial.lookup.take() else {
            return;
        };
        let matches = |i: Option<usize>, b: &crate::bridge::Bridge<_>| {
            i.and_then(|i| b.address(i))
                .is_some_and(|a| a.host == host && a.port == port)
        };
        let bind = self.bridge.settings().bridge.bind_address;
        // A dial waits only while the state machine still dials that entry.
        let for_dial = matches(self.dial.wait, &self.bridge)
            && self.dial.wait == self.bridge.phase().dialing_index();
        let for_probe = matches(self.dial.probe_wait, &self.bridge);
        if matches(self.dial.wait, &self.bridge) && !for_dial {
            self.dial.wait = None; // stale: never ask again for it
        }
        match &answer.result {
            Err(e) => self.lookup_failed(&host, e, for_dial, for_probe, now),
            Ok(addrs) => {
                debug!("bridge {}: {host} is {addrs:?}", self.name());
                let usable: VecDeque<SocketAddr> =
                    addrs.iter().filter(|a| usable(a, bind)).copied().collect();
                if usable.is_empty() {
                    let e = format!("no address of the family of bridge_bind_address {bind:?}");
                    self.lookup_failed(&host, &e, for_dial, for_probe, now);
                } else {
                    if for_dial {
                        self.dial.wait = None;
                        self.dial.rest = usable.clone();
                        self.connect_next(registry, now);
                    }
                    if for_probe {
                        self.dial.probe_wait = None;
                        self.dial.probe_rest = usable;
                        self.probe_next(registry, now);
                    }
                }
            }
        }
        // A dial or probe of another entry may be waiting.
        self.ask(dns, now);
    }

    /// The lookup for the waiting dial and/or probe failed: for a dial a failed attempt,
    /// logged as a warning (a probe's failure is only debug-logged: it repeats every 5 s).
    fn lookup_failed(&mut self, host: &str, e: &str, dial: bool, probe: bool, now: Instant) {
        if dial {
            self.dial.wait = None;
            warn!("bridge {}: cannot resolve {host}: {e}", self.name());
            self.bridge.handle_closed(now);
        }
        if probe {
            self.dial.probe_wait = None;
            debug!("bridge {}: probe: cannot resolve {host}: {e}", self.name());
            self.bridge.handle_probe(now, false);
        }
    }

    /// Connects to the next address of the dial; when none is left the attempt failed.
    fn connect_next(&mut self, registry: &Registry, now: Instant) {
        let bind = self.bridge.settings().bridge.bind_address;
        while let Some(addr) = self.dial.rest.pop_front() {
            let token = token::bridge(self.slot, false);
            let opened = connect(addr, bind).and_then(|mut s| {
                let _ = s.set_nodelay(true);
                registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(s)
            });
            match opened {
                Ok(s) => {
                    self.stream = Some(s);
                    self.dialing = true;
                    self.dial.current = Some(addr);
                    return;
                }
                Err(e) => debug!("bridge {}: connect to {addr}: {e}", self.name()),
            }
        }
        self.dial.current = None;
        self.dialing = false;
        self.bridge.handle_closed(now);
    }

    /// A readiness event while the uplink connects: up (TLS started, CONNECT next), still
    /// connecting (a spurious event), or failed (the next address).
    pub(super) fn handle_dial_event(&mut self, registry: &Registry, now: Instant) {
        let Some(s) = self.stream.as_ref() else {
            return;
        };
        match outcome(s) {
            Outcome::Pending => {}
            Outcome::Connected => {
                self.dialing = false;
                if self.start_transport() {
                    self.bridge.handle_connected(now);
                } else {
                    self.drop_stream(registry);
                    self.bridge.handle_closed(now);
                }
            }
            Outcome::Failed(e) => {
                if let Some(mut s) = self.stream.take() {
                    let _ = registry.deregister(&mut s);
                }
                if let Some(a) = self.dial.current {
                    debug!("bridge {}: connect to {a}: {e}", self.name());
                }
                self.connect_next(registry, now);
            }
        }
    }

    fn probe_next(&mut self, registry: &Registry, now: Instant) {
        let bind = self.bridge.settings().bridge.bind_address;
        while let Some(addr) = self.dial.probe_rest.pop_front() {
            let token = token::bridge(self.slot, true);
            let opened = connect(addr, bind).and_then(|mut s| {
                registry.register(&mut s, token, Interest::WRITABLE)?;
                Ok(s)
            });
            if let Ok(s) = opened {
                self.probe = Some(s);
                return;
            }
        }
        self.bridge.handle_probe(now, false);
    }

    /// A readiness event on the probe socket.
    pub(super) fn handle_probe_event(&mut self, registry: &Registry, now: Instant) {
        let Some(s) = self.probe.as_ref() else {
            return;
        };
        let up = match outcome(s) {
            Outcome::Pending => return,
            Outcome::Connected => true,
            Outcome::Failed(_) => false,
        };
        self.drop_probe(registry);
        if up {
            self.dial.probe_rest.clear();
            self.bridge.handle_probe(now, true);
        } else {
            self.probe_next(registry, now);
        }
    }

    pub(super) fn drop_probe(&mut self, registry: &Registry) {
        if let Some(mut p) = self.probe.take() {
            let _ = registry.deregister(&mut p);
        }
    }
}

/// Starts connecting to `addr` from `bind` (port chosen by the kernel); the first
/// writable event tells how it went ([`outcome`]).
pub(super) fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(bind) = bind else {
        return TcpStream::connect(addr);
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::new(bind, 0).into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind to {bind}: {e}")))?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        // socket2 opens sockets close-on-exec; a non-blocking connect is under way.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Whether `addr` can be reached from `bind` (same address family).
pub(super) fn usable(addr: &SocketAddr, bind: Option<IpAddr>) -> bool {
    bind.is_none_or(|b| b.is_ipv4() == addr.is_ipv4())
}

/// How a connect in progress stands after a readiness event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Connected,
    /// A spurious event: still connecting (mio: `peer_addr` says `NotConnected`).
    Pending,
    Failed(String),
}

/// Mio's recipe for a non-blocking connect: `take_error`, then `peer_addr`.
pub(super) fn outcome(s: &TcpStream) -> Outcome {
    match s.take_error() {
        Ok(Some(e)) | Err(e) => return Outcome::Failed(e.to_string()),
        Ok(None) => {}
    }
    match s.peer_addr() {
        Ok(_) => Outcome::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Outcome::Pending,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    fn wait_connected(s: &TcpStream) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match outcome(s) {
                Outcome::Pending if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                o => return o,
            }
        }
    }

    #[test]
    fn bound_connect_uses_the_bind_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        // Linux routes all of 127/8 to the loopback interface.
        let s = connect(to, Some(IpAddr::from([127, 0, 0, 2]))).unwrap();
        assert_eq!(wait_connected(&s), Outcome::Connected);
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 2]));
        let s = connect(to, None).unwrap();
        assert_eq!(wait_connected(&s), Outcome::Connected);
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn refused_connect_fails_and_a_foreign_bind_address_is_an_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // free again once dropped
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        // Refused at once or at the first event, depending on the kernel.
        if let Ok(s) = connect(to, Some(IpAddr::from([127, 0, 0, 1]))) {
            assert!(matches!(wait_connected(&s), Outcome::Failed(_)));
        }
        // TEST-NET-3 is on no interface of a test machine: bind fails (EADDRNOTAVAIL).
        let e = connect(to, Some(IpAddr::from([203, 0, 113, 7]))).unwrap_err();
        assert!(e.to_string().contains("bind to 203.0.113.7"), "{e}");
    }

    /// One dial tries the resolved addresses in order: a refused one, then one that
    /// accepts, and reports the link only once connected.
    #[test]
    fn a_dial_moves_on_to_the_next_resolved_address() {
        use crate::bridge::Phase;
        use crate::broker::Broker;
        use crate::config::{parse_with, Config, MemSource};
        use std::path::{Path, PathBuf};
        use std::sync::Arc;

        let good = TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let text = format!("connection up\naddress {refused}\ntopic t out\nnotifications false\n");
        let src = MemSource([(PathBuf::from("/w.conf"), text)].into_iter().collect());
        let parsed = parse_with(&src, Path::new("/w.conf")).unwrap();
        let mut broker = Broker::new(Config::in_memory());
        let mut poll = mio::Poll::new().unwrap();
        let mut uplinks = super::super::Uplinks::new(Arc::new(|| {}));
        let now = Instant::now();
        uplinks.start(&mut broker, &parsed.config.bridges, 20, now);
        let l = &mut uplinks.links[0];
        assert!(matches!(l.bridge.phase(), Phase::Dialing { index: 0, .. }));
        // As if the name had resolved to both.
        l.dial.rest = [refused, good.local_addr().unwrap()].into();
        l.connect_next(poll.registry(), now);
        let mut events = mio::Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(l.bridge.phase(), Phase::Dialing { .. }) {
            assert!(Instant::now() < deadline, "never connected");
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            if !events.is_empty() {
                l.handle_dial_event(poll.registry(), now);
            }
        }
        assert!(matches!(
            l.bridge.phase(),
            Phase::Connecting { index: 0, .. }
        ));
        assert_eq!(l.dial.current(), Some(good.local_addr().unwrap()));
        assert!(l.dial.rest.is_empty());
        good.accept().unwrap();
    }

    #[test]
    fn families_must_match_the_bind_address() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert!(usable(&v4, None) && usable(&v6, None));
        let b4 = Some(IpAddr::from([127, 0, 0, 2]));
        assert!(usable(&v4, b4) && !usable(&v6, b4));
    }
}
