//! Smoke tests of the event loop over real loopback TCP.
//!
//! The broker is a stub for now (it answers nothing), so these check only what the loop
//! owns: accepting, EOF and reset handling, buffering input, and shutdown. Every wait is
//! bounded; a hung loop fails the test instead of hanging it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wrenmq::config::Config;
use wrenmq::net::{Server, ShutdownHandle};

const WAIT: Duration = Duration::from_secs(5);

/// A server on an ephemeral loopback port, running in its own thread.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    done: mpsc::Receiver<io::Result<()>>,
}

impl Running {
    fn start() -> Running {
        let config = Config {
            listeners: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Config::in_memory()
        };
        let server = Server::bind(config).expect("bind 127.0.0.1:0");
        let addrs = server.local_addrs();
        assert_eq!(addrs.len(), 1);
        assert_ne!(addrs[0].port(), 0, "port 0 is resolved");
        let handle = server.shutdown_handle();
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(server.run());
        });
        Running {
            addr: addrs[0],
            handle,
            done,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream
    }

    /// Asks for shutdown and waits (bounded) for `run` to return.
    fn stop(self) {
        self.handle.shutdown();
        match self.done.recv_timeout(WAIT) {
            Ok(result) => result.expect("run returned an error"),
            Err(e) => panic!("run did not return after shutdown: {e}"),
        }
    }
}

/// Reads until EOF; `Ok(0)` from the first read means the loop closed the connection
/// gracefully, which proves it had accepted it (an unaccepted connection is reset when the
/// listener goes away).
fn expect_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} bytes"),
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

#[test]
fn shutdown_makes_run_return() {
    Running::start().stop();
}

#[test]
fn shutdown_before_run_returns_at_once() {
    let config = Config {
        listeners: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        ..Config::in_memory()
    };
    let server = Server::bind(config).unwrap();
    let handle = server.shutdown_handle();
    handle.clone().shutdown();
    handle.shutdown(); // idempotent
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(server.run());
    });
    rx.recv_timeout(WAIT).unwrap().unwrap();
}

#[test]
fn connect_and_drop_many_clients_does_not_kill_the_loop() {
    let server = Running::start();
    for _ in 0..100 {
        drop(server.connect());
    }
    // Some say something first (a partial packet for the stub codec).
    for _ in 0..20 {
        let mut c = server.connect();
        c.write_all(&[0x10, 0x0c, 0x00]).unwrap();
    }
    let mut late = server.connect();
    // Let the loop accept it before shutting down.
    thread::sleep(Duration::from_millis(100));
    server.stop();
    expect_eof(&mut late);
}

#[test]
fn shutdown_closes_connected_clients() {
    let server = Running::start();
    let mut clients: Vec<TcpStream> = (0..5).map(|_| server.connect()).collect();
    clients[0].write_all(&[0x10]).unwrap();
    thread::sleep(Duration::from_millis(100));
    server.stop();
    for c in &mut clients[1..] {
        expect_eof(c);
    }
}

#[test]
fn large_input_is_read_across_turns() {
    // More than one read budget (256 KiB) from one client while another connects: the
    // loop must keep serving both and still stop on request.
    let server = Running::start();
    let mut big = server.connect();
    let chunk = vec![0x30u8; 64 * 1024];
    let writer = thread::spawn(move || {
        for _ in 0..8 {
            if big.write_all(&chunk).is_err() {
                break;
            }
        }
        big
    });
    let mut other = server.connect();
    let big = writer.join().unwrap();
    thread::sleep(Duration::from_millis(100));
    server.stop();
    expect_eof(&mut other);
    drop(big);
}
