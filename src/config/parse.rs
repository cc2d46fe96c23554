//! The Mosquitto-style configuration file: one `key value` per line, `#` comment lines,
//! `listener PORT [ADDR]` blocks, `include_dir`.
//!
//! Semantics follow mosquitto.conf(5) for Mosquitto 2.0:
//! - Settings that belong to a listener (`max_connections`, `protocol`, `socket_domain`)
//!   apply to the last `listener` line above them; above any `listener` line they belong
//!   to the *default listener*, together with `port` and `bind_address`. As in Mosquitto,
//!   setting any of them creates the default listener (port 1883, all interfaces).
//! - Without any listener the broker runs "local only" on 127.0.0.1:1883 and [::1]:1883
//!   and, unless the file says otherwise, allows anonymous clients. With a listener, or a
//!   password file, `allow_anonymous` defaults to false.
//! - `listener PORT` without an address listens on all interfaces, IPv4 and IPv6.
//!
//! Differences, on purpose: a value must not be followed by more words (a trailing
//! `# comment` is allowed), because Mosquitto silently ignores them and that hides typos;
//! Mosquitto settings that would change security or what clients see if ignored (TLS
//! certificates, `http_dir`, plugins, mount points) are errors rather than
//! warnings; `max_connections` is enforced for all listeners together (the sum of the
//! per-listener limits; unlimited if one listener is).
//!
//! Parsing is pure: files are read through [`Source`], so tests use an in-memory one.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use super::error::{ConfigError, ConfigErrors, ErrorKind, Warning};
use super::tls::ListenerTls;
use super::{Config, Fsync, LogDest, MQTT_MAX_PACKET_SIZE};
use listener::{parse_host, parse_listener, Domain, ListenerSpec, SecuritySpec};
use suggest::suggest;

/// The MQTT port (IANA), for listeners the file gives no port.
const DEFAULT_PORT: u16 = 1883;

/// Where configuration text comes from.
pub trait Source {
    /// The whole text of `path`.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The `*.conf` files directly in `dir`, in any order (the parser sorts them).
    fn conf_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real file system.
pub struct Fs;

impl Source for Fs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn conf_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "conf") && path.is_file() {
                out.push(path);
            }
        }
        Ok(out)
    }
}

/// A parsed configuration and what deserves a warning in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Reads and parses `path` (and its `include_dir` files) from the file system.
pub fn load(path: &Path) -> Result<Parsed, ConfigErrors> {
    parse_with(&Fs, path)
}

/// Parses `text` as the file `file`. An `include_dir` in it is read from the file system.
pub fn parse_str(text: &str, file: &Path) -> Result<Parsed, ConfigErrors> {
    let mut p = Parser::default();
    p.parse_text(&Fs, text, file, false);
    p.finish()
}

/// Reads `path` through `src` and parses it. Every line is checked: the error lists all
/// the lines that are wrong, not only the first.
pub fn parse_with(src: &dyn Source, path: &Path) -> Result<Parsed, ConfigErrors> {
    let text = read(src, path)?;
    let mut p = Parser::default();
    p.parse_text(src, &text, path, false);
    p.finish()
}

fn read(src: &dyn Source, path: &Path) -> Result<String, ConfigError> {
    src.read(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        key: None,
        kind: ErrorKind::Read(e.to_string()),
    })
}

/// The parser's running state across the main file and its included files.
#[derive(Default)]
struct Parser {
    cfg: Config,
    warnings: Vec<Warning>,
    errors: Vec<ConfigError>,
    /// The listener made of the global `port`/`bind_address`/... keys, once one is set.
    default_listener: Option<ListenerSpec>,
    blocks: Vec<ListenerSpec>,
    allow_anonymous: Option<bool>,
    /// `per_listener_settings` (wherever it is in the file: it changes how the security
    /// keys above it are read too).
    per_listener: bool,
    /// Where `per_listener_settings` was set, for warnings about it.
    per_listener_line: Option<(PathBuf, usize)>,
    /// Set by `finish`: the first listener spec is the default listener.
    has_default_listener: bool,
    /// Security keys above the first `listener` line: the default listener's when
    /// settings are per listener.
    pre_security: SecuritySpec,
    /// Highest level named by a `log_type` line; `Some(Off)` only for `none` alone.
    log_level: Option<LevelFilter>,
    /// Whether a `log_dest` line was seen (Mosquitto allows several; wrenmq uses one).
    log_dest_set: bool,
    /// `connection` blocks.
    bridges: bridge::BridgeParser,
}

/// One line being applied: enough context to build an error or a warning.
struct Line<'a> {
    file: &'a Path,
    number: usize,
    key: &'a str,
    value: Option<&'a str>,
}

impl Line<'_> {
    fn error(&self, kind: ErrorKind) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.number,
            key: Some(self.key.to_string()),
            kind,
        }
    }

    fn invalid(&self, expected: &'static str) -> ConfigError {
        self.error(ErrorKind::InvalidValue {
            value: self.value.unwrap_or("").to_string(),
            expected,
        })
    }

    /// The value as one word (a trailing `# comment` allowed).
    fn word(&self) -> Result<&str, ConfigError> {
        let value = self.text()?;
        let mut words = value.split_whitespace();
        let first = words
            .next()
            .ok_or_else(|| self.error(ErrorKind::MissingValue))?;
        match words.next() {
            None => Ok(first),
            Some(w) if w.starts_with('#') => Ok(first),
            Some(_) => Err(self.invalid("a single value")),
        }
    }

    /// The whole value (paths may contain spaces).
    fn text(&self) -> Result<&str, ConfigError> {
        match self.value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(self.error(ErrorKind::MissingValue)),
        }
    }

    fn path(&self) -> Result<PathBuf, ConfigError> {
        Ok(PathBuf::from(self.text()?))
    }

    fn bool(&self) -> Result<bool, ConfigError> {
        match self.word()? {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.invalid("true or false")),
        }
    }

    fn int(&self, min: i64, max: i64, expected: &'static str) -> Result<i64, ConfigError> {
        match self.word()?.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.invalid(expected)),
        }
    }

    fn usize(&self, expected: &'static str) -> Result<usize, ConfigError> {
        let n = self.int(0, i64::from(u32::MAX), expected)?;
        usize::try_from(n).map_err(|_| self.invalid(expected))
    }
}

impl Parser {
    /// Applies every line of `text`; a line in error is recorded and skipped.
    fn parse_text(&mut self, src: &dyn Source, text: &str, file: &Path, included: bool) {
        let outer_bridge = self.bridges.enter_file();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (key, value) = match trimmed.split_once(char::is_whitespace) {
                Some((k, v)) => (k, Some(v.trim())),
                None => (trimmed, None),
            };
            let line = Line {
                file,
                number: i + 1,
                key,
                value,
            };
            let result = if key == "include_dir" {
                if included {
                    Err(line.error(ErrorKind::NestedInclude))
                } else {
                    self.include_dir(src, &line)
                }
            } else {
                self.apply(&line)
            };
            if let Err(e) = result {
                self.errors.push(e);
            }
        }
        self.bridges.leave_file(outer_bridge);
    }

    fn include_dir(&mut self, src: &dyn Source, line: &Line<'_>) -> Result<(), ConfigError> {
        let dir = line.path()?;
        let mut files = src
            .conf_files(&dir)
            .map_err(|e| line.error(ErrorKind::Read(format!("{}: {e}", dir.display()))))?;
        // Mosquitto reads them in alphabetical order, so `10-x.conf` overrides `00-x.conf`.
        files.sort();
        for path in files {
            match read(src, &path) {
                Ok(text) => self.parse_text(src, &text, &path, true),
                Err(e) => self.errors.push(e),
            }
        }
        Ok(())
    }

    fn warn(&mut self, line: &Line<'_>, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: line.file.to_path_buf(),
            line: line.number,
            key: line.key.to_string(),
            message: message.into(),
        });
    }

    /// The listener that per-listener keys on this line apply to.
    fn listener(&mut self) -> &mut ListenerSpec {
        match self.blocks.last_mut() {
            Some(block) => block,
            None => self
                .default_listener
                .get_or_insert_with(ListenerSpec::default),
        }
    }

    /// Where security keys on this line go with `per_listener_settings true`: the last
    /// `listener` block, or the default listener above the first one (mosquitto.conf(5)).
    fn security(&mut self, line: &Line<'_>) -> &mut SecuritySpec {
        let spec = match self.blocks.last_mut() {
            Some(block) => &mut block.security,
            None => &mut self.pre_security,
        };
        spec.first
            .get_or_insert_with(|| (line.file.to_path_buf(), line.number, line.key.to_string()));
        spec
    }

    fn apply(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        match line.key {
            // ---- listeners
            "listener" => {
                let spec = parse_listener(line)?;
                self.blocks.push(spec);
            }
            "port" => {
                let port = line.int(1, 65535, "a port number 1-65535")?;
                self.default_listener
                    .get_or_insert_with(ListenerSpec::default)
                    .port = u16::try_from(port).ok();
            }
            "bind_address" => {
                let host = parse_host(line, line.word()?)?;
                self.default_listener
                    .get_or_insert_with(ListenerSpec::default)
                    .host = Some(host);
            }
            "max_connections" => {
                let n = line.int(-1, i64::from(u32::MAX), "-1 (unlimited) or a count")?;
                self.listener().max_connections = usize::try_from(n).ok().filter(|&n| n > 0);
            }
            "socket_domain" => {
                let domain = match line.word()? {
                    "ipv4" => Domain::V4,
                    "ipv6" => Domain::V6,
                    _ => return Err(line.invalid("ipv4 or ipv6")),
                };
                self.listener().domain = Some(domain);
            }
            "protocol" => match line.word()? {
                "mqtt" => self.listener().websockets = false,
                "websockets" if cfg!(feature = "websockets") => {
                    self.listener().websockets = true;
                }
                "websockets" => {
                    return Err(line.error(ErrorKind::Unsupported(
                        "websockets listeners (built without the websockets feature)",
                    )))
                }
                _ => return Err(line.invalid("mqtt or websockets")),
            },
            "websockets_headers_size" => {
                // Mosquitto: global, 0 means the default; libwebsockets holds it in 16 bits.
                let n = line.int(0, 65535, "a byte count 0-65535 (0 for the default 4096)")?;
                self.cfg.websockets_headers_size = match usize::try_from(n) {
                    Ok(0) | Err(_) => super::DEFAULT_WEBSOCKETS_HEADERS_SIZE,
                    Ok(n) => n,
                };
            }
            "websockets_log_level" => {
                line.int(i64::MIN, i64::MAX, "a libwebsockets log level number")?;
                self.warn(
                    line,
                    "ignored: wrenmq has no libwebsockets; WebSocket handshake and framing \
                     errors are logged at debug level (log_type debug)",
                );
            }
            "http_dir" => {
                return Err(line.error(ErrorKind::Unsupported(
                    "serving files over HTTP (websockets listeners answer plain HTTP \
                     requests with 400); serve them with a web server",
                )))
            }

            // ---- security
            // Recorded both globally and for the listener they follow; `finish` keeps one
            // of the two according to `per_listener_settings`.
            "allow_anonymous" => {
                let v = line.bool()?;
                self.allow_anonymous = Some(v);
                self.security(line).allow_anonymous = Some(v);
            }
            "password_file" => {
                let v = line.path()?;
                self.cfg.password_file = Some(v.clone());
                self.security(line).password_file = Some(v);
            }
            "acl_file" => {
                let v = line.path()?;
                self.cfg.acl_file = Some(v.clone());
                self.security(line).acl_file = Some(v);
            }
            "per_listener_settings" => {
                self.per_listener = line.bool()?;
                self.per_listener_line = Some((line.file.to_path_buf(), line.number));
            }

            // ---- limits
            "max_inflight_messages" => {
                self.cfg.max_inflight_messages =
                    line.int(0, 65535, "0 (no limit) or a count up to 65535")? as u16;
            }
            "max_queued_messages" => {
                self.cfg.max_queued_messages = line.usize("0 (no limit) or a count")?;
            }
            "max_queued_bytes" => {
                self.cfg.max_queued_bytes = line.usize("0 (no limit) or a byte count")?
            }
            "queue_qos0_messages" => self.cfg.queue_qos0_messages = line.bool()?,
            "max_packet_size" => {
                let n = line.int(
                    0,
                    i64::from(MQTT_MAX_PACKET_SIZE),
                    "0 (no limit) or a size of at least 20 bytes",
                )?;
                self.cfg.max_packet_size = match n {
                    0 => MQTT_MAX_PACKET_SIZE,
                    // Mosquitto refuses these too: even a tiny PUBLISH would not fit.
                    1..=19 => {
                        return Err(line.invalid("0 (no limit) or a size of at least 20 bytes"))
                    }
                    n => n as u32,
                };
            }
            "memory_limit" => {
                self.cfg.memory_limit = line.usize("0 (no limit) or a byte count")?;
            }
            "message_size_limit" => {
                self.cfg.message_size_limit =
                    line.int(0, 268_435_455, "0 (no limit) or a payload size in bytes")? as u32;
            }
            "max_keepalive" => {
                self.cfg.max_keepalive = line.int(0, 65535, "a number of seconds 0-65535")? as u16;
            }
            "persistent_client_expiration" => {
                self.cfg.persistent_client_expiration = Some(parse_expiration(line)?);
            }
            "retain_available" => self.cfg.retain_available = line.bool()?,

            // ---- persistence
            "persistence" => self.cfg.persistence = line.bool()?,
            "persistence_location" => self.cfg.persistence_location = line.path()?,
            "autosave_interval" => {
                let secs = line.int(0, i64::from(u32::MAX), "a number of seconds")?;
                self.cfg.autosave_interval = Duration::from_secs(secs as u64);
            }
            "persistence_file" | "autosave_on_changes" => self.warn(
                line,
                "not supported: wrenmq keeps its own files in persistence_location and writes \
                 changes as they happen; ignored",
            ),

            // ---- logging, process
            "log_type" => {
                let level = match line.word()? {
                    "none" => LevelFilter::Off,
                    "error" => LevelFilter::Error,
                    "warning" => LevelFilter::Warn,
                    "notice" | "information" => LevelFilter::Info,
                    "debug" | "subscribe" | "unsubscribe" | "all" => LevelFilter::Debug,
                    "websockets" => LevelFilter::Off,
                    _ => {
                        return Err(line.invalid(
                            "debug, error, warning, notice, information, subscribe, \
                             unsubscribe, websockets, none or all",
                        ))
                    }
                };
                self.log_level = Some(self.log_level.map_or(level, |l| l.max(level)));
            }
            "log_dest" => {
                let dest = parse_log_dest(line)?;
                let dest = match dest {
                    Ok(dest) => dest,
                    Err(unsupported) => {
                        self.warn(
                            line,
                            format!("log_dest {unsupported} is not supported; logging to stderr"),
                        );
                        LogDest::Stderr
                    }
                };
                if self.log_dest_set && dest != self.cfg.log_dest {
                    self.warn(
                        line,
                        "wrenmq logs to one destination: this line replaces the one above",
                    );
                }
                self.log_dest_set = true;
                self.cfg.log_dest = dest;
            }
            "log_timestamp" => self.cfg.log_timestamp = line.bool()?,
            "log_timestamp_format" => {
                self.cfg.log_timestamp_format = Some(line.text()?.trim().to_string())
            }
            "connection_messages" => self.cfg.connection_messages = line.bool()?,
            "log_facility" => {
                self.cfg.log_facility = Some(line.int(0, 7, "0-7 (local0 to local7)")? as u8);
            }
            "sys_interval" => {
                let secs = line.int(0, 65535, "a number of seconds 0-65535 (0 = off)")?;
                self.cfg.sys_interval = Duration::from_secs(secs as u64);
            }
            "pid_file" => self.cfg.pid_file = Some(line.path()?),
            "user" => self.cfg.user = Some(line.word()?.to_string()),

            // ---- wrenmq's own keys
            "fsync" => self.cfg.fsync = parse_fsync(line)?,
            "connect_timeout" => {
                let secs = line.int(1, 3600, "a number of seconds 1-3600")?;
                self.cfg.connect_timeout = Duration::from_secs(secs as u64);
            }
            "max_write_buffer" => {
                self.cfg.max_write_buffer = line.usize("a byte count")?;
            }
            "journal_queue_bytes" => {
                let n = line.int(
                    65_536,
                    i64::from(u32::MAX),
                    "a byte count of at least 65536",
                )?;
                self.cfg.journal_queue_bytes = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "max_connect_packet_size" => {
                self.cfg.max_connect_packet_size = line.int(
                    20,
                    i64::from(MQTT_MAX_PACKET_SIZE),
                    "a size of at least 20 bytes",
                )? as u32;
            }
            "max_filters_per_subscribe" => {
                self.cfg.max_filters_per_subscribe = line.usize("0 (no limit) or a count")?;
            }
            "max_subscriptions_per_client" => {
                self.cfg.max_subscriptions_per_client = line.usize("0 (no limit) or a count")?;
            }
            "max_subscriptions" => {
                self.cfg.max_subscriptions = line.usize("0 (no limit) or a count")?;
            }
            "max_sessions" => self.cfg.max_sessions = line.usize("0 (no limit) or a count")?,
            "max_client_id_length" => {
                self.cfg.max_client_id_length =
                    line.int(1, 65535, "a length in bytes 1-65535")? as usize;
            }
            "max_retained_messages" => {
                self.cfg.max_retained_messages = line.usize("0 (no limit) or a count")?;
            }
            "max_retained_bytes" => {
                self.cfg.max_retained_bytes = line.usize("0 (no limit) or a byte count")?;
            }

            // ---- Mosquitto keys refused: ignoring them would weaken security or change
            // what clients see.
            k if tls::TLS_KEYS.contains(&k) => self.apply_tls(line)?,
            "mount_point" => return Err(line.error(ErrorKind::Unsupported("mount points"))),
            "bind_interface" => {
                return Err(line.error(ErrorKind::Unsupported(
                    "binding to an interface; use listener PORT ADDRESS",
                )))
            }
            // ---- bridges (see `bridge`)
            "connection" => self.bridges.connection(line)?,
            k if bridge::is_bridge_key(k) => {
                if let Some(notice) = self.bridges.apply(line)? {
                    self.warn(line, notice);
                }
            }
            "auth_plugin" | "plugin" | "global_plugin" => {
                return Err(line.error(ErrorKind::Unsupported("plugins")))
            }
            k if k.starts_with("auth_opt_") || k.starts_with("plugin_opt_") => {
                return Err(line.error(ErrorKind::Unsupported("plugins")))
            }

            // ---- Mosquitto keys accepted with a warning: the broker behaves as if unset.
            k if MOSQUITTO_IGNORED.contains(&k) => self.warn(
                line,
                "Mosquitto option not supported by wrenmq yet; ignored",
            ),

            _ => {
                return Err(line.error(ErrorKind::UnknownKey {
                    suggestion: suggest(line.key),
                }))
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Parsed, ConfigErrors> {
        let specs = self.default_listener.iter().chain(&self.blocks);
        for spec in specs {
            if let (Some(settings), Some(origin)) = (&spec.tls, &spec.tls_origin) {
                match tls::check(settings, origin) {
                    Ok(()) => {}
                    Err(e) => self.errors.push(e),
                }
            }
        }
        self.cfg.bridges = std::mem::take(&mut self.bridges).finish(&mut self.errors);
        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        let mut specs: Vec<ListenerSpec> = Vec::new();
        self.has_default_listener = self.default_listener.is_some();
        specs.extend(self.default_listener.take());
        specs.append(&mut self.blocks);
        let any_listener = !specs.is_empty();
        if any_listener {
            self.cfg.listeners = specs.iter().flat_map(ListenerSpec::addrs).collect();
            self.cfg.websockets = specs
                .iter()
                .filter(|s| s.websockets)
                .flat_map(ListenerSpec::addrs)
                .collect();
            self.cfg.tls = specs
                .iter()
                .filter_map(|s| s.tls.as_ref().map(|t| (s.addrs(), t)))
                .flat_map(|(addrs, t)| {
                    addrs.into_iter().map(|addr| ListenerTls {
                        addr,
                        settings: t.clone(),
                    })
                })
                .collect();
            let limits: Option<Vec<usize>> = specs.iter().map(|s| s.max_connections).collect();
            self.cfg.max_connections = limits.map_or(0, |l| l.iter().sum());
        }
        // Mosquitto 2.0: anonymous clients are allowed by default only in local-only mode;
        // a password file also turns the default off.
        self.cfg.allow_anonymous = self
            .allow_anonymous
            .unwrap_or(!any_listener && self.cfg.password_file.is_none());
        if self.per_listener {
            self.per_listener_security(&specs, any_listener);
        }
        self.cfg.log_level = self.log_level;
        Ok(Parsed {
            config: self.cfg,
            warnings: self.warnings,
        })
    }
}

/// Mosquitto 2.0 options accepted and ignored with a warning.
pub(super) const MOSQUITTO_IGNORED: &[&str] = &[
    "accept_protocol_versions",
    "allow_duplicate_messages",
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "check_retain_source",
    "clientid_prefixes",
    "listener_allow_anonymous",
    "max_inflight_bytes",
    "max_qos",
    "max_topic_alias",
    "retry_interval",
    "set_tcp_nodelay",
    "store_clean_interval",
    "upgrade_outgoing_qos",
    "use_username_as_clientid",
];

/// `persistent_client_expiration`: a number and one of h, d, w, m (month = 30 days),
/// y (year = 365 days), as in Mosquitto. At most 0xFFFFFFFF seconds (136 years), the
/// longest expiry MQTT 5 can express: larger values only ever come from typos, and a
/// deadline that far used to overflow the broker's clock arithmetic.
fn parse_expiration(line: &Line<'_>) -> Result<Duration, ConfigError> {
    const EXPECTED: &str = "a number followed by h, d, w, m or y, such as 14d, at most 136y";
    let word = line.word()?;
    let split = word.len().saturating_sub(1);
    let (n, unit) = (word.get(..split), word.get(split..));
    let n: u64 = n
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| line.invalid(EXPECTED))?;
    let hours = match unit {
        Some("h") => 1,
        Some("d") => 24,
        Some("w") => 24 * 7,
        Some("m") => 24 * 30,
        Some("y") => 24 * 365,
        _ => return Err(line.invalid(EXPECTED)),
    };
    n.checked_mul(hours * 3600)
        .filter(|&secs| secs <= u64::from(u32::MAX))
        .map(Duration::from_secs)
        .ok_or_else(|| line.invalid(EXPECTED))
}

/// `log_dest stderr | stdout | none | syslog | file PATH` (Mosquitto's form: the path is the rest
/// of the line); `Ok(Err(name))` for a Mosquitto destination wrenmq does not have.
fn parse_log_dest(line: &Line<'_>) -> Result<Result<LogDest, &'static str>, ConfigError> {
    const EXPECTED: &str = "stderr, stdout, none, file PATH, syslog, topic or dlt";
    let value = line.text()?;
    if let Some(path) = value.strip_prefix("file") {
        if path.starts_with(char::is_whitespace) && !path.trim().is_empty() {
            return Ok(Ok(LogDest::File(PathBuf::from(path.trim()))));
        }
        if path.trim().is_empty() {
            return Err(line.invalid("file followed by the log file's path"));
        }
    }
    Ok(match line.word()? {
        "stderr" => Ok(LogDest::Stderr),
        "stdout" => Ok(LogDest::Stdout),
        "none" => Ok(LogDest::None),
        "syslog" => Ok(LogDest::Syslog),
        "topic" => Err("topic"),
        "dlt" => Err("dlt"),
        _ => return Err(line.invalid(EXPECTED)),
    })
}

/// `fsync batch | interval <ms> | never`; the interval is at most a day (what a power cut
/// may lose; longer is a typo).
fn parse_fsync(line: &Line<'_>) -> Result<Fsync, ConfigError> {
    const EXPECTED: &str = "batch, never or interval <milliseconds> (1 to 86400000)";
    let value = line.text()?;
    let words: Vec<&str> = value
        .split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .collect();
    match words.as_slice() {
        ["batch"] => Ok(Fsync::Batch),
        ["never"] => Ok(Fsync::Never),
        ["interval", ms] => match ms.parse::<u64>() {
            Ok(ms @ 1..=86_400_000) => Ok(Fsync::Interval(Duration::from_millis(ms))),
            _ => Err(line.invalid(EXPECTED)),
        },
        _ => Err(line.invalid(EXPECTED)),
    }
}

/// An in-memory [`Source`] for tests (and fuzzing): paths map to texts; a directory lists
/// the `.conf` paths directly inside it.
#[derive(Default)]
pub struct MemSource(pub HashMap<PathBuf, String>);

impl Source for MemSource {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn conf_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let files: Vec<PathBuf> = self
            .0
            .keys()
            .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "conf"))
            .cloned()
            .collect();
        if files.is_empty() && !self.0.keys().any(|p| p.starts_with(dir)) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(files)
    }
}

mod bridge;
mod listener;
mod suggest;
#[cfg(test)]
mod tests;
mod tls;
#[cfg(test)]
mod tls_tests;
