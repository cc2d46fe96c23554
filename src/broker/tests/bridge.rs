//! The bridge's local session (`bridge_session.rs`): its queue is the outbound queue, kept
//! on disk, its inflight list the persisted packet-id map.

use super::ondisk::{
    broker_on, expected, offline_subscriber, publish_n, restarted_from_log, write, FakeSource,
};
use super::*;
use crate::broker::{BridgeDurable, BridgeOut};

const ID: &str = "gw.uplink";

fn out_filters() -> Vec<(String, QoS)> {
    vec![("out/#".to_string(), QoS::ExactlyOnce)]
}

/// The bridge's local session with the `out/#` filter, in `h`.
fn out_session(h: &mut Harness) -> SessionKey {
    h.broker
        .bridge_session(ID, None, false, &out_filters(), h.now)
}

fn payloads(v: &[BridgeOut]) -> Vec<String> {
    v.iter()
        .map(|o| String::from_utf8(o.msg.payload.to_vec()).unwrap())
        .collect()
}

fn pids(v: &[BridgeOut]) -> Vec<u16> {
    v.iter().map(|o| o.packet_id.unwrap().get()).collect()
}

#[test]
fn bridge_queue_holds_out_topics_on_disk_and_acks_remove_them() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = out_session(&mut h);
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "out/a", 0..5);
    publish_n(&mut h, p, "other/x", 5..8); // not bridged
    write(&mut h, &src, 1);
    let s = h.broker.session(ID).unwrap();
    assert_eq!((s.queued_len(), s.queue().len()), (5, 0), "on disk");
    assert_eq!(h.broker.bridge_queued(key), 5);

    let first = h.broker.bridge_take(key, 2, h.now);
    assert_eq!(payloads(&first), expected(0..2));
    assert!(first
        .iter()
        .all(|o| o.qos == QoS::AtLeastOnce && !o.released));
    let rest = h.broker.bridge_take(key, 10, h.now);
    assert_eq!(payloads(&rest), expected(2..5));
    assert_eq!(h.broker.bridge_queued(key), 0);
    assert_eq!(h.broker.bridge_inflight(key).len(), 5);

    let pid = first[0].packet_id.unwrap();
    assert!(h.broker.bridge_done(key, pid));
    assert!(!h.broker.bridge_done(key, pid), "a second ack is ignored");
    write(&mut h, &src, 1);
    // After a restart the acknowledged message is gone, the other four still in flight.
    let mut r = restarted_from_log(&src, 1);
    let key = out_session(&mut r);
    let inflight = r.broker.bridge_inflight(key);
    assert_eq!(payloads(&inflight), expected(1..5));
    let mut want = pids(&first);
    want.extend(pids(&rest));
    assert_eq!(pids(&inflight), want[1..]);
}

#[test]
fn bridge_queue_stays_in_memory_while_the_uplink_is_up_and_short() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = out_session(&mut h);
    h.broker.bridge_link(key, true);
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "out/a", 0..5);
    write(&mut h, &src, 1);
    let s = h.broker.session(ID).unwrap();
    assert_eq!(
        (s.queued_len(), s.queue().len()),
        (5, 5),
        "kept for the uplink"
    );
    // The uplink goes down: the queue goes to disk.
    h.broker.bridge_link(key, false);
    publish_n(&mut h, p, "out/a", 5..6);
    write(&mut h, &src, 1);
    let s = h.broker.session(ID).unwrap();
    assert_eq!((s.queued_len(), s.queue().len()), (6, 0), "on disk");
    // Up again, a backlog beyond the in-memory bound goes to disk too.
    h.broker.bridge_link(key, true);
    let n = crate::broker::ondisk::BRIDGE_IN_MEMORY;
    publish_n(&mut h, p, "out/a", 6..n + 7);
    write(&mut h, &src, 1);
    let s = h.broker.session(ID).unwrap();
    assert_eq!((s.queued_len(), s.queue().len()), (n + 7, 0), "spilled");
    let taken = h.broker.bridge_take(key, n + 7, h.now);
    assert_eq!(payloads(&taken), expected(0..n + 7), "in order");
}

#[test]
fn bridge_restart_keeps_queued_and_inflight_and_the_pubrec_stage() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = out_session(&mut h);
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "out/a", 0..10);
    h.send(p, publish("out/q2", b"two", QoS::ExactlyOnce, 100));
    h.send(p, Packet::Pubrel(ack_of(100)));
    write(&mut h, &src, 1);
    let taken = h.broker.bridge_take(key, 3, h.now);
    assert_eq!(payloads(&taken), expected(0..3));
    assert!(h.broker.bridge_done(key, taken[1].packet_id.unwrap()));
    // Drain the QoS 1 ones to reach the QoS 2 message; take it, the upstream PUBRECs it.
    let more = h.broker.bridge_take(key, 7, h.now);
    assert_eq!(payloads(&more), expected(3..10));
    let q2 = h.broker.bridge_take(key, 1, h.now);
    assert_eq!(q2.len(), 1);
    assert_eq!(q2[0].qos, QoS::ExactlyOnce);
    assert!(h.broker.bridge_pubrec(key, q2[0].packet_id.unwrap()));
    for o in &more[..5] {
        assert!(h.broker.bridge_done(key, o.packet_id.unwrap()));
    }
    // Two more arrive during the outage and stay queued.
    publish_n(&mut h, p, "out/a", 10..12);
    write(&mut h, &src, 1);

    // kill -9: only the log is left.
    let mut r = restarted_from_log(&src, 1);
    let key = out_session(&mut r);
    let inflight = r.broker.bridge_inflight(key);
    let mut want: Vec<String> = vec!["m00000".into(), "m00002".into()];
    want.extend(expected(8..10));
    want.push("two".into());
    assert_eq!(payloads(&inflight), want);
    let released: Vec<bool> = inflight.iter().map(|o| o.released).collect();
    assert_eq!(
        released,
        [false, false, false, false, true],
        "PUBREL resumes"
    );
    assert_eq!(inflight[4].packet_id, q2[0].packet_id, "same id upstream");
    assert_eq!(r.broker.bridge_queued(key), 2);
    let rest = r.broker.bridge_take(key, 10, r.now);
    assert_eq!(payloads(&rest), expected(10..12));
    // New ids do not collide with those still in flight.
    for o in &rest {
        assert!(!pids(&inflight).contains(&o.packet_id.unwrap().get()));
    }
    // Completing everything leaves nothing after another restart.
    for o in inflight.iter().chain(&rest) {
        assert!(r.broker.bridge_done(key, o.packet_id.unwrap()));
    }
    write(&mut r, &src, 1);
    let mut r2 = restarted_from_log(&src, 1);
    let key = out_session(&mut r2);
    assert!(r2.broker.bridge_inflight(key).is_empty());
    assert_eq!(r2.broker.bridge_queued(key), 0);
}

#[test]
fn bridge_inbound_publish_is_not_queued_back_and_waits_for_durability() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = out_session(&mut h);
    offline_subscriber(&mut h, "s", "out/#");
    write(&mut h, &src, 1);
    // From upstream onto a topic the bridge also sends upstream (`both`): No Local.
    let d = h
        .broker
        .bridge_publish(key, "out/in", b"up", QoS::AtLeastOnce, false, &[], h.now);
    assert_eq!(h.broker.bridge_queued(key), 0, "not sent back upstream");
    assert_eq!(h.broker.session("s").unwrap().queued_len(), 1);
    let BridgeDurable::After(seq) = d else {
        panic!("queued for a persistent session: must wait for the log, got {d:?}");
    };
    assert!(h.broker.durable_batch() < seq);
    write(&mut h, &src, 1);
    assert!(h.broker.durable_batch() >= seq);
    // Nobody to keep it for: acknowledged at once.
    let d = h.broker.bridge_publish(
        key,
        "nobody/here",
        b"x",
        QoS::AtLeastOnce,
        false,
        &[],
        h.now,
    );
    assert_eq!(d, BridgeDurable::Now);
}

#[test]
fn bridge_session_follows_the_configured_filters_and_a_clean_one_starts_empty() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = out_session(&mut h);
    let p = h.client(connect("p", true, 0));
    publish_n(&mut h, p, "out/a", 0..2);
    write(&mut h, &src, 1);
    // Reconfigured: `out/#` is gone, `new/#` added.
    let filters = vec![("new/#".to_string(), QoS::AtLeastOnce)];
    let key2 = h.broker.bridge_session(ID, None, false, &filters, h.now);
    assert_eq!(key, key2);
    publish_n(&mut h, p, "out/a", 2..3);
    publish_n(&mut h, p, "new/a", 3..4);
    assert_eq!(h.broker.bridge_queued(key), 3);
    // local_cleansession true: what was queued is discarded.
    let key3 = h.broker.bridge_session(ID, None, true, &filters, h.now);
    assert_eq!(h.broker.bridge_queued(key3), 0);
}

fn ack_of(id: u16) -> Ack<'static> {
    Ack {
        packet_id: NonZeroU16::new(id).unwrap(),
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    }
}

#[test]
fn bridge_state_notification_is_published_under_sys_and_retained() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = out_session(&mut h);
    let topic = "$SYS/broker/connection/gw.test/state";
    h.broker
        .bridge_publish(key, topic, b"1", QoS::AtLeastOnce, true, &[], h.now);
    let s = h.client(connect("s", true, 0));
    h.send(
        s,
        subscribe(1, &[("$SYS/broker/connection/#", QoS::AtLeastOnce)]),
    );
    write(&mut h, &src, 1); // the SUBACK and what follows wait for the log
    let got: Vec<(String, Vec<u8>)> = h
        .take(s)
        .into_iter()
        .filter_map(|o| match o {
            Out::Publish { topic, payload, .. } => Some((topic, payload)),
            _ => None,
        })
        .collect();
    assert_eq!(got, [(topic.to_string(), b"1".to_vec())]);
}

#[test]
fn bridge_inbound_qos2_ids_are_journaled_with_the_message_and_survive_a_restart() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let key = out_session(&mut h);
    offline_subscriber(&mut h, "s", "in/#");
    write(&mut h, &src, 1);
    let (p7, p8) = (NonZeroU16::new(7).unwrap(), NonZeroU16::new(8).unwrap());
    assert!(h.broker.bridge_receive_qos2(key, p7));
    let d = h
        .broker
        .bridge_publish(key, "in/a", b"seven", QoS::ExactlyOnce, false, &[], h.now);
    assert!(
        !h.broker.bridge_receive_qos2(key, p7),
        "known: a redelivery"
    );
    assert!(h.broker.bridge_receive_qos2(key, p8));
    h.broker
        .bridge_publish(key, "in/a", b"eight", QoS::ExactlyOnce, false, &[], h.now);
    // The id and the message go to disk in one batch; the PUBREC waits for it.
    let BridgeDurable::After(seq) = d else {
        panic!("must wait for the log, got {d:?}");
    };
    assert_eq!(h.broker.bridge_pending_batch(true), Some(seq));
    write(&mut h, &src, 1);
    assert!(h.broker.journal_awaited(), "somebody waits for that batch");
    // PUBREL for 8: its release is journaled and the PUBCOMP waits for it.
    let d = h.broker.bridge_released(key, p8);
    assert!(matches!(d, BridgeDurable::After(s) if s > seq), "{d:?}");
    write(&mut h, &src, 1);
    assert_eq!(
        h.broker.bridge_released(key, p8),
        BridgeDurable::Now,
        "a PUBREL resent for an id already released durably: PUBCOMP at once"
    );

    // kill -9 between our PUBREC for 7 and the upstream's PUBREL.
    let mut r = restarted_from_log(&src, 1);
    let key = out_session(&mut r);
    assert_eq!(r.broker.bridge_awaiting_pubrel(key), [p7]);
    assert!(!r.broker.bridge_receive_qos2(key, p7), "still known");
    assert_eq!(r.broker.session("s").unwrap().queued_len(), 2, "each once");
    // The upstream lost our session: every id is void, also after the next restart.
    r.broker.bridge_inbound_reset(key);
    assert!(r.broker.bridge_awaiting_pubrel(key).is_empty());
    write(&mut r, &src, 1);
    let mut r2 = restarted_from_log(&src, 1);
    let key = out_session(&mut r2);
    assert!(r2.broker.bridge_awaiting_pubrel(key).is_empty());
}

/// wrenmq as the upstream of a 3.1.1 bridge (Mosquitto's `try_private` level byte 0x84):
/// its subscriptions are No Local and Retain As Published, as Mosquitto makes them.
#[test]
fn a_v311_bridge_client_gets_no_echo_and_keeps_retain_flags() {
    let mut h = Harness::new();
    let retained = |topic: &'static str, id: u16| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic,
            packet_id: NonZeroU16::new(id),
            properties: Properties::EMPTY,
            payload: b"r",
        })
    };
    let mut got = Vec::new();
    for bridge in [true, false] {
        let id = if bridge { "bridge" } else { "plain" };
        let b = h.client(Connect {
            bridge,
            ..connect(id, true, 0)
        });
        h.send(b, subscribe(1, &[("#", QoS::AtLeastOnce)]));
        h.take(b);
        let other = h.client(connect(if bridge { "o1" } else { "o2" }, true, 0));
        h.send(b, publish("own/t", b"mine", QoS::AtLeastOnce, 2));
        h.send(other, retained("state/t", 3));
        let seen: Vec<(String, bool)> = h
            .take(b)
            .into_iter()
            .filter_map(|o| match o {
                Out::Publish { topic, retain, .. } => Some((topic, retain)),
                _ => None,
            })
            .collect();
        got.push(seen);
    }
    assert_eq!(
        got[0],
        [("state/t".to_string(), true)],
        "bridge: no echo, RETAIN kept"
    );
    assert_eq!(
        got[1],
        [("own/t".to_string(), false), ("state/t".to_string(), false)],
        "plain client: echo, RETAIN clear on live delivery [MQTT-3.3.1-9]"
    );
}

/// The upstream learns the retained state once: a filter new to the bridge's session gets
/// the matching retained messages queued (RETAIN set); a restart or a reconnect queues
/// nothing again, only changes arrive, live.
#[test]
fn bridge_session_queues_the_retained_set_once_per_new_filter() {
    let src = FakeSource::default();
    let mut h = broker_on(&src);
    let p = h.client(connect("p", true, 0));
    let retained = |topic: &'static str, payload: &'static [u8], id: u16| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic,
            packet_id: NonZeroU16::new(id),
            properties: Properties::EMPTY,
            payload,
        })
    };
    h.send(p, retained("out/a", b"a1", 1));
    h.send(p, retained("out/b", b"b1", 2));
    h.send(p, retained("new/c", b"c1", 3));
    h.send(p, retained("other/d", b"d1", 4));
    let key = out_session(&mut h);
    let taken = h.broker.bridge_take(key, 10, h.now);
    let got: Vec<(String, bool)> = taken
        .iter()
        .map(|o| (o.msg.topic.to_string(), o.retain))
        .collect();
    assert_eq!(got, [("out/a".into(), true), ("out/b".into(), true)]);
    for o in &taken {
        assert!(h.broker.bridge_done(key, o.packet_id.unwrap()));
    }
    h.send(p, retained("out/a", b"a2", 5)); // a change: queued live
    write(&mut h, &src, 1);

    // After a restart the same filters are not new: only the change is queued.
    let mut r = restarted_from_log(&src, 1);
    let key = out_session(&mut r);
    let again = r.broker.bridge_take(key, 10, r.now);
    assert_eq!(payloads(&again), ["a2"]);
    // A topic line added to the configuration: its retained messages, once.
    let mut filters = out_filters();
    filters.push(("new/#".to_string(), QoS::AtLeastOnce));
    r.broker.bridge_session(ID, None, false, &filters, r.now);
    assert_eq!(payloads(&r.broker.bridge_take(key, 10, r.now)), ["c1"]);
    r.broker.bridge_session(ID, None, false, &filters, r.now);
    assert!(r.broker.bridge_take(key, 10, r.now).is_empty());
}
