//! The bridge on the loop (net/bridge.rs) against Debian's Mosquitto as the upstream:
//! QoS 1 messages published locally on `out` topics while the uplink is down, wrenmq
//! killed with SIGKILL during the outage and restarted, more published, then the upstream
//! comes up: every message arrives upstream once, in order.
//!
//! The upstream is reached through a gate (`common::proxy`, cut until the test restores
//! it; a plain forwarder after the in-flight test's stub upstream), so that the upstream
//! subscriber's session exists before the bridge connects. More faults: bridge_faults.rs.
//! Needs `mosquitto` and `mosquitto-clients` (scripts/test.sh installs them).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::procs::{free_port, mosquitto_bin, start_mosquitto, wait_listening, Killed};
use common::proxy::open_gate;
use common::proxy::FaultProxy;

fn start_wrenmq(conf: &Path, port: u16) -> Killed {
    common::procs::start_wrenmq(conf, port, 10)
}

/// Publishes `range` as QoS 1 on `topic` through one mosquitto_pub (one message per
/// line); it exits once every PUBACK arrived, so the messages are wrenmq's then.
fn publish(port: u16, topic: &str, qos: &str, range: std::ops::Range<u32>) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", qos, "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients)");
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in range {
            writeln!(stdin, "m{i:04}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success());
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wrenmq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bridge_forwards_what_was_queued_during_an_outage_and_a_kill_once_in_order() {
    outage_and_kill("1");
}

#[test]
fn bridge_qos2_forwards_what_was_queued_during_an_outage_and_a_kill_exactly_once() {
    outage_and_kill("2");
}

fn outage_and_kill(qos: &str) {
    let dir = temp_dir(&format!("bridge-net-q{qos}"));
    let (local, upstream) = (free_port(), free_port());
    let gate = FaultProxy::start_cut(upstream);
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}\n\
             connection up\naddress 127.0.0.1:{}\ntopic out/# out {qos}\n\
             remote_clientid gw.test\nrestart_timeout 1\n",
            dir.join("data").display(),
            gate.port()
        ),
    )
    .unwrap();

    // The uplink is down: wrenmq keeps what it acknowledged.
    let w = start_wrenmq(&conf, local);
    publish(local, "out/t", qos, 0..40);
    publish(local, "other/t", qos, 0..5); // not bridged
    drop(w); // SIGKILL during the outage
    let _w = start_wrenmq(&conf, local);
    publish(local, "out/t", qos, 40..60);

    // The upstream, with the subscriber's session ready, then the link.
    let _m = start_mosquitto(&dir, upstream);
    let sub = |extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &upstream.to_string()])
            .args(["-c", "-i", "upstream-sub", "-q", qos, "-t", "#"])
            .args(extra)
            .output()
            .expect("mosquitto_sub")
    };
    assert!(sub(&["-E"]).status.success(), "subscriber session created");
    gate.restore();
    let out = sub(&["-C", "60", "-W", "30", "-v"]);
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("$SYS"))
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..60).map(|i| format!("out/t m{i:04}")).collect();
    assert_eq!(got, want, "all 60 once, in order");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream that accepts one bridge, answers its CONNECT (and UNSUBSCRIBE) and then
/// acknowledges no PUBLISH; reports each one it swallowed. Its port is free again once it accepted.
fn black_hole_upstream(port: u16) -> std::sync::mpsc::Receiver<usize> {
    use std::io::Read;
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("upstream port");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut publishes = 0;
        while let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Whole packets: fixed header byte, remaining length (varint), body.
            loop {
                let (mut len, mut shift, mut at) = (0usize, 0, 1);
                let mut complete = false;
                while at < buf.len() && at <= 4 {
                    len |= usize::from(buf[at] & 0x7f) << shift;
                    shift += 7;
                    at += 1;
                    if buf[at - 1] & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                }
                if !complete || buf.len() < at + len {
                    break;
                }
                match buf[0] >> 4 {
                    1 => {
                        let _ = s.write_all(&[0x20, 0x02, 0x00, 0x00]); // CONNACK accepted
                    }
                    10 if len >= 2 => {
                        // UNSUBACK: the bridge unsubscribes its `out` topics first.
                        let _ = s.write_all(&[0xb0, 0x02, buf[at], buf[at + 1]]);
                    }
                    3 => {
                        publishes += 1;
                        let _ = tx.send(publishes);
                    }
                    _ => {}
                }
                buf.drain(..at + len);
            }
        }
    });
    rx
}

#[test]
fn bridge_resends_what_was_in_flight_when_killed_once_in_order() {
    let dir = temp_dir("bridge-net-inflight");
    let (local, gate, upstream) = (free_port(), free_port(), free_port());
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}\nconnection up\naddress 127.0.0.1:{gate}\n\
             topic out/# out 1\nremote_clientid gw.test\nrestart_timeout 1\n\
             notifications false\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    // An upstream that takes the window's worth (max_inflight_messages 20) and acks none.
    let swallowed = black_hole_upstream(gate);
    let w = start_wrenmq(&conf, local);
    publish(local, "out/t", "1", 0..50);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match swallowed.recv_timeout(left) {
            Ok(n) if n >= 20 => break,
            Ok(_) => {}
            Err(e) => panic!("the bridge did not fill its window: {e}"),
        }
    }
    drop(w); // SIGKILL with 20 messages in flight upstream
    let _w = start_wrenmq(&conf, local);

    let _m = start_mosquitto(&dir, upstream);
    let sub = |extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &upstream.to_string()])
            .args(["-c", "-i", "upstream-sub", "-q", "1", "-t", "out/#"])
            .args(extra)
            .output()
            .expect("mosquitto_sub")
    };
    assert!(sub(&["-E"]).status.success(), "subscriber session created");
    open_gate(gate, upstream);
    let out = sub(&["-C", "50", "-W", "30"]);
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..50).map(|i| format!("m{i:04}")).collect();
    assert_eq!(got, want, "all 50 once, in order");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files.
fn pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();
    write("ca.pem", ca_cert.pem());
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    write("server.pem", server.pem());
    write("server.key", server_key.serialize_pem());
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name = rcgen::DistinguishedName::new();
    client
        .distinguished_name
        .push(DnType::CommonName, "gateway");
    let client = client.signed_by(&client_key, &issuer).unwrap();
    write("client.pem", client.pem());
    write("client.key", client_key.serialize_pem());
}

#[test]
fn bridge_over_tls_with_a_client_certificate_reaches_mosquitto() {
    let dir = temp_dir("bridge-net-tls");
    pki(&dir);
    let (local, plain, tls) = (free_port(), free_port(), free_port());
    // Mosquitto: a plain listener for the test's subscriber, a TLS one that requires a
    // client certificate for the bridge.
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\n\
             keyfile {d}/server.key\nrequire_certificate true\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(mosquitto_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto");
    let _m = Killed(child);
    wait_listening(plain, "mosquitto", 10);
    wait_listening(tls, "mosquitto TLS", 10);
    let sub = |extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &plain.to_string()])
            .args(["-c", "-i", "upstream-sub", "-q", "1", "-t", "out/#"])
            .args(extra)
            .output()
            .expect("mosquitto_sub")
    };
    assert!(sub(&["-E"]).status.success(), "subscriber session created");

    let wconf = dir.join("w.conf");
    std::fs::write(
        &wconf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {d}/data\nconnection up\naddress localhost:{tls}\n\
             topic out/# out 1\nremote_clientid gw.tls\nrestart_timeout 1\n\
             bridge_cafile {d}/ca.pem\nbridge_certfile {d}/client.pem\n\
             bridge_keyfile {d}/client.key\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let _w = start_wrenmq(&wconf, local);
    publish(local, "out/t", "1", 0..30);
    let out = sub(&["-C", "30", "-W", "30"]);
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("m{i:04}")).collect();
    assert_eq!(got, want, "all 30 over TLS, once, in order");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bridge_in_topics_reach_a_local_persistent_subscriber() {
    let dir = temp_dir("bridge-net-in");
    let (local, upstream) = (free_port(), free_port());
    let _m = start_mosquitto(&dir, upstream);
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}\nconnection up\naddress 127.0.0.1:{upstream}\n\
             topic # in 1 down/ up/\nremote_clientid gw.in\nrestart_timeout 1\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let _w = start_wrenmq(&conf, local);
    let local_sub = |extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &local.to_string()])
            .args(["-c", "-i", "local-sub", "-q", "1", "-t", "down/#"])
            .args(extra)
            .output()
            .expect("mosquitto_sub")
    };
    assert!(local_sub(&["-E"]).status.success(), "local session created");
    // The bridge's subscription upstream is in place once its state is "1" there.
    let up = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &upstream.to_string()])
        .args([
            "-t",
            "$SYS/broker/connection/gw.in/state",
            "-C",
            "1",
            "-W",
            "20",
        ])
        .output()
        .expect("mosquitto_sub");
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), "1", "bridge up");
    // Published upstream under up/, delivered locally under down/.
    publish(upstream, "up/t", "1", 0..25);
    let out = local_sub(&["-C", "25", "-W", "30", "-v"]);
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..25).map(|i| format!("down/t m{i:04}")).collect();
    assert_eq!(got, want, "all 25 once, in order, remapped");
    let _ = std::fs::remove_dir_all(&dir);
}

/// QoS 0 on `out` topics goes up while the link is up, as in Mosquitto (the bridge's
/// local session never has a connection, so an offline session's QoS 0 rule, drop, must
/// not apply to it): published at QoS 0 on a QoS 0 topic line and on a QoS 1 one.
#[test]
fn bridge_forwards_qos0_while_the_link_is_up() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("bridge-net-qos0");
    let (local, upstream) = (free_port(), free_port());
    let _m = start_mosquitto(&dir, upstream);
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}\nconnection up\naddress 127.0.0.1:{upstream}\n\
             topic zero/# out 0\ntopic one/# out 1\nremote_clientid gw.q0\nrestart_timeout 1\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let _w = start_wrenmq(&conf, local);
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &upstream.to_string()])
        .args(["-t", "zero/#", "-t", "one/#", "-v", "-W", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Probe until the subscriber and the bridge are both in place.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "no probe went through the bridge"
        );
        publish(local, "zero/probe", "0", 0..1);
        if rx
            .recv_timeout(Duration::from_millis(200))
            .is_ok_and(|l| l.starts_with("zero/probe"))
        {
            break;
        }
    }
    publish(local, "zero/t", "0", 0..20);
    publish(local, "one/t", "0", 0..20);
    publish(local, "zero/end", "0", 0..1);
    let mut got = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        if line.starts_with("zero/end") {
            break;
        }
        if !line.starts_with("zero/probe") {
            got.push(line);
        }
    }
    let _ = sub.kill();
    let _ = sub.wait();
    let want: Vec<String> = (0..20)
        .map(|i| format!("zero/t m{i:04}"))
        .chain((0..20).map(|i| format!("one/t m{i:04}")))
        .collect();
    assert_eq!(got, want, "QoS 0 forwarded while the link is up, in order");
    let _ = std::fs::remove_dir_all(&dir);
}
