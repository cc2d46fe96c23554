//! "Did you mean": the known configuration key closest to a misspelt one.

use super::bridge::BRIDGE_KEYS;
use super::MOSQUITTO_IGNORED;

/// Every key `Parser::apply` knows (besides the bridge keys, `bridge::BRIDGE_KEYS`, and the
/// `auth_opt_` and `plugin_opt_` families), for "did you mean"; a test checks that none
/// of them is unknown to `apply`.
pub(super) const KNOWN_KEYS: &[&str] = &[
    "listener",
    "port",
    "bind_address",
    "max_connections",
    "socket_domain",
    "protocol",
    "websockets_headers_size",
    "websockets_log_level",
    "http_dir",
    "allow_anonymous",
    "password_file",
    "acl_file",
    "per_listener_settings",
    "max_inflight_messages",
    "max_queued_messages",
    "max_queued_bytes",
    "queue_qos0_messages",
    "max_packet_size",
    "message_size_limit",
    "max_keepalive",
    "persistent_client_expiration",
    "retain_available",
    "persistence",
    "persistence_location",
    "autosave_interval",
    "persistence_file",
    "autosave_on_changes",
    "log_type",
    "log_dest",
    "log_timestamp",
    "log_timestamp_format",
    "connection_messages",
    "sys_interval",
    "log_facility",
    "pid_file",
    "user",
    "fsync",
    "connect_timeout",
    "max_write_buffer",
    "journal_queue_bytes",
    "max_connect_packet_size",
    "max_filters_per_subscribe",
    "max_subscriptions_per_client",
    "max_subscriptions",
    "max_sessions",
    "max_client_id_length",
    "max_retained_messages",
    "max_retained_bytes",
    "memory_limit",
    "certfile",
    "keyfile",
    "psk_hint",
    "psk_file",
    "cafile",
    "capath",
    "require_certificate",
    "crlfile",
    "use_identity_as_username",
    "use_subject_as_username",
    "tls_version",
    "ciphers",
    "ciphers_tls1.3",
    "dhparamfile",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "mount_point",
    "bind_interface",
    "connection",
    "auth_plugin",
    "plugin",
    "global_plugin",
    "include_dir",
];

/// The known key closest to `key` (ignoring case), if it is close enough to be a typo:
/// at most one edit for short keys, two for longer ones. A transposition counts as one.
pub(super) fn suggest(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let limit = if key.len() <= 4 { 1 } else { 2 };
    KNOWN_KEYS
        .iter()
        .chain(MOSQUITTO_IGNORED)
        .chain(BRIDGE_KEYS)
        .map(|&k| (edit_distance(&key, k), k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions each cost 1. Keys are short; the full matrix is fine.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 {
                j
            } else if j == 0 {
                i
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * width + j] + 1)
                    .min(d[i * width + j - 1] + 1)
                    .min(d[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}
