//! Extreme configuration and client time values: deadlines built from them must never
//! overflow `Instant` (which panics and, with `panic = "abort"`, takes the broker down at
//! the first disconnect and again at every restart).

use super::*;
use crate::protocol::{PropertiesBuf, Property};

/// The largest values each source of a deadline can carry: the configuration (as a
/// hand-built `Config` can, beyond what the parser now accepts) and an MQTT 5 client.
fn extreme() -> Config {
    Config {
        persistent_client_expiration: Some(Duration::MAX),
        max_keepalive: u16::MAX,
        persistence: true,
        ..Config::in_memory()
    }
}

#[test]
fn huge_persistent_client_expiration_does_not_panic_on_disconnect_or_restore() {
    let mut h = Harness::with(extreme());
    // 3.1.1 persistent session: its expiry is persistent_client_expiration.
    let a = h.client(connect("a", false, u16::MAX));
    h.send(a, subscribe(1, &[("t", QoS::AtLeastOnce)]));
    while let Some((seq, _)) = h.broker.poll_journal() {
        h.broker.handle_durable(seq);
    }
    h.broker.handle_disconnect(a, Disconnect::PeerClosed, h.now);
    h.advance(Duration::from_secs(3600));
    // Still there: a later publish is queued for it and delivered on resume.
    let p = h.client(connect("p", true, 0));
    h.send(p, publish("t", b"kept", QoS::AtLeastOnce, 1));
    while let Some((seq, _)) = h.broker.poll_journal() {
        h.broker.handle_durable(seq);
    }
    // A restart restores the session and arms its expiry from the same value.
    let snap = h.broker.snapshot(h.now);
    let mut restarted = Broker::new(extreme());
    replay(&mut restarted, &snap);
    let mut h2 = Harness {
        broker: restarted,
        now: h.now,
        next: 100,
        closed: HashMap::new(),
    };
    h2.advance(Duration::from_secs(24 * 3600));
    let a = h2.open();
    h2.send(a, Packet::Connect(connect("a", false, 0)));
    while let Some((seq, _)) = h2.broker.poll_journal() {
        h2.broker.handle_durable(seq);
    }
    let out = h2.take(a);
    assert_eq!(
        out.first(),
        Some(&Out::Connack {
            session_present: true,
            code: 0
        })
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Out::Publish { payload, .. } if payload == b"kept")),
        "{out:?}"
    );
}

#[test]
fn max_v5_time_values_do_not_panic() {
    let mut h = Harness::with(extreme());
    let watcher = h.client(connect("w", true, 0));
    h.send(
        watcher,
        subscribe(1, &[("will/#", QoS::AtMostOnce), ("m", QoS::AtMostOnce)]),
    );
    h.take(watcher);
    // Session expiry, will delay and message expiry all 0xFFFFFFFF, keepalive 65535 s.
    let never = pb_max();
    let will = props(&[Property::WillDelayInterval(u32::MAX)]);
    let a = h.open();
    h.send(
        a,
        Packet::Connect(Connect {
            version: ProtocolVersion::V5,
            properties: never.as_properties(),
            will: Some(Will {
                topic: "will/a",
                payload: b"bye",
                qos: QoS::AtMostOnce,
                retain: false,
                properties: will.as_properties(),
            }),
            ..connect("a", false, u16::MAX)
        }),
    );
    let expiry = props(&[Property::MessageExpiryInterval(u32::MAX)]);
    h.send(
        a,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: "m",
            packet_id: None,
            properties: expiry.as_properties(),
            payload: b"long",
        }),
    );
    h.broker.handle_disconnect(a, Disconnect::PeerClosed, h.now);
    h.advance(Duration::from_secs(365 * 24 * 3600));
    let _ = h.take(watcher);
    // The broker still serves.
    let b = h.client(connect("b", true, 0));
    h.send(b, Packet::Pingreq);
    assert_eq!(h.take(b), [Out::Pingresp]);
}

fn pb_max() -> PropertiesBuf {
    props(&[Property::SessionExpiryInterval(u32::MAX)])
}

fn props(list: &[Property<'_>]) -> PropertiesBuf {
    let mut b = PropertiesBuf::new();
    for p in list {
        b.push(*p);
    }
    b
}
