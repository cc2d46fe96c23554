//! The caps of a bridge's outbound queue and the policy at them (`bridge_queue.rs`), and
//! MQTT 5 message expiry of what waits in it (`bridge_session.rs`), with a fake clock.

use super::bounds::{client5, codes5};
use super::ondisk::{broker_on, publish_n, restarted_from_log, write, FakeSource};
use super::*;
use crate::broker::{BridgeOut, QueueLimits};
use crate::protocol::{PropertiesBuf, Property};

const ID: &str = "gw.uplink";

fn bridge(h: &mut Harness, qos: QoS, limits: QueueLimits) -> SessionKey {
    let key = h
        .broker
        .bridge_session(ID, None, false, &[("out/#".to_string(), qos)], h.now);
    h.broker.bridge_queue_limits(key, "up", limits);
    key
}

fn cap(max_messages: usize, max_bytes: usize) -> QueueLimits {
    QueueLimits {
        max_messages,
        max_bytes,
    }
}

fn payloads(v: &[BridgeOut]) -> Vec<String> {
    v.iter()
        .map(|o| String::from_utf8(o.msg.payload.to_vec()).unwrap())
        .collect()
}

/// The uplink takes up to `n` messages and the upstream acknowledges them.
fn forward(h: &mut Harness, key: SessionKey, n: usize) -> Vec<String> {
    let out = h.broker.bridge_take(key, n, h.now);
    for o in &out {
        if let Some(pid) = o.packet_id {
            assert!(h.broker.bridge_done(key, pid));
        }
    }
    payloads(&out)
}

/// A live subscriber to everything (clean session), to see what was routed.
fn watcher(h: &mut Harness) -> ConnId {
    let w = h.client(connect("w", true, 0));
    h.send(w, subscribe(1, &[("#", QoS::AtLeastOnce)]));
    h.take(w);
    w
}

fn routed(h: &mut Harness, w: ConnId) -> Vec<String> {
    let mut got = Vec::new();
    for o in h.take(w) {
        if let Out::Publish { payload, id, .. } = o {
            got.push(String::from_utf8(payload).unwrap());
            if id != 0 {
                h.send(w, Packet::Puback(ack(id)));
            }
        }
    }
    got
}

#[test]
fn a_full_bridge_queue_refuses_qos1_and_qos2_from_v5_with_0x97_and_routes_them_nowhere() {
    let mut h = Harness::new();
    let key = bridge(&mut h, QoS::ExactlyOnce, cap(16, 0));
    let w = watcher(&mut h);
    let p5 = client5(&mut h, "p5");
    for i in 1..=16u16 {
        h.send(p5, publish("out/t", b"kept", QoS::AtLeastOnce, i));
    }
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0); 16]);
    assert_eq!(routed(&mut h, w).len(), 16);
    assert_eq!(h.broker.bridge_queued(key), 16);

    // At the cap: refused, told, and delivered to no one (a PUBACK error means "not
    // published"); the connection stays.
    h.send(p5, publish("out/t", b"no", QoS::AtLeastOnce, 17));
    h.send(p5, publish("out/t", b"no", QoS::ExactlyOnce, 18));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0x97), ("pubrec", 0x97)]);
    assert!(routed(&mut h, w).is_empty(), "not routed anywhere");
    assert!(!h.is_closed(p5));
    assert!(h.broker.bridge_queue_full(key));
    assert_eq!(h.broker.stats().dropped_bridge_queue, 2);
    // Not for the bridge, or for it at QoS 0 only: accepted as usual.
    h.send(p5, publish("other/t", b"yes", QoS::AtLeastOnce, 19));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0)]);
    assert_eq!(routed(&mut h, w), ["yes"]);
    // QoS 0 with the link up: delivered to the others, dropped for the bridge, counted.
    h.broker.bridge_link(key, true);
    h.send(p5, publish("out/t", b"zero", QoS::AtMostOnce, 0));
    assert_eq!(routed(&mut h, w), ["zero"]);
    assert_eq!(h.broker.bridge_queued(key), 16);
    assert_eq!(h.broker.stats().dropped_bridge_queue, 3);
    assert_eq!(h.broker.stats().dropped(), 3);

    // Taken for the uplink, not yet acknowledged: still held, still full.
    let sent = h.broker.bridge_take(key, 2, h.now);
    assert_eq!(payloads(&sent), ["kept", "kept"]);
    assert!(h.broker.bridge_queue_full(key), "in flight counts");
    // The upstream acknowledges one: still full (the episode lasts until 7/8, 14).
    assert!(h.broker.bridge_done(key, sent[0].packet_id.unwrap()));
    assert!(h.broker.bridge_queue_full(key), "15 of 16 is above 7/8");
    h.send(p5, publish("out/t", b"no", QoS::AtLeastOnce, 20));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0x97)]);
    // The second acknowledged: accepted again, and what was acknowledged is all there.
    assert!(h.broker.bridge_done(key, sent[1].packet_id.unwrap()));
    assert!(!h.broker.bridge_queue_full(key));
    assert_eq!(forward(&mut h, key, 100), vec!["kept"; 14]);
    h.send(p5, publish("out/t", b"again", QoS::AtLeastOnce, 21));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0)]);
    assert_eq!(routed(&mut h, w), ["again"]);
    assert_eq!(forward(&mut h, key, 10), ["again"]);
}

#[test]
fn a_full_bridge_queue_closes_a_v311_qos1_publisher_as_memory_limit_does() {
    let mut h = Harness::new();
    let key = bridge(&mut h, QoS::AtLeastOnce, cap(0, 40));
    let p = h.client(connect("p", true, 0));
    // 5 + 6 bytes each ("out/a" + "m00000"): three fit 40 bytes, the fourth does not.
    publish_n(&mut h, p, "out/a", 0..3);
    assert_eq!(h.take(p).len(), 3);
    assert!(!h.send(p, publish("out/a", b"m00003", QoS::AtLeastOnce, 4)));
    assert!(h.is_closed(p));
    assert!(h.take(p).is_empty(), "no PUBACK for a message not taken");
    assert_eq!(h.broker.bridge_queued(key), 3);
    // A QoS 2 retransmission of a message taken before the cap is still acknowledged.
    assert_eq!(forward(&mut h, key, 3).len(), 3);
    let q = h.client(connect("q", false, 0));
    h.send(q, publish("out/a", b"m00004", QoS::ExactlyOnce, 9));
    assert_eq!(h.take(q), vec![Out::Pubrec(9)]);
    publish_n(&mut h, q, "out/a", 5..8);
    assert_eq!(
        h.take(q),
        vec![Out::Puback(6), Out::Puback(7)],
        "the third does not fit"
    );
    assert!(h.is_closed(q));
    let q = h.client(connect("q", false, 0));
    h.send(q, publish("out/a", b"m00004", QoS::ExactlyOnce, 9));
    assert_eq!(
        h.take(q),
        vec![Out::Pubrec(9)],
        "a retransmission is not refused"
    );
}

#[test]
fn a_qos0_topic_line_forwards_only_while_the_link_is_up_and_never_refuses() {
    let mut h = Harness::new();
    let key = bridge(&mut h, QoS::AtMostOnce, cap(1, 0));
    let p5 = client5(&mut h, "p5");
    // Link down: a QoS 0 line takes nothing (as Mosquitto's bridge does).
    h.send(p5, publish("out/t", b"down", QoS::AtLeastOnce, 1));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0)]);
    assert_eq!(h.broker.bridge_queued(key), 0);
    // Link up: QoS 1 goes up at QoS 0; over the cap it is dropped for the bridge, and
    // the publisher, promised nothing for it, is not refused.
    h.broker.bridge_link(key, true);
    h.send(p5, publish("out/t", b"up", QoS::AtLeastOnce, 2));
    h.send(p5, publish("out/t", b"over", QoS::AtLeastOnce, 3));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0), ("puback", 0)]);
    let taken = h.broker.bridge_take(key, 10, h.now);
    assert_eq!(payloads(&taken), ["up"]);
    assert_eq!((taken[0].qos, taken[0].packet_id), (QoS::AtMostOnce, None));
    assert_eq!(h.broker.stats().dropped_bridge_queue, 1);
}

fn publish_expiring(h: &mut Harness, p: ConnId, payload: &'static [u8], secs: u32, id: u16) {
    let mut props = PropertiesBuf::new();
    props.push(Property::MessageExpiryInterval(secs));
    h.send(
        p,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "out/e",
            packet_id: NonZeroU16::new(id),
            properties: props.as_properties(),
            payload,
        }),
    );
}

#[test]
fn bridge_queue_message_expiry_counts_the_wait_across_a_restart() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = bridge(&mut h, QoS::AtLeastOnce, cap(0, 0));
    let p5 = client5(&mut h, "p5");
    publish_expiring(&mut h, p5, b"short", 10, 1);
    publish_expiring(&mut h, p5, b"long", 100, 2);
    write(&mut h, &src, 1);

    // 30 s later (the same run): the short one expired while queued and is never handed
    // to the uplink [MQTT-3.3.2-5]; the long one has 70 s left [MQTT-3.3.2-6].
    let later = h.now + Duration::from_secs(30);
    let out = h.broker.bridge_take(key, 10, later);
    assert_eq!(payloads(&out), ["long"]);
    assert_eq!(out[0].msg.remaining_expiry(later), Some(70));

    // Restarted from the log 40 s of wall-clock time after it was written, and 5 s
    // into the new run: 100 - 45 = 55 s left.
    let mut r = restarted_from_log(&src, 1);
    r.broker.set_wall_clock(WallClock {
        at: r.now,
        unix_ms: 1_764_820_000_000 + 40_000,
    });
    let key = bridge(&mut r, QoS::AtLeastOnce, cap(0, 0));
    assert_eq!(r.broker.bridge_queued(key), 2, "both on disk");
    let at = r.now + Duration::from_secs(5);
    let out = r.broker.bridge_take(key, 10, at);
    assert_eq!(payloads(&out), ["long"]);
    assert_eq!(out[0].msg.remaining_expiry(at), Some(55));
}

#[test]
fn messages_in_flight_after_a_restart_still_count_against_the_cap() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = bridge(&mut h, QoS::AtLeastOnce, cap(0, 40));
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "out/a", 0..3); // 11 bytes each
    assert_eq!(h.broker.bridge_take(key, 3, h.now).len(), 3);
    write(&mut h, &src, 1);

    let mut r = restarted_from_log(&src, 1);
    let key = bridge(&mut r, QoS::AtLeastOnce, cap(0, 40));
    assert_eq!(r.broker.bridge_inflight(key).len(), 3);
    let p5 = client5(&mut r, "p5");
    r.send(p5, publish("out/a", b"m00003", QoS::AtLeastOnce, 1));
    write(&mut r, &src, 1); // acknowledgements wait for their batch
    assert_eq!(codes5(&mut r, p5), vec![("puback", 0x97)], "33 + 11 > 40");
    for o in r.broker.bridge_inflight(key) {
        assert!(r.broker.bridge_done(key, o.packet_id.unwrap()));
    }
    r.send(p5, publish("out/a", b"m00003", QoS::AtLeastOnce, 2));
    write(&mut r, &src, 1);
    assert_eq!(codes5(&mut r, p5), vec![("puback", 0)]);
}
