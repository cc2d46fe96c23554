//! Persistence across a restart, in-process: what the journal and a snapshot carry,
//! replayed into a new broker whose wall clock reads later. The fake monotonic clock of
//! the restarted broker starts again, as `Instant` does after a reboot.

use super::*;
use crate::protocol::{PropertiesBuf, Property};
use crate::store::record::{decode_payload, read_frame, Frame};

/// Wall-clock time (Unix ms) when the first broker starts.
const T0: u64 = 1_764_820_000_000;

/// A journaling broker whose wall clock reads `unix_ms` at its start.
fn journaled_at(unix_ms: u64) -> Harness {
    let mut h = Harness::with(Config {
        persistence: true,
        ..Config::in_memory()
    });
    h.broker.set_wall_clock(WallClock { at: h.now, unix_ms });
    h
}

/// Appends what was journaled since the last call to `log` and marks it durable.
fn commit(h: &mut Harness, log: &mut Vec<u8>) {
    if let Some((seq, bytes)) = h.broker.poll_journal() {
        log.extend_from_slice(&bytes);
        h.broker.handle_durable(seq);
    }
}

/// A broker restarted from framed records (a log or a snapshot), with its wall clock
/// reading `unix_ms`.
fn restarted(mut bytes: &[u8], unix_ms: u64) -> Harness {
    let mut h = journaled_at(unix_ms);
    while !bytes.is_empty() {
        let Frame::Complete { payload, len } = read_frame(bytes) else {
            panic!("bad frame");
        };
        h.broker
            .restore_record(decode_payload(payload).expect("valid record"), h.now);
        bytes = &bytes[len..];
    }
    h.broker.finish_restore(h.now);
    h
}

fn pb(list: &[Property<'_>]) -> PropertiesBuf {
    let mut b = PropertiesBuf::new();
    for p in list {
        b.push(*p);
    }
    b
}

/// Connects a 5.0 client and discards the CONNACK (5.0 output is not parsed here).
fn connect5(h: &mut Harness, client_id: &str, clean: bool, p: &PropertiesBuf) -> ConnId {
    let id = h.open();
    let c = Connect {
        version: ProtocolVersion::V5,
        properties: p.as_properties(),
        ..connect(client_id, clean, 0)
    };
    assert!(h.send(id, Packet::Connect(c)));
    h.drain_closes();
    while h.broker.poll_transmit().is_some() {}
    let n = h.broker.pending_output(id).len();
    h.broker.consume_output(id, n);
    id
}

/// Connects a 3.1.1 persistent client and returns everything it got (CONNACK first).
fn resume(h: &mut Harness, client_id: &str) -> (ConnId, Vec<Out>) {
    let id = h.open();
    assert!(h.send(id, Packet::Connect(connect(client_id, false, 0))));
    let out = h.take(id);
    (id, out)
}

fn publishes(out: &[Out]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Out::Publish { payload, .. } => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn offline_session_expiry_counts_wall_clock_time_across_a_restart() {
    let mut h = journaled_at(T0);
    let mut log = Vec::new();
    let expiry = pb(&[Property::SessionExpiryInterval(100)]);
    let s = connect5(&mut h, "s", false, &expiry);
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    commit(&mut h, &mut log);
    // The broker stops 60 s later; the snapshot it would write then says the same.
    h.now += Duration::from_secs(60);
    let snapshot = h.broker.snapshot(h.now);
    for (source, what) in [(&log, "log"), (&snapshot, "snapshot")] {
        // Started again 70 s after the session went offline: 30 s are left.
        let mut r = restarted(source, T0 + 70_000);
        assert!(r.broker.session("s").is_some(), "{what}: restored");
        r.advance(Duration::from_secs(29));
        assert!(r.broker.session("s").is_some(), "{what}: 1 s left");
        r.advance(Duration::from_secs(2));
        assert!(
            r.broker.session("s").is_none(),
            "{what}: expired 100 s after going offline, not 100 s after the restart"
        );
        // Started again after the interval: dropped at once.
        let r = restarted(source, T0 + 100_001);
        assert!(
            r.broker.session("s").is_none(),
            "{what}: expired while down"
        );
    }
}

#[test]
fn a_session_online_at_the_crash_counts_from_the_restart() {
    let mut h = journaled_at(T0);
    let mut log = Vec::new();
    let expiry = pb(&[Property::SessionExpiryInterval(100)]);
    let s = connect5(&mut h, "s", false, &expiry);
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    commit(&mut h, &mut log);
    // Back online after 50 s, and still online when the broker dies at +1000 s.
    h.now += Duration::from_secs(50);
    connect5(&mut h, "s", false, &expiry);
    commit(&mut h, &mut log);
    let mut r = restarted(&log, T0 + 1_000_000);
    assert!(
        r.broker.session("s").is_some(),
        "it was online, not expired"
    );
    r.advance(Duration::from_secs(99));
    assert!(r.broker.session("s").is_some());
    r.advance(Duration::from_secs(2));
    assert!(r.broker.session("s").is_none());
}

#[test]
fn message_expiry_counts_wall_clock_time_across_a_restart() {
    let mut h = journaled_at(T0);
    let mut log = Vec::new();
    let (s, _) = resume(&mut h, "s");
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    let p = connect5(&mut h, "p", true, &PropertiesBuf::new());
    let props = pb(&[Property::MessageExpiryInterval(100)]);
    h.send(
        p,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t",
            packet_id: NonZeroU16::new(1),
            properties: props.as_properties(),
            payload: b"short-lived",
        }),
    );
    commit(&mut h, &mut log);
    h.now += Duration::from_secs(60);
    let snapshot = h.broker.snapshot(h.now);
    for (source, what) in [(&log, "log"), (&snapshot, "snapshot")] {
        let mut r = restarted(source, T0 + 70_000);
        r.advance(Duration::from_secs(29));
        let (_, out) = resume(&mut r, "s");
        assert_eq!(publishes(&out), ["short-lived"], "{what}: 1 s left");

        let mut r = restarted(source, T0 + 70_000);
        r.advance(Duration::from_secs(31));
        let (_, out) = resume(&mut r, "s");
        assert!(publishes(&out).is_empty(), "{what}: expired after 100 s");

        let mut r = restarted(source, T0 + 101_000);
        let (_, out) = resume(&mut r, "s");
        assert!(publishes(&out).is_empty(), "{what}: expired while down");
        assert!(r.broker.session("s").is_some_and(|s| s.queue().is_empty()));
    }
}

#[test]
fn a_restored_session_keeps_the_user_name_it_last_connected_with() {
    let mut h = journaled_at(T0);
    let mut log = Vec::new();
    let c = Connect {
        username: Some("alice"),
        ..connect("s", false, 0)
    };
    let s = h.client(c);
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    commit(&mut h, &mut log);
    for source in [log.clone(), h.broker.snapshot(h.now)] {
        let r = restarted(&source, T0);
        let user = r.broker.session("s").and_then(|s| s.username.clone());
        assert_eq!(user.as_deref(), Some("alice"));
    }
    // Reconnecting under another name (or none) is journaled too.
    let s = h.client(connect("s", false, 0));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    commit(&mut h, &mut log);
    for source in [log.clone(), h.broker.snapshot(h.now)] {
        let r = restarted(&source, T0);
        let session = r.broker.session("s").expect("restored");
        assert_eq!(session.username, None);
    }
}

#[test]
fn a_clock_that_reads_1970_is_not_trusted_for_expiry() {
    // A board without a real-time clock starts before NTP: its times would make the next
    // start (with the right time) drop the session as decades old.
    let mut h = journaled_at(5_000);
    let mut log = Vec::new();
    let expiry = pb(&[Property::SessionExpiryInterval(100)]);
    let s = connect5(&mut h, "s", false, &expiry);
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    commit(&mut h, &mut log);
    let mut r = restarted(&log, T0);
    assert!(r.broker.session("s").is_some(), "counts from the restart");
    r.advance(Duration::from_secs(99));
    assert!(r.broker.session("s").is_some());
    r.advance(Duration::from_secs(2));
    assert!(r.broker.session("s").is_none());
}
