//! Configuration, parsed once into typed values.
//!
//! - `mod.rs` (this file): [`Config`], every setting the broker and the loop read, with
//!   its default. Without `-c` the defaults are used as they are, which matches Mosquitto
//!   2.0 run without a config file (local listeners only, anonymous clients allowed).
//! - `parse`: the Mosquitto-style file format (`key value` lines, `listener` blocks,
//!   `include_dir`). Pure: text in, [`Config`] or every [`ConfigError`] in it (each naming
//!   file, line and key) out; reading files goes through the [`Source`] trait so tests need no disk.
//! - `error`: [`ConfigError`], [`ConfigErrors`] and [`Warning`].
//! - [`bridge`]: [`BridgeConfig`], one per `connection` block (parsed by `parse::bridge`).
//!
//! `DESIGN.md` names one `config.rs`; the Mosquitto file format (includes, listener
//! blocks, per-key errors with file and line) is most of the code, so it has its own
//! files and this one keeps only the typed result.
//!
//! Every key in [`Config`] takes effect, except `autosave_interval`: it is parsed and
//! validated so Mosquitto files keep working, and ignored (wrenmq journals every change
//! and compacts by size, so it has no periodic save). Mosquitto keys wrenmq does not
//! implement at all are accepted with a warning (`parse.rs`); the README lists both.

pub mod bridge;
mod error;
mod parse;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

pub use bridge::BridgeConfig;
pub use error::{ConfigError, ConfigErrors, ErrorKind, Warning};
pub use parse::{load, parse_str, parse_with, Fs, MemSource, Parsed, Source};
pub use tls::{CertIdentity, ListenerTls, TlsSettings, TlsVersion, TLS12_SUITES, TLS13_SUITES};

/// The largest packet MQTT can express: a 268,435,455-byte remaining length plus a 5-byte
/// fixed header. `max_packet_size 0` in a file (Mosquitto's "no limit") maps to it.
pub const MQTT_MAX_PACKET_SIZE: u32 = 268_435_460;

/// Mosquitto 2.0's `websockets_headers_size` default (libwebsockets' header buffer).
pub const DEFAULT_WEBSOCKETS_HEADERS_SIZE: usize = 4096;

/// Everything the broker and the event loop need to know, with Mosquitto 2.0's defaults
/// unless the README says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Addresses to listen on. Default: `127.0.0.1:1883` and `[::1]:1883` (local only, as
    /// Mosquitto 2.0 does without a config file).
    pub listeners: Vec<SocketAddr>,
    /// The configured addresses in `listeners` that speak MQTT over WebSockets
    /// (`protocol websockets`). Default: none.
    pub websockets: Vec<SocketAddr>,
    /// Largest WebSocket upgrade request header, in bytes (`websockets_headers_size`,
    /// global as in Mosquitto); a larger one is answered 431.
    pub websockets_headers_size: usize,
    /// TLS settings of the listeners that have them, by configured address (one entry per
    /// address in `listeners` that is a TLS listener). Default: none.
    pub tls: Vec<ListenerTls>,
    /// Largest packet accepted from a client, fixed header included. A packet announcing a
    /// larger size closes the connection before its body is read.
    pub max_packet_size: u32,
    /// Largest packet accepted before CONNECT has been handled (wrenmq's own key
    /// `max_connect_packet_size`; Mosquitto 2.0 has a fixed 100,000-byte CONNECT limit). A
    /// first packet announcing more closes the connection as soon as its fixed header is
    /// read, so unauthenticated sockets cannot make the broker buffer `max_packet_size`
    /// each. The effective limit is the smaller of this and `max_packet_size`.
    pub max_connect_packet_size: u32,
    /// Filters one SUBSCRIBE may carry (0 = no limit); the filters beyond it are refused
    /// with a failure code in the SUBACK (wrenmq's own key `max_filters_per_subscribe`).
    pub max_filters_per_subscribe: usize,
    /// Subscriptions one session may hold (0 = no limit); a new filter beyond it is refused
    /// with a failure code in the SUBACK (wrenmq's own key `max_subscriptions_per_client`).
    pub max_subscriptions_per_client: usize,
    /// Subscriptions all sessions together may hold (0 = no limit); a new filter beyond it
    /// is refused with a failure code in the SUBACK (wrenmq's own key `max_subscriptions`).
    pub max_subscriptions: usize,
    /// Sessions, online and offline (0 = no limit); a CONNECT that would create one more is
    /// refused (wrenmq's own key `max_sessions`).
    pub max_sessions: usize,
    /// Longest client id accepted, in bytes (wrenmq's own key `max_client_id_length`;
    /// MQTT allows 65,535).
    pub max_client_id_length: usize,
    /// Retained messages stored (0 = no limit); a message for a new retained topic beyond
    /// it is not stored (wrenmq's own key `max_retained_messages`).
    pub max_retained_messages: usize,
    /// Bytes (topic, payload and properties) of all retained messages together (0 = no
    /// limit; wrenmq's own key `max_retained_bytes`).
    pub max_retained_bytes: usize,
    /// Bytes of messages, write buffers and partial input the broker may hold before it
    /// refuses new messages (Mosquitto's `memory_limit`; 0 = no limit).
    pub memory_limit: usize,
    /// Outbound QoS 1/2 messages in flight per client (0 = no limit, as in Mosquitto).
    pub max_inflight_messages: u16,
    /// Messages queued per client beyond the inflight window (0 = no limit).
    pub max_queued_messages: usize,
    /// Bytes (payload, topic and MQTT 5 properties) queued per client beyond the inflight
    /// window (0 = no limit).
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
    /// Journal bytes handed to the persistence writer and not yet written (wrenmq's own key
    /// `journal_queue_bytes`): over it the loop stops reading clients until the writer
    /// catches up, so a slow or full disk slows publishers instead of filling memory.
    pub journal_queue_bytes: usize,
    /// Whether retained messages are stored.
    pub retain_available: bool,
    /// Whether clients without a user name may connect. Default true without a config
    /// file; with one, false as soon as a listener or a password file is configured
    /// (Mosquitto 2.0).
    pub allow_anonymous: bool,
    /// Mosquitto-format password file (`user:$7$...`); `None` = no password check.
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file; `None` = every client may read and write every topic.
    pub acl_file: Option<PathBuf>,
    /// `per_listener_settings true`: each listener has its own `allow_anonymous`,
    /// `password_file` and `acl_file` ([`Config::listener_security`]), and the three
    /// global fields above are unused. Default false: they apply to every listener.
    pub per_listener_settings: bool,
    /// With `per_listener_settings true`: the security settings of each listener, one
    /// entry per listener block (the default listener first), naming its configured
    /// addresses. Empty otherwise.
    pub listener_security: Vec<ListenerSecurity>,
    /// Largest PUBLISH payload accepted, MQTT 5 properties included; larger ones are
    /// acknowledged and dropped (0 = no limit beyond `max_packet_size`).
    pub message_size_limit: u32,
    /// MQTT 5: the largest keepalive a client may ask for; a 5.0 client asking for more
    /// (or for none) is told this value as Server Keep Alive.
    pub max_keepalive: u16,
    /// Offline persistent sessions without an expiry of their own are discarded after
    /// this long; `None` = never. At most 0xFFFFFFFF s when parsed from a file.
    pub persistent_client_expiration: Option<Duration>,
    /// Whether persistent sessions, their queues and retained messages are kept on disk
    /// across restarts. On by default (unlike Mosquitto): see the README's Durability.
    pub persistence: bool,
    /// Directory for the data files (default `./wrenmq-data`).
    pub persistence_location: PathBuf,
    /// Mosquitto's `autosave_interval`: parsed and validated for compatibility, and read by
    /// nothing. wrenmq writes every change to its log as it happens and compacts the log by
    /// size (`store/`), so it has no periodic save to time.
    pub autosave_interval: Duration,
    /// When the persistence log is flushed to stable storage.
    pub fsync: Fsync,
    /// Log level from `log_type`; `None` = the default (info, or `-v`).
    pub log_level: Option<LevelFilter>,
    /// Where log lines go.
    pub log_dest: LogDest,
    /// Prefix each log line with a time stamp (`log_timestamp`, default true).
    pub log_timestamp: bool,
    /// strftime-style format of that time stamp (`log_timestamp_format`); `None` = Unix
    /// seconds, as Mosquitto.
    pub log_timestamp_format: Option<String>,
    /// `log_facility N`: syslog facility local0-local7 for `log_dest syslog`; `None` =
    /// daemon (as Mosquitto).
    pub log_facility: Option<u8>,
    /// Log connects and disconnects (`connection_messages`, default true).
    pub connection_messages: bool,
    /// How often the `$SYS/broker/...` topics are updated (`sys_interval`, default 10 s;
    /// zero = no `$SYS` topics and no timer).
    pub sys_interval: Duration,
    /// Write the process id here at start-up.
    pub pid_file: Option<PathBuf>,
    /// Started as root, switch to this user once listeners and files are open (see
    /// `privileges`). No default, unlike Mosquitto's `mosquitto`.
    pub user: Option<String>,
    /// `connection` blocks, in file order.
    pub bridges: Vec<BridgeConfig>,
}

/// One listener's security settings (`per_listener_settings true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// The listener's configured addresses (one listener line may bind IPv4 and IPv6).
    pub addrs: Vec<SocketAddr>,
    /// Mosquitto 2.0: false unless the listener sets it.
    pub allow_anonymous: bool,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
}

/// When the log is fsynced, and so what a power cut can lose (wrenmq's own key `fsync`;
/// the README's Durability section has the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Each loop turn's records are fsynced together before the acknowledgements that
    /// depend on them are sent: nothing acknowledged is lost. The default.
    Batch,
    /// Written every turn (acknowledgements wait for the write, not for an fsync), fsynced
    /// at this interval. A power cut loses up to one interval; a crash of the process alone
    /// loses nothing. Fewer flash writes.
    Interval(Duration),
    /// Written every turn, never fsynced (the OS writes back when it likes, typically within
    /// 30 s). A power cut can lose what the OS had not written back; a process crash loses
    /// nothing.
    Never,
}

/// As the `fsync` line says it (`batch`, `interval 100`, `never`), for log lines.
impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fsync::Batch => f.write_str("batch"),
            Fsync::Interval(d) => write!(f, "interval {}", d.as_millis()),
            Fsync::Never => f.write_str("never"),
        }
    }
}

/// The name the persistence code uses.
pub type FsyncPolicy = Fsync;

/// Log destination (`log_dest`); wrenmq writes to one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Stdout,
    /// `log_dest none`: nothing is logged.
    None,
    /// `log_dest syslog`: datagrams to `/dev/log` (facility daemon).
    Syslog,
    /// `log_dest file PATH`: appended to PATH, reopened on SIGHUP (for logrotate); if
    /// PATH cannot be opened at start-up the broker warns and logs to stderr.
    File(PathBuf),
}

impl Config {
    /// Whether the listener configured as `addr` is a WebSockets listener.
    pub fn is_websockets(&self, addr: SocketAddr) -> bool {
        self.websockets.contains(&addr)
    }

    /// The TLS settings of the listener configured as `addr`, if it is a TLS listener.
    pub fn tls_for(&self, addr: SocketAddr) -> Option<&TlsSettings> {
        self.tls
            .iter()
            .find(|t| t.addr == addr)
            .map(|t| &t.settings)
    }

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
            websockets: Vec::new(),
            websockets_headers_size: DEFAULT_WEBSOCKETS_HEADERS_SIZE,
            tls: Vec::new(),
            max_packet_size: 2_000_000,
            max_connect_packet_size: 100_000,
            max_filters_per_subscribe: 10_000,
            max_subscriptions_per_client: 10_000,
            max_subscriptions: 1_000_000,
            max_sessions: 100_000,
            max_client_id_length: 1024,
            max_retained_messages: 100_000,
            max_retained_bytes: 64 << 20,
            memory_limit: 0,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            max_connections: 0,
            connect_timeout: Duration::from_secs(30),
            max_write_buffer: 1 << 20,
            journal_queue_bytes: 4 << 20,
            retain_available: true,
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            per_listener_settings: false,
            listener_security: Vec::new(),
            message_size_limit: 0,
            max_keepalive: 65535,
            persistent_client_expiration: None,
            persistence: true,
            persistence_location: PathBuf::from("wrenmq-data"),
            autosave_interval: Duration::from_secs(1800),
            fsync: Fsync::Batch,
            log_level: None,
            log_dest: LogDest::Stderr,
            log_timestamp: true,
            log_timestamp_format: None,
            log_facility: None,
            connection_messages: true,
            sys_interval: Duration::from_secs(10),
            pid_file: None,
            user: None,
            bridges: Vec::new(),
        }
    }
}
