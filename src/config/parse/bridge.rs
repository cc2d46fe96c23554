//! The bridge keys of the file: `connection NAME` opens a bridge and the bridge keys after
//! it (in the same file, as in Mosquitto) belong to it; global keys in between keep their
//! global meaning. Mosquitto's rules (src/conf.c, src/bridge_topic.c), with the
//! differences listed in `config::bridge`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Line;
use crate::config::bridge::{
    BridgeAddress, BridgeConfig, BridgeError, BridgeTls, BridgeTopic, Direction, Restart,
    StartType, TlsVersion, DEFAULT_BRIDGE_PORT,
};
use crate::config::error::{ConfigError, ErrorKind};
use crate::config::MQTT_MAX_PACKET_SIZE;
use crate::protocol::{topic, ProtocolVersion, QoS};

/// The keys only valid inside a `connection` block (besides `connection` itself), for the
/// parser's dispatch and "did you mean".
pub(in crate::config) const BRIDGE_KEYS: &[&str] = &[
    "address",
    "addresses",
    "round_robin",
    "topic",
    "bridge_protocol_version",
    "cleansession",
    "local_cleansession",
    "remote_clientid",
    "clientid",
    "local_clientid",
    "remote_username",
    "username",
    "remote_password",
    "password",
    "local_username",
    "local_password",
    "try_private",
    "notifications",
    "notification_topic",
    "notifications_local_only",
    "keepalive_interval",
    "restart_timeout",
    "start_type",
    "threshold",
    "idle_timeout",
    "bridge_attempt_unsubscribe",
    "bridge_outgoing_retain",
    "bridge_max_packet_size",
    "bridge_max_queued_messages",
    "bridge_max_queued_bytes",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_insecure",
    "bridge_tls_version",
    "bridge_alpn",
];

/// Mosquitto bridge keys wrenmq refuses, and why.
const REFUSED: &[(&str, &str)] = &[
    ("bridge_identity", "TLS-PSK bridges"),
    ("bridge_psk", "TLS-PSK bridges"),
    (
        "bridge_ciphers",
        "choosing TLS ciphers (rustls' safe defaults are used)",
    ),
    (
        "bridge_ciphers_tls1.3",
        "choosing TLS ciphers (rustls' safe defaults are used)",
    ),
    ("bridge_require_ocsp", "OCSP stapling for bridges"),
    ("bridge_tcp_keepalive", "TCP keepalive options for bridges"),
    ("bridge_tcp_user_timeout", "TCP user timeout for bridges"),
];

/// Whether `key` is handled here (a bridge key, or any `bridge_` key).
pub(super) fn is_bridge_key(key: &str) -> bool {
    key.starts_with("bridge_") || BRIDGE_KEYS.contains(&key)
}

/// The bridges read so far and the one the next bridge key applies to.
#[derive(Default)]
pub(super) struct BridgeParser {
    list: Vec<BridgeConfig>,
    /// Index in `list` of the bridge opened by the last `connection` line of this file.
    current: Option<usize>,
}

/// What a key is doing to a bridge: set it, or set it with a notice for the log.
pub(super) type Applied = Option<&'static str>;

impl BridgeParser {
    /// Called when a file starts: bridges do not continue across files. Returns what
    /// [`BridgeParser::leave_file`] restores.
    pub(super) fn enter_file(&mut self) -> Option<usize> {
        self.current.take()
    }

    /// Called when a file ends, with what `enter_file` returned.
    pub(super) fn leave_file(&mut self, outer: Option<usize>) {
        self.current = outer;
    }

    /// `connection NAME`.
    pub(super) fn connection(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let name = line.word()?;
        let duplicate = self.list.iter().any(|b| b.name == name);
        // Opened even when refused, so the keys below it are not taken for the bridge
        // above and reported a second time.
        self.list.push(BridgeConfig::new(
            name,
            line.file.to_path_buf(),
            line.number,
        ));
        self.current = Some(self.list.len() - 1);
        if duplicate {
            return Err(line.error(ErrorKind::Bridge(BridgeError::DuplicateName)));
        }
        Ok(())
    }

    /// A bridge key (`is_bridge_key`) for the current bridge.
    pub(super) fn apply(&mut self, line: &Line<'_>) -> Result<Applied, ConfigError> {
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == line.key) {
            return Err(line.error(ErrorKind::Unsupported(why)));
        }
        if !BRIDGE_KEYS.contains(&line.key) {
            return Err(line.error(ErrorKind::UnknownKey {
                suggestion: super::suggest::suggest(line.key),
            }));
        }
        let Some(b) = self.current.and_then(|i| self.list.get_mut(i)) else {
            return Err(line.error(ErrorKind::Bridge(BridgeError::OutsideConnection)));
        };
        apply_key(b, line)
    }

    /// Whole-bridge checks once every file is read; the errors name the `connection` line.
    pub(super) fn finish(self, errors: &mut Vec<ConfigError>) -> Vec<BridgeConfig> {
        let at = |b: &BridgeConfig, e: BridgeError| ConfigError {
            file: b.file.clone(),
            line: b.line,
            key: Some("connection".to_string()),
            kind: ErrorKind::Bridge(e),
        };
        for (i, b) in self.list.iter().enumerate() {
            if b.addresses.is_empty() {
                errors.push(at(b, BridgeError::NoAddress));
            }
            if b.topics.is_empty() {
                errors.push(at(b, BridgeError::NoTopics));
            }
            if let Some(tls) = &b.tls {
                if tls.cafile.is_none() && tls.capath.is_none() {
                    errors.push(at(b, BridgeError::TlsWithoutCa));
                }
                if tls.certfile.is_some() != tls.keyfile.is_some() {
                    errors.push(at(b, BridgeError::CertWithoutKey));
                }
            }
            if b.remote_password.is_some()
                && b.remote_username.is_none()
                && !b.protocol_version.is_v5()
            {
                errors.push(at(b, BridgeError::PasswordWithoutUsername));
            }
            // Default ids contain the bridge's (unique) name; only fixed ones can clash.
            if let Some(id) = b.local_clientid_if_fixed() {
                let clash = self.list[..i]
                    .iter()
                    .any(|o| o.local_clientid_if_fixed().as_deref() == Some(&id));
                if clash {
                    errors.push(at(b, BridgeError::LocalClientIdNotUnique(id)));
                }
            }
        }
        self.list
    }
}

fn apply_key(b: &mut BridgeConfig, line: &Line<'_>) -> Result<Applied, ConfigError> {
    match line.key {
        "address" | "addresses" => {
            if !b.addresses.is_empty() {
                return Err(dup(line));
            }
            b.addresses = parse_addresses(line)?;
        }
        "round_robin" => b.round_robin = line.bool()?,
        "topic" => {
            let t = parse_topic(line)?;
            // Mosquitto skips a repeated line.
            if !b.topics.contains(&t) {
                b.topics.push(t);
            }
        }
        "bridge_protocol_version" => {
            b.protocol_version = match line.word()? {
                "mqttv31" => ProtocolVersion::V31,
                "mqttv311" => ProtocolVersion::V311,
                "mqttv50" => ProtocolVersion::V5,
                _ => return Err(line.invalid("mqttv31, mqttv311 or mqttv50")),
            }
        }
        "cleansession" => b.clean_session = line.bool()?,
        "local_cleansession" => b.local_clean_session = Some(line.bool()?),
        "remote_clientid" | "clientid" => set_string(&mut b.remote_clientid, line)?,
        "local_clientid" => set_string(&mut b.local_clientid, line)?,
        "remote_username" | "username" => set_string(&mut b.remote_username, line)?,
        "remote_password" | "password" => set_string(&mut b.remote_password, line)?,
        "local_username" => set_string(&mut b.local_username, line)?,
        "local_password" => set_string(&mut b.local_password, line)?,
        "try_private" => b.try_private = line.bool()?,
        "notifications" => b.notifications = line.bool()?,
        "notification_topic" => {
            set_string(&mut b.notification_topic, line)?;
            if !b
                .notification_topic
                .as_deref()
                .is_some_and(topic::is_valid_topic_name)
            {
                b.notification_topic = None;
                return Err(line.invalid("a topic name without wildcards"));
            }
        }
        "notifications_local_only" => b.notifications_local_only = line.bool()?,
        "keepalive_interval" => {
            let n = line.int(i64::MIN, 65535, "a number of seconds up to 65535")?;
            // Mosquitto: "keepalive interval too low, using 5 seconds".
            b.keepalive = n.max(5) as u16;
            if n < 5 {
                return Ok(Some("keepalive interval too low, using 5 seconds"));
            }
        }
        "restart_timeout" => return parse_restart(b, line),
        "start_type" => {
            b.start_type = match line.word()? {
                "automatic" => StartType::Automatic,
                "lazy" => StartType::Lazy,
                "once" => StartType::Once,
                "manual" => {
                    return Err(line.error(ErrorKind::Unsupported(
                        "start_type manual (Mosquitto does not support it either)",
                    )))
                }
                _ => return Err(line.invalid("automatic, lazy or once")),
            }
        }
        "threshold" => {
            let n = line.int(i64::MIN, i64::from(u32::MAX), "a message count")?;
            b.threshold = n.max(1) as u32;
            if n < 1 {
                return Ok(Some("threshold too low, using 1 message"));
            }
        }
        "idle_timeout" => {
            let n = line.int(i64::MIN, i64::from(u32::MAX), "a number of seconds")?;
            b.idle_timeout = Duration::from_secs(n.max(1) as u64);
            if n < 1 {
                return Ok(Some("idle_timeout too low, using 1 second"));
            }
        }
        "bridge_attempt_unsubscribe" => b.attempt_unsubscribe = line.bool()?,
        "bridge_outgoing_retain" => b.outgoing_retain = line.bool()?,
        "bridge_max_packet_size" => {
            b.max_packet_size = line.int(
                0,
                i64::from(MQTT_MAX_PACKET_SIZE),
                "0 (no limit) or a size in bytes",
            )? as u32;
        }
        "bridge_max_queued_messages" => {
            b.max_queued_messages = line.usize("0 (no limit) or a message count")?;
        }
        "bridge_max_queued_bytes" => {
            b.max_queued_bytes = line.usize("0 (no limit) or a byte count")?;
        }
        "bridge_bind_address" => {
            let w = line.word()?;
            let ip = w.trim_start_matches('[').trim_end_matches(']');
            b.bind_address = Some(ip.parse::<IpAddr>().map_err(|_| {
                line.invalid("an IPv4 or IPv6 address (host names are not resolved)")
            })?);
        }
        "bridge_cafile" => set_path(&mut tls(b).cafile, line)?,
        "bridge_capath" => set_path(&mut tls(b).capath, line)?,
        "bridge_certfile" => set_path(&mut tls(b).certfile, line)?,
        "bridge_keyfile" => set_path(&mut tls(b).keyfile, line)?,
        "bridge_insecure" => {
            let insecure = line.bool()?;
            tls(b).insecure = insecure;
            if insecure {
                return Ok(Some(
                    "the upstream's certificate host name is not checked (insecure mode)",
                ));
            }
        }
        "bridge_tls_version" => {
            tls(b).min_version = match line.word()? {
                "tlsv1.2" => TlsVersion::V12,
                "tlsv1.3" => TlsVersion::V13,
                "tlsv1.1" | "tlsv1" => {
                    return Err(line.error(ErrorKind::Unsupported(
                        "TLS before 1.2 (tlsv1.2 and tlsv1.3 are available)",
                    )))
                }
                _ => return Err(line.invalid("tlsv1.2 or tlsv1.3")),
            }
        }
        "bridge_alpn" => {
            let alpn = line.word()?.to_string();
            let slot = &mut tls(b).alpn;
            if slot.is_some() {
                return Err(dup(line));
            }
            *slot = Some(alpn);
        }
        // `is_bridge_key` and BRIDGE_KEYS keep this unreachable; an error, not a panic.
        _ => {
            return Err(line.error(ErrorKind::UnknownKey {
                suggestion: super::suggest::suggest(line.key),
            }))
        }
    }
    Ok(None)
}

fn tls(b: &mut BridgeConfig) -> &mut BridgeTls {
    b.tls.get_or_insert_with(BridgeTls::default)
}

fn dup(line: &Line<'_>) -> ConfigError {
    line.error(ErrorKind::Bridge(BridgeError::Duplicate))
}

/// A string value (the rest of the line, as Mosquitto's `conf__parse_string`); given
/// twice is an error, as in Mosquitto.
fn set_string(slot: &mut Option<String>, line: &Line<'_>) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(dup(line));
    }
    *slot = Some(line.text()?.to_string());
    Ok(())
}

fn set_path(slot: &mut Option<PathBuf>, line: &Line<'_>) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(dup(line));
    }
    *slot = Some(line.path()?);
    Ok(())
}

/// The words of the value up to a `#` comment.
fn words<'a>(line: &'a Line<'a>) -> Result<Vec<&'a str>, ConfigError> {
    let words: Vec<&str> = line
        .text()?
        .split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .collect();
    if words.is_empty() {
        return Err(line.error(ErrorKind::MissingValue));
    }
    Ok(words)
}

/// `address host[:port] [host[:port] ...]`. As in Mosquitto the port follows the last
/// `:`; an IPv6 address may also be written `[addr]` or `[addr]:port`.
fn parse_addresses(line: &Line<'_>) -> Result<Vec<BridgeAddress>, ConfigError> {
    const EXPECTED: &str = "host[:port] entries with ports 1-65535";
    let mut out = Vec::new();
    for w in words(line)? {
        let (host, port) = if let Some(rest) = w.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| line.invalid(EXPECTED))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| line.invalid(EXPECTED))?),
                ),
            }
        } else {
            match w.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (w, None),
            }
        };
        let port = match port {
            None => DEFAULT_BRIDGE_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(line.invalid(EXPECTED)),
            },
        };
        if host.is_empty() {
            return Err(line.invalid(EXPECTED));
        }
        out.push(BridgeAddress {
            host: host.to_string(),
            port,
        });
    }
    Ok(out)
}

/// `topic pattern [in|out|both [qos [local-prefix remote-prefix]]]`, validated as
/// Mosquitto's `bridge__add_topic`: prefixes are topic names (no wildcards), prefix +
/// pattern is a valid filter, and `""` as the pattern needs both prefixes. `""` for a
/// prefix means none.
fn parse_topic(line: &Line<'_>) -> Result<BridgeTopic, ConfigError> {
    // The first word is the pattern even when it starts with `#` (`topic # out`); a `#`
    // word after it starts a comment.
    let mut all = line.text()?.split_whitespace();
    let first = all
        .next()
        .ok_or_else(|| line.error(ErrorKind::MissingValue))?;
    let words: Vec<&str> = std::iter::once(first)
        .chain(all.take_while(|w| !w.starts_with('#')))
        .collect();
    if words.len() > 5 {
        return Err(line.invalid("pattern [in|out|both [qos [local-prefix remote-prefix]]]"));
    }
    let quoted_empty = |w: &str| {
        if w == "\"\"" {
            None
        } else {
            Some(w.to_string())
        }
    };
    let pattern = quoted_empty(words[0]);
    let direction = match words.get(1).map(|w| w.to_ascii_lowercase()).as_deref() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(_) => return Err(line.invalid("a direction: in, out or both")),
    };
    let qos = match words.get(2) {
        None => QoS::AtMostOnce,
        Some(w) => w
            .parse::<u8>()
            .ok()
            .and_then(QoS::from_u8)
            .ok_or_else(|| line.invalid("a QoS of 0, 1 or 2"))?,
    };
    let local_prefix = words.get(3).and_then(|w| quoted_empty(w));
    let remote_prefix = words.get(4).and_then(|w| quoted_empty(w));
    if pattern.is_none() && (local_prefix.is_none() || remote_prefix.is_none()) {
        return Err(line.error(ErrorKind::Bridge(BridgeError::RemappingNeedsPrefixes)));
    }
    let t = BridgeTopic {
        pattern,
        direction,
        qos,
        local_prefix,
        remote_prefix,
    };
    for prefix in [&t.local_prefix, &t.remote_prefix].into_iter().flatten() {
        if !topic::is_valid_topic_name(prefix) {
            return Err(line.invalid("prefixes without wildcards"));
        }
    }
    if !topic::is_valid_topic_filter(&t.local_filter())
        || !topic::is_valid_topic_filter(&t.remote_filter())
    {
        return Err(line.invalid("a valid topic filter (prefix + pattern)"));
    }
    Ok(t)
}

/// `restart_timeout N` (constant) or `restart_timeout BASE CAP` (jittered backoff).
fn parse_restart(b: &mut BridgeConfig, line: &Line<'_>) -> Result<Applied, ConfigError> {
    const EXPECTED: &str = "seconds, or a base and a cap in seconds";
    let words = words(line)?;
    let secs = |w: &str| w.parse::<u32>().map_err(|_| line.invalid(EXPECTED));
    let (first, notice) = match secs(words[0])? {
        0 => (1, Some("restart_timeout too low, using 1 second")),
        n => (n, None),
    };
    let first = Duration::from_secs(u64::from(first));
    b.restart = match words[1..] {
        [] => Restart::Constant(first),
        [cap] => {
            let cap = Duration::from_secs(u64::from(secs(cap)?));
            if cap < first {
                return Err(line.invalid("a cap not lower than the base"));
            }
            Restart::Backoff { base: first, cap }
        }
        _ => return Err(line.invalid(EXPECTED)),
    };
    Ok(notice)
}

#[cfg(test)]
mod tests;
