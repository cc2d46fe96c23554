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
//! - [`broker`]: the broker state machine driven by arbitrary operations of several clients
//!   on a fake clock: no panic, inflight and queue bounds hold, every byte it writes
//!   decodes, no PUBLISH reaches a client without a matching subscription, and its next
//!   deadline is never in the past right after its timers fired.
//! - [`topic`]: `protocol::topic::matches` and `SubscriptionTable::collect_matches` agree
//!   with the naive level-by-level matcher written here.
//! - [`store`]: the data-file loader never panics, reads in chunks what a whole-file read
//!   reads, and recovers valid records among garbage (the body lives in `store::fuzzing`).

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::{Broker, ConnId, Disconnect, SubscriptionTable};
use crate::config::Config;
use crate::net::input::{self, Framing};
use crate::protocol::topic::{is_valid_topic_filter, is_valid_topic_name, matches};
use crate::protocol::{
    self, Ack, Connect, DecodeError, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Status, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

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

/// The harness's view of one connection slot.
#[derive(Default)]
struct Slot {
    id: Option<ConnId>,
    /// The client id once CONNECT was accepted (for looking up its session).
    client: Option<Arc<str>>,
    version: Option<ProtocolVersion>,
    /// Bytes at the front of the broker's output for this connection already checked.
    checked: usize,
    /// Packet ids of QoS 1/2 PUBLISHes and PUBRELs received, for acknowledging them.
    ids: Vec<(u8, u16)>,
    /// Connected with an empty client id: the broker assigned one the harness cannot look
    /// up, so its deliveries are not checked against subscriptions.
    anonymous: bool,
}

struct BrokerRun {
    broker: Broker,
    now: Instant,
    generation: u32,
    slots: Vec<Slot>,
    /// Per publish tag: every session's filters at the time the message was published.
    snapshots: Vec<HashMap<Arc<str>, Vec<Arc<str>>>>,
    /// Per client id: every filter its session has had since the harness began; the bound
    /// for deliveries the spec lets outlive a subscription (queued retained messages, wills
    /// and messages already queued when the client unsubscribed [MQTT-3.10.4-3]).
    ever: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Every client id ever accepted.
    clients: BTreeSet<Arc<str>>,
    /// PUBLISHes checked.
    deliveries: usize,
}

/// Target `broker`: byte 0 picks the limits, then each operation is an opcode byte and
/// its arguments.
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
        // `after_close_ops`): the held-output paths run too.
        persistence: true,
        ..Config::in_memory()
    };
    let mut run = BrokerRun {
        broker: Broker::new(config),
        now: Instant::now(),
        generation: 0,
        slots: (0..CLIENTS).map(|_| Slot::default()).collect(),
        snapshots: Vec::new(),
        ever: HashMap::new(),
        clients: BTreeSet::new(),
        deliveries: 0,
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

impl BrokerRun {
    fn step(&mut self, b: &mut Bytes<'_>) {
        let op = b.u8();
        let s = usize::from(op >> 4) % CLIENTS;
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
                let will = (flags & 0x08 != 0).then(|| Will {
                    topic: TOPICS[usize::from(flags >> 4) % TOPICS.len()],
                    payload: b"W",
                    qos: QoS::from_u8((flags >> 5) & 3).unwrap_or(QoS::AtMostOnce),
                    retain: flags & 0x40 != 0,
                    properties: Properties::EMPTY,
                });
                let connect = Connect {
                    version,
                    clean_start: flags & 0x04 != 0,
                    keep_alive: u16::from(b.u8() % 4),
                    properties: Properties::EMPTY,
                    client_id,
                    will,
                    username: None,
                    password: None,
                };
                self.packet(s, Packet::Connect(connect));
            }
            2 => {
                let n = usize::from(b.u8() % 3) + 1;
                let filters = (0..n)
                    .map(|_| {
                        let f = b.pick(&FILTERS);
                        let qos = QoS::from_u8(b.u8() % 3).unwrap_or(QoS::AtMostOnce);
                        (
                            f,
                            SubscriptionOptions {
                                qos,
                                ..Default::default()
                            },
                        )
                    })
                    .collect();
                let packet_id = packet_id(b.u16());
                self.packet(
                    s,
                    Packet::Subscribe(Subscribe {
                        packet_id,
                        properties: Properties::EMPTY,
                        filters,
                    }),
                );
            }
            3 => {
                let f = b.pick(&FILTERS);
                let packet_id = packet_id(b.u16());
                self.packet(
                    s,
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id,
                        properties: Properties::EMPTY,
                        filters: vec![f],
                    }),
                );
            }
            4 | 5 => {
                let flags = b.u8();
                let qos = QoS::from_u8(flags % 3).unwrap_or(QoS::AtMostOnce);
                let topic = TOPICS[usize::from(flags >> 2) % TOPICS.len()];
                let retain = flags & 0x80 != 0;
                let id = b.u8() % 4 + 1;
                self.publish(s, topic, qos, retain, u16::from(id));
            }
            6..=9 => {
                // Acknowledge something the broker sent, or a made-up id.
                let pick = b.u8();
                let slot = &self.slots[s];
                let id = match slot.ids.get(usize::from(pick) % slot.ids.len().max(1)) {
                    Some(&(_, id)) if pick & 0x80 == 0 => id,
                    _ => u16::from(pick % 8) + 1,
                };
                let ack = Ack {
                    packet_id: packet_id(id),
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::EMPTY,
                };
                let packet = match op & 0x0F {
                    6 => Packet::Puback(ack),
                    7 => Packet::Pubrec(ack),
                    8 => Packet::Pubrel(ack),
                    _ => Packet::Pubcomp(ack),
                };
                self.slots[s].ids.retain(|&(_, i)| i != id);
                self.packet(s, packet);
            }
            10 => self.packet(s, Packet::Pingreq),
            11 => {
                let disconnect = protocol::Disconnect {
                    reason: ReasonCode::NORMAL_DISCONNECTION,
                    properties: Properties::EMPTY,
                };
                self.packet(s, Packet::Disconnect(disconnect));
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
                        let tag = self.tag(&p);
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

    fn open(&mut self, s: usize) {
        if self.slots[s].id.is_some() {
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

    /// Publishes with a payload that tags the message with the subscriptions of the moment.
    fn publish(&mut self, s: usize, topic: &str, qos: QoS, retain: bool, id: u16) {
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| packet_id(id)),
            properties: Properties::EMPTY,
            payload: &[],
        };
        let tag = self.tag(&p);
        self.packet(s, Packet::Publish(Publish { payload: &tag, ..p }));
    }

    /// A payload `P` + index of a snapshot of every session's filters, taken now.
    fn tag(&mut self, _p: &Publish<'_>) -> Vec<u8> {
        let mut snap = HashMap::new();
        for c in &self.clients {
            if let Some(session) = self.broker.session(c) {
                let filters = session.subscriptions.iter().map(|s| s.filter.clone());
                snap.insert(c.clone(), filters.collect());
            }
        }
        let n = self.snapshots.len() as u32;
        self.snapshots.push(snap);
        let mut tag = vec![b'P'];
        tag.extend_from_slice(&n.to_le_bytes());
        tag
    }

    fn packet(&mut self, s: usize, packet: Packet<'_>) {
        let Some(id) = self.slots[s].id else { return };
        let connect = match &packet {
            Packet::Connect(c) => Some((Arc::<str>::from(c.client_id), c.version)),
            _ => None,
        };
        self.note_subscriptions();
        let open = self.broker.handle_packet(id, packet, self.now);
        self.note_subscriptions();
        if let Some((client, version)) = connect {
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
        if let Some((seq, _)) = self.broker.poll_journal() {
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

    /// Every byte the broker writes decodes; every PUBLISH it writes has a subscription.
    fn check_bytes(&mut self, s: usize, mut bytes: &[u8]) {
        let version = self.slots[s].version;
        while !bytes.is_empty() {
            let (packet, used) = match protocol::decode(bytes, version, u32::MAX) {
                Ok(Status::Complete(x)) => x,
                other => panic!("broker wrote undecodable bytes {bytes:02x?}: {other:?}"),
            };
            bytes = &bytes[used..];
            match packet {
                Packet::Publish(p) => {
                    if let Some(id) = p.packet_id {
                        self.slots[s].ids.push((p.qos as u8, id.get()));
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
        let matched = |filters: &[Arc<str>]| filters.iter().any(|f| naive_matches(f, p.topic));
        // A live message without RETAIN: the session must have matched when it was
        // published. Anything else: it must have matched at some point.
        let snapshot = match p.payload {
            [b'P', n @ ..] if !p.retain => <[u8; 4]>::try_from(n)
                .ok()
                .and_then(|n| self.snapshots.get(u32::from_le_bytes(n) as usize)),
            _ => None,
        };
        let ok = match snapshot {
            Some(snap) => snap.get(client).is_some_and(|fs| matched(fs)),
            None => self.ever.get(client).is_some_and(|fs| {
                let fs: Vec<Arc<str>> = fs.iter().cloned().collect();
                matched(&fs)
            }),
        };
        assert!(
            ok,
            "{p:?} delivered to {client} without a matching subscription"
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
        for name in ["round-trip", "offline-queue", "retained-will-takeover"] {
            let data = std::fs::read(seed.join(name)).unwrap();
            assert!(broker_deliveries(&data) > 0, "seed {name} delivers nothing");
        }
    }
}
