//! Configuration, parsed once into typed values.
//!
//! Today: the embedded defaults and the values the command line sets. A Mosquitto-style
//! file (`-c`) and SIGHUP reload come with the configuration issue; every limit the broker
//! enforces already lives here so that the file only has to fill it in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// When the log is fsynced, and so what a power cut can lose (see the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Each loop turn's records are fsynced together before the acknowledgements that
    /// depend on them are sent: nothing acknowledged is lost.
    Batch,
    /// Written every turn (acknowledgements wait for the write, not for an fsync), fsynced
    /// at this interval. A power cut loses up to one interval; a crash of the process alone
    /// loses nothing.
    Interval(Duration),
    /// Written every turn, never fsynced (the OS writes back when it likes, typically within
    /// 30 s). A power cut can lose what the OS had not written back; a process crash loses
    /// nothing.
    Never,
}

/// Everything the broker and the event loop need to know, with Mosquitto 2.0's defaults
/// unless the README says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Addresses to listen on. Default: `127.0.0.1:1883` and `[::1]:1883` (local only, as
    /// Mosquitto 2.0 does without a config file).
    pub listeners: Vec<SocketAddr>,
    /// Largest packet accepted from a client, fixed header included. A packet announcing a
    /// larger size closes the connection before its body is read.
    pub max_packet_size: u32,
    /// Outbound QoS 1/2 messages in flight per client (0 = no limit, as in Mosquitto).
    pub max_inflight_messages: u16,
    /// Messages queued per client beyond the inflight window (0 = no limit).
    pub max_queued_messages: usize,
    /// Payload bytes queued per client beyond the inflight window (0 = no limit).
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages for offline persistent sessions too.
    pub queue_qos0_messages: bool,
    /// Simultaneous client connections (0 = no limit beyond the process's file limit).
    pub max_connections: usize,
    /// Time a new connection has to send CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// Bytes waiting in one client's write buffer beyond which QoS 0 messages to that client
    /// are dropped and the client's own input is no longer read until it drains.
    pub max_write_buffer: usize,
    /// Whether retained messages are stored.
    pub retain_available: bool,
    /// Keep sessions, queued messages and retained messages on disk across restarts.
    pub persistence: bool,
    /// Where the data files live.
    pub persistence_location: PathBuf,
    pub fsync: FsyncPolicy,
}

impl Config {
    /// The defaults with persistence off: state lives in memory only (tests, benchmarks).
    pub fn in_memory() -> Config {
        Config {
            persistence: false,
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: vec![
                SocketAddr::from(([127, 0, 0, 1], 1883)),
                SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 1883)),
            ],
            max_packet_size: 2_000_000,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            max_connections: 0,
            connect_timeout: Duration::from_secs(30),
            max_write_buffer: 1 << 20,
            retain_available: true,
            persistence: true,
            persistence_location: PathBuf::from("wrenmq-data"),
            fsync: FsyncPolicy::Batch,
        }
    }
}
