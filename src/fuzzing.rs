//! Fuzz harness bodies, one per cargo-fuzz target in `fuzz/fuzz_targets/`, kept in the
//! crate so that the targets are one-liners and so that `cargo test` on stable replays the
//! committed seed corpus (`fuzz/corpus/<target>/`) through the same code.
//!
//! Built only for `cfg(fuzzing)` (set by `cargo fuzz`) and for the unit tests. Every body
//! takes arbitrary bytes and panics exactly when a property is broken:
//!
//! - [`decode`]: the decoder never panics; whatever decodes re-encodes to an equal packet
//!   (the body lives in `protocol::fuzzing`).
//! - [`split`]: the event loop's framing (`net::input::feed`) fed a stream in arbitrary
//!   chunks hands over exactly the packets, and stops at exactly the error, of a
//!   whole-buffer decode.
//! - [`broker`]: the broker state machine driven by arbitrary operations of several 3.1,
//!   3.1.1 and 5.0 clients on a fake clock, with restarts from its journal: no panic,
//!   inflight and queue bounds hold, every byte it writes decodes (as the client's
//!   version), no PUBLISH reaches a client without a matching subscription (shared ones
//!   included) nor its publisher through no-local ones only [MQTT-3.8.3-3], a 5.0 client
//!   gets nothing over its maximum packet size [MQTT-3.1.2-24] and no more QoS 1/2
//!   PUBLISHes in flight than its receive maximum [MQTT-3.3.4-9], a restart brings every
//!   persistent session back with its subscriptions and messages, and the next deadline
//!   is never in the past right after the timers fired.
//! - [`topic`]: `protocol::topic::matches` and `SubscriptionTable::collect_matches` agree
//!   with a naive level-by-level matcher (`broker::fuzzing::naive_matches`).
//! - [`store`]: the data-file loader never panics, reads in chunks what a whole-file read
//!   reads, and recovers valid records among garbage (the body lives in `store::fuzzing`).
//! - [`websocket`]: the WebSocket layer never panics, reads a stream in arbitrary chunks
//!   exactly as in one read, and passes MQTT bytes cut into valid frames through unchanged
//!   (the body lives in `net::websocket::fuzzing`).
//!
//! Each body lives beside the code it exercises: `protocol::fuzzing`, `net::fuzzing`,
//! `broker::fuzzing` and `store::fuzzing`; this module is the thin entry point the
//! targets call, and replays the committed corpus in the unit tests.

use std::time::Instant;

/// The fuzz target names, as directories under `fuzz/corpus/`.
#[cfg(feature = "websockets")]
pub const TARGETS: [&str; 6] = ["decode", "split", "broker", "topic", "store", "websocket"];
/// The fuzz target names, as directories under `fuzz/corpus/`.
#[cfg(not(feature = "websockets"))]
pub const TARGETS: [&str; 5] = ["decode", "split", "broker", "topic", "store"];

/// Runs the harness body of the named target on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "decode" => decode(data),
        "split" => split(data),
        "broker" => broker(data),
        "topic" => topic(data),
        "store" => store(data),
        #[cfg(feature = "websockets")]
        "websocket" => websocket(data),
        _ => panic!("unknown fuzz target {target}"),
    }
}

/// Target `websocket`: see `net::websocket::fuzzing`.
#[cfg(feature = "websockets")]
pub fn websocket(data: &[u8]) {
    crate::net::websocket::fuzzing::websocket(data);
}

/// Target `store`: see `store::fuzzing`.
pub fn store(data: &[u8]) {
    crate::store::fuzzing::loader(data);
}

/// Target `decode`: see `protocol::fuzzing::decode_round_trip`.
pub fn decode(data: &[u8]) {
    crate::protocol::fuzzing::decode_round_trip(data);
}

/// Target `split`: see `net::fuzzing::split`.
pub fn split(data: &[u8]) {
    crate::net::fuzzing::split(data);
}

/// Target `topic`: see `broker::fuzzing::topic`.
pub fn topic(data: &[u8]) {
    crate::broker::fuzzing::topic(data);
}

/// Target `broker`: see `broker::fuzzing::broker` (the clock is read here, outside the
/// sans-IO `broker/`).
pub fn broker(data: &[u8]) {
    broker_deliveries(data);
}

/// The `broker` body; returns how many deliveries it checked (for the harness's own tests).
fn broker_deliveries(data: &[u8]) -> usize {
    crate::broker::fuzzing::broker(data, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Feeds every committed seed (`fuzz/corpus/<target>/*`) to its harness body, so CI
    /// runs the corpus on stable without cargo-fuzz.
    #[test]
    fn fuzz_corpus_replays() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for target in TARGETS {
            let dir = root.join(target);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "no seeds in {}", dir.display());
            for f in files {
                let data = std::fs::read(&f).unwrap();
                let r = std::panic::catch_unwind(|| run(target, &data));
                assert!(r.is_ok(), "{target} failed on {}", f.display());
            }
        }
    }

    /// First `broker` crash (harness bug): a connect timeout closed a connection in a
    /// time-advance operation, the harness did not drain `poll_close` until after it had
    /// itself dropped that slot, and took the late close for a double close.
    #[test]
    /// Third `broker` crash (harness out of date): `handle_disconnect(Shutdown)` now returns
    /// the connection through `poll_close` so that a 5.0 client is told 0x8B.
    fn broker_harness_takes_the_close_of_a_shutdown_disconnect() {
        let seed = "fuzz/corpus/broker/regress-shutdown-close";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    #[test]
    fn broker_harness_drains_closes_after_timers() {
        let seed = "fuzz/corpus/broker/regress-close-after-connect-timeout";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    /// Second `broker` crash (harness bug): after a partial `consume_output`, a second
    /// CONNECT closed the connection and the harness re-read its final bytes from offset 0,
    /// i.e. from the middle of a CONNACK.
    #[test]
    fn broker_harness_keeps_offset_of_partly_written_output() {
        let seed = "fuzz/corpus/broker/regress-final-bytes-after-partial-write";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    /// First `broker` crash with 5.0 clients (broker bug): a session resumed by a 5.0
    /// client with a receive maximum below its messages in flight got them all resent
    /// (see `broker::tests::v5::a_resumed_session_resends_no_more_than_the_new_receive_maximum`).
    #[test]
    fn broker_resend_on_resume_respects_the_receive_maximum() {
        let seed = "fuzz/corpus/broker/regress-resume-over-receive-maximum";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    /// Second (harness bug): a message published with expiry interval 0 waited, expired,
    /// in an offline session's queue (dropped when it would be sent); replay after a
    /// restart drops it at once. The restart check counts only messages still deliverable.
    #[test]
    fn broker_restart_check_ignores_expired_messages() {
        let seed = "fuzz/corpus/broker/regress-restart-expired-in-queue";
        let data = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(seed)).unwrap();
        broker(&data);
    }

    #[test]
    fn broker_harness_sees_a_round_trip() {
        // open c0 and c1, connect both, c1 subscribes to "#", c0 publishes QoS 1 to "a".
        let ops = [
            0x00, // config: limits off
            0x00, 0x10, // open slot 0, slot 1
            0x01, 0x04, 0x00, 0x00, // slot 0 CONNECT v3.1.1 clean, id c0, keepalive 0
            0x11, 0x04, 0x01, 0x00, // slot 1 CONNECT clean, id c1
            0x12, 0x00, 0x03, 0x01, 0x01, 0x00, // slot 1 SUBSCRIBE "#" QoS 1, id 1
            0x04, 0x01, 0x00, // slot 0 PUBLISH QoS 1 to "a"
        ];
        assert_eq!(broker_deliveries(&ops), 1);
        let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/broker");
        for name in [
            "round-trip",
            "offline-queue",
            "retained-will-takeover",
            "v5-shared-no-local-aliases",
            "v5-expiry-will-restart",
            "v5-limits-auth-takeover",
        ] {
            let data = std::fs::read(seed.join(name)).unwrap();
            assert!(broker_deliveries(&data) > 0, "seed {name} delivers nothing");
        }
    }
}
