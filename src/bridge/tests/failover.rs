//! Outbound flows across a failover between addresses: a QoS 2 flow is finished with the
//! upstream it went to when that one may hold it (found by tests/bridge_faults.rs: flows
//! moved from Mosquitto to a backup stayed in its session awaiting PUBREL, filled its
//! window of 20, and wedged the bridge after the return to the primary).

use super::*;

fn no_unsubscribe(seen: Vec<Seen>) -> Vec<Seen> {
    seen.into_iter()
        .filter(|s| !matches!(s, Seen::Unsubscribe(..)))
        .collect()
}

#[test]
fn qos2_flows_of_the_primary_wait_for_it_and_the_backup_is_drained_before_the_return() {
    let mut h = h("restart_timeout 1\nnotifications false\n");
    assert_eq!(h.connect(), 0);
    h.queue(msg("out/t", QoS::AtLeastOnce, b"v"));
    h.queue(msg("out/t", QoS::ExactlyOnce, b"x"));
    h.queue(msg("out/t", QoS::ExactlyOnce, b"y"));
    let first = H::publishes(&no_unsubscribe(h.sent()));
    let [v, x, y] = [first[0].0, first[1].0, first[2].0];
    h.feed(Packet::Pubrec(ack(x)));
    assert_eq!(h.sent(), [Seen::Pubrel(x)]);

    // The primary is cut, refuses the next dial; the backup has no session for us.
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    h.actions();
    h.b.handle_closed(h.now);
    assert_eq!(h.connect_with(false, &[]), 1);
    let sent = no_unsubscribe(h.sent());
    assert_eq!(
        sent,
        [Seen::Publish {
            topic: "out/t".into(),
            qos: QoS::AtLeastOnce,
            dup: true,
            retain: false,
            pid: Some(v),
            payload: b"v".to_vec(),
        }],
        "QoS 1 moves to the backup; x (released by the primary) and y (maybe held by \
         it) wait for the primary"
    );
    assert_eq!(
        h.b.queue().len(),
        3,
        "nothing forgotten: the backup's session is not theirs"
    );
    let z = h.queue(msg("out/t", QoS::ExactlyOnce, b"z"));
    let z_pid = H::publishes(&h.sent())[0].0;
    let _ = z;

    // The primary answers: the backup's flows are finished first, nothing new starts.
    h.advance(PRIMARY_RETRY);
    assert_eq!(h.actions(), [Action::Probe { index: 0 }]);
    h.b.handle_probe(h.now, true);
    assert!(h.actions().is_empty(), "z is still in flight on the backup");
    h.queue(msg("out/t", QoS::ExactlyOnce, b"w"));
    assert!(h.sent().is_empty(), "nothing new on a link being left");
    h.feed(Packet::Puback(ack(v)));
    h.feed(Packet::Pubrec(ack(z_pid)));
    assert_eq!(h.sent(), [Seen::Pubrel(z_pid)]);
    h.feed(Packet::Pubcomp(ack(z_pid)));
    assert_eq!(h.sent(), [Seen::Disconnect]);
    assert_eq!(h.actions(), [Action::Close, Action::Dial { index: 0 }]);

    // Back on the primary, which kept our session: x released, y resent, then w.
    assert_eq!(h.connect_with(true, &[]), 0);
    let sent = no_unsubscribe(h.sent());
    assert_eq!(sent[0], Seen::Pubrel(x));
    let publishes = H::publishes(&sent);
    assert_eq!(publishes[0], (y, true, b"y".to_vec()));
    assert_eq!(publishes[1].2, b"w".to_vec());
    let w = publishes[1].0;
    h.feed(Packet::Pubcomp(ack(x)));
    for p in [y, w] {
        h.feed(Packet::Pubrec(ack(p)));
        h.feed(Packet::Pubcomp(ack(p)));
    }
    assert!(h.b.queue().is_empty());
    assert_eq!(h.b.in_flight(), 0);
}

#[test]
fn a_qos2_flow_released_by_a_backup_starts_again_with_publish_on_the_primary() {
    let mut h = h("round_robin true\nrestart_timeout 1\nnotifications false\n");
    assert_eq!(h.connect(), 0);
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.connect(), 1, "round_robin: on to up2");
    h.queue(msg("out/t", QoS::ExactlyOnce, b"x"));
    h.queue(msg("out/t", QoS::ExactlyOnce, b"y"));
    let first = H::publishes(&h.sent());
    let (x, y) = (first[0].0, first[1].0);
    h.feed(Packet::Pubrec(ack(x)));
    assert_eq!(h.sent(), [Seen::Pubrel(x)]);
    h.b.handle_closed(h.now);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.connect_with(true, &[]), 2);
    // up3 never saw x: PUBREL would end the flow with x delivered nowhere (up2 holds
    // it until its PUBREL).
    let sent = no_unsubscribe(h.sent());
    assert!(!sent.contains(&Seen::Pubrel(x)), "{sent:?}");
    assert_eq!(
        H::publishes(&sent),
        [(x, true, b"x".to_vec()), (y, true, b"y".to_vec())]
    );
    for p in [x, y] {
        h.feed(Packet::Pubrec(ack(p)));
        h.feed(Packet::Pubcomp(ack(p)));
    }
    assert!(h.b.queue().is_empty());
}
