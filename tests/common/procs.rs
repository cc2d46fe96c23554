//! Brokers as child processes (wrenmq's binary, Debian's mosquitto), killed when their
//! guard is dropped so that no broker outlives a failed test.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port, never one this test binary handed out before (the kernel may
/// give the same port to two binds in a row once the first socket is closed).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits (at most `secs`) until something accepts on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn mosquitto_bin() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// A stock Mosquitto on 127.0.0.1:`port` (only the listener, anonymous access and no
/// persistence set), its config written into `dir`.
pub fn start_mosquitto(dir: &Path, port: u16) -> Killed {
    start_mosquitto_with(dir, port, "")
}

/// As [`start_mosquitto`], with `extra` config lines; the file is named after the port,
/// so several can run from one directory.
pub fn start_mosquitto_with(dir: &Path, port: u16, extra: &str) -> Killed {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}"),
    )
    .expect("write mosquitto.conf");
    let child = Command::new(mosquitto_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (apt install mosquitto, or scripts/test.sh)");
    let guard = Killed(child);
    wait_listening(port, "mosquitto", 10);
    guard
}

/// wrenmq's binary with `conf` (its listener on 127.0.0.1:`port`), logging warnings (or
/// what `WRENMQ_TEST_LOG` says, e.g. `info`, when debugging a test) to the test's stderr; waits at most `secs` for the listener (recovery of a large store takes
/// a while).
pub fn start_wrenmq(conf: &Path, port: u16, secs: u64) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_wrenmq"))
        .arg("-c")
        .arg(conf)
        .env(
            "RUST_LOG",
            std::env::var("WRENMQ_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wrenmq");
    let guard = Killed(child);
    wait_listening(port, "wrenmq", secs);
    guard
}
