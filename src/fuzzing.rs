//! Fuzz harness bodies, one per cargo-fuzz target in `fuzz/fuzz_targets/`, kept in the
//! crate so that the targets are one-liners and so that `cargo test` on stable replays the
//! committed seed corpus (`fuzz/corpus/<target>/`) through the same code.
//!
//! Built only for `cfg(fuzzing)` (set by `cargo fuzz`) and for the unit tests. Every body
//! takes arbitrary bytes and panics exactly when a property is broken:
//!
//! - [`decode`]: the decoder never panics; whatever decodes re-encodes to an equal packet
//!   (the body lives in `protocol::fuzzing`).
//! - [`split`]: the event loop's framing (`net::input::feed`) fed a stream in arbitrary
//!   chunks hands over exactly the packets, and stops at exactly the error, of a
//!   whole-buffer decode.
//! - [`broker`]: the broker state machine driven by arbitrary operations of several 3.1,
//!   3.1.1 and 5.0 clients on a fake clock, with restarts from its journal: no panic,
//!   inflight and queue bounds hold, every byte it writes decodes (as the client's
//!   version), no PUBLISH reaches a client without a matching subscription (shared ones
//!   included) nor its publisher through no-local ones only [MQTT-3.8.3-3], a 5.0 client
//!   gets nothing over its maximum packet size [MQTT-3.1.2-24] and no more QoS 1/2
//!   PUBLISHes in flight than its receive maximum [MQTT-3.3.4-9], a restart brings every
//!   persistent session back with its subscriptions and messages, and the next deadline
//!   is never in the past right after the timers fired.
//! - [`topic`]: `protocol::topic::matches` and `SubscriptionTable::collect_matches` agree
//!   with the naive level-by-level matcher written here.
//! - [`store`]: the data-file loader never panics, reads in chunks what a whole-file read
//!   reads, and recovers valid records among garbage (the body lives in `store::fuzzing`).

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::{Broker, ConnId, Disconnect, InflightState, SubscriptionTable};
use crate::config::Config;
use crate::net::input::{self, Framing};
use crate::protocol::topic::{is_valid_topic_filter, is_valid_topic_name, matches};
use crate::protocol::{
    self, Ack, Connect, DecodeError, Packet, PropertiesBuf, Property, ProtocolVersion, Publish,
    QoS, ReasonCode, RetainHandling, Status, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use crate::store::record::{decode_payload, read_frame, Frame};

/// The fuzz target names, as directories under `fuzz/corpus/`.
pub const TARGETS: [&str; 5] = ["decode", "split", "broker", "topic", "store"];

/// Runs the harness body of the named target on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "decode" => decode(data),
        "split" => split(data),
        "broker" => broker(data),
        "topic" => topic(data),
        "store" => store(data),
        _ => panic!("unknown fuzz target {target}"),
    }
}

/// Target `store`: see `store::fuzzing`.
pub fn store(data: &[u8]) {
    crate::store::fuzzing::loader(data);
}

/// Target `decode`: see `protocol::fuzzing::decode_round_trip`.
pub fn decode(data: &[u8]) {
    protocol::fuzzing::decode_round_trip(data);
}

/// A cursor over the fuzzer's bytes; running out yields zeros so every read is total.
struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }
}

// ---------------------------------------------------------------------------------------
// split

/// Target `split`: byte 0 chooses the maximum packet size, byte 1 how many split points
/// follow (as 16-bit offsets); the rest is the stream.
pub fn split(data: &[u8]) {
    let mut b = Bytes { data };
    let max_packet_size = match b.u8() % 4 {
        0 => u32::MAX,
        1 => 2_000_000,
        2 => 64,
        _ => 5,
    };
    let cuts = usize::from(b.u8() % 16);
    let mut points: Vec<usize> = (0..cuts).map(|_| usize::from(b.u16())).collect();
    let stream = b.data;
    points.retain(|&p| p <= stream.len());
    points.sort_unstable();

    // Reference: decode the whole buffer front to back, as one read would.
    let mut want: Vec<Packet<'_>> = Vec::new();
    let mut want_err = None;
    let mut version = None;
    let mut rest = stream;
    while !rest.is_empty() {
        match protocol::decode(rest, version, max_packet_size) {
            Ok(Status::Complete((p, used))) => {
                assert!(used > 0 && used <= rest.len(), "decoder used {used} bytes");
                if let Packet::Connect(c) = &p {
                    version = Some(c.version);
                }
                rest = &rest[used..];
                want.push(p);
            }
            Ok(Status::Partial { needed }) => {
                assert!(
                    needed > rest.len(),
                    "Partial needs {needed} of {}",
                    rest.len()
                );
                break;
            }
            Err(e) => {
                want_err = Some(e);
                break;
            }
        }
    }

    // The loop's framing, fed the same bytes in chunks.
    let mut framing = Recorder {
        want: &want,
        seen: 0,
        version: None,
        max_packet_size,
        error: None,
    };
    let mut tail = Vec::new();
    let mut start = 0;
    for end in points.into_iter().chain([stream.len()]) {
        if end < start {
            continue;
        }
        if input::feed(&mut tail, &stream[start..end], &mut framing).is_err() {
            break;
        }
        start = end;
    }
    assert_eq!(framing.seen, want.len(), "chunked framing lost packets");
    assert_eq!(framing.error, want_err, "chunked framing ended differently");
}

/// The split target's consumer: compares each packet with the reference as it arrives
/// (packets borrow the loop's buffers, so they cannot be collected).
struct Recorder<'w, 'a> {
    want: &'w [Packet<'a>],
    seen: usize,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
    error: Option<DecodeError>,
}

impl Framing for Recorder<'_, '_> {
    fn decode<'b>(&mut self, buf: &'b [u8]) -> Result<Status<(Packet<'b>, usize)>, DecodeError> {
        protocol::decode(buf, self.version, self.max_packet_size)
    }

    fn packet(&mut self, packet: Packet<'_>) -> bool {
        let Some(want) = self.want.get(self.seen) else {
            panic!("chunked framing produced an extra packet {packet:?}");
        };
        assert_eq!(&packet, want, "packet {} differs when split", self.seen);
        if let Packet::Connect(c) = &packet {
            self.version = Some(c.version);
        }
        self.seen += 1;
        true
    }

    fn decode_error(&mut self, err: DecodeError) {
        assert!(self.error.is_none(), "two decode errors on one stream");
        self.error = Some(err);
    }
}

// ---------------------------------------------------------------------------------------
// topic

/// The oracle: level-by-level matching straight from §4.7, recursive and obviously right.
pub fn naive_matches(filter: &str, topic: &str) -> bool {
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            (None, None) => true,
            // `#` matches the parent level too: `a/#` matches `a` [MQTT-4.7.1-2].
            (Some((&"#", _)), _) => true,
            (Some((&"+", fr)), Some((_, tr))) => go(fr, tr),
            (Some((fl, fr)), Some((tl, tr))) => fl == tl && go(fr, tr),
            _ => false,
        }
    }
    // [MQTT-4.7.2-1] `$` topics are not matched by a filter starting with a wildcard.
    if topic.starts_with('$') && (filter.starts_with('#') || filter.starts_with('+')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    go(&f, &t)
}

/// Maps fuzzer bytes to a small alphabet so that topics and filters collide often; the
/// alphabet's own characters map to themselves so that seeds stay readable.
fn topic_text(bytes: &[u8]) -> String {
    const ALPHABET: [char; 8] = ['a', 'b', '/', '/', '+', '#', '$', 'c'];
    bytes
        .iter()
        .map(|&b| match b {
            b'a' | b'b' | b'c' | b'/' | b'+' | b'#' | b'$' => char::from(b),
            _ => ALPHABET[usize::from(b) % ALPHABET.len()],
        })
        .collect()
}

/// Target `topic`: the bytes are `0xFF`-separated strings. Each valid filter is subscribed
/// by a session (sessions reused every 3 filters), some are unsubscribed again, and every
/// valid topic is matched through both `matches` and the table, against the oracle.
pub fn topic(data: &[u8]) {
    // At most 48 words: the pairwise check is quadratic.
    let words: Vec<String> = data
        .split(|&b| b == 0xFF)
        .take(48)
        .map(topic_text)
        .collect();
    let mut table = SubscriptionTable::default();
    // (filter, session) pairs the table should hold.
    let mut subs: BTreeSet<(String, usize)> = BTreeSet::new();
    for (i, w) in words.iter().enumerate() {
        let session = i % 3;
        if is_valid_topic_filter(w) {
            if i % 5 == 4 && subs.contains(&(w.clone(), session)) {
                assert!(table.unsubscribe(w, session), "unsubscribe {w} lost");
                subs.remove(&(w.clone(), session));
            } else {
                let key = table.subscribe(w, session, SubscriptionOptions::default(), 0);
                assert_eq!(&*key, w.as_str());
                subs.insert((w.clone(), session));
            }
            assert_eq!(table.len(), subs.len());
        }
        for f in &words {
            if is_valid_topic_filter(f) && is_valid_topic_name(w) {
                assert_eq!(
                    matches(f, w),
                    naive_matches(f, w),
                    "filter {f:?} topic {w:?}"
                );
            }
        }
    }
    for t in words.iter().filter(|t| is_valid_topic_name(t)) {
        let mut got = Vec::new();
        table.collect_matches(t, &mut got);
        let mut got: Vec<usize> = got.iter().map(|s| s.session).collect();
        got.sort_unstable();
        let mut want: Vec<usize> = subs
            .iter()
            .filter(|(f, _)| naive_matches(f, t))
            .map(|&(_, s)| s)
            .collect();
        want.sort_unstable();
        assert_eq!(got, want, "collect_matches({t:?}) with {subs:?}");
    }
}

// ---------------------------------------------------------------------------------------
// broker

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
    /// Every journal batch since the last snapshot: what a restart replays.
    log: Vec<u8>,
    restarts: u32,
}

/// Target `broker`: byte 0 picks the limits, then each operation is an opcode byte and
/// its arguments. Operations on a slot whose client connected with 5.0 read extra bytes
/// for the 5.0 features (a 3.1/3.1.1 input reads exactly what it did before 5.0 was added).
pub fn broker(data: &[u8]) {
    broker_deliveries(data);
}

/// The `broker` body; returns how many deliveries it checked (for the harness's own tests).
fn broker_deliveries(data: &[u8]) -> usize {
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
    let start = Instant::now();
    let mut run = BrokerRun {
        broker: new_broker(config, start),
        start,
        now: start,
        generation: 0,
        slots: (0..CLIENTS).map(|_| Slot::default()).collect(),
        snapshots: Vec::new(),
        ever: HashMap::new(),
        clients: BTreeSet::new(),
        deliveries: 0,
        log: Vec::new(),
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

fn new_broker(config: Config, start: Instant) -> Broker {
    let mut broker = Broker::new(config);
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

impl BrokerRun {
    fn is_v5(&self, s: usize) -> bool {
        self.slots[s].version == Some(ProtocolVersion::V5)
    }

    fn step(&mut self, b: &mut Bytes<'_>) {
        let op = b.u8();
        let s = usize::from(op >> 4) % CLIENTS;
        let v5 = self.is_v5(s);
        match op & 0x0F {
            0 => self.open(s),
            1 => {
                let flags = b.u8();
                let version = [
                    ProtocolVersion::V311,
                    ProtocolVersion::V31,
                    ProtocolVersion::V311,
                    ProtocolVersion::V5,
                ][usize::from(flags & 3)];
                let client_id = if flags & 0x80 != 0 {
                    ""
                } else {
                    b.pick(&CLIENT_IDS)
                };
                let keep_alive = u16::from(b.u8() % 4);
                // 5.0 only: a selector byte, then one byte per property it selects.
                let (mut cp, mut wp) = (PropertiesBuf::new(), PropertiesBuf::new());
                if version == ProtocolVersion::V5 {
                    self.connect_properties(b, &mut cp, &mut wp);
                }
                let will = (flags & 0x08 != 0).then(|| Will {
                    topic: TOPICS[usize::from(flags >> 4) % TOPICS.len()],
                    payload: b"W",
                    qos: QoS::from_u8((flags >> 5) & 3).unwrap_or(QoS::AtMostOnce),
                    retain: flags & 0x40 != 0,
                    properties: wp.as_properties(),
                });
                let connect = Connect {
                    version,
                    clean_start: flags & 0x04 != 0,
                    keep_alive,
                    properties: cp.as_properties(),
                    client_id,
                    will,
                    username: None,
                    password: None,
                };
                self.packet(s, Packet::Connect(connect));
            }
            2 => {
                let n = usize::from(b.u8() % 3) + 1;
                let mut names: Vec<String> = Vec::with_capacity(n);
                let mut options = Vec::with_capacity(n);
                for _ in 0..n {
                    let f = b.pick(&FILTERS);
                    let qos = QoS::from_u8(b.u8() % 3).unwrap_or(QoS::AtMostOnce);
                    let mut o = SubscriptionOptions {
                        qos,
                        ..Default::default()
                    };
                    let mut name = f.to_string();
                    if v5 {
                        // Options byte: no local, retain as published, retain handling,
                        // shared (group g or h).
                        let x = b.u8();
                        o.no_local = x & 0x01 != 0;
                        o.retain_as_published = x & 0x02 != 0;
                        o.retain_handling = match (x >> 2) & 3 {
                            1 => RetainHandling::OnNewSubscribe,
                            2 => RetainHandling::Never,
                            _ => RetainHandling::OnSubscribe,
                        };
                        if x & 0x10 != 0 {
                            let group = if x & 0x20 != 0 { "h" } else { "g" };
                            name = format!("$share/{group}/{f}");
                        }
                    }
                    names.push(name);
                    options.push(o);
                }
                let packet_id = packet_id(b.u16());
                let mut sp = PropertiesBuf::new();
                if v5 {
                    // Subscription identifier (0: none; bit 7: the largest one).
                    let x = b.u8();
                    match (x & 0x3F, x & 0x80 != 0) {
                        (_, true) => sp.push(Property::SubscriptionIdentifier(268_435_455)),
                        (0, false) => {}
                        (id, false) => sp.push(Property::SubscriptionIdentifier(u32::from(id))),
                    }
                    if x & 0x40 != 0 {
                        sp.push(Property::UserProperty("k", "v"));
                    }
                }
                let filters = names.iter().map(String::as_str).zip(options).collect();
                self.packet(
                    s,
                    Packet::Subscribe(Subscribe {
                        packet_id,
                        properties: sp.as_properties(),
                        filters,
                    }),
                );
            }
            3 => {
                let f = b.pick(&FILTERS);
                let packet_id = packet_id(b.u16());
                let mut name = f.to_string();
                let mut up = PropertiesBuf::new();
                if v5 {
                    let x = b.u8();
                    if x & 0x01 != 0 {
                        let group = if x & 0x02 != 0 { "h" } else { "g" };
                        name = format!("$share/{group}/{f}");
                    }
                    if x & 0x04 != 0 {
                        up.push(Property::UserProperty("k", "v"));
                    }
                }
                self.packet(
                    s,
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id,
                        properties: up.as_properties(),
                        filters: vec![&name],
                    }),
                );
            }
            4 | 5 => {
                let flags = b.u8();
                let qos = QoS::from_u8(flags % 3).unwrap_or(QoS::AtMostOnce);
                let topic = TOPICS[usize::from(flags >> 2) % TOPICS.len()];
                let retain = flags & 0x80 != 0;
                let id = b.u8() % 4 + 1;
                let mut pp = PropertiesBuf::new();
                let mut topic = topic;
                if v5 {
                    let x = b.u8();
                    let alias = u16::from((x >> 2) & 3) + 1;
                    match x & 3 {
                        // Set an alias [MQTT-3.3.2-12].
                        1 => pp.push(Property::TopicAlias(alias)),
                        // Use one: empty topic; unknown aliases are a protocol error.
                        2 => {
                            pp.push(Property::TopicAlias(alias));
                            topic = "";
                        }
                        // Out of range: above what the broker announced [MQTT-3.3.2-9].
                        3 => pp.push(Property::TopicAlias(
                            [11, 100, u16::MAX, 11][usize::from((x >> 2) & 3)],
                        )),
                        _ => {}
                    }
                    if x & 0x10 != 0 {
                        let expiry = [0, 1, 30, u32::MAX][usize::from((x >> 5) & 3)];
                        pp.push(Property::MessageExpiryInterval(expiry));
                    }
                    if x & 0x80 != 0 {
                        // Makes the packet larger than small maximum packet sizes.
                        pp.push(Property::UserProperty("key", "0123456789"));
                        pp.push(Property::PayloadFormatIndicator(1));
                    }
                }
                self.publish(s, topic, qos, retain, u16::from(id), &pp);
            }
            6..=9 => {
                // Acknowledge something the broker sent, or a made-up id.
                let pick = b.u8();
                let slot = &self.slots[s];
                let id = match slot.ids.get(usize::from(pick) % slot.ids.len().max(1)) {
                    Some(&(_, id)) if pick & 0x80 == 0 => id,
                    _ => u16::from(pick % 8) + 1,
                };
                let mut reason = ReasonCode::SUCCESS;
                let mut ap = PropertiesBuf::new();
                if v5 {
                    // A reason code (the decoder refuses those not allowed in this ack).
                    let x = b.u8();
                    reason = [
                        ReasonCode::SUCCESS,
                        ReasonCode::NO_MATCHING_SUBSCRIBERS,
                        ReasonCode::UNSPECIFIED_ERROR,
                        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                        ReasonCode::QUOTA_EXCEEDED,
                        ReasonCode::PAYLOAD_FORMAT_INVALID,
                        ReasonCode::SUCCESS,
                    ][usize::from(x & 7)];
                    if x & 0x08 != 0 {
                        ap.push(Property::ReasonString("r"));
                    }
                }
                let ack = Ack {
                    packet_id: packet_id(id),
                    reason,
                    properties: ap.as_properties(),
                };
                let kind = op & 0x0F;
                let packet = match kind {
                    6 => Packet::Puback(ack),
                    7 => Packet::Pubrec(ack),
                    8 => Packet::Pubrel(ack),
                    _ => Packet::Pubcomp(ack),
                };
                let slot = &mut self.slots[s];
                slot.ids.retain(|&(_, i)| i != id);
                // PUBACK and PUBCOMP end a delivery, so does a failing PUBREC
                // [MQTT-3.3.4-9].
                if kind == 6 || kind == 9 || (kind == 7 && reason.0 >= 0x80) {
                    slot.unacked.remove(&id);
                }
                self.packet(s, packet);
            }
            10 => self.packet(s, Packet::Pingreq),
            11 => {
                let mut reason = ReasonCode::NORMAL_DISCONNECTION;
                let mut dp = PropertiesBuf::new();
                let mut auth = None;
                if v5 {
                    let x = b.u8();
                    reason = [
                        ReasonCode::NORMAL_DISCONNECTION,
                        ReasonCode::DISCONNECT_WITH_WILL,
                        ReasonCode::UNSPECIFIED_ERROR,
                        ReasonCode::MESSAGE_RATE_TOO_HIGH,
                    ][usize::from(x & 3)];
                    match (x >> 2) & 3 {
                        // Raising it from 0 at CONNECT is a protocol error [MQTT-3.14.2-2].
                        1 => dp.push(Property::SessionExpiryInterval(0)),
                        2 => dp.push(Property::SessionExpiryInterval(30)),
                        3 => dp.push(Property::SessionExpiryInterval(u32::MAX)),
                        _ => {}
                    }
                    if x & 0x10 != 0 {
                        dp.push(Property::UserProperty("k", "v"));
                    }
                    // One in eight: AUTH instead (the broker offers no enhanced
                    // authentication, so it is a protocol error).
                    if x & 0xE0 == 0xE0 {
                        auth = Some(if x & 0x10 != 0 {
                            ReasonCode::REAUTHENTICATE
                        } else {
                            ReasonCode::CONTINUE_AUTHENTICATION
                        });
                    }
                }
                let packet = match auth {
                    Some(reason) => {
                        dp = props(&[Property::AuthenticationMethod("X")]);
                        Packet::Auth(protocol::Auth {
                            reason,
                            properties: dp.as_properties(),
                        })
                    }
                    None => Packet::Disconnect(protocol::Disconnect {
                        reason,
                        properties: dp.as_properties(),
                    }),
                };
                self.packet(s, packet);
            }
            12 => {
                // The socket ends under the broker.
                if let Some(id) = self.slots[s].id {
                    let why = [
                        Disconnect::PeerClosed,
                        Disconnect::IoError,
                        Disconnect::Shutdown,
                    ][usize::from(b.u8() % 3)];
                    self.broker.handle_disconnect(id, why, self.now);
                    if why == Disconnect::Shutdown {
                        // On shutdown the broker hands the connection back through
                        // `poll_close` (a 5.0 client gets DISCONNECT 0x8B): the slot is
                        // freed when that close is taken.
                        self.after_close_ops();
                    } else {
                        self.slots[s] = Slot::default();
                    }
                }
            }
            13 => {
                // Time passes; the loop fires the timers that are due.
                let ms = u64::from(b.u16()) * 16;
                self.now += Duration::from_millis(ms);
                if self.broker.poll_timeout().is_some_and(|d| d <= self.now) {
                    self.broker.handle_timeout(self.now);
                    if let Some(next) = self.broker.poll_timeout() {
                        // The loop would spin if the next deadline were already due.
                        assert!(
                            next > self.now,
                            "deadline {next:?} not after {:?}",
                            self.now
                        );
                    }
                }
            }
            14 => {
                // The socket accepted some of the pending output.
                if let Some(id) = self.slots[s].id {
                    let n = usize::from(b.u16());
                    self.check_output(s);
                    let n = n.min(self.broker.pending_output(id).len());
                    self.broker.consume_output(id, n);
                    let slot = &mut self.slots[s];
                    slot.checked = slot.checked.saturating_sub(n);
                }
            }
            _ => {
                // Raw bytes through the real decoder, as the loop would feed them.
                let len = usize::from(b.u8() % 64);
                let raw = b.take(len);
                let Some(id) = self.slots[s].id else { return };
                let version = self.broker.protocol_version(id);
                match protocol::decode(raw, version, u32::MAX) {
                    Ok(Status::Complete((Packet::Publish(p), _))) => {
                        let tag = self.tag(s, &p);
                        let p = Publish { payload: &tag, ..p };
                        self.packet(s, Packet::Publish(p));
                    }
                    Ok(Status::Complete((p, _))) => self.packet(s, p),
                    Ok(Status::Partial { .. }) => {}
                    Err(e) => {
                        self.broker.handle_decode_error(id, e, self.now);
                        self.after_close_ops();
                    }
                }
            }
        }
    }

    /// The properties of a 5.0 CONNECT (`cp`) and of its will (`wp`): a selector byte,
    /// then a byte for each property it selects. Values include invalid ones (receive
    /// maximum and maximum packet size 0), which the decoder refuses.
    fn connect_properties(
        &mut self,
        b: &mut Bytes<'_>,
        cp: &mut PropertiesBuf,
        wp: &mut PropertiesBuf,
    ) {
        let sel = b.u8();
        if sel & 0x01 != 0 {
            let v = [0, 1, 30, u32::MAX][usize::from(b.u8() & 3)];
            cp.push(Property::SessionExpiryInterval(v));
        }
        if sel & 0x02 != 0 {
            let v = [0, 1, 1, 2, 2, 3, 5, u16::MAX][usize::from(b.u8() & 7)];
            cp.push(Property::ReceiveMaximum(v));
        }
        if sel & 0x04 != 0 {
            let v = [0, 16, 20, 24, 32, 48, 64, 1024][usize::from(b.u8() & 7)];
            cp.push(Property::MaximumPacketSize(v));
        }
        if sel & 0x08 != 0 {
            cp.push(Property::TopicAliasMaximum(u16::from(b.u8() & 3)));
        }
        if sel & 0x10 != 0 {
            cp.push(Property::UserProperty("k", "v"));
        }
        if sel & 0x20 != 0 {
            // Will delay and will message expiry.
            let x = b.u8();
            let delay = [0, 1, 30, u32::MAX][usize::from(x & 3)];
            wp.push(Property::WillDelayInterval(delay));
            if x & 0x04 != 0 {
                let expiry = [0, 1, 30, u32::MAX][usize::from((x >> 3) & 3)];
                wp.push(Property::MessageExpiryInterval(expiry));
            }
        }
        if sel & 0x40 != 0 {
            // Enhanced authentication, which the broker does not offer.
            cp.push(Property::AuthenticationMethod("X"));
        }
        if sel & 0x80 != 0 {
            cp.push(Property::RequestProblemInformation(0));
            cp.push(Property::RequestResponseInformation(1));
        }
    }

    fn open(&mut self, s: usize) {
        if self.slots[s].id.is_some() {
            // A socket on a slot that has one: the process dies and starts again.
            self.restart();
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let id = ConnId {
            index: s as u32,
            generation: self.generation,
        };
        self.slots[s] = Slot {
            id: Some(id),
            ..Slot::default()
        };
        self.broker.handle_open(id, self.now);
    }

    /// The process dies (every connection with it) and starts again from what the journal
    /// made durable, alternately by replaying the log and a snapshot (compaction); every
    /// persistent session comes back with the same subscriptions and messages.
    fn restart(&mut self) {
        self.after_close_ops();
        self.restarts += 1;
        let config = self.broker.config().clone();
        let old = std::mem::replace(&mut self.broker, new_broker(config, self.start));
        if self.restarts.is_multiple_of(2) {
            self.log = old.snapshot(self.now);
        }
        let mut bytes = &self.log[..];
        while !bytes.is_empty() {
            let Frame::Complete { payload, len } = read_frame(bytes) else {
                panic!(
                    "the journal wrote a bad frame: {:02x?}",
                    &bytes[..bytes.len().min(32)]
                );
            };
            let record = decode_payload(payload)
                .unwrap_or_else(|e| panic!("the journal wrote an undecodable record: {e:?}"));
            self.broker.restore_record(record, self.now);
            bytes = &bytes[len..];
        }
        self.broker.finish_restore(self.now);
        for s in 0..CLIENTS {
            self.slots[s] = Slot::default();
        }
        for c in &self.clients {
            let before = old.session(c).filter(|s| !s.clean);
            let after = self.broker.session(c);
            let subs = |s: &crate::broker::Session| {
                let mut v: Vec<_> = s
                    .subscriptions
                    .iter()
                    .map(|x| (x.filter.clone(), x.options, x.id))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            };
            match (before, after) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    assert_eq!(subs(x), subs(y), "{c}: subscriptions changed by a restart");
                    // Expired messages may wait in the live broker until they would be
                    // sent; replay drops them.
                    let now = self.now;
                    let live = |s: &crate::broker::Session| {
                        let queued = s.queue().iter().filter(|q| !q.msg.is_expired(now));
                        let inflight = s.inflight().iter().filter(|i| {
                            i.state == InflightState::AwaitingPubcomp
                                || !i.delivery.msg.is_expired(now)
                        });
                        queued.count() + inflight.count()
                    };
                    assert_eq!(
                        live(x),
                        live(y),
                        "{c}: queued + in flight changed by a restart: {:?} {:?} -> {:?} {:?}",
                        x.queue(),
                        x.inflight(),
                        y.queue(),
                        y.inflight()
                    );
                }
                (x, y) => panic!(
                    "{c}: persistent session {} before a restart, {} after",
                    x.is_some(),
                    y.is_some()
                ),
            }
        }
    }

    /// Publishes with a payload that tags the message with the subscriptions of the moment.
    fn publish(
        &mut self,
        s: usize,
        topic: &str,
        qos: QoS,
        retain: bool,
        id: u16,
        pp: &PropertiesBuf,
    ) {
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| packet_id(id)),
            properties: pp.as_properties(),
            payload: &[],
        };
        let tag = self.tag(s, &p);
        self.packet(s, Packet::Publish(Publish { payload: &tag, ..p }));
    }

    /// A payload `P` + index of a snapshot of every session's subscriptions, taken now.
    fn tag(&mut self, s: usize, p: &Publish<'_>) -> Vec<u8> {
        let mut subs = HashMap::new();
        for c in &self.clients {
            if let Some(session) = self.broker.session(c) {
                let list = session.subscriptions.iter().map(|x| SubSnap {
                    filter: x.filter.clone(),
                    no_local: x.options.no_local,
                    id: x.id,
                });
                subs.insert(c.clone(), list.collect());
            }
        }
        let n = self.snapshots.len() as u32;
        self.snapshots.push(Snap {
            publisher: self.slots[s].client.clone(),
            expiry: p.properties.message_expiry_interval(),
            subs,
        });
        let mut tag = vec![b'P'];
        tag.extend_from_slice(&n.to_le_bytes());
        tag
    }

    fn packet(&mut self, s: usize, packet: Packet<'_>) {
        let Some(id) = self.slots[s].id else { return };
        // 5.0 packets go through the real encoder and decoder, as the loop would get them,
        // so that values the decoder refuses (receive maximum 0, topic alias 0, a reason
        // code not allowed in a packet) end the connection as they would.
        let v5 = match &packet {
            Packet::Connect(c) => c.version == ProtocolVersion::V5,
            _ => self.is_v5(s),
        };
        if v5 {
            let mut wire = Vec::new();
            packet.encode(ProtocolVersion::V5, &mut wire);
            let version = self.broker.protocol_version(id);
            match protocol::decode(&wire, version, u32::MAX) {
                Ok(Status::Complete((p, _))) => self.handle(s, id, p),
                Ok(Status::Partial { .. }) => panic!("encoded {packet:?} decodes partially"),
                Err(e) => {
                    if let Packet::Connect(c) = &packet {
                        self.slots[s].version = self.slots[s].version.or(Some(c.version));
                    }
                    self.broker.handle_decode_error(id, e, self.now);
                    self.after_close_ops();
                }
            }
        } else {
            self.handle(s, id, packet);
        }
    }

    fn handle(&mut self, s: usize, id: ConnId, packet: Packet<'_>) {
        let connect = match &packet {
            Packet::Connect(c) => Some((Arc::<str>::from(c.client_id), c.version, c.properties)),
            _ => None,
        };
        if let Some((_, version, props)) = &connect {
            // What the client announced holds from its CONNECT on (for the first CONNECT;
            // a second one is a violation that closes the connection).
            let slot = &mut self.slots[s];
            if slot.version.is_none() && *version == ProtocolVersion::V5 {
                slot.v5 = Some(V5Client {
                    receive_maximum: props.receive_maximum().unwrap_or(u16::MAX),
                    maximum_packet_size: props.maximum_packet_size().unwrap_or(u32::MAX),
                });
            }
        }
        self.note_subscriptions();
        let open = self.broker.handle_packet(id, packet, self.now);
        self.note_subscriptions();
        if let Some((client, version, _)) = connect {
            // A second CONNECT is a violation that closes the connection; keep the first.
            let slot = &mut self.slots[s];
            slot.version = slot.version.or(Some(version));
            slot.anonymous |= client.is_empty();
            let attached = self
                .broker
                .session(&client)
                .is_some_and(|ss| ss.conn == Some(id));
            if attached {
                self.clients.insert(client.clone());
                self.slots[s].client = Some(client);
                self.note_subscriptions();
            }
        }
        if open {
            self.check_output(s);
        }
        self.after_close_ops();
    }

    /// Records every filter each known session has now in `ever`.
    fn note_subscriptions(&mut self) {
        for c in &self.clients {
            if let Some(session) = self.broker.session(c) {
                let ever = self.ever.entry(c.clone()).or_default();
                ever.extend(session.subscriptions.iter().map(|s| s.filter.clone()));
            }
        }
    }

    /// Takes the broker's closes: checks their final bytes and frees the slots.
    fn after_close_ops(&mut self) {
        if let Some((seq, bytes)) = self.broker.poll_journal() {
            self.log.extend_from_slice(&bytes);
            self.broker.handle_durable(seq);
        }
        while let Some(close) = self.broker.poll_close() {
            let Some(s) = self.slots.iter().position(|sl| sl.id == Some(close.id)) else {
                panic!("poll_close for unknown or already closed {:?}", close.id);
            };
            let checked = self.slots[s].checked.min(close.final_bytes.len());
            let bytes = close.final_bytes[checked..].to_vec();
            self.check_bytes(s, &bytes);
            self.slots[s] = Slot::default();
        }
    }

    /// Checks the output of slot `s` not yet checked.
    fn check_output(&mut self, s: usize) {
        let Some(id) = self.slots[s].id else { return };
        let out = self.broker.pending_output(id);
        // Output shrinks only through `consume_output`, which moves `checked` back too; a
        // shorter buffer means the broker closed the connection (its bytes come back in
        // `poll_close`, checked from `checked` on).
        let Some(bytes) = out.get(self.slots[s].checked..) else {
            return;
        };
        let bytes = bytes.to_vec();
        self.slots[s].checked = out.len();
        self.check_bytes(s, &bytes);
    }

    /// Every byte the broker writes decodes (as the version the client connected with);
    /// every PUBLISH it writes has a subscription; a 5.0 client gets no packet over its
    /// maximum packet size and no more QoS 1/2 PUBLISHes in flight than its receive
    /// maximum.
    fn check_bytes(&mut self, s: usize, mut bytes: &[u8]) {
        let version = self.slots[s].version;
        while !bytes.is_empty() {
            let (packet, used) = match protocol::decode(bytes, version, u32::MAX) {
                Ok(Status::Complete(x)) => x,
                other => panic!("broker wrote undecodable bytes {bytes:02x?}: {other:?}"),
            };
            bytes = &bytes[used..];
            if let Some(v5) = self.slots[s].v5 {
                // [MQTT-3.1.2-24]
                assert!(
                    used <= v5.maximum_packet_size as usize,
                    "{packet:?} ({used} bytes) sent to a client with maximum packet size {}",
                    v5.maximum_packet_size
                );
            }
            match packet {
                Packet::Publish(p) => {
                    if let Some(id) = p.packet_id {
                        self.slots[s].ids.push((p.qos as u8, id.get()));
                        if let Some(v5) = self.slots[s].v5 {
                            let unacked = &mut self.slots[s].unacked;
                            unacked.insert(id.get());
                            // [MQTT-3.3.4-9]
                            assert!(
                                unacked.len() <= usize::from(v5.receive_maximum),
                                "{} QoS 1/2 PUBLISHes unacknowledged ({unacked:?}), receive maximum {}",
                                unacked.len(),
                                v5.receive_maximum
                            );
                        }
                    }
                    self.check_delivery(s, &p);
                }
                Packet::Pubrel(a) | Packet::Pubrec(a) => {
                    self.slots[s].ids.push((2, a.packet_id.get()));
                }
                _ => {}
            }
        }
    }

    fn check_delivery(&mut self, s: usize, p: &Publish<'_>) {
        self.deliveries += 1;
        let Some(client) = &self.slots[s].client else {
            if self.slots[s].anonymous {
                return;
            }
            panic!("PUBLISH {p:?} to a connection without a session");
        };
        let matched = |f: &str| naive_matches(match_filter(f), p.topic);
        // A live message without RETAIN: the session must have matched when it was
        // published. Anything else: it must have matched at some point.
        let snapshot = match p.payload {
            [b'P', n @ ..] if !p.retain => <[u8; 4]>::try_from(n)
                .ok()
                .and_then(|n| self.snapshots.get(u32::from_le_bytes(n) as usize)),
            _ => None,
        };
        let Some(snap) = snapshot else {
            let ok = self
                .ever
                .get(client)
                .is_some_and(|fs| fs.iter().any(|f| matched(f)));
            assert!(
                ok,
                "{p:?} delivered to {client} without a matching subscription"
            );
            return;
        };
        let subs: Vec<&SubSnap> = snap
            .subs
            .get(client)
            .map(|v| v.iter().filter(|x| matched(&x.filter)).collect())
            .unwrap_or_default();
        assert!(
            !subs.is_empty(),
            "{p:?} delivered to {client} without a matching subscription"
        );
        // [MQTT-3.8.3-3] A client's own message only through a subscription without no
        // local.
        if snap.publisher.as_ref() == Some(client) {
            assert!(
                subs.iter().any(|x| !x.no_local),
                "{p:?} delivered to its publisher {client} through no-local subscriptions"
            );
        }
        // [MQTT-3.3.4-3] Only identifiers of matching subscriptions; [MQTT-3.3.2-6] the
        // expiry forwarded is what is left of the published one.
        for id in p.properties.subscription_identifiers() {
            assert!(
                subs.iter().any(|x| x.id == id),
                "{p:?} to {client} carries subscription identifier {id} of no matching subscription"
            );
        }
        let forwarded = p.properties.message_expiry_interval();
        assert!(
            forwarded.is_none() || forwarded <= snap.expiry,
            "{p:?} to {client}: expiry {forwarded:?}, published with {:?}",
            snap.expiry
        );
    }

    /// The bounds that must hold after every operation.
    fn check(&mut self) {
        let config = self.broker.config().clone();
        for s in 0..CLIENTS {
            self.check_output(s);
        }
        for c in &self.clients {
            let Some(session) = self.broker.session(c) else {
                continue;
            };
            let max_inflight = usize::from(config.max_inflight_messages);
            assert!(
                max_inflight == 0 || session.inflight().len() <= max_inflight,
                "{c}: {} in flight, max {max_inflight}",
                session.inflight().len()
            );
            assert!(
                config.max_queued_messages == 0
                    || session.queue().len() <= config.max_queued_messages,
                "{c}: {} queued, max {}",
                session.queue().len(),
                config.max_queued_messages
            );
            let bytes: usize = session.queue().iter().map(|q| q.msg.stored_len()).sum();
            assert_eq!(session.queued_bytes, bytes, "{c}: queued_bytes drifted");
            assert!(
                config.max_queued_bytes == 0 || bytes <= config.max_queued_bytes,
                "{c}: {bytes} bytes queued"
            );
            if let Some(conn) = session.conn {
                assert!(
                    self.slots
                        .iter()
                        .any(|sl| sl.id == Some(conn) && sl.client.as_ref() == Some(c)),
                    "{c}: session attached to {conn:?}, which the loop does not have"
                );
            }
        }
    }
}

fn packet_id(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Feeds every committed seed (`fuzz/corpus/<target>/*`) to its harness body, so CI
    /// runs the corpus on stable without cargo-fuzz.
    #[test]
    fn fuzz_corpus_replays() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for target in TARGETS {
            let dir = root.join(target);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "no seeds in {}", dir.display());
            for f in files {
                let data = std::fs::read(&f).unwrap();
                let r = std::panic::catch_unwind(|| run(target, &data));
                assert!(r.is_ok(), "{target} failed on {}", f.display());
            }
        }
    }

    /// First `broker` crash (harness bug): a connect timeout closed a connection in a
    /// time-advance operation, the harness did not drain `poll_close` until after it had
    /// itself dropped that slot, and took the late close for a double close.
    #[test]
    /// Third `broker` crash (harness out of date): `handle_disconnect(Shutdown)` now returns
    /// the connection through `poll_close` so that a 5.0 client is told 0x8B.
    fn broker_harness_takes_the_close_of_a_shutdown_disconnect() {
        let seed = "fuzz/corpus/broker/regress-shutdown-close";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    #[test]
    fn broker_harness_drains_closes_after_timers() {
        let seed = "fuzz/corpus/broker/regress-close-after-connect-timeout";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    /// Second `broker` crash (harness bug): after a partial `consume_output`, a second
    /// CONNECT closed the connection and the harness re-read its final bytes from offset 0,
    /// i.e. from the middle of a CONNACK.
    #[test]
    fn broker_harness_keeps_offset_of_partly_written_output() {
        let seed = "fuzz/corpus/broker/regress-final-bytes-after-partial-write";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    /// First `broker` crash with 5.0 clients (broker bug): a session resumed by a 5.0
    /// client with a receive maximum below its messages in flight got them all resent
    /// (see `broker::tests::v5::a_resumed_session_resends_no_more_than_the_new_receive_maximum`).
    #[test]
    fn broker_resend_on_resume_respects_the_receive_maximum() {
        let seed = "fuzz/corpus/broker/regress-resume-over-receive-maximum";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    /// Second (harness bug): a message published with expiry interval 0 waited, expired,
    /// in an offline session's queue (dropped when it would be sent); replay after a
    /// restart drops it at once. The restart check counts only messages still deliverable.
    #[test]
    fn broker_restart_check_ignores_expired_messages() {
        let seed = "fuzz/corpus/broker/regress-restart-expired-in-queue";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    #[test]
    fn naive_matcher_spot_checks() {
        assert!(naive_matches("a/#", "a"));
        assert!(naive_matches("+/+", "/x"));
        assert!(!naive_matches("+", "$SYS"));
        assert!(!naive_matches("a/+", "a/b/c"));
        assert!(naive_matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn broker_harness_sees_a_round_trip() {
        // open c0 and c1, connect both, c1 subscribes to "#", c0 publishes QoS 1 to "a".
        let ops = [
            0x00, // config: limits off
            0x00, 0x10, // open slot 0, slot 1
            0x01, 0x04, 0x00, 0x00, // slot 0 CONNECT v3.1.1 clean, id c0, keepalive 0
            0x11, 0x04, 0x01, 0x00, // slot 1 CONNECT clean, id c1
            0x12, 0x00, 0x03, 0x01, 0x01, 0x00, // slot 1 SUBSCRIBE "#" QoS 1, id 1
            0x04, 0x01, 0x00, // slot 0 PUBLISH QoS 1 to "a"
        ];
        assert_eq!(broker_deliveries(&ops), 1);
        let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/broker");
        for name in [
            "round-trip",
            "offline-queue",
            "retained-will-takeover",
            "v5-shared-no-local-aliases",
            "v5-expiry-will-restart",
            "v5-limits-auth-takeover",
        ] {
            let data = std::fs::read(seed.join(name)).unwrap();
            assert!(broker_deliveries(&data) > 0, "seed {name} delivers nothing");
        }
    }
}
