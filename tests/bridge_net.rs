//! The bridge on the loop (net/bridge.rs) against Debian's Mosquitto as the upstream:
//! QoS 1 messages published locally on `out` topics while the uplink is down, wrenmq
//! killed with SIGKILL during the outage and restarted, more published, then the upstream
//! comes up: every message arrives upstream once, in order.
//!
//! The upstream is reached through a gate (a TCP forwarder the test opens when it is
//! ready), so that the upstream subscriber's session exists before the bridge connects.
//! Needs `mosquitto` and `mosquitto-clients` (scripts/test.sh installs them).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mosquitto_bin() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

fn start_mosquitto(dir: &Path, port: u16) -> Killed {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = Command::new(mosquitto_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (apt install mosquitto, or scripts/test.sh)");
    let guard = Killed(child);
    wait_listening(port, "mosquitto");
    guard
}

fn start_wrenmq(conf: &Path, port: u16) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_wrenmq"))
        .arg("-c")
        .arg(conf)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wrenmq");
    let guard = Killed(child);
    wait_listening(port, "wrenmq");
    guard
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

/// A forwarder from 127.0.0.1:`from` to 127.0.0.1:`to`, for the life of the process.
fn open_gate(from: u16, to: u16) {
    let listener = TcpListener::bind(("127.0.0.1", from)).expect("gate port");
    std::thread::spawn(move || {
        for down in listener.incoming().flatten() {
            let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut d, mut u) = (down, up);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d, &mut u);
                let _ = u.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut u2, &mut d2);
                let _ = d2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
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
    let (local, gate, upstream) = (free_port(), free_port(), free_port());
    let conf = dir.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {local} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}\n\
             connection up\naddress 127.0.0.1:{gate}\ntopic out/# out {qos}\n\
             remote_clientid gw.test\nrestart_timeout 1\n",
            dir.join("data").display()
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
    open_gate(gate, upstream);
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
