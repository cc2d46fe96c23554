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

/// A broker process that never outlives its test, even one that fails: dropped, it is
/// killed and reaped. Derefs to the `Child` for signals and exit checks.
struct Broker(Child);

impl std::ops::Deref for Broker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Broker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(port: u16, env: &[(&str, &str)]) -> Broker {
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
    Broker(cmd.spawn().unwrap())
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

// ---- `user`: dropping root privileges after start-up ----------------------------------

/// A temporary directory (world-traversable, so that `nobody` can reach what is in it).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wrenmq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn_with_config(conf: &std::path::Path, env: &[(&str, &str)]) -> Broker {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrenmq"));
    cmd.arg("-c")
        .arg(conf)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Broker(cmd.spawn().unwrap())
}

/// The real, effective, saved and filesystem ids of every thread of `pid`.
fn thread_ids(pid: u32, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap()
            .to_string();
        out.push(line);
    }
    out
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Asserts that every entry directly in `dir` belongs to `uid`; returns how many there are.
fn assert_all_owned_by(dir: &std::path::Path, uid: u32) -> usize {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let owner = entry.metadata().unwrap().uid();
        assert_eq!(owner, uid, "{:?} belongs to uid {owner}", entry.path());
        n += 1;
    }
    n
}

#[test]
fn user_nobody_drops_root_after_binding() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let tmp = TempDir::new("user-drop");
    let sock = TempSocket::bind("user-drop-notify");
    {
        // systemd's notify socket is writable by every user; so must ours be.
        use std::os::unix::fs::PermissionsExt;
        let world = |p: &std::path::Path, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        world(sock.path.parent().unwrap(), 0o755);
        world(&sock.path, 0o777);
    }
    let port = free_port();
    let data = tmp.0.join("data"); // created by the broker, so given to nobody
    let conf = tmp.0.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser nobody\n\
             persistence_location {}\n",
            data.display()
        ),
    )
    .unwrap();
    let path = sock.path.to_str().unwrap().to_owned();
    let mut child = spawn_with_config(&conf, &[("NOTIFY_SOCKET", &path)]);
    let first = sock.recv();
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // READY=1 comes after the switch: every thread (the store's writer too) is nobody.
    let want_uid = format!("Uid:\t{0}\t{0}\t{0}\t{0}", nobody.uid);
    let want_gid = format!("Gid:\t{0}\t{0}\t{0}\t{0}", nobody.gid);
    for line in thread_ids(child.id(), "Uid:") {
        assert_eq!(line, want_uid);
    }
    for line in thread_ids(child.id(), "Gid:") {
        assert_eq!(line, want_gid);
    }
    // It serves, and its data directory is nobody's.
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    mqtt_connect(&mut client);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), nobody.uid.as_raw());
    // The start-up compaction's log and snapshot too: they used to be written by the
    // store's thread after the chown and before the switch, and stay root's.
    let files = assert_all_owned_by(&data, nobody.uid.as_raw());
    assert!(
        files >= 2,
        "expected a log and a snapshot, found {files} files"
    );
    signal(&child, "TERM");
    expect_closed(&mut client);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn user_owned_existing_data_directory_gets_the_files_root_made_at_start() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let tmp = TempDir::new("user-existing");
    let data = tmp.0.join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    let port = free_port();
    let conf = tmp.0.join("w.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser nobody\n\
             persistence_location {}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = spawn_with_config(&conf, &[]);
    let mut client = connect_retrying(port);
    mqtt_connect(&mut client);
    // Recovery and the start-up compaction ran as root, before the switch; a later start
    // as nobody (systemd User=) must still read every file.
    assert_all_owned_by(&data, nobody.uid.as_raw());
    signal(&child, "TERM");
    expect_closed(&mut client);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn user_that_cannot_run_the_broker_is_a_start_up_error() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = TempDir::new("user-bad");
    let port = free_port();
    // No such user: refused, as Mosquitto refuses it.
    let conf = tmp.0.join("a.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nuser wrenmq-no-such-user\npersistence false\n"),
    )
    .unwrap();
    let mut child = spawn_with_config(&conf, &[]);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("user wrenmq-no-such-user: no such user"),
        "{err}"
    );
    // An existing root-owned data directory nobody cannot write: refused at start-up,
    // not at the first compaction.
    let data = tmp.0.join("rootdata");
    std::fs::create_dir(&data).unwrap();
    let conf = tmp.0.join("b.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nuser nobody\npersistence_location {}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = spawn_with_config(&conf, &[]);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("not usable by user nobody") && err.contains("chown -R nobody:"),
        "{err}"
    );
}
