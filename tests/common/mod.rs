//! Shared helpers for the whole-broker tests: an in-process server on a loopback port and
//! a small blocking MQTT client built on the crate's own codec (raw bytes stay available
//! for malformed input).

#![allow(dead_code)]

pub mod procs;
pub mod proxy;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wrenmq::config::Config;
use wrenmq::net::{Server, ShutdownHandle};
use wrenmq::protocol::{
    decode, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Status, Subscribe,
    SubscriptionOptions,
};

/// A broker running on its own thread, stopped when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestBroker {
    pub fn start() -> TestBroker {
        TestBroker::with(Config::in_memory())
    }

    pub fn with(mut config: Config) -> TestBroker {
        config.listeners = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
        let server = Server::bind(config).expect("bind loopback");
        let addr = server.local_addrs()[0];
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            server.run().expect("event loop");
        });
        TestBroker {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An owned packet as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Connack {
        session_present: bool,
        code: u8,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        dup: bool,
        id: u16,
    },
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    Suback(u16, Vec<u8>),
    Unsuback(u16),
    Pingresp,
    Other(String),
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub const TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub fn open(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens a connection and completes CONNECT/CONNACK; returns the client and the
    /// CONNACK's session-present flag.
    pub fn connect(addr: SocketAddr, client_id: &str, clean: bool) -> (Client, bool) {
        let mut c = Client::open(addr);
        c.send(&Packet::Connect(Connect {
            version: ProtocolVersion::V311,
            clean_start: clean,
            keep_alive: 60,
            properties: Properties::EMPTY,
            client_id,
            will: None,
            username: None,
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

    pub fn send(&mut self, p: &Packet<'_>) {
        let mut bytes = Vec::new();
        p.encode(ProtocolVersion::V311, &mut bytes);
        self.stream.write_all(&bytes).expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn subscribe(&mut self, id: u16, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: NonZeroU16::new(id).expect("non-zero id"),
            properties: Properties::EMPTY,
            filters: vec![(
                filter,
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            )],
        }));
        match self.recv() {
            Some(Got::Suback(got, codes)) if got == id && codes == [qos as u8] => {}
            other => panic!("expected SUBACK {id}, got {other:?}"),
        }
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, id: u16) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: NonZeroU16::new(id),
            properties: Properties::EMPTY,
            payload,
        }));
    }

    /// The next packet, or `None` if the broker closed the connection (or nothing came
    /// within the timeout).
    pub fn recv(&mut self) -> Option<Got> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Status::Complete((p, n))) =
                decode(&self.buf, Some(ProtocolVersion::V311), u32::MAX)
            {
                let got = own(p);
                self.buf.drain(..n);
                return Some(got);
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// True if the broker closes the connection (EOF or reset) within the timeout, having
    /// sent nothing more than `allowed` bytes first.
    pub fn expect_closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return false
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        false
    }
}

pub fn own(p: Packet<'_>) -> Got {
    match p {
        Packet::Connack(c) => Got::Connack {
            session_present: c.session_present,
            code: c.code.0,
        },
        Packet::Publish(p) => Got::Publish {
            topic: p.topic.into(),
            payload: p.payload.to_vec(),
            qos: p.qos,
            retain: p.retain,
            dup: p.dup,
            id: p.packet_id.map_or(0, |i| i.get()),
        },
        Packet::Puback(a) => Got::Puback(a.packet_id.get()),
        Packet::Pubrec(a) => Got::Pubrec(a.packet_id.get()),
        Packet::Pubrel(a) => Got::Pubrel(a.packet_id.get()),
        Packet::Pubcomp(a) => Got::Pubcomp(a.packet_id.get()),
        Packet::Suback(s) => Got::Suback(s.packet_id.get(), s.codes.iter().map(|c| c.0).collect()),
        Packet::Unsuback(u) => Got::Unsuback(u.packet_id.get()),
        Packet::Pingresp => Got::Pingresp,
        other => Got::Other(format!("{other:?}")),
    }
}
