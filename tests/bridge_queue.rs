//! The bridge's outbound queue over real sockets (issue 14): wrenmq's binary with a bridge
//! whose upstream (Debian's Mosquitto, behind a gate the test opens) is down.
//!
//! - At `bridge_max_queued_bytes` a 5.0 publisher of QoS 1/2 gets PUBACK/PUBREC 0x97 and a
//!   3.1.1 one is disconnected; once the uplink is back and has drained the queue,
//!   publishing is accepted again, and the upstream got every acknowledged message once,
//!   in order, and nothing that was refused.
//! - MQTT 5 Message Expiry of queued messages counts the wait, across a `kill -9`: an
//!   expired message is not forwarded, the other goes with the time it has left.
//!
//! Needs `mosquitto` and `mosquitto-clients` (scripts/test.sh installs them).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::procs::{free_port, start_mosquitto, start_wrenmq, Killed};
use common::proxy::open_gate;
use common::Client;
use wrenmq::protocol::{
    decode, Connect, Packet, Properties, PropertiesBuf, Property, ProtocolVersion, Publish, QoS,
    Status,
};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wrenmq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A minimal MQTT 5.0 client on the crate's codec: PUBLISH with properties, and the
/// reason code of each acknowledgement.
struct V5 {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl V5 {
    fn connect(port: u16, client_id: &str) -> V5 {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = V5 {
            stream,
            buf: Vec::new(),
        };
        c.send(&Packet::Connect(Connect {
            version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::EMPTY,
            client_id,
            will: None,
            username: None,
            password: None,
            bridge: false,
        }));
        match c.recv() {
            Some(("connack", _, 0)) => {}
            other => panic!("CONNACK: {other:?}"),
        }
        c
    }

    fn send(&mut self, p: &Packet<'_>) {
        let mut bytes = Vec::new();
        p.encode(ProtocolVersion::V5, &mut bytes);
        self.stream.write_all(&bytes).expect("write");
    }

    /// The next packet as (kind, packet id, reason code); CONNACK has id 0.
    fn recv(&mut self) -> Option<(&'static str, u16, u8)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = match decode(&self.buf, Some(ProtocolVersion::V5), u32::MAX) {
                Ok(Status::Complete((p, n))) => Some((
                    match p {
                        Packet::Connack(a) => ("connack", 0, a.code.0),
                        Packet::Puback(a) => ("puback", a.packet_id.get(), a.reason.0),
                        Packet::Pubrec(a) => ("pubrec", a.packet_id.get(), a.reason.0),
                        Packet::Pubcomp(a) => ("pubcomp", a.packet_id.get(), a.reason.0),
                        other => panic!("unexpected {other:?}"),
                    },
                    n,
                )),
                _ => None,
            };
            if let Some((got, n)) = got {
                self.buf.drain(..n);
                return Some(got);
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Publishes and returns the reason code of its PUBACK (QoS 1) or PUBREC (QoS 2; a
    /// successful flow is completed with PUBREL/PUBCOMP).
    fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        id: u16,
        props: &[Property<'_>],
    ) -> u8 {
        let mut pb = PropertiesBuf::new();
        for p in props {
            pb.push(*p);
        }
        let pid = NonZeroU16::new(id).unwrap();
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: Some(pid),
            properties: pb.as_properties(),
            payload,
        }));
        match (qos, self.recv()) {
            (QoS::AtLeastOnce, Some(("puback", got, code))) if got == id => code,
            (QoS::ExactlyOnce, Some(("pubrec", got, code))) if got == id => {
                if code < 0x80 {
                    self.send(&Packet::Pubrel(wrenmq::protocol::Ack {
                        packet_id: pid,
                        reason: wrenmq::protocol::ReasonCode::SUCCESS,
                        properties: Properties::EMPTY,
                    }));
                    assert!(matches!(self.recv(), Some(("pubcomp", ..))));
                }
                code
            }
            other => panic!("ack of {id}: {other:?}"),
        }
    }
}

/// mosquitto_sub against the upstream with a persistent session `upstream-sub`.
fn sub(upstream: u16, extra: &[&str]) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &upstream.to_string()])
        .args(["-c", "-i", "upstream-sub", "-q", "1", "-t", "out/#"])
        .args(extra)
        .output()
        .expect("mosquitto_sub (apt install mosquitto-clients)");
    assert!(out.status.success() || !extra.contains(&"-E"), "subscriber");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(dir: &Path, local: u16, gate: u16, extra: &str) -> PathBuf {
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}\n\
             connection up\naddress 127.0.0.1:{gate}\ntopic out/# out 2\n\
             remote_clientid gw.test\nrestart_timeout 1\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn a_full_bridge_queue_refuses_publishers_until_the_uplink_drains_it_and_loses_nothing() {
    let dir = temp_dir("bridge-queue-cap");
    let (local, gate, upstream) = (free_port(), free_port(), free_port());
    // "out/t" + "m000" = 9 bytes a message: 10 fit 90 bytes.
    let conf = config(&dir, local, gate, "bridge_max_queued_bytes 90\n");
    let _w: Killed = start_wrenmq(&conf, local, 10);

    // The uplink is down: ten are taken, then a 5.0 publisher is told no, QoS 1 and 2.
    let mut p5 = V5::connect(local, "p5");
    for i in 0..10u16 {
        let code = p5.publish(
            "out/t",
            format!("m{i:03}").as_bytes(),
            QoS::AtLeastOnce,
            i + 1,
            &[],
        );
        assert_eq!(code, 0, "message {i} taken");
    }
    assert_eq!(p5.publish("out/t", b"x10", QoS::AtLeastOnce, 11, &[]), 0x97);
    assert_eq!(p5.publish("out/t", b"x11", QoS::ExactlyOnce, 12, &[]), 0x97);
    // Other topics are not affected.
    assert_eq!(p5.publish("other/t", b"y", QoS::AtLeastOnce, 13, &[]), 0x10);
    // A 3.1.1 publisher cannot be told no: disconnected, as at memory_limit.
    let (mut p3, _) = Client::connect(([127, 0, 0, 1], local).into(), "p3", true);
    p3.publish("out/t", b"z", QoS::AtLeastOnce, 1);
    assert!(p3.expect_closed(), "3.1.1 publisher disconnected");

    // The upstream with its subscriber's session, then the link: the ten go up.
    let _m = start_mosquitto(&dir, upstream);
    sub(upstream, &["-E"]);
    open_gate(gate, upstream);
    let got = sub(upstream, &["-C", "10", "-W", "30", "-v"]);
    let want: Vec<String> = (0..10).map(|i| format!("out/t m{i:03}")).collect();
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        want,
        "all ten once, in order"
    );

    // Drained: accepted again (the bridge learns of the last PUBACK within a turn or so).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 100;
    loop {
        id += 1;
        match p5.publish("out/t", b"after", QoS::AtLeastOnce, id, &[]) {
            0 => break,
            0x97 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("publish after the drain: {other:#x}"),
        }
    }
    let got = sub(upstream, &["-C", "1", "-W", "30", "-v"]);
    assert_eq!(
        got.trim(),
        "out/t after",
        "and forwarded; nothing refused went up"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn queued_v5_messages_expire_across_a_kill_and_go_up_with_the_time_left() {
    let dir = temp_dir("bridge-queue-expiry");
    let (local, gate, upstream) = (free_port(), free_port(), free_port());
    let conf = config(&dir, local, gate, "bridge_protocol_version mqttv50\n");
    let w = start_wrenmq(&conf, local, 10);
    let mut p5 = V5::connect(local, "p5");
    let short = [Property::MessageExpiryInterval(1)];
    let long = [Property::MessageExpiryInterval(600)];
    assert_eq!(
        p5.publish("out/e", b"short", QoS::AtLeastOnce, 1, &short),
        0
    );
    assert_eq!(p5.publish("out/e", b"long", QoS::AtLeastOnce, 2, &long), 0);
    assert_eq!(p5.publish("out/e", b"plain", QoS::AtLeastOnce, 3, &[]), 0);
    drop(p5);
    drop(w); // SIGKILL during the outage: the wait is counted from the stored time
    std::thread::sleep(Duration::from_millis(2500));
    let _w = start_wrenmq(&conf, local, 10);

    let _m = start_mosquitto(&dir, upstream);
    sub(upstream, &["-E", "-V", "mqttv5", "-x", "600"]);
    open_gate(gate, upstream);
    let got = sub(
        upstream,
        &[
            "-V", "mqttv5", "-x", "600", "-C", "2", "-W", "30", "-F", "%p %E",
        ],
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 2, "{got:?}");
    assert_eq!(
        lines[1].trim_end(),
        "plain",
        "no expiry, none added; the short one never went up"
    );
    let (payload, left) = lines[0].split_once(' ').expect("an expiry interval");
    assert_eq!(payload, "long");
    let left: u32 = left.parse().expect("seconds");
    // [MQTT-3.3.2-6] at least the 2.5 s spent waiting (across the kill) are gone.
    assert!((1..=598).contains(&left), "{left} s left of 600");
    let _ = std::fs::remove_dir_all(&dir);
}
