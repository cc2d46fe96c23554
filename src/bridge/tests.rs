//! The bridge against a scripted upstream, with a fake clock: every byte the bridge
//! sends is decoded as the upstream would, and every answer is encoded by our codec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::config::{parse_with, MemSource};
use crate::protocol::properties::{PropertiesBuf, Property};
use crate::protocol::{
    decode, Ack, Connack, Properties, ProtocolVersion, Publish, RetainHandling, SubscriptionOptions,
};

mod failover;
mod inbound;

const K: Duration = Duration::from_secs(60);

/// What the upstream saw, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Connect {
        level: u8,
        clean: bool,
        keep_alive: u16,
        client_id: String,
        will: Option<(String, Vec<u8>, QoS, bool)>,
        username: Option<String>,
        password: Option<Vec<u8>>,
        props: Vec<u8>,
    },
    Publish {
        topic: String,
        qos: QoS,
        dup: bool,
        retain: bool,
        pid: Option<u16>,
        payload: Vec<u8>,
    },
    Subscribe(u16, Vec<(String, SubscriptionOptions)>),
    Unsubscribe(u16, Vec<String>),
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    Pingreq,
    Disconnect,
}

struct H<Q: OutboundQueue = MemQueue> {
    b: Bridge<Q>,
    now: Instant,
    version: ProtocolVersion,
}

fn bridge_config(extra: &str) -> BridgeConfig {
    let text =
        format!("connection cloud\naddress up1:1883 up2:1884 up3\ntopic out/# out 1\n{extra}");
    let src = MemSource([(PathBuf::from("/w.conf"), text)].into_iter().collect());
    let parsed = parse_with(&src, Path::new("/w.conf")).unwrap_or_else(|e| panic!("{e}"));
    parsed.config.bridges[0].clone()
}

fn h(extra: &str) -> H {
    h_with(extra, 20, 7)
}

fn h_with(extra: &str, max_inflight: u16, seed: u64) -> H {
    h_custom(extra, seed, |s| s.max_inflight = max_inflight)
}

fn h_custom(extra: &str, seed: u64, tweak: impl FnOnce(&mut Settings)) -> H {
    let cfg = bridge_config(extra);
    let version = cfg.protocol_version;
    let now = Instant::now();
    let mut settings = Settings::new(cfg, "gw", 20);
    tweak(&mut settings);
    let b = Bridge::new(
        settings,
        MemQueue::new(0, 0),
        Box::new(XorShift::new(seed)),
        now,
    );
    H { b, now, version }
}

fn msg(topic: &str, qos: QoS, payload: &[u8]) -> QueuedMessage {
    QueuedMessage::new(topic, payload, qos, false)
}

/// A QoS 0 PUBLISH of `in/x` from the upstream.
fn in_x(payload: &[u8]) -> Packet<'_> {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "in/x",
        packet_id: None,
        properties: Properties::EMPTY,
        payload,
    })
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn ack(n: u16) -> Ack<'static> {
    Ack {
        packet_id: pid(n),
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    }
}

impl<Q: OutboundQueue> H<Q> {
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.b.poll_action()).collect()
    }

    /// Decodes everything the bridge has to send, as the upstream.
    fn sent(&mut self) -> Vec<Seen> {
        let mut buf = Vec::new();
        self.b.poll_transmit(&mut buf);
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            let (packet, n) = match decode(rest, Some(self.version), u32::MAX) {
                Ok(Status::Complete(x)) => x,
                other => panic!("undecodable output {other:?}: {:02x?}", rest),
            };
            out.push(match packet {
                Packet::Connect(c) => Seen::Connect {
                    level: rest[2 + 2 + c.version.protocol_name().len()],
                    clean: c.clean_start,
                    keep_alive: c.keep_alive,
                    client_id: c.client_id.into(),
                    will: c
                        .will
                        .map(|w| (w.topic.into(), w.payload.to_vec(), w.qos, w.retain)),
                    username: c.username.map(Into::into),
                    password: c.password.map(<[u8]>::to_vec),
                    props: c.properties.raw().to_vec(),
                },
                Packet::Publish(p) => Seen::Publish {
                    topic: p.topic.into(),
                    qos: p.qos,
                    dup: p.dup,
                    retain: p.retain,
                    pid: p.packet_id.map(PacketId::get),
                    payload: p.payload.to_vec(),
                },
                Packet::Subscribe(s) => Seen::Subscribe(
                    s.packet_id.get(),
                    s.filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
                ),
                Packet::Unsubscribe(u) => Seen::Unsubscribe(
                    u.packet_id.get(),
                    u.filters.iter().map(|f| f.to_string()).collect(),
                ),
                Packet::Puback(a) => Seen::Puback(a.packet_id.get()),
                Packet::Pubrec(a) => Seen::Pubrec(a.packet_id.get()),
                Packet::Pubrel(a) => Seen::Pubrel(a.packet_id.get()),
                Packet::Pubcomp(a) => Seen::Pubcomp(a.packet_id.get()),
                Packet::Pingreq => Seen::Pingreq,
                Packet::Disconnect(_) => Seen::Disconnect,
                other => panic!("a client does not send {other:?}"),
            });
            at += n;
        }
        out
    }

    fn feed(&mut self, p: Packet<'_>) {
        let mut buf = Vec::new();
        p.encode(self.version, &mut buf);
        self.b.handle_bytes(self.now, &buf);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for _ in 0..100 {
            match self.b.poll_timeout() {
                Some(t) if t <= self.now => self.b.handle_timeout(self.now),
                _ => return,
            }
        }
        panic!("timer loop");
    }

    /// Expects a dial, connects, checks a CONNECT went out, answers `connack`.
    fn connect_with(&mut self, session_present: bool, props: &[Property<'_>]) -> usize {
        self.actions();
        let Phase::Dialing { index, .. } = self.b.phase() else {
            panic!("not dialing: {:?}", self.b.phase())
        };
        self.b.handle_connected(self.now);
        let sent = self.sent();
        assert!(matches!(sent[0], Seen::Connect { .. }), "{sent:?}");
        let mut pb = PropertiesBuf::new();
        for p in props {
            pb.push(*p);
        }
        self.feed(Packet::Connack(Connack {
            session_present,
            code: ReasonCode::SUCCESS,
            properties: pb.as_properties(),
        }));
        assert!(
            matches!(self.b.phase(), Phase::Up { .. }),
            "{:?}",
            self.b.phase()
        );
        index
    }

    fn connect(&mut self) -> usize {
        self.connect_with(false, &[])
    }

    /// The link drops; after the 1 s restart, a new one comes up (`session_present`):
    /// what the bridge sent on it, its UNSUBSCRIBE left out.
    fn reconnect(&mut self, session_present: bool) -> Vec<Seen> {
        self.b.handle_closed(self.now);
        self.advance(Duration::from_secs(1));
        self.connect_with(session_present, &[]);
        self.sent()
            .into_iter()
            .filter(|s| !matches!(s, Seen::Unsubscribe(..)))
            .collect()
    }
}

impl H {
    fn queue(&mut self, m: QueuedMessage) -> QueueId {
        let id = self.b.queue_mut().push(m).unwrap();
        self.b.handle_queued(self.now);
        id
    }

    fn publishes(seen: &[Seen]) -> Vec<(u16, bool, Vec<u8>)> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Publish {
                    pid, dup, payload, ..
                } => Some((pid.unwrap_or(0), *dup, payload.clone())),
                _ => None,
            })
            .collect()
    }
}

fn local_states(actions: &[Action]) -> Vec<(String, Vec<u8>, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PublishLocal(m) if m.ack.is_none() => {
                Some((m.topic.clone(), m.payload.clone(), m.retain))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn connect_carries_clean_session_will_credentials_and_private_bit() {
    let mut h = h("remote_username u\nremote_password p\n");
    let actions = h.actions();
    assert_eq!(
        local_states(&actions),
        [(
            "$SYS/broker/connection/gw.cloud/state".into(),
            b"0".to_vec(),
            true
        )],
        "a local \"0\" before the first connection"
    );
    assert_eq!(actions.last(), Some(&Action::Dial { index: 0 }));
    h.b.handle_connected(h.now);
    assert_eq!(
        h.sent(),
        [Seen::Connect {
            level: 0x84, // 3.1.1 with try_private's bridge bit
            clean: false,
            keep_alive: 60,
            client_id: "gw.cloud".into(),
            will: Some((
                "$SYS/broker/connection/gw.cloud/state".into(),
                b"0".to_vec(),
                QoS::AtLeastOnce,
                true
            )),
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
            props: Vec::new(),
        }]
    );
}

#[test]
fn v5_connect_keeps_the_session_and_announces_the_packet_limit() {
    let mut h = h_custom(
        "bridge_protocol_version mqttv50\ncleansession false\nnotifications_local_only true\n\
         remote_clientid r1\n",
        1,
        |s| s.max_packet_in = 4096, // the local broker's max_packet_size
    );
    h.actions();
    h.b.handle_connected(h.now);
    let Seen::Connect {
        level,
        clean,
        will,
        props,
        client_id,
        ..
    } = h.sent().remove(0)
    else {
        panic!()
    };
    assert_eq!(level, 5, "no bridge bit on 5.0");
    assert!(!clean);
    assert_eq!(client_id, "r1");
    assert_eq!(will, None, "notifications_local_only: no will upstream");
    let props: Vec<_> = Properties::from_encoded(&props).iter().collect();
    assert_eq!(
        props,
        [
            Property::SessionExpiryInterval(u32::MAX),
            Property::MaximumPacketSize(4096)
        ]
    );
}

#[test]
fn try_private_refused_falls_back_to_a_plain_connect_on_the_same_address() {
    let mut h = h("");
    h.actions();
    h.b.handle_connected(h.now);
    h.sent();
    h.feed(Packet::Connack(Connack {
        session_present: false,
        code: ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION,
        properties: Properties::EMPTY,
    }));
    assert_eq!(h.actions(), [Action::Close, Action::Dial { index: 0 }]);
    h.b.handle_connected(h.now);
    assert!(matches!(h.sent()[0], Seen::Connect { level: 0x04, .. }));
}

#[test]
fn subscribes_in_and_both_and_unsubscribes_out_topics() {
    let mut h =
        h("bridge_protocol_version mqttv50\ntopic cmd/# in 2 site/ gw1/\ntopic sync/# both 1\n");
    h.connect();
    let sent = h.sent();
    let v5 = |qos, both| SubscriptionOptions {
        qos,
        no_local: both,
        retain_as_published: both,
        retain_handling: RetainHandling::OnSubscribe,
    };
    assert!(
        sent.contains(&Seen::Unsubscribe(1, vec!["out/#".into()])),
        "{sent:?}"
    );
    assert!(sent.contains(&Seen::Subscribe(
        2,
        vec![
            ("gw1/cmd/#".into(), v5(QoS::ExactlyOnce, false)),
            ("sync/#".into(), v5(QoS::AtLeastOnce, true)),
        ]
    )));
    // A refused filter is reported.
    h.feed(Packet::Suback(crate::protocol::Suback {
        packet_id: pid(2),
        properties: Properties::EMPTY,
        codes: vec![ReasonCode::NOT_AUTHORIZED, ReasonCode::GRANTED_QOS_1],
    }));
    assert!(h.actions().contains(&Action::SubscriptionRefused {
        filter: "gw1/cmd/#".into(),
        code: ReasonCode::NOT_AUTHORIZED
    }));
    // bridge_attempt_unsubscribe false: no UNSUBSCRIBE.
    let mut h2 = self::h("bridge_attempt_unsubscribe false\n");
    h2.connect();
    assert!(!h2.sent().iter().any(|s| matches!(s, Seen::Unsubscribe(..))));
}

#[test]
fn topics_are_remapped_both_ways() {
    let mut h = h("topic # both 1 site/ gw1/\n");
    let s = h.b.settings();
    assert_eq!(
        s.route_out("site/a/b", QoS::ExactlyOnce),
        Some(("gw1/a/b".into(), QoS::AtLeastOnce)),
        "QoS is the lower of the message's and the line's"
    );
    assert_eq!(
        s.route_out("out/x", QoS::AtMostOnce),
        Some(("out/x".into(), QoS::AtMostOnce))
    );
    assert_eq!(s.route_out("elsewhere", QoS::AtLeastOnce), None);
    h.connect();
    h.actions();
    h.feed(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "gw1/a/b",
        packet_id: None,
        properties: Properties::EMPTY,
        payload: b"v",
    }));
    assert_eq!(
        h.actions(),
        [Action::PublishLocal(LocalMessage {
            topic: "site/a/b".into(),
            payload: b"v".to_vec(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            ack: None,
        })]
    );
}

/// Acks whatever is in flight (`open`: already seen) in a scrambled order, checking the
/// window at every step.
fn drain_with_window(h: &mut H, window: usize, total: usize) -> Vec<Vec<u8>> {
    let got = drain_from(h, window, total, Vec::new());
    assert!(got.iter().all(|(dup, _)| !dup), "nothing was sent before");
    got.into_iter().map(|(_, p)| p).collect()
}

fn drain_from(h: &mut H, window: usize, total: usize, mut open: Vec<u16>) -> Vec<(bool, Vec<u8>)> {
    let mut delivered = Vec::new();
    let mut rng = XorShift::new(99);
    for _ in 0..100_000 {
        for (p, dup, payload) in H::publishes(&h.sent()) {
            open.push(p);
            delivered.push((dup, payload));
        }
        assert!(
            open.len() <= window,
            "{} in flight, window {window}",
            open.len()
        );
        assert_eq!(h.b.in_flight(), open.len());
        if open.is_empty() {
            break;
        }
        let i = (rng.next_u64() % open.len() as u64) as usize;
        let p = open.swap_remove(i);
        h.feed(Packet::Puback(ack(p)));
    }
    assert_eq!(delivered.len(), total);
    assert!(h.b.queue().is_empty());
    delivered
}

#[test]
fn receive_max_20_with_500_queued_never_has_more_than_20_in_flight() {
    let mut h = h("bridge_protocol_version mqttv50\nnotifications false\n");
    for i in 0..500u32 {
        h.b.queue_mut()
            .push(msg("out/t", QoS::AtLeastOnce, &i.to_be_bytes()))
            .unwrap();
    }
    h.connect_with(false, &[Property::ReceiveMaximum(20)]);
    assert_eq!(h.b.limits().window, 20);
    let delivered = drain_with_window(&mut h, 20, 500);
    let want: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(delivered, want, "in queue order, each once");
}

#[test]
fn a_v311_window_above_20_holds_20_flows_while_qos2_is_among_them() {
    // `max_inflight_messages 100` on the gateway, a stock Mosquitto (20) upstream.
    let mut h = h_with("notifications false\n", 100, 1);
    let q = h.b.queue_mut();
    for i in 0..30u8 {
        q.push(msg("out/t", QoS::ExactlyOnce, &[i])).unwrap();
    }
    for i in 30..60u8 {
        q.push(msg("out/t", QoS::AtLeastOnce, &[i])).unwrap();
    }
    h.connect();
    let first = H::publishes(&h.sent());
    assert_eq!(
        first.len(),
        V3_QOS2_WINDOW,
        "QoS 2 involved: a stock quota at most"
    );
    // Each QoS 2 flow that ends frees one slot while QoS 2 is in flight; order is kept.
    let mut open: Vec<(u16, u8)> = first.iter().map(|(p, _, m)| (*p, m[0])).collect();
    let mut next = V3_QOS2_WINDOW as u8;
    while let Some(i) = open.iter().position(|(_, m)| *m < 30) {
        let (p, _) = open.remove(i);
        h.feed(Packet::Pubrec(ack(p)));
        assert!(h.sent().contains(&Seen::Pubrel(p)));
        h.feed(Packet::Pubcomp(ack(p)));
        for (p, _, m) in H::publishes(&h.sent()) {
            assert_eq!(m[0], next, "in queue order");
            next += 1;
            open.push((p, m[0]));
        }
        if h.b.qos2_on_link > 0 {
            assert_eq!(h.b.in_flight(), V3_QOS2_WINDOW);
        }
    }
    // Only QoS 1 left: the whole configured window.
    assert_eq!(h.b.qos2_on_link, 0);
    assert_eq!(h.b.in_flight(), 30, "the 30 QoS 1 messages at once");
}

#[test]
fn v311_window_is_the_configured_inflight_limit() {
    // A stock Mosquitto upstream allows 20 in flight: the default window.
    let mut h = h_with("notifications false\n", 20, 1);
    for i in 0..100u32 {
        h.b.queue_mut()
            .push(msg("out/t", QoS::AtLeastOnce, &i.to_be_bytes()))
            .unwrap();
    }
    h.connect();
    assert_eq!(h.b.limits().window, 20);
    drain_with_window(&mut h, 20, 100);
    let mut h = h_with("notifications false\n", 3, 1);
    for i in 0..10u32 {
        h.b.queue_mut()
            .push(msg("out/t", QoS::ExactlyOnce, &[i as u8]))
            .unwrap();
    }
    h.connect();
    let first = H::publishes(&h.sent());
    assert_eq!(first.len(), 3);
    // PUBREC keeps the slot until PUBCOMP.
    h.feed(Packet::Pubrec(ack(first[0].0)));
    assert_eq!(h.sent(), [Seen::Pubrel(first[0].0)]);
    h.feed(Packet::Pubcomp(ack(first[0].0)));
    assert_eq!(H::publishes(&h.sent()).len(), 1);
}

#[test]
fn qos0_does_not_use_the_window_and_leaves_the_queue_when_written() {
    let mut h = h("notifications false\n");
    h.connect();
    for i in 0..50u8 {
        h.queue(msg("out/t", QoS::AtMostOnce, &[i]));
    }
    assert_eq!(H::publishes(&h.sent()).len(), 50);
    assert!(h.b.queue().is_empty());
    assert_eq!(h.b.in_flight(), 0);
}

#[test]
fn qos1_is_resent_with_dup_after_a_reconnect() {
    let mut h = h("notifications false\nrestart_timeout 1\n");
    h.connect();
    let a = h.queue(msg("out/t", QoS::AtLeastOnce, b"a"));
    h.queue(msg("out/t", QoS::AtLeastOnce, b"b"));
    let first = H::publishes(&h.sent());
    assert_eq!(first.len(), 2);
    h.feed(Packet::Puback(ack(first[0].0)));
    assert!(h.b.queue().peek(None, 10).iter().all(|(id, _)| *id != a));
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[]);
    let again = H::publishes(&h.sent());
    assert_eq!(
        again,
        [(first[1].0, true, b"b".to_vec())],
        "only the unacknowledged, with DUP"
    );
    h.feed(Packet::Puback(ack(first[1].0)));
    assert!(h.b.queue().is_empty());
}

#[test]
fn qos2_resends_pubrel_with_a_session_and_forgets_it_without() {
    for session_present in [true, false] {
        let mut h = h("notifications false\nrestart_timeout 1\n");
        h.connect();
        h.queue(msg("out/t", QoS::ExactlyOnce, b"x"));
        h.queue(msg("out/t", QoS::ExactlyOnce, b"y"));
        let first = H::publishes(&h.sent());
        h.feed(Packet::Pubrec(ack(first[0].0)));
        assert_eq!(h.sent(), [Seen::Pubrel(first[0].0)]);
        let sent = h.reconnect(session_present);
        if session_present {
            // [MQTT-4.4.0-1] PUBREL again for x, PUBLISH with DUP for y, in that order.
            assert_eq!(sent[0], Seen::Pubrel(first[0].0));
            assert_eq!(H::publishes(&sent), [(first[1].0, true, b"y".to_vec())]);
            h.feed(Packet::Pubcomp(ack(first[0].0)));
        } else {
            // The upstream acknowledged x with PUBREC: it is the upstream's now.
            assert!(!sent.contains(&Seen::Pubrel(first[0].0)));
            assert_eq!(H::publishes(&sent), [(first[1].0, true, b"y".to_vec())]);
        }
        h.feed(Packet::Pubrec(ack(first[1].0)));
        h.feed(Packet::Pubcomp(ack(first[1].0)));
        assert!(h.b.queue().is_empty(), "session_present {session_present}");
        assert_eq!(h.b.in_flight(), 0);
    }
}

/// The "1" notification's packet id among `seen`, if it went upstream.
fn state_note(seen: &[Seen]) -> Option<u16> {
    seen.iter().find_map(|s| match s {
        Seen::Publish { topic, pid, .. } if topic.ends_with("/state") => *pid,
        _ => None,
    })
}

#[test]
fn the_upstream_state_note_waits_behind_resent_flows_for_a_free_slot() {
    // A stock Mosquitto counts our unfinished QoS 2 flows against its quota of 20 until
    // their PUBREL, and drops a client that publishes beyond it: the "1" sent first
    // into a full quota made every reconnect fail.
    let mut h = h_with("restart_timeout 1\n", 3, 1);
    h.connect();
    let note = state_note(&h.sent()).expect("\"1\" upstream on the first link");
    h.feed(Packet::Puback(ack(note)));
    for p in [b"a", b"b", b"c"] {
        h.queue(msg("out/t", QoS::ExactlyOnce, p));
    }
    let flows = H::publishes(&h.sent());
    assert_eq!(flows.len(), 3, "the window");
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[]);
    let sent = h.sent();
    assert_eq!(state_note(&sent), None, "no slot free: the note waits");
    let resent = H::publishes(&sent);
    assert_eq!(resent.len(), 3);
    assert!(resent.iter().all(|(_, dup, _)| *dup));
    h.feed(Packet::Pubrec(ack(flows[0].0)));
    assert_eq!(h.sent(), [Seen::Pubrel(flows[0].0)]);
    h.feed(Packet::Pubcomp(ack(flows[0].0)));
    assert!(
        state_note(&h.sent()).is_some(),
        "a slot is free: the note goes"
    );
}

#[test]
fn a_smaller_window_after_reconnect_limits_the_resend() {
    let mut h = h("bridge_protocol_version mqttv50\nnotifications false\nrestart_timeout 1\n");
    for i in 0..10u8 {
        h.b.queue_mut()
            .push(msg("out/t", QoS::AtLeastOnce, &[i]))
            .unwrap();
    }
    h.connect_with(false, &[Property::ReceiveMaximum(10)]);
    assert_eq!(H::publishes(&h.sent()).len(), 10);
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[Property::ReceiveMaximum(4)]);
    let again = H::publishes(&h.sent());
    assert_eq!(again.len(), 4);
    assert!(again.iter().all(|(_, dup, _)| *dup));
    let payloads: Vec<u8> = again.iter().map(|(_, _, p)| p[0]).collect();
    assert_eq!(payloads, [0, 1, 2, 3], "resent in their original order");
    let open = again.iter().map(|(p, ..)| *p).collect();
    let rest = drain_from(&mut h, 4, 6, open);
    let payloads: Vec<(bool, u8)> = rest.iter().map(|(d, p)| (*d, p[0])).collect();
    assert_eq!(
        payloads,
        [
            (true, 4),
            (true, 5),
            (true, 6),
            (true, 7),
            (true, 8),
            (true, 9)
        ],
        "the other 6 follow, in order, with DUP"
    );
}

#[test]
fn half_open_link_is_detected_at_one_and_a_half_keepalive() {
    let mut h = h("restart_timeout 10\n");
    h.connect();
    h.sent();
    h.actions();
    h.advance(K - Duration::from_millis(1));
    assert_eq!(h.sent(), [], "nothing before one keepalive");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.sent(), [Seen::Pingreq]);
    // Black hole: no PINGRESP.
    h.advance(K / 2 - Duration::from_millis(1));
    assert!(h.actions().is_empty());
    assert!(matches!(h.b.phase(), Phase::Up { .. }));
    h.advance(Duration::from_millis(1));
    let actions = h.actions();
    assert_eq!(actions[0], Action::Close);
    assert_eq!(local_states(&actions)[0].1, b"0");
    assert_eq!(
        h.b.phase(),
        Phase::Idle {
            at: Some(h.now + Duration::from_secs(10))
        }
    );
}

#[test]
fn pingresp_keeps_an_idle_link_up_and_a_sender_still_pings() {
    let mut h = h("notifications false\n");
    h.connect();
    h.sent();
    for _ in 0..5 {
        h.advance(K);
        assert_eq!(h.sent(), [Seen::Pingreq]);
        h.feed(Packet::Pingresp);
    }
    assert!(matches!(h.b.phase(), Phase::Up { .. }));
    // Sending QoS 0 into a black hole: last_sent is fresh, but nothing comes back.
    let start = h.now;
    for _ in 0..90 {
        h.now += Duration::from_secs(1);
        h.queue(msg("out/t", QoS::AtMostOnce, b"x"));
        h.advance(Duration::ZERO);
    }
    assert!(h.sent().contains(&Seen::Pingreq));
    assert!(h.actions().contains(&Action::Close));
    assert!(h.now - start <= K + K / 2);
}

#[test]
fn a_link_dead_only_towards_the_upstream_is_abandoned_though_both_sides_keep_sending() {
    let mut h = h("topic in/# in 0\nnotifications false\nrestart_timeout 10\n");
    h.connect();
    h.sent();
    h.actions();
    // Our packets no longer arrive (no PINGRESP); we keep sending QoS 0 and the upstream
    // keeps sending to us, so neither side is ever silent.
    let start = h.now;
    let mut pinged = None;
    while h.now - start < 3 * K {
        h.feed(in_x(b"v"));
        h.queue(msg("out/t", QoS::AtMostOnce, b"x"));
        h.advance(Duration::from_secs(1));
        if pinged.is_none() && h.sent().contains(&Seen::Pingreq) {
            pinged = Some(h.now);
        }
        if h.actions().contains(&Action::Close) {
            break;
        }
    }
    let pinged = pinged.expect("a PINGREQ within a keepalive, busy or not");
    assert!(pinged - start <= K, "pinged after {:?}", pinged - start);
    assert!(
        matches!(h.b.phase(), Phase::Idle { .. }),
        "abandoned: {:?}",
        h.b.phase()
    );
    assert_eq!(h.now - pinged, K, "a keepalive without a PINGRESP");
}

#[test]
fn server_keep_alive_replaces_ours() {
    let mut h = h("bridge_protocol_version mqttv50\nnotifications false\n");
    h.connect_with(false, &[Property::ServerKeepAlive(10)]);
    h.sent();
    h.advance(Duration::from_secs(10));
    assert_eq!(h.sent(), [Seen::Pingreq]);
}

#[test]
fn jittered_backoff_between_rounds_stays_within_base_and_cap() {
    for seed in 1..50 {
        let mut h = h_with("restart_timeout 2 20\n", 20, seed);
        for _ in 0..8 {
            // One round: three addresses, each refused at once.
            for want in 0..3 {
                let dial = h.actions().into_iter().find_map(|a| match a {
                    Action::Dial { index } => Some(index),
                    _ => None,
                });
                assert_eq!(dial, Some(want));
                h.b.handle_closed(h.now);
            }
            let Phase::Idle { at: Some(at) } = h.b.phase() else {
                panic!("{:?}", h.b.phase())
            };
            let wait = at - h.now;
            assert!(
                wait >= Duration::from_secs(2) && wait <= Duration::from_secs(20),
                "{wait:?}"
            );
            h.now = at;
            h.b.handle_timeout(h.now);
        }
    }
}

#[test]
fn failover_in_order_then_back_to_the_primary() {
    let mut h = h("restart_timeout 5\nnotifications false\n");
    h.actions();
    h.b.handle_closed(h.now); // up1 refuses
    assert_eq!(h.actions(), [Action::Dial { index: 1 }]);
    assert_eq!(
        h.b.address(1).map(|a| (a.host.as_str(), a.port)),
        Some(("up2", 1884))
    );
    h.b.handle_connected(h.now);
    h.sent();
    h.feed(Packet::Connack(Connack {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    }));
    assert_eq!(h.b.phase(), Phase::Up { index: 1 });
    // On a backup, the primary is probed every 5 s; the bridge moves when it answers.
    h.advance(PRIMARY_RETRY);
    assert_eq!(h.actions(), [Action::Probe { index: 0 }]);
    h.b.handle_probe(h.now, false);
    h.advance(PRIMARY_RETRY);
    assert_eq!(h.actions(), [Action::Probe { index: 0 }]);
    h.b.handle_probe(h.now, true);
    assert_eq!(h.sent().last(), Some(&Seen::Disconnect));
    assert_eq!(h.actions(), [Action::Close, Action::Dial { index: 0 }]);
    assert_eq!(h.connect(), 0);
    h.advance(PRIMARY_RETRY * 3);
    assert!(!h
        .actions()
        .iter()
        .any(|a| matches!(a, Action::Probe { .. })));
}

#[test]
fn a_refused_connack_or_a_dial_timeout_moves_to_the_next_address() {
    let mut h = h("notifications false\n");
    h.actions();
    h.b.handle_connected(h.now);
    h.sent();
    h.feed(Packet::Connack(Connack {
        session_present: false,
        code: ReasonCode::V3_NOT_AUTHORIZED,
        properties: Properties::EMPTY,
    }));
    assert_eq!(h.actions(), [Action::Close, Action::Dial { index: 1 }]);
    // up2 never answers the dial.
    h.advance(K);
    assert_eq!(h.actions(), [Action::Close, Action::Dial { index: 2 }]);
}

#[test]
fn round_robin_moves_on_after_a_link_loss_and_never_probes() {
    let mut h = h("round_robin true\nnotifications false\nrestart_timeout 1\n");
    h.actions();
    h.b.handle_closed(h.now);
    assert_eq!(h.connect(), 1);
    h.advance(PRIMARY_RETRY * 2);
    assert!(!h
        .actions()
        .iter()
        .any(|a| matches!(a, Action::Probe { .. })));
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.connect(), 2);
}

#[test]
fn lazy_start_waits_for_the_threshold_and_stops_when_idle() {
    let mut h = h("start_type lazy\nthreshold 3\nidle_timeout 30\nnotifications false\n");
    assert_eq!(h.b.phase(), Phase::Idle { at: None });
    h.queue(msg("out/t", QoS::AtLeastOnce, b"1"));
    h.queue(msg("out/t", QoS::AtLeastOnce, b"2"));
    assert!(h.actions().is_empty());
    h.queue(msg("out/t", QoS::AtLeastOnce, b"3"));
    h.connect();
    let sent = H::publishes(&h.sent());
    assert_eq!(sent.len(), 3);
    for (p, ..) in sent {
        h.feed(Packet::Puback(ack(p)));
    }
    h.advance(Duration::from_secs(29));
    assert!(matches!(h.b.phase(), Phase::Up { .. }));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sent(), [Seen::Disconnect]);
    assert_eq!(h.actions(), [Action::Close]);
    assert_eq!(h.b.phase(), Phase::Idle { at: None });
}

#[test]
fn start_type_once_never_reconnects() {
    let mut h = h("start_type once\nnotifications false\n");
    h.connect();
    h.b.handle_closed(h.now);
    assert_eq!(h.b.phase(), Phase::Stopped);
    assert_eq!(h.b.poll_timeout(), None);
    // A first round that fails also ends it.
    let mut h = self::h("start_type once\nnotifications false\n");
    for _ in 0..3 {
        h.b.handle_closed(h.now);
    }
    assert_eq!(h.b.phase(), Phase::Stopped);
}

#[test]
fn notifications_one_when_up_zero_when_down_locally_and_upstream() {
    let mut h = h("notification_topic bridges/cloud\n");
    h.actions();
    h.connect();
    let actions = h.actions();
    assert_eq!(
        local_states(&actions),
        [("bridges/cloud".into(), b"1".to_vec(), true)]
    );
    let sent = h.sent();
    assert!(
        sent.contains(&Seen::Publish {
            topic: "bridges/cloud".into(),
            qos: QoS::AtLeastOnce,
            dup: false,
            retain: true,
            pid: Some(2), // 1 went to the UNSUBSCRIBE of out/#
            payload: b"1".to_vec(),
        }),
        "{sent:?}"
    );
    h.b.handle_closed(h.now);
    assert_eq!(
        local_states(&h.actions()),
        [("bridges/cloud".into(), b"0".to_vec(), true)]
    );
    // notifications false: nothing at all.
    let mut h = self::h("notifications false\n");
    h.connect();
    assert!(local_states(&h.actions()).is_empty());
    assert!(H::publishes(&h.sent()).is_empty());
}

#[test]
fn inbound_qos1_is_acknowledged_only_once_durable() {
    let mut h = h("topic in/# in 1\nnotifications false\n");
    h.connect();
    h.sent();
    let p = |dup| {
        Packet::Publish(Publish {
            dup,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "in/a",
            packet_id: Some(pid(7)),
            properties: Properties::EMPTY,
            payload: b"m",
        })
    };
    h.feed(p(false));
    let Some(Action::PublishLocal(m)) = h.actions().pop() else {
        panic!()
    };
    assert_eq!(h.sent(), [], "no PUBACK before the message is durable");
    h.feed(p(true)); // a redelivery meanwhile is not published again
    assert!(h.actions().is_empty());
    h.b.handle_local_durable(h.now, m.ack.unwrap());
    assert_eq!(h.sent(), [Seen::Puback(7)]);
}

#[test]
fn inbound_qos2_redelivered_after_reconnect_is_published_once() {
    let mut h = h("topic in/# in 2\nnotifications false\nrestart_timeout 1\n");
    h.connect();
    h.sent();
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "in/a",
        packet_id: Some(pid(9)),
        properties: Properties::EMPTY,
        payload: b"once",
    });
    h.feed(p.clone());
    let Some(Action::PublishLocal(m)) = h.actions().pop() else {
        panic!()
    };
    // The link dies before the message is durable; it becomes durable meanwhile.
    h.b.handle_closed(h.now);
    h.b.handle_local_durable(h.now, m.ack.unwrap());
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[]);
    h.sent();
    h.actions();
    h.feed(p); // the upstream redelivers (DUP)
    assert!(
        !h.actions()
            .iter()
            .any(|a| matches!(a, Action::PublishLocal(_))),
        "published locally twice"
    );
    assert_eq!(h.sent(), [Seen::Pubrec(9)]);
    h.feed(Packet::Pubrel(ack(9)));
    let released = h.actions();
    let [Action::Released(r)] = released.as_slice() else {
        panic!("{released:?}")
    };
    assert_eq!(h.sent(), [], "no PUBCOMP before the release is durable");
    h.b.handle_released(h.now, *r);
    assert_eq!(h.sent(), [Seen::Pubcomp(9)]);
}

#[test]
fn connack_limits_cap_qos_retain_and_packet_size() {
    let mut h = h("bridge_protocol_version mqttv50\nnotifications false\n");
    h.connect_with(
        false,
        &[
            Property::MaximumQoS(1),
            Property::RetainAvailable(0),
            Property::MaximumPacketSize(100),
            Property::TopicAliasMaximum(5),
        ],
    );
    h.sent();
    assert_eq!(h.b.limits().topic_alias_max, 5);
    let mut m = msg("out/t", QoS::ExactlyOnce, b"small");
    m.retain = true;
    h.queue(m);
    let big = h.queue(msg("out/t", QoS::AtLeastOnce, &[0; 200]));
    let sent = h.sent();
    assert!(
        matches!(
            &sent[..],
            [Seen::Publish {
                qos: QoS::AtLeastOnce,
                retain: false,
                ..
            }]
        ),
        "{sent:?}"
    );
    let actions = h.actions();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Dropped {
            id,
            why: DropReason::TooLarge { size: 200.., max: 100 }
        } if *id == big)),
        "{actions:?}"
    );
    assert!(h.b.queue().peek(None, 9).iter().all(|(id, _)| *id != big));
}

#[test]
fn outgoing_retain_false_clears_the_retain_flag() {
    let mut h = h("bridge_outgoing_retain false\nnotifications false\n");
    h.connect();
    h.sent();
    let mut m = msg("out/t", QoS::AtMostOnce, b"r");
    m.retain = true;
    h.queue(m);
    assert!(matches!(
        &h.sent()[..],
        [Seen::Publish { retain: false, .. }]
    ));
}

#[test]
fn a_refused_publish_leaves_the_queue_and_is_reported() {
    let mut h = h("bridge_protocol_version mqttv50\nnotifications false\n");
    h.connect();
    h.sent();
    let id = h.queue(msg("out/t", QoS::AtLeastOnce, b"no"));
    let (p, ..) = H::publishes(&h.sent())[0].clone();
    h.feed(Packet::Puback(Ack {
        packet_id: pid(p),
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: Properties::EMPTY,
    }));
    assert!(h.actions().contains(&Action::Dropped {
        id,
        why: DropReason::Refused(ReasonCode::NOT_AUTHORIZED)
    }));
    assert!(h.b.queue().is_empty());
}

#[test]
fn garbage_or_a_packet_before_connack_ends_the_attempt() {
    let mut h = h("notifications false\n");
    h.actions();
    h.b.handle_connected(h.now);
    h.sent();
    h.feed(Packet::Pingresp);
    assert_eq!(h.actions(), [Action::Close, Action::Dial { index: 1 }]);
    h.connect();
    h.b.handle_bytes(h.now, &[0xF0, 0x00]); // reserved packet type 15 on 3.1.1
    assert_eq!(h.actions()[0], Action::Close);
    assert!(matches!(h.b.phase(), Phase::Idle { at: Some(_) }));
}

#[test]
fn split_input_is_reassembled() {
    let mut h = h("topic in/# in 0\nnotifications false\n");
    h.connect();
    h.actions();
    let mut buf = Vec::new();
    in_x(b"abc").encode(h.version, &mut buf);
    Packet::Pingresp.encode(h.version, &mut buf);
    for byte in &buf {
        h.b.handle_bytes(h.now, std::slice::from_ref(byte));
    }
    let got: Vec<_> = h
        .actions()
        .into_iter()
        .filter(|a| matches!(a, Action::PublishLocal(_)))
        .collect();
    assert_eq!(got.len(), 1);
}

#[test]
fn the_local_packet_limit_bounds_what_the_upstream_may_send() {
    let mut h = h_custom("topic in/# in 0\nnotifications false\n", 1, |s| {
        s.max_packet_in = 64
    });
    h.connect();
    h.actions();
    let mut buf = Vec::new();
    in_x(&[1; 100]).encode(h.version, &mut buf);
    // Refused from the fixed header alone, before the body is buffered.
    h.b.handle_bytes(h.now, &buf[..2]);
    assert_eq!(h.actions()[0], Action::Close);
    assert!(matches!(h.b.phase(), Phase::Idle { at: Some(_) }));
}

#[test]
fn a_qos1_ack_for_a_link_that_is_gone_is_not_sent() {
    let mut h = h("topic in/# in 1\nnotifications false\nrestart_timeout 1\n");
    h.connect();
    h.sent();
    h.feed(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "in/a",
        packet_id: Some(pid(3)),
        properties: Properties::EMPTY,
        payload: b"m",
    }));
    let Some(Action::PublishLocal(m)) = h.actions().pop() else {
        panic!()
    };
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[]);
    h.sent();
    // The upstream redelivers packet 3 on the new link; the old ack must not answer it.
    h.b.handle_local_durable(h.now, m.ack.unwrap());
    assert_eq!(h.sent(), []);
}

#[test]
fn a_lazy_bridge_that_loses_its_link_with_nothing_queued_waits_for_the_threshold() {
    let mut h = h("start_type lazy\nthreshold 1\nnotifications false\n");
    h.queue(msg("out/t", QoS::AtMostOnce, b"go"));
    h.connect();
    assert_eq!(H::publishes(&h.sent()).len(), 1);
    h.b.handle_closed(h.now);
    assert_eq!(h.b.phase(), Phase::Idle { at: None });
    h.queue(msg("out/t", QoS::AtMostOnce, b"again"));
    assert!(matches!(h.b.phase(), Phase::Dialing { .. }));
}

#[test]
fn quota_exceeded_is_retried_after_a_pause_never_dropped() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut h = h("bridge_protocol_version mqttv50\nnotifications false\n");
        h.connect();
        h.sent();
        h.queue(msg("out/t", qos, b"a"));
        h.queue(msg("out/t", qos, b"b"));
        let first = H::publishes(&h.sent());
        assert_eq!(first.len(), 2);
        let refusal = Ack {
            packet_id: pid(first[0].0),
            reason: ReasonCode::QUOTA_EXCEEDED,
            properties: Properties::EMPTY,
        };
        h.feed(match qos {
            QoS::ExactlyOnce => Packet::Pubrec(refusal),
            _ => Packet::Puback(refusal),
        });
        h.queue(msg("out/t", qos, b"c"));
        assert_eq!(h.sent(), [], "nothing while held");
        assert!(!h
            .actions()
            .iter()
            .any(|a| matches!(a, Action::Dropped { .. })));
        assert_eq!(h.b.queue().len(), 3);
        h.advance(RETRY_AFTER_REFUSAL);
        let again = H::publishes(&h.sent());
        let payloads: Vec<(bool, &[u8])> =
            again.iter().map(|(_, d, p)| (*d, p.as_slice())).collect();
        assert_eq!(
            payloads,
            [(true, &b"a"[..]), (false, &b"c"[..])],
            "the refused one first, then what waited ({qos:?})"
        );
    }
}

#[test]
fn a_message_waiting_for_a_free_packet_id_is_not_skipped() {
    // Window 65,535 (max_inflight 0) while the UNSUBSCRIBE of out/# holds packet id 1:
    // the 65,535th message finds no free id and must be sent once one frees up.
    let mut h = h_with("notifications false\n", 0, 1);
    let total = 65_536u32;
    for i in 0..total {
        h.b.queue_mut()
            .push(msg("out/t", QoS::AtLeastOnce, &i.to_be_bytes()))
            .unwrap();
    }
    h.connect();
    let first = H::publishes(&h.sent());
    assert_eq!(first.len(), 65_534);
    h.feed(Packet::Puback(ack(first[0].0)));
    h.feed(Packet::Puback(ack(first[1].0)));
    let next: Vec<u32> = H::publishes(&h.sent())
        .iter()
        .map(|(_, _, p)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        .collect();
    assert_eq!(next, [65_534, 65_535]);
}

#[test]
fn a_lazy_bridge_stays_up_while_messages_are_in_flight_and_times_idle_from_the_last_ack() {
    let mut h = h("start_type lazy\nthreshold 1\nidle_timeout 30\nnotifications false\n");
    h.queue(msg("out/t", QoS::AtLeastOnce, b"slow"));
    h.connect();
    let (p, ..) = H::publishes(&h.sent())[0].clone();
    h.now += Duration::from_secs(45);
    h.feed(Packet::Pingresp); // the upstream is alive, just slow to acknowledge
    assert!(
        h.b.poll_timeout().is_some_and(|t| t > h.now),
        "no deadline in the past"
    );
    h.advance(Duration::ZERO);
    assert!(matches!(h.b.phase(), Phase::Up { .. }));
    h.feed(Packet::Puback(ack(p)));
    h.advance(Duration::from_secs(29));
    assert!(
        matches!(h.b.phase(), Phase::Up { .. }),
        "idle counts from the ack"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.b.phase(), Phase::Idle { at: None });
}

/// Random traffic, acks, silences and link drops against a simulated upstream: the
/// window is never exceeded, no deadline is left in the past after `handle_timeout` (no
/// busy loop), and every message queued is delivered once the upstream behaves.
#[test]
fn random_schedules_keep_the_window_and_never_leave_a_deadline_in_the_past() {
    for seed in 1..40u64 {
        let v5 = seed % 2 == 0;
        let extra = format!(
            "notifications {}\nrestart_timeout 1 4\nkeepalive_interval 10\n{}{}",
            seed % 3 == 0,
            if seed % 4 == 1 {
                "start_type lazy\nthreshold 1\nidle_timeout 5\n"
            } else {
                ""
            },
            if v5 {
                "bridge_protocol_version mqttv50\n"
            } else {
                ""
            }
        );
        // Some 3.1.1 bridges with a window above `V3_QOS2_WINDOW`.
        let configured = if !v5 && seed % 3 == 1 { 30 } else { 5 };
        let mut h = h_with(&extra, configured, seed);
        let mut rng = XorShift::new(seed * 7919);
        let mut open: Vec<(u16, QoS)> = Vec::new(); // PUBLISH/PUBREL awaiting our answer
        let mut window = usize::from(configured);
        let mut delivered = std::collections::BTreeSet::new();
        let mut queued = 0u32;
        for step in 0..3000 {
            let r = rng.next_u64() % 100;
            let calm = step >= 2500; // at the end the upstream answers everything
            if r < 25 && queued < 300 {
                let qos = QoS::from_u8((rng.next_u64() % 3) as u8).unwrap();
                h.queue(msg("out/t", qos, &queued.to_be_bytes()));
                queued += 1;
            } else if r < 60 || calm {
                if let Phase::Dialing { .. } = h.b.phase() {
                    h.b.handle_connected(h.now);
                }
            } else if r < 63 && !calm {
                h.b.handle_closed(h.now);
                open.clear();
            } else if r < 80 {
                h.now += Duration::from_millis(rng.next_u64() % 3000);
                h.b.handle_timeout(h.now);
                if let Some(t) = h.b.poll_timeout() {
                    assert!(t > h.now, "seed {seed} step {step}: deadline in the past");
                }
            }
            // The primary answers some probes (all at the end, as time goes on): QoS 2
            // flows sent to it wait for the bridge's return (`InFlight::sent_at`).
            if calm && step % 10 == 0 {
                h.advance(Duration::from_secs(1));
            }
            for a in h.actions() {
                if let Action::Probe { .. } = a {
                    let reachable = calm || rng.next_u64().is_multiple_of(2);
                    h.b.handle_probe(h.now, reachable);
                }
            }
            // The upstream reads what was sent and answers some of it.
            for seen in h.sent() {
                match seen {
                    Seen::Connect { .. } => {
                        window = if v5 {
                            1 + (rng.next_u64() % 8) as usize
                        } else {
                            usize::from(configured)
                        };
                        let mut p = PropertiesBuf::new();
                        if v5 {
                            p.push(Property::ReceiveMaximum(window as u16));
                        }
                        h.feed(Packet::Connack(Connack {
                            session_present: true,
                            code: ReasonCode::SUCCESS,
                            properties: p.as_properties(),
                        }));
                    }
                    Seen::Publish {
                        pid, qos, payload, ..
                    } => {
                        if let Ok(b) = <[u8; 4]>::try_from(payload.as_slice()) {
                            delivered.insert(u32::from_be_bytes(b));
                        }
                        if let Some(p) = pid {
                            open.retain(|(o, _)| *o != p);
                            open.push((p, qos));
                        }
                    }
                    Seen::Pubrel(p) => {
                        open.retain(|(o, _)| *o != p);
                        open.push((p, QoS::AtMostOnce)); // marks "answer with PUBCOMP"
                    }
                    Seen::Pingreq if !rng.next_u64().is_multiple_of(4) || calm => {
                        h.feed(Packet::Pingresp)
                    }
                    _ => {}
                }
            }
            if matches!(h.b.phase(), Phase::Up { .. }) {
                assert!(
                    h.b.in_flight() <= window,
                    "seed {seed} step {step}: {} in flight, window {window}",
                    h.b.in_flight()
                );
            }
            let qos2 =
                h.b.inflight
                    .values()
                    .filter(|f| f.on_link && f.msg.qos == QoS::ExactlyOnce)
                    .count();
            assert_eq!(h.b.qos2_on_link, qos2, "seed {seed} step {step}");
            if !v5 && qos2 > 0 {
                assert!(h.b.in_flight() <= V3_QOS2_WINDOW, "seed {seed} step {step}");
            }
            if !open.is_empty() && (rng.next_u64().is_multiple_of(2) || calm) {
                let i = (rng.next_u64() % open.len() as u64) as usize;
                let (p, kind) = open.swap_remove(i);
                h.feed(match kind {
                    QoS::AtLeastOnce => Packet::Puback(ack(p)),
                    QoS::ExactlyOnce => Packet::Pubrec(ack(p)),
                    QoS::AtMostOnce => Packet::Pubcomp(ack(p)),
                });
            }
        }
        assert!(
            h.b.queue().is_empty(),
            "seed {seed}: {} left",
            h.b.queue().len()
        );
        assert_eq!(delivered.len() as u32, queued, "seed {seed}");
    }
}

#[test]
fn bridge_max_packet_size_bounds_what_goes_upstream() {
    // 3.1.1: the configured limit alone; 5.0: the smaller of it and the upstream's.
    for (extra, props, max) in [
        ("bridge_max_packet_size 100\n", vec![], 100),
        (
            "bridge_max_packet_size 100\nbridge_protocol_version mqttv50\n",
            vec![Property::MaximumPacketSize(1000)],
            100,
        ),
        (
            "bridge_max_packet_size 1000\nbridge_protocol_version mqttv50\n",
            vec![Property::MaximumPacketSize(150)],
            150,
        ),
    ] {
        let mut h = h(&format!("{extra}notifications false\n"));
        h.connect_with(false, &props);
        h.sent();
        assert_eq!(h.b.limits().max_packet_size, max, "{extra}");
        let big = h.queue(msg("out/t", QoS::AtLeastOnce, &[0; 200]));
        h.queue(msg("out/t", QoS::AtLeastOnce, &[0; 10]));
        assert_eq!(H::publishes(&h.sent()).len(), 1, "{extra}");
        assert!(h.actions().iter().any(|a| matches!(a,
            Action::Dropped { id, why: DropReason::TooLarge { max: m, .. } } if *id == big && *m == max)));
    }
}

/// A queue that binds packet ids to its messages, as the broker's bridge session does.
struct BoundQueue {
    q: MemQueue,
    pids: HashMap<QueueId, u16>,
    released: Vec<QueueId>,
    /// The PUBREC is recorded durably later: `released` answers false.
    hold_release: bool,
}

impl OutboundQueue for BoundQueue {
    fn peek_into(&self, after: Option<QueueId>, n: usize, out: &mut Vec<(QueueId, QueuedMessage)>) {
        self.q.peek_into(after, n, out)
    }
    fn ack(&mut self, id: QueueId) {
        self.q.ack(id);
        self.pids.remove(&id);
    }
    fn len(&self) -> usize {
        self.q.len()
    }
    fn packet_id(&self, id: QueueId) -> Option<PacketId> {
        self.pids.get(&id).and_then(|p| PacketId::new(*p))
    }
    fn holds_packet_id(&self, pid: u16) -> bool {
        self.pids.values().any(|p| *p == pid)
    }
    fn released(&mut self, id: QueueId) -> bool {
        self.released.push(id);
        !self.hold_release
    }
}

impl BoundQueue {
    fn new(hold_release: bool) -> BoundQueue {
        BoundQueue {
            q: MemQueue::new(0, 0),
            pids: HashMap::new(),
            released: Vec::new(),
            hold_release,
        }
    }

    /// Queues `m` bound to packet id `pid`.
    fn bind(&mut self, m: QueuedMessage, pid: u16) -> QueueId {
        let id = self.q.push(m).unwrap();
        self.pids.insert(id, pid);
        id
    }
}

/// A bridge (window 20) on a [`BoundQueue`], as `h` builds one on a plain queue.
fn bound_h(extra: &str, q: BoundQueue) -> H<BoundQueue> {
    let now = Instant::now();
    let b = Bridge::new(
        Settings::new(bridge_config(extra), "gw", 20),
        q,
        Box::new(XorShift::new(1)),
        now,
    );
    H {
        b,
        now,
        version: ProtocolVersion::V311,
    }
}

#[test]
fn resumed_flows_go_first_under_their_own_ids_and_pubrec_reaches_the_queue() {
    let mut q = BoundQueue::new(false);
    let a = q.bind(msg("out/a", QoS::AtLeastOnce, b"a"), 7);
    let b = q.bind(msg("out/b", QoS::ExactlyOnce, b"b"), 9);
    let c = q.bind(msg("out/c", QoS::ExactlyOnce, b"c"), 3);
    let mut h = bound_h("notifications false\n", q);
    // The last run had sent a (no ack) and b (PUBREC seen) before it was killed.
    h.b.resume_flow(a, pid(7), msg("out/a", QoS::AtLeastOnce, b"a"), false);
    h.b.resume_flow(b, pid(9), msg("out/b", QoS::ExactlyOnce, b"b"), true);
    h.connect_with(true, &[]);
    let sent = h.sent();
    assert!(
        matches!(&sent[0], Seen::Unsubscribe(1, _)),
        "not a bound id"
    );
    assert_eq!(
        sent[1..],
        [
            Seen::Publish {
                topic: "out/a".into(),
                qos: QoS::AtLeastOnce,
                dup: true,
                retain: false,
                pid: Some(7),
                payload: b"a".to_vec()
            },
            Seen::Pubrel(9),
            Seen::Publish {
                topic: "out/c".into(),
                qos: QoS::ExactlyOnce,
                dup: false,
                retain: false,
                pid: Some(3),
                payload: b"c".to_vec()
            },
        ]
    );
    h.feed(Packet::Pubrec(ack(3)));
    assert_eq!(h.b.queue().released, [c]);
    assert_eq!(h.sent(), [Seen::Pubrel(3)]);
    h.feed(Packet::Puback(ack(7)));
    h.feed(Packet::Pubcomp(ack(9)));
    h.feed(Packet::Pubcomp(ack(3)));
    assert!(h.b.queue().is_empty());
}

#[test]
fn a_pubrel_waits_until_the_pubrec_is_recorded_durably_also_across_a_reconnect() {
    let mut q = BoundQueue::new(true);
    let x = q.bind(msg("out/x", QoS::ExactlyOnce, b"x"), 4);
    q.bind(msg("out/y", QoS::ExactlyOnce, b"y"), 5);
    let mut h = bound_h("notifications false\nrestart_timeout 1\n", q);
    h.connect();
    assert_eq!(H::publishes(&h.sent()).len(), 2);
    h.feed(Packet::Pubrec(ack(4)));
    h.feed(Packet::Pubrec(ack(4)));
    assert_eq!(h.b.queue().released, [x], "told once");
    assert_eq!(h.sent(), [], "no PUBREL before the PUBREC is durable");
    h.b.handle_release_durable(h.now, pid(4));
    assert_eq!(h.sent(), [Seen::Pubrel(4)]);
    // y's PUBREC, then the link drops before it is durable: the resend after the
    // reconnect holds its PUBREL back too, and sends it once durable.
    h.feed(Packet::Pubrec(ack(5)));
    assert_eq!(h.sent(), []);
    let sent = h.reconnect(true);
    assert_eq!(sent, [Seen::Pubrel(4)], "5 waits for its record");
    h.b.handle_release_durable(h.now, pid(5));
    assert_eq!(h.sent(), [Seen::Pubrel(5)]);
    h.feed(Packet::Pubcomp(ack(4)));
    h.feed(Packet::Pubcomp(ack(5)));
    assert!(h.b.queue().is_empty());
    assert_eq!(h.b.in_flight(), 0);
}

/// The payload and Message Expiry Interval of each PUBLISH in `bytes` (5.0).
fn expiries(bytes: &[u8]) -> Vec<(Vec<u8>, bool, Option<u32>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (p, n) = match decode(&bytes[at..], Some(ProtocolVersion::V5), u32::MAX) {
            Ok(Status::Complete(x)) => x,
            other => panic!("undecodable output {other:?}"),
        };
        if let Packet::Publish(p) = p {
            let left = p.properties.iter().find_map(|x| match x {
                Property::MessageExpiryInterval(s) => Some(s),
                _ => None,
            });
            out.push((p.payload.to_vec(), p.dup, left));
        }
        at += n;
    }
    out
}

#[test]
fn queued_v5_messages_go_with_the_expiry_they_have_left_and_not_once_expired() {
    let mut h = h("bridge_protocol_version mqttv50\nnotifications false\nrestart_timeout 1\n");
    let t0 = h.now;
    let q = h.b.queue_mut();
    let mut pb = PropertiesBuf::new();
    pb.push(Property::ContentType("text/plain"));
    let with_props =
        msg("out/t", QoS::AtLeastOnce, b"long").with_properties(pb.as_properties().raw());
    q.push_expiring(
        msg("out/t", QoS::AtLeastOnce, b"short"),
        t0 + Duration::from_secs(10),
    )
    .unwrap();
    q.push_expiring(with_props, t0 + Duration::from_secs(100))
        .unwrap();
    q.push(msg("out/t", QoS::AtLeastOnce, b"forever")).unwrap();
    // The uplink comes up 30 s later.
    h.now += Duration::from_secs(30);
    h.connect();
    let mut bytes = Vec::new();
    h.b.poll_transmit(&mut bytes);
    assert_eq!(
        expiries(&bytes),
        [
            (b"long".to_vec(), false, Some(70)),
            (b"forever".to_vec(), false, None)
        ],
        "[MQTT-3.3.2-5/6]: the expired one is not sent, the other has 70 s left"
    );
    let dropped: Vec<_> = h
        .actions()
        .into_iter()
        .filter(|a| matches!(a, Action::Dropped { .. }))
        .collect();
    assert_eq!(
        dropped,
        [Action::Dropped {
            id: 1,
            why: DropReason::Expired
        }]
    );
    assert_eq!(h.b.queue().len(), 2, "the expired one left the queue");
    // Lost before the PUBACK; resent 20 s later with DUP and 50 s left, its other
    // properties kept.
    h.b.handle_closed(h.now);
    h.now += Duration::from_secs(19);
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[]);
    let mut bytes = Vec::new();
    h.b.poll_transmit(&mut bytes);
    let again = expiries(&bytes);
    assert_eq!(again[0], (b"long".to_vec(), true, Some(50)));
    let mut rest = &bytes[..];
    loop {
        let (p, n) = match decode(rest, Some(ProtocolVersion::V5), u32::MAX) {
            Ok(Status::Complete(x)) => x,
            other => panic!("no PUBLISH: {other:?}"),
        };
        if let Packet::Publish(p) = p {
            assert_eq!(p.properties.content_type(), Some("text/plain"));
            break;
        }
        rest = &rest[n..];
    }
}

#[test]
fn an_expired_flow_is_not_resent_at_qos1_and_resent_with_1s_left_at_qos2() {
    let mut h = h("bridge_protocol_version mqttv50\nnotifications false\nrestart_timeout 1\n");
    h.connect();
    let at = h.now + Duration::from_secs(40);
    let q = h.b.queue_mut();
    q.push_expiring(msg("out/t", QoS::AtLeastOnce, b"q1"), at)
        .unwrap();
    q.push_expiring(msg("out/t", QoS::ExactlyOnce, b"q2"), at)
        .unwrap();
    h.b.handle_queued(h.now);
    let mut bytes = Vec::new();
    h.b.poll_transmit(&mut bytes);
    assert_eq!(
        expiries(&bytes),
        [
            (b"q1".to_vec(), false, Some(40)),
            (b"q2".to_vec(), false, Some(40))
        ]
    );
    h.actions();
    // The link is lost before any ack; it is back a minute later.
    h.b.handle_closed(h.now);
    h.now += Duration::from_secs(59);
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[]);
    let mut bytes = Vec::new();
    h.b.poll_transmit(&mut bytes);
    assert_eq!(expiries(&bytes), [(b"q2".to_vec(), true, Some(1))]);
    assert!(h.actions().contains(&Action::Dropped {
        id: 1,
        why: DropReason::Expired
    }));
    assert_eq!(h.b.queue().len(), 1, "only the QoS 2 message is left");
}

#[test]
fn stop_says_zero_upstream_then_disconnects_and_keeps_the_queue() {
    let mut h = h("notification_topic bridges/cloud\n");
    h.connect();
    h.actions();
    h.sent();
    h.queue(msg("out/a", QoS::AtLeastOnce, b"m"));
    assert_eq!(H::publishes(&h.sent()).len(), 1);
    h.b.stop();
    // The clean DISCONNECT suppresses the will: the "0" goes first, explicitly.
    assert_eq!(
        h.sent(),
        [
            Seen::Publish {
                topic: "bridges/cloud".into(),
                qos: QoS::AtMostOnce,
                dup: false,
                retain: true,
                pid: None,
                payload: b"0".to_vec(),
            },
            Seen::Disconnect
        ]
    );
    let actions = h.actions();
    assert!(actions.contains(&Action::Close), "{actions:?}");
    assert_eq!(
        local_states(&actions),
        [("bridges/cloud".into(), b"0".to_vec(), true)]
    );
    assert_eq!(h.b.phase(), Phase::Stopped);
    assert_eq!(h.b.poll_timeout(), None);
    // Unacknowledged, so still queued for whoever takes the queue over.
    assert_eq!(h.b.queue().len(), 1);

    // A dial in progress is abandoned without a packet; an idle bridge just stops.
    let mut h = self::h("notifications false\n");
    assert!(matches!(h.b.phase(), Phase::Dialing { .. }));
    h.actions();
    h.b.stop();
    assert_eq!(h.actions(), [Action::Close]);
    assert!(h.sent().is_empty());
    assert_eq!(h.b.phase(), Phase::Stopped);
}
