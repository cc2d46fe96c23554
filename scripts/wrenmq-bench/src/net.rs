//! The client side of the load generator: many non-blocking MQTT connections on one
//! `mio::Poll`, with batched writes and a light frame scanner on the read side.
//!
//! Packets the generator sends are encoded once by the crate's own codec (templates) and
//! copied into per-connection write buffers; incoming bytes are split into frames by a
//! scanner that reads only the fixed header and, for PUBLISH, the topic length and packet
//! id, so the generator spends as little as possible per message. QoS 1 deliveries are
//! acknowledged automatically; CONNACK, SUBACK and PUBACK update the connection's counters.
//!
//! Procfs helpers at the bottom read CPU time and memory of this process and of the broker.

use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wrenmq::protocol::{
    Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions,
};

/// Size of the shared read buffer.
const SCRATCH: usize = 256 * 1024;

/// One incoming packet, as far as the generator cares.
pub enum Incoming<'a> {
    Publish { payload: &'a [u8] },
    Other,
}

/// Per-connection state other than the socket and its partial input.
#[derive(Default)]
pub struct State {
    pub wbuf: Vec<u8>,
    wpos: usize,
    dirty: bool,
    pub connected: bool,
    /// The CONNACK's session-present flag.
    pub session_present: bool,
    pub closed: bool,
    pub subacks: u32,
    /// Outbound QoS 1 publishes not yet acknowledged.
    pub inflight: u32,
    next_pid: u16,
}

pub struct Conn {
    stream: TcpStream,
    /// TLS client session when `WRENMQ_BENCH_TLS_CA` is set (see `tls.rs`).
    tls: Option<Box<rustls::ClientConnection>>,
    rbuf: Vec<u8>,
    pub st: State,
}

pub struct Net {
    poll: Poll,
    events: Events,
    pub conns: Vec<Conn>,
    scratch: Vec<u8>,
    /// Decrypted bytes of the connection being read (TLS only).
    plain: Vec<u8>,
    dirty: Vec<usize>,
    /// Events of the current turn, copied out of `events` (reused).
    ready: Vec<(usize, bool, bool)>,
    /// Where the next connections go (a scenario may switch it between `open` calls, e.g.
    /// the bridge scenarios' subscriber on the upstream, publishers on the bridging broker).
    pub addr: SocketAddr,
    /// Totals over all connections.
    pub connacks: usize,
    pub subacks: usize,
    pub closed: usize,
    pub refused: usize,
    /// PUBLISH packets received.
    pub publishes: u64,
    /// The time base of latency timestamps.
    pub origin: Instant,
}

impl State {
    /// The next packet id (1..=65535, wrapping).
    pub fn next_pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.wrapping_add(1);
        if self.next_pid == 0 {
            self.next_pid = 1;
        }
        self.next_pid
    }
}

impl Net {
    pub fn new(addr: SocketAddr) -> io::Result<Net> {
        Ok(Net {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Vec::new(),
            scratch: vec![0; SCRATCH],
            plain: Vec::new(),
            dirty: Vec::new(),
            ready: Vec::new(),
            addr,
            connacks: 0,
            subacks: 0,
            closed: 0,
            refused: 0,
            publishes: 0,
            origin: Instant::now(),
        })
    }

    /// Appends bytes to a connection's write buffer; written at the end of the turn.
    pub fn send(&mut self, i: usize, bytes: &[u8]) {
        let st = &mut self.conns[i].st;
        st.wbuf.extend_from_slice(bytes);
        if !st.dirty {
            st.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Marks a connection whose `wbuf` was filled directly.
    pub fn mark(&mut self, i: usize) {
        let st = &mut self.conns[i].st;
        if !st.dirty {
            st.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Opens `count` connections (at most `max_pending` waiting for CONNACK at a time) and
    /// waits for every CONNACK. Returns the index of the first.
    pub fn open(
        &mut self,
        count: usize,
        prefix: &str,
        keep_alive: u16,
        max_pending: usize,
        deadline: Instant,
    ) -> Result<usize, String> {
        let id = |k: usize| format!("{prefix}{k}");
        self.open_with(count, &id, true, keep_alive, max_pending, deadline)
    }

    /// Opens one connection with exactly this client id and clean-session flag and waits
    /// for its CONNACK. Returns its index.
    pub fn open_as(
        &mut self,
        client_id: &str,
        clean_start: bool,
        keep_alive: u16,
        deadline: Instant,
    ) -> Result<usize, String> {
        let id = |_: usize| client_id.to_string();
        self.open_with(1, &id, clean_start, keep_alive, 1, deadline)
    }

    /// [`Net::open`] with the client id of the k-th connection given by `id` and the
    /// clean-session flag.
    fn open_with(
        &mut self,
        count: usize,
        id: &dyn Fn(usize) -> String,
        clean_start: bool,
        keep_alive: u16,
        max_pending: usize,
        deadline: Instant,
    ) -> Result<usize, String> {
        let first = self.conns.len();
        let target = self.connacks + count;
        let base = self.connacks;
        let (closed0, refused0) = (self.closed, self.refused);
        let mut opened = 0;
        let mut ignore = |_: usize, _: &Incoming<'_>| {};
        while self.connacks < target {
            while opened < count && opened - (self.connacks - base) < max_pending {
                let stream = TcpStream::connect(self.addr)
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                // Batches are written whole; Nagle would only add delay.
                let _ = stream.set_nodelay(true);
                let i = self.conns.len();
                let mut conn = Conn {
                    stream,
                    tls: crate::tls::client()?,
                    rbuf: Vec::new(),
                    st: State::default(),
                };
                self.poll
                    .registry()
                    .register(
                        &mut conn.stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| format!("register: {e}"))?;
                self.conns.push(conn);
                let id = id(opened);
                let mut pkt = Vec::new();
                Packet::Connect(Connect {
                    version: protocol_version(),
                    clean_start,
                    keep_alive,
                    properties: Properties::EMPTY,
                    client_id: &id,
                    will: None,
                    username: None,
                    password: None,
                    bridge: false,
                })
                .encode(protocol_version(), &mut pkt);
                self.send(i, &pkt);
                opened += 1;
            }
            self.turn(Some(Duration::from_millis(5)), &mut ignore);
            if self.closed > closed0 || self.refused > refused0 {
                return Err(format!(
                    "{} connections closed, {} refused while connecting",
                    self.closed - closed0,
                    self.refused - refused0
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out: {} of {count} connected",
                    self.connacks - base
                ));
            }
        }
        Ok(first)
    }

    /// Sends SUBSCRIBE packets (each with up to `per_packet` of `filters`) on connection `i`;
    /// returns how many SUBACKs to expect.
    pub fn subscribe(
        &mut self,
        i: usize,
        filters: &[String],
        qos: QoS,
        per_packet: usize,
    ) -> usize {
        let mut n = 0;
        let mut pkt = Vec::new();
        for chunk in filters.chunks(per_packet.max(1)) {
            let pid = self.conns[i].st.next_pid();
            pkt.clear();
            Packet::Subscribe(Subscribe {
                packet_id: pid.try_into().unwrap_or(std::num::NonZeroU16::MIN),
                properties: Properties::EMPTY,
                filters: chunk
                    .iter()
                    .map(|f| {
                        (
                            f.as_str(),
                            SubscriptionOptions {
                                qos,
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
            })
            .encode(protocol_version(), &mut pkt);
            self.send(i, &pkt);
            n += 1;
        }
        n
    }

    /// Runs turns until `subacks` reaches `target`.
    pub fn wait_subacks(&mut self, target: usize, deadline: Instant) -> Result<(), String> {
        let mut ignore = |_: usize, _: &Incoming<'_>| {};
        let closed0 = self.closed;
        while self.subacks < target {
            self.turn(Some(Duration::from_millis(5)), &mut ignore);
            if self.closed > closed0 {
                return Err(format!(
                    "{} connections closed while subscribing",
                    self.closed - closed0
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out waiting for SUBACK ({} of {target})",
                    self.subacks
                ));
            }
        }
        Ok(())
    }

    /// Flushes pending output, waits for events at most `timeout`, reads every readable
    /// connection until `WouldBlock` (calling `h` per incoming packet), writes replies.
    pub fn turn<H: FnMut(usize, &Incoming<'_>)>(&mut self, timeout: Option<Duration>, h: &mut H) {
        self.flush_dirty();
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("wrenmq-bench: poll: {e}");
            }
            return;
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        for ev in self.events.iter() {
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            ready.push((ev.token().0, readable, ev.is_writable()));
        }
        for &(i, readable, writable) in &ready {
            if i >= self.conns.len() || self.conns[i].st.closed {
                continue;
            }
            if readable {
                self.read(i, h);
            }
            if writable && !self.conns[i].st.closed {
                let tls_pending = self.conns[i].tls.as_ref().is_some_and(|t| t.wants_write());
                let st = &mut self.conns[i].st;
                if !st.dirty && (st.wpos < st.wbuf.len() || tls_pending) {
                    st.dirty = true;
                    self.dirty.push(i);
                }
            }
        }
        self.ready = ready;
        self.flush_dirty();
    }

    fn read<H: FnMut(usize, &Incoming<'_>)>(&mut self, i: usize, h: &mut H) {
        loop {
            let Net {
                conns,
                scratch,
                plain,
                dirty,
                connacks,
                subacks,
                closed,
                refused,
                publishes,
                ..
            } = self;
            let conn = &mut conns[i];
            let n = match conn.stream.read(scratch) {
                Ok(0) => {
                    conn.st.closed = true;
                    *closed += 1;
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    conn.st.closed = true;
                    *closed += 1;
                    return;
                }
            };
            let mut cx = Counters {
                connacks,
                subacks,
                refused,
                publishes,
            };
            let before = conn.st.wbuf.len();
            let input: &[u8] = match conn.tls.as_deref_mut() {
                None => &scratch[..n],
                Some(t) => match crate::tls::decrypt(t, &scratch[..n], plain) {
                    Ok(()) => {
                        if t.wants_write() && !conn.st.dirty {
                            conn.st.dirty = true;
                            dirty.push(i);
                        }
                        &plain[..]
                    }
                    Err(e) => {
                        eprintln!("wrenmq-bench: TLS: {e}");
                        conn.st.closed = true;
                        *closed += 1;
                        return;
                    }
                },
            };
            if conn.rbuf.is_empty() {
                let used = scan(input, i, &mut conn.st, &mut cx, h);
                conn.rbuf.extend_from_slice(&input[used..]);
            } else {
                conn.rbuf.extend_from_slice(input);
                let rbuf = std::mem::take(&mut conn.rbuf);
                let used = scan(&rbuf, i, &mut conn.st, &mut cx, h);
                conn.rbuf = rbuf;
                conn.rbuf.drain(..used);
            }
            if conn.st.wbuf.len() != before && !conn.st.dirty {
                conn.st.dirty = true;
                dirty.push(i);
            }
            if n < scratch.len() {
                // A short read: the socket is very likely drained; the edge-triggered
                // event for later data will come anyway, so skip the extra syscall.
                return;
            }
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let st = &mut self.conns[i].st;
            st.dirty = false;
            if st.closed {
                st.wbuf.clear();
                st.wpos = 0;
                continue;
            }
            let Conn {
                stream, st, tls, ..
            } = &mut self.conns[i];
            if let Some(t) = tls.as_deref_mut() {
                // rustls buffers the records (no limit set); the socket takes what it can.
                let _ = t.writer().write_all(&st.wbuf[st.wpos..]);
                st.wpos = st.wbuf.len();
                while t.wants_write() {
                    match t.write_tls(stream) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            while st.wpos < st.wbuf.len() {
                match stream.write(&st.wbuf[st.wpos..]) {
                    Ok(0) => break,
                    Ok(n) => st.wpos += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Blocked, or still connecting: the WRITABLE edge brings us back.
                    Err(_) => break,
                }
            }
            if st.wpos == st.wbuf.len() {
                st.wbuf.clear();
                st.wpos = 0;
            } else if st.wpos > 64 * 1024 && st.wpos * 2 > st.wbuf.len() {
                st.wbuf.drain(..st.wpos);
                st.wpos = 0;
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}

struct Counters<'a> {
    connacks: &'a mut usize,
    subacks: &'a mut usize,
    refused: &'a mut usize,
    publishes: &'a mut u64,
}

/// Splits `buf` into packets, updates `st` and calls `h`; returns the bytes consumed
/// (a partial packet at the end is left).
fn scan<H: FnMut(usize, &Incoming<'_>)>(
    buf: &[u8],
    i: usize,
    st: &mut State,
    cx: &mut Counters<'_>,
    h: &mut H,
) -> usize {
    let mut pos = 0;
    while let Some((hdr, total)) = frame(&buf[pos..]) {
        let first = buf[pos];
        let body = &buf[pos + hdr..pos + total];
        pos += total;
        match first >> 4 {
            3 => {
                let qos = (first >> 1) & 3;
                if body.len() < 2 {
                    continue;
                }
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let mut at = 2 + tlen;
                if qos > 0 && body.len() >= at + 2 {
                    st.wbuf
                        .extend_from_slice(&[0x40, 0x02, body[at], body[at + 1]]);
                    at += 2;
                }
                if protocol_version() == ProtocolVersion::V5 {
                    // Skip the property block: a variable byte integer length, then that
                    // many bytes.
                    let (mut len, mut shift) = (0usize, 0);
                    while let Some(&b) = body.get(at) {
                        at += 1;
                        len |= usize::from(b & 0x7F) << shift;
                        shift += 7;
                        if b & 0x80 == 0 || shift > 21 {
                            break;
                        }
                    }
                    at += len;
                }
                let payload = body.get(at..).unwrap_or(&[]);
                *cx.publishes += 1;
                h(i, &Incoming::Publish { payload });
            }
            2 => {
                if body.get(1) == Some(&0) {
                    st.connected = true;
                    st.session_present = body.first().is_some_and(|f| f & 1 == 1);
                    *cx.connacks += 1;
                } else {
                    *cx.refused += 1;
                }
                h(i, &Incoming::Other);
            }
            9 => {
                st.subacks += 1;
                *cx.subacks += 1;
                h(i, &Incoming::Other);
            }
            4 => {
                st.inflight = st.inflight.saturating_sub(1);
                h(i, &Incoming::Other);
            }
            _ => h(i, &Incoming::Other),
        }
    }
    pos
}

/// Fixed header length and total packet length, if the whole packet is in `buf`.
fn frame(buf: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    let mut shift = 0;
    for k in 1..5 {
        let b = *buf.get(k)?;
        len |= usize::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            let total = k + 1 + len;
            return (buf.len() >= total).then_some((k + 1, total));
        }
        shift += 7;
    }
    None
}

/// An encoded PUBLISH and where its packet id and payload sit, for patching copies.
pub struct Template {
    pub bytes: Vec<u8>,
    pub pid_at: Option<usize>,
    pub payload_at: usize,
}

impl Template {
    pub fn publish(topic: &str, qos: QoS, payload_len: usize) -> Template {
        let payload = vec![0x5Au8; payload_len];
        let mut bytes = Vec::new();
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then_some(std::num::NonZeroU16::MIN),
            properties: Properties::EMPTY,
            payload: &payload,
        };
        p.encode(protocol_version(), &mut bytes);
        let payload_at = bytes.len() - payload_len;
        // The packet id sits just before the payload, or before the (empty, one-byte)
        // property block in 5.0.
        let props = usize::from(protocol_version() == ProtocolVersion::V5);
        let pid_at = (qos != QoS::AtMostOnce).then_some(payload_at - 2 - props);
        Template {
            bytes,
            pid_at,
            payload_at,
        }
    }
}

/// Fields of `/proc/PID/status` (kB values, counters).
pub fn status_field(pid: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Fields of `/proc/PID/io` (byte counters; `write_bytes` is what the process caused to
/// be written to storage, counted when it dirties page-cache pages).
pub fn io_field(pid: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// User + system CPU time of a process in seconds, from `/proc/PID/stat` (`self` for
/// this process). Clock ticks are taken as 100 per second (`getconf CLK_TCK` on Linux).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces, in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The MQTT version the generator speaks: 3.1.1, or 5.0 when `WRENMQ_BENCH_V5=1` (to
/// compare both protocol paths of a broker on the same scenarios).
pub fn protocol_version() -> ProtocolVersion {
    static V5: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *V5.get_or_init(|| std::env::var("WRENMQ_BENCH_V5").is_ok_and(|v| v == "1")) {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}
