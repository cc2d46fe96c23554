//! Ending connections and sessions: `close` detaches a connection's session (discarding a
//! clean one) and publishes its will; `session_offline`, `end_session` and
//! `remove_session` are the session side of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::message::Message;
use super::subscriptions::SessionKey;
use super::timers::Timer;
use super::{timer_key, Broker, Close, CloseReason, ConnId};
use crate::auth;

impl Broker {
    /// Ends a connection: detaches its session (discarding a clean one), publishes its will
    /// unless the reason forbids it, and, when the broker itself decided to close
    /// (`notify_loop`), hands the socket side to the loop through `poll_close`.
    pub(super) fn close(
        &mut self,
        id: ConnId,
        reason: CloseReason,
        now: Instant,
        notify_loop: bool,
    ) {
        let idx = id.index as usize;
        let conn = match self.conns.get_mut(idx) {
            Some(slot @ Some(_))
                if slot.as_ref().is_some_and(|c| c.generation == id.generation) =>
            {
                slot.take()
            }
            _ => None,
        };
        let Some(conn) = conn else { return };
        let (conn_session, will_delay) = (conn.session(), conn.will_delay());
        self.cert_identities.remove(&id);
        self.bridge_conns.remove(&id);
        self.conn_listeners.remove(&id);
        self.peers.remove(&id);
        self.live_conns = self.live_conns.saturating_sub(1);
        // Its write buffer goes to the loop (`final_bytes`) or away: no longer ours.
        self.out_bytes = self.out_bytes.saturating_sub(conn.out.counted());
        // Retained messages not yet sent leave with the connection (a `retained_ready`
        // entry for it is skipped when it comes up); a session that outlives the
        // connection gets them back when it resumes (see the end of this function).
        let retained_job = self.retained_jobs.remove(&id);
        let client = conn
            .session()
            .and_then(|k| self.sessions.get(k))
            .map(|s| s.client_id.clone());
        log_close(client.as_deref(), reason, self.config.connection_messages);
        // Write access for the will is checked now, as the client publishes it, while its
        // session (user name, client id) still exists.
        let will = match (conn.will, conn_session) {
            (Some(w), Some(key)) if reason.publishes_will() => {
                if self.allowed(key, &w.topic, auth::WRITE) {
                    Some(w)
                } else {
                    debug!(
                        "will of connection {} dropped: not allowed by the ACL",
                        id.index
                    );
                    None
                }
            }
            _ => None,
        };
        if notify_loop {
            let last = reason.last_packet(conn.v5.is_some(), conn_session.is_some());
            let final_bytes = conn.out.into_final_bytes(last);
            self.closes.push(Close { id, final_bytes });
        }
        let mut will = will;
        if let Some(key) = conn_session {
            if self.sessions.get(key).is_some_and(|s| s.conn == Some(id)) {
                will = self.session_offline(key, will, will_delay, now);
            }
        }
        // [MQTT-3.3.1-6] the retained messages a SUBSCRIBE was due are still due to a
        // session that outlives this connection (a takeover, a reconnect): park the job
        // until the session resumes (`handle_connect`) or ends (`remove_session`).
        if let Some(mut job) = retained_job {
            if self.sessions.contains(job.key) {
                job.ready = false;
                self.retained_parked.insert(job.key, job);
            }
        }
        if let Some(will) = will {
            self.publish_will(&will, now);
        }
    }

    /// A session lost its connection: a session that ends with it is discarded; otherwise
    /// its expiry (5.0) and its will delay start. Returns the will if it is due now.
    pub(super) fn session_offline(
        &mut self,
        key: SessionKey,
        will: Option<Arc<Message>>,
        will_delay: u32,
        now: Instant,
    ) -> Option<Arc<Message>> {
        let epoch = self.next_epoch();
        let expiry_default = self.config.persistent_client_expiration;
        let Some(session) = self.sessions.get_mut(key) else {
            return will;
        };
        session.conn = None;
        session.epoch = epoch;
        if session.clean {
            // The session ends now, so its will is due now whatever its delay [MQTT-3.1.3-9].
            self.end_session(key, now);
            return will;
        }
        let expiry = match session.expiry_interval {
            u32::MAX => expiry_default,
            secs => Some(Duration::from_secs(u64::from(secs))),
        };
        if let Some(after) = expiry {
            self.timers
                .schedule_in(now, after, Timer::SessionExpiry(timer_key(key), epoch));
        }
        self.journal.session_offline(session, now);
        let will = match will {
            Some(w) if will_delay > 0 => {
                // [MQTT-3.1.3-9] published after the delay, unless the session resumes or
                // ends first.
                session.set_pending_will(Some(w));
                self.timers.schedule_in(
                    now,
                    Duration::from_secs(u64::from(will_delay)),
                    Timer::WillDelay(timer_key(key), epoch),
                );
                None
            }
            other => other,
        };
        // Its queue can move to disk now that nobody drains it (`ondisk.rs`).
        self.list_for_spill(key);
        will
    }

    /// Ends a session now: a will still waiting for its delay is published first.
    pub(super) fn end_session(&mut self, key: SessionKey, now: Instant) {
        let pending = self
            .sessions
            .get_mut(key)
            .and_then(|s| s.take_pending_will());
        self.remove_session(key);
        if let Some(will) = pending {
            self.publish_will(&will, now);
        }
    }

    /// Discards a session and its subscriptions.
    pub(super) fn remove_session(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.try_remove(key) else {
            return;
        };
        self.queued_entries = self.queued_entries.saturating_sub(session.queue().len());
        // Its slab key will be reused: a parked retained job must not follow it.
        self.retained_parked.remove(&key);
        self.journal
            .session(&session, |session| crate::store::Record::SessionDelete {
                session,
            });
        for sub in &session.subscriptions {
            self.subscriptions.unsubscribe(&sub.filter, key);
        }
        self.client_ids.remove(&session.client_id, key);
    }
}

/// Logs why a connection ended, in Mosquitto's words where it has them (tools match its
/// lines; checked against 2.0.11). `connection_messages false` silences the ordinary ones;
/// protocol errors are always logged.
fn log_close(client: Option<&str>, reason: CloseReason, connection_messages: bool) {
    let name = client.unwrap_or("<unknown>");
    match reason {
        CloseReason::Decode(_) | CloseReason::Protocol(_) => {
            warn!("Bad client {name}: {reason}.");
            info!("Client {name} disconnected due to protocol error.");
        }
        _ if !connection_messages => {}
        CloseReason::ClientDisconnect | CloseReason::ClientDisconnectWithWill => {
            info!("Client {name} disconnected.")
        }
        CloseReason::PeerClosed => info!("Client {name} closed its connection."),
        CloseReason::IoError => info!("Socket error on client {name}, disconnecting."),
        CloseReason::KeepAliveTimeout | CloseReason::ConnectTimeout => {
            info!("Client {name} has exceeded timeout, disconnecting.")
        }
        CloseReason::ConnectRefused(_) => info!("Client {name} disconnected, not authorised."),
        // Logged by `take_over` ("already connected, closing old connection").
        CloseReason::TakenOver => debug!("Client {name}: {reason}."),
        CloseReason::Shutdown => debug!("Client {name}: {reason}."),
        _ => info!("Client {name} disconnected: {reason}."),
    }
}
