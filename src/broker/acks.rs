//! The acknowledgement flows of QoS 1 and 2 (§4.3): PUBACK, PUBREC, PUBREL, PUBCOMP.

use std::time::Instant;

use super::error::packet_id_code;
use super::session::InflightState;
use super::{conn_slot, Broker, ConnId};
use crate::protocol::{Ack, Packet, PacketId, Properties, ReasonCode};
use crate::store::Record;

impl Broker {
    pub(super) fn handle_puback(&mut self, id: ConnId, a: Ack<'_>, now: Instant) -> bool {
        self.complete_inflight(id, a.packet_id, InflightState::AwaitingPuback, now)
    }

    pub(super) fn handle_pubcomp(&mut self, id: ConnId, a: Ack<'_>, now: Instant) -> bool {
        self.complete_inflight(id, a.packet_id, InflightState::AwaitingPubcomp, now)
    }

    /// PUBREC: the message is received; release it with PUBREL [MQTT-4.3.3-1]. PUBREL is
    /// sent even for an unknown id so a client retrying PUBREC can finish its flow (5.0
    /// says so with 0x92). A PUBREC with a failure code ends the flow [MQTT-4.3.3-4].
    pub(super) fn handle_pubrec(&mut self, id: ConnId, a: Ack<'_>, now: Instant) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session()) else {
            return false;
        };
        if a.reason.is_error() {
            return self.complete_inflight(id, a.packet_id, InflightState::AwaitingPubrec, now);
        }
        let mut known = false;
        if let Some(session) = self.sessions.get_mut(key) {
            if let Some(i) = session.find_inflight(a.packet_id, InflightState::AwaitingPubrec) {
                session.inflight_mut()[i].state = InflightState::AwaitingPubcomp;
                let packet_id = a.packet_id.get();
                self.journal
                    .session(session, |session| Record::Pubrec { session, packet_id });
                known = true;
            } else {
                known = session
                    .find_inflight(a.packet_id, InflightState::AwaitingPubcomp)
                    .is_some();
            }
        }
        let reason = packet_id_code(known, self.is_v5(id));
        self.send_held(id, &Packet::Pubrel(ack(a.packet_id, reason)));
        true
    }

    /// PUBREL: the inbound QoS 2 flow ends; the id may be reused [MQTT-4.3.3-2].
    pub(super) fn handle_pubrel(&mut self, id: ConnId, a: Ack<'_>) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session()) else {
            return false;
        };
        let mut known = false;
        if let Some(session) = self.sessions.get_mut(key) {
            let before = session.awaiting_pubrel().len();
            session.awaiting_pubrel_mut().retain(|p| *p != a.packet_id);
            known = session.awaiting_pubrel().len() != before;
            if known {
                let packet_id = a.packet_id.get();
                self.journal
                    .session(session, |session| Record::Released { session, packet_id });
            }
            session.release_idle_flows();
        }
        let reason = packet_id_code(known, self.is_v5(id));
        self.send_held(id, &Packet::Pubcomp(ack(a.packet_id, reason)));
        true
    }

    /// Ends an outbound flow and lets the next queued message into the window. An ack for
    /// an id not in flight is ignored.
    fn complete_inflight(
        &mut self,
        id: ConnId,
        pid: PacketId,
        state: InflightState,
        now: Instant,
    ) -> bool {
        let Some(key) = conn_slot(&mut self.conns, id).and_then(|c| c.session()) else {
            return false;
        };
        if let Some(session) = self.sessions.get_mut(key) {
            if let Some(i) = session.find_inflight(pid, state) {
                // An acknowledgement of a message not resent on this connection yet (it
                // had arrived before the reconnect).
                let unsent = (session.unsent as usize).min(session.inflight().len());
                if i >= session.inflight().len() - unsent {
                    session.unsent = session.unsent.saturating_sub(1);
                }
                session.inflight_mut().remove(i);
                let packet_id = pid.get();
                self.journal
                    .session(session, |session| Record::InflightDone {
                        session,
                        packet_id,
                    });
                self.pump(key, now);
                if let Some(session) = self.sessions.get_mut(key) {
                    session.release_idle_flows();
                }
            }
        }
        true
    }

    /// Whether `id` speaks 5.0.
    fn is_v5(&mut self, id: ConnId) -> bool {
        conn_slot(&mut self.conns, id).is_some_and(|c| c.v5.is_some())
    }
}

/// An acknowledgement of `packet_id` with `reason`.
pub(super) fn ack(packet_id: PacketId, reason: ReasonCode) -> Ack<'static> {
    Ack {
        packet_id,
        reason,
        properties: Properties::EMPTY,
    }
}
