//! Broker behaviour in-process, with a fake clock: no sockets, no sleeping.

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use super::*;
use crate::protocol::{
    decode, Ack, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Status, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

struct Harness {
    broker: Broker,
    now: Instant,
    next: u32,
    /// Final bytes of connections the broker closed.
    closed: HashMap<ConnId, Vec<u8>>,
}

fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn connect(client_id: &str, clean: bool, keep_alive: u16) -> Connect<'_> {
    Connect {
        version: ProtocolVersion::V311,
        clean_start: clean,
        keep_alive,
        properties: Properties::EMPTY,
        client_id,
        will: None,
        username: None,
        password: None,
        bridge: false,
    }
}

fn publish<'a>(topic: &'a str, payload: &'a [u8], qos: QoS, id: u16) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: NonZeroU16::new(id),
        properties: Properties::EMPTY,
        payload,
    })
}

fn subscribe(id: u16, filters: &[(&'static str, QoS)]) -> Packet<'static> {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Properties::EMPTY,
        filters: filters
            .iter()
            .map(|&(f, qos)| {
                (
                    f,
                    SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

fn ack(id: u16) -> Ack<'static> {
    Ack {
        packet_id: pid(id),
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    }
}

/// An owned view of the packets the tests look at.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Out {
    Connack {
        session_present: bool,
        code: u8,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        dup: bool,
        id: u16,
    },
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    Suback(u16, Vec<u8>),
    Unsuback(u16),
    Pingresp,
}

fn parse(mut bytes: &[u8]) -> Vec<Out> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (p, n) = match decode(bytes, Some(ProtocolVersion::V311), u32::MAX) {
            Ok(Status::Complete(x)) => x,
            other => panic!("broker wrote undecodable bytes: {other:?}"),
        };
        out.push(match p {
            Packet::Connack(c) => Out::Connack {
                session_present: c.session_present,
                code: c.code.0,
            },
            Packet::Publish(p) => Out::Publish {
                topic: p.topic.to_string(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                retain: p.retain,
                dup: p.dup,
                id: p.packet_id.map_or(0, |i| i.get()),
            },
            Packet::Puback(a) => Out::Puback(a.packet_id.get()),
            Packet::Pubrec(a) => Out::Pubrec(a.packet_id.get()),
            Packet::Pubrel(a) => Out::Pubrel(a.packet_id.get()),
            Packet::Pubcomp(a) => Out::Pubcomp(a.packet_id.get()),
            Packet::Suback(s) => {
                Out::Suback(s.packet_id.get(), s.codes.iter().map(|c| c.0).collect())
            }
            Packet::Unsuback(u) => Out::Unsuback(u.packet_id.get()),
            Packet::Pingresp => Out::Pingresp,
            other => panic!("unexpected packet from broker: {other:?}"),
        });
        bytes = &bytes[n..];
    }
    out
}

fn msg(topic: &str, payload: &str, qos: QoS, id: u16) -> Out {
    Out::Publish {
        topic: topic.into(),
        payload: payload.into(),
        qos,
        retain: false,
        dup: false,
        id,
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Config::in_memory())
    }

    fn with(config: Config) -> Harness {
        Harness {
            broker: Broker::new(config),
            now: Instant::now(),
            next: 0,
            closed: HashMap::new(),
        }
    }

    fn open(&mut self) -> ConnId {
        self.next += 1;
        let id = ConnId {
            index: self.next,
            generation: self.next * 7,
        };
        self.broker.handle_open(id, self.now);
        id
    }

    /// Opens a connection, connects it and swallows the CONNACK.
    fn client(&mut self, c: Connect<'_>) -> ConnId {
        let id = self.open();
        assert!(self.broker.handle_packet(id, Packet::Connect(c), self.now));
        assert!(matches!(self.take(id)[0], Out::Connack { code: 0, .. }));
        id
    }

    fn send(&mut self, id: ConnId, p: Packet<'_>) -> bool {
        // Round-trip through the codec so the broker sees what a socket would deliver.
        let version = match &p {
            Packet::Connect(c) => c.version,
            _ => self
                .broker
                .protocol_version(id)
                .unwrap_or(ProtocolVersion::V311),
        };
        let mut bytes = Vec::new();
        p.encode(version, &mut bytes);
        match decode(&bytes, self.broker.protocol_version(id), u32::MAX) {
            Ok(Status::Complete((p, _))) => self.broker.handle_packet(id, p, self.now),
            other => panic!("test packet does not decode: {other:?}"),
        }
    }

    fn drain_closes(&mut self) {
        while let Some(c) = self.broker.poll_close() {
            self.closed.insert(c.id, c.final_bytes);
        }
    }

    /// Everything the broker has written to `id` since the last call.
    fn take(&mut self, id: ConnId) -> Vec<Out> {
        self.drain_closes();
        while self.broker.poll_transmit().is_some() {}
        if let Some(bytes) = self.closed.get_mut(&id) {
            return parse(&std::mem::take(bytes));
        }
        let bytes = self.broker.pending_output(id).to_vec();
        self.broker.consume_output(id, bytes.len());
        parse(&bytes)
    }

    fn is_closed(&mut self, id: ConnId) -> bool {
        self.drain_closes();
        self.closed.contains_key(&id)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.broker.handle_timeout(self.now);
    }
}

#[test]
fn connect_is_answered_with_connack_accepted() {
    let mut h = Harness::new();
    let id = h.open();
    assert!(h.send(id, Packet::Connect(connect("c1", true, 60))));
    assert_eq!(
        h.take(id),
        [Out::Connack {
            session_present: false,
            code: 0
        }]
    );
}

#[test]
fn first_packet_not_connect_closes_the_connection() {
    // [MQTT-3.1.0-1]
    let mut h = Harness::new();
    let id = h.open();
    assert!(!h.send(id, Packet::Pingreq));
    assert!(h.is_closed(id));
}

#[test]
fn second_connect_is_a_protocol_violation() {
    // [MQTT-3.1.0-2]
    let mut h = Harness::new();
    let id = h.client(connect("c1", true, 0));
    assert!(!h.send(id, Packet::Connect(connect("c1", true, 0))));
    assert!(h.is_closed(id));
}

#[test]
fn empty_client_id_with_clean_session_gets_an_assigned_id() {
    // [MQTT-3.1.3-6]
    let mut h = Harness::new();
    let id = h.open();
    assert!(h.send(id, Packet::Connect(connect("", true, 0))));
    assert_eq!(
        h.take(id),
        [Out::Connack {
            session_present: false,
            code: 0
        }]
    );
    assert_eq!(h.broker.session_count(), 1);
}

#[test]
fn empty_client_id_with_persistent_session_is_rejected_0x02() {
    // [MQTT-3.1.3-8]
    let mut h = Harness::new();
    let id = h.open();
    assert!(!h.send(id, Packet::Connect(connect("", false, 0))));
    assert_eq!(
        h.take(id),
        [Out::Connack {
            session_present: false,
            code: 0x02
        }]
    );
    assert!(h.is_closed(id));
    assert_eq!(h.broker.session_count(), 0);
}

#[test]
fn keepalive_expires_after_one_and_a_half_periods() {
    // [MQTT-3.1.2-24]
    let mut h = Harness::new();
    let id = h.client(connect("k", true, 10));
    assert_eq!(
        h.broker.poll_timeout(),
        Some(h.now + Duration::from_secs(15))
    );
    h.advance(Duration::from_millis(14_900));
    assert!(!h.is_closed(id));
    h.advance(Duration::from_millis(200));
    assert!(h.is_closed(id));
}

#[test]
fn traffic_moves_the_keepalive_deadline() {
    let mut h = Harness::new();
    let id = h.client(connect("k", true, 10));
    h.advance(Duration::from_secs(10));
    assert!(h.send(id, Packet::Pingreq));
    assert_eq!(h.take(id), [Out::Pingresp]);
    h.advance(Duration::from_secs(10)); // 20 s after connect, 10 s after the ping
    assert!(!h.is_closed(id));
    h.advance(Duration::from_secs(6));
    assert!(h.is_closed(id));
}

#[test]
fn keepalive_zero_never_expires() {
    let mut h = Harness::new();
    let id = h.client(connect("k", true, 0));
    assert_eq!(
        h.broker.poll_timeout(),
        None,
        "an idle broker has nothing to wake up for"
    );
    h.advance(Duration::from_secs(1_000_000));
    assert!(!h.is_closed(id));
}

#[test]
fn a_connected_client_holds_one_timer_entry_and_a_long_keepalive_still_expires() {
    // Issue 11: the connect-timeout entry stayed in the heap next to the keepalive entry
    // (64 bytes per idle client); it now goes on as the keepalive check.
    let mut h = Harness::new();
    let id = h.client(connect("k", true, 60));
    assert_eq!(h.broker.timers.len(), 1, "one entry per connection");
    h.advance(Duration::from_secs(89));
    assert!(
        !h.is_closed(id),
        "the connect-timeout entry fired and re-armed"
    );
    h.advance(Duration::from_millis(1_100));
    assert!(
        h.is_closed(id),
        "[MQTT-3.1.2-24] 1.5 x 60 s without a packet"
    );
}

#[test]
fn a_short_keepalive_keeps_one_timer_entry_after_the_connect_timeout() {
    // The keepalive shorter than the connect timeout has its own entry; the connect-timeout
    // entry must not start a second keepalive chain when it fires.
    let mut h = Harness::new();
    let id = h.client(connect("k", true, 10));
    for _ in 0..5 {
        h.advance(Duration::from_secs(10));
        assert!(h.send(id, Packet::Pingreq));
        h.take(id);
    }
    h.broker.poll_timeout();
    assert!(!h.is_closed(id));
    assert_eq!(h.broker.timers.len(), 1, "one keepalive entry, 50 s in");
    h.advance(Duration::from_millis(15_100));
    assert!(
        h.is_closed(id),
        "[MQTT-3.1.2-24] 1.5 x 10 s without a packet"
    );
}

#[test]
fn connection_without_connect_times_out() {
    let mut h = Harness::new();
    let id = h.open();
    h.advance(Config::default().connect_timeout + Duration::from_millis(1));
    assert!(h.is_closed(id));
}

fn with_will<'a>(
    c: Connect<'a>,
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
) -> Connect<'a> {
    Connect {
        will: Some(Will {
            topic,
            payload,
            qos,
            retain,
            properties: Properties::EMPTY,
        }),
        ..c
    }
}

#[test]
fn will_is_published_on_ungraceful_close_not_after_disconnect() {
    let mut h = Harness::new();
    let sub = h.client(connect("sub", true, 0));
    h.send(sub, subscribe(1, &[("will/#", QoS::AtLeastOnce)]));
    h.take(sub);

    let a = h.client(with_will(
        connect("a", true, 0),
        "will/a",
        b"gone",
        QoS::AtLeastOnce,
        false,
    ));
    h.broker.handle_disconnect(a, Disconnect::PeerClosed, h.now);
    assert_eq!(h.take(sub), [msg("will/a", "gone", QoS::AtLeastOnce, 1)]);

    let b = h.client(with_will(
        connect("b", true, 0),
        "will/b",
        b"gone",
        QoS::AtLeastOnce,
        false,
    ));
    assert!(!h.send(
        b,
        Packet::Disconnect(crate::protocol::Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::EMPTY
        })
    ));
    h.broker.handle_disconnect(b, Disconnect::PeerClosed, h.now);
    assert_eq!(h.take(sub), [], "[MQTT-3.14.4-3] no will after DISCONNECT");
}

#[test]
fn will_is_published_on_keepalive_timeout_and_protocol_error_with_retain() {
    let mut h = Harness::new();
    let a = h.client(with_will(
        connect("a", true, 5),
        "w/a",
        b"ka",
        QoS::AtMostOnce,
        true,
    ));
    let b = h.client(with_will(
        connect("b", true, 0),
        "w/b",
        b"err",
        QoS::AtMostOnce,
        false,
    ));
    h.advance(Duration::from_secs(8));
    assert!(h.is_closed(a));
    assert!(!h.send(b, Packet::Connect(connect("b", true, 0))));
    // The retained will is there for a later subscriber; the other one was not retained.
    let s = h.client(connect("s", true, 0));
    h.send(s, subscribe(1, &[("w/#", QoS::AtMostOnce)]));
    let out = h.take(s);
    assert_eq!(out[0], Out::Suback(1, vec![0]));
    assert_eq!(
        out[1..],
        [Out::Publish {
            topic: "w/a".into(),
            payload: b"ka".to_vec(),
            qos: QoS::AtMostOnce,
            retain: true,
            dup: false,
            id: 0
        }]
    );
}

#[test]
fn takeover_closes_the_old_connection_and_publishes_its_will() {
    // [MQTT-3.1.4-2]
    let mut h = Harness::new();
    let sub = h.client(connect("sub", true, 0));
    h.send(sub, subscribe(1, &[("w", QoS::AtMostOnce)]));
    h.take(sub);
    let old = h.client(with_will(
        connect("dup", false, 0),
        "w",
        b"old",
        QoS::AtMostOnce,
        false,
    ));
    h.send(old, subscribe(2, &[("x", QoS::AtLeastOnce)]));
    h.take(old);
    let new = h.open();
    assert!(h.send(new, Packet::Connect(connect("dup", false, 0))));
    assert!(h.is_closed(old));
    assert_eq!(
        h.take(new),
        [Out::Connack {
            session_present: true,
            code: 0
        }]
    );
    assert_eq!(h.take(sub), [msg("w", "old", QoS::AtMostOnce, 0)]);
    // The session's subscription carried over to the new connection.
    h.send(sub, publish("x", b"1", QoS::AtLeastOnce, 5));
    assert_eq!(h.take(new), [msg("x", "1", QoS::AtLeastOnce, 1)]);
}

#[test]
fn qos_flows_and_delivered_qos_is_the_minimum() {
    // [MQTT-3.8.4-6] [MQTT-4.3.2-1] [MQTT-4.3.3-1]
    let mut h = Harness::new();
    let s0 = h.client(connect("s0", true, 0));
    let s2 = h.client(connect("s2", true, 0));
    h.send(s0, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.send(s2, subscribe(1, &[("t", QoS::ExactlyOnce)]));
    h.take(s0);
    h.take(s2);
    let p = h.client(connect("p", true, 0));

    h.send(p, publish("t", b"q1", QoS::AtLeastOnce, 10));
    assert_eq!(h.take(p), [Out::Puback(10)]);
    assert_eq!(h.take(s0), [msg("t", "q1", QoS::AtMostOnce, 0)]);
    assert_eq!(h.take(s2), [msg("t", "q1", QoS::AtLeastOnce, 1)]);
    h.send(s2, Packet::Puback(ack(1)));

    h.send(p, publish("t", b"q2", QoS::ExactlyOnce, 11));
    assert_eq!(h.take(p), [Out::Pubrec(11)]);
    assert_eq!(h.take(s2), [msg("t", "q2", QoS::ExactlyOnce, 2)]);
    h.send(s2, Packet::Pubrec(ack(2)));
    assert_eq!(h.take(s2), [Out::Pubrel(2)]);
    h.send(s2, Packet::Pubcomp(ack(2)));
    assert!(h.broker.session("s2").unwrap().inflight().is_empty());
    h.send(p, Packet::Pubrel(ack(11)));
    assert_eq!(h.take(p), [Out::Pubcomp(11)]);
}

#[test]
fn inbound_qos2_duplicate_before_pubrel_is_not_forwarded_again() {
    // [MQTT-4.3.3-2]
    let mut h = Harness::new();
    let s = h.client(connect("s", true, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.take(s);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"once", QoS::ExactlyOnce, 7));
    h.send(p, publish("t", b"once", QoS::ExactlyOnce, 7));
    assert_eq!(h.take(p), [Out::Pubrec(7), Out::Pubrec(7)]);
    assert_eq!(h.take(s), [msg("t", "once", QoS::AtMostOnce, 0)]);
    h.send(p, Packet::Pubrel(ack(7)));
    h.send(p, publish("t", b"again", QoS::ExactlyOnce, 7));
    assert_eq!(
        h.take(s),
        [msg("t", "again", QoS::AtMostOnce, 0)],
        "the id is free after PUBREL"
    );
}

#[test]
fn inflight_window_queues_the_rest_in_order() {
    let mut h = Harness::with(Config {
        max_inflight_messages: 2,
        ..Config::in_memory()
    });
    let s = h.client(connect("s", true, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.take(s);
    let p = h.client(connect("p", true, 0));
    for (i, body) in ["1", "2", "3", "4"].iter().enumerate() {
        h.send(
            p,
            publish("t", body.as_bytes(), QoS::AtLeastOnce, i as u16 + 1),
        );
    }
    assert_eq!(
        h.take(s),
        [
            msg("t", "1", QoS::AtLeastOnce, 1),
            msg("t", "2", QoS::AtLeastOnce, 2)
        ]
    );
    h.send(s, Packet::Puback(ack(1)));
    assert_eq!(h.take(s), [msg("t", "3", QoS::AtLeastOnce, 3)]);
    h.send(s, Packet::Puback(ack(3)));
    h.send(s, Packet::Puback(ack(2)));
    assert_eq!(h.take(s), [msg("t", "4", QoS::AtLeastOnce, 4)]);
}

#[test]
fn persistent_session_queues_while_offline_and_delivers_in_order() {
    // [MQTT-3.1.2-4] [MQTT-3.1.2-5]
    let mut h = Harness::new();
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.take(s);
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    let p = h.client(connect("p", true, 0));
    for (i, body) in ["a", "b", "c"].iter().enumerate() {
        h.send(
            p,
            publish("t", body.as_bytes(), QoS::AtLeastOnce, i as u16 + 1),
        );
    }
    h.send(p, publish("t", b"qos0", QoS::AtMostOnce, 0));
    assert_eq!(
        h.broker.session("s").unwrap().queue().len(),
        3,
        "QoS 0 is not queued by default"
    );
    let s = h.open();
    h.send(s, Packet::Connect(connect("s", false, 0)));
    assert_eq!(
        h.take(s),
        [
            Out::Connack {
                session_present: true,
                code: 0
            },
            msg("t", "a", QoS::AtLeastOnce, 1),
            msg("t", "b", QoS::AtLeastOnce, 2),
            msg("t", "c", QoS::AtLeastOnce, 3),
        ]
    );
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_on_reconnect() {
    // [MQTT-4.4.0-1]
    let mut h = Harness::new();
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::ExactlyOnce)]));
    h.take(s);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"one", QoS::AtLeastOnce, 1));
    h.send(p, publish("t", b"two", QoS::ExactlyOnce, 2));
    h.send(p, publish("t", b"three", QoS::ExactlyOnce, 3));
    assert_eq!(h.take(s).len(), 3);
    h.send(s, Packet::Pubrec(ack(3)));
    assert_eq!(h.take(s), [Out::Pubrel(3)]);
    h.broker.handle_disconnect(s, Disconnect::IoError, h.now);
    let s = h.open();
    h.send(s, Packet::Connect(connect("s", false, 0)));
    let dup = |t: &str, p: &str, qos, id| Out::Publish {
        topic: t.into(),
        payload: p.into(),
        qos,
        retain: false,
        dup: true,
        id,
    };
    assert_eq!(
        h.take(s),
        [
            Out::Connack {
                session_present: true,
                code: 0
            },
            dup("t", "one", QoS::AtLeastOnce, 1),
            dup("t", "two", QoS::ExactlyOnce, 2),
            Out::Pubrel(3),
        ]
    );
}

#[test]
fn clean_session_discards_the_stored_session() {
    // [MQTT-3.1.2-6]
    let mut h = Harness::new();
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    let s = h.open();
    h.send(s, Packet::Connect(connect("s", true, 0)));
    assert_eq!(
        h.take(s),
        [Out::Connack {
            session_present: false,
            code: 0
        }]
    );
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"x", QoS::AtLeastOnce, 1));
    assert_eq!(h.take(s), []);
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    assert!(h.broker.session("s").is_none());
}

#[test]
fn offline_queue_is_bounded_and_drops_new_messages() {
    let mut h = Harness::with(Config {
        max_queued_messages: 2,
        ..Config::in_memory()
    });
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    let p = h.client(connect("p", true, 0));
    for i in 1..=5u16 {
        h.send(
            p,
            publish("t", i.to_string().as_bytes(), QoS::AtLeastOnce, i),
        );
    }
    let session = h.broker.session("s").unwrap();
    assert_eq!(session.queue().len(), 2);
    assert_eq!(session.dropped(), 3);
    assert_eq!(&*session.queue()[0].msg.payload, b"1");
    assert_eq!(h.broker.stats().dropped_queue_full, 3);
}

#[test]
fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let mut h = Harness::new();
    let s = h.client(connect("s", true, 0));
    h.send(
        s,
        subscribe(
            1,
            &[
                ("a/#", QoS::AtMostOnce),
                ("a/+", QoS::AtLeastOnce),
                ("a/b", QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(h.take(s), [Out::Suback(1, vec![0, 1, 0])]);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("a/b", b"x", QoS::ExactlyOnce, 1));
    assert_eq!(h.take(s), [msg("a/b", "x", QoS::AtLeastOnce, 1)]);
}

#[test]
fn retained_messages_are_sent_on_subscribe_with_retain_and_cleared_by_empty_payload() {
    // [MQTT-3.3.1-5] [MQTT-3.3.1-8] [MQTT-3.3.1-9] [MQTT-3.3.1-10]
    let mut h = Harness::new();
    let p = h.client(connect("p", true, 0));
    let live = h.client(connect("live", true, 0));
    h.send(live, subscribe(1, &[("r/#", QoS::AtLeastOnce)]));
    h.take(live);
    let retained = |topic: &'static str, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic,
            packet_id: Some(pid(1)),
            properties: Properties::EMPTY,
            payload,
        })
    };
    h.send(p, retained("r/1", b"old"));
    h.send(p, retained("r/1", b"new"));
    h.send(p, retained("r/2", b"two"));
    let live_out = h.take(live);
    assert!(
        live_out
            .iter()
            .all(|o| matches!(o, Out::Publish { retain: false, .. })),
        "live delivery has RETAIN clear"
    );
    assert_eq!(h.broker.retained_count(), 2);

    let s = h.client(connect("s", true, 0));
    h.send(s, subscribe(1, &[("r/1", QoS::AtMostOnce)]));
    let out = h.take(s);
    assert_eq!(
        out,
        [
            Out::Suback(1, vec![0]),
            Out::Publish {
                topic: "r/1".into(),
                payload: b"new".to_vec(),
                qos: QoS::AtMostOnce,
                retain: true,
                dup: false,
                id: 0
            }
        ]
    );

    h.send(p, retained("r/1", b""));
    assert_eq!(h.broker.retained_count(), 1);
    let s2 = h.client(connect("s2", true, 0));
    h.send(s2, subscribe(1, &[("r/+", QoS::AtMostOnce)]));
    let out = h.take(s2);
    assert_eq!(out.len(), 2);
    assert!(matches!(&out[1], Out::Publish { topic, retain: true, .. } if topic == "r/2"));
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards_and_sys_is_read_only() {
    // [MQTT-4.7.2-1]
    let mut h = Harness::new();
    let s = h.client(connect("s", true, 0));
    h.send(
        s,
        subscribe(
            1,
            &[
                ("#", QoS::AtMostOnce),
                ("+/x", QoS::AtMostOnce),
                ("$app/#", QoS::AtMostOnce),
                ("$SYS/#", QoS::AtMostOnce),
            ],
        ),
    );
    h.take(s);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("$app/x", b"1", QoS::AtMostOnce, 0));
    h.send(p, publish("$SYS/x", b"2", QoS::AtMostOnce, 0));
    h.send(p, publish("sport", b"3", QoS::AtMostOnce, 0));
    assert_eq!(
        h.take(s),
        [
            msg("$app/x", "1", QoS::AtMostOnce, 0),
            msg("sport", "3", QoS::AtMostOnce, 0)
        ]
    );
}

#[test]
fn unsubscribe_stops_delivery_and_is_always_acknowledged() {
    // [MQTT-3.10.4-4]
    let mut h = Harness::new();
    let s = h.client(connect("s", true, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.take(s);
    let unsub = |id, f: &'static str| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(id),
            properties: Properties::EMPTY,
            filters: vec![f],
        })
    };
    h.send(s, unsub(2, "t"));
    h.send(s, unsub(3, "never/subscribed"));
    assert_eq!(h.take(s), [Out::Unsuback(2), Out::Unsuback(3)]);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"x", QoS::AtMostOnce, 0));
    assert_eq!(h.take(s), []);
}

#[test]
fn slow_consumer_loses_qos0_and_is_not_read_until_it_drains() {
    let mut h = Harness::with(Config {
        max_write_buffer: 100,
        ..Config::in_memory()
    });
    let s = h.client(connect("s", true, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.take(s);
    let p = h.client(connect("p", true, 0));
    for _ in 0..20 {
        h.send(p, publish("t", &[0u8; 20], QoS::AtMostOnce, 0));
    }
    assert!(!h.broker.wants_read(s));
    let pending = h.broker.pending_output(s).len();
    assert!(
        pending <= 100 + 25, // one 25-byte packet past the bound at most
        "buffer stays near its bound, got {pending}"
    );
    assert!(h.broker.stats().dropped_slow_consumer > 0);
    h.take(s);
    assert!(h.broker.wants_read(s));
}

#[test]
fn unsupported_protocol_level_gets_connack_0x01() {
    // [MQTT-3.1.2-2]
    let mut h = Harness::new();
    let id = h.open();
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ];
    let err = match decode(&bytes, None, u32::MAX) {
        Err(e) => e,
        other => panic!("level 6 must not decode: {other:?}"),
    };
    h.broker.handle_decode_error(id, err, h.now);
    assert_eq!(
        h.take(id),
        [Out::Connack {
            session_present: false,
            code: 0x01
        }]
    );
    assert!(h.is_closed(id));
}

// ---- persistence: journal, held acknowledgements, replay -------------------------------

fn journaled() -> Harness {
    Harness::with(Config {
        persistence: true,
        ..Config::in_memory()
    })
}

/// Replays framed records into `broker`.
fn replay(broker: &mut Broker, mut bytes: &[u8]) {
    use crate::store::record::{decode_payload, read_frame, Frame};
    while !bytes.is_empty() {
        match read_frame(bytes) {
            Frame::Complete { payload, len } => {
                broker.restore_record(
                    decode_payload(payload).expect("valid record"),
                    Instant::now(),
                );
                bytes = &bytes[len..];
            }
            other => panic!("bad frame {other:?}"),
        }
    }
    broker.finish_restore(Instant::now());
}

#[test]
fn acknowledgements_wait_until_their_records_are_durable() {
    let mut h = journaled();
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::ExactlyOnce)]));
    assert_eq!(
        h.take(s),
        [],
        "SUBACK of a persistent session waits for its record"
    );
    let (seq, _) = h
        .broker
        .poll_journal()
        .expect("session and subscription records");
    h.broker.handle_durable(seq);
    assert_eq!(h.take(s), [Out::Suback(1, vec![2])]);

    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"one", QoS::AtLeastOnce, 5));
    h.send(p, publish("t", b"two", QoS::ExactlyOnce, 6));
    h.send(p, publish("t", b"zero", QoS::AtMostOnce, 0));
    assert_eq!(h.take(p), [], "PUBACK and PUBREC are held");
    assert_eq!(
        h.take(s),
        [msg("t", "one", QoS::AtLeastOnce, 1)],
        "QoS 1 deliveries go out at once (a crash can only duplicate QoS 1); the QoS 0 one \
         waits behind the held QoS 2 one, to keep the order"
    );
    let (seq, records) = h.broker.poll_journal().expect("delivery records");
    assert!(!records.is_empty());
    h.broker.handle_durable(seq - 1);
    assert_eq!(h.take(p), [], "an older batch does not release them");
    h.broker.handle_durable(seq);
    assert_eq!(h.take(p), [Out::Puback(5), Out::Pubrec(6)]);
    assert_eq!(
        h.take(s),
        [
            msg("t", "two", QoS::ExactlyOnce, 2),
            msg("t", "zero", QoS::AtMostOnce, 0)
        ],
        "the QoS 2 delivery waited, and what came after it"
    );
}

#[test]
fn qos0_and_clean_sessions_do_not_wait_for_the_journal() {
    let mut h = journaled();
    let s = h.client(connect("s", true, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    assert_eq!(
        h.take(s),
        [Out::Suback(1, vec![1])],
        "clean sessions are not journaled"
    );
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"a", QoS::AtLeastOnce, 1));
    assert_eq!(h.take(p), [Out::Puback(1)]);
    assert_eq!(h.take(s), [msg("t", "a", QoS::AtLeastOnce, 1)]);
    assert!(
        h.broker.poll_journal().is_none(),
        "traffic between clean sessions writes nothing"
    );
}

#[test]
fn replaying_the_journal_restores_sessions_queues_inflight_and_retained() {
    let mut h = Harness::with(Config {
        persistence: true,
        max_inflight_messages: 2,
        ..Config::in_memory()
    });
    let mut log = Vec::new();
    let mut commit = |h: &mut Harness| {
        if let Some((seq, bytes)) = h.broker.poll_journal() {
            log.extend_from_slice(&bytes);
            h.broker.handle_durable(seq);
        }
    };
    let s = h.client(connect("s", false, 0));
    h.send(
        s,
        subscribe(1, &[("a/#", QoS::ExactlyOnce), ("b", QoS::AtLeastOnce)]),
    );
    commit(&mut h);
    let p = h.client(connect("p", false, 0));
    for i in 1..=5u16 {
        h.send(
            p,
            publish("a/x", format!("m{i}").as_bytes(), QoS::AtLeastOnce, i),
        );
        commit(&mut h);
    }
    // Inbound QoS 2 from a persistent publisher, PUBREL still to come.
    h.send(p, publish("b", b"q2", QoS::ExactlyOnce, 77));
    let retained = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "r",
        packet_id: None,
        properties: Properties::EMPTY,
        payload: b"kept",
    });
    h.send(p, retained);
    commit(&mut h);
    let out = h.take(s);
    assert_eq!(out.len(), 3, "SUBACK and two deliveries in flight: {out:?}");
    h.send(s, Packet::Puback(ack(1)));
    commit(&mut h);
    h.take(s);

    let before = h.broker.session("s").unwrap();
    let (queue, inflight): (Vec<_>, Vec<_>) = (
        before
            .queue()
            .iter()
            .map(|q| q.msg.payload.to_vec())
            .collect(),
        before
            .inflight()
            .iter()
            .map(|i| (i.packet_id, i.delivery.msg.payload.to_vec()))
            .collect(),
    );
    assert_eq!(inflight.len(), 2);

    for source in [log.clone(), h.broker.snapshot(h.now)] {
        let mut restored = Broker::new(Config {
            persistence: true,
            ..Config::in_memory()
        });
        replay(&mut restored, &source);
        let s2 = restored.session("s").expect("session s restored");
        assert_eq!(
            s2.queue()
                .iter()
                .map(|q| q.msg.payload.to_vec())
                .collect::<Vec<_>>(),
            queue
        );
        assert_eq!(
            s2.inflight()
                .iter()
                .map(|i| (i.packet_id, i.delivery.msg.payload.to_vec()))
                .collect::<Vec<_>>(),
            inflight
        );
        assert_eq!(s2.subscriptions.len(), 2);
        let p2 = restored.session("p").expect("session p restored");
        assert_eq!(p2.awaiting_pubrel(), vec![pid(77)]);
        assert_eq!(restored.retained_count(), 1);
        // The restored broker resumes the session with DUP redelivery, then the queue.
        let mut h2 = Harness {
            broker: restored,
            now: h.now,
            next: 100,
            closed: HashMap::new(),
        };
        let id = h2.open();
        h2.send(id, Packet::Connect(connect("s", false, 0)));
        let (seq, _) = h2.broker.poll_journal().unwrap_or((0, Vec::new()));
        h2.broker.handle_durable(seq);
        let out = h2.take(id);
        assert_eq!(
            out[0],
            Out::Connack {
                session_present: true,
                code: 0
            }
        );
        assert!(matches!(&out[1], Out::Publish { dup: true, .. }), "{out:?}");
    }
}

mod auth;
mod bounds;
mod bridge;
mod bridge_queue;
mod limits;
mod ondisk;
mod restore;
mod stress;
mod sys;
mod v5;

#[test]
fn a_session_discarded_by_clean_session_stays_discarded_after_replay() {
    let mut h = journaled();
    let mut log = Vec::new();
    let s = h.client(connect("gone", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    let s = h.open();
    h.send(s, Packet::Connect(connect("gone", true, 0)));
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    while let Some((seq, bytes)) = h.broker.poll_journal() {
        log.extend_from_slice(&bytes);
        h.broker.handle_durable(seq);
    }
    let mut restored = Broker::new(Config {
        persistence: true,
        ..Config::in_memory()
    });
    replay(&mut restored, &log);
    assert!(restored.session("gone").is_none());
    assert_eq!(restored.session_count(), 0);
}

#[test]
fn timer_heap_stays_bounded_through_connect_close_cycles() {
    // Issue 11: entries of closed connections stayed until their deadline (32 B per
    // connect/disconnect cycle). A live client with a short keepalive keeps its entry at
    // the front, so stale entries behind it are not popped on the way.
    let mut h = Harness::new();
    let _steady = h.client(connect("steady", true, 1));
    for i in 0..5000 {
        let id = h.client(connect(&format!("c{i}"), true, 3600));
        let bye = crate::protocol::Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::EMPTY,
        };
        h.send(id, Packet::Disconnect(bye));
        h.broker.poll_timeout();
    }
    // One live connection and its session: at most 4 entries each plus the slack.
    let entries = h.broker.timers.len();
    assert!(entries <= 4 * 2 + 64 + 2, "{entries} timer entries");
}

#[test]
fn v311_inbound_qos2_ids_awaiting_pubrel_are_bounded() {
    // Issue 11: a 3.1.1 client could make the broker track any number of QoS 2 ids. Over
    // the receive maximum (max_inflight_messages, 20) a new one is acknowledged and dropped.
    let mut h = Harness::new();
    let sub = h.client(connect("sub", true, 0));
    h.send(sub, subscribe(1, &[("q2/#", QoS::AtMostOnce)]));
    h.take(sub);
    let publisher = h.client(connect("pub", true, 0));
    for n in 1..=25u16 {
        h.send(publisher, publish("q2/t", b"x", QoS::ExactlyOnce, n));
    }
    let acks = h.take(publisher);
    assert_eq!(acks.len(), 25, "every PUBLISH gets its PUBREC: {acks:?}");
    assert!(acks.iter().all(|a| matches!(a, Out::Pubrec(_))));
    let pending = h.broker.session("pub").unwrap().awaiting_pubrel().len();
    assert_eq!(pending, 20);
    let delivered = h.take(sub);
    assert_eq!(delivered.len(), 20, "messages over the bound are dropped");
    for n in 1..=25u16 {
        h.send(publisher, Packet::Pubrel(ack(n)));
    }
    assert_eq!(
        h.take(publisher),
        (1..=25).map(Out::Pubcomp).collect::<Vec<_>>()
    );
    assert!(h
        .broker
        .session("pub")
        .unwrap()
        .awaiting_pubrel()
        .is_empty());
    // The window is free again.
    h.send(publisher, publish("q2/t", b"y", QoS::ExactlyOnce, 1));
    assert_eq!(h.take(sub).len(), 1);
}

#[test]
fn retained_on_subscribe_go_out_as_the_client_reads_once_per_repeated_filter() {
    // Issue 11: 40,000 `#` filters after 200 retained messages collected 8 million
    // deliveries in one vector. Now the output stays near the high-water mark and each
    // retained message is sent once however often the filter repeats.
    let mut h = Harness::new();
    let publisher = h.client(connect("pub", true, 0));
    let payload = [7u8; 100];
    let topics: Vec<String> = (0..3000).map(|i| format!("r/{i}")).collect();
    for t in &topics {
        let Packet::Publish(mut p) = publish(t, &payload, QoS::AtMostOnce, 0) else {
            unreachable!("publish() builds a PUBLISH")
        };
        p.retain = true;
        h.send(publisher, Packet::Publish(p));
    }
    assert_eq!(h.broker.retained_count(), 3000);
    let sub = h.client(connect("sub", true, 0));
    let filters = vec![("r/#", QoS::AtMostOnce); 1000];
    h.send(sub, subscribe(1, &filters));
    h.broker.poll_transmit();
    let first = h.broker.pending_output(sub).len();
    assert!(first < 64 * 1024 + 64 * 200, "{first} bytes queued at once");
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut turns = 0;
    loop {
        for out in h.take(sub) {
            if let Out::Publish { topic, retain, .. } = out {
                assert!(retain, "sent with RETAIN set [MQTT-3.3.1-8]");
                *seen.entry(topic).or_default() += 1;
            }
        }
        match h.broker.poll_timeout() {
            Some(at) if at <= h.now => h.broker.handle_timeout(h.now),
            _ => break,
        }
        turns += 1;
        assert!(turns < 1000, "retained delivery makes progress");
    }
    assert_eq!(seen.len(), 3000);
    assert!(
        seen.values().all(|&n| n == 1),
        "each retained message sent once"
    );
    assert!(turns > 1, "delivered over several turns");
}

/// A retransmitted QoS 2 PUBLISH (or PUBREL) on a new connection, in a loop turn that
/// writes no record, must not be acknowledged before the batch holding the original's
/// record is durable: the acknowledgement of the first connection was held and died with
/// it, so nothing on the new connection knew to wait.
#[test]
fn qos2_retransmission_after_reconnect_waits_for_the_original_batch() {
    let mut h = journaled();
    let dup = |id: u16| {
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "t",
            packet_id: NonZeroU16::new(id),
            properties: Properties::EMPTY,
            payload: b"m",
        })
    };
    let p = h.client(connect("p", false, 0));
    let (seq, _) = h.broker.poll_journal().expect("session record");
    h.broker.handle_durable(seq);
    h.send(p, publish("t", b"m", QoS::ExactlyOnce, 9));
    let (pending, _) = h.broker.poll_journal().expect("awaiting-PUBREL record");
    assert_eq!(h.take(p), [], "PUBREC held for the batch being fsynced");
    h.broker.handle_disconnect(p, Disconnect::PeerClosed, h.now);
    let p = h.client(connect("p", false, 0));
    h.send(p, dup(9));
    assert!(
        h.broker.poll_journal().is_none(),
        "a retransmission writes nothing"
    );
    assert_eq!(
        h.take(p),
        [],
        "PUBREC before the original record is durable"
    );
    h.broker.handle_durable(pending);
    assert_eq!(h.take(p), [Out::Pubrec(9)]);

    // The same for PUBREL: its PUBCOMP waits for the release record.
    h.send(p, Packet::Pubrel(ack(9)));
    let (pending, _) = h.broker.poll_journal().expect("released record");
    h.broker.handle_disconnect(p, Disconnect::PeerClosed, h.now);
    let p = h.client(connect("p", false, 0));
    h.send(p, Packet::Pubrel(ack(9)));
    assert_eq!(
        h.take(p),
        [],
        "PUBCOMP before the release record is durable"
    );
    h.broker.handle_durable(pending);
    assert_eq!(h.take(p), [Out::Pubcomp(9)]);
}

#[test]
fn many_subscribes_in_one_turn_share_one_retained_scan_budget() {
    // Many small SUBSCRIBEs read in one turn, each with a wildcard filter that matches
    // none of a large retained store, must not each scan a share of the store at once.
    let mut h = Harness::new();
    let publisher = h.client(connect("pub", true, 0));
    for i in 0..20_000 {
        let t = format!("r/{i}");
        let Packet::Publish(mut p) = publish(&t, b"x", QoS::AtMostOnce, 0) else {
            unreachable!("publish() builds a PUBLISH")
        };
        p.retain = true;
        h.send(publisher, Packet::Publish(p));
    }
    let sub = h.client(connect("sub", true, 0));
    let filters: Vec<String> = (0..100).map(|i| format!("zz/{i}/#")).collect();
    for (i, f) in filters.iter().enumerate() {
        let s = Subscribe {
            packet_id: pid(i as u16 + 1),
            properties: Properties::EMPTY,
            filters: vec![(f.as_str(), SubscriptionOptions::default())],
        };
        h.send(sub, Packet::Subscribe(s));
    }
    let pending = h
        .broker
        .retained_jobs
        .get(&sub)
        .map_or(0, |j| j.pending_len());
    assert!(
        pending >= 99,
        "{pending} filters left: the turn scanned too much"
    );
    let mut turns = 0;
    while h.broker.poll_timeout().is_some_and(|at| at <= h.now) {
        h.broker.handle_timeout(h.now);
        turns += 1;
        assert!(turns < 1000, "retained jobs make progress");
    }
    assert!(h.broker.retained_jobs.is_empty());
    assert!(
        turns >= 100,
        "2,000,000 slots take many turns, not one: {turns}"
    );
    let subacks = h.take(sub);
    assert_eq!(
        subacks.len(),
        100,
        "SUBACKs only, no retained message matches"
    );
}

#[test]
fn retained_messages_due_on_subscribe_survive_a_takeover_of_a_persistent_session() {
    // Found by the stress test (`tests/stress.rs`): a SUBSCRIBE's retained messages wait in
    // a job while the session has messages queued behind a full inflight window. The job
    // died with the connection, so a persistent session resumed on a new connection never
    // got the retained messages it was due [MQTT-3.3.1-6].
    let mut h = Harness::with(Config {
        max_inflight_messages: 1,
        ..Config::in_memory()
    });
    let p = h.client(connect("p", true, 0));
    let Packet::Publish(mut r) = publish("r", b"kept", QoS::AtLeastOnce, 1) else {
        unreachable!("publish() builds a PUBLISH")
    };
    r.retain = true;
    h.send(p, Packet::Publish(r));
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    h.send(p, publish("t", b"1", QoS::AtLeastOnce, 2));
    h.send(p, publish("t", b"2", QoS::AtLeastOnce, 3));
    h.take(s); // SUBACK and "1" in flight; "2" is queued behind it, unacknowledged
    h.send(s, subscribe(2, &[("r", QoS::AtLeastOnce)]));
    assert_eq!(h.take(s), [Out::Suback(2, vec![1])], "blocked by the queue");
    // The client comes back on a new connection (a takeover) and reads everything.
    let s2 = h.open();
    h.send(s2, Packet::Connect(connect("s", false, 0)));
    let mut got = Vec::new();
    for _ in 0..10 {
        while h.broker.poll_timeout().is_some_and(|at| at <= h.now) {
            h.broker.handle_timeout(h.now);
        }
        for o in h.take(s2) {
            if let Out::Publish { id, payload, .. } = &o {
                got.push(String::from_utf8_lossy(payload).into_owned());
                h.send(s2, Packet::Puback(ack(*id)));
            }
        }
    }
    got.sort();
    got.dedup();
    assert_eq!(got, ["1", "2", "kept"]);
}

#[test]
fn idle_connection_records_stay_small() {
    // Issue 11 (per-connection memory): these are paid by every idle client.
    assert!(
        std::mem::size_of::<Conn>() <= 48,
        "{}",
        std::mem::size_of::<Conn>()
    );
    assert!(
        std::mem::size_of::<Session>() <= 112,
        "{}",
        std::mem::size_of::<Session>()
    );
    // The vector of connections holds an `Option<Conn>`: its tag must fit in a niche.
    assert_eq!(
        std::mem::size_of::<Option<Conn>>(),
        std::mem::size_of::<Conn>()
    );
}
