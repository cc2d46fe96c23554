//! Durable state over real restarts: a clean stop and start, and `kill -9` of the broker
//! binary under QoS 1 and QoS 2 load. The promise under test: a message whose PUBACK (or
//! PUBREC) the broker sent reaches the persistent subscriber after a restart; QoS 2 is
//! never delivered twice. Also: a second broker on the same data directory is refused
//! without touching it, and a restored session keeps its user name for ACL checks. And a
//! full disk (a file-size limit set on the running broker with `prlimit`): publishers are
//! paused within `journal_queue_bytes`, resume when there is space, and nothing is lost.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Got, TestBroker};
use wrenmq::config::Config;
use wrenmq::protocol::{Ack, Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

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

impl Drop for Proc {
    /// No broker outlives its test, even one that fails.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    wait_listening(child, addr)
}

/// Starts the binary with a configuration file (its listener on `port`).
fn start_with_config(config: &Path, port: u16) -> Proc {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wrenmq"))
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wrenmq");
    wait_listening(child, addr)
}

fn wait_listening(child: Child, addr: SocketAddr) -> Proc {
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

// ---- one broker per data directory -----------------------------------------------------

/// Every file in `dir` with its contents, sorted.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_second_broker_on_the_same_data_directory_exits_and_touches_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("locked");
    let mut first = start_binary(&dir, free_port());
    {
        let (mut sub, _) = Client::connect(first.addr, "locked-sub", false);
        sub.subscribe(1, "lk/#", QoS::AtLeastOnce);
        drop(sub);
        let (mut p, _) = Client::connect(first.addr, "locked-pub", true);
        p.publish("lk/queued", b"queued", QoS::AtLeastOnce, 1);
        assert_eq!(p.recv(), Some(Got::Puback(1)));
        p.send(&Packet::Publish(wrenmq::protocol::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "lk/kept",
            packet_id: NonZeroU16::new(2),
            properties: Properties::EMPTY,
            payload: b"retained",
        }));
        assert_eq!(p.recv(), Some(Got::Puback(2)));
    }
    // The data directory and its files are private to the broker's user.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    // The subscriber's close is a different socket from the publisher's: the broker may
    // journal its going offline after the PUBACKs above. Wait until the files stop
    // changing, so what the second broker must not touch is what the first one wrote.
    let mut before = contents(&dir);
    let settle = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = contents(&dir);
        if now == before || Instant::now() > settle {
            break;
        }
        before = now;
    }
    for (path, _) in &before {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }

    let second = Command::new(env!("CARGO_BIN_EXE_wrenmq"))
        .args(["-l", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second wrenmq");
    let mut second = Proc {
        child: second,
        addr: first.addr,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.child.kill();
            let _ = second.child.wait();
            let _ = first.child.kill();
            panic!("the second broker is still running on a locked directory");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    second
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "exits non-zero: {status:?}");
    assert!(
        stderr.contains(&dir.display().to_string()),
        "names the directory: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.child.id())),
        "names the holder's PID: {stderr}"
    );
    assert_eq!(
        contents(&dir),
        before,
        "the first broker's files are untouched"
    );

    // The first broker still serves, and its data survives its own restart.
    let (mut p, _) = Client::connect(first.addr, "locked-pub", true);
    p.publish("lk/after", b"after", QoS::AtLeastOnce, 3);
    assert_eq!(p.recv(), Some(Got::Puback(3)));
    drop(p);
    let port = first.addr.port();
    first.child.kill().expect("kill -9");
    let _ = first.child.wait();
    let mut first = start_binary(&dir, port);
    let (mut sub, present) = Client::connect(first.addr, "locked-sub", false);
    assert!(present, "the session survived");
    let mut got = Vec::new();
    for _ in 0..3 {
        match sub.recv() {
            Some(Got::Publish { payload, id, .. }) => {
                got.push(String::from_utf8(payload).unwrap());
                sub.send(&Packet::Puback(ack(id)));
            }
            other => panic!("expected a queued message, got {other:?}"),
        }
    }
    // lk/# also matched the retained message when it was published.
    assert_eq!(got, ["queued", "retained", "after"]);
    let (mut r, _) = Client::connect(first.addr, "locked-reader", true);
    r.subscribe(1, "lk/kept", QoS::AtMostOnce);
    assert!(
        matches!(r.recv(), Some(Got::Publish { retain: true, payload, .. }) if payload == b"retained")
    );
    let _ = first.child.kill();
    let _ = first.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- ACL identity across a restart ------------------------------------------------------

fn connect_as(addr: SocketAddr, client_id: &str, user: &str, clean: bool) -> (Client, bool) {
    let mut c = Client::open(addr);
    c.send(&Packet::Connect(Connect {
        version: ProtocolVersion::V311,
        clean_start: clean,
        keep_alive: 60,
        properties: Properties::EMPTY,
        client_id,
        will: None,
        username: Some(user),
        password: None,
        bridge: false,
    }));
    match c.recv() {
        Some(Got::Connack {
            session_present,
            code: 0,
        }) => (c, session_present),
        other => panic!("expected CONNACK accepted, got {other:?}"),
    }
}

#[test]
fn restored_session_keeps_its_user_for_the_acl_and_gets_its_qos1_messages() {
    let base = temp_dir("acl");
    let data = base.join("data");
    std::fs::create_dir_all(&base).unwrap();
    let acl = base.join("acl");
    // Only alice may read, only bob may write; anonymous clients may do neither.
    std::fs::write(
        &acl,
        "user alice\ntopic read acl/#\n\nuser bob\ntopic write acl/#\n",
    )
    .unwrap();
    let port = free_port();
    let config = base.join("wrenmq.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}\nacl_file {}\n",
            data.display(),
            acl.display()
        ),
    )
    .unwrap();
    let mut proc = start_with_config(&config, port);
    {
        let (mut sub, _) = connect_as(proc.addr, "acl-sub", "alice", false);
        sub.subscribe(1, "acl/#", QoS::AtLeastOnce);
        drop(sub);
        let (mut p, _) = connect_as(proc.addr, "acl-pub", "bob", true);
        p.publish("acl/before", b"before", QoS::AtLeastOnce, 1);
        assert_eq!(p.recv(), Some(Got::Puback(1)));
    }
    proc.child.kill().expect("kill -9");
    let _ = proc.child.wait();
    let mut proc = start_with_config(&config, port);
    // Routed to the restored, still offline session: checked against alice's rights.
    let (mut p, _) = connect_as(proc.addr, "acl-pub", "bob", true);
    p.publish("acl/after", b"after", QoS::AtLeastOnce, 2);
    assert_eq!(p.recv(), Some(Got::Puback(2)));
    drop(p);
    let (mut sub, present) = connect_as(proc.addr, "acl-sub", "alice", false);
    assert!(present);
    let mut got = Vec::new();
    sub.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while let Some(Got::Publish { payload, id, .. }) = sub.recv() {
        got.push(String::from_utf8(payload).unwrap());
        sub.send(&Packet::Puback(ack(id)));
    }
    assert_eq!(got, ["before", "after"], "nothing silently dropped");
    let _ = proc.child.kill();
    let _ = proc.child.wait();
    let _ = std::fs::remove_dir_all(&base);
}

// ---- a full disk ---------------------------------------------------------------------

/// `VmHWM` (peak resident set) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// Sets the soft file-size limit of process `pid` (`prlimit` from util-linux): writes
/// that would grow a file past it fail with EFBIG, as on a full disk.
fn set_file_size_limit(pid: u32, soft: &str) {
    let ok = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
        .expect("prlimit (util-linux) is needed by this test")
        .success();
    assert!(ok, "prlimit --fsize={soft} failed");
}

/// Waits for a broker log line containing `text`.
fn wait_log(lines: &std::sync::mpsc::Receiver<String>, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return,
            Ok(_) => {}
            Err(_) => panic!("no log line with {text:?}"),
        }
    }
}

#[test]
fn a_full_disk_pauses_publishers_in_bounded_memory_and_they_resume_without_loss() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Arc};

    const TOPICS: usize = 50;
    const MESSAGES: usize = 40_000; // ~40 MB: far more than the socket buffers hold
    const PAYLOAD: usize = 1000;
    let dir = temp_dir("diskfull");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("wrenmq.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}\njournal_queue_bytes 262144\nallow_anonymous true\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let start = || {
        // SIGXFSZ ignored (inherited across exec), so that a write past the file-size
        // limit fails with EFBIG instead of killing the process.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec \"$0\" -c \"$1\"")
            .arg(env!("CARGO_BIN_EXE_wrenmq"))
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wrenmq");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("broker: {line}");
                let _ = tx.send(line);
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        (wait_listening(child, addr), rx)
    };
    let payload = |i: usize| {
        let mut p = format!("{i:08}").into_bytes();
        p.resize(PAYLOAD, b'.');
        p
    };
    let retained = |addr: SocketAddr| -> Vec<(String, Vec<u8>)> {
        let (mut r, _) = Client::connect(addr, "reader", true);
        r.subscribe(1, "r/#", QoS::AtMostOnce);
        let mut got: Vec<(String, Vec<u8>)> = (0..TOPICS)
            .map(|_| match r.recv() {
                Some(Got::Publish {
                    topic,
                    payload,
                    retain: true,
                    ..
                }) => (topic, payload),
                other => panic!("expected a retained message, got {other:?}"),
            })
            .collect();
        got.sort();
        got
    };
    let mut expected: Vec<(String, Vec<u8>)> = (MESSAGES - TOPICS..MESSAGES)
        .map(|i| (format!("r/{}", i % TOPICS), payload(i)))
        .collect();
    expected.sort();

    let (broker, lines) = start();
    let pid = broker.child.id();
    let (mut publisher, _) = Client::connect(broker.addr, "retainer", true);
    let before = peak_rss(pid);
    set_file_size_limit(pid, "0"); // the disk is full from now on

    // A QoS 0 retained publisher, the kind nothing else slows down, as fast as it can.
    let sent = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let progress = Arc::clone(&sent);
    let writer = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            let mut bytes = Vec::new();
            Packet::Publish(wrenmq::protocol::Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: &format!("r/{}", i % TOPICS),
                packet_id: None,
                properties: Properties::EMPTY,
                payload: &payload(i),
            })
            .encode(ProtocolVersion::V311, &mut bytes);
            publisher.stream.write_all(&bytes).expect("publish");
            progress.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        // In order after them all: its PUBACK means every record before it is durable.
        publisher.publish("last", b"x", QoS::AtLeastOnce, 1);
        let acked = publisher.recv();
        let _ = done_tx.send(acked);
    });

    wait_log(&lines, "not reading from clients");
    // Let the socket buffers fill: the publisher stalls once nothing is read.
    let mut last = sent.load(Ordering::SeqCst);
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = sent.load(Ordering::SeqCst);
        if now == last || Instant::now() > settle {
            break;
        }
        last = now;
    }
    assert!(
        done_rx.try_recv().is_err(),
        "the publisher was not slowed down"
    );
    let total = (MESSAGES * (PAYLOAD + 10)) as u64;
    assert!(
        sent.load(Ordering::SeqCst) < total / 2,
        "the publisher got {} of {total} bytes out while the disk was full",
        sent.load(Ordering::SeqCst)
    );
    let growth = peak_rss(pid).saturating_sub(before);
    eprintln!(
        "disk full: publisher sent {} of {total} bytes, peak RSS grew by {growth} bytes",
        sent.load(Ordering::SeqCst)
    );
    assert!(
        growth < 16 << 20,
        "memory grew by {growth} bytes while the disk was full"
    );

    set_file_size_limit(pid, "unlimited"); // space again
    let acked = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the publisher finished once the disk had space");
    assert_eq!(acked, Some(Got::Puback(1)));
    writer.join().unwrap();
    wait_log(&lines, "reading from clients again");
    assert_eq!(
        retained(broker.addr),
        expected,
        "the last value of every topic"
    );

    // And all of it is on disk.
    drop(broker);
    let (broker, _lines) = start();
    assert_eq!(retained(broker.addr), expected, "after a restart");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
