//! A fault-injecting TCP proxy on loopback for the bridge tests: it forwards
//! 127.0.0.1:`port()` to an upstream port, and the test switches it between
//!
//! - **pass**: bytes flow both ways;
//! - **cut**: every current connection is closed and new ones are refused (the listening
//!   socket is closed, so a connect gets RST as from a host whose broker is down);
//! - **black hole**: connections stay open and new ones are accepted, but no byte is
//!   forwarded in either direction (a half-open link: the peers see silence, not a close).
//!   Nothing is read or dropped: the bytes wait in the socket buffers, as they would in a
//!   partitioned network's retransmission queues;
//! - **restore**: back to pass. Connections that were black-holed resume where they were
//!   (a healed partition); connections accepted during the black hole, which never
//!   reached the upstream, are closed.
//!
//! Threads, bounded: one acceptor, two pumps per connection, at most [`MAX_CONNECTIONS`]
//! connections at once (more are closed on accept). Everything stops when the proxy is
//! dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections held at once; beyond, a new connection is closed at once.
pub const MAX_CONNECTIONS: usize = 32;

const PASS: u8 = 0;
const CUT: u8 = 1;
const BLACK_HOLE: u8 = 2;
/// How often idle threads look at the mode.
const TICK: Duration = Duration::from_millis(10);

/// One proxied connection: the downstream (accepted) socket and, unless it was accepted
/// during a black hole, the upstream one.
struct Conn {
    down: TcpStream,
    up: Option<TcpStream>,
    closed: AtomicBool,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.down.shutdown(Shutdown::Both);
        if let Some(up) = &self.up {
            let _ = up.shutdown(Shutdown::Both);
        }
    }
}

struct Shared {
    mode: AtomicU8,
    stop: AtomicBool,
    /// `None` while cut.
    listener: Mutex<Option<TcpListener>>,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Connections accepted so far (for tests that check a dial happened).
    accepted: Mutex<usize>,
}

/// The proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    port: u16,
    upstream: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy in pass mode on a free loopback port, forwarding to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        // From `free_port`, so that no other listener of this test binary is handed the
        // port while the proxy is cut.
        // The port may be taken in between (a client's ephemeral source port comes from
        // the same range): take another.
        let (port, listener) = (0..50)
            .find_map(|_| {
                let port = super::procs::free_port();
                TcpListener::bind(("127.0.0.1", port))
                    .ok()
                    .map(|l| (port, l))
            })
            .expect("a free port for the proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(PASS),
            stop: AtomicBool::new(false),
            listener: Mutex::new(Some(listener)),
            conns: Mutex::new(Vec::new()),
            accepted: Mutex::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(&s, upstream));
        FaultProxy {
            port,
            upstream,
            shared,
        }
    }

    /// A proxy that starts cut: its port is known (for a config file) but refuses
    /// connections until [`FaultProxy::restore`].
    pub fn start_cut(upstream: u16) -> FaultProxy {
        let p = FaultProxy::start(upstream);
        p.cut();
        p
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn upstream(&self) -> u16 {
        self.upstream
    }

    /// Connections accepted so far (including ones closed since).
    pub fn accepted(&self) -> usize {
        *lock(&self.shared.accepted)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        let conns = lock(&self.shared.conns);
        conns
            .iter()
            .filter(|c| !c.closed.load(Ordering::SeqCst))
            .count()
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        let mut listener = lock(&self.shared.listener);
        self.shared.mode.store(CUT, Ordering::SeqCst);
        *listener = None;
        drop(listener);
        for c in lock(&self.shared.conns).drain(..) {
            c.close();
        }
    }

    /// Holds every connection open and accepts new ones, forwarding nothing.
    pub fn black_hole(&self) {
        self.shared.mode.store(BLACK_HOLE, Ordering::SeqCst);
        self.listen();
    }

    /// Back to pass mode (see the module docs for what happens to held connections).
    pub fn restore(&self) {
        self.listen();
        let conns = lock(&self.shared.conns);
        for c in conns.iter().filter(|c| c.up.is_none()) {
            c.close();
        }
        self.shared.mode.store(PASS, Ordering::SeqCst);
    }

    /// Listens again on the same port after a cut.
    fn listen(&self) {
        let mut listener = lock(&self.shared.listener);
        if listener.is_some() {
            return;
        }
        // std sets SO_REUSEADDR, so the port is ours again unless someone else bound it
        // in between (an ephemeral port: unlikely, and then the test says so).
        let deadline = Instant::now() + Duration::from_secs(5);
        let l = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(TICK);
                }
                Err(e) => panic!("proxy port {} taken while cut: {e}", self.port),
            }
        };
        l.set_nonblocking(true).expect("non-blocking");
        *listener = Some(l);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        *lock(&self.shared.listener) = None;
        for c in lock(&self.shared.conns).drain(..) {
            c.close();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(s: &Arc<Shared>, upstream: u16) {
    while !s.stop.load(Ordering::SeqCst) {
        let accepted = lock(&s.listener).as_ref().map(TcpListener::accept);
        let down = match accepted {
            Some(Ok((down, _))) => down,
            Some(Err(e)) if e.kind() != ErrorKind::WouldBlock => {
                std::thread::sleep(TICK);
                continue;
            }
            _ => {
                std::thread::sleep(TICK);
                continue;
            }
        };
        *lock(&s.accepted) += 1;
        let _ = down.set_nonblocking(false);
        let _ = down.set_nodelay(true);
        let mut conns = lock(&s.conns);
        conns.retain(|c| !c.closed.load(Ordering::SeqCst));
        if conns.len() >= MAX_CONNECTIONS {
            continue; // dropped: closed
        }
        let up = match s.mode.load(Ordering::SeqCst) {
            PASS => match TcpStream::connect(("127.0.0.1", upstream)) {
                Ok(up) => Some(up),
                Err(_) => continue, // upstream down: the client sees a close
            },
            _ => None, // black hole: held, never reaches the upstream
        };
        if let Some(up) = &up {
            let _ = up.set_nodelay(true);
        }
        let conn = Arc::new(Conn {
            down,
            up,
            closed: AtomicBool::new(false),
        });
        conns.push(conn.clone());
        drop(conns);
        if conn.up.is_some() {
            for to_upstream in [true, false] {
                let (c, s) = (conn.clone(), s.clone());
                std::thread::spawn(move || pump(&s, &c, to_upstream));
            }
        }
    }
}

/// Copies one direction while the mode is pass; in a black hole it reads nothing.
fn pump(s: &Shared, c: &Conn, to_upstream: bool) {
    let Some(up) = &c.up else { return };
    let (mut from, mut to) = if to_upstream {
        (&c.down, up)
    } else {
        (up, &c.down)
    };
    let _ = from.set_read_timeout(Some(TICK * 5));
    let mut buf = [0u8; 16 * 1024];
    while !s.stop.load(Ordering::SeqCst) && !c.closed.load(Ordering::SeqCst) {
        if s.mode.load(Ordering::SeqCst) != PASS {
            std::thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Read just as a black hole began: held until the link is restored.
                while s.mode.load(Ordering::SeqCst) == BLACK_HOLE
                    && !s.stop.load(Ordering::SeqCst)
                    && !c.closed.load(Ordering::SeqCst)
                {
                    std::thread::sleep(TICK);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    c.close();
}

/// A plain forwarder (no faults) from 127.0.0.1:`from` to 127.0.0.1:`to`, for the life of the process.
pub fn open_gate(from: u16, to: u16) {
    let listener = TcpListener::bind(("127.0.0.1", from)).expect("gate port");
    std::thread::spawn(move || {
        for down in listener.incoming().flatten() {
            let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut d, mut u) = (down, up);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d, &mut u);
                let _ = u.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut u2, &mut d2);
                let _ = d2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}
