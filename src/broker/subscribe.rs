//! SUBSCRIBE and UNSUBSCRIBE: the session's subscription list, the shared table, SUBACK
//! codes and retained messages sent on subscribe (§3.8, §3.10).
//!
//! Bounds (issue 11): `max_filters_per_subscribe`, `max_subscriptions_per_client` and
//! `max_subscriptions` (all sessions together) refuse filters in the SUBACK. Retained
//! messages are not collected up front: each connection with some still to send has a [`RetainedJob`] (a cursor over the retained store), which
//! `retained_step` advances by a bounded share: at once after the SUBACK, then whenever
//! the client's output drains (`consume_output`) or, if only the scan budget stopped it,
//! on the next loop turn (`poll_timeout` reports a deadline already past).

use std::time::Instant;

use super::routing::Routed;
use log::{debug, warn};

use super::error::{granted_code, unsuback_code, SubscribeRefusal};
use super::restore::options_byte;
use super::retained::{PendingFilter, RetainedJob};
use super::subscriptions::parse_shared;
use super::{conn_slot, Broker, ConnId, ProtocolViolation, SessionKey};
use crate::auth;
use crate::protocol::{
    Packet, Properties, RetainHandling, Suback, Subscribe, SubscriptionOptions, Unsuback,
    Unsubscribe,
};
use crate::store::Record;

/// Store slots one step of one connection's retained job may examine.
const RETAINED_SCAN_BUDGET: usize = 4096;
/// Store slots all retained jobs together may examine between two `run_retained_jobs`
/// (about one loop turn), so that many tiny SUBSCRIBEs in one read, or many connections
/// with jobs, still cost a bounded time per turn.
pub(super) const RETAINED_TURN_BUDGET: usize = 16 * 1024;
/// Retained messages collected before they are delivered (the scan borrows the store).
const RETAINED_BATCH: usize = 64;
/// Output above which a connection gets no more retained messages until it reads.
const RETAINED_OUTPUT_HIGH: usize = 64 * 1024;

impl Broker {
    pub(super) fn handle_subscribe(&mut self, id: ConnId, s: Subscribe<'_>, now: Instant) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let Some(key) = conn.session() else {
            return false;
        };
        let v5 = conn.v5.is_some();
        let bridge = !self.bridge_conns.is_empty() && self.bridge_conns.contains(&id);
        // [MQTT-4.8.2-1/2] a `$share/` filter without a share name or a filter after it is
        // a protocol error, as Mosquitto treats `$share` alone; checked before any filter
        // of the packet takes effect.
        if s.filters
            .iter()
            .any(|(f, _)| matches!(parse_shared(f), Some(Err(()))))
        {
            return self.violation(id, ProtocolViolation::MalformedSharedSubscription, now);
        }
        // One subscription identifier per SUBSCRIBE applies to all its filters (5.0
        // §3.8.2.1.2; no numbered statement).
        let sub_id = s.properties.subscription_identifiers().next().unwrap_or(0);
        let quota = SubscribeRefusal::Quota.code(v5);
        let (max_filters, max_subs, max_total) = (
            self.config.max_filters_per_subscribe,
            self.config.max_subscriptions_per_client,
            self.config.max_subscriptions,
        );
        let mut refused = 0usize;
        let mut codes = Vec::with_capacity(s.filters.len());
        for (n, (filter, options)) in s.filters.iter().enumerate() {
            if max_filters > 0 && n >= max_filters {
                // Bounds the work one packet can cause; the client learns per filter.
                codes.push(quota);
                refused += 1;
                continue;
            }
            let shared = parse_shared(filter);
            // A 3.1/3.1.1 bridge (the level byte's bridge bit, Mosquitto's `try_private`)
            // gets, as from Mosquitto, No Local and Retain As Published: what it publishes
            // is not echoed back to it, and what it is sent keeps its RETAIN flag. Not on
            // a shared subscription, where No Local is not allowed [MQTT-3.8.3-4].
            let options = &if bridge && shared.is_none() {
                SubscriptionOptions {
                    no_local: true,
                    retain_as_published: true,
                    ..*options
                }
            } else {
                *options
            };
            if shared.is_some() && options.no_local {
                // [MQTT-3.8.3-4] no local on a shared subscription is a protocol error.
                return self.violation(id, ProtocolViolation::NoLocalOnSharedSubscription, now);
            }
            if !self.may_subscribe(key, filter) {
                debug!("subscription to {filter} refused: not allowed by the ACL");
                codes.push(SubscribeRefusal::NotAuthorized.code(v5));
                continue;
            }
            let exists = self
                .sessions
                .get(key)
                .is_some_and(|s| s.subscriptions.contains(filter));
            let full = !exists
                && ((max_subs > 0
                    && self
                        .sessions
                        .get(key)
                        .is_some_and(|s| s.subscriptions.len() >= max_subs))
                    || (max_total > 0 && self.subscriptions.len() >= max_total));
            if full {
                // A new filter over the per-client or the broker-wide bound; replacing one
                // is always allowed.
                codes.push(quota);
                refused += 1;
                continue;
            }
            // Granted QoS is what was asked for: this broker supports all three levels.
            let granted = options.qos;
            let stored = self.subscriptions.subscribe(filter, key, *options, sub_id);
            let mut is_new = true;
            if let Some(session) = self.sessions.get_mut(key) {
                // Mosquitto's `log_type subscribe` line: client id, QoS, filter.
                debug!("{} {} {filter}", session.client_id, granted as u8);
                is_new = session.set_subscription(&stored, *options, sub_id);
                let (filter, options) = (&stored, options_byte(*options));
                self.journal.session(session, |session| Record::Subscribe {
                    session,
                    filter,
                    options,
                });
                if sub_id != 0 {
                    self.journal
                        .session(session, |session| Record::SubscriptionId {
                            session,
                            filter,
                            id: sub_id,
                        });
                }
            }
            codes.push(granted_code(granted));
            // Matching retained messages are sent after the SUBACK, with RETAIN set (3.1.1
            // [MQTT-3.3.1-6] [MQTT-3.3.1-8]); never for a shared subscription (5.0 §3.3.1.3
            // sends them for a new Non-shared Subscription only; no numbered statement);
            // retain handling 1 only for a new subscription, 2 never (5.0
            // [MQTT-3.3.1-9..11]).
            let send_retained = shared.is_none()
                && match options.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscribe => is_new,
                    RetainHandling::Never => false,
                };
            if send_retained && self.retained.may_match(filter) {
                let pending = PendingFilter {
                    qos: granted,
                    sub_id,
                    up_to: self.retained.seq(),
                };
                self.retained_jobs
                    .entry(id)
                    .or_insert_with(|| RetainedJob::new(key, now))
                    .push(&stored, pending);
            }
        }
        if refused > 0 {
            if let Some(s) = self.sessions.get(key) {
                warn!(
                    "client {}: {refused} subscriptions refused: over max_filters_per_subscribe \
                     ({max_filters}), max_subscriptions_per_client ({max_subs}) or \
                     max_subscriptions ({max_total})",
                    s.client_id
                );
            }
        }
        let suback = Suback {
            packet_id: s.packet_id,
            properties: Properties::EMPTY,
            codes,
        };
        self.send_held(id, &Packet::Suback(suback));
        // The first share of the retained messages goes out at once (all of them, usually);
        // the rest as the client reads (see `run_retained_jobs`).
        self.retained_step(id, now);
        true
    }

    /// Sends more retained messages to connections whose jobs are ready (the loop calls
    /// this through `handle_timeout` while `poll_timeout` reports a job ready).
    pub(super) fn run_retained_jobs(&mut self, now: Instant) {
        self.retained_budget = RETAINED_TURN_BUDGET;
        if self.retained_ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut self.retained_ready);
        let mut done = 0;
        while done < ready.len() && self.retained_budget > 0 {
            self.retained_step(ready[done], now);
            done += 1;
        }
        if done < ready.len() {
            // The jobs the budget did not reach go first next time, so none starves.
            let mut next = ready[done..].to_vec();
            next.append(&mut self.retained_ready);
            self.retained_ready = next;
        }
    }

    /// `id`'s write buffer drained some: a job waiting for room may continue.
    pub(super) fn retained_output_drained(&mut self, id: ConnId) {
        let Some(job) = self.retained_jobs.get(&id) else {
            return;
        };
        if !job.ready && !self.retained_blocked(id, job.key) {
            if let Some(job) = self.retained_jobs.get_mut(&id) {
                job.ready = true;
            }
            self.retained_ready.push(id);
        }
    }

    /// The instant to wake the loop at for ready retained jobs (one already past).
    pub(super) fn retained_deadline(&self) -> Option<Instant> {
        self.retained_ready
            .iter()
            .find_map(|id| self.retained_jobs.get(id).map(|j| j.since))
    }

    /// Whether `id` should not be given more retained messages yet: its output (written or
    /// held for durability) is over half the write buffer bound, capped at
    /// [`RETAINED_OUTPUT_HIGH`], or its session has messages waiting for the inflight
    /// window. Both clear through `consume_output`, which re-arms the job.
    fn retained_blocked(&self, id: ConnId, key: SessionKey) -> bool {
        let high = (self.config.max_write_buffer / 2).clamp(1, RETAINED_OUTPUT_HIGH);
        let out = match self.conns.get(id.index as usize) {
            Some(Some(c)) if c.generation == id.generation => c.out.pending_len(),
            _ => return true,
        };
        out >= high || self.sessions.get(key).is_some_and(|s| s.has_queued())
    }

    /// One bounded share of `id`'s retained job: at most [`RETAINED_SCAN_BUDGET`] store
    /// slots examined (fewer when the turn's budget is nearly spent), stopping early when
    /// the client's output is full. Re-lists the job as ready when only a budget stopped it.
    pub(super) fn retained_step(&mut self, id: ConnId, now: Instant) {
        let Some(mut job) = self.retained_jobs.remove(&id) else {
            return;
        };
        job.ready = false;
        let key = job.key;
        let mut budget = RETAINED_SCAN_BUDGET.min(self.retained_budget);
        let granted = budget;
        let mut batch = std::mem::take(&mut self.retained_batch);
        let mut blocked = false;
        while budget > 0 {
            if self.retained_blocked(id, key) {
                blocked = true;
                break;
            }
            let Some((filter, p, cursor)) = job.front() else {
                break;
            };
            let before = *cursor;
            let done = self.retained.scan(&filter, cursor, p.up_to, budget, |m| {
                batch.push(m.clone());
                batch.len() < RETAINED_BATCH
            });
            budget = budget.saturating_sub((*cursor - before).max(1));
            if done {
                job.pop_front();
            }
            let ids = [p.sub_id];
            let ids: &[u32] = if p.sub_id != 0 { &ids } else { &[] };
            for msg in batch.drain(..) {
                // Retained messages are deliveries too: read access is checked per topic.
                if !msg.is_expired(now) && self.allowed(key, &msg.topic, auth::READ) {
                    let qos = msg.qos.min(p.qos);
                    self.deliver(key, &mut Routed::from_message(&msg, now), qos, true, ids);
                }
            }
        }
        self.retained_batch = batch;
        self.retained_budget -= granted - budget;
        if job.is_done() {
            return;
        }
        if !blocked {
            job.ready = true;
            self.retained_ready.push(id);
        }
        self.retained_jobs.insert(id, job);
    }

    /// The ACL's subscribe check (see `auth::acl`); free without an ACL file.
    fn may_subscribe(&self, key: SessionKey, filter: &str) -> bool {
        if !self.auth.has_acl() {
            return true;
        }
        self.sessions.get(key).is_some_and(|s| {
            let client = auth::Client {
                username: s.username.as_deref(),
                client_id: &s.client_id,
            };
            self.auth.check_subscribe(s.listener, client, filter)
        })
    }

    pub(super) fn handle_unsubscribe(&mut self, id: ConnId, u: Unsubscribe<'_>) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let Some(key) = conn.session() else {
            return false;
        };
        let v5 = conn.v5.is_some();
        let mut codes = Vec::new();
        for filter in &u.filters {
            let existed = self.subscriptions.unsubscribe(filter, key);
            if let Some(job) = self.retained_jobs.get_mut(&id) {
                job.cancel(filter);
            }
            if let Some(session) = self.sessions.get_mut(key) {
                // Mosquitto's `log_type unsubscribe` line: client id, filter.
                debug!("{} {filter}", session.client_id);
                if session.remove_subscription(filter) {
                    self.journal
                        .session(session, |session| Record::Unsubscribe { session, filter });
                }
            }
            if v5 {
                // [MQTT-3.11.3-1] one reason code per filter.
                codes.push(unsuback_code(existed));
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK even when nothing matched.
        let unsuback = Unsuback {
            packet_id: u.packet_id,
            properties: Properties::EMPTY,
            codes,
        };
        self.send_held(id, &Packet::Unsuback(unsuback));
        true
    }
}
