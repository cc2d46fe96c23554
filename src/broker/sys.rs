//! `$SYS/broker/...`: Mosquitto's statistics topics, with its names, payload formats and
//! update rules (checked against Mosquitto 2.0.11's `sys_tree.c` and its output), so that
//! dashboards and exporters written for Mosquitto read wrenmq unchanged.
//!
//! The counters ([`Stats`]) are plain integers bumped where the event happens (no
//! allocation, no lookup on the publish path). [`Broker::handle_sys_update`] turns them
//! into retained messages once per `sys_interval`; the event loop owns the one timer that
//! calls it (none at all with `sys_interval 0`), and passes `now` like every other input.
//!
//! As in Mosquitto: every topic is published retained at QoS 2 (a subscriber gets the QoS
//! it was granted) and only when its value changed, except `uptime`, which is published
//! every interval, and `version`, published once. The load averages are exponential
//! moving averages of per-minute rates over 1, 5 and 15 minutes, republished when they
//! move by 0.01 or more. Unlike Mosquitto, the messages carry no 60 s message expiry (a
//! value that did not change stays readable) and are never written to the data files
//! (they are rebuilt at every start).

use std::fmt::Write;
use std::time::Instant;

use super::message::Message;
use super::routing::Routed;
use super::Broker;
use crate::protocol::QoS;

/// Counters for logs and `$SYS`. Monotonic since the broker started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections_accepted: u64,
    /// PUBLISH packets received.
    pub messages_received: u64,
    /// PUBLISH packets sent.
    pub messages_sent: u64,
    /// QoS 0 messages dropped because a client's write buffer was full.
    pub dropped_slow_consumer: u64,
    /// Messages dropped because a session's queue was full.
    pub dropped_queue_full: u64,
    /// Incoming messages dropped or refused because the broker was over `memory_limit`.
    pub dropped_memory_limit: u64,
    /// Messages refused or dropped because a bridge's outbound queue was full.
    pub dropped_bridge_queue: u64,
    /// Packets of any type received.
    pub packets_received: u64,
    /// Packets other than PUBLISH sent (acknowledgements, CONNACK, SUBACK, PINGRESP...).
    pub control_sent: u64,
    /// Bytes the event loop read from clients.
    pub bytes_received: u64,
    /// Bytes the event loop wrote to clients.
    pub bytes_sent: u64,
    /// Payload bytes of the PUBLISH packets received.
    pub publish_bytes_received: u64,
    /// Payload bytes of the PUBLISH packets sent.
    pub publish_bytes_sent: u64,
    /// CONNECTs accepted.
    pub connects: u64,
    /// Sessions ended by their expiry.
    pub sessions_expired: u64,
}

impl Stats {
    /// Messages dropped for any reason (`$SYS/broker/publish/messages/dropped`).
    pub fn dropped(&self) -> u64 {
        self.dropped_slow_consumer
            + self.dropped_queue_full
            + self.dropped_memory_limit
            + self.dropped_bridge_queue
    }
}

/// The load-average metrics, in Mosquitto's order; the rate of each is taken from the
/// counter of the same index in [`load_counters`].
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// The averaging windows, in seconds, and their topic suffixes.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

fn load_counters(s: &Stats) -> [u64; 9] {
    [
        s.packets_received,
        s.messages_sent + s.control_sent,
        s.dropped(),
        s.messages_received,
        s.messages_sent,
        s.bytes_received,
        s.bytes_sent,
        s.connections_accepted,
        s.connects,
    ]
}

/// The integer topics: the value each had when last published lives in
/// `SysTree::published` at the same index.
#[derive(Clone, Copy)]
enum Int {
    ClientsTotal,
    ClientsMaximum,
    ClientsDisconnected,
    ClientsConnected,
    ClientsExpired,
    StoreCount,
    StoreBytes,
    Subscriptions,
    SharedSubscriptions,
    Retained,
    HeapCurrent,
    HeapMaximum,
    MessagesReceived,
    MessagesSent,
    PublishDropped,
    PublishReceived,
    PublishSent,
    BytesReceived,
    BytesSent,
    PublishBytesReceived,
    PublishBytesSent,
}

const INTS: usize = Int::PublishBytesSent as usize + 1;

/// What the `$SYS` tree remembers between updates.
#[derive(Debug, Default)]
pub(super) struct SysTree {
    /// The first update: uptime counts from here (the loop updates once at start).
    started: Option<Instant>,
    /// The previous update, for the rates.
    last: Option<Instant>,
    /// [`load_counters`] at the previous update.
    prev: [u64; 9],
    /// Current averages, `[metric][window]`.
    loads: [[f64; 3]; 9],
    /// Last published value per [`Int`]; `None` = not published yet.
    published: [Option<u64>; INTS],
    /// Highest `memory_used` seen at an update.
    heap_max: usize,
    /// Reused for payloads.
    buf: String,
}

impl Broker {
    /// Publishes the `$SYS/broker/...` topics whose values changed since the last call.
    /// The event loop calls it once at start and then every `sys_interval`.
    pub fn handle_sys_update(&mut self, now: Instant) {
        let mut sys = std::mem::take(&mut self.sys);
        sys.update(self, now);
        self.sys = sys;
    }

    /// Publishes one retained `$SYS` message as the broker (no client, no ACL check on
    /// writing; reading is checked per subscriber in `route`).
    fn publish_sys(&mut self, name: &str, payload: &str, now: Instant) {
        let topic = format!("$SYS/broker/{name}");
        let msg = Message::metered(
            &self.meter,
            &topic,
            payload.as_bytes(),
            QoS::ExactlyOnce,
            true,
            Box::default(),
            None,
        );
        if self.config.retain_available {
            // Not journaled: the tree is rebuilt at every start (see the module docs).
            self.retained.store(&msg);
        }
        self.route(&mut Routed::from_message(&msg, now));
    }

    /// Sessions with a live connection.
    fn connected_sessions(&self) -> u64 {
        self.sessions
            .iter()
            .filter(|(_, s)| s.conn().is_some())
            .count() as u64
    }
}

impl SysTree {
    fn update(&mut self, b: &mut Broker, now: Instant) {
        let started = *self.started.get_or_insert_with(|| {
            let version = format!("wrenmq version {}", env!("CARGO_PKG_VERSION"));
            b.publish_sys("version", &version, now);
            now
        });
        let uptime = now.saturating_duration_since(started).as_secs();
        self.buf.clear();
        let _ = write!(self.buf, "{uptime} seconds");
        b.publish_sys("uptime", &self.buf, now);

        let total = b.sessions.len() as u64;
        let connected = b.connected_sessions();
        if self.changed(Int::ClientsTotal, total, b, &["clients/total"], now) {
            // Mosquitto publishes the maximum only when the total rises above it.
            let max = self.published[Int::ClientsMaximum as usize].unwrap_or(0);
            if total > max {
                self.changed(Int::ClientsMaximum, total, b, &["clients/maximum"], now);
            }
        }
        let disconnected = total.saturating_sub(connected);
        let names = ["clients/inactive", "clients/disconnected"];
        self.changed(Int::ClientsDisconnected, disconnected, b, &names, now);
        let names = ["clients/active", "clients/connected"];
        self.changed(Int::ClientsConnected, connected, b, &names, now);
        let expired = b.stats.sessions_expired;
        self.changed(Int::ClientsExpired, expired, b, &["clients/expired"], now);

        self.update_loads(b, now);

        let store = b.meter.count() as u64;
        let names = ["messages/stored", "store/messages/count"];
        self.changed(Int::StoreCount, store, b, &names, now);
        let bytes = b.meter.bytes() as u64;
        self.changed(Int::StoreBytes, bytes, b, &["store/messages/bytes"], now);
        let subs = b.subscriptions.len() as u64;
        self.changed(Int::Subscriptions, subs, b, &["subscriptions/count"], now);
        let shared = b.subscriptions.shared_len() as u64;
        let names = ["shared_subscriptions/count"];
        self.changed(Int::SharedSubscriptions, shared, b, &names, now);
        let retained = b.retained.len() as u64;
        // The space is Mosquitto's: exporters derive metric names from it.
        let names = ["retained messages/count"];
        self.changed(Int::Retained, retained, b, &names, now);
        let heap = b.memory_used();
        self.heap_max = self.heap_max.max(heap);
        self.changed(Int::HeapCurrent, heap as u64, b, &["heap/current"], now);
        let max = self.heap_max as u64;
        self.changed(Int::HeapMaximum, max, b, &["heap/maximum"], now);

        let s = b.stats;
        let ints = [
            (
                Int::MessagesReceived,
                s.packets_received,
                "messages/received",
            ),
            (
                Int::MessagesSent,
                s.messages_sent + s.control_sent,
                "messages/sent",
            ),
            (Int::PublishDropped, s.dropped(), "publish/messages/dropped"),
            (
                Int::PublishReceived,
                s.messages_received,
                "publish/messages/received",
            ),
            (Int::PublishSent, s.messages_sent, "publish/messages/sent"),
            (Int::BytesReceived, s.bytes_received, "bytes/received"),
            (Int::BytesSent, s.bytes_sent, "bytes/sent"),
            (
                Int::PublishBytesReceived,
                s.publish_bytes_received,
                "publish/bytes/received",
            ),
            (
                Int::PublishBytesSent,
                s.publish_bytes_sent,
                "publish/bytes/sent",
            ),
        ];
        for (which, value, name) in ints {
            self.changed(which, value, b, &[name], now);
        }
        // Bridges (not built yet) will publish `$SYS/broker/connection/<name>/state` here.
    }

    /// Publishes `value` under each of `names` if it differs from what `which` last
    /// published; returns whether it did.
    fn changed(
        &mut self,
        which: Int,
        value: u64,
        b: &mut Broker,
        names: &[&str],
        now: Instant,
    ) -> bool {
        let slot = &mut self.published[which as usize];
        if *slot == Some(value) {
            return false;
        }
        *slot = Some(value);
        self.buf.clear();
        let _ = write!(self.buf, "{value}");
        for name in names {
            b.publish_sys(name, &self.buf, now);
        }
        true
    }

    /// Mosquitto's load averages: per metric, the rate over the last interval scaled to a
    /// minute, folded into each window's average with the weight `exp(-elapsed/window)`;
    /// published with two decimals when it moved by at least 0.01 (all of them, as 0.00,
    /// at the first update).
    fn update_loads(&mut self, b: &mut Broker, now: Instant) {
        let counters = load_counters(&b.stats);
        let elapsed = self
            .last
            .map(|last| now.saturating_duration_since(last).as_secs_f64());
        self.last = Some(now);
        let mut name = String::new();
        for (w, &(window, suffix)) in WINDOWS.iter().enumerate() {
            for (i, metric) in LOADS.iter().enumerate() {
                let current = self.loads[i][w];
                let new = match elapsed {
                    None => current,
                    Some(e) if e > 0.0 => {
                        let rate = counters[i].saturating_sub(self.prev[i]) as f64 * 60.0 / e;
                        rate + exp_neg(e / window) * (current - rate)
                    }
                    Some(_) => continue, // two updates in the same instant: nothing to fold
                };
                if elapsed.is_none() || (new - current).abs() >= 0.01 {
                    name.clear();
                    let _ = write!(name, "load/{metric}/{suffix}");
                    self.buf.clear();
                    let _ = write!(self.buf, "{new:.2}");
                    b.publish_sys(&name, &self.buf, now);
                }
                self.loads[i][w] = new;
            }
        }
        self.prev = counters;
    }
}

/// e^-x for x >= 0, without libm: `f64::exp` was the broker's only libm symbol, and
/// linking libm.so costs a dynamically linked broker about 450 kB of RSS at idle (pages
/// mapped at start-up, issue 11). x = k ln 2 + r with 0 <= r < ln 2; e^-r by its Taylor
/// series (20 terms: error below 1e-17); 2^-k from the exponent bits.
pub(super) fn exp_neg(x: f64) -> f64 {
    if x.is_nan() || x > 700.0 {
        return 0.0;
    }
    let x = x.max(0.0);
    // Truncation is floor for x >= 0; k <= 1010, so 1023 - k is a normal exponent.
    let k = (x / std::f64::consts::LN_2) as u64;
    let r = x - k as f64 * std::f64::consts::LN_2;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for n in 1..20 {
        term *= -r / f64::from(n);
        sum += term;
    }
    sum * f64::from_bits((1023 - k) << 52)
}
