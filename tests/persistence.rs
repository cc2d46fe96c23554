//! Durable state over real restarts: a clean stop and start, and `kill -9` of the broker
//! binary under QoS 1 and QoS 2 load. The promise under test: a message whose PUBACK (or
//! PUBREC) the broker sent reaches the persistent subscriber after a restart; QoS 2 is
//! never delivered twice.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Got, TestBroker};
use wrenmq::config::Config;
use wrenmq::protocol::{Ack, Packet, Properties, QoS, ReasonCode};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wrenmq-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn persistent_config(dir: &Path) -> Config {
    Config {
        persistence: true,
        persistence_location: dir.to_path_buf(),
        ..Config::in_memory()
    }
}

fn ack(id: u16) -> Ack<'static> {
    Ack {
        packet_id: NonZeroU16::new(id).unwrap(),
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    }
}

#[test]
fn clean_restart_restores_sessions_queues_and_retained_messages() {
    let dir = temp_dir("restart");
    {
        let broker = TestBroker::with(persistent_config(&dir));
        let (mut sub, _) = Client::connect(broker.addr, "durable-sub", false);
        sub.subscribe(1, "d/#", QoS::AtLeastOnce);
        drop(sub);
        let (mut p, _) = Client::connect(broker.addr, "durable-pub", true);
        for (i, body) in ["one", "two", "three"].iter().enumerate() {
            p.publish(
                &format!("d/{i}"),
                body.as_bytes(),
                QoS::AtLeastOnce,
                i as u16 + 1,
            );
            assert_eq!(p.recv(), Some(Got::Puback(i as u16 + 1)));
        }
        p.send(&Packet::Publish(wrenmq::protocol::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "keep/me",
            packet_id: NonZeroU16::new(9),
            properties: Properties::EMPTY,
            payload: b"retained",
        }));
        assert_eq!(p.recv(), Some(Got::Puback(9)));
    } // TestBroker's drop stops the loop, which flushes the store.

    let broker = TestBroker::with(persistent_config(&dir));
    let (mut sub, present) = Client::connect(broker.addr, "durable-sub", false);
    assert!(present, "the session came back: session present = 1");
    let mut got = Vec::new();
    for _ in 0..3 {
        match sub.recv() {
            Some(Got::Publish {
                payload,
                id,
                qos: QoS::AtLeastOnce,
                ..
            }) => {
                got.push(String::from_utf8(payload).unwrap());
                sub.send(&Packet::Puback(ack(id)));
            }
            other => panic!("expected a queued message, got {other:?}"),
        }
    }
    assert_eq!(got, ["one", "two", "three"], "all delivered, in order");
    // The subscription itself survived: a new message is routed to it.
    let (mut p, _) = Client::connect(broker.addr, "durable-pub", true);
    p.publish("d/new", b"after", QoS::AtLeastOnce, 1);
    assert!(matches!(sub.recv(), Some(Got::Publish { topic, .. }) if topic == "d/new"));
    let (mut r, _) = Client::connect(broker.addr, "reader", true);
    r.subscribe(1, "keep/#", QoS::AtMostOnce);
    assert!(
        matches!(r.recv(), Some(Got::Publish { topic, retain: true, .. }) if topic == "keep/me")
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- kill -9 -------------------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Proc {
    child: Child,
    addr: SocketAddr,
}

fn start_binary(dir: &Path, port: u16) -> Proc {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wrenmq"))
        .args(["-l", &addr.to_string(), "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wrenmq");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc { child, addr }
}

/// A tiny xorshift generator: kill times vary per round but the test needs no crate.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The persistent subscriber's receiving side, kept across broker crashes like a real
/// client keeps its session: QoS 2 packet ids awaiting PUBREL are remembered so a
/// redelivered PUBLISH is recognised [MQTT-4.3.3-3].
struct Subscriber {
    awaiting_pubrel: HashSet<u16>,
    received: Vec<String>,
}

impl Subscriber {
    /// Reads until `idle` passes without traffic or the connection ends.
    fn drain(&mut self, c: &mut Client, idle: Duration) {
        c.stream.set_read_timeout(Some(idle)).unwrap();
        while let Some(got) = c.recv() {
            match got {
                Got::Publish {
                    payload, id, qos, ..
                } => {
                    let body = String::from_utf8(payload).unwrap();
                    match qos {
                        QoS::AtLeastOnce => {
                            self.received.push(body);
                            c.send(&Packet::Puback(ack(id)));
                        }
                        QoS::ExactlyOnce => {
                            if self.awaiting_pubrel.insert(id) {
                                self.received.push(body);
                            }
                            c.send(&Packet::Pubrec(ack(id)));
                        }
                        QoS::AtMostOnce => {}
                    }
                }
                Got::Pubrel(id) => {
                    self.awaiting_pubrel.remove(&id);
                    c.send(&Packet::Pubcomp(ack(id)));
                }
                _ => {}
            }
        }
    }
}

fn crash_rounds(qos: QoS, rounds: usize) {
    let dir = temp_dir(&format!("crash-q{}", qos as u8));
    let port = free_port();
    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (qos as u64);
    let mut sub = Subscriber {
        awaiting_pubrel: HashSet::new(),
        received: Vec::new(),
    };
    let mut acked: Vec<String> = Vec::new();
    let mut proc = start_binary(&dir, port);
    {
        let (mut c, _) = Client::connect(proc.addr, "crash-sub", false);
        c.subscribe(1, "crash/#", qos);
    }
    let mut n = 0u32;
    for round in 0..rounds {
        // Publish with one message in flight at a time until the broker is killed at a
        // random moment (or after 500 messages); record what the broker acknowledged (PUBACK, or PUBREC for QoS 2).
        let kill_after = Duration::from_millis(150 + next_random(&mut seed) % 400);
        let started = Instant::now();
        let (mut p, _) = Client::connect(proc.addr, &format!("crash-pub-{round}"), true);
        p.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut killed = false;
        // At most 500 per round: the offline subscriber's queue (1,000 by default) must not
        // overflow, or its documented drop policy would discard acknowledged messages.
        let mut sent = 0;
        while !killed {
            sent += 1;
            n += 1;
            let body = format!("m{n}");
            let pid = (n % 60_000 + 1) as u16;
            if started.elapsed() >= kill_after || sent == 500 {
                proc.child.kill().expect("kill -9");
                let _ = proc.child.wait();
                killed = true;
            }
            p.publish("crash/t", body.as_bytes(), qos, pid);
            match p.recv() {
                Some(Got::Puback(id)) | Some(Got::Pubrec(id)) if id == pid => {
                    acked.push(body);
                    if qos == QoS::ExactlyOnce {
                        p.send(&Packet::Pubrel(ack(pid)));
                        let _ = p.recv(); // PUBCOMP, or the connection is gone
                    }
                }
                _ => break, // the broker is gone
            }
        }
        proc = start_binary(&dir, port);
        let (mut c, present) = Client::connect(proc.addr, "crash-sub", false);
        assert!(
            present,
            "round {round}: the subscriber's session survived the crash"
        );
        sub.drain(&mut c, Duration::from_millis(500));
    }
    // One last clean drain: everything acknowledged must have arrived.
    let (mut c, _) = Client::connect(proc.addr, "crash-sub", false);
    sub.drain(&mut c, Duration::from_millis(500));
    let _ = proc.child.kill();
    let _ = proc.child.wait();

    let received: HashSet<&String> = sub.received.iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|m| !received.contains(m)).collect();
    assert!(!acked.is_empty(), "the test published nothing");
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    if qos == QoS::ExactlyOnce {
        assert_eq!(
            received.len(),
            sub.received.len(),
            "QoS 2 delivered a message twice"
        );
    }
    eprintln!(
        "{qos:?}: {} acknowledged, {} received over {rounds} crashes",
        acked.len(),
        sub.received.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_loses_no_acknowledged_qos1_message() {
    crash_rounds(QoS::AtLeastOnce, 6);
}

#[test]
fn kill_9_loses_no_acknowledged_qos2_message_and_never_duplicates_it() {
    crash_rounds(QoS::ExactlyOnce, 6);
}
