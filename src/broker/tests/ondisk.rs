//! Queues kept on disk (`ondisk.rs`), in-process: the data files are byte vectors behind a
//! fake frame source that counts its reads.

use std::sync::Mutex;

use super::*;
use crate::broker::ondisk::ENTRY_COST;
use crate::store::record::{self, decode_payload, read_frame, FileKind, Frame};
use crate::store::{FrameSource, Location, ReadError, Record};

const T0: u64 = 1_764_820_000_000;

/// Data files by `Location::file_key`, and how many frames were read.
#[derive(Default)]
struct Files {
    files: HashMap<u32, Vec<u8>>,
    reads: usize,
}

#[derive(Clone, Default)]
pub(super) struct FakeSource(Arc<Mutex<Files>>, Vec<u8>);

impl FrameSource for FakeSource {
    fn frame(&mut self, at: Location) -> Result<(&[u8], Location), ReadError> {
        let files = self.0.lock().unwrap();
        let file = files
            .files
            .get(&at.file_key())
            .ok_or(ReadError::Io(std::io::ErrorKind::NotFound))?;
        let from = usize::try_from(at.offset()).unwrap();
        let Frame::Complete { payload, len } = read_frame(&file[from.min(file.len())..]) else {
            return Err(ReadError::Damaged);
        };
        self.1 = payload.to_vec();
        drop(files);
        self.0.lock().unwrap().reads += 1;
        Ok((&self.1, at.plus(len as u64).unwrap()))
    }
}

impl FakeSource {
    fn reads(&self) -> usize {
        self.0.lock().unwrap().reads
    }

    /// Appends `bytes` to log `index` (created with its header); where they start.
    fn append(&self, index: u64, bytes: &[u8]) -> Location {
        let mut files = self.0.lock().unwrap();
        let file = files
            .files
            .entry(Location::new(index, false, 12).unwrap().file_key())
            .or_insert_with(|| record::header(FileKind::Log).to_vec());
        let at = Location::new(index, false, file.len() as u64).unwrap();
        file.extend_from_slice(bytes);
        at
    }

    fn file(&self, index: u64) -> Vec<u8> {
        let key = Location::new(index, false, 12).unwrap().file_key();
        self.0.lock().unwrap().files[&key].clone()
    }
}

/// A journaling broker reading its "files" through `src`.
pub(super) fn broker_on(src: &FakeSource) -> Harness {
    let mut h = Harness::with(Config {
        persistence: true,
        ..Config::in_memory()
    });
    h.broker.set_wall_clock(WallClock {
        at: h.now,
        unix_ms: T0,
    });
    h.broker.set_frame_source(Box::new(src.clone()));
    h
}

/// Writes the open batch to log `index` the way the writer does and tells the broker.
pub(super) fn write(h: &mut Harness, src: &FakeSource, index: u64) {
    if let Some((seq, bytes)) = h.broker.poll_journal() {
        let at = src.append(index, &bytes);
        h.broker.handle_written(&[(seq, at)], h.now);
        h.broker.handle_durable(seq);
    }
}

/// A broker restarted from log `index` of `src`, replayed with record locations.
pub(super) fn restarted_from_log(src: &FakeSource, index: u64) -> Harness {
    let mut h = broker_on(src);
    let file = src.file(index);
    let mut at = record::HEADER_LEN;
    while at < file.len() {
        let Frame::Complete { payload, len } = read_frame(&file[at..]) else {
            panic!("bad frame");
        };
        let loc = Location::new(index, false, at as u64);
        h.broker
            .restore_record_at(decode_payload(payload).unwrap(), loc, h.now);
        at += len;
    }
    h.broker.finish_restore(h.now);
    h
}

pub(super) fn offline_subscriber(h: &mut Harness, client_id: &str, filter: &'static str) {
    let s = h.client(connect(client_id, false, 0));
    h.send(s, subscribe(1, &[(filter, QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
}

pub(super) fn publish_n(h: &mut Harness, p: ConnId, topic: &str, range: std::ops::Range<usize>) {
    for i in range {
        let body = format!("m{i:05}");
        h.send(
            p,
            publish(
                topic,
                body.as_bytes(),
                QoS::AtLeastOnce,
                (i % 60_000 + 1) as u16,
            ),
        );
    }
}

/// Connects `client_id` and acknowledges everything it gets until nothing more comes.
fn drain(h: &mut Harness, client_id: &str) -> Vec<String> {
    let id = h.open();
    assert!(h.send(id, Packet::Connect(connect(client_id, false, 0))));
    let mut got = Vec::new();
    loop {
        let out = h.take(id);
        let mut acked = false;
        for o in out {
            if let Out::Publish {
                payload, id: pid, ..
            } = o
            {
                got.push(String::from_utf8(payload).unwrap());
                h.send(id, Packet::Puback(ack(pid)));
                acked = true;
            }
        }
        if !acked {
            return got;
        }
    }
}

fn ack(id: u16) -> Ack<'static> {
    Ack {
        packet_id: NonZeroU16::new(id).unwrap(),
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    }
}

pub(super) fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i:05}")).collect()
}

#[test]
fn a_restored_queue_stays_on_disk_and_comes_back_in_order() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    offline_subscriber(&mut h, "s", "t");
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "t", 0..100);
    write(&mut h, &src, 1);

    let mut r = restarted_from_log(&src, 1);
    let s = r.broker.session("s").unwrap();
    assert_eq!((s.queued_len(), s.queue().len()), (100, 0), "all on disk");
    assert_eq!(s.queued_bytes(), 100 * ("t".len() + 6));
    assert_eq!(
        r.broker.meter.bytes(),
        100 * ENTRY_COST,
        "memory_limit counts the index, not the payloads"
    );
    assert_eq!(src.reads(), 0, "recovery read no payload");

    // The snapshot points at the log instead of copying the payloads, and says to keep it.
    let (snapshot, keep) = r.broker.snapshot_keeping(r.now);
    assert_eq!(keep, [Location::new(1, false, 12).unwrap().file_key()]);
    let mut bytes = &snapshot[..];
    let mut at_records = 0;
    while let Frame::Complete { payload, len } = read_frame(bytes) {
        match decode_payload(payload).unwrap() {
            Record::Message { .. } => panic!("a queued payload was copied"),
            Record::EnqueueAt { .. } => at_records += 1,
            _ => {}
        }
        bytes = &bytes[len..];
    }
    assert_eq!(at_records, 100);

    // Restarted from that snapshot (as file 2), then drained: order and payloads intact.
    let snap = src.append(2, &snapshot);
    let mut r2 = broker_on(&src);
    let mut b = &snapshot[..];
    let mut off = snap.offset();
    while let Frame::Complete { payload, len } = read_frame(b) {
        let loc = Location::new(2, false, off);
        r2.broker
            .restore_record_at(decode_payload(payload).unwrap(), loc, r2.now);
        off += len as u64;
        b = &b[len..];
    }
    r2.broker.finish_restore(r2.now);
    assert_eq!(r2.broker.session("s").unwrap().queued_len(), 100);
    assert_eq!(drain(&mut r2, "s"), expected(0..100));
    assert_eq!(drain(&mut r, "s"), expected(0..100));
    assert_eq!(r.broker.session("s").unwrap().queued_len(), 0);
    assert_eq!(r.broker.meter.bytes(), 0);
}

#[test]
fn an_offline_queue_moves_to_disk_once_written_and_drains_in_order() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    offline_subscriber(&mut h, "s", "t");
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "t", 0..50);
    let before = h.broker.meter.bytes();
    assert_eq!(h.broker.session("s").unwrap().queue().len(), 50);
    write(&mut h, &src, 1);
    let s = h.broker.session("s").unwrap();
    assert_eq!((s.queued_len(), s.queue().len()), (50, 0), "moved to disk");
    assert_eq!(h.broker.meter.bytes(), 50 * ENTRY_COST);
    assert!(
        before > 50 * 100,
        "{before}: the messages were in memory before"
    );
    // Not written yet: stays in memory, behind what is on disk.
    publish_n(&mut h, p, "t", 50..55);
    assert_eq!(h.broker.session("s").unwrap().queue().len(), 5);
    assert_eq!(drain(&mut h, "s"), expected(0..55));
    assert_eq!(src.reads(), 50, "each message read once");
}

#[test]
fn a_message_queued_for_several_sessions_is_read_once_while_one_holds_it() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    offline_subscriber(&mut h, "a", "t");
    offline_subscriber(&mut h, "b", "t");
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "t", 0..10);
    write(&mut h, &src, 1);
    // "a" takes all ten in flight and does not acknowledge them yet.
    let a = h.open();
    assert!(h.send(a, Packet::Connect(connect("a", false, 0))));
    assert_eq!(h.take(a).len(), 11, "CONNACK and 10 messages");
    assert_eq!(drain(&mut h, "b"), expected(0..10));
    assert_eq!(src.reads(), 10, "b's copies came from a's");
}

#[test]
fn messages_with_properties_and_expiry_come_back_from_disk_with_them() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    offline_subscriber(&mut h, "s", "t");
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"plain", QoS::AtLeastOnce, 1));
    let p5 = h.open();
    let c = Connect {
        version: ProtocolVersion::V5,
        ..connect("p5", true, 0)
    };
    assert!(h.send(p5, Packet::Connect(c)));
    let mut props = crate::protocol::PropertiesBuf::new();
    props.push(crate::protocol::Property::MessageExpiryInterval(100));
    props.push(crate::protocol::Property::ContentType("text/plain"));
    let short = |payload: &'static [u8], id| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t",
            packet_id: NonZeroU16::new(id),
            properties: props.as_properties(),
            payload,
        })
    };
    h.send(p5, short(b"with-props", 2));
    write(&mut h, &src, 1);
    assert_eq!(h.broker.session("s").unwrap().queue().len(), 0);
    // Restarted 60 s later: 40 s left; after 41 more the message is gone.
    for (after, want) in [
        (60_000, vec!["plain", "with-props"]),
        (101_000, vec!["plain"]),
    ] {
        let mut r = restarted_from_log(&src, 1);
        r.broker.set_wall_clock(WallClock {
            at: r.now,
            unix_ms: T0 + after,
        });
        assert_eq!(r.broker.session("s").unwrap().queue().len(), 0);
        assert_eq!(drain(&mut r, "s"), want, "restarted at +{after} ms");
    }
    // And live, read back before the restart: the properties travel with it.
    let s = h.open();
    let c = Connect {
        version: ProtocolVersion::V5,
        ..connect("s", false, 0)
    };
    assert!(h.send(s, Packet::Connect(c)));
    while h.broker.poll_transmit().is_some() {}
    let out = h.broker.pending_output(s).to_vec();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("with-props") && text.contains("text/plain"),
        "{text}"
    );
}

#[test]
fn an_unreadable_disk_entry_is_dropped_and_the_rest_delivered() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    offline_subscriber(&mut h, "s", "t");
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "t", 0..3);
    write(&mut h, &src, 1);
    // Damage the second message's frame (the medium lied).
    {
        let mut files = src.0.lock().unwrap();
        let file = files.files.values_mut().next().unwrap();
        let second = file
            .windows(6)
            .position(|w| w == b"m00001")
            .expect("second payload");
        file[second] ^= 0xff;
    }
    assert_eq!(drain(&mut h, "s"), ["m00000", "m00002"]);
    assert_eq!(h.broker.session("s").unwrap().queued_bytes(), 0);
}

#[test]
fn a_queued_message_whose_record_a_compaction_may_remove_is_written_again_before_it_goes_to_disk() {
    // A retained message is copied into every snapshot, so the log its first record is in
    // goes at a later compaction. Before, a queue it was delivered to later (on
    // SUBSCRIBE, behind a full window) pointed its disk entry there once offline, and
    // the message was lost with the file.
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    h.broker.config.max_inflight_messages = 1;
    let b = h.client(connect("b", false, 0));
    h.send(b, subscribe(1, &[("x", QoS::AtLeastOnce)]));
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "x", 0..1);
    h.send(
        p,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "t",
            packet_id: NonZeroU16::new(2),
            properties: Properties::EMPTY,
            payload: b"retained",
        }),
    );
    write(&mut h, &src, 1);
    let (_, keep) = h.broker.snapshot_keeping(h.now);
    let log1 = Location::new(1, false, 12).unwrap().file_key();
    assert!(!keep.contains(&log1), "no queue points into log 1");
    // Compactions remove it.
    src.0.lock().unwrap().files.remove(&log1);
    // Delivered on SUBSCRIBE behind the full window: queued in memory.
    h.send(b, subscribe(2, &[("t", QoS::AtLeastOnce)]));
    assert_eq!(h.broker.session("b").unwrap().queue().len(), 1);
    h.broker.handle_disconnect(b, Disconnect::PeerClosed, h.now);
    write(&mut h, &src, 2);
    write(&mut h, &src, 2);
    let s = h.broker.session("b").unwrap();
    assert_eq!((s.queued_len(), s.queue().len()), (1, 0), "on disk");
    assert_eq!(drain(&mut h, "b"), ["m00000", "retained"]);
}
