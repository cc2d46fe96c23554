//! The bridge state machine (src/bridge/) driven over a real socket against Debian's
//! Mosquitto 2.0 with its stock limits (max_inflight_messages 20): the CONNECT with the
//! bridge bit is accepted, 500 QoS 2 messages go through without a single reconnect, in
//! order, and the retained "1" notification reaches the upstream. A thin driver stands in
//! for the net/ wiring (tested in `bridge_net.rs`); mosquitto_sub checks what arrived.
//!
//! Needs `mosquitto` and `mosquitto-clients` (scripts/test.sh installs them).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::procs::{free_port, start_mosquitto};
use wrenmq::bridge::{Action, Bridge, MemQueue, Phase, QueuedMessage, Settings, XorShift};
use wrenmq::config::{parse_with, MemSource};
use wrenmq::protocol::QoS;

const MESSAGES: u32 = 500;

/// Runs mosquitto_sub with `args` to completion (bounded by its own -W), returns stdout.
fn mosquitto_sub(port: u16, args: &[&str]) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("mosquitto_sub (apt install mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn settings(port: u16, version: &str) -> Settings {
    let text = format!(
        "connection test\naddress 127.0.0.1:{port}\ntopic out/# out 2\n\
         bridge_protocol_version {version}\nremote_clientid gw.test\n"
    );
    let src = MemSource([(PathBuf::from("/w.conf"), text)].into_iter().collect());
    let parsed = parse_with(&src, Path::new("/w.conf")).unwrap_or_else(|e| panic!("{e}"));
    Settings::new(parsed.config.bridges[0].clone(), "host", 20)
}

/// Drives `bridge` until its queue is empty and nothing is in flight; returns the number
/// of dials, the local notifications it published and the (open) uplink.
fn drive(bridge: &mut Bridge<MemQueue>, port: u16) -> (usize, Vec<Vec<u8>>, TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream: Option<TcpStream> = None;
    let mut dials = 0;
    let mut local = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "bridge did not drain: {:?}",
            bridge.phase()
        );
        let now = Instant::now();
        while let Some(action) = bridge.poll_action() {
            match action {
                Action::Dial { index } => {
                    assert_eq!(index, 0);
                    dials += 1;
                    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                    stream = Some(s);
                    bridge.handle_connected(now);
                }
                Action::Close => stream = None,
                Action::PublishLocal(m) => local.push(m.payload),
                other => panic!("unexpected {other:?}"),
            }
        }
        bridge.poll_transmit(&mut out);
        if let Some(s) = stream.as_mut() {
            if !out.is_empty() {
                s.write_all(&out).unwrap();
                out.clear();
            }
            match s.read(&mut buf) {
                Ok(0) => {
                    stream = None;
                    bridge.handle_closed(Instant::now());
                }
                Ok(n) => bridge.handle_bytes(Instant::now(), &buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        if bridge.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            bridge.handle_timeout(Instant::now());
        }
        if matches!(bridge.phase(), Phase::Up { .. })
            && wrenmq::bridge::OutboundQueue::is_empty(bridge.queue())
            && bridge.in_flight() == 0
        {
            if let Some(s) = stream {
                return (dials, local, s);
            }
        }
    }
}

fn run_against_stock_mosquitto(version: &str) {
    let dir = std::env::temp_dir().join(format!(
        "wrenmq-bridge-mosq-{version}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let _mosquitto = start_mosquitto(&dir, port);
    // A persistent subscriber session that collects what the bridge forwards.
    mosquitto_sub(
        port,
        &["-i", "collector", "-c", "-q", "2", "-t", "out/#", "-E"],
    );

    let mut queue = MemQueue::new(0, 0);
    for i in 0..MESSAGES {
        queue
            .push(QueuedMessage::new(
                &format!("out/{}", i % 7),
                i.to_string().as_bytes(),
                QoS::ExactlyOnce,
                false,
            ))
            .unwrap();
    }
    let mut bridge = Bridge::new(
        settings(port, version),
        queue,
        Box::new(XorShift::new(1)),
        Instant::now(),
    );
    let (dials, local, uplink) = drive(&mut bridge, port);
    assert_eq!(
        dials, 1,
        "a stock upstream must never make the bridge reconnect"
    );
    assert_eq!(
        local,
        [b"0".to_vec(), b"1".to_vec()],
        "local state notifications"
    );
    assert_eq!(bridge.limits().window, 20, "{version}");

    let got = mosquitto_sub(
        port,
        &[
            "-i",
            "collector",
            "-c",
            "-q",
            "2",
            "-t",
            "out/#",
            "-C",
            "500",
            "-W",
            "10",
        ],
    );
    let got: Vec<u32> = got.lines().map(|l| l.parse().unwrap()).collect();
    let want: Vec<u32> = (0..MESSAGES).collect();
    assert_eq!(got, want, "every message once, in order");
    let state = || {
        mosquitto_sub(
            port,
            &[
                "-t",
                "$SYS/broker/connection/gw.test/state",
                "-C",
                "1",
                "-W",
                "5",
            ],
        )
    };
    assert_eq!(
        state().trim(),
        "1",
        "retained notification upstream while up"
    );
    // The link dies without DISCONNECT: the upstream publishes our will.
    drop(uplink);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state().trim() != "0" {
        assert!(
            Instant::now() < deadline,
            "the will \"0\" was not published"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qos2_through_a_stock_mosquitto_v311_never_reconnects() {
    run_against_stock_mosquitto("mqttv311");
}

#[test]
fn qos2_through_a_stock_mosquitto_v5_honours_its_receive_maximum() {
    run_against_stock_mosquitto("mqttv50");
}
