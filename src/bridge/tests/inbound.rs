//! Inbound QoS 2 across restarts and lost upstream sessions: ids given back with
//! `resume_inbound`, PUBCOMP only once the release is durable, `InboundReset`.

use super::*;

fn q2(id: u16, dup: bool) -> Packet<'static> {
    Packet::Publish(Publish {
        dup,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "in/a",
        packet_id: Some(pid(id)),
        properties: Properties::EMPTY,
        payload: b"once",
    })
}

fn published(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::PublishLocal(_)))
        .count()
}

#[test]
fn an_id_resumed_after_a_restart_gets_pubrec_without_a_second_publish() {
    let mut h = h("topic in/# in 2\nnotifications false\n");
    h.b.resume_inbound(pid(9));
    h.connect_with(true, &[]);
    h.sent();
    h.feed(q2(9, true)); // the upstream redelivers what the last run had acknowledged
    assert_eq!(published(&h.actions()), 0, "published locally twice");
    assert_eq!(h.sent(), [Seen::Pubrec(9)]);
    // Another id is a new message.
    h.feed(q2(10, false));
    assert_eq!(published(&h.actions()), 1);
    h.feed(Packet::Pubrel(ack(9)));
    let actions = h.actions();
    let [Action::Released(r)] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(r.packet_id, pid(9));
    assert_eq!(h.sent(), [], "PUBCOMP waits for the release to be durable");
    h.b.handle_released(h.now, *r);
    assert_eq!(h.sent(), [Seen::Pubcomp(9)]);
    // Released: the upstream may reuse 9 for a new message.
    h.feed(q2(9, false));
    assert_eq!(published(&h.actions()), 1);
}

#[test]
fn a_release_durable_after_the_link_died_sends_no_pubcomp_and_the_resent_pubrel_gets_one() {
    let mut h = h("topic in/# in 2\nnotifications false\nrestart_timeout 1\n");
    h.b.resume_inbound(pid(4));
    h.connect_with(true, &[]);
    h.sent();
    h.feed(Packet::Pubrel(ack(4)));
    let Some(Action::Released(r)) = h.actions().pop() else {
        panic!()
    };
    h.b.handle_closed(h.now);
    h.b.handle_released(h.now, r);
    h.advance(Duration::from_secs(1));
    h.connect_with(true, &[]);
    h.actions();
    assert!(!h.sent().contains(&Seen::Pubcomp(4)), "not on the new link");
    // [MQTT-4.4.0-1] the upstream resends PUBREL; an id we no longer know still gets
    // its PUBCOMP, through the caller.
    h.feed(Packet::Pubrel(ack(4)));
    let Some(Action::Released(r)) = h.actions().pop() else {
        panic!()
    };
    h.b.handle_released(h.now, r);
    assert_eq!(h.sent(), [Seen::Pubcomp(4)]);
}

#[test]
fn a_lost_upstream_session_voids_the_ids_and_tells_the_caller() {
    let mut h = h("topic in/# in 2\nnotifications false\n");
    h.b.resume_inbound(pid(9));
    h.connect_with(false, &[]);
    assert!(h.actions().contains(&Action::InboundReset));
    h.sent();
    h.feed(q2(9, false));
    assert_eq!(
        published(&h.actions()),
        1,
        "a new message under a reused id"
    );
    // Nothing known: no reset on the next session-less link.
    let mut h = super::h("topic in/# in 2\nnotifications false\n");
    h.connect_with(false, &[]);
    assert!(!h.actions().contains(&Action::InboundReset));
}
