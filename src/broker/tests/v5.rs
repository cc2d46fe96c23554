//! MQTT 5.0 behaviour in-process with a fake clock: session expiry, will delay, properties,
//! topic aliases, flow control, subscription options, shared subscriptions, reason codes.

use super::*;
use crate::protocol::{PropertiesBuf, Property, RetainHandling};

/// What a v5 test looks at in one packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum V5 {
    Connack {
        present: bool,
        code: u8,
        props: Vec<String>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        id: u16,
        props: Vec<String>,
    },
    Ack {
        kind: &'static str,
        id: u16,
        code: u8,
    },
    Suback(Vec<u8>),
    Unsuback(Vec<u8>),
    Disconnect(u8),
    Pingresp,
}

fn props(p: &Properties<'_>) -> Vec<String> {
    p.iter().map(|x| format!("{x:?}")).collect()
}

fn parse5(mut bytes: &[u8]) -> Vec<V5> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (p, n) = match decode(bytes, Some(ProtocolVersion::V5), u32::MAX) {
            Ok(Status::Complete(x)) => x,
            other => panic!("undecodable v5 bytes: {other:?}"),
        };
        out.push(match p {
            Packet::Connack(c) => V5::Connack {
                present: c.session_present,
                code: c.code.0,
                props: props(&c.properties),
            },
            Packet::Publish(p) => V5::Publish {
                topic: p.topic.into(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                retain: p.retain,
                id: p.packet_id.map_or(0, |i| i.get()),
                props: props(&p.properties),
            },
            Packet::Puback(a) => V5::Ack {
                kind: "puback",
                id: a.packet_id.get(),
                code: a.reason.0,
            },
            Packet::Pubrec(a) => V5::Ack {
                kind: "pubrec",
                id: a.packet_id.get(),
                code: a.reason.0,
            },
            Packet::Pubrel(a) => V5::Ack {
                kind: "pubrel",
                id: a.packet_id.get(),
                code: a.reason.0,
            },
            Packet::Pubcomp(a) => V5::Ack {
                kind: "pubcomp",
                id: a.packet_id.get(),
                code: a.reason.0,
            },
            Packet::Suback(s) => V5::Suback(s.codes.iter().map(|c| c.0).collect()),
            Packet::Unsuback(u) => V5::Unsuback(u.codes.iter().map(|c| c.0).collect()),
            Packet::Disconnect(d) => V5::Disconnect(d.reason.0),
            Packet::Pingresp => V5::Pingresp,
            other => panic!("unexpected {other:?}"),
        });
        bytes = &bytes[n..];
    }
    out
}

impl Harness {
    fn take5(&mut self, id: ConnId) -> Vec<V5> {
        self.drain_closes();
        while self.broker.poll_transmit().is_some() {}
        if let Some(bytes) = self.closed.get_mut(&id) {
            return parse5(&std::mem::take(bytes));
        }
        let bytes = self.broker.pending_output(id).to_vec();
        self.broker.consume_output(id, bytes.len());
        parse5(&bytes)
    }

    /// Connects a 5.0 client with these CONNECT properties; returns the CONNACK.
    fn connect5(
        &mut self,
        client_id: &str,
        clean: bool,
        keep_alive: u16,
        p: &PropertiesBuf,
    ) -> (ConnId, Vec<V5>) {
        let id = self.open();
        let c = Connect {
            version: ProtocolVersion::V5,
            properties: p.as_properties(),
            ..connect(client_id, clean, keep_alive)
        };
        self.send(id, Packet::Connect(c));
        let out = self.take5(id);
        (id, out)
    }
}

fn pb(list: &[Property<'_>]) -> PropertiesBuf {
    let mut b = PropertiesBuf::new();
    for p in list {
        b.push(*p);
    }
    b
}

fn sub5<'a>(id: u16, filter: &'a str, o: SubscriptionOptions, p: &'a PropertiesBuf) -> Packet<'a> {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: p.as_properties(),
        filters: vec![(filter, o)],
    })
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

fn pub5<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    id: u16,
    p: &'a PropertiesBuf,
) -> Packet<'a> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: NonZeroU16::new(id),
        properties: p.as_properties(),
        payload,
    })
}

#[test]
fn connack_announces_the_server_limits_and_an_assigned_id() {
    let mut h = Harness::new();
    let (_, connack) = h.connect5("", true, 0, &PropertiesBuf::new());
    let V5::Connack { code: 0, props, .. } = connack[0].clone() else {
        panic!("{connack:?}")
    };
    assert!(
        props
            .iter()
            .any(|p| p.starts_with("AssignedClientIdentifier(\"auto-")),
        "[MQTT-3.2.2-16] {props:?}"
    );
    assert!(props.contains(&"ReceiveMaximum(20)".to_string()));
    assert!(props.contains(&"TopicAliasMaximum(10)".to_string()));
    assert!(props.contains(&"MaximumPacketSize(2000000)".to_string()));
    assert!(
        props.contains(&"ServerKeepAlive(65535)".to_string()),
        "keepalive 0 is capped like Mosquitto"
    );
}

#[test]
fn authentication_method_is_refused_with_0x8c() {
    let mut h = Harness::new();
    let (id, connack) = h.connect5(
        "a",
        true,
        0,
        &pb(&[Property::AuthenticationMethod("SCRAM-SHA-1")]),
    );
    assert!(
        matches!(connack[0], V5::Connack { code: 0x8C, .. }),
        "{connack:?}"
    );
    assert!(h.is_closed(id));
}

#[test]
fn session_expiry_keeps_the_session_for_its_interval_only() {
    // [MQTT-3.1.2-23]
    let mut h = Harness::new();
    let expiry = pb(&[Property::SessionExpiryInterval(10)]);
    let (s, _) = h.connect5("s", true, 0, &expiry);
    h.send(
        s,
        sub5(1, "t", opts(QoS::AtLeastOnce), &PropertiesBuf::new()),
    );
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    h.advance(Duration::from_secs(9));
    assert!(h.broker.session("s").is_some());
    let (s, connack) = h.connect5("s", false, 0, &expiry);
    assert!(
        matches!(connack[0], V5::Connack { present: true, .. }),
        "resumed within the interval"
    );
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    h.advance(Duration::from_secs(11));
    assert!(h.broker.session("s").is_none(), "gone after the interval");
    // Expiry 0 (the default) ends the session with the connection.
    let (s, _) = h.connect5("z", false, 0, &PropertiesBuf::new());
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    assert!(h.broker.session("z").is_none());
}

#[test]
fn disconnect_may_not_raise_the_session_expiry_from_zero() {
    // 5.0 §3.14.2.2.2
    let mut h = Harness::new();
    let (s, _) = h.connect5("s", true, 0, &PropertiesBuf::new());
    let raise = pb(&[Property::SessionExpiryInterval(60)]);
    let d = crate::protocol::Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: raise.as_properties(),
    };
    h.send(s, Packet::Disconnect(d));
    assert_eq!(h.take5(s), [V5::Disconnect(0x82)]);
}

#[test]
fn will_delay_is_cancelled_by_a_resume_and_published_after_it_otherwise() {
    // [MQTT-3.1.3-9]
    let mut h = Harness::new();
    let watcher = h.client(connect("w", true, 0));
    h.send(watcher, subscribe(1, &[("will/#", QoS::AtMostOnce)]));
    h.take(watcher);
    let delay = pb(&[Property::WillDelayInterval(5)]);
    let expiry = pb(&[Property::SessionExpiryInterval(100)]);
    let with_will = |c: Connect<'static>, topic: &'static str, d: &'static PropertiesBuf| Connect {
        will: Some(Will {
            topic,
            payload: b"bye",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: d.as_properties(),
        }),
        ..c
    };
    let delay: &'static PropertiesBuf = Box::leak(Box::new(delay));
    let expiry: &'static PropertiesBuf = Box::leak(Box::new(expiry));
    let base = |id: &'static str| Connect {
        version: ProtocolVersion::V5,
        properties: expiry.as_properties(),
        ..connect(id, true, 0)
    };

    let a = h.open();
    h.send(a, Packet::Connect(with_will(base("a"), "will/a", delay)));
    h.broker.handle_disconnect(a, Disconnect::PeerClosed, h.now);
    h.advance(Duration::from_secs(3));
    let a = h.open();
    h.send(
        a,
        Packet::Connect(Connect {
            clean_start: false,
            ..base("a")
        }),
    );
    h.advance(Duration::from_secs(10));
    assert_eq!(h.take(watcher), [], "resumed in time: no will");

    let b = h.open();
    h.send(b, Packet::Connect(with_will(base("b"), "will/b", delay)));
    h.broker.handle_disconnect(b, Disconnect::PeerClosed, h.now);
    h.advance(Duration::from_secs(4));
    assert_eq!(h.take(watcher), []);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.take(watcher), [msg("will/b", "bye", QoS::AtMostOnce, 0)]);
}

#[test]
fn disconnect_with_will_reason_publishes_the_will() {
    let mut h = Harness::new();
    let watcher = h.client(connect("w", true, 0));
    h.send(watcher, subscribe(1, &[("will/#", QoS::AtMostOnce)]));
    h.take(watcher);
    let a = h.open();
    let c = Connect {
        version: ProtocolVersion::V5,
        will: Some(Will {
            topic: "will/a",
            payload: b"x",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::EMPTY,
        }),
        ..connect("a", true, 0)
    };
    h.send(a, Packet::Connect(c));
    let d = crate::protocol::Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL,
        properties: Properties::EMPTY,
    };
    h.send(a, Packet::Disconnect(d));
    assert_eq!(h.take(watcher), [msg("will/a", "x", QoS::AtMostOnce, 0)]);
}

#[test]
fn publish_properties_are_forwarded_and_expiry_counts_down() {
    // [MQTT-3.3.2-6] [MQTT-3.3.2-18]
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (s, _) = h.connect5("s", true, 0, &none);
    h.send(s, sub5(1, "t", opts(QoS::AtLeastOnce), &none));
    h.take5(s);
    let (p, _) = h.connect5("p", true, 0, &none);
    let props = pb(&[
        Property::PayloadFormatIndicator(1),
        Property::MessageExpiryInterval(30),
        Property::ContentType("text/plain"),
        Property::ResponseTopic("reply/here"),
        Property::CorrelationData(b"corr"),
        Property::UserProperty("b", "2"),
        Property::UserProperty("a", "1"),
    ]);
    h.advance(Duration::from_secs(1));
    h.send(p, pub5("t", b"x", QoS::AtLeastOnce, 1, &props));
    let out = h.take5(s);
    let V5::Publish { props, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        props,
        &[
            "PayloadFormatIndicator(1)",
            "ContentType(\"text/plain\")",
            "ResponseTopic(\"reply/here\")",
            "CorrelationData([99, 111, 114, 114])",
            "UserProperty(\"b\", \"2\")",
            "UserProperty(\"a\", \"1\")",
            "MessageExpiryInterval(30)",
        ]
    );
}

#[test]
fn expired_messages_are_not_delivered_from_the_queue() {
    // [MQTT-3.3.2-5]
    let mut h = Harness::new();
    let keep = pb(&[Property::SessionExpiryInterval(1000)]);
    let (s, _) = h.connect5("s", true, 0, &keep);
    h.send(
        s,
        sub5(1, "t", opts(QoS::AtLeastOnce), &PropertiesBuf::new()),
    );
    h.broker.handle_disconnect(s, Disconnect::PeerClosed, h.now);
    let (p, _) = h.connect5("p", true, 0, &PropertiesBuf::new());
    let short = pb(&[Property::MessageExpiryInterval(1)]);
    let long = pb(&[Property::MessageExpiryInterval(100)]);
    h.send(p, pub5("t", b"short", QoS::AtLeastOnce, 1, &short));
    h.send(p, pub5("t", b"long", QoS::AtLeastOnce, 2, &long));
    h.advance(Duration::from_secs(5));
    let (_, out) = h.connect5("s", false, 0, &keep);
    assert!(matches!(out[0], V5::Connack { present: true, .. }));
    let out = &out[1..];
    assert_eq!(out.len(), 1, "{out:?}");
    let V5::Publish { payload, props, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(payload, b"long");
    assert_eq!(props, &["MessageExpiryInterval(95)"]);
}

#[test]
fn topic_aliases_resolve_and_bad_ones_disconnect() {
    // [MQTT-3.3.2-12]
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (s, _) = h.connect5("s", true, 0, &none);
    h.send(s, sub5(1, "long/topic/name", opts(QoS::AtMostOnce), &none));
    h.take5(s);
    let (p, _) = h.connect5("p", true, 0, &none);
    let alias = pb(&[Property::TopicAlias(3)]);
    h.send(p, pub5("long/topic/name", b"1", QoS::AtMostOnce, 0, &alias));
    h.send(p, pub5("", b"2", QoS::AtMostOnce, 0, &alias));
    let out = h.take5(s);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| matches!(o, V5::Publish { topic, props, .. } if topic == "long/topic/name" && props.is_empty())));
    let bad = pb(&[Property::TopicAlias(11)]);
    assert!(!h.send(p, pub5("x", b"3", QoS::AtMostOnce, 0, &bad)));
    assert_eq!(h.take5(p), [V5::Disconnect(0x94)]);
    let (q, _) = h.connect5("q", true, 0, &none);
    let unknown = pb(&[Property::TopicAlias(2)]);
    assert!(!h.send(q, pub5("", b"4", QoS::AtMostOnce, 0, &unknown)));
    assert_eq!(h.take5(q), [V5::Disconnect(0x82)]);
}

#[test]
fn receive_maximum_limits_what_is_in_flight_to_a_client() {
    // [MQTT-3.3.4-9]
    let mut h = Harness::new();
    let (s, _) = h.connect5("s", true, 0, &pb(&[Property::ReceiveMaximum(2)]));
    h.send(
        s,
        sub5(1, "t", opts(QoS::AtLeastOnce), &PropertiesBuf::new()),
    );
    h.take5(s);
    let p = h.client(connect("p", true, 0));
    for i in 1..=4u16 {
        h.send(p, publish("t", &[i as u8], QoS::AtLeastOnce, i));
    }
    assert_eq!(h.take5(s).len(), 2);
    let ack = crate::protocol::Ack {
        packet_id: pid(1),
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    };
    h.send(s, Packet::Puback(ack));
    assert_eq!(h.take5(s).len(), 1);
}

/// Found by the `broker` fuzz target: a session with 3 messages in flight (a PUBLISH, and
/// two QoS 2 ones, one of them past PUBREC) came back as a 5.0 client with receive maximum
/// 2 and got all 3 resent at once.
#[test]
fn a_resumed_session_resends_no_more_than_the_new_receive_maximum() {
    // [MQTT-3.3.4-9] over [MQTT-4.4.0-1]: the rest follows as acknowledgements make room,
    // in order, with DUP.
    let mut h = Harness::new();
    let s = h.client(connect("s", false, 0));
    h.send(s, subscribe(1, &[("t", QoS::ExactlyOnce)]));
    h.take(s);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"1", QoS::ExactlyOnce, 1));
    h.send(p, publish("t", b"2", QoS::AtLeastOnce, 2));
    h.send(p, publish("t", b"3", QoS::ExactlyOnce, 3));
    h.send(p, publish("t", b"4", QoS::AtLeastOnce, 4));
    assert_eq!(h.take(s).len(), 4);
    h.send(s, Packet::Pubrec(ack(1)));
    h.take(s);
    h.broker.handle_disconnect(s, Disconnect::IoError, h.now);
    let (s, out) = h.connect5("s", false, 0, &pb(&[Property::ReceiveMaximum(2)]));
    let dup = |payload: &[u8], qos, id| V5::Publish {
        topic: "t".into(),
        payload: payload.to_vec(),
        qos,
        retain: false,
        id,
        props: vec![],
    };
    let pubrel = |id| V5::Ack {
        kind: "pubrel",
        id,
        code: 0,
    };
    assert_eq!(out[1..], [pubrel(1), dup(b"2", QoS::AtLeastOnce, 2)]);
    let ack5 = |id| crate::protocol::Ack {
        packet_id: pid(id),
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    };
    // A PUBACK for a message not resent yet (received before the reconnect) completes it.
    h.send(s, Packet::Puback(ack5(4)));
    assert_eq!(h.take5(s), []);
    h.send(s, Packet::Pubcomp(ack5(1)));
    assert_eq!(h.take5(s), [dup(b"3", QoS::ExactlyOnce, 3)]);
    h.send(p, publish("t", b"5", QoS::AtLeastOnce, 5));
    assert_eq!(h.take5(s), []);
    h.send(s, Packet::Puback(ack5(2)));
    assert_eq!(h.take5(s).len(), 1, "the queued message follows");
}

#[test]
fn messages_over_the_clients_maximum_packet_size_are_dropped_for_it() {
    // [MQTT-3.1.2-25]
    let mut h = Harness::new();
    let (s, _) = h.connect5("s", true, 0, &pb(&[Property::MaximumPacketSize(100)]));
    h.send(
        s,
        sub5(1, "t", opts(QoS::AtLeastOnce), &PropertiesBuf::new()),
    );
    h.take5(s);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", &[7u8; 500], QoS::AtLeastOnce, 1));
    h.send(p, publish("t", b"small", QoS::AtLeastOnce, 2));
    let out = h.take5(s);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(&out[0], V5::Publish { payload, .. } if payload == b"small"));
}

#[test]
fn no_local_retain_as_published_and_retain_handling() {
    // [MQTT-3.8.3-3] [MQTT-3.3.1-12] [MQTT-3.3.1-9..11]
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (c, _) = h.connect5("c", true, 0, &none);
    let no_local = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..Default::default()
    };
    h.send(c, sub5(1, "self", no_local, &none));
    h.take5(c);
    h.send(c, pub5("self", b"x", QoS::AtMostOnce, 0, &none));
    assert_eq!(h.take5(c), [], "not sent back to its publisher");

    let retained = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "r",
        packet_id: None,
        properties: Properties::EMPTY,
        payload: b"kept",
    });
    h.send(c, retained.clone());
    let rap = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        retain_as_published: true,
        ..Default::default()
    };
    let (s, _) = h.connect5("s", true, 0, &none);
    h.send(s, sub5(1, "r", rap, &none));
    let out = h.take5(s);
    assert!(
        matches!(&out[1], V5::Publish { retain: true, .. }),
        "retained on subscribe"
    );
    h.send(c, retained.clone());
    assert!(
        matches!(&h.take5(s)[0], V5::Publish { retain: true, .. }),
        "retain as published keeps RETAIN live"
    );

    let once = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        retain_handling: RetainHandling::OnNewSubscribe,
        ..Default::default()
    };
    h.send(s, sub5(2, "r", once, &none));
    assert_eq!(
        h.take5(s),
        [V5::Suback(vec![0])],
        "existing subscription: no retained with handling 1"
    );
    let never = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        retain_handling: RetainHandling::Never,
        ..Default::default()
    };
    let (n, _) = h.connect5("n", true, 0, &none);
    h.send(n, sub5(1, "r", never, &none));
    assert_eq!(h.take5(n), [V5::Suback(vec![0])]);
}

#[test]
fn subscription_identifiers_are_delivered_with_matching_messages() {
    // [MQTT-3.3.4-3]
    let mut h = Harness::new();
    let (s, _) = h.connect5("s", true, 0, &PropertiesBuf::new());
    h.send(
        s,
        sub5(
            1,
            "a/+",
            opts(QoS::AtMostOnce),
            &pb(&[Property::SubscriptionIdentifier(7)]),
        ),
    );
    h.send(
        s,
        sub5(
            2,
            "a/#",
            opts(QoS::AtMostOnce),
            &pb(&[Property::SubscriptionIdentifier(9)]),
        ),
    );
    h.take5(s);
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("a/b", b"x", QoS::AtMostOnce, 0));
    let out = h.take5(s);
    let V5::Publish { props, .. } = &out[0] else {
        panic!("{out:?}")
    };
    let mut ids = props.clone();
    ids.sort();
    assert_eq!(
        ids,
        ["SubscriptionIdentifier(7)", "SubscriptionIdentifier(9)"]
    );
}

#[test]
fn shared_subscriptions_split_messages_between_online_members() {
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (a, _) = h.connect5("a", true, 0, &none);
    let (b, _) = h.connect5("b", true, 0, &none);
    h.send(a, sub5(1, "$share/g/jobs/#", opts(QoS::AtLeastOnce), &none));
    h.send(b, sub5(1, "$share/g/jobs/#", opts(QoS::AtLeastOnce), &none));
    h.take5(a);
    h.take5(b);
    let p = h.client(connect("p", true, 0));
    for i in 1..=10u16 {
        h.send(p, publish("jobs/x", &[i as u8], QoS::AtMostOnce, 0));
    }
    let (na, nb) = (h.take5(a).len(), h.take5(b).len());
    assert_eq!(na + nb, 10, "each message to exactly one member");
    assert_eq!((na, nb), (5, 5), "round robin");
    h.broker.handle_disconnect(a, Disconnect::PeerClosed, h.now);
    h.send(p, publish("jobs/x", b"y", QoS::AtMostOnce, 0));
    h.send(p, publish("jobs/x", b"z", QoS::AtMostOnce, 0));
    assert_eq!(
        h.take5(b).len(),
        2,
        "an offline member's share goes to the online one"
    );
    let (c, _) = h.connect5("c", true, 0, &none);
    let bad = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..Default::default()
    };
    assert!(
        !h.send(c, sub5(1, "$share/g/x", bad, &none)),
        "[MQTT-3.8.3-4]"
    );
}

#[test]
fn reason_codes_on_acks_and_unsuback() {
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (p, _) = h.connect5("p", true, 0, &none);
    h.send(p, pub5("nobody/listens", b"x", QoS::AtLeastOnce, 1, &none));
    assert_eq!(
        h.take5(p),
        [V5::Ack {
            kind: "puback",
            id: 1,
            code: 0x10
        }]
    );
    h.send(p, sub5(2, "t", opts(QoS::AtMostOnce), &none));
    h.take5(p);
    let unsub = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(3),
        properties: Properties::EMPTY,
        filters: vec!["t", "never"],
    });
    h.send(p, unsub);
    assert_eq!(h.take5(p), [V5::Unsuback(vec![0x00, 0x11])]);
}

#[test]
fn server_disconnects_carry_their_reason() {
    // [MQTT-4.13.2-1] 0x8E session taken over, 0x8D keepalive timeout.
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (a, _) = h.connect5("a", true, 2, &none);
    let (_b, _) = h.connect5("a", true, 0, &none);
    assert_eq!(h.take5(a), [V5::Disconnect(0x8E)]);
    let (k, _) = h.connect5("k", true, 2, &none);
    h.advance(Duration::from_secs(4));
    assert_eq!(h.take5(k), [V5::Disconnect(0x8D)]);
}

#[test]
fn a_session_resumed_with_expiry_zero_is_not_restored_after_a_crash() {
    // Found by the stress test (`stress.rs`): a stored session that a 5.0 client resumed
    // with session expiry 0 ends with that connection [MQTT-3.1.2-23]. When the broker
    // died first (kill -9), replay brought it back with its subscriptions, routing to it
    // and answering session present to its client until the first timer fired.
    let mut h = Harness::with(Config {
        persistence: true,
        ..Config::in_memory()
    });
    let keep = pb(&[Property::SessionExpiryInterval(300)]);
    let (c, _) = h.connect5("c", true, 0, &keep);
    h.send(c, subscribe(1, &[("+/+", QoS::AtLeastOnce)]));
    h.broker.handle_disconnect(c, Disconnect::PeerClosed, h.now);
    let zero = pb(&[Property::SessionExpiryInterval(0)]);
    let (_c, out) = h.connect5("c", false, 0, &zero);
    assert!(matches!(out[0], V5::Connack { present: true, .. }));
    // The process dies now: the log holds everything so far.
    let (_, log) = h.broker.poll_journal().expect("records");
    let mut restored = Broker::new(Config {
        persistence: true,
        ..Config::in_memory()
    });
    replay(&mut restored, &log);
    assert!(restored.session("c").is_none());
    assert_eq!(restored.session_count(), 0);
    assert!(
        restored.snapshot(Instant::now()).is_empty(),
        "the snapshot after recovery forgets it too"
    );
}

#[test]
fn filters_over_the_subscribe_bounds_get_quota_exceeded() {
    // Issue 11: 0x97 for a 5.0 client, per filter; the rest of the packet is handled.
    let mut h = Harness::with(Config {
        max_filters_per_subscribe: 3,
        max_subscriptions_per_client: 4,
        ..Config::in_memory()
    });
    let none = PropertiesBuf::new();
    let (c, _) = h.connect5("c", true, 0, &none);
    let o = opts(QoS::AtLeastOnce);
    let many = |id, filters: &[&'static str]| {
        Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties: Properties::EMPTY,
            filters: filters.iter().map(|&f| (f, o)).collect(),
        })
    };
    h.send(c, many(1, &["a", "b", "c", "d"]));
    assert_eq!(h.take5(c), [V5::Suback(vec![1, 1, 1, 0x97])]);
    h.send(c, many(2, &["a", "d", "e"]));
    assert_eq!(
        h.take5(c),
        [V5::Suback(vec![1, 1, 0x97])],
        "a replacement fits; the fifth filter does not"
    );
    assert_eq!(h.broker.session("c").unwrap().subscriptions.len(), 4);
}

#[test]
fn publish_with_a_subscription_identifier_is_a_protocol_error() {
    // [MQTT-3.3.4-6] only the server sends Subscription Identifiers.
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (s, _) = h.connect5("s", true, 0, &none);
    h.send(s, sub5(1, "t", opts(QoS::AtMostOnce), &none));
    h.take5(s);
    let (p, _) = h.connect5("p", true, 0, &none);
    let with_id = pb(&[Property::SubscriptionIdentifier(5)]);
    assert!(!h.send(p, pub5("t", b"x", QoS::AtLeastOnce, 1, &with_id)));
    assert_eq!(h.take5(p), [V5::Disconnect(0x82)]);
    assert!(h.take5(s).is_empty(), "the message is not routed");
}

#[test]
fn malformed_share_subscription_is_a_protocol_error_not_a_suback_code() {
    // [MQTT-4.8.2-1/2] `$share/{name}/{filter}`: no filter, an empty filter or an empty
    // share name ends the connection, and no filter of that SUBSCRIBE takes effect.
    for bad in ["$share/g", "$share/g/", "$share//a"] {
        let mut h = Harness::new();
        let none = PropertiesBuf::new();
        let (c, _) = h.connect5("c", true, 0, &none);
        let s = Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Properties::EMPTY,
            filters: vec![
                ("ok/t", opts(QoS::AtMostOnce)),
                (bad, opts(QoS::AtMostOnce)),
            ],
        });
        assert!(!h.send(c, s), "{bad}");
        assert_eq!(h.take5(c), [V5::Disconnect(0x82)], "{bad}");
        let p = h.client(connect("p", true, 0));
        h.send(p, publish("ok/t", b"x", QoS::AtMostOnce, 0));
        assert!(h.take5(c).is_empty());
        let mut m = Vec::new();
        h.broker.subscriptions.collect_matches("ok/t", &mut m);
        assert!(m.is_empty(), "{bad}: the valid filter was not added either");
    }
}

#[test]
fn connack_larger_than_the_clients_maximum_packet_size_closes_without_it() {
    // [MQTT-3.1.2-24] With keepalive 60 the CONNACK carries the server's limits only
    // (receive maximum, maximum packet size, topic alias maximum): 16 bytes. For "" it
    // also carries a 41-character assigned client id.
    let mut h = Harness::new();
    let none = PropertiesBuf::new();
    let (old, _) = h.connect5("small", true, 60, &none);
    let (c, out) = h.connect5("small", true, 60, &pb(&[Property::MaximumPacketSize(15)]));
    assert!(out.is_empty(), "{out:?}");
    assert!(h.is_closed(c));
    assert!(
        h.take5(old).is_empty(),
        "the refused client took nothing over"
    );
    let (ok, out) = h.connect5("small2", true, 60, &pb(&[Property::MaximumPacketSize(16)]));
    assert!(matches!(out[..], [V5::Connack { code: 0, .. }]), "{out:?}");
    assert!(!h.is_closed(ok));
    let (a, out) = h.connect5("", true, 60, &pb(&[Property::MaximumPacketSize(40)]));
    assert!(out.is_empty() && h.is_closed(a), "{out:?}");
}
