//! The bridge scenario that needs its own loop: `drain` (see the crate docs). The
//! forwarding rate is `fanin --sub-host`, the queueing `fill --sub 0`.

use std::time::{Duration, Instant};

use crate::net::{Incoming, Net};
use crate::{setup_deadline, sub_addr, Args, CpuMeter, Line};
use wrenmq::protocol::QoS;

/// The bridge's drain after an outage: waits for the upstream `--sub-host` (retrying TCP
/// connects), connects the subscriber `--client-id` there (with `--subscribe 0`, the
/// default, a persistent session whose `bench/#` subscription was made before the
/// outage, so nothing the bridge forwards before it is back is lost), and counts deliveries until `--msgs` arrived or nothing
/// came for `--idle` seconds after the first. Times are from `--t0-ns` (when the upstream was started);
/// the rate is over first to last delivery, so the bridge's reconnect delay
/// (`restart_timeout`) is not in it. `--host` and `--pid` are the bridging broker (only
/// its CPU is read), `--up-pid` the upstream.
pub fn drain(args: &Args, line: &mut Line) -> Result<(), String> {
    use std::time::{SystemTime, UNIX_EPOCH};
    let now_ns = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let t0: u64 = args.num("t0-ns", now_ns())?;
    let ms = |t: u64| t.saturating_sub(t0) as f64 / 1e6;
    let msgs: u64 = args.num("msgs", 100_000)?;
    let idle = Duration::from_secs_f64(args.num("idle", 5.0)?);
    let timeout = Duration::from_secs_f64(args.num("timeout", 300.0)?);
    let id = args.str("client-id", "wrenmq-bench-bridge");
    let addr = sub_addr(args)?;
    let deadline = Instant::now() + timeout;
    // The upstream is starting: wait until it accepts connections.
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{addr} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    // `--subscribe 1`: the upstream keeps no sessions (no persistence), so a clean
    // subscriber subscribes now. It is subscribed a few ms after the upstream listens,
    // and a bridge retrying every second rarely reconnects within them; if one does,
    // what it forwarded before the SUBACK is lost upstream and shows as `lost`.
    let subscribe = args.num::<u8>("subscribe", 0)? != 0;
    let sub = net.open_as(&id, subscribe, 60, setup_deadline())?;
    if subscribe {
        let n = net.subscribe(sub, &["bench/#".to_string()], QoS::AtLeastOnce, 1);
        net.wait_subacks(n, setup_deadline())?;
    }
    let connack = now_ns();
    let mut ignore = |_: usize, _: &Incoming<'_>| {};
    let (mut first, mut last) = (None, connack);
    // CPU from the first delivery on: the bridge's wait to reconnect is idle time.
    let mut cpu = None;
    let mut quiet = Instant::now();
    // `--idle` counts from the first delivery: until then the bridge may still be
    // waiting to reconnect (Mosquitto's took 5-10 s with `restart_timeout 1`).
    while net.publishes < msgs
        && (first.is_none() || quiet.elapsed() < idle)
        && Instant::now() < deadline
    {
        let before = net.publishes;
        net.turn(Some(Duration::from_millis(5)), &mut ignore);
        if net.publishes != before {
            last = now_ns();
            if first.is_none() {
                first = Some(last);
                cpu = Some(CpuMeter::start(&args.opts.get("pid").cloned()).upstream(args));
            }
            quiet = Instant::now();
        }
        if net.conns[sub].st.closed {
            return Err("the upstream closed the subscriber".into());
        }
    }
    let received = net.publishes;
    let first = first.unwrap_or(last);
    let secs = (last.saturating_sub(first) as f64 / 1e9).max(1e-9);
    line.kv("msgs", msgs)
        .kv("received", received)
        .kv("lost", msgs.saturating_sub(received))
        .kv(
            "session_present",
            u8::from(net.conns[sub].st.session_present),
        )
        .f("connack_ms", ms(connack))
        .f("first_ms", ms(first))
        .f("last_ms", ms(last))
        .f("secs", secs)
        .f("msgs_per_s", received as f64 / secs);
    if let Some(cpu) = cpu {
        cpu.finish(line);
    }
    Ok(())
}
