//! The bounds of the bridges' outbound queues and what happens at them (issue 14).
//!
//! A bridge's outbound queue is the queue of its local session (`bridge_session.rs`). The
//! per-client `max_queued_messages`/`max_queued_bytes` do not apply to it: they drop new
//! messages silently (as Mosquitto does, for its bridges too), which would lose messages a
//! publisher was told were taken. Each bridge has its own caps instead,
//! `bridge_max_queued_messages` (RAM: a 16-byte index entry per message) and
//! `bridge_max_queued_bytes` (disk: topic, payload and properties, as `max_queued_bytes`
//! counts them), and this policy, which never drops what was acknowledged:
//!
//! - A QoS 1/2 PUBLISH from a client that would be queued at QoS 1/2 for a bridge whose
//!   queue is full is refused as a whole, before it is routed to anyone (a refusal at
//!   `memory_limit` works the same way; a PUBACK error code means "not published"): a
//!   5.0 client gets PUBACK/PUBREC 0x97 Quota exceeded and keeps its connection; a
//!   3.1/3.1.1 client, which cannot be told no, has its connection closed, as at
//!   `memory_limit` (`inbound.rs`, `Refusal`). It resends after reconnecting.
//! - QoS 0 for a full bridge is dropped for that bridge (other subscribers still get it).
//! - What the broker cannot refuse to a publisher (a will, a message from another
//!   bridge's upstream) is dropped for the full bridge.
//! - Full starts when a message does not fit and lasts until the queue is back under 7/8
//!   of both caps, so a bridge at the edge does not flip on every message; start and end
//!   are logged once, the end with how many messages were refused or dropped meanwhile,
//!   all of them counted in `$SYS/broker/publish/messages/dropped`.
//!
//! The check costs nothing on the publish path while no bridge is near its caps: a
//! publish is matched against the bridges' subscriptions only when some bridge is full
//! or has less room left than that message. QoS 0 reaches a bridge's queue only while its
//! link is up ([`Broker::bridge_link`]), within the same caps.

use std::sync::Arc;

use log::{info, warn};

use super::session::{QueueLimits, Session};
use super::{Broker, SessionKey};
use crate::auth;
use crate::config::bridge::{DEFAULT_BRIDGE_QUEUED_BYTES, DEFAULT_BRIDGE_QUEUED_MESSAGES};
use crate::protocol::{Publish, QoS};

/// One bridge's queue bounds and state.
#[derive(Debug)]
pub(super) struct BridgeQueue {
    key: SessionKey,
    /// The session's client id: a slab key is reused once a session ends, so the entry
    /// applies only while the same session holds the key.
    client_id: Arc<str>,
    /// The `connection` name, for the log.
    name: Box<str>,
    pub(super) limits: QueueLimits,
    /// In a full episode (see the module docs).
    pub(super) full: bool,
    /// Messages refused or dropped during the current episode.
    refused: u64,
    /// Bytes of its messages taken for the uplink and not yet acknowledged (its inflight
    /// list, which can hold a window's worth and more): the caps count them too, so they
    /// bound everything the bridge holds for the upstream.
    inflight_bytes: usize,
}

impl BridgeQueue {
    /// Messages and bytes it holds for the upstream: queued and in flight.
    fn held(&self, s: &Session) -> (usize, usize) {
        (
            s.queued_len() + s.inflight().len(),
            s.queued_bytes() + self.inflight_bytes,
        )
    }

    /// Whether a message of `bytes` fits beside `len` messages and `queued` bytes.
    fn fits(&self, len: usize, queued: usize, bytes: usize) -> bool {
        let l = self.limits;
        (l.max_messages == 0 || len < l.max_messages)
            && (l.max_bytes == 0 || queued + bytes <= l.max_bytes)
    }

    /// Whether a full episode may end: under 7/8 of both caps.
    fn drained(&self, len: usize, queued: usize) -> bool {
        let l = self.limits;
        (l.max_messages == 0 || len <= l.max_messages - l.max_messages / 8)
            && (l.max_bytes == 0 || queued <= l.max_bytes - l.max_bytes / 8)
    }
}

impl Broker {
    /// Sets the caps of bridge `name`'s queue (its session `key`, from
    /// [`Broker::bridge_session`], which applies the defaults until then). 0 = no limit.
    pub fn bridge_queue_limits(&mut self, key: SessionKey, name: &str, limits: QueueLimits) {
        if let Some(i) = self.bridge_queue_of(key) {
            let b = &mut self.bridge_queues[i];
            b.name = name.into();
            b.limits = limits;
        }
        self.bridge_queue_check(key);
    }

    /// Whether the queue of bridge session `key` is in a full episode.
    pub fn bridge_queue_full(&self, key: SessionKey) -> bool {
        self.bridge_queue_of(key)
            .is_some_and(|i| self.bridge_queues[i].full)
    }

    /// Makes `key` (client id `client_id`) a bridge session, with the default caps the
    /// first time (a bridge re-created after a takeover keeps its caps). What is in flight
    /// (restored after a restart) is counted here once, then kept up to date by
    /// [`Broker::bridge_inflight_bytes`].
    pub(super) fn bridge_queue_register(&mut self, key: SessionKey, client_id: &Arc<str>) {
        let inflight_bytes = self.sessions.get(key).map_or(0, |s| {
            s.inflight()
                .iter()
                .map(|i| i.delivery.msg.stored_len())
                .sum()
        });
        self.bridge_queues
            .retain(|b| b.key != key || b.client_id == *client_id);
        if let Some(b) = self
            .bridge_queues
            .iter_mut()
            .find(|b| b.client_id == *client_id)
        {
            b.key = key;
            b.inflight_bytes = inflight_bytes;
            return;
        }
        self.bridge_queues.push(BridgeQueue {
            key,
            client_id: client_id.clone(),
            name: client_id.as_ref().into(),
            limits: QueueLimits {
                max_messages: DEFAULT_BRIDGE_QUEUED_MESSAGES,
                max_bytes: DEFAULT_BRIDGE_QUEUED_BYTES,
            },
            full: false,
            refused: 0,
            inflight_bytes,
        });
    }

    /// Messages of `added` bytes went into bridge session `key`'s inflight list, and
    /// `removed` bytes left it (`bridge_take`, `bridge_done`).
    pub(super) fn bridge_inflight_bytes(&mut self, key: SessionKey, added: usize, removed: usize) {
        if let Some(i) = self.bridge_queue_of(key) {
            let b = &mut self.bridge_queues[i];
            b.inflight_bytes = (b.inflight_bytes + added).saturating_sub(removed);
        }
        self.bridge_queue_check(key);
    }

    /// The entry of bridge session `key`, if `key` is one.
    pub(super) fn bridge_queue_of(&self, key: SessionKey) -> Option<usize> {
        if self.bridge_queues.is_empty() {
            return None;
        }
        let i = self.bridge_queues.iter().position(|b| b.key == key)?;
        let same = self
            .sessions
            .get(key)
            .is_some_and(|s| *s.client_id == *self.bridge_queues[i].client_id);
        same.then_some(i)
    }

    /// Ends the full episode of bridge session `key` once its queue has drained (after the
    /// uplink took messages, or a new cap).
    pub(super) fn bridge_queue_check(&mut self, key: SessionKey) {
        let Some(i) = self.bridge_queue_of(key) else {
            return;
        };
        if !self.bridge_queues[i].full {
            return;
        }
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let (len, bytes) = self.bridge_queues[i].held(s);
        let b = &mut self.bridge_queues[i];
        if b.drained(len, bytes) {
            b.full = false;
            info!(
                "bridge {}: outbound queue back under its caps ({len} messages, {bytes} bytes): \
                 accepting messages for it again ({} refused or dropped meanwhile)",
                b.name, b.refused
            );
            b.refused = 0;
        }
    }

    /// Whether bridge `i` takes a message of `bytes` now: not in a full episode, and it
    /// fits both caps beside what the bridge holds.
    pub(super) fn bridge_admits(&self, i: usize, bytes: usize) -> bool {
        let b = &self.bridge_queues[i];
        let Some(s) = self.sessions.get(b.key) else {
            return false;
        };
        let (len, queued) = b.held(s);
        !b.full && b.fits(len, queued, bytes)
    }

    /// A message for bridge `i` refused or dropped: counted, and the episode starts.
    pub(super) fn bridge_queue_refused(&mut self, i: usize) {
        self.stats.dropped_bridge_queue += 1;
        let Some(b) = self.bridge_queues.get_mut(i) else {
            return;
        };
        b.refused += 1;
        if b.full {
            return;
        }
        b.full = true;
        let (len, bytes) = self.sessions.get(b.key).map_or((0, 0), |s| b.held(s));
        warn!(
            "bridge {}: outbound queue full ({len} messages, {bytes} bytes; \
             bridge_max_queued_messages {}, bridge_max_queued_bytes {}): refusing new QoS 1/2 \
             messages for it and dropping QoS 0 until the uplink drains it",
            b.name, b.limits.max_messages, b.limits.max_bytes
        );
    }

    /// The bridge whose queue refuses `p` (QoS 1/2, from session `publisher`): one that
    /// would queue it at QoS 1/2 and is full or has no room for it (see the module docs).
    /// The caller refuses the message ([`Refusal::BridgeQueue`]).
    pub(super) fn bridge_refusing(
        &mut self,
        publisher: SessionKey,
        p: &Publish<'_>,
        topic: &str,
    ) -> Option<usize> {
        if self.bridge_queues.is_empty() || p.qos == QoS::AtMostOnce {
            return None;
        }
        // An upper bound of what the queue would count: the stored properties are at
        // most the received ones.
        let bytes = topic.len() + p.payload.len() + p.properties.raw().len();
        let mut tight: Vec<usize> = Vec::new();
        for i in 0..self.bridge_queues.len() {
            let key = self.bridge_queues[i].key;
            self.bridge_queue_check(key);
            let b = &self.bridge_queues[i];
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            let (len, queued) = b.held(s);
            if b.full || !b.fits(len, queued, bytes) {
                tight.push(i);
            }
        }
        if tight.is_empty() {
            return None;
        }
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.subscriptions.collect_matches(topic, &mut matches);
        let mut refused = None;
        for i in tight {
            let key = self.bridge_queues[i].key;
            // The QoS it would be queued at: min(published, the highest granted)
            // [MQTT-3.8.4-6]; never back to its own publisher [MQTT-3.8.3-3].
            let granted = matches
                .iter()
                .filter(|m| m.session == key && !(m.options.no_local && key == publisher))
                .map(|m| m.options.qos)
                .max();
            if granted.is_some_and(|q| q.min(p.qos) > QoS::AtMostOnce)
                && self.allowed(key, topic, auth::READ)
                && self.bridge_queue_of(key) == Some(i)
            {
                refused = Some(i);
                break;
            }
        }
        self.matches = matches;
        refused
    }
}
