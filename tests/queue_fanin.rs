//! QoS 1 fan-in into a subscriber that is the bottleneck (issue 11): with no queue limit,
//! messages that wait in the subscriber's queue while it does not read, and those that
//! keep arriving while it drains, all reach it exactly once and in each publisher's order.

mod common;

use std::collections::HashMap;
use std::num::NonZeroU16;

use common::{Client, Got, TestBroker};
use wrenmq::config::Config;
use wrenmq::protocol::{Ack, Packet, Properties, QoS, ReasonCode};

const PUBLISHERS: usize = 8;
/// Messages per publisher before the subscriber reads anything, and again while it drains.
const PER_PHASE: usize = 250;

/// Publishes `PER_PHASE` QoS 1 messages numbered from `first` and waits for every PUBACK.
fn publish_phase(p: &mut Client, k: usize, first: usize) {
    for n in first..first + PER_PHASE {
        let id = u16::try_from(n % 60_000 + 1).unwrap();
        p.publish(
            &format!("fanin/{k}"),
            n.to_string().as_bytes(),
            QoS::AtLeastOnce,
            id,
        );
    }
    for n in first..first + PER_PHASE {
        let id = u16::try_from(n % 60_000 + 1).unwrap();
        assert_eq!(p.recv(), Some(Got::Puback(id)), "publisher {k}");
    }
}

#[test]
fn qos1_fan_in_through_a_full_then_draining_queue_loses_nothing_and_keeps_order() {
    let mut config = Config::in_memory();
    config.max_queued_messages = 0;
    config.max_inflight_messages = 20;
    let broker = TestBroker::with(config);
    let (mut sub, _) = Client::connect(broker.addr, "fanin-sub", true);
    sub.subscribe(1, "fanin/#", QoS::AtLeastOnce);
    let mut pubs: Vec<Client> = (0..PUBLISHERS)
        .map(|k| Client::connect(broker.addr, &format!("fanin-pub-{k}"), true).0)
        .collect();
    // Phase 1: the subscriber reads nothing; 20 messages go in flight, the rest queue.
    for (k, p) in pubs.iter_mut().enumerate() {
        publish_phase(p, k, 0);
    }
    // Phase 2: publishers keep sending while the subscriber drains the queue.
    let threads: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(k, mut p)| std::thread::spawn(move || publish_phase(&mut p, k, PER_PHASE)))
        .collect();
    let total = PUBLISHERS * PER_PHASE * 2;
    let mut next: HashMap<String, usize> = HashMap::new();
    for received in 0..total {
        match sub.recv() {
            Some(Got::Publish {
                topic,
                payload,
                qos: QoS::AtLeastOnce,
                dup: false,
                id,
                ..
            }) => {
                let n: usize = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                let want = next.entry(topic.clone()).or_insert(0);
                assert_eq!(
                    n, *want,
                    "{topic}: out of order or lost after {received} messages"
                );
                *want += 1;
                sub.send(&Packet::Puback(Ack {
                    packet_id: NonZeroU16::new(id).unwrap(),
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::EMPTY,
                }));
            }
            other => {
                panic!("after {received} of {total} messages: expected a PUBLISH, got {other:?}")
            }
        }
    }
    for t in threads {
        t.join().expect("publisher");
    }
    assert_eq!(next.len(), PUBLISHERS);
    assert!(next.values().all(|&n| n == PER_PHASE * 2), "{next:?}");
}
