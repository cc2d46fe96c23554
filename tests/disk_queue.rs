//! Queues kept on disk over real restarts (issue 11): 100,000 QoS 1 messages queued for an
//! offline persistent client, across two `kill -9`s of the broker binary (one after
//! recovery rebuilt the queue as disk entries and compacted, one while the queue was
//! moving to disk live), come back in order with the right payloads.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::procs::{free_port, start_wrenmq, Killed};
use common::{Client, Got};
use wrenmq::protocol::{Ack, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode};

const TOTAL: usize = 100_000;
/// Publishes sent before waiting for their PUBACKs.
const BURST: usize = 500;

fn start(config: &Path, addr: SocketAddr) -> Killed {
    start_wrenmq(config, addr.port(), 60)
}

fn kill_9(mut proc: Killed) {
    proc.0.kill().expect("kill -9");
    let _ = proc.0.wait();
}

/// Payload of message `i`: its number, padded to 100 bytes with a pattern of it.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:07}-").into_bytes();
    p.extend((0..92).map(|k| b'a' + ((i + k) % 26) as u8));
    p
}

/// Publishes messages `range` at QoS 1 and waits for every PUBACK.
fn publish(addr: SocketAddr, range: std::ops::Range<usize>) {
    let (mut c, _) = Client::connect(addr, "dq-pub", true);
    let mut next = range.start;
    while next < range.end {
        let end = (next + BURST).min(range.end);
        let mut bytes = Vec::new();
        for i in next..end {
            let body = payload(i);
            let id = NonZeroU16::new((i % 65_000 + 1) as u16);
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "dq/t",
                packet_id: id,
                properties: Properties::EMPTY,
                payload: &body,
            })
            .encode(ProtocolVersion::V311, &mut bytes);
        }
        c.send_raw(&bytes).expect("send");
        for _ in next..end {
            assert!(matches!(c.recv(), Some(Got::Puback(_))), "PUBACK");
        }
        next = end;
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wrenmq-dq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_hundred_thousand_queued_messages_survive_kill_9_in_order_from_disk() {
    let base = temp_dir("restart");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = base.join("wrenmq.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}\n\
             max_queued_messages 0\nmax_inflight_messages 100\n",
            base.join("data").display()
        ),
    )
    .unwrap();

    let proc = start(&config, addr);
    {
        let (mut sub, _) = Client::connect(addr, "dq-sub", false);
        sub.subscribe(1, "dq/#", QoS::AtLeastOnce);
    }
    publish(addr, 0..TOTAL / 2);
    kill_9(proc);
    // Recovery rebuilds the queue as disk entries and compacts (the snapshot points into
    // the old log); the second half is queued live and moves to disk as it is written.
    let proc = start(&config, addr);
    publish(addr, TOTAL / 2..TOTAL);
    kill_9(proc);

    let proc = start(&config, addr);
    let (mut sub, present) = Client::connect(addr, "dq-sub", false);
    assert!(present, "the session survived");
    let mut next = 0;
    let mut acks = Vec::new();
    while next < TOTAL {
        let Some(got) = sub.recv() else {
            panic!("delivery stopped after {next} of {TOTAL} messages");
        };
        if let Got::Publish {
            payload: body, id, ..
        } = got
        {
            assert_eq!(
                body,
                payload(next),
                "message {next}: {}",
                String::from_utf8_lossy(&body)
            );
            next += 1;
            Packet::Puback(Ack {
                packet_id: NonZeroU16::new(id).unwrap(),
                reason: ReasonCode::SUCCESS,
                properties: Properties::EMPTY,
            })
            .encode(ProtocolVersion::V311, &mut acks);
            if acks.len() >= 4 * 50 || next == TOTAL {
                sub.send_raw(&acks).expect("send PUBACKs");
                acks.clear();
            }
        }
    }
    // Nothing more: every message exactly once.
    sub.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let extra = sub.recv();
    assert!(
        !matches!(extra, Some(Got::Publish { .. })),
        "a message came twice: {extra:?}"
    );
    drop(proc);
    let _ = std::fs::remove_dir_all(&base);
}
