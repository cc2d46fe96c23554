//! The on-disk format is a promise to users: data written by a release must be read by
//! later ones. The golden files under `tests/data/store/v1` were written by format version
//! 1, those under `v2` by version 2 (this build's); a change that stops them decoding to
//! the same records, or the same state in the broker, fails here.
//!
//! The v2 files are what this build writes, byte for byte. After a deliberate format change
//! (a new version), add a new directory instead of rewriting these; to write it, run
//! `WRENMQ_BLESS_GOLDEN=1 cargo test --test store_format`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wrenmq::broker::{Broker, WallClock};
use wrenmq::config::Config;
use wrenmq::store::files::{recover, recover_at};
use wrenmq::store::record::{header, FileKind};
use wrenmq::store::{Reader, Record};

fn expected_v1() -> Vec<Record<'static>> {
    vec![
        Record::Message {
            id: 7,
            qos: 1,
            retain: true,
            topic: "a/b",
            payload: b"\x00hello",
        },
        Record::Retain {
            topic: "a/b",
            id: 7,
        },
        Record::RetainClear { topic: "a/b" },
        Record::SessionOpen {
            session: 3,
            client_id: "sensor-1",
        },
        Record::SessionDelete { session: 3 },
        Record::Subscribe {
            session: 3,
            filter: "a/#",
            options: 2,
        },
        Record::Unsubscribe {
            session: 3,
            filter: "a/#",
        },
        Record::Enqueue {
            session: 3,
            id: 7,
            qos: 1,
            retain: false,
        },
        Record::Dequeue { session: 3 },
        Record::QueueToInflight {
            session: 3,
            packet_id: 65535,
        },
        Record::Inflight {
            session: 3,
            packet_id: 1,
            id: 7,
            qos: 2,
            retain: true,
        },
        Record::Pubrec {
            session: 3,
            packet_id: 1,
        },
        Record::InflightDone {
            session: 3,
            packet_id: 1,
        },
        Record::AwaitPubrel {
            session: 3,
            packet_id: 9,
        },
        Record::Released {
            session: 3,
            packet_id: 9,
        },
    ]
}

/// Wall-clock time (Unix ms) the v2 golden files were "written" at.
const V2_WRITTEN_AT: u64 = 1_764_820_000_000;

/// Snapshot 1 of the v2 golden directory: a realistic state, with every record type a
/// snapshot holds.
fn expected_v2_snapshot() -> Vec<Record<'static>> {
    vec![
        Record::Message {
            id: 7,
            qos: 1,
            retain: true,
            topic: "a/b",
            payload: b"\x00hello",
        },
        Record::MessageExtra {
            id: 7,
            expiry: 86_400,
            written_at: V2_WRITTEN_AT,
            properties: b"\x03\x00\x04text",
        },
        Record::Retain {
            topic: "a/b",
            id: 7,
        },
        Record::SessionOpen {
            session: 3,
            client_id: "sensor-1",
        },
        Record::SessionUser {
            session: 3,
            username: Some("alice"),
        },
        Record::SessionOffline {
            session: 3,
            since: V2_WRITTEN_AT,
        },
        Record::SessionExpiry {
            session: 3,
            interval: 86_400,
        },
        Record::Subscribe {
            session: 3,
            filter: "a/#",
            options: 1,
        },
        Record::SubscriptionId {
            session: 3,
            filter: "a/#",
            id: 42,
        },
        Record::Enqueue {
            session: 3,
            id: 7,
            qos: 1,
            retain: false,
        },
    ]
}

/// Log 1 of the v2 golden directory: every record type, applied after the snapshot.
fn expected_v2_log() -> Vec<Record<'static>> {
    let mut all = expected_v1();
    all.extend([
        Record::SessionExpiry {
            session: 3,
            interval: 3600,
        },
        Record::SubscriptionId {
            session: 3,
            filter: "a/#",
            id: 268_435_455,
        },
        Record::MessageExtra {
            id: 7,
            expiry: 60,
            written_at: V2_WRITTEN_AT + 5,
            properties: b"\x03\x00\x04text",
        },
        Record::SessionUser {
            session: 4,
            username: None,
        },
        Record::SessionOffline {
            session: 4,
            since: 0,
        },
    ]);
    all
}

fn golden(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/store")
        .join(version)
}

/// A copy of a golden directory (recovery may set files aside), one per test.
fn copy_of(version: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wrenmq-golden-{version}-{test}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(golden(version)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn encoded(kind: FileKind, records: &[Record<'_>]) -> Vec<u8> {
    let mut bytes = header(kind).to_vec();
    for r in records {
        r.encode(&mut bytes);
    }
    bytes
}

fn debug_all(records: &[Record<'_>]) -> Vec<String> {
    records.iter().map(|r| format!("{r:?}")).collect()
}

#[test]
fn golden_v1_log_still_reads() {
    let dir = copy_of("v1", "read");
    let mut got = Vec::new();
    let report = recover(&dir, |r| got.push(format!("{r:?}"))).unwrap();
    assert_eq!(got, debug_all(&expected_v1()));
    assert_eq!((report.torn_bytes, report.lost_bytes), (0, 0));
    assert!(report.set_aside.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn golden_v2_snapshot_and_log_still_read() {
    let dir = copy_of("v2", "read");
    let mut got = Vec::new();
    let report = recover(&dir, |r| got.push(format!("{r:?}"))).unwrap();
    let mut want = debug_all(&expected_v2_snapshot());
    want.extend(debug_all(&expected_v2_log()));
    assert_eq!(got, want);
    assert_eq!(report.snapshot, Some(1));
    assert_eq!((report.torn_bytes, report.lost_bytes), (0, 0));
    assert!(report.set_aside.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn golden_v2_bytes_are_what_this_build_writes() {
    // Writing must stay compatible too: the same records encode to the same bytes.
    let files = [
        (
            "wrenmq-1.snap",
            encoded(FileKind::Snapshot, &expected_v2_snapshot()),
        ),
        ("wrenmq-1.log", encoded(FileKind::Log, &expected_v2_log())),
    ];
    for (name, bytes) in files {
        let path = golden("v2").join(name);
        if std::env::var_os("WRENMQ_BLESS_GOLDEN").is_some() {
            std::fs::create_dir_all(golden("v2")).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(bytes, std::fs::read(&path).unwrap(), "{name}");
    }
}

/// Replays `dir` into a fresh broker as the server does at startup, with the wall clock
/// reading `unix_ms`.
fn restore(dir: &Path, unix_ms: u64) -> Broker {
    let mut broker = Broker::new(Config {
        persistence: true,
        ..Config::in_memory()
    });
    let now = Instant::now();
    broker.set_wall_clock(WallClock { at: now, unix_ms });
    recover(dir, |r| broker.restore_record(r, now)).unwrap();
    broker.finish_restore(now);
    broker
}

#[test]
fn both_formats_load_into_the_broker() {
    // v1: the log opens and deletes session 3; the rest refers to it and is skipped.
    let dir = copy_of("v1", "broker");
    let b = restore(&dir, V2_WRITTEN_AT);
    assert_eq!((b.session_count(), b.retained_count()), (0, 0));
    let _ = std::fs::remove_dir_all(&dir);

    // v2 snapshot alone (the log deletes the session again): the session comes back with
    // its user name, subscription, queue and the retained message.
    let dir = copy_of("v2", "broker");
    std::fs::remove_file(dir.join("wrenmq-1.log")).unwrap();
    let b = restore(&dir, V2_WRITTEN_AT + 1000);
    let s = b.session("sensor-1").expect("session restored");
    assert_eq!(s.username.as_deref(), Some("alice"));
    assert_eq!(s.subscriptions.len(), 1);
    assert_eq!(s.subscriptions[0].id, 42);
    assert_eq!(s.queue().len(), 1);
    assert_eq!(b.retained_count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn golden_files_load_with_queues_kept_on_disk() {
    // As the server loads them: with record locations and a reader of the directory, so
    // that queues are rebuilt as disk entries (issue 11). Same state as above.
    for (version, sessions, queued) in [("v1", 0, 0), ("v2", 1, 1)] {
        let dir = copy_of(version, "ondisk");
        if version == "v2" {
            std::fs::remove_file(dir.join("wrenmq-1.log")).unwrap();
        }
        let mut b = Broker::new(Config {
            persistence: true,
            ..Config::in_memory()
        });
        let now = Instant::now();
        b.set_wall_clock(WallClock {
            at: now,
            unix_ms: V2_WRITTEN_AT + 1000,
        });
        b.set_frame_source(Box::new(Reader::new(dir.clone())));
        recover_at(&dir, |r, at| b.restore_record_at(r, at, now)).unwrap();
        b.finish_restore(now);
        assert_eq!(b.session_count(), sessions, "{version}");
        let got = b.session("sensor-1").map_or(0, |s| s.queued_len());
        assert_eq!(got, queued, "{version}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn golden_v2_session_and_message_expire_by_wall_clock_time() {
    // Both the session and the message had a day left at V2_WRITTEN_AT; two days later
    // both are gone, however short the broker's own uptime.
    let dir = copy_of("v2", "expiry");
    std::fs::remove_file(dir.join("wrenmq-1.log")).unwrap();
    let two_days = Duration::from_secs(2 * 86_400).as_millis() as u64;
    let b = restore(&dir, V2_WRITTEN_AT + two_days);
    assert!(b.session("sensor-1").is_none(), "the session expired");
    assert_eq!(b.retained_count(), 0, "the retained message expired");
    let _ = std::fs::remove_dir_all(&dir);
}
