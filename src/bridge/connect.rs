//! Establishing the link: CONNECT, CONNACK, and the SUBSCRIBE / UNSUBSCRIBE that follow.

use std::time::{Duration, Instant};

use super::{Bridge, Limits, OutboundQueue, Phase, Stage};
use crate::config::bridge::Direction;
use crate::protocol::properties::{PropertiesBuf, Property};
use crate::protocol::{
    Connack, Connect, Packet, PacketId, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscriptionOptions, Unsubscribe, Will,
};

impl<Q: OutboundQueue> Bridge<Q> {
    /// CONNECT: the configured clean session and keepalive; with notifications (and not
    /// `notifications_local_only`) a retained QoS 1 will "0" on the notification topic, so
    /// the upstream reports us down when the link dies (Mosquitto's bridge will).
    pub(super) fn send_connect(&mut self) {
        let b = &self.s.bridge;
        let version = b.protocol_version;
        let mut props = PropertiesBuf::new();
        if version.is_v5() {
            if !b.clean_session {
                // 5.0 ends a session at disconnect unless told otherwise; a persistent
                // bridge session must outlive outages as in 3.1.1 [MQTT-3.1.2-23].
                props.push(Property::SessionExpiryInterval(u32::MAX));
            }
            if self.s.max_packet_in < crate::config::MQTT_MAX_PACKET_SIZE {
                // What the local broker accepts from anyone: the upstream must not send
                // more (§3.1.2.11.4).
                props.push(Property::MaximumPacketSize(self.s.max_packet_in));
            }
        }
        let will = (b.notifications && !b.notifications_local_only).then(|| Will {
            topic: &self.s.notification_topic,
            payload: b"0",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: crate::protocol::Properties::EMPTY,
        });
        let connect = Connect {
            version,
            clean_start: b.clean_session,
            keep_alive: b.keepalive,
            properties: props.as_properties(),
            client_id: &self.s.remote_clientid,
            will,
            username: b.remote_username.as_deref(),
            // A password without a user name is a 3.1.1 protocol error [MQTT-3.1.2-22].
            password: b
                .remote_password
                .as_deref()
                .filter(|_| b.remote_username.is_some() || version.is_v5())
                .map(str::as_bytes),
            // Mosquitto's `try_private` bit, on 3.1/3.1.1 only (5.0 has subscription options).
            bridge: self.private_ok && !version.is_v5(),
        };
        Packet::Connect(connect).encode(version, &mut self.out);
    }

    /// CONNACK: Up, or this attempt failed.
    pub(super) fn handle_connack(&mut self, now: Instant, ack: Connack<'_>) {
        let Phase::Connecting { index, .. } = self.phase else {
            self.abandon_link(now); // a second CONNACK is a protocol error
            return;
        };
        let v5 = self.s.bridge.protocol_version.is_v5();
        if ack.code != ReasonCode::SUCCESS {
            self.actions.push_back(super::Action::Close);
            if !v5 && self.private_ok && ack.code == ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION {
                // An upstream that does not know the bridge bit: same address, plain
                // CONNECT, at once (Mosquitto's try_private fallback).
                self.private_ok = false;
                self.link_down();
                self.phase = Phase::Dialing {
                    index,
                    deadline: now + self.connect_timeout(),
                };
                self.actions.push_back(super::Action::Dial { index });
                return;
            }
            self.attempt_failed(now);
            return;
        }
        self.limits = if v5 {
            let p = &ack.properties;
            Limits {
                // Absent = 65,535 (§3.2.2.3.3).
                window: p.receive_maximum().unwrap_or(u16::MAX),
                // The smaller of the upstream's and `bridge_max_packet_size` (Mosquitto).
                max_packet_size: p
                    .maximum_packet_size()
                    .unwrap_or(crate::config::MQTT_MAX_PACKET_SIZE)
                    .min(out_limit(self.s.bridge.max_packet_size)),
                max_qos: p
                    .maximum_qos()
                    .and_then(QoS::from_u8)
                    .unwrap_or(QoS::ExactlyOnce),
                retain_available: p.retain_available() != Some(0),
                topic_alias_max: p.topic_alias_maximum().unwrap_or(0),
            }
        } else {
            Limits::v3(self.s.max_inflight, self.s.bridge.max_packet_size)
        };
        // [MQTT-3.2.2-21] the server's keepalive replaces ours.
        if let Some(k) = ack.properties.server_keep_alive().filter(|&k| k > 0) {
            self.keepalive = Duration::from_secs(u64::from(k));
        }
        if !ack.session_present {
            self.session_lost(index);
        }
        self.phase = Phase::Up { index };
        self.plan.connected();
        self.backoff.reset();
        self.last_activity = now;
        self.probe_at =
            (index != 0 && !self.s.bridge.round_robin).then(|| now + super::PRIMARY_RETRY);
        self.subscribe();
        self.notify_local(true);
        let b = &self.s.bridge;
        self.notify_pending = b.notifications && !b.notifications_local_only;
        self.pump(now);
    }

    /// The upstream at `index` has no session for us: inbound QoS 2 state is void, and
    /// outbound QoS 2 messages it already acknowledged with PUBREC are its own now. Those
    /// another address acknowledged are not: they wait for it (`InFlight::sent_at`).
    fn session_lost(&mut self, index: usize) {
        if !self.inbound_qos2.is_empty() {
            self.inbound_qos2.clear();
            self.actions.push_back(super::Action::InboundReset);
        }
        let released: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.stage == Stage::Released && f.sent_at.is_none_or(|a| a == index))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in released {
            if let Some(f) = self.inflight.remove(&pid) {
                if let Some(id) = f.id {
                    self.queue.ack(id);
                }
            }
        }
    }

    /// SUBSCRIBE to the remote filters of `in`/`both` lines; with
    /// `bridge_attempt_unsubscribe`, UNSUBSCRIBE from those of `out` lines (a subscription
    /// left over from an earlier configuration would echo our messages back).
    fn subscribe(&mut self) {
        let v5 = self.s.bridge.protocol_version.is_v5();
        let mut filters: Vec<(String, SubscriptionOptions)> = Vec::new();
        let mut unsub: Vec<String> = Vec::new();
        for t in &self.s.bridge.topics {
            match t.direction {
                Direction::In | Direction::Both => {
                    let both = t.direction == Direction::Both;
                    filters.push((
                        t.remote_filter(),
                        SubscriptionOptions {
                            qos: t.qos,
                            // 5.0 loop prevention on `both`: our own messages are not sent
                            // back [MQTT-3.8.3-3], and retain flags survive the trip.
                            no_local: v5 && both,
                            retain_as_published: v5 && both,
                            retain_handling: RetainHandling::OnSubscribe,
                        },
                    ));
                }
                Direction::Out if self.s.bridge.attempt_unsubscribe => {
                    unsub.push(t.remote_filter())
                }
                Direction::Out => {}
            }
        }
        if !unsub.is_empty() {
            if let Some(pid) = self.alloc_pid() {
                let packet = Packet::Unsubscribe(Unsubscribe {
                    packet_id: pid,
                    properties: crate::protocol::Properties::EMPTY,
                    filters: unsub.iter().map(String::as_str).collect(),
                });
                self.send(&packet);
                self.control.insert(pid.get(), Vec::new());
            }
        }
        if !filters.is_empty() {
            if let Some(pid) = self.alloc_pid() {
                let packet = Packet::Subscribe(Subscribe {
                    packet_id: pid,
                    properties: crate::protocol::Properties::EMPTY,
                    filters: filters.iter().map(|(f, o)| (f.as_str(), *o)).collect(),
                });
                self.send(&packet);
                self.control
                    .insert(pid.get(), filters.into_iter().map(|(f, _)| f).collect());
            }
        }
    }

    /// SUBACK: report refused filters.
    pub(super) fn handle_suback(&mut self, pid: PacketId, codes: &[ReasonCode]) {
        let Some(filters) = self.control.remove(&pid.get()) else {
            return;
        };
        for (filter, code) in filters.into_iter().zip(codes) {
            if code.is_error() {
                self.actions.push_back(super::Action::SubscriptionRefused {
                    filter,
                    code: *code,
                });
            }
        }
    }

    /// "1" upstream, retained, as a QoS 1 message outside the queue (not resent: the
    /// next link sends its own). It takes a slot of the window like any flow, after the
    /// flows resent on a resumed session: an upstream still holding our QoS 2 flows from
    /// the last link counts them against its quota until their PUBREL, and Mosquitto
    /// drops a client that publishes beyond it (a reconnect loop, found by the fault
    /// battery: the "1" went first, into a full quota, at every reconnect).
    pub(super) fn notify_upstream(&mut self) {
        let msg =
            super::QueuedMessage::new(&self.s.notification_topic, b"1", QoS::AtLeastOnce, true);
        self.start_flow(None, msg);
    }
}

/// `bridge_max_packet_size` as a limit (0 = none).
pub(super) fn out_limit(configured: u32) -> u32 {
    match configured {
        0 => crate::config::MQTT_MAX_PACKET_SIZE,
        n => n,
    }
}
