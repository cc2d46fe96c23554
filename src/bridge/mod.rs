//! The bridge: an outbound MQTT client to an upstream broker, as a sans-IO state machine.
//!
//! ```text
//!  queue (out topics) ──► Bridge ──► poll_transmit: bytes for the uplink socket
//!  uplink bytes ───────► Bridge ──► poll_action:   Dial / Close / Probe / PublishLocal ...
//!  now, timers ────────► Bridge ──► poll_timeout:  next deadline
//! ```
//!
//! Owns, for one `connection` block: connecting (CONNECT with the configured clean
//! session, the notification will, Mosquitto's `try_private` bit on 3.1/3.1.1), CONNACK
//! handling (5.0 Receive Maximum, Maximum Packet Size, Maximum QoS, Retain Available,
//! Topic Alias Maximum, Server Keep Alive), SUBSCRIBE for `in`/`both` topics (5.0: No
//! Local and Retain As Published for `both`), UNSUBSCRIBE of `out` topics
//! (`bridge_attempt_unsubscribe`), topic remapping both ways, the outbound window, QoS 1/2
//! flows with DUP resend after a reconnect, keepalive and dead-link detection, reconnect
//! backoff, address failover, `start_type` and the "1"/"0" state notifications.
//!
//! It does no I/O and reads no clock: the caller passes `now` to every `handle_*`, dials
//! and closes sockets when asked ([`Action`]), writes what [`Bridge::poll_transmit`]
//! returns, and calls [`Bridge::handle_timeout`] at [`Bridge::poll_timeout`]. Randomness
//! (backoff jitter) comes from an injected [`Rng`].
//!
//! Invariants:
//! - PUBLISH packets with QoS > 0 (and PUBRELs) unacknowledged on the current link never
//!   exceed the window: the upstream's Receive Maximum on 5.0, the configured inflight
//!   limit on 3.1/3.1.1 (Mosquitto's `max_inflight_messages`, default 20, which is also a
//!   stock Mosquitto upstream's limit), so the upstream never has a reason to drop us.
//! - A message leaves the queue only when the upstream has it (PUBACK, PUBCOMP, or written
//!   at QoS 0), or when it can never be sent (larger than the upstream's Maximum Packet
//!   Size, refused with a 5.0 error reason code other than the transient Quota
//!   Exceeded / Packet Identifier In Use, which are retried after
//!   [`RETRY_AFTER_REFUSAL`], or expired [MQTT-3.3.2-5]): [`Action::Dropped`] reports
//!   those.
//! - An inbound QoS 1/2 message is acknowledged upstream only after the caller reports it
//!   durable locally ([`Bridge::handle_local_durable`]); an inbound QoS 2 packet id stays
//!   known until PUBREL, across reconnects (and restarts: the caller persists the ids and
//!   gives them back with [`Bridge::resume_inbound`]), so a redelivery is not published
//!   twice. PUBCOMP waits until the caller has forgotten the id durably
//!   ([`Action::Released`]).
//! - A link is declared dead when nothing was received for 1.5 × keepalive; a PINGREQ
//!   goes out when nothing was sent, or nothing received, for one keepalive.
//!
//! Files: `mod.rs` (types, public API, timers, connection life cycle), `connect`
//! (CONNECT, CONNACK, SUBSCRIBE), `flow` (outbound window and acks, inbound messages),
//! `queue` ([`OutboundQueue`], [`MemQueue`]), `backoff` (restart delay, address order).
//!
//! Wiring (issue 14): `net/bridge.rs` runs a [`Bridge`] per `connection` on reserved
//! tokens (host names resolved off the loop, each resolved address tried in turn for one
//! [`Action::Dial`], `bridge_bind_address`, TLS through the transport seam's client side,
//! SIGHUP restarting the bridges whose block changed with [`Bridge::stop`]); its queue is a view of the broker's bridge session (`broker/bridge_session.rs`),
//! whose queue and inflight list are the durable outbound queue and packet-id map
//! ([`OutboundQueue::packet_id`], [`Bridge::resume_flow`] after a restart).
//!
//! What remains (issue 14):
//! - A restart cannot tell the outbound flows the last run had sent from those it had
//!   only taken for the uplink (`broker/bridge_session.rs`): both are resumed as sent.
//!
//! Done elsewhere: host names, `bridge_bind_address` and SIGHUP reload are the loop's
//! (`net/bridge/`); the inbound QoS 2 ids are the local session's awaiting-PUBREL state
//! (journaled, [`Bridge::resume_inbound`]); wrenmq as an upstream honours the 3.1.1
//! bridge bit (`broker/subscribe.rs`); retained messages go upstream once per new local
//! subscription, then only as they change (`broker/bridge_session.rs`), so a reconnect
//! replays nothing; the queue's caps and the policy at them are the broker's
//! (`broker/bridge_queue.rs`: publishers refused, never an acknowledged message dropped).
//! MQTT 5 Message Expiry of queued messages ([`OutboundQueue::expiry_left`]): a message
//! that expired before it was first sent is dropped ([`DropReason::Expired`]), every
//! PUBLISH carries the time left, a resend of an expired QoS 1 flow is dropped and one of
//! QoS 2 goes with 1 s left.

mod backoff;
mod connect;
mod flow;
mod pid_map;
mod queue;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::config::bridge::{BridgeAddress, BridgeConfig, StartType};
use crate::protocol::{self, Packet, PacketId, QoS, ReasonCode, Status};

pub use backoff::{Rng, XorShift};
pub use queue::{Body, MemQueue, OutboundQueue, Owned, QueueFull, QueueId, QueuedMessage};

use backoff::{AddressPlan, Backoff};
use pid_map::PidMap;

/// While connected to a backup address (without `round_robin`), how often the primary is
/// probed (Mosquitto: every 5 s).
pub const PRIMARY_RETRY: Duration = Duration::from_secs(5);

/// After a 5.0 upstream refuses a message for a transient reason (Quota Exceeded, Packet
/// Identifier In Use), how long the bridge sends nothing before resending it.
pub const RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(1);

/// On a 3.1/3.1.1 link, flows in flight at most while any of them is QoS 2, whatever
/// the configured window: a stock Mosquitto counts a client's QoS 2 messages against its
/// `max_inflight_messages` (20) until their PUBREL and drops a client that publishes
/// beyond it (a reconnect loop at every attempt), and a 3.1.1 upstream cannot announce
/// its quota as 5.0's Receive Maximum does. QoS 1 alone uses the whole window.
pub const V3_QOS2_WINDOW: usize = 20;

/// What the bridge needs besides its `connection` block.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bridge: BridgeConfig,
    /// The upstream client id (`BridgeConfig::remote_clientid` with the host name).
    pub remote_clientid: String,
    /// Where the "1"/"0" state goes.
    pub notification_topic: String,
    /// The outbound window on 3.1/3.1.1 (Mosquitto's `max_inflight_messages`, default 20;
    /// 0 = 65,535). On 5.0 the upstream's Receive Maximum is used.
    pub max_inflight: u16,
    /// The largest packet accepted from the upstream: the broker's `max_packet_size`
    /// (announced to a 5.0 upstream). `Settings::new` sets MQTT's maximum.
    pub max_packet_in: u32,
    /// `BridgeTopic::out_filter` of each of `bridge.topics`, in order (for `route_out`).
    out_filters: Vec<Option<String>>,
}

impl Settings {
    pub fn new(bridge: BridgeConfig, hostname: &str, max_inflight: u16) -> Settings {
        Settings {
            remote_clientid: bridge.remote_clientid(hostname),
            notification_topic: bridge.notification_topic(hostname),
            out_filters: bridge.topics.iter().map(|t| t.out_filter()).collect(),
            bridge,
            max_inflight,
            max_packet_in: crate::config::MQTT_MAX_PACKET_SIZE,
        }
    }

    /// Whether a local message on `topic` goes upstream, and as what: the remote topic
    /// of the first `out`/`both` line that matches, and the lower of the message's QoS and
    /// the line's (what a local subscription with that QoS would deliver).
    pub fn route_out<'a>(&self, topic: &'a str, qos: QoS) -> Option<(Cow<'a, str>, QoS)> {
        self.bridge
            .topics
            .iter()
            .zip(&self.out_filters)
            .find_map(|(t, f)| {
                let remote = t.map_out_with(f.as_deref(), topic)?;
                Some((remote, qos.min(t.qos)))
            })
    }
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to `Settings::bridge.addresses[index]`, then call
    /// `handle_connected` or `handle_closed`.
    Dial { index: usize },
    /// Write what `poll_transmit` still returns (a DISCONNECT, when we end the link
    /// cleanly), then close the connection. The bridge already considers it gone.
    Close,
    /// Check whether `addresses[index]` (the primary) accepts connections, without
    /// disturbing the current link; report with `handle_probe`.
    Probe { index: usize },
    /// Publish a message locally: from the upstream, or a state notification.
    PublishLocal(LocalMessage),
    /// A queued message that will never be sent; it was removed from the queue.
    Dropped { id: QueueId, why: DropReason },
    /// The upstream refused to subscribe to this remote filter.
    SubscriptionRefused { filter: String, code: ReasonCode },
    /// The upstream released an inbound QoS 2 message (PUBREL): its packet id is free
    /// again. Forget it durably, then pass this back to [`Bridge::handle_released`]: the
    /// PUBCOMP goes upstream only then, so that a crash cannot leave marked as in use an
    /// id the upstream is free to reuse (its next message would be taken for a redelivery).
    Released(InboundAck),
    /// The upstream has no session for us (CONNACK without session present): every
    /// inbound QoS 2 packet id is void; forget them.
    InboundReset,
}

/// A message for the local broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// The 5.0 property block as received (empty on 3.1.1).
    pub properties: Vec<u8>,
    /// For QoS 1/2 from the upstream: pass back to `handle_local_durable` once the
    /// message is durable locally; the upstream is acknowledged then.
    pub ack: Option<InboundAck>,
}

/// Identifies an inbound message awaiting local durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundAck {
    pub packet_id: PacketId,
    pub qos: QoS,
    /// The link it arrived on: a QoS 1 ack for a link that is gone is not sent (the
    /// upstream redelivers).
    pub link: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than the upstream's Maximum Packet Size.
    TooLarge { size: usize, max: u32 },
    /// Refused by a 5.0 upstream with this reason code.
    Refused(ReasonCode),
    /// Its MQTT 5 Message Expiry Interval ran out before it could be sent [MQTT-3.3.2-5].
    Expired,
}

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting to dial at `at`, or (`None`) for the lazy threshold.
    Idle { at: Option<Instant> },
    /// A dial to `index` is in progress.
    Dialing { index: usize, deadline: Instant },
    /// CONNECT sent, waiting for CONNACK.
    Connecting { index: usize, deadline: Instant },
    /// Connected to `addresses[index]`.
    Up { index: usize },
    /// `start_type once` after its attempt ended: never reconnects.
    Stopped,
}

impl Phase {
    /// The address being dialed or connected to, before the link is up.
    pub fn dialing_index(&self) -> Option<usize> {
        match self {
            Phase::Dialing { index, .. } | Phase::Connecting { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// Limits the upstream announced in CONNACK (5.0), or their 3.1.1 equivalents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub window: u16,
    /// Largest packet the upstream accepts.
    pub max_packet_size: u32,
    pub max_qos: QoS,
    pub retain_available: bool,
    /// Topic aliases we may use; recorded, never used (sending none is always valid).
    pub topic_alias_max: u16,
}

/// Where an outbound QoS 1/2 message is in its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Clone, Debug)]
struct InFlight {
    /// `None` for the upstream "1" notification (not from the queue, not resent).
    id: Option<QueueId>,
    msg: QueuedMessage,
    stage: Stage,
    /// Sent on the current link (counts against the window); false after a reconnect
    /// until it is resent.
    on_link: bool,
    /// Send order, for resending in order.
    seq: u64,
    /// Written at least once: a resend carries DUP.
    sent_before: bool,
    /// PUBREC seen and told to the queue, which must record it durably before the PUBREL
    /// goes ([`OutboundQueue::released`]): until [`Bridge::handle_release_durable`].
    release_held: bool,
    /// The address it was last written to (`None`: not in this run, a flow resumed after
    /// a restart). After a failover, a QoS 2 flow sent to the primary waits for it, one
    /// released by a backup starts again with PUBLISH elsewhere (`InFlight::may_go_to`).
    sent_at: Option<usize>,
}

/// One bridge's state machine. `Q` is its outbound queue.
pub struct Bridge<Q: OutboundQueue> {
    s: Settings,
    queue: Q,
    rng: Box<dyn Rng + Send>,
    phase: Phase,
    backoff: Backoff,
    plan: AddressPlan,
    /// False after the upstream refused the `try_private` level byte: CONNECT plain.
    private_ok: bool,
    /// Increments on every new link.
    link: u64,
    limits: Limits,
    keepalive: Duration,
    last_sent: Instant,
    last_received: Instant,
    /// Last PUBLISH sent or received, for the lazy `idle_timeout`.
    last_activity: Instant,
    /// When the PINGREQ still unanswered was sent.
    ping_sent: Option<Instant>,
    /// The last PINGRESP (or CONNECT): a PINGREQ goes at least once per keepalive, also
    /// on a link busy both ways, so a link dead in one direction only is noticed.
    last_pong: Instant,
    probe_at: Option<Instant>,
    /// The primary answered a probe: no new flows on this backup link, back to the
    /// primary once the flows in flight here are finished (or at the next probe).
    leaving: bool,
    /// The upstream "1" notification waits for a free slot of the window, behind the
    /// flows resent on this link (see `Bridge::pump`).
    notify_pending: bool,
    /// After a transient refusal: send nothing until then.
    resend_hold: Option<Instant>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    actions: VecDeque<Action>,
    // Outbound.
    inflight: PidMap<InFlight>,
    /// Reused by `pump` for what it takes from the queue.
    peeked: Vec<(QueueId, QueuedMessage)>,
    on_link: usize,
    /// QoS 2 flows among them (see [`V3_QOS2_WINDOW`]).
    qos2_on_link: usize,
    /// The last queue id taken into flight (or written at QoS 0).
    taken: Option<QueueId>,
    next_pid: u16,
    seq: u64,
    /// SUBSCRIBE/UNSUBSCRIBE packet ids awaiting their ack, with the SUBSCRIBE's filters.
    control: PidMap<Vec<String>>,
    // Inbound QoS 2 ids published locally (value: durable) and awaiting PUBREL.
    inbound_qos2: PidMap<bool>,
    /// Inbound QoS 1 ids handed to the caller and not yet acknowledged (dedupe only).
    inbound_qos1: HashSet<u16>,
}

impl<Q: OutboundQueue> Bridge<Q> {
    /// A bridge that dials at `now` (`automatic`, `once`) or when `threshold` messages
    /// are queued (`lazy`). With notifications on, a local "0" is published first.
    pub fn new(s: Settings, queue: Q, rng: Box<dyn Rng + Send>, now: Instant) -> Bridge<Q> {
        let at = match s.bridge.start_type {
            StartType::Automatic | StartType::Once => Some(now),
            StartType::Lazy => None,
        };
        let keepalive = Duration::from_secs(u64::from(s.bridge.keepalive.max(1)));
        let mut b = Bridge {
            backoff: Backoff::new(s.bridge.restart),
            plan: AddressPlan::new(s.bridge.addresses.len(), s.bridge.round_robin),
            private_ok: s.bridge.try_private,
            limits: Limits::v3(s.max_inflight, s.bridge.max_packet_size),
            s,
            queue,
            rng,
            phase: Phase::Idle { at },
            link: 0,
            keepalive,
            last_sent: now,
            last_received: now,
            last_activity: now,
            ping_sent: None,
            last_pong: now,
            probe_at: None,
            leaving: false,
            notify_pending: false,
            resend_hold: None,
            inbuf: Vec::new(),
            out: Vec::new(),
            actions: VecDeque::new(),
            inflight: PidMap::default(),
            peeked: Vec::new(),
            on_link: 0,
            qos2_on_link: 0,
            taken: None,
            next_pid: 1,
            seq: 0,
            control: PidMap::default(),
            inbound_qos2: PidMap::default(),
            inbound_qos1: HashSet::new(),
        };
        b.notify_local(false);
        b.handle_timeout(now);
        b
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The address `Action::Dial { index }` means.
    pub fn address(&self, index: usize) -> Option<&BridgeAddress> {
        self.s.bridge.addresses.get(index)
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    pub fn queue_mut(&mut self) -> &mut Q {
        &mut self.queue
    }

    /// QoS 1/2 messages (and PUBRELs) unacknowledged on the current link.
    pub fn in_flight(&self) -> usize {
        self.on_link
    }

    /// Takes back a flow the last run left in flight (a durable queue restored after a
    /// restart): message `id` under packet id `pid`, `released` once the upstream had sent
    /// PUBREC. It is resent first on the next link, PUBLISH with DUP or PUBREL
    /// [MQTT-4.4.0-1], and `peek` continues after `id`. Call before the first link, in
    /// the original send order.
    pub fn resume_flow(&mut self, id: QueueId, pid: PacketId, msg: QueuedMessage, released: bool) {
        self.seq += 1;
        self.inflight.insert(
            pid.get(),
            InFlight {
                id: Some(id),
                msg,
                stage: if released {
                    Stage::Released
                } else {
                    Stage::Published
                },
                on_link: false,
                seq: self.seq,
                sent_before: true,
                release_held: false,
                sent_at: None,
            },
        );
        self.taken = Some(self.taken.map_or(id, |t| t.max(id)));
    }

    /// Takes back an inbound QoS 2 packet id the last run published locally and had not
    /// seen released (PUBREL) yet: a redelivery under it gets PUBREC and is not published
    /// again [MQTT-4.3.3-2]. Call before the first link.
    pub fn resume_inbound(&mut self, pid: PacketId) {
        self.inbound_qos2.insert(pid.get(), true);
    }

    /// The next action for the caller, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Appends the bytes to write to the uplink to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle { at } => at,
            Phase::Dialing { deadline, .. } | Phase::Connecting { deadline, .. } => Some(deadline),
            Phase::Up { .. } => {
                let mut t = self.last_received + self.dead_after();
                t = t.min(match self.ping_sent {
                    None => {
                        self.last_sent.min(self.last_received).min(self.last_pong) + self.keepalive
                    }
                    Some(at) => at + self.keepalive,
                });
                for p in [self.probe_at, self.resend_hold].into_iter().flatten() {
                    t = t.min(p);
                }
                if self.lazy_idle_possible() {
                    t = t.min(self.last_activity + self.s.bridge.idle_timeout);
                }
                Some(t)
            }
            Phase::Stopped => None,
        }
    }

    /// Timers: dial, dial/CONNACK timeout, keepalive, dead link, primary probe, lazy idle.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle { at: Some(at) } if now >= at => self.dial(now),
            Phase::Dialing { deadline, .. } | Phase::Connecting { deadline, .. }
                if now >= deadline =>
            {
                self.actions.push_back(Action::Close);
                self.attempt_failed(now);
            }
            Phase::Up { .. } => self.up_timers(now),
            _ => {}
        }
    }

    /// A message was added to the queue: send it if the window allows; a lazy bridge
    /// starts once `threshold` messages wait.
    pub fn handle_queued(&mut self, now: Instant) {
        match self.phase {
            Phase::Up { .. } => self.pump(now),
            Phase::Idle { at: None } if self.lazy_threshold_reached() => self.dial(now),
            _ => {}
        }
    }

    /// The dial asked for by `Action::Dial` succeeded: CONNECT goes out.
    pub fn handle_connected(&mut self, now: Instant) {
        if let Phase::Dialing { index, .. } = self.phase {
            self.link += 1;
            self.inbuf.clear();
            self.out.clear();
            self.last_sent = now;
            self.last_received = now;
            self.last_pong = now;
            self.send_connect();
            self.phase = Phase::Connecting {
                index,
                deadline: now + self.connect_timeout(),
            };
        }
    }

    /// The dial failed or the connection closed (not after `Action::Close`).
    pub fn handle_closed(&mut self, now: Instant) {
        match self.phase {
            Phase::Dialing { .. } | Phase::Connecting { .. } => self.attempt_failed(now),
            Phase::Up { .. } => self.link_lost(now),
            _ => {}
        }
    }

    /// Bytes read from the uplink.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if !matches!(self.phase, Phase::Connecting { .. } | Phase::Up { .. }) {
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        let mut buf = std::mem::take(&mut self.inbuf);
        let mut used = 0;
        let version = self.s.bridge.protocol_version;
        let max = self.s.max_packet_in;
        let link = self.link;
        loop {
            match protocol::decode(&buf[used..], Some(version), max) {
                Ok(Status::Complete((packet, n))) => {
                    used += n;
                    self.last_received = now;
                    self.handle_packet(now, packet);
                    if self.link != link || !self.is_connected() {
                        // The packet ended the link: the rest belongs to nobody.
                        return;
                    }
                }
                Ok(Status::Partial { .. }) => break,
                Err(_) => {
                    self.abandon_link(now);
                    return;
                }
            }
        }
        buf.drain(..used);
        self.inbuf = buf;
    }

    /// The caller's answer to `Action::Probe`: the primary accepts connections. Without
    /// `round_robin`, the bridge leaves the backup and dials the primary.
    pub fn handle_probe(&mut self, now: Instant, reachable: bool) {
        if let Phase::Up { index } = self.phase {
            if reachable && index != 0 && !self.s.bridge.round_robin {
                if self.on_link > 0 && !self.leaving {
                    // QoS 2 flows left unfinished here would hold slots of this
                    // upstream's window until we come back (see `InFlight::sent_at`).
                    self.leaving = true;
                    return;
                }
                self.return_to_primary(now);
            }
        }
    }

    /// Leaves a backup link for the primary (cleanly: DISCONNECT, no will).
    pub(super) fn return_to_primary(&mut self, now: Instant) {
        self.send(&Packet::Disconnect(protocol::Disconnect {
            reason: ReasonCode::NORMAL_DISCONNECTION,
            properties: protocol::Properties::EMPTY,
        }));
        self.actions.push_back(Action::Close);
        self.link_down();
        self.plan.set(0);
        self.dial(now);
    }

    /// Ends the bridge for good (its block was changed or removed by SIGHUP, or the broker
    /// shuts down). An Up link gets the retained "0" state upstream, since the clean
    /// DISCONNECT that follows suppresses the will that would say so, then
    /// `Action::Close`; a dial or CONNECT in progress is abandoned. The local state goes
    /// to "0". Queued and in-flight messages stay in the queue for whoever takes it over.
    pub fn stop(&mut self) {
        match self.phase {
            Phase::Up { .. } => {
                let b = &self.s.bridge;
                if b.notifications && !b.notifications_local_only {
                    let topic = self.s.notification_topic.clone();
                    self.send(&Packet::Publish(protocol::Publish {
                        dup: false,
                        qos: QoS::AtMostOnce,
                        retain: true,
                        topic: &topic,
                        packet_id: None,
                        properties: protocol::Properties::EMPTY,
                        payload: b"0",
                    }));
                }
                self.send(&Packet::Disconnect(protocol::Disconnect {
                    reason: ReasonCode::NORMAL_DISCONNECTION,
                    properties: protocol::Properties::EMPTY,
                }));
                self.actions.push_back(Action::Close);
                self.link_down();
                self.notify_local(false);
            }
            Phase::Dialing { .. } | Phase::Connecting { .. } => {
                self.out.clear();
                self.actions.push_back(Action::Close);
                self.link_down();
            }
            Phase::Idle { .. } | Phase::Stopped => {}
        }
        self.phase = Phase::Stopped;
    }

    /// The address of the link that is up.
    fn up_index(&self) -> Option<usize> {
        match self.phase {
            Phase::Up { index } => Some(index),
            _ => None,
        }
    }

    fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. } | Phase::Up { .. })
    }

    fn lazy_threshold_reached(&self) -> bool {
        self.s.bridge.start_type == StartType::Lazy
            && self.queue.len() >= self.s.bridge.threshold as usize
    }

    /// A lazy bridge with nothing to send and nothing in flight may stop when idle.
    fn lazy_idle_possible(&self) -> bool {
        self.s.bridge.start_type == StartType::Lazy && self.queue.is_empty() && self.on_link == 0
    }

    /// No CONNACK (or no dial) within one keepalive, at least 5 s: try the next address.
    fn connect_timeout(&self) -> Duration {
        self.keepalive.max(Duration::from_secs(5))
    }

    fn dead_after(&self) -> Duration {
        self.keepalive + self.keepalive / 2
    }

    fn dial(&mut self, now: Instant) {
        let index = self.plan.current();
        self.actions.push_back(Action::Dial { index });
        self.phase = Phase::Dialing {
            index,
            deadline: now + self.connect_timeout(),
        };
    }

    fn up_timers(&mut self, now: Instant) {
        // Half-open: nothing, not even a PINGRESP, for 1.5 keepalives; or no PINGRESP a
        // keepalive after the PINGREQ although other packets arrive (a link dead only
        // towards the upstream: inbound messages keep coming, our window never moves). A
        // whole keepalive, as Mosquitto's client allows: a PINGRESP may queue behind a
        // backlog of inbound messages on a slow link.
        if now >= self.last_received + self.dead_after()
            || self.ping_sent.is_some_and(|at| now >= at + self.keepalive)
        {
            self.abandon_link(now);
            return;
        }
        if self.lazy_idle_possible() && now >= self.last_activity + self.s.bridge.idle_timeout {
            self.send(&Packet::Disconnect(protocol::Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: protocol::Properties::EMPTY,
            }));
            self.actions.push_back(Action::Close);
            self.link_down();
            self.phase = Phase::Idle { at: None };
            return;
        }
        if self.ping_sent.is_none()
            && (now >= self.last_sent + self.keepalive
                || now >= self.last_received + self.keepalive
                || now >= self.last_pong + self.keepalive)
        {
            // A packet within each keepalive ([MQTT-3.1.2-20] in 5.0, -23 in 3.1.1); also
            // probes a link we only send on, so a black hole is noticed.
            self.send(&Packet::Pingreq);
            self.last_sent = now;
            self.ping_sent = Some(now);
        }
        if self.resend_hold.is_some_and(|t| now >= t) {
            self.pump(now);
        }
        if self.probe_at.is_some_and(|p| now >= p) {
            self.actions.push_back(Action::Probe { index: 0 });
            self.probe_at = Some(now + PRIMARY_RETRY);
        }
    }

    /// The bridge gives up on the current link (protocol error, dead link).
    fn abandon_link(&mut self, now: Instant) {
        self.actions.push_back(Action::Close);
        match self.phase {
            Phase::Up { .. } => self.link_lost(now),
            _ => self.attempt_failed(now),
        }
    }

    /// A dial or CONNECT that did not reach Up: next address now, or back off.
    fn attempt_failed(&mut self, now: Instant) {
        self.link_down();
        if self.plan.failed() {
            self.dial(now);
            return;
        }
        if self.s.bridge.start_type == StartType::Once {
            self.phase = Phase::Stopped;
            return;
        }
        self.plan.new_round();
        let delay = self.backoff.next(self.rng.as_mut());
        self.phase = Phase::Idle {
            at: Some(now + delay),
        };
    }

    /// A link that was Up is gone.
    fn link_lost(&mut self, now: Instant) {
        self.link_down();
        self.notify_local(false);
        self.phase = match self.s.bridge.start_type {
            StartType::Once => Phase::Stopped,
            StartType::Lazy if !self.lazy_threshold_reached() && self.on_link_total() == 0 => {
                Phase::Idle { at: None }
            }
            _ => {
                self.plan.new_round();
                Phase::Idle {
                    at: Some(now + self.backoff.next(self.rng.as_mut())),
                }
            }
        };
    }

    /// Messages still in flight from earlier links.
    fn on_link_total(&self) -> usize {
        self.inflight.len()
    }

    /// Forget what belonged to the link; keep the outbound flows to resend.
    fn link_down(&mut self) {
        // `out` is kept: it may end with our DISCONNECT, written before the close.
        self.inbuf.clear();
        self.ping_sent = None;
        self.probe_at = None;
        self.leaving = false;
        self.notify_pending = false;
        self.resend_hold = None;
        self.control.clear();
        self.inflight.retain(|_, f| f.id.is_some());
        for f in self.inflight.values_mut() {
            f.on_link = false;
        }
        self.on_link = 0;
        self.qos2_on_link = 0;
        self.inbound_qos1.clear();
    }

    /// Encodes `packet` for the upstream.
    fn send(&mut self, packet: &Packet<'_>) {
        packet.encode(self.s.bridge.protocol_version, &mut self.out);
    }

    /// The retained "1"/"0" state, locally.
    fn notify_local(&mut self, up: bool) {
        if !self.s.bridge.notifications {
            return;
        }
        self.actions.push_back(Action::PublishLocal(LocalMessage {
            topic: self.s.notification_topic.clone(),
            payload: if up { b"1".to_vec() } else { b"0".to_vec() },
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Vec::new(),
            ack: None,
        }));
    }
}

impl Limits {
    /// 3.1/3.1.1: the configured window and `bridge_max_packet_size`; everything else as
    /// MQTT allows.
    fn v3(max_inflight: u16, max_packet_size: u32) -> Limits {
        Limits {
            window: if max_inflight == 0 {
                u16::MAX
            } else {
                max_inflight
            },
            max_packet_size: connect::out_limit(max_packet_size),
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            topic_alias_max: 0,
        }
    }
}
