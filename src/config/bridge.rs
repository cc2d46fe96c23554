//! Bridges (`connection` blocks): one [`BridgeConfig`] per `connection` line, with
//! Mosquitto 2.0's keys, meanings and defaults (mosquitto.conf(5), "Configuring Bridges").
//!
//! Parsing lives in `parse::bridge`; this file holds the typed result and what is derived
//! from it (client ids, the notification topic, topic remapping). Values that need the
//! host (the default `remote_clientid` is `<hostname>.<connection name>`) are computed by
//! the runtime from a hostname it passes in, so parsing stays pure.
//!
//! Differences from Mosquitto, on purpose: a TLS key (`bridge_certfile`, `bridge_insecure`,
//! ...) without `bridge_cafile`/`bridge_capath` is an error (Mosquitto silently connects
//! in plain TCP); `bridge_certfile` needs `bridge_keyfile` and the reverse; the pattern of a
//! `topic` line must be a valid topic filter; a string key given twice for one bridge is an
//! error (as in Mosquitto); `restart_timeout N` with one value is a constant delay (what
//! the manual says).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::topic;
use crate::protocol::{ProtocolVersion, QoS};

/// The MQTT port, for `address` entries without one.
pub const DEFAULT_BRIDGE_PORT: u16 = 1883;

/// `bridge_max_queued_messages` by default: a million 16-byte index entries, 16 MiB of RAM.
pub const DEFAULT_BRIDGE_QUEUED_MESSAGES: usize = 1_000_000;
/// `bridge_max_queued_bytes` by default: 128 MiB of messages in the data files, which an SD
/// card holds with room to spare (Mosquitto keeps its bridge queue in RAM and bounds it
/// only by the global `max_queued_messages`, 1000 by default, dropping the rest).
pub const DEFAULT_BRIDGE_QUEUED_BYTES: usize = 128 << 20;

/// One `connection` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The `connection` value; unique in the file.
    pub name: String,
    /// The file and 1-based line of the `connection` line, for messages.
    pub file: PathBuf,
    pub line: usize,
    /// `address`/`addresses`: tried in order; the first is the primary.
    pub addresses: Vec<BridgeAddress>,
    /// `round_robin`: false (default) = after a failover, return to the primary when it is
    /// reachable again; true = stay on the address that works, moving on only when it fails.
    pub round_robin: bool,
    /// `topic` lines in file order, duplicates removed. Never empty after parsing.
    pub topics: Vec<BridgeTopic>,
    /// `bridge_protocol_version`: mqttv31, mqttv311 (default) or mqttv50.
    pub protocol_version: ProtocolVersion,
    /// `cleansession` (default false): the remote session.
    pub clean_session: bool,
    /// `local_cleansession`: the local session; `None` = the same as `cleansession`.
    pub local_clean_session: Option<bool>,
    /// `remote_clientid` (alias `clientid`); `None` = `<hostname>.<name>`.
    pub remote_clientid: Option<String>,
    /// `local_clientid`; `None` = `local.<remote client id>`.
    pub local_clientid: Option<String>,
    /// `remote_username` (alias `username`) and `remote_password` (alias `password`).
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    /// `local_username` / `local_password`: for the local side's ACL checks.
    pub local_username: Option<String>,
    pub local_password: Option<String>,
    /// `try_private` (default true): on 3.1/3.1.1 set bit 0x80 of the protocol level so
    /// an upstream Mosquitto treats us as a bridge (no echo of our own messages, retain
    /// flag kept).
    pub try_private: bool,
    /// `notifications` (default true): retained "1"/"0" state messages.
    pub notifications: bool,
    /// `notification_topic`; `None` = `$SYS/broker/connection/<remote client id>/state`.
    pub notification_topic: Option<String>,
    /// `notifications_local_only` (default false): publish the state only locally (no will
    /// and no "1" upstream).
    pub notifications_local_only: bool,
    /// `keepalive_interval` (default 60 s, at least 5 s).
    pub keepalive: u16,
    /// `restart_timeout`.
    pub restart: Restart,
    /// `start_type` (default automatic).
    pub start_type: StartType,
    /// `threshold` (default 10, at least 1): messages queued before a lazy bridge starts.
    pub threshold: u32,
    /// `idle_timeout` (default 60 s, at least 1 s): a lazy bridge stops after this long
    /// without traffic.
    pub idle_timeout: Duration,
    /// `bridge_attempt_unsubscribe` (default true): unsubscribe from `out` topics on
    /// connect, cleaning up after a configuration change.
    pub attempt_unsubscribe: bool,
    /// `bridge_outgoing_retain` (default true): false clears the retain flag on messages
    /// sent upstream.
    pub outgoing_retain: bool,
    /// `bridge_max_packet_size` (default 0 = no limit): the largest packet sent to the
    /// upstream; with a 5.0 upstream the smaller of this and its Maximum Packet Size.
    pub max_packet_size: u32,
    /// `bridge_max_queued_messages` (wrenmq; default [`DEFAULT_BRIDGE_QUEUED_MESSAGES`], 0 =
    /// no limit): messages the outbound queue holds behind those in flight. RAM per queued
    /// message is a 16-byte index entry, so this bounds the queue's memory.
    pub max_queued_messages: usize,
    /// `bridge_max_queued_bytes` (wrenmq; default [`DEFAULT_BRIDGE_QUEUED_BYTES`], 0 = no
    /// limit): topic, payload and MQTT 5 property bytes the outbound queue holds, kept in
    /// the data files: the queue's disk bound. At either bound new QoS 1/2 messages for
    /// the bridge are refused to their publisher (`broker/bridge_queue.rs`).
    pub max_queued_bytes: usize,
    /// `bridge_bind_address`: the local address the outgoing connection uses.
    pub bind_address: Option<IpAddr>,
    /// TLS to the upstream; `None` = plain TCP (neither `bridge_cafile` nor `bridge_capath`).
    pub tls: Option<BridgeTls>,
}

/// One `address` entry: a host name or address, and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BridgeAddress {
    /// A host name (resolved when connecting) or an IP address, without brackets.
    pub host: String,
    pub port: u16,
}

/// Which way messages matching a `topic` line flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Local to remote (the default).
    Out,
    /// Remote to local.
    In,
    Both,
}

/// One `topic pattern [in|out|both [qos [local-prefix remote-prefix]]]` line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BridgeTopic {
    /// `None` for `""`: the prefixes alone name the topic on each side.
    pub pattern: Option<String>,
    pub direction: Direction,
    /// Subscription QoS on the side messages come from (default 0).
    pub qos: QoS,
    pub local_prefix: Option<String>,
    pub remote_prefix: Option<String>,
}

/// `restart_timeout`: how long to wait before reconnecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// `restart_timeout N`: always N seconds.
    Constant(Duration),
    /// `restart_timeout BASE CAP`: "decorrelated jitter" backoff, each delay drawn between
    /// `base` and three times the previous delay, at most `cap`; back to `base` after a
    /// successful connection. The default is 5 s / 30 s.
    Backoff { base: Duration, cap: Duration },
}

/// `start_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartType {
    /// Connect at start-up and reconnect after `restart_timeout` whenever the link drops.
    Automatic,
    /// Connect once `threshold` messages are queued; disconnect after `idle_timeout`.
    Lazy,
    /// Connect at start-up once; never reconnect.
    Once,
}

/// TLS settings of a bridge (`bridge_cafile` ...).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BridgeTls {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `bridge_insecure`: do not check the server's host name against its certificate.
    pub insecure: bool,
    /// `bridge_tls_version`: the lowest version accepted (Mosquitto's meaning).
    pub min_version: TlsVersion,
    /// `bridge_alpn`.
    pub alpn: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// `tlsv1.2`, the default.
    #[default]
    V12,
    /// `tlsv1.3`.
    V13,
}

/// What is wrong with a bridge setting beyond a value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BridgeError {
    /// A bridge key before any `connection` line (of this file: as in Mosquitto, a bridge
    /// is only continued in the file that opened it).
    OutsideConnection,
    /// A second `connection` with a name already used.
    DuplicateName,
    /// A key given twice for one bridge where that is ambiguous (strings, `address`).
    Duplicate,
    /// A `connection` without `address`.
    NoAddress,
    /// A `connection` without any `topic`.
    NoTopics,
    /// Two bridges with the same local client id.
    LocalClientIdNotUnique(String),
    /// `topic ""` without both prefixes.
    RemappingNeedsPrefixes,
    /// A TLS key without `bridge_cafile` or `bridge_capath` (TLS would silently be off).
    TlsWithoutCa,
    /// `bridge_certfile` without `bridge_keyfile`, or the reverse.
    CertWithoutKey,
    /// `remote_password` without `remote_username` on 3.1/3.1.1, where CONNECT cannot
    /// carry it [MQTT-3.1.2-22].
    PasswordWithoutUsername,
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::OutsideConnection => f.write_str(
                "a bridge setting, only valid after a `connection` line in the same file",
            ),
            BridgeError::DuplicateName => f.write_str("a bridge with this name is already defined"),
            BridgeError::Duplicate => f.write_str("given twice for the same bridge"),
            BridgeError::NoAddress => f.write_str("bridge has no `address`"),
            BridgeError::NoTopics => f.write_str("bridge has no `topic`"),
            BridgeError::LocalClientIdNotUnique(id) => write!(
                f,
                "local client id '{id}' is used by another bridge; set `local_clientid`"
            ),
            BridgeError::RemappingNeedsPrefixes => {
                f.write_str("topic \"\" needs both a local and a remote prefix")
            }
            BridgeError::TlsWithoutCa => f.write_str(
                "TLS settings need `bridge_cafile` or `bridge_capath`; without them the bridge \
                 would connect unencrypted",
            ),
            BridgeError::CertWithoutKey => {
                f.write_str("`bridge_certfile` and `bridge_keyfile` must be given together")
            }
            BridgeError::PasswordWithoutUsername => f.write_str(
                "`remote_password` needs `remote_username` before MQTT 5 (bridge_protocol_version)",
            ),
        }
    }
}

impl BridgeConfig {
    /// A bridge with Mosquitto 2.0's defaults and no address or topic yet.
    pub fn new(name: &str, file: PathBuf, line: usize) -> BridgeConfig {
        BridgeConfig {
            name: name.to_string(),
            file,
            line,
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            protocol_version: ProtocolVersion::V311,
            clean_session: false,
            local_clean_session: None,
            remote_clientid: None,
            local_clientid: None,
            remote_username: None,
            remote_password: None,
            local_username: None,
            local_password: None,
            try_private: true,
            notifications: true,
            notification_topic: None,
            notifications_local_only: false,
            keepalive: 60,
            restart: Restart::Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(30),
            },
            start_type: StartType::Automatic,
            threshold: 10,
            idle_timeout: Duration::from_secs(60),
            attempt_unsubscribe: true,
            outgoing_retain: true,
            max_packet_size: 0,
            max_queued_messages: DEFAULT_BRIDGE_QUEUED_MESSAGES,
            max_queued_bytes: DEFAULT_BRIDGE_QUEUED_BYTES,
            bind_address: None,
            tls: None,
        }
    }

    /// The client id used upstream: `remote_clientid`, or `<hostname>.<name>` (Mosquitto).
    pub fn remote_clientid(&self, hostname: &str) -> String {
        match &self.remote_clientid {
            Some(id) => id.clone(),
            None => format!("{hostname}.{}", self.name),
        }
    }

    /// The client id of the bridge's local session: `local_clientid`, or
    /// `local.<remote client id>` (Mosquitto).
    pub fn local_clientid(&self, hostname: &str) -> String {
        match &self.local_clientid {
            Some(id) => id.clone(),
            None => format!("local.{}", self.remote_clientid(hostname)),
        }
    }

    /// The local client id when it does not depend on the host name.
    pub(crate) fn local_clientid_if_fixed(&self) -> Option<String> {
        match (&self.local_clientid, &self.remote_clientid) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(remote)) => Some(format!("local.{remote}")),
            (None, None) => None,
        }
    }

    /// Where the "1"/"0" state is published: `notification_topic`, or
    /// `$SYS/broker/connection/<remote client id>/state`.
    pub fn notification_topic(&self, hostname: &str) -> String {
        match &self.notification_topic {
            Some(t) => t.clone(),
            None => format!(
                "$SYS/broker/connection/{}/state",
                self.remote_clientid(hostname)
            ),
        }
    }

    /// The local session's clean flag.
    pub fn local_clean_session(&self) -> bool {
        self.local_clean_session.unwrap_or(self.clean_session)
    }
}

impl BridgeTopic {
    /// The filter on the local side: local prefix + pattern.
    pub fn local_filter(&self) -> String {
        join(self.local_prefix.as_deref(), self.pattern.as_deref())
    }

    /// The filter on the remote side: remote prefix + pattern.
    pub fn remote_filter(&self) -> String {
        join(self.remote_prefix.as_deref(), self.pattern.as_deref())
    }

    /// Whether messages flow local → remote.
    pub fn is_out(&self) -> bool {
        matches!(self.direction, Direction::Out | Direction::Both)
    }

    /// Whether messages flow remote → local.
    pub fn is_in(&self) -> bool {
        matches!(self.direction, Direction::In | Direction::Both)
    }

    /// The remote topic for a local `topic`, if this line sends it upstream: the local
    /// prefix replaced by the remote one. `None` if the line is not `out`/`both` or the
    /// topic does not match.
    pub fn map_out(&self, local_topic: &str) -> Option<String> {
        if !self.is_out() {
            return None;
        }
        remap(
            &self.local_filter(),
            self.local_prefix.as_deref(),
            self.remote_prefix.as_deref(),
            local_topic,
        )
    }

    /// This line's local filter when it sends messages upstream and the filter is valid
    /// (what [`BridgeTopic::map_out`] checks each time): computed once per line by the
    /// bridge, for [`BridgeTopic::map_out_with`].
    pub fn out_filter(&self) -> Option<String> {
        let f = self.local_filter();
        (self.is_out() && topic::is_valid_topic_filter(&f)).then_some(f)
    }

    /// [`BridgeTopic::map_out`] given this line's [`BridgeTopic::out_filter`]: the bridge
    /// maps every forwarded message, and building the filter each time was a large share
    /// of its CPU per message.
    /// Borrowed when no prefix is replaced (the common case: nothing to allocate).
    pub fn map_out_with<'a>(
        &self,
        out_filter: Option<&str>,
        local_topic: &'a str,
    ) -> Option<Cow<'a, str>> {
        remap_valid(
            out_filter?,
            self.local_prefix.as_deref(),
            self.remote_prefix.as_deref(),
            local_topic,
        )
    }

    /// The local topic for a remote `topic`, if this line brings it in: the remote prefix
    /// replaced by the local one (Mosquitto's `bridge__remap_topic_in`).
    pub fn map_in(&self, remote_topic: &str) -> Option<String> {
        if !self.is_in() {
            return None;
        }
        remap(
            &self.remote_filter(),
            self.remote_prefix.as_deref(),
            self.local_prefix.as_deref(),
            remote_topic,
        )
    }
}

fn join(prefix: Option<&str>, pattern: Option<&str>) -> String {
    let mut s = String::with_capacity(prefix.map_or(0, str::len) + pattern.map_or(0, str::len));
    s.push_str(prefix.unwrap_or(""));
    s.push_str(pattern.unwrap_or(""));
    s
}

/// `topic` matches `filter` (prefix `from` + pattern): strip `from`, add `to`.
fn remap(filter: &str, from: Option<&str>, to: Option<&str>, topic: &str) -> Option<String> {
    if !topic::is_valid_topic_filter(filter) {
        return None;
    }
    remap_valid(filter, from, to, topic).map(Cow::into_owned)
}

/// [`remap`] for a `filter` already known valid.
fn remap_valid<'a>(
    filter: &str,
    from: Option<&str>,
    to: Option<&str>,
    topic: &'a str,
) -> Option<Cow<'a, str>> {
    if !topic::matches(filter, topic) {
        return None;
    }
    let rest = match from {
        Some(p) => topic.strip_prefix(p)?,
        None => topic,
    };
    let out = match to {
        Some(to) if !to.is_empty() => Cow::Owned(join(Some(to), Some(rest))),
        _ => Cow::Borrowed(rest),
    };
    // A topic that was only the prefix maps to only the other prefix; an empty result
    // (no prefix on the other side) is not a topic name.
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pattern: Option<&str>, d: Direction, l: Option<&str>, r: Option<&str>) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.map(str::to_string),
            direction: d,
            qos: QoS::AtLeastOnce,
            local_prefix: l.map(str::to_string),
            remote_prefix: r.map(str::to_string),
        }
    }

    #[test]
    fn remap_swaps_prefixes_both_ways() {
        let topic = t(
            Some("sensors/#"),
            Direction::Both,
            Some("site/"),
            Some("gw1/"),
        );
        assert_eq!(topic.local_filter(), "site/sensors/#");
        assert_eq!(topic.remote_filter(), "gw1/sensors/#");
        assert_eq!(
            topic.map_out("site/sensors/t1").as_deref(),
            Some("gw1/sensors/t1")
        );
        assert_eq!(
            topic.map_in("gw1/sensors/t1").as_deref(),
            Some("site/sensors/t1")
        );
        assert_eq!(topic.map_out("other/sensors/t1"), None);
        assert_eq!(topic.map_in("site/sensors/t1"), None);
    }

    #[test]
    fn remap_respects_direction() {
        let out = t(Some("a/#"), Direction::Out, None, None);
        assert_eq!(out.map_out("a/b").as_deref(), Some("a/b"));
        assert_eq!(out.map_in("a/b"), None);
        let inn = t(Some("a/#"), Direction::In, None, Some("up/"));
        assert_eq!(inn.map_in("up/a/b").as_deref(), Some("a/b"));
        assert_eq!(inn.map_out("a/b"), None);
    }

    #[test]
    fn empty_pattern_maps_one_topic_to_another() {
        // `topic "" out 0 local/full/name remote/other/name`
        let topic = t(None, Direction::Out, Some("a/b"), Some("c/d"));
        assert_eq!(topic.map_out("a/b").as_deref(), Some("c/d"));
        assert_eq!(topic.map_out("a/b/c"), None);
    }

    #[test]
    fn derived_client_ids_and_notification_topic() {
        let mut b = BridgeConfig::new("cloud", PathBuf::from("/w.conf"), 3);
        assert_eq!(b.remote_clientid("gw"), "gw.cloud");
        assert_eq!(b.local_clientid("gw"), "local.gw.cloud");
        assert_eq!(
            b.notification_topic("gw"),
            "$SYS/broker/connection/gw.cloud/state"
        );
        assert_eq!(b.local_clientid_if_fixed(), None);
        b.remote_clientid = Some("r".into());
        assert_eq!(b.local_clientid_if_fixed().as_deref(), Some("local.r"));
        b.notification_topic = Some("n/t".into());
        assert_eq!(b.notification_topic("gw"), "n/t");
        assert!(!b.local_clean_session());
        b.clean_session = true;
        assert!(b.local_clean_session());
        b.local_clean_session = Some(false);
        assert!(!b.local_clean_session());
    }
}
