//! Configuration files, good and bad, with the exact messages users see.

use std::net::SocketAddr;

use crate::config::ListenerSecurity;

use super::suggest::{edit_distance, KNOWN_KEYS};
use super::*;

fn mem(files: &[(&str, &str)]) -> MemSource {
    MemSource(
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect(),
    )
}

fn ok(text: &str) -> Parsed {
    match parse_with(&mem(&[("/etc/w.conf", text)]), Path::new("/etc/w.conf")) {
        Ok(p) => p,
        Err(e) => panic!("{text:?} failed: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse_with(&mem(&[("/etc/w.conf", text)]), Path::new("/etc/w.conf")) {
        Ok(p) => panic!("{text:?} parsed: {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn empty_file_is_local_only_and_anonymous() {
    let p = ok("# nothing\n\n");
    assert_eq!(p.config, Config::default());
    assert!(p.warnings.is_empty());
}

#[test]
fn listener_without_address_is_every_interface_and_not_anonymous() {
    let c = ok("listener 1883\n").config;
    assert_eq!(c.listeners, addrs(&["0.0.0.0:1883", "[::]:1883"]));
    assert!(!c.allow_anonymous);
    let c = ok("listener 1883\nallow_anonymous true\n").config;
    assert!(c.allow_anonymous);
}

#[test]
fn listener_blocks_own_the_keys_below_them() {
    let c = ok("listener 1883 127.0.0.1\n\
                max_connections 10\n\
                listener 8883 ::1\n\
                max_connections 5\n\
                listener 1884 localhost\n\
                socket_domain ipv4\n\
                max_connections 1\n")
    .config;
    assert_eq!(
        c.listeners,
        addrs(&["127.0.0.1:1883", "[::1]:8883", "127.0.0.1:1884"])
    );
    assert_eq!(c.max_connections, 16);
    // One unlimited listener makes the whole broker unlimited.
    let c = ok("listener 1 127.0.0.1\nmax_connections 3\nlistener 2 127.0.0.1\n").config;
    assert_eq!(c.max_connections, 0);
}

#[test]
fn global_port_and_bind_address_make_the_default_listener() {
    let c = ok("port 1884\n").config;
    assert_eq!(c.listeners, addrs(&["0.0.0.0:1884", "[::]:1884"]));
    assert!(!c.allow_anonymous);
    let c = ok("bind_address 10.0.0.1\nport 1885\nlistener 9000 [::1]\n").config;
    assert_eq!(c.listeners, addrs(&["10.0.0.1:1885", "[::1]:9000"]));
    // As in Mosquitto, a per-listener key above every listener creates the default one.
    let c = ok("max_connections 7\nlistener 9000 127.0.0.1\n").config;
    assert_eq!(
        c.listeners,
        addrs(&["0.0.0.0:1883", "[::]:1883", "127.0.0.1:9000"])
    );
    assert_eq!(c.max_connections, 0);
}

#[test]
fn password_file_turns_anonymous_off_even_local_only() {
    let c = ok("password_file /etc/pw\n").config;
    assert_eq!(c.listeners, Config::default().listeners);
    assert!(!c.allow_anonymous);
    assert_eq!(c.password_file, Some(PathBuf::from("/etc/pw")));
    let c = ok("password_file /etc/pw\nallow_anonymous true\nacl_file /etc/my acl\n").config;
    assert!(c.allow_anonymous);
    assert_eq!(c.acl_file, Some(PathBuf::from("/etc/my acl")));
}

#[test]
fn every_value_key_is_parsed() {
    let c = ok("persistence true\n\
                persistence_location /var/lib/wrenmq/\n\
                autosave_interval 60\n\
                max_inflight_messages 0\n\
                max_queued_messages 50\n\
                max_queued_bytes 4096\n\
                queue_qos0_messages true\n\
                max_packet_size 0\n\
                message_size_limit 1000\n\
                max_keepalive 600\n\
                persistent_client_expiration 2w\n\
                retain_available false\n\
                log_type error\n\
                log_type information\n\
                log_dest stdout\n\
                pid_file /run/wrenmq.pid\n\
                user mosquitto\n\
                fsync interval 250\n\
                connect_timeout 5\n\
                max_write_buffer 65536\n\
                max_connect_packet_size 4096\n\
                max_filters_per_subscribe 7\n\
                max_subscriptions_per_client 0\n")
    .config;
    assert!(c.persistence);
    assert_eq!(c.persistence_location, PathBuf::from("/var/lib/wrenmq/"));
    assert_eq!(c.autosave_interval, Duration::from_secs(60));
    assert_eq!(c.max_inflight_messages, 0);
    assert_eq!(c.max_queued_messages, 50);
    assert_eq!(c.max_queued_bytes, 4096);
    assert!(c.queue_qos0_messages);
    assert_eq!(c.max_packet_size, MQTT_MAX_PACKET_SIZE);
    assert_eq!(c.message_size_limit, 1000);
    assert_eq!(c.max_keepalive, 600);
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(14 * 24 * 3600))
    );
    assert!(!c.retain_available);
    assert_eq!(c.log_level, Some(LevelFilter::Info));
    assert_eq!(c.log_dest, LogDest::Stdout);
    assert_eq!(c.pid_file, Some(PathBuf::from("/run/wrenmq.pid")));
    assert_eq!(c.user.as_deref(), Some("mosquitto"));
    assert_eq!(c.fsync, Fsync::Interval(Duration::from_millis(250)));
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.max_write_buffer, 65536);
    assert_eq!(c.max_connect_packet_size, 4096);
    assert_eq!(c.max_filters_per_subscribe, 7);
    assert_eq!(c.max_subscriptions_per_client, 0);
    assert_eq!(ok("fsync never").config.fsync, Fsync::Never);
    assert_eq!(ok("fsync batch # default").config.fsync, Fsync::Batch);
    assert_eq!(ok("log_type none").config.log_level, Some(LevelFilter::Off));
    assert_eq!(
        ok("log_type all").config.log_level,
        Some(LevelFilter::Debug)
    );
}

#[test]
fn whitespace_comments_and_crlf_are_tolerated() {
    let c = ok("  # indented comment\r\n\tport 1886   \r\nallow_anonymous true # yes\r\n").config;
    assert_eq!(c.listeners, addrs(&["0.0.0.0:1886", "[::]:1886"]));
    assert!(c.allow_anonymous);
}

#[test]
fn unsupported_mosquitto_keys_warn_with_their_line() {
    let p = ok("sys_interval 10\nlog_dest topic\nset_tcp_nodelay true\n");
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "/etc/w.conf:2: log_dest: log_dest topic is not supported; logging to stderr",
            "/etc/w.conf:3: set_tcp_nodelay: Mosquitto option not supported by wrenmq yet; ignored",
        ]
    );
}

#[test]
fn errors_name_file_line_and_key() {
    assert_eq!(
        err("port 1883\nfrobnicate yes\n"),
        "/etc/w.conf:2: frobnicate: unknown configuration key"
    );
    assert_eq!(
        err("max_inflight_messages lots"),
        "/etc/w.conf:1: max_inflight_messages: invalid value 'lots' \
         (expected 0 (no limit) or a count up to 65535)"
    );
    assert_eq!(
        err("\nallow_anonymous yes"),
        "/etc/w.conf:2: allow_anonymous: invalid value 'yes' (expected true or false)"
    );
    assert_eq!(
        err("password_file"),
        "/etc/w.conf:1: password_file: missing value"
    );
    assert_eq!(
        err("port 1883 1884"),
        "/etc/w.conf:1: port: invalid value '1883 1884' (expected a single value)"
    );
    assert_eq!(
        err("listener 70000"),
        "/etc/w.conf:1: listener: invalid value '70000' \
         (expected PORT [ADDRESS] with a port number 0-65535)"
    );
    assert_eq!(
        err("listener 1883 broker.example"),
        "/etc/w.conf:1: listener: invalid value 'broker.example' \
         (expected an IPv4 or IPv6 address or localhost (host names are not resolved))"
    );
    assert_eq!(
        err("listener 0 /tmp/mqtt.sock"),
        "/etc/w.conf:1: listener: not supported: unix domain sockets"
    );
    assert_eq!(
        err("listener 8883\ncertfile /etc/cert.pem"),
        "/etc/w.conf:2: certfile: not supported: a TLS listener needs both certfile and \
         keyfile (refused rather than run unencrypted)"
    );
    assert_eq!(
        err("max_packet_size 10"),
        "/etc/w.conf:1: max_packet_size: invalid value '10' \
         (expected 0 (no limit) or a size of at least 20 bytes)"
    );
    assert_eq!(
        err("persistent_client_expiration 3x"),
        "/etc/w.conf:1: persistent_client_expiration: invalid value '3x' \
         (expected a number followed by h, d, w, m or y, such as 14d, at most 136y)"
    );
    assert_eq!(
        err("fsync sometimes"),
        "/etc/w.conf:1: fsync: invalid value 'sometimes' \
         (expected batch, never or interval <milliseconds> (1 to 86400000))"
    );
    assert_eq!(
        err("per_listener_settings maybe"),
        "/etc/w.conf:1: per_listener_settings: invalid value 'maybe' (expected true or false)"
    );
    assert_eq!(
        err("connection bridge1"),
        "/etc/w.conf:1: connection: bridge has no `address`\n\
         /etc/w.conf:1: connection: bridge has no `topic`"
    );
    assert_eq!(
        err("http_dir /var/www"),
        "/etc/w.conf:1: http_dir: not supported: serving files over HTTP (websockets \
         listeners answer plain HTTP requests with 400); serve them with a web server"
    );
}

#[test]
fn huge_time_values_are_rejected_with_line_and_key() {
    // 300000000000y used to load and then abort the broker at the first persistent
    // disconnect (Instant overflow), and again at every restart.
    assert_eq!(
        err("port 1883\npersistent_client_expiration 300000000000y\n"),
        "/etc/w.conf:2: persistent_client_expiration: invalid value '300000000000y' \
         (expected a number followed by h, d, w, m or y, such as 14d, at most 136y)"
    );
    assert!(err("persistent_client_expiration 137y").contains(":1: persistent_client_expiration"));
    assert!(err("persistent_client_expiration 18446744073709551615h").contains("invalid value"));
    assert_eq!(
        ok("persistent_client_expiration 136y")
            .config
            .persistent_client_expiration,
        Some(Duration::from_secs(136 * 365 * 24 * 3600))
    );
    assert!(err("fsync interval 18446744073709551615").starts_with("/etc/w.conf:1: fsync:"));
    assert_eq!(
        ok("fsync interval 86400000").config.fsync,
        Fsync::Interval(Duration::from_secs(86400))
    );
    assert!(err("max_keepalive 65536").starts_with("/etc/w.conf:1: max_keepalive:"));
    assert!(err("connect_timeout 99999999999").starts_with("/etc/w.conf:1: connect_timeout:"));
}

#[test]
fn every_error_in_a_file_is_reported_not_only_the_first() {
    // Used to stop at line 2: three restarts to find three typos.
    let e = err("listener 1883\n\
                 persistance_location /var/lib/wrenmq\n\
                 allow_anonymous yes\n\
                 max_keepalive 10\n\
                 Listener 1884\n\
                 frobnicate 1\n");
    assert_eq!(
        e,
        "/etc/w.conf:2: persistance_location: unknown configuration key \
         (did you mean `persistence_location`?)\n\
         /etc/w.conf:3: allow_anonymous: invalid value 'yes' (expected true or false)\n\
         /etc/w.conf:5: Listener: unknown configuration key (did you mean `listener`?)\n\
         /etc/w.conf:6: frobnicate: unknown configuration key"
    );
    // Included files too, in the order they are read.
    let src = mem(&[
        (
            "/etc/w.conf",
            "lisetner 1\ninclude_dir /etc/w.d\nmax_keepalive x\n",
        ),
        ("/etc/w.d/a.conf", "log_dst stderr\n"),
        ("/etc/w.d/b.conf", "include_dir /etc/w.d\n"),
    ]);
    let e = parse_with(&src, Path::new("/etc/w.conf")).unwrap_err();
    let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "/etc/w.conf:1: lisetner: unknown configuration key (did you mean `listener`?)",
            "/etc/w.d/a.conf:1: log_dst: unknown configuration key (did you mean `log_dest`?)",
            "/etc/w.d/b.conf:1: include_dir: only allowed in the main configuration file",
            "/etc/w.conf:3: max_keepalive: invalid value 'x' (expected a number of seconds 0-65535)",
        ]
    );
}

#[test]
fn did_you_mean_only_for_near_misses() {
    assert_eq!(
        suggest("max_inflight_message"),
        Some("max_inflight_messages")
    );
    assert_eq!(suggest("psersistence"), Some("persistence"));
    assert_eq!(suggest("allow_anonymus"), Some("allow_anonymous"));
    assert_eq!(suggest("PORT"), Some("port"));
    assert_eq!(suggest("sys_intervall"), Some("sys_interval")); // an ignored Mosquitto key
    assert_eq!(suggest("frobnicate"), None);
    assert_eq!(suggest("usr"), Some("user"));
    assert_eq!(suggest("xy"), None);
    assert_eq!(edit_distance("abc", "acb"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn every_known_key_is_known_to_the_parser() {
    // KNOWN_KEYS feeds "did you mean": a key in it that `apply` does not accept would be
    // suggested and then refused.
    for key in KNOWN_KEYS.iter().chain(MOSQUITTO_IGNORED) {
        let text = format!("{key} x\n");
        if let Err(e) = parse_with(&mem(&[("/etc/w.conf", &text)]), Path::new("/etc/w.conf")) {
            assert!(
                e.iter()
                    .all(|e| !matches!(e.kind, ErrorKind::UnknownKey { .. })),
                "{key}: {e}"
            );
        }
    }
}

#[test]
fn every_key_the_parser_accepts_is_offered_by_did_you_mean() {
    // The reverse of the test above: a key added to `apply` but not to KNOWN_KEYS would
    // never be suggested. `apply`'s key arms are the only match arms at this indentation.
    let source = include_str!("../parse.rs");
    let start = source.find("    fn apply(").expect("apply in parse.rs");
    let body = &source[start..];
    let body = &body[..body.find("\n    fn ").unwrap_or(body.len())];
    let mut seen = 0;
    for line in body.lines() {
        let Some(arm) = line.strip_prefix("            \"") else {
            continue;
        };
        if line.starts_with("             ") || !line.contains(" =>") {
            continue;
        }
        let pattern = &arm[..arm.find(" =>").unwrap_or(arm.len())];
        for key in pattern.split(" | ") {
            let key = key.trim_matches('"');
            seen += 1;
            assert!(
                KNOWN_KEYS.contains(&key) || MOSQUITTO_IGNORED.contains(&key),
                "{key} is accepted by the parser but missing from KNOWN_KEYS"
            );
        }
    }
    assert!(
        seen > 40,
        "found only {seen} key arms: the layout of apply changed"
    );
}

#[test]
fn log_dest_file_takes_the_rest_of_the_line_as_its_path() {
    // Mosquitto's form; it used to be refused as "a single value".
    assert_eq!(
        ok("log_dest file /var/log/mosquitto/mosquitto.log\n")
            .config
            .log_dest,
        LogDest::File(PathBuf::from("/var/log/mosquitto/mosquitto.log"))
    );
    assert_eq!(
        ok("log_dest file /var/log/my logs/w.log").config.log_dest,
        LogDest::File(PathBuf::from("/var/log/my logs/w.log"))
    );
    assert_eq!(
        err("log_dest file"),
        "/etc/w.conf:1: log_dest: invalid value 'file' \
         (expected file followed by the log file's path)"
    );
    assert!(err("log_dest files").contains("invalid value 'files'"));
    assert_eq!(ok("log_dest stdout # c").config.log_dest, LogDest::Stdout);
    // Several destinations (Mosquitto writes to all): the last one wins, with a warning.
    let p = ok("log_dest stderr\nlog_dest file /tmp/w.log\n");
    assert_eq!(
        p.config.log_dest,
        LogDest::File(PathBuf::from("/tmp/w.log"))
    );
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].line, 2);
}

#[test]
fn debians_stock_mosquitto_conf_loads() {
    // /etc/mosquitto/mosquitto.conf as Debian's mosquitto 2.0 package installs it, with
    // its conf.d (which holds only a README).
    let text = include_str!("../../../tests/data/config/debian-mosquitto.conf");
    let src = mem(&[
        ("/etc/mosquitto/mosquitto.conf", text),
        (
            "/etc/mosquitto/conf.d/README",
            "Any files placed in this directory ...\n",
        ),
    ]);
    let p = match parse_with(&src, Path::new("/etc/mosquitto/mosquitto.conf")) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let c = p.config;
    assert_eq!(
        c.log_dest,
        LogDest::File(PathBuf::from("/var/log/mosquitto/mosquitto.log"))
    );
    assert_eq!(
        c.pid_file,
        Some(PathBuf::from("/run/mosquitto/mosquitto.pid"))
    );
    assert!(c.persistence);
    assert_eq!(c.persistence_location, PathBuf::from("/var/lib/mosquitto/"));
    // No listener: local only and anonymous, as Mosquitto 2.0 runs it.
    assert_eq!(c.listeners, Config::default().listeners);
    assert!(c.allow_anonymous);
}

#[test]
fn missing_file_names_it() {
    let e = match parse_with(&mem(&[]), Path::new("/etc/none.conf")) {
        Err(e) => e,
        Ok(p) => panic!("{p:?}"),
    };
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].line, 0);
    assert!(
        e.to_string().starts_with("/etc/none.conf: cannot read: "),
        "{e}"
    );
}

#[test]
fn include_dir_reads_conf_files_in_order() {
    let src = mem(&[
        (
            "/etc/w.conf",
            "listener 1883 127.0.0.1\ninclude_dir /etc/w.d\n",
        ),
        ("/etc/w.d/20-b.conf", "max_queued_messages 20\n"),
        (
            "/etc/w.d/10-a.conf",
            "max_queued_messages 10\nmax_connections 4\n",
        ),
        ("/etc/w.d/notes.txt", "garbage\n"),
    ]);
    let c = parse_with(&src, Path::new("/etc/w.conf")).unwrap().config;
    assert_eq!(c.max_queued_messages, 20);
    assert_eq!(c.max_connections, 4); // the included line continues the listener block
    let bad = mem(&[
        ("/etc/w.conf", "include_dir /etc/w.d\n"),
        ("/etc/w.d/a.conf", "\n\nnope 1\n"),
    ]);
    let e = parse_with(&bad, Path::new("/etc/w.conf")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/w.d/a.conf:3: nope: unknown configuration key"
    );
    let nested = mem(&[
        ("/etc/w.conf", "include_dir /etc/w.d\n"),
        ("/etc/w.d/a.conf", "include_dir /etc/w.d\n"),
    ]);
    let e = parse_with(&nested, Path::new("/etc/w.conf")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/w.d/a.conf:1: include_dir: only allowed in the main configuration file"
    );
}

#[test]
fn the_example_config_parses_without_errors() {
    let text = include_str!("../../../scripts/wrenmq.conf");
    let p = parse_str(text, Path::new("scripts/wrenmq.conf")).unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

/// scripts/wrenmq.conf says its values are the defaults, except its example listener and
/// allow_anonymous lines: a changed default must change the file too.
#[test]
fn the_example_config_states_the_defaults() {
    let text = include_str!("../../../scripts/wrenmq.conf");
    let mut c = parse_str(text, Path::new("scripts/wrenmq.conf"))
        .unwrap()
        .config;
    let d = Config::default();
    assert_ne!(
        c.listeners, d.listeners,
        "the example listener is not the default"
    );
    c.listeners.clone_from(&d.listeners);
    c.allow_anonymous = d.allow_anonymous;
    assert_eq!(c, d);
}

#[test]
fn the_readme_key_table_states_the_defaults() {
    // README.md's configuration table is what users read; a default changed in
    // `Config::default` but not there (or the reverse) would go unnoticed. Every row
    // whose default is a plain value is written back as `key value` and must parse to
    // the default configuration. Per-listener keys and keys that create the default
    // listener are left out (they change the listeners, not a default).
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("| key | default | meaning |")
        .expect("README configuration table");
    let mut text = String::new();
    let mut checked = Vec::new();
    for row in readme[start..].lines().skip(2) {
        let Some(row) = row.strip_prefix("| `") else {
            break;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let key = cells[0].split('`').next().unwrap_or_default();
        let default = cells[1].trim_matches('*').trim_matches('`');
        let per_listener = cells[2].starts_with("per listener");
        let creates_listener = ["listener", "port", "bind_address", "max_connections"];
        let plain = default
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./-_".contains(c));
        // Words that describe a default rather than state a value.
        let described = ["none", "never", "daemon"];
        if per_listener || creates_listener.contains(&key) || !plain || described.contains(&default)
        {
            continue;
        }
        // `./wrenmq-data` in prose is the default relative path `wrenmq-data`.
        let default = default.strip_prefix("./").unwrap_or(default);
        text.push_str(&format!("{key} {default}\n"));
        checked.push(key);
    }
    assert!(
        checked.len() >= 30,
        "table not found or cut short: {checked:?}"
    );
    let parsed = parse_str(&text, Path::new("README.md")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parsed.config,
        Config::default(),
        "README key table:\n{text}"
    );
    // ... and every key the parser knows is named in the README (table, ignored list or
    // refused keys), so none is undocumented.
    for key in KNOWN_KEYS.iter().chain(MOSQUITTO_IGNORED) {
        assert!(
            readme.contains(&format!("`{key}")),
            "{key} is not in README.md"
        );
    }
}

#[test]
fn resource_bounds_and_memory_limit_are_parsed() {
    let text = "max_subscriptions 5\nmax_sessions 6\nmax_client_id_length 23\n\
                max_retained_messages 7\nmax_retained_bytes 800\nmemory_limit 1048576\n";
    let parsed = parse_with(&mem(&[("/etc/w.conf", text)]), Path::new("/etc/w.conf")).unwrap();
    let c = parsed.config;
    assert_eq!(
        (c.max_subscriptions, c.max_sessions, c.max_client_id_length),
        (5, 6, 23)
    );
    assert_eq!((c.max_retained_messages, c.max_retained_bytes), (7, 800));
    assert_eq!(c.memory_limit, 1 << 20);
    assert!(
        parsed.warnings.is_empty(),
        "memory_limit is honoured, not ignored"
    );
    let bad = "max_client_id_length 0\n";
    assert!(parse_with(&mem(&[("/etc/w.conf", bad)]), Path::new("/etc/w.conf")).is_err());
}

#[test]
fn journal_queue_bytes_is_a_byte_count_of_at_least_64_kib() {
    assert_eq!(Config::default().journal_queue_bytes, 4 << 20);
    assert_eq!(
        ok("journal_queue_bytes 1048576").config.journal_queue_bytes,
        1 << 20
    );
    assert_eq!(
        err("journal_queue_bytes 100"),
        "/etc/w.conf:1: journal_queue_bytes: invalid value '100' \
         (expected a byte count of at least 65536)"
    );
}

#[test]
fn websockets_listeners_are_listed_by_address() {
    let p = ok(
        "listener 1883 127.0.0.1\nlistener 8080 127.0.0.1\nprotocol websockets\n\
                listener 8081 127.0.0.1\nprotocol websockets\nprotocol mqtt\n",
    );
    let c = &p.config;
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.websockets, [SocketAddr::from(([127, 0, 0, 1], 8080))]);
    assert!(c.is_websockets(SocketAddr::from(([127, 0, 0, 1], 8080))));
    assert!(!c.is_websockets(SocketAddr::from(([127, 0, 0, 1], 1883))));
    assert_eq!(c.websockets_headers_size, 4096);
    // Above any listener line, `protocol` makes the default listener a websockets one.
    let p = ok("protocol websockets\n");
    assert_eq!(p.config.websockets, p.config.listeners);
}

#[test]
fn websockets_headers_size_and_log_level() {
    let p = ok("websockets_headers_size 1024\nwebsockets_log_level 255\n");
    assert_eq!(p.config.websockets_headers_size, 1024);
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].message.contains("ignored"),
        "{:?}",
        p.warnings
    );
    assert_eq!(
        ok("websockets_headers_size 0")
            .config
            .websockets_headers_size,
        4096
    );
    assert!(err("websockets_headers_size 70000").contains("invalid value '70000'"));
    assert!(err("protocol http").contains("expected mqtt or websockets"));
}

#[test]
fn sys_interval_and_log_style_keys_are_parsed() {
    let c = ok(
        "sys_interval 0\nlog_timestamp false\nlog_timestamp_format %F %T\n\
                connection_messages false\nlog_dest syslog\n",
    )
    .config;
    assert_eq!(c.sys_interval, Duration::ZERO);
    assert!(!c.log_timestamp);
    assert_eq!(c.log_timestamp_format.as_deref(), Some("%F %T"));
    assert!(!c.connection_messages);
    assert_eq!(c.log_dest, LogDest::Syslog);
    assert_eq!(ok("log_facility 5").config.log_facility, Some(5));
    assert!(err("log_facility 8").contains("0-7"));
    let d = Config::default();
    assert_eq!(d.sys_interval, Duration::from_secs(10));
    assert!(d.log_timestamp && d.connection_messages);
    assert!(err("sys_interval -1").contains("invalid value '-1'"));
    assert!(err("log_timestamp maybe").contains("true or false"));
}

fn security(
    addrs_: &[&str],
    anon: bool,
    passwords: Option<&str>,
    acl: Option<&str>,
) -> ListenerSecurity {
    ListenerSecurity {
        addrs: addrs(addrs_),
        allow_anonymous: anon,
        password_file: passwords.map(PathBuf::from),
        acl_file: acl.map(PathBuf::from),
    }
}

#[test]
fn per_listener_settings_attach_security_keys_to_the_listener_above_them() {
    let p = ok("per_listener_settings true\n\
                port 1883\n\
                allow_anonymous true\n\
                acl_file /etc/default.acl\n\
                listener 8883 127.0.0.1\n\
                password_file /etc/tls.pw\n\
                acl_file /etc/tls.acl\n\
                listener 9001 ::1\n\
                allow_anonymous true\n");
    let c = &p.config;
    assert!(c.per_listener_settings);
    assert_eq!(
        c.listener_security,
        vec![
            security(
                &["0.0.0.0:1883", "[::]:1883"],
                true,
                None,
                Some("/etc/default.acl")
            ),
            // Mosquitto 2.0: allow_anonymous is false on a listener that does not set it.
            security(
                &["127.0.0.1:8883"],
                false,
                Some("/etc/tls.pw"),
                Some("/etc/tls.acl")
            ),
            security(&["[::1]:9001"], true, None, None),
        ]
    );
    // The global fields are not used with per-listener settings.
    assert!(!c.allow_anonymous);
    assert_eq!((&c.password_file, &c.acl_file), (&None, &None));
}

#[test]
fn per_listener_settings_may_come_after_the_keys_it_affects() {
    let p = ok("listener 1883\nallow_anonymous true\nlistener 1884\nper_listener_settings true\n");
    assert_eq!(
        p.config.listener_security,
        vec![
            security(&["0.0.0.0:1883", "[::]:1883"], true, None, None),
            security(&["0.0.0.0:1884", "[::]:1884"], false, None, None),
        ]
    );
}

#[test]
fn per_listener_settings_above_the_first_listener_without_default_listener_warn() {
    let p = ok("per_listener_settings true\nallow_anonymous true\nlistener 1883\n");
    assert_eq!(
        p.config.listener_security,
        vec![security(&["0.0.0.0:1883", "[::]:1883"], false, None, None)]
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(
        (p.warnings[0].line, p.warnings[0].key.as_str()),
        (2, "allow_anonymous")
    );
}

#[test]
fn per_listener_settings_local_only_keeps_the_local_only_anonymous_default() {
    let p = ok("per_listener_settings true\n");
    assert_eq!(
        p.config.listener_security,
        vec![security(
            &["127.0.0.1:1883", "[::1]:1883"],
            true,
            None,
            None
        )]
    );
    let p = ok("per_listener_settings true\npassword_file /etc/pw\n");
    assert_eq!(
        p.config.listener_security,
        vec![security(
            &["127.0.0.1:1883", "[::1]:1883"],
            false,
            Some("/etc/pw"),
            None
        )]
    );
}

#[test]
fn per_listener_settings_false_keeps_security_global_last_line_wins() {
    let p = ok("per_listener_settings false\n\
                listener 1883\nacl_file /a.acl\nallow_anonymous true\n\
                listener 1884\nacl_file /b.acl\n");
    let c = &p.config;
    assert!(!c.per_listener_settings);
    assert!(c.listener_security.is_empty());
    assert!(c.allow_anonymous);
    assert_eq!(c.acl_file, Some(PathBuf::from("/b.acl")));
}

#[test]
fn per_listener_settings_with_an_acl_warn_that_bridges_belong_to_no_listener() {
    let p = ok("per_listener_settings true\n\
                listener 1883\nacl_file /etc/a.acl\n\
                connection up\naddress 10.0.0.1:1883\ntopic # out\n");
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("/etc/w.conf:1: per_listener_settings: bridge up")),
        "{w:?}"
    );
    // Without an ACL nothing is denied, so nothing to say.
    let p = ok("per_listener_settings true\nlistener 1883\n\
                connection up\naddress 10.0.0.1:1883\ntopic # out\n");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}
