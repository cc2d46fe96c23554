//! The whole broker over real TCP on loopback: event loop, codec and state machine
//! together, driven by a blocking client built on the crate's codec.

mod common;

use common::{Client, Got, TestBroker};
use wrenmq::protocol::QoS;

fn publish_got(topic: &str, payload: &[u8], qos: QoS, id: u16) -> Got {
    Got::Publish {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos,
        retain: false,
        dup: false,
        id,
    }
}

#[test]
fn persistent_session_receives_offline_messages_in_order() {
    // [MQTT-3.1.2-4] subscribe QoS 1, disconnect, three messages, reconnect: all three.
    let broker = TestBroker::start();
    let (mut sub, present) = Client::connect(broker.addr, "offline-sub", false);
    assert!(!present);
    sub.subscribe(1, "offline/t", QoS::AtLeastOnce);
    drop(sub);
    let (mut publisher, _) = Client::connect(broker.addr, "offline-pub", true);
    for (i, body) in [b"one", b"two", b"tri"].iter().enumerate() {
        publisher.publish("offline/t", *body, QoS::AtLeastOnce, i as u16 + 1);
        assert_eq!(publisher.recv(), Some(Got::Puback(i as u16 + 1)));
    }
    let (mut sub, present) = Client::connect(broker.addr, "offline-sub", false);
    assert!(present, "[MQTT-3.2.2-2] session present");
    let mut got = Vec::new();
    for _ in 0..3 {
        match sub.recv() {
            Some(Got::Publish {
                payload,
                qos: QoS::AtLeastOnce,
                id,
                ..
            }) => {
                got.push(payload);
                sub.send(&wrenmq::protocol::Packet::Puback(wrenmq::protocol::Ack {
                    packet_id: std::num::NonZeroU16::new(id).unwrap(),
                    reason: wrenmq::protocol::ReasonCode::SUCCESS,
                    properties: wrenmq::protocol::Properties::EMPTY,
                }));
            }
            other => panic!("expected a queued message, got {other:?}"),
        }
    }
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"tri".to_vec()]);
}

#[test]
fn thousand_concurrent_clients_exchange_messages() {
    const N: usize = 1000;
    let broker = TestBroker::start();
    let mut clients: Vec<Client> = (0..N)
        .map(|i| {
            let (mut c, _) = Client::connect(broker.addr, &format!("load-{i}"), true);
            c.subscribe(1, &format!("load/{i}"), QoS::AtMostOnce);
            c
        })
        .collect();
    let (mut hub, _) = Client::connect(broker.addr, "load-hub", true);
    hub.subscribe(1, "fanin/#", QoS::AtLeastOnce);

    // Fan-out: one message to each client's own topic.
    for i in 0..N {
        hub.publish(
            &format!("load/{i}"),
            format!("to {i}").as_bytes(),
            QoS::AtMostOnce,
            0,
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.recv(),
            Some(publish_got(
                &format!("load/{i}"),
                format!("to {i}").as_bytes(),
                QoS::AtMostOnce,
                0
            ))
        );
    }
    // Fan-in: every client publishes once at QoS 1; the hub gets all of them.
    for (i, c) in clients.iter_mut().enumerate() {
        c.publish(&format!("fanin/{i}"), b"x", QoS::AtLeastOnce, 1);
    }
    let mut seen = vec![false; N];
    for _ in 0..N {
        match hub.recv() {
            Some(Got::Publish { topic, id, .. }) => {
                let i: usize = topic["fanin/".len()..].parse().expect("topic index");
                assert!(!seen[i], "duplicate delivery of {topic}");
                seen[i] = true;
                hub.send(&wrenmq::protocol::Packet::Puback(wrenmq::protocol::Ack {
                    packet_id: std::num::NonZeroU16::new(id).unwrap(),
                    reason: wrenmq::protocol::ReasonCode::SUCCESS,
                    properties: wrenmq::protocol::Properties::EMPTY,
                }));
            }
            other => panic!("hub expected a fan-in message, got {other:?}"),
        }
    }
    for c in clients.iter_mut() {
        assert_eq!(c.recv(), Some(Got::Puback(1)));
    }
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let broker = TestBroker::start();
    let (mut good, _) = Client::connect(broker.addr, "good", true);
    good.subscribe(1, "ok", QoS::AtMostOnce);
    let bad_inputs: &[&[u8]] = &[
        b"\xff\xff\xff\xff\xff",                         // reserved type, garbage
        b"\x30\x05\x00\x03a/#x",                         // publish before CONNECT
        b"\x10\xff\xff\xff\xff\x7f",                     // 5-byte remaining length
        b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", // reserved connect flag [MQTT-3.1.2-3]
    ];
    for bytes in bad_inputs {
        let mut bad = Client::open(broker.addr);
        let _ = bad.send_raw(bytes);
        assert!(
            bad.expect_closed(),
            "input {bytes:x?} must close the connection"
        );
    }
    // After CONNECT: wildcard in a PUBLISH topic [MQTT-3.3.2-2].
    let (mut bad, _) = Client::connect(broker.addr, "bad", true);
    bad.send_raw(b"\x30\x05\x00\x03a/#").unwrap();
    assert!(bad.expect_closed());
    let (mut publisher, _) = Client::connect(broker.addr, "pub", true);
    publisher.publish("ok", b"still here", QoS::AtMostOnce, 0);
    assert_eq!(
        good.recv(),
        Some(publish_got("ok", b"still here", QoS::AtMostOnce, 0))
    );
}

#[test]
fn packets_split_into_single_bytes_and_merged_in_one_write_both_work() {
    let broker = TestBroker::start();
    let (mut sub, _) = Client::connect(broker.addr, "split-sub", true);
    sub.subscribe(1, "split", QoS::AtMostOnce);
    let mut c = Client::open(broker.addr);
    let mut stream = Vec::new();
    stream.extend_from_slice(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04spl1"); // CONNECT
    stream.extend_from_slice(b"\x30\x07\x00\x05split"); // PUBLISH, empty payload
    stream.extend_from_slice(b"\x30\x08\x00\x05splitX");
    for b in &stream {
        c.send_raw(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(
        c.recv(),
        Some(Got::Connack {
            session_present: false,
            code: 0
        })
    );
    assert_eq!(
        sub.recv(),
        Some(publish_got("split", b"", QoS::AtMostOnce, 0))
    );
    assert_eq!(
        sub.recv(),
        Some(publish_got("split", b"X", QoS::AtMostOnce, 0))
    );
    // Many packets in one write.
    let mut burst = Vec::new();
    for i in 0..200u8 {
        burst.extend_from_slice(&[0x30, 0x08, 0x00, 0x05, b's', b'p', b'l', b'i', b't', i]);
    }
    c.send_raw(&burst).unwrap();
    for i in 0..200u8 {
        assert_eq!(
            sub.recv(),
            Some(publish_got("split", &[i], QoS::AtMostOnce, 0))
        );
    }
}

#[test]
fn oversize_packet_is_refused_from_its_header() {
    let config = wrenmq::config::Config {
        max_packet_size: 1024,
        ..Default::default()
    };
    let broker = TestBroker::with(config);
    let (mut c, _) = Client::connect(broker.addr, "big", true);
    // PUBLISH announcing 2,000 bytes; only the header is sent.
    c.send_raw(&[0x30, 0xD0, 0x0F]).unwrap();
    assert!(c.expect_closed(), "closed before the body arrives");
}

#[test]
fn refused_connack_is_readable_while_the_client_keeps_sending() {
    // [MQTT-3.2.2-5] a refused CONNECT gets its CONNACK, then the close. A client that
    // wrote more right after CONNECT must read that CONNACK and then EOF, not a reset:
    // the broker sends FIN after it and discards input until the client closes (before
    // the fix it closed with unread input, RST destroyed the CONNACK and the client's
    // write failed with EPIPE).
    use socket2::{Domain, Socket, Type};
    use std::io::{Read, Write};
    use std::time::Duration;

    let broker = TestBroker::start();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    // Small, so that most of the flood is still in the client when the broker decides.
    socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
    socket.connect(&broker.addr.into()).expect("connect");
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // 3.1.1 CONNECT, clean session 0, empty client id: refused with 0x02 [MQTT-3.1.3-8].
    let mut data = vec![
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3c, 0x00, 0x00,
    ];
    // 2 MiB of PINGREQ: more than the socket buffers hold, under the 8 MiB linger bound.
    data.extend([0xc0, 0x00].repeat(1 << 20));
    if let Err(e) = stream.write_all(&data) {
        panic!("writing after CONNECT failed: {e}");
    }
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => assert_eq!(got, [0x20, 0x02, 0x00, 0x02]),
        Err(e) => panic!("reading the CONNACK failed: {e} (after {got:02x?})"),
    }
}

#[test]
fn lingering_ends_for_a_client_that_never_stops_sending() {
    // The graceful close is bounded (1 s, 8 MiB): a client that keeps writing after its
    // refused CONNACK is cut off, its writes then fail. The 30 s cap only bounds the test.
    use std::io::Write;
    use std::time::{Duration, Instant};

    let broker = TestBroker::start();
    let mut stream = std::net::TcpStream::connect(broker.addr).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3c, 0x00, 0x00,
    ];
    stream.write_all(&connect).expect("CONNECT");
    let chunk = [0xc0, 0x00].repeat(32 * 1024);
    let start = Instant::now();
    let cut_off = loop {
        if stream.write_all(&chunk).is_err() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(30) {
            break false;
        }
    };
    assert!(cut_off, "still accepting input 30 s after the refusal");
}
