//! Messages on an established link: the outbound window, QoS 1/2 flows and their resend
//! after a reconnect, and inbound messages with their acknowledgement once durable locally.

use std::time::Instant;

use super::{
    Action, Bridge, DropReason, InFlight, InboundAck, LocalMessage, OutboundQueue, Phase, QueueId,
    QueuedMessage, Stage,
};
use crate::protocol::{Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode};

impl<Q: OutboundQueue> Bridge<Q> {
    pub(super) fn handle_packet(&mut self, now: Instant, packet: Packet<'_>) {
        if let Phase::Connecting { .. } = self.phase {
            // [MQTT-3.2.0-1] the first packet from the server is CONNACK.
            match packet {
                Packet::Connack(ack) => self.handle_connack(now, ack),
                _ => self.abandon_link(now),
            }
            return;
        }
        match packet {
            Packet::Publish(p) => self.handle_publish(now, p),
            Packet::Puback(a) => self.handle_puback(now, a),
            Packet::Pubrec(a) => self.handle_pubrec(now, a),
            Packet::Pubrel(a) => {
                // Inbound QoS 2 complete: the id may be reused by the upstream once it has
                // our PUBCOMP, which waits for the caller (also for an id we do not know:
                // its release may still be on its way to the disk).
                self.inbound_qos2.remove(&a.packet_id.get());
                self.actions.push_back(Action::Released(InboundAck {
                    packet_id: a.packet_id,
                    qos: QoS::ExactlyOnce,
                    link: self.link,
                }));
            }
            Packet::Pubcomp(a) => self.handle_pubcomp(now, a),
            Packet::Suback(s) => {
                self.handle_suback(s.packet_id, &s.codes);
                // A message bound to that packet id may have waited for it.
                self.pump(now);
            }
            Packet::Unsuback(u) => {
                self.control.remove(&u.packet_id.get());
                self.pump(now);
            }
            Packet::Pingresp => {
                self.ping_sent = None;
                self.last_pong = now;
            }
            Packet::Disconnect(_) => {
                // The upstream ends the link (5.0 DISCONNECT from the server).
                self.actions.push_back(Action::Close);
                self.link_lost(now);
            }
            // CONNECT, SUBSCRIBE, ... and a second CONNACK are not sent to clients; AUTH
            // is not negotiated.
            _ => self.abandon_link(now),
        }
    }

    /// Sends what the window allows: first flows left over from an earlier link (DUP),
    /// then new messages in queue order.
    pub(super) fn pump(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Up { .. }) {
            return;
        }
        if self.resend_hold.is_some_and(|t| now < t) {
            return;
        }
        self.resend_hold = None;
        let window = usize::from(self.limits.window);
        let before = self.out.len();
        self.resend(window, now);
        if self.notify_pending && self.on_link < self.window_for(QoS::AtLeastOnce) {
            self.notify_pending = false;
            self.notify_upstream();
        }
        // Nothing new on a link we are leaving; we go once what is here is finished.
        if self.leaving && self.on_link == 0 {
            self.return_to_primary(now);
            return;
        }
        // The buffer is kept: a new one per ack was an allocation per forwarded message.
        let mut batch = std::mem::take(&mut self.peeked);
        'fill: while !self.leaving && self.on_link < window {
            batch.clear();
            self.queue
                .peek_into(self.taken, window - self.on_link, &mut batch);
            if batch.is_empty() {
                break;
            }
            for (id, mut msg) in batch.drain(..) {
                if self.on_link >= self.window_for(msg.qos) {
                    break 'fill; // in queue order: nothing passes it
                }
                match self.queue.expiry_left(id, now) {
                    // [MQTT-3.3.2-5] expired while it waited: never sent.
                    Some(0) => {
                        self.queue.ack(id);
                        self.actions.push_back(Action::Dropped {
                            id,
                            why: DropReason::Expired,
                        });
                        self.taken = Some(id);
                        continue;
                    }
                    // [MQTT-3.3.2-6] the interval less the time it waited.
                    Some(left) => msg.set_expiry(left),
                    None => {}
                }
                if !self.start_flow(Some(id), msg) {
                    break 'fill; // no packet id free: this message goes first next time
                }
                self.taken = Some(id);
            }
        }
        batch.clear();
        self.peeked = batch;
        if self.out.len() > before {
            self.last_sent = now;
            self.last_activity = now;
        }
    }

    /// Resends unacknowledged flows from earlier links in their original order, up to the
    /// window: PUBLISH with DUP, or PUBREL for those the upstream already has
    /// [MQTT-4.4.0-1].
    fn resend(&mut self, window: usize, now: Instant) {
        if self.on_link >= window || self.inflight.len() == self.on_link {
            return;
        }
        let Phase::Up { index } = self.phase else {
            return;
        };
        let rr = self.s.bridge.round_robin;
        let mut waiting: Vec<(u64, u16)> = self
            .inflight
            .iter()
            .filter(|(_, f)| !f.on_link && f.may_go_to(index, rr))
            .map(|(pid, f)| (f.seq, *pid))
            .collect();
        waiting.sort_unstable();
        for (_, pid) in waiting {
            let qos = self
                .inflight
                .get(&pid)
                .map_or(QoS::AtLeastOnce, |f| f.msg.qos);
            if self.on_link >= self.window_for(qos).min(window) {
                break;
            }
            let left = self
                .inflight
                .get(&pid)
                .and_then(|f| f.id)
                .and_then(|id| self.queue.expiry_left(id, now));
            let Some(f) = self.inflight.get_mut(&pid) else {
                continue;
            };
            match left {
                // [MQTT-3.3.2-5] expired before it got through (after a restart, a flow
                // may even never have been sent): a QoS 1 message is dropped, as
                // Mosquitto drops expired messages it would resend.
                Some(0) if f.stage == Stage::Published && f.msg.qos == QoS::AtLeastOnce => {
                    if let Some(id) = f.id {
                        self.queue.ack(id);
                        self.actions.push_back(Action::Dropped {
                            id,
                            why: DropReason::Expired,
                        });
                    }
                    self.inflight.remove(&pid);
                    continue;
                }
                // [MQTT-3.3.2-6] the time it has left. A QoS 2 message goes on even once
                // expired: the upstream may hold its packet id awaiting PUBREL, and would
                // take a new message under that id for a duplicate. At least 1 s: an
                // interval of 0 is "never expires" to Mosquitto.
                Some(left) => f.msg.set_expiry(left.max(1)),
                None => {}
            }
            f.on_link = true;
            if f.sent_at.is_some_and(|a| a != index) {
                // Released by another upstream: only it would deliver the message on
                // PUBREL. Here it is a new message: PUBLISH (DUP) again, never PUBREL.
                f.stage = Stage::Published;
                f.release_held = false;
            }
            f.sent_at = Some(index);
            let stage = f.stage;
            let release_held = f.release_held;
            self.on_link += 1;
            self.qos2_on_link += usize::from(qos == QoS::ExactlyOnce);
            let Some(packet_id) = PacketId::new(pid) else {
                continue;
            };
            match stage {
                Stage::Published => self.write_publish(packet_id, true),
                // Held: `handle_release_durable` sends it.
                Stage::Released if release_held => {}
                Stage::Released => self.send_ack(Packet::Pubrel, packet_id),
            }
        }
    }

    /// Sends a new message. QoS 0 leaves the queue once written; QoS 1/2 gets a packet id
    /// and counts against the window. `false` when no packet id is free (try later).
    pub(super) fn start_flow(&mut self, id: Option<QueueId>, mut msg: QueuedMessage) -> bool {
        // [MQTT-3.2.2-11] never above the server's Maximum QoS; [MQTT-3.2.2-14] no retain
        // where it is not available; `bridge_outgoing_retain false` clears it too.
        msg.qos = msg.qos.min(self.limits.max_qos);
        msg.retain &= self.limits.retain_available && self.s.bridge.outgoing_retain;
        let v5 = self.s.bridge.protocol_version.is_v5();
        let size = publish(&msg, None, false, v5).encoded_len(self.s.bridge.protocol_version);
        if size > self.limits.max_packet_size as usize {
            // [MQTT-3.2.2-15] the upstream would have to disconnect us.
            if let Some(id) = id {
                self.queue.ack(id);
                self.actions.push_back(Action::Dropped {
                    id,
                    why: DropReason::TooLarge {
                        size,
                        max: self.limits.max_packet_size,
                    },
                });
            }
            return true;
        }
        if msg.qos == QoS::AtMostOnce {
            publish(&msg, None, false, v5).encode(self.s.bridge.protocol_version, &mut self.out);
            if let Some(id) = id {
                self.queue.ack(id);
            }
            return true;
        }
        let bound = id.and_then(|i| self.queue.packet_id(i));
        let pid = match bound {
            // Its own id, unless a SUBSCRIBE still uses it: then wait for the SUBACK.
            Some(pid) if self.control.contains_key(&pid.get()) => return false,
            Some(pid) if self.inflight.contains_key(&pid.get()) => return false,
            Some(pid) => pid,
            None => match self.alloc_pid() {
                Some(pid) => pid,
                None => return false,
            },
        };
        self.seq += 1;
        self.qos2_on_link += usize::from(msg.qos == QoS::ExactlyOnce);
        self.inflight.insert(
            pid.get(),
            InFlight {
                id,
                msg,
                stage: Stage::Published,
                on_link: true,
                seq: self.seq,
                sent_before: false,
                release_held: false,
                sent_at: self.up_index(),
            },
        );
        self.on_link += 1;
        self.write_publish(pid, false);
        true
    }

    /// Writes the PUBLISH of flow `pid`, with DUP if it was written before [MQTT-3.3.1-1].
    fn write_publish(&mut self, pid: PacketId, resend: bool) {
        let version = self.s.bridge.protocol_version;
        let Some(f) = self.inflight.get_mut(&pid.get()) else {
            return;
        };
        let dup = resend || f.sent_before;
        f.sent_before = true;
        publish(&f.msg, Some(pid), dup, version.is_v5()).encode(version, &mut self.out);
    }

    fn handle_puback(&mut self, now: Instant, a: Ack<'_>) {
        let pid = a.packet_id.get();
        if self
            .inflight
            .get(&pid)
            .is_some_and(|f| f.msg.qos == QoS::AtLeastOnce && f.stage == Stage::Published)
        {
            self.end_flow(now, pid, a.reason);
        }
    }

    /// Ends flow `pid` with `reason`: done, or (a transient 5.0 refusal) held for a retry.
    fn end_flow(&mut self, now: Instant, pid: u16, reason: ReasonCode) {
        if matches!(
            reason,
            ReasonCode::QUOTA_EXCEEDED | ReasonCode::PACKET_IDENTIFIER_IN_USE
        ) {
            // Not the message's fault: keep it (never drop what we accepted), send
            // nothing for a moment, then resend it first so the order holds.
            if let Some(f) = self.inflight.get_mut(&pid) {
                if f.on_link {
                    f.on_link = false;
                    self.on_link -= 1;
                    self.qos2_on_link -= usize::from(f.msg.qos == QoS::ExactlyOnce);
                }
                f.stage = Stage::Published;
            }
            self.resend_hold = Some(now + super::RETRY_AFTER_REFUSAL);
            return;
        }
        self.last_activity = now;
        self.finish_flow(pid, reason);
        self.pump(now);
    }

    fn handle_pubrec(&mut self, now: Instant, a: Ack<'_>) {
        let pid = a.packet_id.get();
        let Some(f) = self.inflight.get_mut(&pid) else {
            return;
        };
        if f.msg.qos != QoS::ExactlyOnce {
            return;
        }
        if a.reason.is_error() {
            // 5.0: refused; the flow ends here, no PUBREL (§4.3.3).
            self.end_flow(now, pid, a.reason);
            return;
        }
        // A repeated PUBREC (after a resent PUBLISH) gets the PUBREL again.
        if f.stage != Stage::Released {
            f.stage = Stage::Released;
            if let Some(id) = f.id {
                // The PUBREL waits until the PUBREC is durable: sent first and the record
                // lost in a power cut, the restarted bridge would PUBLISH again under this
                // id, and an upstream that completed the flow would deliver it twice.
                f.release_held = !self.queue.released(id);
            }
        }
        if !f.release_held {
            self.send_ack(Packet::Pubrel, a.packet_id);
        }
    }

    /// The queue recorded the PUBREC of flow `pid` durably ([`OutboundQueue::released`]
    /// returned false): its PUBREL may go now, if the flow is on the current link (one
    /// not yet resent after a reconnect gets its PUBREL when it is).
    pub fn handle_release_durable(&mut self, now: Instant, pid: PacketId) {
        let up = matches!(self.phase, Phase::Up { .. });
        let Some(f) = self.inflight.get_mut(&pid.get()) else {
            return;
        };
        if !f.release_held {
            return;
        }
        f.release_held = false;
        if up && f.on_link && f.stage == Stage::Released {
            self.send_ack(Packet::Pubrel, pid);
            self.last_sent = now;
        }
    }

    fn handle_pubcomp(&mut self, now: Instant, a: Ack<'_>) {
        let pid = a.packet_id.get();
        if self
            .inflight
            .get(&pid)
            .is_some_and(|f| f.stage == Stage::Released)
        {
            self.last_activity = now;
            self.finish_flow(pid, ReasonCode::SUCCESS);
            self.pump(now);
        }
    }

    /// The upstream answered flow `pid`: the message leaves the queue.
    fn finish_flow(&mut self, pid: u16, reason: ReasonCode) {
        let Some(f) = self.inflight.remove(&pid) else {
            return;
        };
        if f.on_link {
            self.on_link -= 1;
            self.qos2_on_link -= usize::from(f.msg.qos == QoS::ExactlyOnce);
        }
        if let Some(id) = f.id {
            self.queue.ack(id);
            if reason.is_error() {
                self.actions.push_back(Action::Dropped {
                    id,
                    why: DropReason::Refused(reason),
                });
            }
        }
    }

    /// A PUBLISH from the upstream: remapped and handed to the caller; QoS 1/2 are
    /// acknowledged once the caller reports them durable.
    fn handle_publish(&mut self, now: Instant, p: Publish<'_>) {
        if p.properties.topic_alias().is_some() {
            // We announce no Topic Alias Maximum, so none may be sent to us [MQTT-3.3.2-11].
            self.abandon_link(now);
            return;
        }
        self.last_activity = now;
        let local = self.s.bridge.topics.iter().find_map(|t| t.map_in(p.topic));
        let ack = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => None,
            (qos, Some(pid)) => Some(InboundAck {
                packet_id: pid,
                qos,
                link: self.link,
            }),
        };
        if let Some(a) = ack {
            if a.qos == QoS::ExactlyOnce {
                match self.inbound_qos2.get(&a.packet_id.get()) {
                    // Redelivery of a message already published locally: never twice.
                    Some(true) => {
                        self.send_ack(Packet::Pubrec, a.packet_id);
                        return;
                    }
                    Some(false) => return, // its PUBREC follows when it is durable
                    None => {}
                }
            } else if !self.inbound_qos1.insert(a.packet_id.get()) {
                return; // its PUBACK follows when it is durable
            }
        }
        let Some(topic) = local else {
            // Not ours to publish (a stale subscription upstream): acknowledge and drop.
            if let Some(a) = ack {
                if a.qos == QoS::ExactlyOnce {
                    self.inbound_qos2.insert(a.packet_id.get(), true);
                }
                self.ack_inbound(a);
            }
            return;
        };
        if let Some(a) = ack.filter(|a| a.qos == QoS::ExactlyOnce) {
            self.inbound_qos2.insert(a.packet_id.get(), false);
        }
        self.actions.push_back(Action::PublishLocal(LocalMessage {
            topic,
            payload: p.payload.to_vec(),
            qos: p.qos,
            retain: p.retain,
            properties: p.properties.raw().to_vec(),
            ack,
        }));
    }

    /// The message `ack` names is durable locally: acknowledge it upstream. A QoS 1 ack for
    /// an earlier link is not sent (the upstream redelivers; QoS 1 allows the duplicate);
    /// a QoS 2 one is remembered so the redelivery gets its PUBREC without a second
    /// local publish.
    pub fn handle_local_durable(&mut self, now: Instant, ack: InboundAck) {
        let up = matches!(self.phase, Phase::Up { .. });
        let before = self.out.len();
        match ack.qos {
            QoS::ExactlyOnce => {
                let Some(durable) = self.inbound_qos2.get_mut(&ack.packet_id.get()) else {
                    return;
                };
                *durable = true;
                if up {
                    self.ack_inbound(ack);
                }
            }
            _ if up && ack.link == self.link => {
                self.inbound_qos1.remove(&ack.packet_id.get());
                self.ack_inbound(ack);
            }
            _ => {}
        }
        if self.out.len() > before {
            self.last_sent = now;
        }
    }

    /// The inbound QoS 2 id `ack` names is forgotten durably ([`Action::Released`]):
    /// PUBCOMP. Not on a later link: the upstream resends its PUBREL there.
    pub fn handle_released(&mut self, now: Instant, ack: InboundAck) {
        if matches!(self.phase, Phase::Up { .. }) && ack.link == self.link {
            self.send_ack(Packet::Pubcomp, ack.packet_id);
            self.last_sent = now;
        }
    }

    fn ack_inbound(&mut self, ack: InboundAck) {
        match ack.qos {
            QoS::ExactlyOnce => self.send_ack(Packet::Pubrec, ack.packet_id),
            _ => self.send_ack(Packet::Puback, ack.packet_id),
        }
    }

    /// PUBACK/PUBREC/PUBREL/PUBCOMP with success.
    fn send_ack(&mut self, kind: fn(Ack<'static>) -> Packet<'static>, pid: PacketId) {
        let packet = kind(Ack {
            packet_id: pid,
            reason: ReasonCode::SUCCESS,
            properties: Properties::EMPTY,
        });
        self.send(&packet);
    }

    /// How many flows the link may hold with one more of `qos` among them: the window,
    /// and on 3.1/3.1.1 at most [`super::V3_QOS2_WINDOW`] while QoS 2 is involved.
    pub(super) fn window_for(&self, qos: QoS) -> usize {
        let window = usize::from(self.limits.window);
        let v3 = !self.s.bridge.protocol_version.is_v5();
        if v3 && (qos == QoS::ExactlyOnce || self.qos2_on_link > 0) {
            window.min(super::V3_QOS2_WINDOW)
        } else {
            window
        }
    }

    /// A packet id not used by an outbound flow or a SUBSCRIBE/UNSUBSCRIBE in progress.
    pub(super) fn alloc_pid(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if pid != 0
                && !self.inflight.contains_key(&pid)
                && !self.control.contains_key(&pid)
                && !self.queue.holds_packet_id(pid)
            {
                return PacketId::new(pid);
            }
        }
        None
    }
}

impl InFlight {
    /// Whether this flow may be resent on a link to address `here` (`rr`: `round_robin`).
    /// A QoS 2 flow last sent to the primary waits for the bridge's return there: the
    /// primary may hold the message (it does once it sent PUBREC), and an upstream that
    /// delivers QoS 2 on PUBREL, as Mosquitto does, keeps it in our session and in its
    /// receive window until then; a window's worth of those wedges it. QoS 1 flows, and
    /// QoS 2 flows sent to a backup (the bridge leaves backups), go anywhere.
    fn may_go_to(&self, here: usize, rr: bool) -> bool {
        match self.sent_at {
            Some(a) if a != here && self.msg.qos == QoS::ExactlyOnce => a != 0 || rr,
            _ => true,
        }
    }
}

fn publish(msg: &QueuedMessage, pid: Option<PacketId>, dup: bool, v5: bool) -> Publish<'_> {
    Publish {
        dup: dup && msg.qos != QoS::AtMostOnce, // [MQTT-3.3.1-2]
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic(),
        packet_id: if msg.qos == QoS::AtMostOnce {
            None
        } else {
            pid
        },
        properties: if v5 {
            Properties::from_encoded(msg.properties())
        } else {
            Properties::EMPTY
        },
        payload: msg.payload(),
    }
}
