//! Bridge protocol details over real sockets: the inbound QoS 2 state across a `kill -9`,
//! wrenmq as the upstream of a 3.1.1 bridge (the `try_private` bridge bit), and no
//! retained-message replay when the uplink comes back.
//!
//! The upstream is a scripted stub speaking raw MQTT 3.1.1 through the crate's codec, so
//! the test sees every packet the bridge sends; for the bridge bit, wrenmq is the upstream
//! of another wrenmq and of Debian's Mosquitto (needs `mosquitto`, as scripts/test.sh
//! installs it). Each wrenmq runs as a child process, killed with SIGKILL where the
//! scenario says so.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::procs::{free_port, Killed};
use common::{Client, Got, TestBroker};
use wrenmq::protocol::{decode, Packet, ProtocolVersion, QoS, Status};

const WAIT: Duration = Duration::from_secs(20);

fn start_wrenmq(conf: &Path, port: u16) -> Killed {
    common::procs::start_wrenmq(conf, port, 10)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wrenmq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the stub upstream received, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Up {
    Connect {
        level: u8,
        clean: bool,
    },
    Subscribe {
        id: u16,
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
    Other(String),
}

/// The upstream's side of one bridge connection.
struct Link {
    s: TcpStream,
    buf: Vec<u8>,
}

/// Accepts the bridge's next connection on `l` (waiting at most `WAIT`).
fn accept(l: &TcpListener) -> Link {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                return Link { s, buf: Vec::new() };
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the bridge did not connect");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

impl Link {
    /// The next packet from the bridge; `None` at EOF or after `WAIT`.
    fn recv(&mut self) -> Option<Up> {
        loop {
            // The level byte is read raw: the codec folds the bridge bit into `bridge`.
            let version =
                (!self.buf.is_empty() && self.buf[0] >> 4 != 1).then_some(ProtocolVersion::V311);
            if let Ok(Status::Complete((p, n))) = decode(&self.buf, version, u32::MAX) {
                let up = match p {
                    Packet::Connect(c) => Up::Connect {
                        level: c.version.level() | if c.bridge { 0x80 } else { 0 },
                        clean: c.clean_start,
                    },
                    Packet::Subscribe(s) => Up::Subscribe {
                        id: s.packet_id.get(),
                    },
                    Packet::Publish(p) => Up::Publish {
                        topic: p.topic.into(),
                        payload: p.payload.to_vec(),
                        qos: p.qos,
                        retain: p.retain,
                        dup: p.dup,
                        id: p.packet_id.map_or(0, |i| i.get()),
                    },
                    Packet::Puback(a) => Up::Puback(a.packet_id.get()),
                    Packet::Pubrec(a) => Up::Pubrec(a.packet_id.get()),
                    Packet::Pubrel(a) => Up::Pubrel(a.packet_id.get()),
                    Packet::Pubcomp(a) => Up::Pubcomp(a.packet_id.get()),
                    other => Up::Other(format!("{other:?}")),
                };
                self.buf.drain(..n);
                return Some(up);
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// The next packet that is not a PINGREQ.
    fn next(&mut self) -> Up {
        loop {
            match self.recv() {
                Some(Up::Other(s)) if s.contains("Pingreq") => {
                    let _ = self.s.write_all(&[0xd0, 0x00]);
                }
                Some(up) => return up,
                None => panic!("the bridge closed the link or went silent"),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to the bridge");
    }

    /// CONNECT → CONNACK (`present`), and the SUBSCRIBE of `in` topics → SUBACK (QoS 2).
    fn handshake(&mut self, present: bool, subscribes: bool) {
        match self.next() {
            Up::Connect { level, clean } => {
                assert_eq!(level, 0x84, "3.1.1 with the bridge bit (try_private)");
                assert!(!clean, "cleansession false");
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        self.send(&[0x20, 0x02, u8::from(present), 0x00]);
        if subscribes {
            match self.next() {
                Up::Subscribe { id } => {
                    let [hi, lo] = id.to_be_bytes();
                    self.send(&[0x90, 0x03, hi, lo, 0x02]);
                }
                other => panic!("expected SUBSCRIBE, got {other:?}"),
            }
        }
    }
}

/// A QoS 2 PUBLISH from the upstream, raw.
fn qos2_publish(topic: &str, payload: &[u8], id: u16, dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    assert!(body.len() < 128);
    let mut p = vec![0x34 | if dup { 0x08 } else { 0 }, body.len() as u8];
    p.extend(body);
    p
}

fn ack(kind: u8, id: u16) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    vec![kind, 0x02, hi, lo]
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The local subscriber reads QoS 2 messages, completing each flow, until it has `n`.
fn read_qos2(c: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.recv() {
            Some(Got::Publish { payload, id, .. }) => {
                got.push(String::from_utf8_lossy(&payload).into_owned());
                c.send_raw(&ack(0x50, id)).unwrap(); // PUBREC
            }
            Some(Got::Pubrel(id)) => c.send_raw(&ack(0x70, id)).unwrap(), // PUBCOMP
            Some(_) => {}
            None => panic!("local subscriber: only {got:?}"),
        }
    }
    got
}

/// [MQTT-4.3.3-2] across a restart: wrenmq acknowledged (PUBREC) an inbound QoS 2
/// message, is killed before the upstream's PUBREL, and the upstream redelivers it with
/// DUP: it is acknowledged again, not published locally a second time.
#[test]
fn inbound_qos2_redelivered_after_a_kill_is_published_locally_once() {
    let dir = temp_dir("bridge-proto-q2");
    let (port, up_port) = (free_port(), free_port());
    let upstream = TcpListener::bind(("127.0.0.1", up_port)).unwrap();
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}\nconnection up\naddress 127.0.0.1:{up_port}\n\
             topic in/# in 2\nremote_clientid gw.q2\nrestart_timeout 1\nnotifications false\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let w = start_wrenmq(&conf, port);
    // A persistent local subscriber, offline while the messages arrive.
    let (mut sub, _) = Client::connect(local(port), "local-sub", false);
    sub.subscribe(1, "in/#", QoS::ExactlyOnce);
    drop(sub);

    let mut link = accept(&upstream);
    link.handshake(false, true);
    link.send(&qos2_publish("in/t", b"once", 7, false));
    assert_eq!(link.next(), Up::Pubrec(7), "acknowledged once durable");
    drop(w); // SIGKILL between our PUBREC and the upstream's PUBREL
    assert_eq!(link.recv(), None, "the link died with wrenmq");

    let _w = start_wrenmq(&conf, port);
    let mut link = accept(&upstream);
    link.handshake(true, true);
    // The upstream never saw a PUBCOMP: it redelivers the PUBLISH (DUP), then releases it.
    link.send(&qos2_publish("in/t", b"once", 7, true));
    assert_eq!(link.next(), Up::Pubrec(7));
    link.send(&ack(0x62, 7)); // PUBREL
    assert_eq!(link.next(), Up::Pubcomp(7));
    // A new message under the released id is new.
    link.send(&qos2_publish("in/t", b"next", 7, false));
    assert_eq!(link.next(), Up::Pubrec(7));
    link.send(&ack(0x62, 7));
    assert_eq!(link.next(), Up::Pubcomp(7));

    let (mut sub, present) = Client::connect(local(port), "local-sub", false);
    assert!(present);
    // A second copy of "once" would come before "next".
    assert_eq!(read_qos2(&mut sub, 2), ["once", "next"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 3.1.1 CONNECT with client id `id`, clean session, keepalive 60, and protocol level
/// `level` (0x84: 4 with Mosquitto's bridge bit), as raw bytes.
fn raw_connect(id: &str, level: u8) -> Vec<u8> {
    let mut p = vec![0x10, (10 + 2 + id.len()) as u8, 0x00, 0x04];
    p.extend_from_slice(b"MQTT");
    p.extend_from_slice(&[level, 0x02, 0x00, 0x3c]);
    p.extend_from_slice(&(id.len() as u16).to_be_bytes());
    p.extend_from_slice(id.as_bytes());
    p
}

/// A QoS 1 PUBLISH, raw.
fn qos1_publish(topic: &str, payload: &[u8], id: u16, retain: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    let mut p = vec![0x32 | u8::from(retain), body.len() as u8];
    p.extend(body);
    p
}

/// What a client connected with protocol level `level` and subscribed to `#` receives
/// when it publishes on `own/t` and then someone else publishes a retained `state/t`.
fn echo_and_retain(broker: &TestBroker, id: &str, level: u8) -> Vec<(String, bool)> {
    let mut c = Client::open(broker.addr);
    c.send_raw(&raw_connect(id, level)).unwrap();
    assert!(matches!(c.recv(), Some(Got::Connack { code: 0, .. })));
    c.send_raw(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x01])
        .unwrap(); // SUBSCRIBE # QoS 1
    assert_eq!(c.recv(), Some(Got::Suback(1, vec![1])));
    let mut got = Vec::new();
    let mut keep = |g: Option<Got>, c: &mut Client| match g {
        Some(Got::Publish {
            topic, retain, id, ..
        }) => {
            c.send_raw(&ack(0x40, id)).unwrap();
            got.push((topic, retain));
        }
        Some(Got::Puback(_)) => {}
        other => panic!("{other:?}"),
    };
    // Its own message, routed before the PUBACK comes back.
    c.send_raw(&qos1_publish("own/t", b"mine", 2, false))
        .unwrap();
    loop {
        let g = c.recv();
        if g == Some(Got::Puback(2)) {
            break;
        }
        keep(g, &mut c);
    }
    let mut other = Client::open(broker.addr);
    other
        .send_raw(&raw_connect(&format!("{id}-other"), 4))
        .unwrap();
    assert!(matches!(other.recv(), Some(Got::Connack { code: 0, .. })));
    other
        .send_raw(&qos1_publish("state/t", b"on", 1, true))
        .unwrap();
    assert_eq!(other.recv(), Some(Got::Puback(1)));
    // Whatever came for the own message arrived before this one.
    loop {
        let g = c.recv();
        let last = matches!(&g, Some(Got::Publish { topic, .. }) if topic == "state/t");
        keep(g, &mut c);
        if last {
            break;
        }
    }
    got
}

/// wrenmq as the upstream of a 3.1.1 bridge: the level byte 0x84 (Mosquitto's
/// `try_private`) makes the client's subscriptions No Local and Retain As Published, as
/// Mosquitto does, so a `both` bridge gets no echo and retained messages keep RETAIN.
#[test]
fn a_client_with_the_bridge_bit_gets_no_echo_and_keeps_retain() {
    assert_eq!(
        echo_and_retain(&TestBroker::start(), "bridge", 0x84),
        [("state/t".to_string(), true)]
    );
    // A plain 3.1.1 client: its own message comes back, a live retained one has RETAIN
    // clear [MQTT-3.3.1-9].
    assert_eq!(
        echo_and_retain(&TestBroker::start(), "plain", 0x04),
        [("own/t".to_string(), false), ("state/t".to_string(), false)]
    );
}

/// Publishes `payload` on `topic` at QoS 1 (`retain` as given) through a fresh
/// connection, and returns once the broker acknowledged it.
fn publish1(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let mut c = Client::open(local(port));
    c.send_raw(&raw_connect("pub", 4)).unwrap();
    assert!(matches!(c.recv(), Some(Got::Connack { code: 0, .. })));
    c.send_raw(&qos1_publish(topic, payload, 1, retain))
        .unwrap();
    assert_eq!(c.recv(), Some(Got::Puback(1)));
}

/// The next `n` PUBLISHes to `c` as (topic, payload, retain), acknowledged.
fn next_publishes(c: &mut Client, n: usize) -> Vec<(String, String, bool)> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.recv() {
            Some(Got::Publish {
                topic,
                payload,
                retain,
                id,
                ..
            }) => {
                if id != 0 {
                    c.send_raw(&ack(0x40, id)).unwrap();
                }
                got.push((topic, String::from_utf8_lossy(&payload).into(), retain));
            }
            Some(_) => {}
            None => panic!("got only {got:?}"),
        }
    }
    got
}

/// wrenmq bridged to wrenmq on a `both` topic over 3.1.1: with the bridge bit honoured
/// upstream, a message published at the gateway does not come back from the upstream
/// (no duplicate for local subscribers), and a retained message from the upstream stays
/// retained at the gateway.
#[test]
fn wrenmq_to_wrenmq_both_over_v311_has_no_echo_and_keeps_retain() {
    let dir = temp_dir("bridge-proto-both");
    let (gw, up) = (free_port(), free_port());
    let up_conf = dir.join("up.conf");
    std::fs::write(
        &up_conf,
        format!("listener {up} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let gw_conf = dir.join("gw.conf");
    std::fs::write(
        &gw_conf,
        format!(
            "listener {gw} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             connection up\naddress 127.0.0.1:{up}\ntopic both/# both 1\n\
             bridge_protocol_version mqttv311\nremote_clientid gw.both\nrestart_timeout 1\n\
             notifications false\n"
        ),
    )
    .unwrap();
    let _up = start_wrenmq(&up_conf, up);
    let _gw = start_wrenmq(&gw_conf, gw);
    both_without_echo(gw, up);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mosquitto's own bridge (3.1.1, `try_private` on by default) with wrenmq as the
/// upstream: the same checks as between two wrenmqs.
#[test]
fn mosquitto_bridged_to_wrenmq_on_both_gets_no_echo_and_keeps_retain() {
    let dir = temp_dir("bridge-proto-mosq-both");
    let (gw, up) = (free_port(), free_port());
    let up_conf = dir.join("up.conf");
    std::fs::write(
        &up_conf,
        format!("listener {up} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let _up = start_wrenmq(&up_conf, up);
    let gw_conf = dir.join("mosquitto.conf");
    std::fs::write(
        &gw_conf,
        format!(
            "listener {gw} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             connection up\naddress 127.0.0.1:{up}\ntopic both/# both 1\n\
             bridge_protocol_version mqttv311\nremote_clientid gw.mosq\n\
             restart_timeout 1\nnotifications false\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new(common::procs::mosquitto_bin())
        .arg("-c")
        .arg(&gw_conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto (apt install mosquitto, or scripts/test.sh)");
    let _gw = Killed(child);
    common::procs::wait_listening(gw, "mosquitto", 10);
    both_without_echo(gw, up);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway on `gw` bridged to `up` on `both/#` (QoS 1, 3.1.1): waits for the bridge,
/// then checks that a message published at the gateway does not come back, and that a
/// retained message from the upstream is retained at the gateway.
fn both_without_echo(gw: u16, up: u16) {
    let mut up_sub = Client::connect(local(up), "up-sub", true).0;
    up_sub.subscribe(1, "both/#", QoS::AtLeastOnce);
    let mut gw_sub = Client::connect(local(gw), "gw-sub", true).0;
    gw_sub.subscribe(1, "both/#", QoS::AtLeastOnce);
    // The bridge is up once a message from the upstream arrives at the gateway (its
    // SUBSCRIBE upstream may follow the dial by a moment: retry).
    let deadline = Instant::now() + WAIT;
    let mut probes = 0;
    loop {
        assert!(Instant::now() < deadline, "the bridge did not come up");
        probes += 1;
        publish1(up, "both/probe", b"p", false);
        gw_sub
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let got = gw_sub.recv();
        gw_sub
            .stream
            .set_read_timeout(Some(common::TIMEOUT))
            .unwrap();
        if let Some(Got::Publish { id, .. }) = got {
            gw_sub.send_raw(&ack(0x40, id)).unwrap();
            break;
        }
    }
    // Probes sent before the bridge subscribed upstream reached only the upstream.
    assert_eq!(next_publishes(&mut up_sub, probes).len(), probes);
    gw_sub
        .stream
        .set_read_timeout(Some(common::TIMEOUT))
        .unwrap();

    publish1(gw, "both/t", b"m1", false);
    assert_eq!(
        next_publishes(&mut gw_sub, 1),
        [("both/t".into(), "m1".into(), false)]
    );
    // Once the upstream has m1 it has routed it to the bridge's connection too, if it
    // echoes: that copy would reach the gateway before m2.
    assert_eq!(
        next_publishes(&mut up_sub, 1),
        [("both/t".into(), "m1".into(), false)]
    );
    publish1(up, "both/t", b"m2", false);
    assert_eq!(
        next_publishes(&mut gw_sub, 1),
        [("both/t".into(), "m2".into(), false)],
        "m1 came back from the upstream"
    );
    // Retained upstream: kept retained at the gateway (the flag survives the bridge).
    publish1(up, "both/r", b"kept", true);
    assert_eq!(next_publishes(&mut gw_sub, 1)[0].1, "kept");
    let mut late = Client::connect(local(gw), "late", true).0;
    late.subscribe(1, "both/r", QoS::AtLeastOnce);
    assert_eq!(
        next_publishes(&mut late, 1),
        [("both/r".into(), "kept".into(), true)]
    );
}

/// The upstream reads QoS 1 PUBLISHes, acknowledging each, up to and including the one
/// with payload `last`.
fn upstream_until(link: &mut Link, last: &str) -> Vec<(String, String, bool)> {
    let mut got = Vec::new();
    loop {
        match link.next() {
            Up::Publish {
                topic,
                payload,
                retain,
                id,
                ..
            } => {
                link.send(&ack(0x40, id));
                let payload = String::from_utf8_lossy(&payload).into_owned();
                let done = payload == last;
                got.push((topic, payload, retain));
                if done {
                    return got;
                }
            }
            other => panic!("expected PUBLISH, got {other:?} after {got:?}"),
        }
    }
}

fn retained(topic: &str, payload: &str) -> (String, String, bool) {
    (topic.into(), payload.into(), true)
}

/// No retained replay storm (Mosquitto re-sends every retained message on each
/// reconnect): the bridge's local session is persistent and subscribed once, so the
/// upstream gets the retained set once, when the bridge is new, and after an outage only
/// what changed during it, also across a restart.
#[test]
fn after_an_outage_only_the_retained_messages_that_changed_go_upstream() {
    let dir = temp_dir("bridge-proto-retained");
    let (port, up_port) = (free_port(), free_port());
    let plain = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
         persistence_location {}\n",
        dir.join("data").display()
    );
    let conf = dir.join("w.conf");
    std::fs::write(&conf, &plain).unwrap();
    // Before the bridge exists: 50 retained messages, and an offline persistent session
    // on sync/# (a PUBACK for a message queued for it comes once that is on disk, and so
    // is everything wrenmq journaled before it).
    let w = start_wrenmq(&conf, port);
    for i in 0..50 {
        publish1(port, &format!("r/{i}"), b"v1", true);
    }
    let (mut syncer, _) = Client::connect(local(port), "syncer", false);
    syncer.subscribe(1, "sync/#", QoS::AtLeastOnce);
    drop(syncer);
    drop(w);
    std::fs::write(
        &conf,
        format!(
            "{plain}connection up\naddress 127.0.0.1:{up_port}\ntopic r/# out 1\n\
             remote_clientid gw.ret\nrestart_timeout 1\nnotifications false\n\
             bridge_attempt_unsubscribe false\n"
        ),
    )
    .unwrap();
    let upstream = TcpListener::bind(("127.0.0.1", up_port)).unwrap();
    let w = start_wrenmq(&conf, port);
    let mut link = accept(&upstream);
    link.handshake(false, false);
    let mut first: Vec<_> = (0..50)
        .flat_map(|_| upstream_until(&mut link, "v1"))
        .collect();
    first.sort();
    let mut want: Vec<_> = (0..50).map(|i| retained(&format!("r/{i}"), "v1")).collect();
    want.sort();
    assert_eq!(
        first, want,
        "the new bridge sends the retained set once, RETAIN kept"
    );

    // The link is cut (the upstream is gone: nothing listens); 2 of the 50 change.
    drop(link);
    drop(upstream);
    publish1(port, "r/3", b"v2", true);
    publish1(port, "r/7", b"v2", true);
    let upstream = TcpListener::bind(("127.0.0.1", up_port)).unwrap();
    let mut link = accept(&upstream);
    link.handshake(true, false);
    publish1(port, "r/end", b"end", false); // anything replayed comes before it
    assert_eq!(
        upstream_until(&mut link, "end"),
        [
            retained("r/3", "v2"),
            retained("r/7", "v2"),
            ("r/end".into(), "end".into(), false)
        ]
    );

    // Cut again, wrenmq killed and restarted during the outage, 2 more change. The
    // upstream's PUBACKs were read before the next connection's PUBLISH; once they are on
    // disk, nothing sent so far is due again (QoS 1 would allow a resend otherwise).
    drop(link);
    drop(upstream);
    publish1(port, "sync/x", b"s", false);
    drop(w);
    let _w = start_wrenmq(&conf, port);
    publish1(port, "r/10", b"v3", true);
    publish1(port, "r/20", b"v3", true);
    let upstream = TcpListener::bind(("127.0.0.1", up_port)).unwrap();
    let mut link = accept(&upstream);
    link.handshake(true, false);
    publish1(port, "r/end", b"end2", false);
    assert_eq!(
        upstream_until(&mut link, "end2"),
        [
            retained("r/10", "v3"),
            retained("r/20", "v3"),
            ("r/end".into(), "end2".into(), false)
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
