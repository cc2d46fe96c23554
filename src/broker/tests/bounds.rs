//! Resource bounds (issue 11): retained store, sessions, subscriptions across clients,
//! client-id length, byte caps counting MQTT 5 properties, and `memory_limit`.

use super::*;
use crate::protocol::{PropertiesBuf, Property};

/// Acknowledgement and CONNACK codes a 5.0 client got, in order.
pub(super) fn codes5(h: &mut Harness, id: ConnId) -> Vec<(&'static str, u8)> {
    h.drain_closes();
    while h.broker.poll_transmit().is_some() {}
    let bytes = match h.closed.get_mut(&id) {
        Some(b) => std::mem::take(b),
        None => {
            let b = h.broker.pending_output(id).to_vec();
            h.broker.consume_output(id, b.len());
            b
        }
    };
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (p, n) = match decode(rest, Some(ProtocolVersion::V5), u32::MAX) {
            Ok(Status::Complete(x)) => x,
            other => panic!("undecodable v5 bytes: {other:?}"),
        };
        out.push(match p {
            Packet::Connack(c) => ("connack", c.code.0),
            Packet::Puback(a) => ("puback", a.reason.0),
            Packet::Pubrec(a) => ("pubrec", a.reason.0),
            Packet::Pubcomp(a) => ("pubcomp", a.reason.0),
            Packet::Suback(s) => ("suback", s.codes.first().map_or(0, |c| c.0)),
            Packet::Publish(_) => ("publish", 0),
            Packet::Disconnect(d) => ("disconnect", d.reason.0),
            other => panic!("unexpected: {other:?}"),
        });
        rest = &rest[n..];
    }
    out
}

fn connect5(client_id: &str) -> Connect<'_> {
    Connect {
        version: ProtocolVersion::V5,
        ..connect(client_id, true, 0)
    }
}

/// Opens and connects a 5.0 client, swallowing its CONNACK.
pub(super) fn client5(h: &mut Harness, client_id: &str) -> ConnId {
    let id = h.open();
    h.send(id, Packet::Connect(connect5(client_id)));
    assert_eq!(codes5(h, id), vec![("connack", 0)]);
    id
}

fn retained<'a>(topic: &'a str, payload: &'a [u8], qos: QoS, id: u16) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: true,
        topic,
        packet_id: NonZeroU16::new(id),
        properties: Properties::EMPTY,
        payload,
    })
}

#[test]
fn retained_store_beyond_max_retained_messages_is_refused_but_delivered_live() {
    let mut h = Harness::with(Config {
        max_retained_messages: 2,
        ..Config::in_memory()
    });
    let sub = h.client(connect("sub", true, 0));
    h.send(sub, subscribe(1, &[("r/#", QoS::AtMostOnce)]));
    h.take(sub);
    let p = h.client(connect("p", true, 0));
    h.send(p, retained("r/1", b"a", QoS::AtMostOnce, 0));
    h.send(p, retained("r/2", b"b", QoS::AtMostOnce, 0));
    h.send(p, retained("r/3", b"c", QoS::AtLeastOnce, 1));
    assert_eq!(h.take(p), vec![Out::Puback(1)], "3.1.1 cannot be told");
    assert_eq!(h.broker.retained_count(), 2, "r/3 not stored");
    let live = h.take(sub);
    assert_eq!(live.len(), 3, "all three delivered live: {live:?}");
    // Replacing a stored topic and clearing one always work.
    h.send(p, retained("r/1", b"a2", QoS::AtMostOnce, 0));
    h.send(p, retained("r/2", b"", QoS::AtMostOnce, 0));
    assert_eq!(h.broker.retained_count(), 1);
    h.send(p, retained("r/3", b"c", QoS::AtMostOnce, 0));
    assert_eq!(h.broker.retained_count(), 2, "room again after the clear");

    // A 5.0 publisher of QoS 1/2 is told 0x97, and the message is not published.
    let p5 = client5(&mut h, "p5");
    h.take(sub);
    h.send(p5, retained("r/4", b"d", QoS::AtLeastOnce, 1));
    h.send(p5, retained("r/5", b"e", QoS::ExactlyOnce, 2));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0x97), ("pubrec", 0x97)]);
    assert!(h.take(sub).is_empty(), "refused messages are not delivered");
    // The refused QoS 2 id is not left awaiting PUBREL: reusing it is a new message.
    h.send(p5, retained("r/1", b"again", QoS::ExactlyOnce, 2));
    assert_eq!(codes5(&mut h, p5), vec![("pubrec", 0x00)]);
    assert_eq!(h.take(sub).len(), 1);
}

#[test]
fn retained_store_beyond_max_retained_bytes_is_refused() {
    let mut h = Harness::with(Config {
        max_retained_bytes: 100,
        ..Config::in_memory()
    });
    let p = h.client(connect("p", true, 0));
    // Topic + payload: 2 + 60 = 62 bytes, then 2 + 40 = 42 (104 > 100).
    h.send(p, retained("r1", &[1; 60], QoS::AtMostOnce, 0));
    h.send(p, retained("r2", &[2; 40], QoS::AtMostOnce, 0));
    assert_eq!(h.broker.retained_count(), 1);
    // Replacing r1 with a smaller message frees room.
    h.send(p, retained("r1", &[1; 10], QoS::AtMostOnce, 0));
    h.send(p, retained("r2", &[2; 40], QoS::AtMostOnce, 0));
    assert_eq!(h.broker.retained_count(), 2);
}

#[test]
fn connect_beyond_max_sessions_is_refused_server_unavailable_or_quota_exceeded() {
    let mut h = Harness::with(Config {
        max_sessions: 2,
        ..Config::in_memory()
    });
    let a = h.client(connect("a", false, 0));
    h.client(connect("b", true, 0));
    // An offline persistent session still counts.
    h.broker.handle_disconnect(a, Disconnect::PeerClosed, h.now);
    let c = h.open();
    h.send(c, Packet::Connect(connect("c", true, 0)));
    assert_eq!(
        h.take(c),
        vec![Out::Connack {
            session_present: false,
            code: 0x03
        }]
    );
    assert!(h.is_closed(c));
    let c5 = h.open();
    h.send(c5, Packet::Connect(connect5("c5")));
    assert_eq!(codes5(&mut h, c5), vec![("connack", 0x97)]);
    // Resuming an existing session always works.
    let a2 = h.open();
    h.send(a2, Packet::Connect(connect("a", false, 0)));
    assert_eq!(
        h.take(a2),
        vec![Out::Connack {
            session_present: true,
            code: 0
        }]
    );
    assert_eq!(h.broker.session_count(), 2);
}

#[test]
fn client_id_longer_than_max_client_id_length_is_rejected() {
    let mut h = Harness::with(Config {
        max_client_id_length: 8,
        ..Config::in_memory()
    });
    h.client(connect("12345678", true, 0));
    let c = h.open();
    h.send(c, Packet::Connect(connect("123456789", true, 0)));
    assert_eq!(
        h.take(c),
        vec![Out::Connack {
            session_present: false,
            code: 0x02
        }]
    );
    let c5 = h.open();
    h.send(c5, Packet::Connect(connect5("123456789")));
    assert_eq!(codes5(&mut h, c5), vec![("connack", 0x85)]);
    assert_eq!(h.broker.session_count(), 1);
}

#[test]
fn subscriptions_beyond_max_subscriptions_across_clients_are_refused() {
    let mut h = Harness::with(Config {
        max_subscriptions: 3,
        ..Config::in_memory()
    });
    let a = h.client(connect("a", true, 0));
    let b = h.client(connect("b", true, 0));
    h.send(
        a,
        subscribe(1, &[("x", QoS::AtMostOnce), ("y", QoS::AtMostOnce)]),
    );
    assert_eq!(h.take(a), vec![Out::Suback(1, vec![0, 0])]);
    h.send(
        b,
        subscribe(1, &[("x", QoS::AtLeastOnce), ("z", QoS::AtMostOnce)]),
    );
    assert_eq!(h.take(b), vec![Out::Suback(1, vec![1, 0x80])]);
    // Replacing an existing subscription is always allowed; unsubscribing frees room.
    h.send(a, subscribe(2, &[("x", QoS::ExactlyOnce)]));
    assert_eq!(h.take(a), vec![Out::Suback(2, vec![2])]);
    h.send(
        a,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(3),
            properties: Properties::EMPTY,
            filters: vec!["y"],
        }),
    );
    h.take(a);
    h.send(b, subscribe(2, &[("z", QoS::AtMostOnce)]));
    assert_eq!(h.take(b), vec![Out::Suback(2, vec![0])]);
}

#[test]
fn message_size_limit_counts_mqtt5_properties() {
    let mut h = Harness::with(Config {
        message_size_limit: 100,
        ..Config::in_memory()
    });
    let sub = h.client(connect("sub", true, 0));
    h.send(sub, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.take(sub);
    let p5 = client5(&mut h, "p5");
    let mut props = PropertiesBuf::new();
    let big = "v".repeat(200);
    props.push(Property::UserProperty("k", &big));
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t",
        packet_id: None,
        properties: props.as_properties(),
        payload: b"small",
    });
    h.send(p5, publish);
    assert!(
        h.take(sub).is_empty(),
        "5 payload bytes + 200 bytes of properties are over 100"
    );
    h.send(p5, super::publish("t", b"small", QoS::AtMostOnce, 0));
    assert_eq!(h.take(sub).len(), 1);
}

#[test]
fn memory_limit_drops_qos0_refuses_qos1_and_recovers_when_the_queue_drains() {
    let limit = 16 * 1024;
    let mut h = Harness::with(Config {
        memory_limit: limit,
        ..Config::in_memory()
    });
    // An offline persistent subscriber: its queue holds what is published.
    let sub = h.client(connect("sub", false, 0));
    h.send(sub, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.take(sub);
    h.broker
        .handle_disconnect(sub, Disconnect::PeerClosed, h.now);
    let base = h.broker.memory_used();

    let p5 = client5(&mut h, "p5");
    let payload = [7u8; 1000];
    let mut accepted = 0u16;
    let mut refused = false;
    for i in 1..=100u16 {
        h.send(p5, super::publish("t", &payload, QoS::AtLeastOnce, i));
        match codes5(&mut h, p5)[..] {
            [("puback", 0)] => accepted += 1,
            [("puback", 0x97)] => {
                refused = true;
                break;
            }
            ref other => panic!("{other:?}"),
        }
    }
    assert!(refused, "QoS 1 refused with 0x97 once at the limit");
    assert!(
        (10..=16).contains(&accepted),
        "{accepted} messages of ~1 KB fit 16 KiB"
    );
    let used = h.broker.memory_used();
    assert!(used >= limit && used > base, "{used}");
    assert_eq!(
        h.broker.session("sub").map(|s| s.queue().len()),
        Some(usize::from(accepted))
    );

    // QoS 0 is dropped (the queue does not grow), the publisher keeps its connection.
    let dropped = h.broker.stats().dropped_memory_limit;
    h.send(p5, super::publish("t", &payload, QoS::AtMostOnce, 0));
    assert_eq!(h.broker.stats().dropped_memory_limit, dropped + 1);
    assert!(!h.is_closed(p5));
    // A 3.1.1 publisher cannot be told no: its connection is closed, as Mosquitto does.
    let p3 = h.client(connect("p3", true, 0));
    assert!(!h.send(p3, super::publish("t", &payload, QoS::AtLeastOnce, 1)));
    assert!(h.is_closed(p3));
    assert!(h.take(p3).is_empty(), "no PUBACK for a message not taken");

    // The subscriber comes back and drains its queue: memory frees and messages flow.
    let sub = h.open();
    h.send(sub, Packet::Connect(connect("sub", false, 0)));
    let mut received = 0;
    for _ in 0..=accepted {
        for o in h.take(sub) {
            if let Out::Publish { id, .. } = o {
                received += 1;
                h.send(sub, Packet::Puback(ack(id)));
            }
        }
    }
    assert_eq!(received, accepted, "every accepted message delivered");
    assert_eq!(h.broker.session("sub").map(|s| s.queue().len()), Some(0));
    assert!(h
        .broker
        .session("sub")
        .is_some_and(|s| s.inflight().is_empty()));
    assert!(
        h.broker.memory_used() < limit - limit / 8,
        "{}",
        h.broker.memory_used()
    );
    h.send(p5, super::publish("t", &payload, QoS::AtLeastOnce, 200));
    assert_eq!(codes5(&mut h, p5), vec![("puback", 0)]);
    assert_eq!(h.take(sub).len(), 1);
}

#[test]
fn memory_used_counts_a_shared_message_once_and_returns_to_zero() {
    let mut h = Harness::with(Config::in_memory());
    let p = h.client(connect("p", true, 0));
    let idle = h.broker.memory_used();
    // Three offline subscribers share one stored message.
    for name in ["a", "b", "c"] {
        let s = h.client(connect(name, false, 0));
        h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
        h.take(s);
        h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    }
    let before = h.broker.memory_used();
    h.send(p, super::publish("t", &[0u8; 10_000], QoS::AtLeastOnce, 1));
    h.take(p);
    let grown = h.broker.memory_used() - before;
    assert!((10_000..11_000).contains(&grown), "counted once: {grown}");
    // Ending the sessions drops the queues, and with the last one the message.
    for name in ["a", "b", "c"] {
        let s = h.open();
        h.send(s, Packet::Connect(connect(name, true, 0)));
        h.take(s);
        h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    }
    assert_eq!(h.broker.memory_used(), idle);
}

#[test]
fn memory_used_counts_write_buffers_until_written_or_closed() {
    let mut h = Harness::with(Config::in_memory());
    let sub = h.client(connect("sub", true, 0));
    h.send(sub, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.take(sub);
    let p = h.client(connect("p", true, 0));
    let idle = h.broker.memory_used();
    for _ in 0..10 {
        h.send(p, super::publish("t", &[1u8; 5000], QoS::AtMostOnce, 0));
    }
    // QoS 0 goes straight to the write buffer; the loop's next poll counts it.
    while h.broker.poll_transmit().is_some() {}
    assert!(h.broker.memory_used() >= idle + 50_000);
    // Written out: given back.
    let n = h.broker.pending_output(sub).len();
    h.broker.consume_output(sub, n);
    // (An idle connection may keep a buffer of up to 4 KiB.)
    assert!(
        h.broker.memory_used() <= idle + 4096,
        "{}",
        h.broker.memory_used()
    );
    // Closed with output pending: no longer the broker's.
    h.send(p, super::publish("t", &[1u8; 5000], QoS::AtMostOnce, 0));
    while h.broker.poll_transmit().is_some() {}
    assert!(h.broker.memory_used() > idle);
    h.broker
        .handle_disconnect(sub, Disconnect::PeerClosed, h.now);
    assert!(
        h.broker.memory_used() <= idle + 4096,
        "{}",
        h.broker.memory_used()
    );
}

#[test]
fn memory_used_counts_each_queue_entry_and_gives_them_back() {
    // Issue 11: a message was counted once, but the queue entries referring to it were
    // not counted at all.
    let mut h = Harness::with(Config::in_memory());
    let p = h.client(connect("p", true, 0));
    let idle = h.broker.memory_used();
    for (name, filter) in [("a", "#"), ("b", "t3"), ("c", "t3")] {
        let s = h.client(connect(name, false, 0));
        h.send(s, subscribe(1, &[(filter, QoS::AtLeastOnce)]));
        h.take(s);
        h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    }
    let before = h.broker.memory_used();
    h.send(p, super::publish("t1", &[0u8; 100], QoS::AtLeastOnce, 1));
    h.take(p);
    let one = h.broker.memory_used() - before;
    h.send(p, super::publish("t3", &[0u8; 100], QoS::AtLeastOnce, 2));
    h.take(p);
    let three = h.broker.memory_used() - before - one;
    assert_eq!(
        three - one,
        2 * crate::broker::QUEUED_ENTRY,
        "two more entries"
    );
    assert_eq!(h.broker.queued_entries, 4);
    // Delivered and acknowledged: the entry goes, and the message with its last holder.
    let a = h.open();
    h.send(a, Packet::Connect(connect("a", false, 0)));
    for o in h.take(a) {
        if let Out::Publish { id, .. } = o {
            h.send(a, Packet::Puback(ack(id)));
        }
    }
    assert_eq!(h.broker.queued_entries, 2);
    // Left: t3's message and the two entries of b and c.
    let entry = crate::broker::QUEUED_ENTRY;
    assert_eq!(h.broker.memory_used(), before + three - entry);
    // Ending the sessions takes their queues' entries.
    for name in ["a", "b", "c"] {
        let s = h.open();
        h.send(s, Packet::Connect(connect(name, true, 0)));
        h.take(s);
        h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    }
    assert_eq!(h.broker.queued_entries, 0);
    assert_eq!(h.broker.memory_used(), idle);
}

#[test]
fn memory_used_counts_output_held_for_the_journal_until_written() {
    // Issue 11: acknowledgements held until their batch is durable were not counted.
    let mut h = journaled();
    // An offline persistent subscriber: each publish is journaled, so its PUBACK is held.
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    let p = h.client(connect("p", true, 0));
    let (seq, _) = h.broker.poll_journal().expect("session records");
    h.broker.handle_durable(seq);
    h.take(p);
    for i in 1..=50 {
        h.send(p, super::publish("t", &[0u8; 10], QoS::AtLeastOnce, i));
    }
    // The PUBACKs wait for the batch; the loop's next poll counts them.
    while h.broker.poll_transmit().is_some() {}
    assert!(
        h.broker.pending_output(p).is_empty(),
        "held, not in the write buffer"
    );
    let held = h.broker.memory_used();
    // Durable: moved to the write buffer (still counted), then written: given back.
    let (seq, _) = h.broker.poll_journal().expect("enqueue records");
    h.broker.handle_durable(seq);
    while h.broker.poll_transmit().is_some() {}
    assert_eq!(h.broker.pending_output(p).len(), 50 * 4);
    let buffered = h.broker.memory_used();
    h.broker.consume_output(p, 50 * 4);
    let written = h.broker.memory_used();
    assert!(held >= written + 50 * 4, "held: {}", held - written);
    assert!(
        buffered >= written + 50 * 4,
        "buffered: {}",
        buffered - written
    );
    assert_eq!(h.broker.queued_entries, 50);
}

#[test]
fn qos2_id_refused_with_pubrec_0x87_is_free_for_the_next_message() {
    // [MQTT-4.3.3-4] a PUBREC with an error code ends the flow. The id used to stay
    // "awaiting PUBREL", so the client's next message with it was taken for a
    // retransmission and never delivered.
    let mut h = Harness::new();
    let sub = h.client(connect("sub", true, 0));
    h.send(sub, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.take(sub);
    let p5 = client5(&mut h, "p5");
    h.send(p5, super::publish("$SYS/x", b"no", QoS::ExactlyOnce, 1));
    assert_eq!(codes5(&mut h, p5), vec![("pubrec", 0x87)]);
    h.send(p5, super::publish("t", b"yes", QoS::ExactlyOnce, 1));
    assert_eq!(codes5(&mut h, p5), vec![("pubrec", 0x00)]);
    assert_eq!(h.take(sub), vec![msg("t", "yes", QoS::AtMostOnce, 0)]);
}
