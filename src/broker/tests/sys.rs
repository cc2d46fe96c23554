//! `$SYS/broker/...` (issue 15): names, formats, retained copies, change-only updates, the
//! load averages, ACL on reading, and that `$SYS` stays out of `#` and the data files.

use super::*;
use crate::auth::{Acl, Auth};

/// `(topic, payload)` of every PUBLISH in `out`.
fn pubs(out: &[Out]) -> Vec<(String, String)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Publish { topic, payload, .. } => {
                Some((topic.clone(), String::from_utf8_lossy(payload).into_owned()))
            }
            _ => None,
        })
        .collect()
}

fn value<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let topic = format!("$SYS/broker/{name}");
    p.iter()
        .rev()
        .find(|(t, _)| *t == topic)
        .map(|(_, v)| v.as_str())
}

/// A harness with `$SYS` updated once at "start", and a subscriber to `$SYS/#` that has
/// been given the retained copies.
fn started() -> (Harness, ConnId, Vec<(String, String)>) {
    let mut h = Harness::new();
    h.broker.handle_sys_update(h.now);
    let s = h.client(connect("watcher", true, 0));
    h.send(s, subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]));
    h.advance(Duration::ZERO); // retained delivery runs from the timer path
    let got = pubs(&h.take(s));
    (h, s, got)
}

#[test]
fn sys_topics_have_mosquittos_names_and_formats_and_are_retained() {
    let (_h, _s, got) = started();
    let names: Vec<&str> = got
        .iter()
        .map(|(t, _)| t.strip_prefix("$SYS/broker/").unwrap())
        .collect();
    for want in [
        "version",
        "uptime",
        "clients/total",
        "clients/inactive",
        "clients/disconnected",
        "clients/active",
        "clients/connected",
        "clients/expired",
        "load/messages/received/1min",
        "load/publish/dropped/5min",
        "load/bytes/sent/15min",
        "load/sockets/1min",
        "load/connections/15min",
        "messages/stored",
        "messages/received",
        "messages/sent",
        "store/messages/count",
        "store/messages/bytes",
        "subscriptions/count",
        "shared_subscriptions/count",
        "retained messages/count",
        "heap/current",
        "heap/maximum",
        "publish/messages/dropped",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/bytes/received",
        "publish/bytes/sent",
        "bytes/received",
        "bytes/sent",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(got.len(), 52, "{names:?}"); // as Mosquitto 2.0.11 at start
    assert_eq!(
        value(&got, "version"),
        Some(format!("wrenmq version {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(value(&got, "uptime"), Some("0 seconds"));
    assert_eq!(value(&got, "load/sockets/1min"), Some("0.00"));
    assert_eq!(value(&got, "clients/total"), Some("0"));
    // Mosquitto publishes the maximum only once a client has been counted.
    assert_eq!(value(&got, "clients/maximum"), None);
}

#[test]
fn sys_updates_publish_only_changed_values_and_counts_move() {
    let (mut h, s, _) = started();
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(h.client(connect(&format!("c{i}"), true, 0)));
    }
    let p = clients[0];
    h.send(p, publish("a/b", b"hello", QoS::AtMostOnce, 0));
    h.advance(Duration::from_secs(10));
    h.broker.handle_sys_update(h.now);
    let got = pubs(&h.take(s));
    assert_eq!(value(&got, "uptime"), Some("10 seconds"));
    assert_eq!(value(&got, "clients/connected"), Some("6")); // 5 + the watcher
    assert_eq!(value(&got, "clients/active"), Some("6"));
    assert_eq!(value(&got, "clients/total"), Some("6"));
    assert_eq!(value(&got, "clients/maximum"), Some("6"));
    assert_eq!(value(&got, "publish/messages/received"), Some("1"));
    assert_eq!(value(&got, "publish/bytes/received"), Some("5"));
    assert_eq!(value(&got, "subscriptions/count"), Some("1"));
    // One socket per 10 s is 6 a minute; the 1-minute average moves by (1 - e^(-1/6)).
    let sockets = 6.0 * 6.0 * (1.0 - (-10.0f64 / 60.0).exp());
    assert_eq!(
        value(&got, "load/sockets/1min"),
        Some(format!("{sockets:.2}").as_str())
    );
    // Nothing changed but time: only uptime and the decaying averages are republished.
    h.take(s);
    h.advance(Duration::from_secs(10));
    h.broker.handle_sys_update(h.now);
    let got = pubs(&h.take(s));
    let names: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(value(&got, "uptime"), Some("20 seconds"));
    for stale in ["clients/total", "clients/connected", "subscriptions/count"] {
        assert_eq!(value(&got, stale), None, "{stale} republished: {names:?}");
    }
    assert!(
        names
            .iter()
            .all(|t| t.starts_with("$SYS/broker/load/") || !t.ends_with("count")),
        "{names:?}"
    );
    // A disconnect shows in the next update.
    let bye = crate::protocol::Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    };
    h.send(clients[1], Packet::Disconnect(bye));
    h.advance(Duration::from_secs(10));
    h.broker.handle_sys_update(h.now);
    let got = pubs(&h.take(s));
    assert_eq!(value(&got, "clients/connected"), Some("5"));
    assert_eq!(value(&got, "clients/total"), Some("5")); // a clean session ends with it
}

#[test]
fn sys_is_not_matched_by_leading_wildcards_and_clients_cannot_publish_there() {
    // [MQTT-4.7.2-1]
    let mut h = Harness::new();
    let s = h.client(connect("all", true, 0));
    h.send(
        s,
        subscribe(
            1,
            &[("#", QoS::AtMostOnce), ("+/broker/#", QoS::AtMostOnce)],
        ),
    );
    h.take(s);
    h.broker.handle_sys_update(h.now);
    assert_eq!(pubs(&h.take(s)), []);
    let w = h.client(connect("watcher", true, 0));
    h.send(w, subscribe(1, &[("$SYS/broker/uptime", QoS::AtMostOnce)]));
    h.advance(Duration::ZERO);
    h.take(w);
    let p = h.client(connect("forger", true, 0));
    h.send(
        p,
        publish("$SYS/broker/uptime", b"forged", QoS::AtMostOnce, 0),
    );
    assert_eq!(pubs(&h.take(w)), []);
}

#[test]
fn sys_reading_follows_the_acl() {
    let acl = "user alice\ntopic read $SYS/broker/uptime\n";
    let auth = Auth::new(true, None, Some(Acl::parse(acl).unwrap()));
    let mut h = Harness {
        broker: Broker::with_auth(Config::in_memory(), auth),
        now: Instant::now(),
        next: 0,
        closed: HashMap::new(),
    };
    let mut alice = connect("a", true, 0);
    alice.username = Some("alice");
    let a = h.client(alice);
    let anon = h.client(connect("anon", true, 0));
    for id in [a, anon] {
        h.send(id, subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]));
        h.take(id);
    }
    h.broker.handle_sys_update(h.now);
    let got = pubs(&h.take(a));
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["$SYS/broker/uptime"]);
    assert_eq!(pubs(&h.take(anon)), []);
}

#[test]
fn sys_messages_are_not_written_to_the_data_files() {
    let mut h = journaled();
    h.broker.handle_sys_update(h.now);
    let _ = h.broker.poll_journal();
    assert!(h.broker.retained_count() > 40);
    let snapshot = h.broker.snapshot(h.now);
    assert!(
        !snapshot.windows(5).any(|w| w == b"$SYS/"),
        "a $SYS message reached the snapshot"
    );
}

#[test]
fn a_sys_tree_alone_costs_non_dollar_subscriptions_no_retained_scan() {
    let mut h = Harness::new();
    h.broker.handle_sys_update(h.now);
    let s = h.client(connect("s", true, 0));
    let filters: Vec<(&'static str, QoS)> = vec![("#", QoS::AtMostOnce), ("a/+", QoS::AtMostOnce)];
    h.send(s, subscribe(1, &filters));
    assert!(
        h.broker.retained_jobs.is_empty(),
        "a retained job for filters that cannot match"
    );
    h.send(s, subscribe(2, &[("$SYS/broker/uptime", QoS::AtMostOnce)]));
    h.advance(Duration::ZERO);
    let got = pubs(&h.take(s));
    assert_eq!(value(&got, "uptime"), Some("0 seconds"));
}

#[test]
fn peer_addresses_are_kept_only_until_connect_or_close() {
    let mut h = Harness::new();
    let a = h.open();
    h.broker.set_peer(a, "127.0.0.1:5000".into());
    let b = h.open();
    h.broker.set_peer(b, "127.0.0.1:5001".into());
    assert_eq!(h.broker.peers.len(), 2);
    assert!(h.send(a, Packet::Connect(connect("a", true, 0))));
    assert_eq!(h.broker.peers.len(), 1, "kept after CONNECT");
    h.broker.handle_disconnect(b, Disconnect::PeerClosed, h.now);
    assert!(h.broker.peers.is_empty(), "kept after close");
    h.broker.set_peer(a, "127.0.0.1:5000".into()); // late: after CONNECT, not kept
    assert!(h.broker.peers.is_empty());
}

#[test]
fn exp_neg_agrees_with_libm() {
    for i in 0..1890 {
        let x = f64::from(i) * 0.37; // up to 699.3
        let want = (-x).exp();
        let got = crate::broker::sys::exp_neg(x);
        assert!((got - want).abs() <= want * 1e-12, "x={x}: {got} vs {want}");
    }
    assert_eq!(crate::broker::sys::exp_neg(1e9), 0.0);
}
