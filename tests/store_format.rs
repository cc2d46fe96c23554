//! The on-disk format is a promise to users: data written by this release must be read by
//! later ones. The golden files under `tests/data/store/` were written by format version 1;
//! a change that stops them decoding to the same records fails here.

use std::path::Path;

use wrenmq::store::files::recover;
use wrenmq::store::Record;

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

#[test]
fn golden_v1_log_still_reads() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store/v1");
    // Recovery may repair files, so it works on a copy.
    let dir = std::env::temp_dir().join(format!("wrenmq-golden-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&golden).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let mut got = Vec::new();
    let report = recover(&dir, |r| got.push(format!("{r:?}"))).unwrap();
    let want: Vec<String> = expected_v1().iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(got, want);
    assert_eq!(report.truncated_bytes, 0);
    assert!(report.moved_aside.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn golden_v1_bytes_are_what_this_build_writes() {
    // Writing must stay compatible too: the same records encode to the same bytes.
    let golden = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store/v1/wrenmq-1.log"),
    )
    .unwrap();
    let mut bytes = wrenmq::store::record::header(wrenmq::store::record::FileKind::Log).to_vec();
    for r in expected_v1() {
        r.encode(&mut bytes);
    }
    assert_eq!(bytes, golden);
}
