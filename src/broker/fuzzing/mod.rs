//! The `broker` and `topic` fuzz harnesses (entries `crate::fuzzing::broker` and
//! `crate::fuzzing::topic`). Built only for `cfg(fuzzing)` and tests, and sans-IO like the
//! rest of `broker/`: the caller passes the start instant.
//!
//! - [`broker`]: the broker state machine driven by arbitrary operations of several 3.1,
//!   3.1.1 and 5.0 clients on a fake clock, with restarts from its journal. This file holds
//!   the harness's state and set-up; `run.rs` the operations (`BrokerRun::step`) and
//!   `checks.rs` the properties checked after each one.
//! - [`topic`]: the topic matcher and the subscription table against a naive oracle
//!   (`topic.rs`).

mod checks;
mod files;
mod run;
mod topic;

pub use topic::{naive_matches, topic};

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::{Broker, ConnId};
use crate::config::Config;
use crate::protocol::fuzzing::Bytes;
use crate::protocol::{PropertiesBuf, Property, ProtocolVersion};

const CLIENTS: usize = 4;
const CLIENT_IDS: [&str; 3] = ["c0", "c1", "c2"];
const TOPICS: [&str; 8] = ["a", "a/b", "a/b/c", "$SYS/x", "b", "/a", "a/", "b/a"];
const FILTERS: [&str; 10] = [
    "a", "a/#", "a/+", "#", "+/b", "+", "$SYS/#", "a/b/c", "+/+/+", "b",
];
/// Operations per input: keeps one run fast however long the input.
const MAX_OPS: usize = 400;
/// The wall clock at the harness's start (Unix ms): plausible, so that persisted times are
/// written and a restart counts expiry across it.
const WALL_T0: u64 = 1_764_820_000_000;

/// What a 5.0 client announced in its CONNECT, for checking what the broker sends it.
#[derive(Clone, Copy)]
struct V5Client {
    /// [MQTT-3.3.4-9]
    receive_maximum: u16,
    /// [MQTT-3.1.2-24]
    maximum_packet_size: u32,
}

/// The harness's view of one connection slot.
#[derive(Default)]
struct Slot {
    id: Option<ConnId>,
    /// The client id once CONNECT was accepted (for looking up its session).
    client: Option<Arc<str>>,
    version: Option<ProtocolVersion>,
    /// Set by a 5.0 CONNECT.
    v5: Option<V5Client>,
    /// Bytes at the front of the broker's output for this connection already checked.
    checked: usize,
    /// Packet ids of QoS 1/2 PUBLISHes and PUBRELs received, for acknowledging them.
    ids: Vec<(u8, u16)>,
    /// Packet ids of QoS 1/2 PUBLISHes received on this connection and not yet completed
    /// by a PUBACK, PUBCOMP or failing PUBREC of ours: at most the receive maximum
    /// [MQTT-3.3.4-9]. Any ack of an id takes it out, so this never counts more than the
    /// broker should.
    unacked: BTreeSet<u16>,
    /// Connected with an empty client id: the broker assigned one the harness cannot look
    /// up, so its deliveries are not checked against subscriptions.
    anonymous: bool,
}

/// One subscription of a session at the time a message was published.
struct SubSnap {
    filter: Arc<str>,
    no_local: bool,
    id: u32,
}

/// The state a published message must be delivered by.
struct Snap {
    /// Client id of the publishing connection (for no local), if known.
    publisher: Option<Arc<str>>,
    /// Message expiry interval it was published with.
    expiry: Option<u32>,
    /// Every session's subscriptions.
    subs: HashMap<Arc<str>, Vec<SubSnap>>,
}

struct BrokerRun {
    broker: Broker,
    /// The monotonic instant `WALL_T0` was read at.
    start: Instant,
    now: Instant,
    generation: u32,
    slots: Vec<Slot>,
    /// Per publish tag: the subscriptions at the time the message was published.
    snapshots: Vec<Snap>,
    /// Per client id: every filter its session has had since the harness began; the bound
    /// for deliveries the spec lets outlive a subscription (queued retained messages, wills
    /// and messages already queued when the client unsubscribed [MQTT-3.10.4-3]).
    ever: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Every client id ever accepted.
    clients: BTreeSet<Arc<str>>,
    /// PUBLISHes checked.
    deliveries: usize,
    /// The data files: snapshot `gen` (if any) and log `gen` are what a restart replays.
    files: files::Files,
    gen: u64,
    restarts: u32,
}

/// Target `broker`: byte 0 picks the limits, then each operation is an opcode byte and
/// its arguments. Operations on a slot whose client connected with 5.0 read extra bytes
/// for the 5.0 features (a 3.1/3.1.1 input reads exactly what it did before 5.0 was added).
/// Returns how many deliveries it checked (for the harness's own tests).
pub fn broker(data: &[u8], start: Instant) -> usize {
    let mut b = Bytes { data };
    let cfg = b.u8();
    let config = Config {
        max_inflight_messages: u16::from(cfg & 3),
        max_queued_messages: usize::from((cfg >> 2) & 3) * 2,
        max_queued_bytes: if cfg & 0x10 != 0 { 8 } else { 0 },
        queue_qos0_messages: cfg & 0x20 != 0,
        max_write_buffer: if cfg & 0x40 != 0 { 64 } else { 1 << 20 },
        retain_available: cfg & 0x80 == 0,
        connect_timeout: Duration::from_secs(5),
        // Journaling on, with every batch declared durable at once (see
        // `after_close_ops`): the held-output paths run too, and a restart replays it.
        persistence: true,
        ..Config::in_memory()
    };
    let files = files::Files::default();
    let mut run = BrokerRun {
        broker: new_broker(config, start, &files),
        start,
        now: start,
        generation: 0,
        slots: (0..CLIENTS).map(|_| Slot::default()).collect(),
        snapshots: Vec::new(),
        ever: HashMap::new(),
        clients: BTreeSet::new(),
        deliveries: 0,
        files,
        gen: 1,
        restarts: 0,
    };
    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        run.step(&mut b);
        // The loop drains the broker's closes every turn, whatever the turn did.
        run.after_close_ops();
        run.check();
    }
    run.deliveries
}

fn new_broker(config: Config, start: Instant, files: &files::Files) -> Broker {
    let mut broker = Broker::new(config);
    broker.set_frame_source(Box::new(files.clone()));
    broker.set_wall_clock(crate::broker::WallClock {
        at: start,
        unix_ms: WALL_T0,
    });
    broker
}

/// A property block built from `props`.
fn props(list: &[Property<'_>]) -> PropertiesBuf {
    let mut buf = PropertiesBuf::new();
    for p in list {
        buf.push(*p);
    }
    buf
}

/// The filter a `$share/{group}/{filter}` subscription matches with.
fn match_filter(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    }
}

fn packet_id(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}
