//! How the bridge reaches its upstream (net/bridge/): host names resolved off the loop,
//! `bridge_bind_address`, and SIGHUP restarting only the bridges whose block changed.
//!
//! The upstream is a stub on 127.0.0.1 (the crate's codec, one thread per connection)
//! that acknowledges everything and reports what it saw, with the connection it came on
//! and the peer's address: so a test can see a reconnect, or its absence, and the source
//! address. Everything listens and connects on loopback only. Publishing locally needs
//! `mosquitto-clients` (scripts/test.sh installs them).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

mod common;
use common::procs::{free_port, wait_listening, Killed};
use wrenmq::protocol::{decode, Packet, ProtocolVersion, Status};

/// What the stub upstream saw on its connection number `conn` (1, 2, ... in accept
/// order).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Connect { client_id: String, peer: IpAddr },
    Publish { topic: String, payload: String },
    Disconnect,
    Closed,
}

struct Upstream {
    port: u16,
    seen: Receiver<(usize, Seen)>,
    /// Events not consumed yet. Connections report from their own threads, so a new
    /// connection's CONNECT may come before the old one's DISCONNECT: an `expect` for one
    /// leaves the others here for the next.
    backlog: RefCell<VecDeque<(usize, Seen)>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("stub port");
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for (conn, s) in listener.incoming().flatten().enumerate() {
                let tx = tx.clone();
                std::thread::spawn(move || serve(conn + 1, s, tx));
            }
        });
        Upstream {
            port,
            seen,
            backlog: RefCell::default(),
        }
    }

    /// The first event matching `want` (others stay in the backlog), within 20 s.
    fn expect(&self, what: &str, want: impl Fn(usize, &Seen) -> bool) -> (usize, Seen) {
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(|(c, s)| want(*c, s)) {
            return backlog.remove(i).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok((conn, s)) if want(conn, &s) => return (conn, s),
                Ok(other) => backlog.push_back(other),
                Err(_) => panic!("upstream never saw {what}; saw {backlog:?}"),
            }
        }
    }

    /// The first PUBLISH outside `$SYS` (state notifications), with its connection.
    fn publish(&self) -> (usize, String, String) {
        let (conn, s) = self.expect(
            "a PUBLISH",
            |_, s| matches!(s, Seen::Publish { topic, .. } if !topic.starts_with("$SYS")),
        );
        match s {
            Seen::Publish { topic, payload } => (conn, topic, payload),
            _ => unreachable!(),
        }
    }

    /// Everything seen and not consumed so far (nothing is waited for).
    fn drain(&self) -> Vec<(usize, Seen)> {
        let mut backlog = self.backlog.borrow_mut();
        backlog.extend(self.seen.try_iter());
        backlog.drain(..).collect()
    }
}

/// One connection of the stub: CONNACK, SUBACK, UNSUBACK, PUBACK, PUBREC/PUBCOMP and
/// PINGRESP, each event reported.
fn serve(conn: usize, mut s: TcpStream, tx: Sender<(usize, Seen)>) {
    let peer = s.peer_addr().map(|a| a.ip()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                let _ = tx.send((conn, Seen::Closed));
                return;
            }
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let (reply, seen, used) = match decode(&buf, Some(ProtocolVersion::V311), 1 << 20) {
                Ok(Status::Complete((p, used))) => {
                    let (reply, seen): (Vec<u8>, Option<Seen>) = match p {
                        Packet::Connect(c) => (
                            vec![0x20, 2, 0, 0],
                            Some(Seen::Connect {
                                client_id: c.client_id.to_string(),
                                peer,
                            }),
                        ),
                        Packet::Subscribe(sub) => {
                            let id = sub.packet_id.get().to_be_bytes();
                            let n = sub.filters.len();
                            let mut r = vec![0x90, 2 + n as u8, id[0], id[1]];
                            r.extend(sub.filters.iter().map(|(_, o)| o.qos as u8));
                            (r, None)
                        }
                        Packet::Unsubscribe(u) => {
                            let id = u.packet_id.get().to_be_bytes();
                            (vec![0xb0, 2, id[0], id[1]], None)
                        }
                        Packet::Publish(p) => {
                            let reply = match p.packet_id.map(|i| i.get().to_be_bytes()) {
                                None => vec![],
                                Some(id) if p.qos as u8 == 1 => vec![0x40, 2, id[0], id[1]],
                                Some(id) => vec![0x50, 2, id[0], id[1]],
                            };
                            let seen = Seen::Publish {
                                topic: p.topic.to_string(),
                                payload: String::from_utf8_lossy(p.payload).into_owned(),
                            };
                            (reply, Some(seen))
                        }
                        Packet::Pubrel(a) => {
                            let id = a.packet_id.get().to_be_bytes();
                            (vec![0x70, 2, id[0], id[1]], None)
                        }
                        Packet::Pingreq => (vec![0xd0, 0], None),
                        Packet::Disconnect(_) => (vec![], Some(Seen::Disconnect)),
                        _ => (vec![], None),
                    };
                    (reply, seen, used)
                }
                Ok(Status::Partial { .. }) => break,
                Err(e) => panic!("stub upstream: undecodable packet: {e:?}"),
            };
            buf.drain(..used);
            if let Some(seen) = seen {
                let _ = tx.send((conn, seen));
            }
            if !reply.is_empty() && s.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wrenmq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Publishes one QoS 1 message locally; mosquitto_pub exits once it is acknowledged.
fn publish(port: u16, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-t", topic, "-m", payload])
        .stdout(Stdio::null())
        .status()
        .expect("mosquitto_pub (apt install mosquitto-clients)");
    assert!(ok.success(), "publish {topic}");
}

/// Waits (at most 20 s) until the log file contains `text`; returns the log.
fn wait_log(log: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = std::fs::read_to_string(log).unwrap_or_default();
        if s.contains(text) {
            return s;
        }
        assert!(Instant::now() < deadline, "log never said {text:?}:\n{s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// wrenmq's binary on `conf` (its listener on 127.0.0.1:`port`), logging at info level
/// (to the file the test configures): the reload's lines are info.
fn start_wrenmq(conf: &Path, port: u16) -> Killed {
    let guard = spawn_wrenmq(conf);
    wait_listening(port, "wrenmq", 10);
    guard
}

/// [`start_wrenmq`] without connecting to it: nothing wakes its loop but the bridges.
fn spawn_wrenmq(conf: &Path) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_wrenmq"))
        .arg("-c")
        .arg(conf)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wrenmq");
    Killed(child)
}

fn sighup(w: &Killed) {
    let ok = Command::new("kill")
        .args(["-HUP", &w.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// The bridge block every test uses, to `address`.
fn bridge(name: &str, address: &str, topic: &str, extra: &str) -> String {
    format!(
        "connection {name}\naddress {address}\ntopic {topic} out 1\nremote_clientid gw.{name}\n\
         try_private false\nrestart_timeout 1\n{extra}"
    )
}

/// A host name other than the `localhost` literal that resolves to this machine's
/// loopback only, 127.0.0.1 among it: the machine's own name (Debian's /etc/hosts maps
/// it to 127.0.1.1, which is loopback too, so 127.0.0.1 is checked), else `localhost`.
fn loopback_name() -> String {
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    for name in [own.trim(), "localhost"] {
        let Ok(addrs) = (name, 1).to_socket_addrs() else {
            continue;
        };
        let addrs: Vec<SocketAddr> = addrs.collect();
        if !name.is_empty()
            && addrs.iter().all(|a| a.ip().is_loopback())
            && addrs.iter().any(|a| a.ip() == IpAddr::from([127, 0, 0, 1]))
        {
            return name.to_string();
        }
    }
    panic!("neither the host name nor localhost resolves to 127.0.0.1");
}

#[test]
fn bridge_dials_a_host_name_and_survives_one_that_does_not_resolve() {
    let dir = temp_dir("bridge-uplink-dns");
    let up = Upstream::start();
    let local = free_port();
    let log = dir.join("w.log");
    let name = loopback_name();
    // `named` fails over from a name that never resolves (RFC 6761 `.invalid`) to one
    // that does; `lost` has only the unresolvable one and keeps retrying.
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest file {}\n{}{}",
            log.display(),
            bridge(
                "named",
                &format!("nonexistent.invalid:{p} {name}:{p}", p = up.port),
                "out/#",
                "notifications false\n"
            ),
            bridge("lost", "nonexistent.invalid:1883", "lost/#", ""),
        ),
    )
    .unwrap();
    let _w = start_wrenmq(&conf, local);
    let (_, c) = up.expect(
        "the bridge's CONNECT",
        |_, s| matches!(s, Seen::Connect { client_id, .. } if client_id == "gw.named"),
    );
    assert_eq!(
        c,
        Seen::Connect {
            client_id: "gw.named".into(),
            peer: IpAddr::from([127, 0, 0, 1])
        }
    );
    publish(local, "out/t", "via-name");
    assert_eq!(up.publish().1, "out/t");
    // Both failures are logged with the host; the broker goes on serving its clients.
    wait_log(&log, "bridge named: cannot resolve nonexistent.invalid");
    wait_log(&log, "bridge lost: cannot resolve nonexistent.invalid");
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &local.to_string()])
        .args(["-t", "local/t", "-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let sub = Killed(sub);
    // Retained, so it does not matter whether the subscriber is in yet.
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &local.to_string()])
        .args(["-t", "local/t", "-m", "served", "-r"])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut out = String::new();
    let mut child = sub;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out.trim(), "served");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bridge_bind_address_is_the_source_address_upstream() {
    let dir = temp_dir("bridge-uplink-bind");
    let up = Upstream::start();
    let local = free_port();
    let conf = dir.join("w.conf");
    let to = format!("127.0.0.1:{}", up.port);
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence false\n{}{}",
            bridge("plain", &to, "a/#", "notifications false\n"),
            // Linux routes all of 127/8 to the loopback interface.
            bridge("bound", &to, "b/#", "bridge_bind_address 127.0.0.2\n"),
        ),
    )
    .unwrap();
    // Not connected to: the bridges dial at start-up without an event to wake the loop
    // (regression: they waited for one, or for their 60 s connect timeout).
    let _w = spawn_wrenmq(&conf);
    let mut peers = Vec::new();
    while peers.len() < 2 {
        let (_, s) = up.expect("two CONNECTs", |_, s| matches!(s, Seen::Connect { .. }));
        if let Seen::Connect { client_id, peer } = s {
            peers.push((client_id, peer));
        }
    }
    peers.sort();
    assert_eq!(
        peers,
        [
            ("gw.bound".to_string(), IpAddr::from([127, 0, 0, 2])),
            ("gw.plain".to_string(), IpAddr::from([127, 0, 0, 1])),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_starts_restarts_and_stops_only_the_bridges_whose_block_changed() {
    let dir = temp_dir("bridge-uplink-reload");
    let (a, b) = (Upstream::start(), Upstream::start());
    let local = free_port();
    let log = dir.join("w.log");
    let conf = dir.join("w.conf");
    let head = format!(
        "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\n\
         persistence_location {}\nlog_dest file {}\n",
        dir.join("data").display(),
        log.display()
    );
    let block_a = bridge("a", &format!("127.0.0.1:{}", a.port), "a/#", "");
    let write = |blocks: &str| std::fs::write(&conf, format!("{head}{blocks}")).unwrap();
    write(&block_a);
    let w = start_wrenmq(&conf, local);
    a.expect("a's CONNECT", |c, s| {
        c == 1 && matches!(s, Seen::Connect { .. })
    });
    publish(local, "a/t", "1");
    assert_eq!(a.publish(), (1, "a/t".into(), "1".into()));

    // Added: b connects and forwards; a's link is the same connection.
    let b_block = |topic| bridge("b", &format!("127.0.0.1:{}", b.port), topic, "");
    write(&format!("{block_a}{}", b_block("b/#")));
    sighup(&w);
    b.expect("b's CONNECT", |c, s| {
        c == 1 && matches!(s, Seen::Connect { .. })
    });
    publish(local, "b/t", "2");
    assert_eq!(b.publish(), (1, "b/t".into(), "2".into()));
    publish(local, "a/t", "3");
    assert_eq!(a.publish(), (1, "a/t".into(), "3".into()));

    // Changed (its topic line, and moved above a in the file): b says "0" and
    // DISCONNECTs, then comes back on a new connection forwarding the new topic only.
    write(&format!("{}{block_a}", b_block("c/#")));
    sighup(&w);
    b.expect("b's \"0\"", |c, s| {
        c == 1
            && matches!(s, Seen::Publish { topic, payload }
                if topic == "$SYS/broker/connection/gw.b/state" && payload == "0")
    });
    b.expect("b's DISCONNECT", |c, s| c == 1 && *s == Seen::Disconnect);
    b.expect("b's new CONNECT", |c, s| {
        c == 2 && matches!(s, Seen::Connect { .. })
    });
    publish(local, "b/t", "4"); // no longer bridged: were it sent, it would come first
    publish(local, "c/t", "5");
    assert_eq!(b.publish(), (2, "c/t".into(), "5".into()));
    // a was left alone: still its first connection, never disconnected.
    publish(local, "a/t", "6");
    assert_eq!(a.publish(), (1, "a/t".into(), "6".into()));
    let a_seen = a.drain();
    assert!(
        a_seen
            .iter()
            .all(|(c, s)| *c == 1 && !matches!(s, Seen::Disconnect | Seen::Closed)),
        "{a_seen:?}"
    );

    // A configuration with an error changes nothing and says where the error is.
    write(&format!("{}{block_a}topic x/# sideways\n", b_block("c/#")));
    sighup(&w);
    let text = wait_log(&log, "reload failed, keeping the current configuration");
    // The file, the line (5 + 6 + 6 + 1) and the key.
    let at = format!("{}:18: topic", conf.display());
    assert!(text.contains(&at), "{text}");
    publish(local, "c/t", "7");
    assert_eq!(b.publish(), (2, "c/t".into(), "7".into()));

    // Removed: a DISCONNECTs and stays away; its session keeps what it held.
    write(&b_block("c/#"));
    sighup(&w);
    a.expect("a's DISCONNECT", |c, s| c == 1 && *s == Seen::Disconnect);
    wait_log(&log, "bridge a: removed by the reload: stopped");
    wait_log(&log, "its local session");
    publish(local, "c/t", "8");
    assert_eq!(b.publish(), (2, "c/t".into(), "8".into()));
    let a_seen = a.drain();
    assert!(
        !a_seen
            .iter()
            .any(|(_, s)| matches!(s, Seen::Connect { .. })),
        "{a_seen:?}"
    );
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_restarting_a_changed_bridge_keeps_what_it_had_queued() {
    let dir = temp_dir("bridge-uplink-requeue");
    let up = Upstream::start();
    let (local, dead) = (free_port(), free_port());
    let conf = dir.join("w.conf");
    let write = |port: u16| {
        std::fs::write(
            &conf,
            format!(
                "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}\n{}",
                dir.join("data").display(),
                bridge(
                    "q",
                    &format!("127.0.0.1:{port}"),
                    "q/#",
                    "notifications false\n"
                ),
            ),
        )
        .unwrap()
    };
    // Nothing listens on `dead`: what is published waits in the bridge's session.
    write(dead);
    let w = start_wrenmq(&conf, local);
    for i in 0..3 {
        publish(local, "q/t", &i.to_string());
    }
    // The upstream's address changes: the restarted bridge sends the queue, in order.
    write(up.port);
    sighup(&w);
    let got: Vec<(usize, String, String)> = (0..3).map(|_| up.publish()).collect();
    let want: Vec<(usize, String, String)> =
        (0..3).map(|i| (1, "q/t".into(), i.to_string())).collect();
    assert_eq!(got, want);
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}
