//! The `broker` harness's properties, checked after every operation: every byte the
//! broker writes decodes, deliveries match subscriptions and the 5.0 limits, inflight and
//! queue bounds hold, and the next deadline is not in the past.

use super::*;
use crate::protocol::{self, Packet, Publish, Status};

impl BrokerRun {
    /// Checks the output of slot `s` not yet checked.
    pub(super) fn check_output(&mut self, s: usize) {
        let Some(id) = self.slots[s].id else { return };
        let out = self.broker.pending_output(id);
        // Output shrinks only through `consume_output`, which moves `checked` back too; a
        // shorter buffer means the broker closed the connection (its bytes come back in
        // `poll_close`, checked from `checked` on).
        let Some(bytes) = out.get(self.slots[s].checked..) else {
            return;
        };
        let bytes = bytes.to_vec();
        self.slots[s].checked = out.len();
        self.check_bytes(s, &bytes);
    }

    /// Every byte the broker writes decodes (as the version the client connected with);
    /// every PUBLISH it writes has a subscription; a 5.0 client gets no packet over its
    /// maximum packet size and no more QoS 1/2 PUBLISHes in flight than its receive
    /// maximum.
    pub(super) fn check_bytes(&mut self, s: usize, mut bytes: &[u8]) {
        let version = self.slots[s].version;
        while !bytes.is_empty() {
            let (packet, used) = match protocol::decode(bytes, version, u32::MAX) {
                Ok(Status::Complete(x)) => x,
                other => panic!("broker wrote undecodable bytes {bytes:02x?}: {other:?}"),
            };
            bytes = &bytes[used..];
            if let Some(v5) = self.slots[s].v5 {
                // [MQTT-3.1.2-24]
                assert!(
                    used <= v5.maximum_packet_size as usize,
                    "{packet:?} ({used} bytes) sent to a client with maximum packet size {}",
                    v5.maximum_packet_size
                );
            }
            match packet {
                Packet::Publish(p) => {
                    if let Some(id) = p.packet_id {
                        self.slots[s].ids.push((p.qos as u8, id.get()));
                        if let Some(v5) = self.slots[s].v5 {
                            let unacked = &mut self.slots[s].unacked;
                            unacked.insert(id.get());
                            // [MQTT-3.3.4-9]
                            assert!(
                                unacked.len() <= usize::from(v5.receive_maximum),
                                "{} QoS 1/2 PUBLISHes unacknowledged ({unacked:?}), receive maximum {}",
                                unacked.len(),
                                v5.receive_maximum
                            );
                        }
                    }
                    self.check_delivery(s, &p);
                }
                Packet::Pubrel(a) | Packet::Pubrec(a) => {
                    self.slots[s].ids.push((2, a.packet_id.get()));
                }
                _ => {}
            }
        }
    }

    fn check_delivery(&mut self, s: usize, p: &Publish<'_>) {
        self.deliveries += 1;
        let Some(client) = &self.slots[s].client else {
            if self.slots[s].anonymous {
                return;
            }
            panic!("PUBLISH {p:?} to a connection without a session");
        };
        let matched = |f: &str| naive_matches(match_filter(f), p.topic);
        // A live message without RETAIN: the session must have matched when it was
        // published. Anything else: it must have matched at some point.
        let snapshot = match p.payload {
            [b'P', n @ ..] if !p.retain => <[u8; 4]>::try_from(n)
                .ok()
                .and_then(|n| self.snapshots.get(u32::from_le_bytes(n) as usize)),
            _ => None,
        };
        let Some(snap) = snapshot else {
            let ok = self
                .ever
                .get(client)
                .is_some_and(|fs| fs.iter().any(|f| matched(f)));
            assert!(
                ok,
                "{p:?} delivered to {client} without a matching subscription"
            );
            return;
        };
        let subs: Vec<&SubSnap> = snap
            .subs
            .get(client)
            .map(|v| v.iter().filter(|x| matched(&x.filter)).collect())
            .unwrap_or_default();
        assert!(
            !subs.is_empty(),
            "{p:?} delivered to {client} without a matching subscription"
        );
        // [MQTT-3.8.3-3] A client's own message only through a subscription without no
        // local.
        if snap.publisher.as_ref() == Some(client) {
            assert!(
                subs.iter().any(|x| !x.no_local),
                "{p:?} delivered to its publisher {client} through no-local subscriptions"
            );
        }
        // [MQTT-3.3.4-3] Only identifiers of matching subscriptions; [MQTT-3.3.2-6] the
        // expiry forwarded is what is left of the published one.
        for id in p.properties.subscription_identifiers() {
            assert!(
                subs.iter().any(|x| x.id == id),
                "{p:?} to {client} carries subscription identifier {id} of no matching subscription"
            );
        }
        let forwarded = p.properties.message_expiry_interval();
        assert!(
            forwarded.is_none() || forwarded <= snap.expiry,
            "{p:?} to {client}: expiry {forwarded:?}, published with {:?}",
            snap.expiry
        );
    }

    /// The bounds that must hold after every operation.
    pub(super) fn check(&mut self) {
        let config = self.broker.config().clone();
        for s in 0..CLIENTS {
            self.check_output(s);
        }
        let entries: usize = self
            .broker
            .sessions
            .iter()
            .map(|(_, s)| s.queue().len())
            .sum();
        assert_eq!(
            self.broker.queued_entries, entries,
            "queued entries (memory_limit) drifted"
        );
        for c in &self.clients {
            let Some(session) = self.broker.session(c) else {
                continue;
            };
            let max_inflight = usize::from(config.max_inflight_messages);
            assert!(
                max_inflight == 0 || session.inflight().len() <= max_inflight,
                "{c}: {} in flight, max {max_inflight}",
                session.inflight().len()
            );
            assert!(
                config.max_queued_messages == 0
                    || session.queued_len() <= config.max_queued_messages,
                "{c}: {} queued, max {}",
                session.queued_len(),
                config.max_queued_messages
            );
            let mut bytes = 0;
            session.for_each_queued(|q| {
                bytes += match q {
                    crate::broker::QueuedRef::Memory(q) => q.msg.stored_len(),
                    crate::broker::QueuedRef::Disk(e) => e.bytes(),
                }
            });
            assert_eq!(session.queued_bytes(), bytes, "{c}: queued_bytes drifted");
            assert!(
                config.max_queued_bytes == 0 || bytes <= config.max_queued_bytes,
                "{c}: {bytes} bytes queued"
            );
            if let Some(conn) = session.conn() {
                assert!(
                    self.slots
                        .iter()
                        .any(|sl| sl.id == Some(conn) && sl.client.as_ref() == Some(c)),
                    "{c}: session attached to {conn:?}, which the loop does not have"
                );
            }
        }
    }
}
