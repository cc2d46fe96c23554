//! `wrenmq-bench`: a load generator for MQTT 3.1.1 brokers (wrenmq, Mosquitto, ...).
//!
//! One thread, one `mio::Poll`, non-blocking sockets, batched writes; QoS 1 publishers are
//! pipelined with a per-publisher window. Every scenario is bounded in message count and
//! time and prints exactly one summary line of `key=value` pairs on stdout, including the
//! generator's own CPU use (`gen_cpu`, fraction of one core) and, given `--pid`, the
//! broker's (`broker_cpu`), so a reader can tell which side was the bottleneck.
//!
//! Throughput scenarios keep an end-to-end window: publishers stop while more than
//! `--window` messages are sent but not yet received by the subscribers. That measures the
//! rate a broker sustains without dropping (both brokers drop QoS 0 to a subscriber that
//! falls too far behind, and queue at most `max_queued_messages` QoS 1 messages); a
//! window that stays full with no progress for 250 ms is written off as lost.
//!
//! ```text
//! wrenmq-bench fanin    [--pubs 50] [--qos 0|1] [--payload 16] [--duration 5]
//!                       [--sub-clean 1|0] [--sub-id ID]
//! wrenmq-bench fill     [--msgs 1000000] [--pubs 10] [--payload 16] [--sub-id ID]
//!                       [--sub 1|0] [--sub-host ADDR]
//! wrenmq-bench drain    --sub-host ADDR [--msgs 100000] [--client-id ID] [--t0-ns NS] [--idle 5]
//! wrenmq-bench ready    [--t0-ns NS] [--timeout 300] [--client-id ID] [--clean 1|0]
//! wrenmq-bench fanout   [--subs 100] [--payload 16] [--duration 5]
//! wrenmq-bench latency  [--rate 2000] [--qos 0] [--payload 16] [--duration 5]
//! wrenmq-bench conns    [--count 10000] [--keepalive 60] [--hold 3] --pid PID
//! wrenmq-bench subscale [--exact 100000] [--wildcards 1000] [--duration 5]
//! common: [--host 127.0.0.1:1883] [--label NAME] [--pid PID] [--window N] [--max-msgs N]
//!         [--sub-host ADDR] (fanin, fill: the subscriber on another broker) [--up-pid PID]
//!         [--spin 1|0] (0: sleep in poll while the publishers wait, see `Flow::spin`)
//! wrenmq-bench handshakes [--count 500] [--concurrency 16]   (with WRENMQ_BENCH_TLS_CA)
//! environment: WRENMQ_BENCH_V5=1 makes every client speak MQTT 5.0 instead of 3.1.1;
//!   WRENMQ_BENCH_TLS_CA=ca.pem makes every client connect over TLS (any scenario)
//! ```
//!
//! Durability: `fanin --sub-clean 0` subscribes with a persistent session (clean session
//! 0, client id `--sub-id`), so a broker with persistence journals every delivery; with
//! `--pid` the line then also holds the broker's `/proc/PID/io` `write_bytes` over the
//! phase and per message received. `fill` leaves a persistent subscriber offline and
//! publishes `--msgs` QoS 1 messages (all acknowledged) that the broker must queue for it;
//! `ready` measures how long after `--t0-ns` (wall clock, `date +%s%N` before the broker
//! was started) a TCP connect succeeds and a CONNACK arrives, i.e. the broker's recovery.
//!
//! Bridges (issue 14): `--host` is the bridging broker (publishers), `--sub-host` its
//! upstream (the subscriber), so `fanin --sub-host UP` measures the forwarding rate
//! through the bridge; `fill --sub 0` queues messages for a bridge whose upstream is
//! down, and `drain` reconnects a persistent subscriber on the upstream once it is back
//! and times the bridge's drain. `--up-pid` adds the upstream's CPU (`up_cpu`), to tell
//! whether the upstream was the bottleneck.

mod bridge;
mod net;
mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use net::{cpu_seconds, io_field, status_field, Incoming, Net, Template};
use wrenmq::protocol::QoS;

/// Publishes appended to one publisher's buffer per turn at most.
const BATCH: u64 = 64;

/// A full window with no delivery for this long is written off as lost.
const STALL: Duration = Duration::from_millis(250);

struct Args {
    scenario: String,
    opts: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut it = std::env::args().skip(1);
        let scenario = it.next().ok_or("missing scenario")?;
        let mut opts = HashMap::new();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {k}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            opts.insert(key.to_string(), v);
        }
        Ok(Args { scenario, opts })
    }

    fn str(&self, k: &str, default: &str) -> String {
        self.opts
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, String> {
        match self.opts.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad value {v}")),
        }
    }

    fn qos(&self) -> Result<QoS, String> {
        QoS::from_u8(self.num("qos", 0u8)?)
            .filter(|q| *q != QoS::ExactlyOnce)
            .ok_or_else(|| "--qos must be 0 or 1".to_string())
    }
}

/// The summary line under construction.
struct Line(String);

impl Line {
    fn new(scenario: &str, label: &str) -> Line {
        Line(format!("scenario={scenario} broker={label}"))
    }
    fn kv(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Line {
        let _ = write!(self.0, " {k}={v}");
        self
    }
    fn f(&mut self, k: &str, v: f64) -> &mut Line {
        let _ = write!(self.0, " {k}={v:.3}");
        self
    }
}

/// Measures this process's and the broker's CPU time over a phase (and, given
/// `--up-pid`, the upstream broker's in the bridge scenarios: `up_cpu`).
struct CpuMeter {
    pid: Option<String>,
    wall: Instant,
    gen: f64,
    broker: f64,
    up: Option<(String, f64)>,
}

impl CpuMeter {
    fn start(pid: &Option<String>) -> CpuMeter {
        CpuMeter {
            pid: pid.clone(),
            wall: Instant::now(),
            gen: cpu_seconds("self").unwrap_or(0.0),
            broker: pid.as_deref().and_then(cpu_seconds).unwrap_or(0.0),
            up: None,
        }
    }

    /// Also meters the upstream broker named by `--up-pid`, if any.
    fn upstream(mut self, args: &Args) -> CpuMeter {
        self.up = args
            .opts
            .get("up-pid")
            .map(|p| (p.clone(), cpu_seconds(p).unwrap_or(0.0)));
        self
    }

    fn finish(&self, line: &mut Line) {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let gen = cpu_seconds("self").unwrap_or(0.0) - self.gen;
        line.f("gen_cpu", gen / wall);
        if let Some(pid) = self.pid.as_deref() {
            let b = cpu_seconds(pid).unwrap_or(0.0) - self.broker;
            line.f("broker_cpu", b / wall);
        }
        if let Some((pid, c0)) = &self.up {
            let u = cpu_seconds(pid).unwrap_or(0.0) - c0;
            line.f("up_cpu", u / wall);
        }
    }
}

/// End-to-end flow control: how many more deliveries may be outstanding.
struct Window {
    size: u64,
    written_off: u64,
    /// Times a full window was written off.
    stalls: u64,
    last_received: u64,
    last_progress: Instant,
}

impl Window {
    fn new(size: u64) -> Window {
        Window {
            size,
            written_off: 0,
            stalls: 0,
            last_received: 0,
            last_progress: Instant::now(),
        }
    }

    fn credit(&mut self, sent: u64, received: u64, now: Instant) -> u64 {
        if received != self.last_received {
            self.last_received = received;
            self.last_progress = now;
        }
        let mut outstanding = sent.saturating_sub(received + self.written_off);
        if outstanding >= self.size && now.duration_since(self.last_progress) > STALL {
            self.written_off = sent.saturating_sub(received);
            self.stalls += 1;
            self.last_progress = now;
            outstanding = 0;
        }
        self.size.saturating_sub(outstanding)
    }
}

/// A windowed publish flow: `pubs` publish round-robin, each message reaches `fan`
/// subscribers.
struct Flow {
    pubs: Vec<usize>,
    templates: Vec<Template>,
    fan: u64,
    qos: QoS,
    window: u64,
    pub_window: u32,
    duration: Duration,
    max_msgs: u64,
    /// How long to wait for stragglers after the last publish.
    drain: Duration,
    /// Poll without sleeping while the window has credit (the default: the generator has
    /// a core of its own). `--spin 0` sleeps in `poll` until an event instead: the bridge
    /// scenarios share the generator's core with the upstream broker, which a spinning
    /// generator would starve while the publishers wait for their PUBACKs.
    spin: bool,
}

struct FlowResult {
    sent: u64,
    received: u64,
    secs: f64,
    stalls: u64,
}

fn run_flow(net: &mut Net, flow: &Flow) -> FlowResult {
    let mut window = Window::new(flow.window * flow.fan);
    let base = net.publishes;
    let mut received = 0u64;
    let mut sent = 0u64;
    let start = Instant::now();
    let mut last_rx = start;
    let end = start + flow.duration;
    let mut rr = 0usize;
    let mut handler = |_: usize, _: &Incoming<'_>| {};
    loop {
        let now = Instant::now();
        if now >= end || sent >= flow.max_msgs {
            break;
        }
        let mut credit = window.credit(sent * flow.fan, received, now) / flow.fan;
        credit = credit.min(flow.max_msgs - sent);
        let n = flow.pubs.len();
        let mut idle_pubs = 0;
        while credit > 0 && idle_pubs < n {
            let k = rr % n;
            rr += 1;
            let i = flow.pubs[k];
            let t = &flow.templates[k];
            let st = &mut net.conns[i].st;
            let mut m = credit.min(BATCH);
            if flow.qos != QoS::AtMostOnce {
                m = m.min(u64::from(flow.pub_window.saturating_sub(st.inflight)));
            }
            // Do not pile up behind a full socket: the broker is pushing back.
            if m == 0 || st.closed || st.wbuf.len() > 256 * 1024 {
                idle_pubs += 1;
                continue;
            }
            idle_pubs = 0;
            for _ in 0..m {
                let at = st.wbuf.len();
                st.wbuf.extend_from_slice(&t.bytes);
                if let Some(p) = t.pid_at {
                    let pid = st.next_pid();
                    st.wbuf[at + p..at + p + 2].copy_from_slice(&pid.to_be_bytes());
                    st.inflight += 1;
                }
            }
            net.mark(i);
            credit -= m;
            sent += m;
        }
        let before = received;
        let timeout = if credit > 0 && flow.spin {
            Duration::ZERO
        } else {
            Duration::from_millis(1)
        };
        net.turn(Some(timeout), &mut handler);
        received = net.publishes - base;
        if received != before {
            last_rx = Instant::now();
        }
    }
    // Drain: wait for what is still in flight.
    let mut quiet = Instant::now();
    while received < sent * flow.fan && quiet.elapsed() < flow.drain {
        let before = received;
        net.turn(Some(Duration::from_millis(5)), &mut handler);
        received = net.publishes - base;
        if received != before {
            last_rx = Instant::now();
            quiet = last_rx;
        }
    }
    FlowResult {
        sent,
        received,
        secs: last_rx.duration_since(start).as_secs_f64().max(1e-9),
        stalls: window.stalls,
    }
}

fn addr(args: &Args) -> Result<SocketAddr, String> {
    let h = args.str("host", "127.0.0.1:1883");
    h.parse().map_err(|_| format!("--host: bad address {h}"))
}

/// Where the subscriber connects: `--sub-host` (the upstream of a bridge), else `--host`.
fn sub_addr(args: &Args) -> Result<SocketAddr, String> {
    match args.opts.get("sub-host") {
        None => addr(args),
        Some(h) => h
            .parse()
            .map_err(|_| format!("--sub-host: bad address {h}")),
    }
}

fn prefix(tag: &str) -> String {
    format!("wb{}{tag}", std::process::id())
}

fn setup_deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// `--sub-clean`: whether the subscriber uses a clean session (default) or a persistent
/// one (`0`) with client id `--sub-id`.
fn sub_clean(args: &Args) -> Result<bool, String> {
    match args.num("sub-clean", 1u8)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!("--sub-clean: 0 or 1, not {v}")),
    }
}

/// Bytes the broker process caused to be written to storage so far (`None` without
/// `--pid` or where `/proc/PID/io` is not readable).
fn broker_write_bytes(args: &Args) -> Option<u64> {
    io_field(args.opts.get("pid")?, "write_bytes")
}

fn fanin(args: &Args, line: &mut Line) -> Result<(), String> {
    let pubs: usize = args.num("pubs", 50)?;
    let qos = args.qos()?;
    let payload: usize = args.num("payload", 16)?;
    let clean = sub_clean(args)?;
    let mut net = Net::new(sub_addr(args)?).map_err(|e| e.to_string())?;
    let sub = if clean {
        net.open(1, &prefix("s"), 60, 64, setup_deadline())?
    } else {
        let id = args.str("sub-id", "wrenmq-bench-durable");
        net.open_as(&id, false, 60, setup_deadline())?
    };
    let n = net.subscribe(sub, &["bench/#".to_string()], qos, 1);
    net.wait_subacks(n, setup_deadline())?;
    net.addr = addr(args)?;
    let first = net.open(pubs, &prefix("p"), 60, 64, setup_deadline())?;
    let flow = Flow {
        pubs: (first..first + pubs).collect(),
        templates: (0..pubs)
            .map(|k| Template::publish(&format!("bench/{k}"), qos, payload))
            .collect(),
        fan: 1,
        qos,
        window: args.num("window", 800)?,
        pub_window: args.num("pub-window", 20)?,
        duration: Duration::from_secs_f64(args.num("duration", 5.0)?),
        max_msgs: args.num("max-msgs", 50_000_000)?,
        drain: Duration::from_secs_f64(args.num("drain", 1.0)?),
        spin: args.num::<u8>("spin", 1)? != 0,
    };
    let cpu = CpuMeter::start(&args.opts.get("pid").cloned()).upstream(args);
    let written = broker_write_bytes(args);
    let r = run_flow(&mut net, &flow);
    line.kv("qos", qos as u8)
        .kv("pubs", pubs)
        .kv("payload", payload)
        .kv("sub_clean", u8::from(clean))
        .kv("sent", r.sent)
        .kv("received", r.received)
        .kv("lost", r.sent.saturating_sub(r.received))
        .f("secs", r.secs)
        .f("msgs_per_s", r.received as f64 / r.secs)
        .kv("stalls", r.stalls)
        .kv("closed", net.closed);
    if let (Some(a), Some(b)) = (written, broker_write_bytes(args)) {
        // Counted when pages are dirtied, so the writes of the last batches are in even
        // if the kernel writes them back later.
        let w = b.saturating_sub(a);
        line.kv("write_bytes", w)
            .f("bytes_per_msg", w as f64 / r.received.max(1) as f64);
    }
    cpu.finish(line);
    Ok(())
}

/// A persistent subscriber subscribes to `bench/#` at QoS 1 and disconnects; then `--pubs`
/// publishers send `--msgs` QoS 1 messages, pipelined (`--pub-window` each), and wait for
/// every PUBACK. The broker ends up holding all of them queued for the offline session.
fn fill(args: &Args, line: &mut Line) -> Result<(), String> {
    let msgs: u64 = args.num("msgs", 1_000_000)?;
    let pubs: usize = args.num::<usize>("pubs", 10)?.max(1);
    let payload: usize = args.num("payload", 16)?;
    let pub_window: u32 = args.num("pub-window", 20)?;
    let timeout = Duration::from_secs_f64(args.num("timeout", 600.0)?);
    let id = args.str("sub-id", "wrenmq-bench-durable");
    let mut net = Net::new(sub_addr(args)?).map_err(|e| e.to_string())?;
    let mut ignore = |_: usize, _: &Incoming<'_>| {};
    // `--sub 0`: publishers only (the bridge scenarios queue for the uplink, and the
    // persistent subscriber, if any, lives on the upstream).
    let subs = usize::from(args.num::<u8>("sub", 1)? != 0);
    if subs == 1 {
        let sub = net.open_as(&id, false, 60, setup_deadline())?;
        let n = net.subscribe(sub, &["bench/#".to_string()], QoS::AtLeastOnce, 1);
        net.wait_subacks(n, setup_deadline())?;
        net.send(sub, &[0xE0, 0x00]); // DISCONNECT: the session stays, offline
        let bye = Instant::now() + Duration::from_secs(5);
        while !net.conns[sub].st.closed && Instant::now() < bye {
            net.turn(Some(Duration::from_millis(5)), &mut ignore);
        }
    }
    net.addr = addr(args)?;
    let first = net.open(pubs, &prefix("p"), 60, 64, setup_deadline())?;
    let templates: Vec<Template> = (0..pubs)
        .map(|k| Template::publish(&format!("bench/{k}"), QoS::AtLeastOnce, payload))
        .collect();
    let cpu = CpuMeter::start(&args.opts.get("pid").cloned());
    let start = Instant::now();
    let mut sent = 0u64;
    let inflight = |net: &Net| -> u64 {
        (first..first + pubs)
            .map(|i| u64::from(net.conns[i].st.inflight))
            .sum()
    };
    loop {
        for (k, t) in templates.iter().enumerate() {
            let i = first + k;
            let st = &mut net.conns[i].st;
            if st.closed {
                continue;
            }
            let m = u64::from(pub_window.saturating_sub(st.inflight)).min(msgs - sent);
            for _ in 0..m {
                let at = st.wbuf.len();
                st.wbuf.extend_from_slice(&t.bytes);
                if let Some(p) = t.pid_at {
                    let pid = st.next_pid();
                    st.wbuf[at + p..at + p + 2].copy_from_slice(&pid.to_be_bytes());
                    st.inflight += 1;
                }
            }
            sent += m;
            if m > 0 {
                net.mark(i);
            }
        }
        net.turn(Some(Duration::from_millis(1)), &mut ignore);
        if (sent >= msgs && inflight(&net) == 0) || start.elapsed() > timeout || net.closed > subs {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let acked = sent - inflight(&net);
    line.kv("msgs", msgs)
        .kv("pubs", pubs)
        .kv("payload", payload)
        .kv("sent", sent)
        .kv("acked", acked)
        .f("secs", secs)
        .f("msgs_per_s", acked as f64 / secs)
        .kv("closed", net.closed.saturating_sub(subs));
    cpu.finish(line);
    if let Some(pid) = args.opts.get("pid") {
        // What the broker holds with the messages queued (the bridge scenarios: queued
        // for the uplink).
        line.kv("rss_kb", status_field(pid, "VmRSS").unwrap_or(0))
            .kv("hwm_kb", status_field(pid, "VmHWM").unwrap_or(0));
    }
    if acked < msgs {
        return Err(format!("only {acked} of {msgs} messages acknowledged"));
    }
    Ok(())
}

/// Waits for a broker that is starting (e.g. replaying its data directory): retries TCP
/// connects until one succeeds, sends CONNECT on it and waits for the CONNACK. Times are
/// counted from `--t0-ns` (Unix time in ns; default: this program's start). A broker that
/// binds its listeners before recovering completes TCP connects early (they wait in the
/// backlog), so `connack_ms` is the figure that says when it serves clients.
fn ready(args: &Args, line: &mut Line) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::time::{SystemTime, UNIX_EPOCH};
    use wrenmq::protocol::{Connect, Packet, Properties};

    let now_ns = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let t0: u64 = args.num("t0-ns", now_ns())?;
    let ms = |t: u64| t.saturating_sub(t0) as f64 / 1e6;
    let timeout = Duration::from_secs_f64(args.num("timeout", 300.0)?);
    let client_id = args.str("client-id", &prefix("r"));
    let clean = args.num::<u8>("clean", 1)? != 0;
    let addr = addr(args)?;
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(format!("connect {addr}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    let tcp = now_ns();
    let mut pkt = Vec::new();
    Packet::Connect(Connect {
        version: net::protocol_version(),
        clean_start: clean,
        keep_alive: 60,
        properties: Properties::EMPTY,
        client_id: &client_id,
        will: None,
        username: None,
        password: None,
        bridge: false,
    })
    .encode(net::protocol_version(), &mut pkt);
    stream
        .write_all(&pkt)
        .map_err(|e| format!("CONNECT: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let mut ack = [0u8; 4];
    stream
        .read_exact(&mut ack)
        .map_err(|e| format!("waiting for CONNACK: {e}"))?;
    let connack = now_ns();
    if ack[0] != 0x20 || ack[3] != 0 {
        return Err(format!("no CONNACK accepting the client: {ack:02x?}"));
    }
    line.f("tcp_ms", ms(tcp))
        .f("connack_ms", ms(connack))
        .kv("session_present", ack[2] & 1);
    if let Some(pid) = args.opts.get("pid") {
        line.kv("rss_kb", status_field(pid, "VmRSS").unwrap_or(0))
            .kv("hwm_kb", status_field(pid, "VmHWM").unwrap_or(0));
    }
    Ok(())
}

fn fanout(args: &Args, line: &mut Line) -> Result<(), String> {
    let subs: usize = args.num("subs", 100)?;
    let qos = args.qos()?;
    let payload: usize = args.num("payload", 16)?;
    let mut net = Net::new(addr(args)?).map_err(|e| e.to_string())?;
    let first = net.open(subs, &prefix("s"), 60, 64, setup_deadline())?;
    let mut expect = 0;
    for i in first..first + subs {
        expect += net.subscribe(i, &["bench/fanout".to_string()], qos, 1);
    }
    net.wait_subacks(expect, setup_deadline())?;
    let p = net.open(1, &prefix("p"), 60, 64, setup_deadline())?;
    let flow = Flow {
        pubs: vec![p],
        templates: vec![Template::publish("bench/fanout", qos, payload)],
        fan: subs as u64,
        qos,
        window: args.num("window", 500)?,
        pub_window: args.num("pub-window", 20)?,
        duration: Duration::from_secs_f64(args.num("duration", 5.0)?),
        max_msgs: args.num("max-msgs", 10_000_000)?,
        drain: Duration::from_secs_f64(args.num("drain", 1.0)?),
        spin: args.num::<u8>("spin", 1)? != 0,
    };
    let cpu = CpuMeter::start(&args.opts.get("pid").cloned());
    let r = run_flow(&mut net, &flow);
    let want = r.sent * subs as u64;
    line.kv("qos", qos as u8)
        .kv("subs", subs)
        .kv("payload", payload)
        .kv("sent", r.sent)
        .kv("received", r.received)
        .kv("lost", want.saturating_sub(r.received))
        .f("secs", r.secs)
        .f("msgs_per_s", r.received as f64 / r.secs)
        .kv("stalls", r.stalls)
        .kv("closed", net.closed);
    cpu.finish(line);
    Ok(())
}

fn latency(args: &Args, line: &mut Line) -> Result<(), String> {
    let rate: f64 = args.num("rate", 2000.0)?;
    let qos = args.qos()?;
    let payload: usize = args.num::<usize>("payload", 16)?.max(8);
    let duration = Duration::from_secs_f64(args.num("duration", 5.0)?);
    let warmup: usize = args.num("warmup", 200)?;
    let mut net = Net::new(addr(args)?).map_err(|e| e.to_string())?;
    let sub = net.open(1, &prefix("s"), 60, 64, setup_deadline())?;
    let n = net.subscribe(sub, &["bench/lat".to_string()], qos, 1);
    net.wait_subacks(n, setup_deadline())?;
    let p = net.open(1, &prefix("p"), 60, 64, setup_deadline())?;
    let t = Template::publish("bench/lat", qos, payload);
    let origin = net.origin;
    let samples = RefCell::new(Vec::with_capacity(
        (rate * duration.as_secs_f64()) as usize + 16,
    ));
    let mut handler = |_: usize, m: &Incoming<'_>| {
        if let Incoming::Publish { payload, .. } = m {
            if let Some(ts) = payload.get(..8) {
                let sent = u64::from_be_bytes(ts.try_into().unwrap_or([0; 8]));
                let now = origin.elapsed().as_nanos() as u64;
                samples.borrow_mut().push(now.saturating_sub(sent));
            }
        }
    };
    let interval = Duration::from_secs_f64(1.0 / rate);
    let cpu = CpuMeter::start(&args.opts.get("pid").cloned());
    let start = Instant::now();
    let end = start + duration;
    let mut next = start;
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if next <= now {
            let ts = (now.duration_since(origin).as_nanos() as u64).to_be_bytes();
            let st = &mut net.conns[p].st;
            while next <= now {
                let at = st.wbuf.len();
                st.wbuf.extend_from_slice(&t.bytes);
                st.wbuf[at + t.payload_at..at + t.payload_at + 8].copy_from_slice(&ts);
                if let Some(q) = t.pid_at {
                    let pid = st.next_pid();
                    st.wbuf[at + q..at + q + 2].copy_from_slice(&pid.to_be_bytes());
                }
                sent += 1;
                next += interval;
            }
            net.mark(p);
        }
        let wait = next.saturating_duration_since(Instant::now());
        net.turn(Some(wait), &mut handler);
    }
    let quiet = Instant::now();
    while (samples.borrow().len() as u64) < sent && quiet.elapsed() < Duration::from_secs(1) {
        net.turn(Some(Duration::from_millis(5)), &mut handler);
    }
    let samples = samples.take();
    let received = samples.len() as u64;
    let mut lat: Vec<u64> = samples.iter().skip(warmup).copied().collect();
    lat.sort_unstable();
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let k = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[k] as f64 / 1000.0
    };
    line.kv("qos", qos as u8)
        .f("rate", rate)
        .kv("payload", payload)
        .kv("sent", sent)
        .kv("received", received)
        .kv("lost", sent.saturating_sub(received))
        .f("p50_us", pct(0.50))
        .f("p99_us", pct(0.99))
        .f("p999_us", pct(0.999))
        .f(
            "max_us",
            lat.last().map_or(f64::NAN, |&v| v as f64 / 1000.0),
        )
        .kv("closed", net.closed);
    cpu.finish(line);
    Ok(())
}

fn conns(args: &Args, line: &mut Line) -> Result<(), String> {
    let count: usize = args.num("count", 10_000)?;
    let keep_alive: u16 = args.num("keepalive", 60)?;
    let hold = Duration::from_secs_f64(args.num("hold", 3.0)?);
    let settle = Duration::from_secs_f64(args.num("settle", 0.5)?);
    let pid = args.opts.get("pid").cloned();
    let rss = |k: &str| pid.as_deref().and_then(|p| status_field(p, k)).unwrap_or(0);
    let ctxt = || {
        pid.as_deref().map_or(0, |p| {
            status_field(p, "voluntary_ctxt_switches").unwrap_or(0)
                + status_field(p, "nonvoluntary_ctxt_switches").unwrap_or(0)
        })
    };
    let rss_before = rss("VmRSS");
    let mut net = Net::new(addr(args)?).map_err(|e| e.to_string())?;
    let cpu = CpuMeter::start(&pid);
    let start = Instant::now();
    let first = net.open(
        count,
        &prefix("c"),
        keep_alive,
        128,
        Instant::now() + Duration::from_secs(120),
    )?;
    let mut expect = 0;
    for k in 0..count {
        expect += net.subscribe(first + k, &[format!("bench/c/{k}")], QoS::AtMostOnce, 1);
    }
    net.wait_subacks(expect, Instant::now() + Duration::from_secs(120))?;
    let setup = start.elapsed().as_secs_f64();
    cpu.finish(line);
    let mut ignore = |_: usize, _: &Incoming<'_>| {};
    let settle_end = Instant::now() + settle;
    while Instant::now() < settle_end {
        net.turn(Some(Duration::from_millis(50)), &mut ignore);
    }
    let c0 = ctxt();
    let t0 = Instant::now();
    let hold_end = t0 + hold;
    while Instant::now() < hold_end {
        let left = hold_end.saturating_duration_since(Instant::now());
        net.turn(Some(left), &mut ignore);
    }
    let c1 = ctxt();
    let held = t0.elapsed().as_secs_f64();
    let rss_held = rss("VmRSS");
    line.kv("conns", count)
        .kv("keepalive", keep_alive)
        .f("setup_s", setup)
        .f("conn_per_s", count as f64 / setup)
        .kv("rss_before_kb", rss_before)
        .kv("rss_held_kb", rss_held)
        .kv("hwm_kb", rss("VmHWM"))
        .f(
            "bytes_per_conn",
            (rss_held.saturating_sub(rss_before) * 1024) as f64 / count.max(1) as f64,
        )
        .f("hold_s", held)
        .kv("wakeups", c1.saturating_sub(c0))
        .f("wakeups_per_s", c1.saturating_sub(c0) as f64 / held)
        .kv("closed", net.closed);
    Ok(())
}

fn subscale(args: &Args, line: &mut Line) -> Result<(), String> {
    let exact: usize = args.num("exact", 100_000)?;
    let wildcards: usize = args.num("wildcards", 1000)?;
    let fillers: usize = args.num("fillers", 10)?;
    let per_packet: usize = args.num("per-packet", 100)?;
    let payload: usize = args.num("payload", 16)?;
    let qos = args.qos()?;
    let mut net = Net::new(addr(args)?).map_err(|e| e.to_string())?;
    let first = net.open(fillers, &prefix("f"), 60, 64, setup_deadline())?;
    let start = Instant::now();
    let mut expect = 0;
    for f in 0..fillers {
        let mut filters: Vec<String> = (f..exact)
            .step_by(fillers)
            .map(|k| format!("bench/x/{k}"))
            .collect();
        filters.extend(
            (f..wildcards)
                .step_by(fillers)
                .map(|k| format!("bench/w/{k}/+")),
        );
        expect += net.subscribe(first + f, &filters, QoS::AtMostOnce, per_packet);
    }
    net.wait_subacks(expect, Instant::now() + Duration::from_secs(120))?;
    let setup = start.elapsed().as_secs_f64();
    let sub = net.open(1, &prefix("s"), 60, 64, setup_deadline())?;
    let n = net.subscribe(sub, &["bench/target".to_string()], qos, 1);
    net.wait_subacks(expect + n, setup_deadline())?;
    let p = net.open(1, &prefix("p"), 60, 64, setup_deadline())?;
    let flow = Flow {
        pubs: vec![p],
        templates: vec![Template::publish("bench/target", qos, payload)],
        fan: 1,
        qos,
        window: args.num("window", 800)?,
        pub_window: args.num("pub-window", 20)?,
        duration: Duration::from_secs_f64(args.num("duration", 5.0)?),
        max_msgs: args.num("max-msgs", 50_000_000)?,
        drain: Duration::from_secs_f64(args.num("drain", 1.0)?),
        spin: args.num::<u8>("spin", 1)? != 0,
    };
    let cpu = CpuMeter::start(&args.opts.get("pid").cloned());
    let r = run_flow(&mut net, &flow);
    line.kv("qos", qos as u8)
        .kv("exact", exact)
        .kv("wildcards", wildcards)
        .f("subscribe_s", setup)
        .f("subs_per_s", (exact + wildcards) as f64 / setup.max(1e-9))
        .kv("sent", r.sent)
        .kv("received", r.received)
        .kv("lost", r.sent.saturating_sub(r.received))
        .f("secs", r.secs)
        .f("msgs_per_s", r.received as f64 / r.secs)
        .kv("stalls", r.stalls)
        .kv("closed", net.closed);
    cpu.finish(line);
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wrenmq-bench: {e}");
            eprintln!(
                "usage: wrenmq-bench fanin|fanout|latency|conns|subscale|fill|drain|ready [--key value]..."
            );
            return ExitCode::from(2);
        }
    };
    let mut line = Line::new(&args.scenario, &args.str("label", "broker"));
    let result = match args.scenario.as_str() {
        "fanin" => fanin(&args, &mut line),
        "fill" => fill(&args, &mut line),
        "drain" => bridge::drain(&args, &mut line),
        "ready" => ready(&args, &mut line),
        "fanout" => fanout(&args, &mut line),
        "latency" => latency(&args, &mut line),
        "conns" => conns(&args, &mut line),
        "subscale" => subscale(&args, &mut line),
        "handshakes" => tls::handshakes(&args, &mut line),
        s => Err(format!("unknown scenario {s}")),
    };
    match result {
        Ok(()) => {
            println!("{}", line.0);
            ExitCode::SUCCESS
        }
        Err(e) => {
            line.kv("error", format!("{e:?}").replace(' ', "_"));
            println!("{}", line.0);
            eprintln!("wrenmq-bench: {}: {e}", args.scenario);
            ExitCode::FAILURE
        }
    }
}
