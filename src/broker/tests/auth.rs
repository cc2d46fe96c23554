//! Authentication and ACL enforcement in-process: every CONNACK path, publish, subscribe,
//! delivery (live, queued, retained, will) and reload.

use super::*;
use crate::auth::{password, Acl, Auth, Hash, PasswordFile};

const ACL: &str = "\
topic read public/#
user alice
topic readwrite sensors/#
topic deny sensors/secret
topic write cmd/#
user bob
topic read sensors/#
topic write will/bob
pattern readwrite own/%c/#
";

fn passwords() -> PasswordFile {
    let line = |u: &str, p: &str| password::format_line(u, &Hash::new(p.as_bytes(), 5).unwrap());
    PasswordFile::parse(&format!(
        "{}\n{}\n",
        line("alice", "apw"),
        line("bob", "bpw")
    ))
    .unwrap()
}

fn harness(allow_anonymous: bool, acl: Option<&str>) -> Harness {
    let acl = acl.map(|a| Acl::parse(a).unwrap());
    let auth = Auth::new(allow_anonymous, Some(passwords()), acl);
    Harness {
        broker: Broker::with_auth(Config::in_memory(), auth),
        now: Instant::now(),
        next: 0,
        closed: HashMap::new(),
    }
}

fn login<'a>(id: &'a str, user: &'a str, pw: &'a [u8]) -> Connect<'a> {
    Connect {
        username: Some(user),
        password: Some(pw),
        ..connect(id, true, 0)
    }
}

fn connack_code(h: &mut Harness, c: Connect<'_>) -> (u8, bool) {
    let id = h.open();
    h.send(id, Packet::Connect(c));
    let out = h.take(id);
    let code = match out.first() {
        Some(Out::Connack { code, .. }) => *code,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    (code, h.is_closed(id))
}

#[test]
fn connack_paths_v311() {
    let mut h = harness(false, None);
    assert_eq!(
        connack_code(&mut h, login("a", "alice", b"apw")),
        (0x00, false)
    );
    // Wrong password, unknown user, user without password: 0x05 as Mosquitto 2.0
    // answers, closed.
    assert_eq!(
        connack_code(&mut h, login("b", "alice", b"bpw")),
        (0x05, true)
    );
    assert_eq!(
        connack_code(&mut h, login("c", "carol", b"apw")),
        (0x05, true)
    );
    let no_pw = Connect {
        username: Some("alice"),
        ..connect("d", true, 0)
    };
    assert_eq!(connack_code(&mut h, no_pw), (0x05, true));
    // Anonymous refused: 0x05, closed.
    assert_eq!(connack_code(&mut h, connect("e", true, 0)), (0x05, true));
    // Anonymous allowed when configured; credentials still checked.
    let mut open = harness(true, None);
    assert_eq!(
        connack_code(&mut open, connect("f", true, 0)),
        (0x00, false)
    );
    assert_eq!(
        connack_code(&mut open, login("g", "bob", b"x")),
        (0x05, true)
    );
}

/// Mosquitto 2.0 answers every refusal, wrong password included, with "not authorized":
/// 0x05 in 3.1/3.1.1 and 0x87 in 5.0.
#[test]
fn wrong_password_is_refused_not_authorized_as_mosquitto_does() {
    use super::super::error::refusal_code;
    use crate::auth::Refusal;
    for refusal in [
        Refusal::NotAuthorized,
        Refusal::BadCredentials,
        Refusal::Busy,
    ] {
        assert_eq!(refusal_code(refusal, ProtocolVersion::V5).0, 0x87);
        assert_eq!(refusal_code(refusal, ProtocolVersion::V311).0, 0x05);
        assert_eq!(refusal_code(refusal, ProtocolVersion::V31).0, 0x05);
    }
}

#[test]
fn publish_without_write_access_is_acked_and_dropped() {
    let mut h = harness(true, Some(ACL));
    let alice = h.client(login("a", "alice", b"apw"));
    let bob = h.client(login("b", "bob", b"bpw"));
    h.send(alice, subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]));
    assert_eq!(h.take(alice), [Out::Suback(1, vec![1])]);
    // bob may only read sensors/#: acks still come, nothing is delivered.
    h.send(bob, publish("sensors/t", b"x", QoS::AtLeastOnce, 7));
    assert_eq!(h.take(bob), [Out::Puback(7)]);
    h.send(bob, publish("sensors/t", b"x", QoS::ExactlyOnce, 8));
    assert_eq!(h.take(bob), [Out::Pubrec(8)]);
    h.send(bob, publish("sensors/t", b"x", QoS::AtMostOnce, 0));
    assert_eq!(h.take(alice), []);
    // alice may write there.
    h.send(alice, publish("sensors/t", b"y", QoS::AtMostOnce, 0));
    assert_eq!(h.take(alice), [msg("sensors/t", "y", QoS::AtMostOnce, 0)]);
}

#[test]
fn subscribe_refused_with_0x80_and_deliveries_filtered_per_topic() {
    let mut h = harness(true, Some(ACL));
    let alice = h.client(login("a", "alice", b"apw"));
    let anon = h.client(connect("n", true, 0));
    h.send(
        alice,
        subscribe(
            1,
            &[
                ("sensors/#", QoS::AtMostOnce),
                ("cmd/x", QoS::AtMostOnce),
                ("sensors/secret", QoS::AtMostOnce),
                ("#", QoS::AtMostOnce),
            ],
        ),
    );
    // cmd/x is write-only, sensors/secret wholly denied; `#` overlaps sensors/#.
    assert_eq!(h.take(alice), [Out::Suback(1, vec![0, 0x80, 0x80, 0])]);
    h.send(anon, subscribe(2, &[("#", QoS::AtMostOnce)]));
    assert_eq!(h.take(anon), [Out::Suback(2, vec![0])]);
    h.send(alice, publish("sensors/secret", b"s", QoS::AtMostOnce, 0));
    h.send(alice, publish("sensors/t", b"t", QoS::AtMostOnce, 0));
    h.send(alice, publish("cmd/go", b"c", QoS::AtMostOnce, 0));
    // alice: sensors/secret denied; sensors/t once (overlapping subs deliver once); cmd/go
    // is write-only for her. anon reads only public/#.
    assert_eq!(h.take(alice), [msg("sensors/t", "t", QoS::AtMostOnce, 0)]);
    assert_eq!(h.take(anon), []);
}

#[test]
fn retained_messages_are_filtered_on_subscribe() {
    let mut auth_free = Harness::new(); // sanity: same flow without ACL delivers both
    let p = auth_free.client(connect("p", true, 0));
    let retained = |topic: &'static str| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic,
            packet_id: None,
            properties: Properties::EMPTY,
            payload: b"r",
        })
    };
    auth_free.send(p, retained("sensors/secret"));
    auth_free.send(p, retained("sensors/t"));
    let s = auth_free.client(connect("s", true, 0));
    auth_free.send(s, subscribe(1, &[("sensors/#", QoS::AtMostOnce)]));
    assert_eq!(auth_free.take(s).len(), 3);

    let mut h = harness(true, Some(ACL));
    let alice = h.client(login("a", "alice", b"apw"));
    h.send(alice, retained("sensors/secret")); // dropped: alice may not write it
    let anon = h.client(connect("n", true, 0));
    h.send(anon, retained("public/x")); // dropped: anonymous is read-only
    h.send(alice, retained("sensors/t"));
    assert_eq!(h.broker.retained_count(), 1);
    let bob = h.client(login("b", "bob", b"bpw"));
    h.send(bob, subscribe(1, &[("#", QoS::AtMostOnce)]));
    let out = h.take(bob);
    assert_eq!(out.len(), 2, "{out:?}"); // SUBACK and sensors/t only
    assert!(matches!(&out[1], Out::Publish { topic, retain: true, .. } if topic == "sensors/t"));
}

#[test]
fn will_needs_write_access_when_published() {
    let mut h = harness(true, Some(ACL));
    let alice = h.client(login("a", "alice", b"apw"));
    h.send(alice, subscribe(1, &[("sensors/#", QoS::AtMostOnce)]));
    h.take(alice);
    // bob may not write sensors/#: his will there is dropped.
    let bob = h.client(Connect {
        username: Some("bob"),
        password: Some(b"bpw"),
        ..with_will(
            connect("b", true, 0),
            "sensors/will",
            b"gone",
            QoS::AtMostOnce,
            false,
        )
    });
    h.broker
        .handle_disconnect(bob, Disconnect::PeerClosed, h.now);
    assert_eq!(h.take(alice), []);
    // The same will from alice goes out.
    let a2 = h.client(Connect {
        username: Some("alice"),
        password: Some(b"apw"),
        ..with_will(
            connect("a2", true, 0),
            "sensors/will",
            b"gone",
            QoS::AtMostOnce,
            false,
        )
    });
    h.broker
        .handle_disconnect(a2, Disconnect::PeerClosed, h.now);
    assert_eq!(
        h.take(alice),
        [msg("sensors/will", "gone", QoS::AtMostOnce, 0)]
    );
}

#[test]
fn pattern_rules_use_client_id() {
    let mut h = harness(true, Some(ACL));
    let a = h.client(connect("dev1", true, 0));
    let b = h.client(connect("dev2", true, 0));
    h.send(
        a,
        subscribe(
            1,
            &[
                ("own/dev1/#", QoS::AtMostOnce),
                ("own/dev2/#", QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(h.take(a), [Out::Suback(1, vec![0, 0x80])]);
    h.send(b, publish("own/dev1/x", b"no", QoS::AtMostOnce, 0));
    h.send(a, publish("own/dev1/x", b"yes", QoS::AtMostOnce, 0));
    assert_eq!(h.take(a), [msg("own/dev1/x", "yes", QoS::AtMostOnce, 0)]);
}

/// A reload keeps the clients it still admits and applies the new rules to them.
#[test]
fn reload_keeps_clients_applies_new_rules_and_removes_denied_subscriptions() {
    let alice_line = password::format_line("alice", &Hash::new(b"apw", 5).unwrap());
    let bob_line = password::format_line("bob", &Hash::new(b"bpw", 5).unwrap());
    let file = |lines: &[&str]| PasswordFile::parse(&lines.join("\n")).unwrap();
    let auth = Auth::new(
        true,
        Some(file(&[&alice_line, &bob_line])),
        Some(Acl::parse(ACL).unwrap()),
    );
    let mut h = Harness {
        broker: Broker::with_auth(Config::in_memory(), auth),
        now: Instant::now(),
        next: 0,
        closed: HashMap::new(),
    };
    let alice = h.client(login("a", "alice", b"apw"));
    let bob = Connect {
        clean_start: false,
        ..login("b", "bob", b"bpw")
    };
    let bob = h.client(bob);
    h.send(bob, subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]));
    h.take(bob);
    // A new ACL without bob's read rule; carol added.
    let new_acl = "user alice\ntopic readwrite sensors/#\n";
    let carol_line = password::format_line("carol", &Hash::new(b"cpw", 5).unwrap());
    let auth = Auth::new(
        true,
        Some(file(&[&alice_line, &bob_line, &carol_line])),
        Some(Acl::parse(new_acl).unwrap()),
    );
    let done = h.broker.reload(Config::in_memory(), auth, h.now);
    assert_eq!(
        done,
        Reloaded {
            disconnected: 0,
            subscriptions_removed: 1
        }
    );
    assert!(!h.is_closed(alice) && !h.is_closed(bob));
    assert!(h.broker.session("b").unwrap().subscriptions.is_empty());
    h.send(alice, publish("sensors/t", b"x", QoS::AtMostOnce, 0));
    assert_eq!(h.take(bob), []);
    // Still connected and talking.
    assert!(h.send(bob, Packet::Pingreq));
    assert_eq!(h.take(bob), [Out::Pingresp]);
    assert_eq!(
        connack_code(&mut h, login("c", "carol", b"cpw")),
        (0x00, false)
    );
}

/// Mosquitto 2.0 disconnects, on SIGHUP, the clients the new files no longer admit: a
/// user removed from the password file (or whose entry changed), and anonymous clients
/// once `allow_anonymous` is off. wrenmq kept them all connected.
#[test]
fn reload_disconnects_clients_it_no_longer_admits() {
    let alice_line = password::format_line("alice", &Hash::new(b"apw", 5).unwrap());
    let bob_line = password::format_line("bob", &Hash::new(b"bpw", 5).unwrap());
    let carol_line = password::format_line("carol", &Hash::new(b"cpw", 5).unwrap());
    let file = |lines: &[&str]| PasswordFile::parse(&lines.join("\n")).unwrap();
    let auth = Auth::new(
        true,
        Some(file(&[&alice_line, &bob_line, &carol_line])),
        None,
    );
    let mut h = Harness {
        broker: Broker::with_auth(Config::in_memory(), auth),
        now: Instant::now(),
        next: 0,
        closed: HashMap::new(),
    };
    let alice = h.client(login("a", "alice", b"apw"));
    let bob = h.client(login("b", "bob", b"bpw"));
    let carol = h.client(login("c", "carol", b"cpw"));
    let anon = h.client(connect("n", true, 0));
    let v5 = h.open();
    h.send(
        v5,
        Packet::Connect(Connect {
            version: ProtocolVersion::V5,
            ..login("b5", "bob", b"bpw")
        }),
    );
    let connack = h.broker.pending_output(v5).len();
    assert!(connack > 0);
    h.broker.consume_output(v5, connack);
    // bob removed, carol's password changed, anonymous clients no longer allowed.
    let carol_new = password::format_line("carol", &Hash::new(b"new", 5).unwrap());
    let auth = Auth::new(false, Some(file(&[&alice_line, &carol_new])), None);
    let done = h.broker.reload(Config::in_memory(), auth, h.now);
    assert_eq!(done.disconnected, 4);
    for id in [bob, carol, anon, v5] {
        assert!(h.is_closed(id), "{id:?} still connected");
    }
    assert!(!h.is_closed(alice));
    // A 5.0 client learns why.
    let closed = h.closed.get(&v5).cloned().unwrap_or_default();
    assert_eq!(closed, [0xE0, 0x01, 0x87], "DISCONNECT 0x87");
    assert!(h.send(alice, Packet::Pingreq));
    assert_eq!(h.take(alice), [Out::Pingresp]);
}

/// In-flight messages resent on reconnect went out without a read check (the queue path
/// had one): a reload that takes read access away must stop them too.
#[test]
fn inflight_resent_on_reconnect_is_checked_against_the_acl() {
    let mut h = harness(true, Some(ACL));
    let alice = h.client(login("a", "alice", b"apw"));
    let bob_connect = Connect {
        clean_start: false,
        ..login("b", "bob", b"bpw")
    };
    let bob = h.client(bob_connect.clone());
    h.send(bob, subscribe(1, &[("sensors/#", QoS::ExactlyOnce)]));
    h.take(bob);
    h.send(alice, publish("sensors/t", b"1", QoS::AtLeastOnce, 1));
    h.send(alice, publish("sensors/t", b"2", QoS::ExactlyOnce, 2));
    assert_eq!(h.take(bob).len(), 2, "both in flight, unacknowledged");
    h.broker
        .handle_disconnect(bob, Disconnect::PeerClosed, h.now);
    // bob may no longer read sensors/#.
    let new_acl = "user alice\ntopic readwrite sensors/#\nuser bob\ntopic read other/#\n";
    let auth = Auth::new(true, Some(passwords()), Some(Acl::parse(new_acl).unwrap()));
    h.broker.reload(Config::in_memory(), auth, h.now);
    let bob = h.open();
    h.send(bob, Packet::Connect(bob_connect));
    assert_eq!(
        h.take(bob),
        [Out::Connack {
            session_present: true,
            code: 0
        }],
        "no resend of what bob may no longer read"
    );
    assert!(h.broker.session("b").unwrap().inflight().is_empty());
}

#[test]
fn message_size_limit_drops_big_payloads_after_the_ack() {
    let mut h = Harness::with(Config {
        message_size_limit: 3,
        ..Config::in_memory()
    });
    let c = h.client(connect("c", true, 0));
    h.send(c, subscribe(1, &[("t", QoS::AtMostOnce)]));
    h.take(c);
    h.send(c, publish("t", b"1234", QoS::AtLeastOnce, 5));
    h.send(c, publish("t", b"123", QoS::AtMostOnce, 0));
    assert_eq!(
        h.take(c),
        [Out::Puback(5), msg("t", "123", QoS::AtMostOnce, 0)]
    );
}

#[test]
fn certificate_identity_replaces_the_connect_user_name_and_skips_the_password() {
    let mut h = harness(false, Some(ACL));
    // The CONNECT claims alice with a wrong password; the certificate says bob.
    let id = h.open();
    h.broker.handle_cert_identity(id, Some("bob"));
    h.send(id, Packet::Connect(login("cert", "alice", b"wrong")));
    assert!(matches!(
        h.take(id).first(),
        Some(Out::Connack { code: 0, .. })
    ));
    assert_eq!(
        h.broker.session("cert").unwrap().username.as_deref(),
        Some("bob")
    );
    // bob may not write sensors/# (alice may): the ACL applies to the certificate's name.
    h.send(id, subscribe(1, &[("sensors/#", QoS::AtMostOnce)]));
    h.take(id);
    let other = h.open();
    h.send(other, Packet::Connect(login("alice", "alice", b"apw")));
    h.take(other);
    h.send(other, subscribe(1, &[("sensors/#", QoS::AtMostOnce)]));
    h.take(other);
    h.send(id, publish("sensors/t", b"from bob", QoS::AtMostOnce, 0));
    assert!(h.take(other).is_empty(), "bob's publish reached alice");
}

#[test]
fn certificate_without_identity_is_refused_at_connect() {
    let mut h = harness(true, None);
    let id = h.open();
    h.broker.handle_cert_identity(id, None);
    h.send(id, Packet::Connect(login("nocn", "alice", b"apw")));
    assert!(matches!(
        h.take(id).first(),
        Some(Out::Connack { code: 0x05, .. })
    ));
    assert!(h.is_closed(id));
}

/// A client named by its certificate (use_identity_as_username) was disconnected by every
/// SIGHUP when a password file was configured: its name is not in the file, and the reload
/// checked it as if it had logged in with a password. Mosquitto 2.0 keeps it.
#[test]
fn reload_keeps_clients_named_by_their_certificate() {
    let file = passwords();
    let auth = Auth::new(false, Some(file.clone()), Some(Acl::parse(ACL).unwrap()));
    let mut h = Harness {
        broker: Broker::with_auth(Config::in_memory(), auth),
        now: Instant::now(),
        next: 0,
        closed: HashMap::new(),
    };
    let id = h.open();
    h.broker.handle_cert_identity(id, Some("sensor-1"));
    h.send(id, Packet::Connect(login("cert", "alice", b"wrong")));
    assert!(matches!(
        h.take(id).first(),
        Some(Out::Connack { code: 0, .. })
    ));
    let alice = h.client(login("a", "alice", b"apw"));
    // The same files again, as a SIGHUP without changes reads them.
    let auth = Auth::new(false, Some(file), Some(Acl::parse(ACL).unwrap()));
    let done = h.broker.reload(Config::in_memory(), auth, h.now);
    assert_eq!(done.disconnected, 0);
    for c in [id, alice] {
        assert!(!h.is_closed(c), "{c:?} disconnected by the reload");
        assert!(h.send(c, Packet::Pingreq));
        assert_eq!(h.take(c), [Out::Pingresp]);
    }
}
