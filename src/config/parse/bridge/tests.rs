//! Bridge blocks, good and bad, with the exact messages users see.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::{parse_with, MemSource, Parsed};
use super::BRIDGE_KEYS;
use crate::config::bridge::{
    BridgeAddress, BridgeConfig, BridgeTopic, Direction, Restart, StartType, TlsVersion,
};
use crate::config::ErrorKind;
use crate::protocol::{ProtocolVersion, QoS};

const FILE: &str = "/etc/w.conf";
/// A minimal valid bridge; tests append the line they are about.
const BASE: &str = "connection up\naddress 10.0.0.1\ntopic a/# out 1\n";

fn parse(files: &[(&str, &str)]) -> Result<Parsed, String> {
    let src = MemSource(
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect(),
    );
    parse_with(&src, Path::new(FILE)).map_err(|e| e.to_string())
}

fn ok(text: &str) -> Parsed {
    parse(&[(FILE, text)]).unwrap_or_else(|e| panic!("{text:?} failed: {e}"))
}

fn bridge(extra: &str) -> BridgeConfig {
    let p = ok(&format!("{BASE}{extra}"));
    assert_eq!(p.config.bridges.len(), 1);
    p.config.bridges[0].clone()
}

fn err(text: &str) -> String {
    match parse(&[(FILE, text)]) {
        Ok(p) => panic!("{text:?} parsed: {:?}", p.config.bridges),
        Err(e) => e,
    }
}

/// The error for `extra` appended to a valid bridge (line 4).
fn err_line4(extra: &str) -> String {
    err(&format!("{BASE}{extra}"))
}

fn topic(line: &str) -> BridgeTopic {
    bridge(&format!("{line}\n")).topics[1].clone()
}

#[test]
fn defaults_are_mosquitto_2_0s() {
    let b = bridge("");
    let mut want = BridgeConfig::new("up", PathBuf::from(FILE), 1);
    want.addresses = vec![BridgeAddress {
        host: "10.0.0.1".into(),
        port: 1883,
    }];
    want.topics = vec![BridgeTopic {
        pattern: Some("a/#".into()),
        direction: Direction::Out,
        qos: QoS::AtLeastOnce,
        local_prefix: None,
        remote_prefix: None,
    }];
    assert_eq!(b, want);
    assert_eq!(b.protocol_version, ProtocolVersion::V311);
    assert!(!b.clean_session && b.local_clean_session.is_none());
    assert!(b.try_private && b.notifications && !b.notifications_local_only);
    assert!(b.attempt_unsubscribe && b.outgoing_retain && !b.round_robin);
    assert_eq!(b.keepalive, 60);
    assert_eq!(
        b.restart,
        Restart::Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(30)
        }
    );
    assert_eq!(b.start_type, StartType::Automatic);
    assert_eq!(b.threshold, 10);
    assert_eq!(b.idle_timeout, Duration::from_secs(60));
    assert_eq!(b.max_packet_size, 0);
    assert_eq!(b.bind_address, None);
    assert_eq!(b.tls, None);
}

#[test]
fn several_bridges_and_global_keys_between_them() {
    let p = ok(
        "connection a\naddress h1:1884 h2\ntopic x in\nmax_inflight_messages 5\n\
                connection b\naddresses [::1]:8883 ::2:1000\ntopic y both 2\n",
    );
    let names: Vec<_> = p.config.bridges.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(p.config.max_inflight_messages, 5);
    let a = &p.config.bridges[0];
    assert_eq!(
        a.addresses,
        [
            BridgeAddress {
                host: "h1".into(),
                port: 1884
            },
            BridgeAddress {
                host: "h2".into(),
                port: 1883
            }
        ]
    );
    assert_eq!(a.line, 1);
    let b = &p.config.bridges[1];
    assert_eq!(b.line, 5);
    assert_eq!(b.addresses[0].host, "::1");
    assert_eq!(b.addresses[0].port, 8883);
    assert_eq!(b.addresses[1].host, "::2");
    assert_eq!(b.addresses[1].port, 1000);
    assert_eq!(b.topics[0].direction, Direction::Both);
    assert_eq!(b.topics[0].qos, QoS::ExactlyOnce);
}

#[test]
fn address_errors() {
    assert_eq!(
        err_line4("address 10.0.0.2"),
        "/etc/w.conf:4: address: given twice for the same bridge"
    );
    for bad in ["h:0", "h:65536", "h:x", ":1883", "[::1", "[::1]x"] {
        let e = err(&format!("connection up\naddress {bad}\ntopic a\n"));
        assert!(
            e.starts_with(&format!(
                "/etc/w.conf:2: address: invalid value '{bad}' (expected host[:port]"
            )),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        err("connection up\naddress\ntopic a\n"),
        "/etc/w.conf:2: address: missing value\n/etc/w.conf:1: connection: bridge has no `address`"
    );
}

#[test]
fn topic_forms() {
    let t = topic("topic b/+");
    assert_eq!(
        (t.pattern.as_deref(), t.direction, t.qos),
        (Some("b/+"), Direction::Out, QoS::AtMostOnce)
    );
    let t = topic("topic b IN 2 # a comment");
    assert_eq!((t.direction, t.qos), (Direction::In, QoS::ExactlyOnce));
    let t = topic("topic # both 1 local/ remote/");
    assert_eq!(t.local_prefix.as_deref(), Some("local/"));
    assert_eq!(t.remote_prefix.as_deref(), Some("remote/"));
    assert_eq!(t.local_filter(), "local/#");
    assert_eq!(t.remote_filter(), "remote/#");
    let t = topic("topic # out 0 \"\" remote/");
    assert_eq!(t.local_prefix, None);
    let t = topic("topic \"\" out 0 a/b c/d");
    assert_eq!(t.pattern, None);
    assert_eq!(
        (t.local_filter(), t.remote_filter()),
        ("a/b".into(), "c/d".into())
    );
    // A repeated line is skipped, as in Mosquitto.
    assert_eq!(bridge("topic a/# out 1\n").topics.len(), 1);
}

#[test]
fn topic_errors() {
    let cases = [
        ("topic", "/etc/w.conf:4: topic: missing value"),
        (
            "topic a sideways",
            "/etc/w.conf:4: topic: invalid value 'a sideways' (expected a direction: in, out or both)",
        ),
        (
            "topic a in 3",
            "/etc/w.conf:4: topic: invalid value 'a in 3' (expected a QoS of 0, 1 or 2)",
        ),
        (
            "topic \"\" in 1 a/",
            "/etc/w.conf:4: topic: topic \"\" needs both a local and a remote prefix",
        ),
        (
            "topic \"\"",
            "/etc/w.conf:4: topic: topic \"\" needs both a local and a remote prefix",
        ),
        (
            "topic a/#/b",
            "/etc/w.conf:4: topic: invalid value 'a/#/b' (expected a valid topic filter (prefix + pattern))",
        ),
        (
            "topic a in 0 l/+/ r/",
            "/etc/w.conf:4: topic: invalid value 'a in 0 l/+/ r/' (expected prefixes without wildcards)",
        ),
        (
            // The prefix makes `#` not the last level's only character.
            "topic #x in 0 l/ r/",
            "/etc/w.conf:4: topic: invalid value '#x in 0 l/ r/' (expected a valid topic filter (prefix + pattern))",
        ),
        (
            "topic a in 0 l/ r/ extra",
            "/etc/w.conf:4: topic: invalid value 'a in 0 l/ r/ extra' \
             (expected pattern [in|out|both [qos [local-prefix remote-prefix]]])",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(err_line4(line), want, "{line}");
    }
}

#[test]
fn booleans_and_strings() {
    let b = bridge(
        "round_robin true\ncleansession true\nlocal_cleansession false\ntry_private false\n\
         notifications false\nnotifications_local_only true\nbridge_attempt_unsubscribe false\n\
         bridge_outgoing_retain false\nremote_clientid r-id\nlocal_clientid l-id\n\
         remote_username ru\nremote_password rp w\nlocal_username lu\nlocal_password lp\n\
         notification_topic n/state\n",
    );
    assert!(b.round_robin && b.clean_session && !b.local_clean_session());
    assert!(!b.try_private && !b.notifications && b.notifications_local_only);
    assert!(!b.attempt_unsubscribe && !b.outgoing_retain);
    assert_eq!(b.remote_clientid.as_deref(), Some("r-id"));
    assert_eq!(b.local_clientid.as_deref(), Some("l-id"));
    assert_eq!(b.remote_username.as_deref(), Some("ru"));
    // Strings are the rest of the line, as in Mosquitto (passwords may contain spaces).
    assert_eq!(b.remote_password.as_deref(), Some("rp w"));
    assert_eq!(b.local_username.as_deref(), Some("lu"));
    assert_eq!(b.local_password.as_deref(), Some("lp"));
    assert_eq!(b.notification_topic.as_deref(), Some("n/state"));
}

#[test]
fn aliases_of_mosquitto_1_x() {
    let b = bridge("clientid c\nusername u\npassword p\n");
    assert_eq!(b.remote_clientid.as_deref(), Some("c"));
    assert_eq!(b.remote_username.as_deref(), Some("u"));
    assert_eq!(b.remote_password.as_deref(), Some("p"));
    assert_eq!(
        err_line4("clientid c\nremote_clientid d"),
        "/etc/w.conf:5: remote_clientid: given twice for the same bridge"
    );
}

#[test]
fn value_errors_name_line_and_key() {
    let cases = [
        (
            "round_robin yes",
            "/etc/w.conf:4: round_robin: invalid value 'yes' (expected true or false)",
        ),
        (
            "bridge_protocol_version mqttv5",
            "/etc/w.conf:4: bridge_protocol_version: invalid value 'mqttv5' \
             (expected mqttv31, mqttv311 or mqttv50)",
        ),
        (
            "keepalive_interval 70000",
            "/etc/w.conf:4: keepalive_interval: invalid value '70000' \
             (expected a number of seconds up to 65535)",
        ),
        (
            "start_type later",
            "/etc/w.conf:4: start_type: invalid value 'later' (expected automatic, lazy or once)",
        ),
        (
            "start_type manual",
            "/etc/w.conf:4: start_type: not supported: start_type manual \
             (Mosquitto does not support it either)",
        ),
        (
            "threshold many",
            "/etc/w.conf:4: threshold: invalid value 'many' (expected a message count)",
        ),
        (
            "idle_timeout 1m",
            "/etc/w.conf:4: idle_timeout: invalid value '1m' (expected a number of seconds)",
        ),
        (
            "bridge_max_packet_size -1",
            "/etc/w.conf:4: bridge_max_packet_size: invalid value '-1' \
             (expected 0 (no limit) or a size in bytes)",
        ),
        (
            "bridge_bind_address eth0",
            "/etc/w.conf:4: bridge_bind_address: invalid value 'eth0' \
             (expected an IPv4 or IPv6 address (host names are not resolved))",
        ),
        (
            "notification_topic a/+/state",
            "/etc/w.conf:4: notification_topic: invalid value 'a/+/state' \
             (expected a topic name without wildcards)",
        ),
        (
            "bridge_tls_version tlsv1.1",
            "/etc/w.conf:4: bridge_tls_version: not supported: TLS before 1.2 \
             (tlsv1.2 and tlsv1.3 are available)",
        ),
        (
            "bridge_tls_version ssl3",
            "/etc/w.conf:4: bridge_tls_version: invalid value 'ssl3' (expected tlsv1.2 or tlsv1.3)",
        ),
        (
            "local_username",
            "/etc/w.conf:4: local_username: missing value",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(err_line4(line), want, "{line}");
    }
}

#[test]
fn protocol_versions() {
    for (word, v) in [
        ("mqttv31", ProtocolVersion::V31),
        ("mqttv311", ProtocolVersion::V311),
        ("mqttv50", ProtocolVersion::V5),
    ] {
        let b = bridge(&format!("bridge_protocol_version {word}\n"));
        assert_eq!(b.protocol_version, v);
    }
}

#[test]
fn numbers_and_mosquitto_minimums_with_a_warning() {
    let b = bridge(
        "keepalive_interval 30\nthreshold 500\nidle_timeout 90\nbridge_max_packet_size 65536\n\
         start_type lazy\n",
    );
    assert_eq!(b.keepalive, 30);
    assert_eq!(b.threshold, 500);
    assert_eq!(b.idle_timeout, Duration::from_secs(90));
    assert_eq!(b.max_packet_size, 65536);
    assert_eq!(b.start_type, StartType::Lazy);
    assert_eq!(bridge("start_type once\n").start_type, StartType::Once);
    let p = ok(&format!(
        "{BASE}keepalive_interval 2\nthreshold 0\nidle_timeout 0\nrestart_timeout 0\n"
    ));
    let b = &p.config.bridges[0];
    assert_eq!(b.keepalive, 5);
    assert_eq!(b.threshold, 1);
    assert_eq!(b.idle_timeout, Duration::from_secs(1));
    assert_eq!(b.restart, Restart::Constant(Duration::from_secs(1)));
    let warned: Vec<_> = p
        .warnings
        .iter()
        .map(|w| (w.line, w.key.as_str()))
        .collect();
    assert_eq!(
        warned,
        [
            (4, "keepalive_interval"),
            (5, "threshold"),
            (6, "idle_timeout"),
            (7, "restart_timeout")
        ]
    );
}

#[test]
fn restart_timeout_constant_or_backoff() {
    assert_eq!(
        bridge("restart_timeout 20\n").restart,
        Restart::Constant(Duration::from_secs(20))
    );
    assert_eq!(
        bridge("restart_timeout 10 60\n").restart,
        Restart::Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(60)
        }
    );
    assert_eq!(
        err_line4("restart_timeout 60 10"),
        "/etc/w.conf:4: restart_timeout: invalid value '60 10' (expected a cap not lower than the base)"
    );
    assert_eq!(
        err_line4("restart_timeout 1 2 3"),
        "/etc/w.conf:4: restart_timeout: invalid value '1 2 3' \
         (expected seconds, or a base and a cap in seconds)"
    );
    assert_eq!(
        err_line4("restart_timeout soon"),
        "/etc/w.conf:4: restart_timeout: invalid value 'soon' \
         (expected seconds, or a base and a cap in seconds)"
    );
}

#[test]
fn tls_keys() {
    let b = bridge(
        "bridge_cafile /ca.pem\nbridge_capath /certs\nbridge_certfile /c.pem\n\
         bridge_keyfile /k.pem\nbridge_insecure false\nbridge_tls_version tlsv1.3\n\
         bridge_alpn mqtt\nbridge_bind_address 192.168.1.2\n",
    );
    let tls = b.tls.expect("tls");
    assert_eq!(tls.cafile, Some(PathBuf::from("/ca.pem")));
    assert_eq!(tls.capath, Some(PathBuf::from("/certs")));
    assert_eq!(tls.certfile, Some(PathBuf::from("/c.pem")));
    assert_eq!(tls.keyfile, Some(PathBuf::from("/k.pem")));
    assert!(!tls.insecure);
    assert_eq!(tls.min_version, TlsVersion::V13);
    assert_eq!(tls.alpn.as_deref(), Some("mqtt"));
    assert_eq!(
        b.bind_address,
        Some("192.168.1.2".parse::<IpAddr>().unwrap())
    );
    let p = ok(&format!(
        "{BASE}bridge_cafile /ca.pem\nbridge_insecure true\n"
    ));
    assert!(p.config.bridges[0].tls.as_ref().is_some_and(|t| t.insecure));
    assert_eq!(p.warnings.len(), 1, "insecure mode is warned about");
}

#[test]
fn tls_without_ca_or_half_a_key_pair_is_refused() {
    assert_eq!(
        err_line4("bridge_certfile /c.pem\nbridge_keyfile /k.pem"),
        "/etc/w.conf:1: connection: TLS settings need `bridge_cafile` or `bridge_capath`; \
         without them the bridge would connect unencrypted"
    );
    assert_eq!(
        err_line4("bridge_cafile /ca.pem\nbridge_certfile /c.pem"),
        "/etc/w.conf:1: connection: `bridge_certfile` and `bridge_keyfile` must be given together"
    );
    assert_eq!(
        err_line4("bridge_cafile /a\nbridge_cafile /b"),
        "/etc/w.conf:5: bridge_cafile: given twice for the same bridge"
    );
}

#[test]
fn refused_and_unknown_bridge_keys() {
    assert_eq!(
        err_line4("bridge_psk 00ff"),
        "/etc/w.conf:4: bridge_psk: not supported: TLS-PSK bridges"
    );
    assert_eq!(
        err_line4("bridge_cafle /ca.pem"),
        "/etc/w.conf:4: bridge_cafle: unknown configuration key (did you mean `bridge_cafile`?)"
    );
    assert_eq!(
        err_line4("notificatons false"),
        "/etc/w.conf:4: notificatons: unknown configuration key (did you mean `notifications`?)"
    );
}

#[test]
fn bridge_keys_outside_a_connection_are_refused() {
    assert_eq!(
        err("address 10.0.0.1\n"),
        "/etc/w.conf:1: address: a bridge setting, only valid after a `connection` line \
         in the same file"
    );
    // A bridge does not continue into an included file, nor does the included file's
    // bridge continue after the include (Mosquitto keeps the current bridge per file).
    let main = "connection up\naddress h\ninclude_dir /etc/w.d\ntopic a\n";
    let inc = "topic b\nconnection inc\naddress i\ntopic c\n";
    let e = parse(&[(FILE, main), ("/etc/w.d/x.conf", inc)]).unwrap_err();
    assert_eq!(
        e,
        "/etc/w.d/x.conf:1: topic: a bridge setting, only valid after a `connection` line \
         in the same file"
    );
    let p = parse(&[(FILE, main), ("/etc/w.d/x.conf", &inc[8..])]).expect("valid");
    let topics: Vec<_> = p
        .config
        .bridges
        .iter()
        .map(|b| (b.name.as_str(), b.topics[0].pattern.as_deref()))
        .collect();
    assert_eq!(topics, [("up", Some("a")), ("inc", Some("c"))]);
}

#[test]
fn whole_bridge_errors_name_the_connection_line() {
    assert_eq!(
        err("connection a\naddress h\ntopic x\nconnection a\naddress h\ntopic x\n"),
        "/etc/w.conf:4: connection: a bridge with this name is already defined"
    );
    assert_eq!(
        err("connection a\ntopic x\n"),
        "/etc/w.conf:1: connection: bridge has no `address`"
    );
    assert_eq!(
        err("connection a\naddress h\n"),
        "/etc/w.conf:1: connection: bridge has no `topic`"
    );
    assert_eq!(
        err("connection a\naddress h\ntopic x\nremote_clientid r\n\
             connection b\naddress h\ntopic x\nlocal_clientid local.r\n"),
        "/etc/w.conf:5: connection: local client id 'local.r' is used by another bridge; \
         set `local_clientid`"
    );
    assert_eq!(
        err("connection\n"),
        "/etc/w.conf:1: connection: missing value"
    );
}

#[test]
fn every_bridge_key_is_known_inside_a_connection() {
    // "Did you mean" offers BRIDGE_KEYS: each must be accepted (or refused with a reason
    // other than "unknown") after a `connection` line.
    for key in BRIDGE_KEYS {
        let text = format!("{BASE}{key} x\n");
        if let Err(e) = parse_with(
            &MemSource([(PathBuf::from(FILE), text)].into_iter().collect()),
            Path::new(FILE),
        ) {
            assert!(
                e.iter()
                    .all(|e| !matches!(e.kind, ErrorKind::UnknownKey { .. })),
                "{key}: {e}"
            );
        }
    }
}

#[test]
fn bridge_queue_caps_default_to_a_disk_bound_and_are_per_connection() {
    let b = bridge("");
    assert_eq!(b.max_queued_messages, 1_000_000);
    assert_eq!(b.max_queued_bytes, 128 << 20);
    let b = bridge("bridge_max_queued_messages 0\nbridge_max_queued_bytes 4096\n");
    assert_eq!((b.max_queued_messages, b.max_queued_bytes), (0, 4096));
    assert_eq!(
        err_line4("bridge_max_queued_bytes 1G\n"),
        "/etc/w.conf:4: bridge_max_queued_bytes: invalid value '1G' \
         (expected 0 (no limit) or a byte count)"
    );
    // A bridge key outside a `connection` block is an error, as the others are.
    assert!(err("bridge_max_queued_bytes 4096\n").contains("bridge_max_queued_bytes"));
}
