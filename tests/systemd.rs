//! The binary as systemd runs it: SIGTERM/SIGINT stop it cleanly with exit code 0, and the
//! `sd_notify` protocol (READY=1, WATCHDOG=1, STOPPING=1) on a fake `$NOTIFY_SOCKET`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn spawn(port: u16, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrenmq"));
    // No persistence: these tests run in parallel, and one data directory admits one
    // broker at a time.
    cmd.args(["-l", &format!("127.0.0.1:{port}"), "--no-persistence"])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("broker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn connect_retrying(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// CONNECT (3.1.1, clean session, client id "sd"), and expect CONNACK accepted.
fn mqtt_connect(stream: &mut TcpStream) {
    stream
        .write_all(&[
            0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02,
            b's', b'd',
        ])
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
}

/// Reads until EOF; a reset counts as closed too, but the broker should close cleanly.
fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {:02x?}", &buf[..n]),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

#[test]
fn sigterm_and_sigint_close_clients_and_exit_zero() {
    for sig in ["TERM", "INT"] {
        let port = free_port();
        let mut child = spawn(port, &[]);
        let mut client = connect_retrying(port);
        mqtt_connect(&mut client);
        signal(&child, sig);
        expect_closed(&mut client);
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIG{sig}: {status}");
        // The listener is gone too.
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "SIG{sig}");
    }
}

struct TempSocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl TempSocket {
    fn bind(name: &str) -> TempSocket {
        let dir = std::env::temp_dir().join(format!("wrenmq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        TempSocket { path, socket }
    }

    fn recv(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self.socket.recv(&mut buf).expect("notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for TempSocket {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn notify_socket_gets_ready_watchdog_and_stopping() {
    let sock = TempSocket::bind("notify");
    let port = free_port();
    let path = sock.path.to_str().unwrap().to_owned();
    // 100 ms watchdog: WATCHDOG=1 every 50 ms.
    let mut child = spawn(
        port,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "100000")],
    );

    let first = sock.recv();
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first message: {first:?}"
    );
    // READY=1 promises that the listener accepts: no retrying here.
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("accepting after READY=1");
    mqtt_connect(&mut client);

    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(sock.recv(), "WATCHDOG=1");
    }
    // Five pings at 50 ms: well under the 10 s read timeout, well over a busy loop.
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );

    signal(&child, "TERM");
    let mut got = sock.recv();
    while got == "WATCHDOG=1" {
        got = sock.recv();
    }
    assert_eq!(got, "STOPPING=1");
    expect_closed(&mut client);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn malformed_notify_variables_do_not_stop_the_broker() {
    let port = free_port();
    let mut child = spawn(
        port,
        &[
            ("NOTIFY_SOCKET", "@"),
            ("WATCHDOG_USEC", "soon"),
            ("WATCHDOG_PID", "-1"),
        ],
    );
    let mut client = connect_retrying(port);
    mqtt_connect(&mut client);
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
}
