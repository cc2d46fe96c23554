//! SIGHUP: applying a reloaded configuration and password/ACL files to the running broker
//! (who is no longer admitted, which subscriptions the new ACL removes, listener indexes
//! remapped by address for `per_listener_settings true`), and the local session of a
//! bridge the reload removed.

use std::time::Instant;

use log::info;

use super::error::CloseReason;
use super::{Broker, ConnId, Reloaded};
use crate::auth::{self, AuthSet};
use crate::config::Config;

impl Broker {
    /// Applies a reloaded configuration and freshly loaded password/ACL files (SIGHUP).
    ///
    /// As Mosquitto 2.0 does, a connected client the new files no longer admit is
    /// disconnected: an anonymous client when `allow_anonymous` is now off, a client whose
    /// user is gone from the password file or whose entry changed (wrenmq keeps no
    /// password to check it again, so any change to the entry counts as a revocation), a
    /// user name when a password file appears. The others stay connected; limits and
    /// permissions apply from now on. Subscriptions the new ACL no longer allows are
    /// removed; queued and in-flight messages the subscriber may no longer read are
    /// dropped before they are sent (`pump`, `resend_inflight`).
    pub fn reload(&mut self, config: Config, auth: impl Into<AuthSet>, now: Instant) -> Reloaded {
        let old = std::mem::replace(&mut self.auth, auth.into());
        self.config = config;
        // Listener indexes follow the new file's order: remap connections and sessions by
        // configured address. A listener that is gone maps to `UNKNOWN_LISTENER`, whose
        // clients are no longer admitted.
        let remap = |i: u8| match old.addr_of(i) {
            Some(addr) => self.auth.index_of(addr),
            None if self.auth.is_per_listener() => auth::UNKNOWN_LISTENER,
            None => 0,
        };
        for listener in self.conn_listeners.values_mut() {
            *listener = remap(*listener);
        }
        let mut revoked = Vec::new();
        for (index, slot) in self.conns.iter().enumerate() {
            let Some(conn) = slot else { continue };
            let Some(session) = conn.session().and_then(|k| self.sessions.get(k)) else {
                continue;
            };
            let username = session.username.as_deref();
            let (old_listener, new_listener) = (session.listener, remap(session.listener));
            let admitted = match (self.auth.get(new_listener), old.get(old_listener)) {
                (Some(new), Some(old)) => new.still_admits(old, username),
                _ => false,
            };
            // A certificate's name was never in the password file: Mosquitto 2.0 keeps
            // such clients on reload (it re-checks the certificate, which rustls did at
            // the handshake).
            if !conn.cert_identity && !admitted {
                info!(
                    "client {}{}: no longer admitted by the reloaded configuration",
                    session.client_id,
                    username.map(|u| format!(" (user {u})")).unwrap_or_default()
                );
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                revoked.push(ConnId {
                    index,
                    generation: conn.generation,
                });
            }
        }
        for (_, session) in self.sessions.iter_mut() {
            session.listener = remap(session.listener);
        }
        for &id in &revoked {
            self.close(id, CloseReason::NotAuthorized, now, true);
        }
        let disconnected = revoked.len();
        if !self.auth.has_acl() {
            return Reloaded {
                disconnected,
                subscriptions_removed: 0,
            };
        }
        let mut removed = 0;
        for (key, session) in self.sessions.iter_mut() {
            let client = auth::Client {
                username: session.username.as_deref(),
                client_id: &session.client_id,
            };
            let auth = &self.auth;
            let listener = session.listener;
            let denied: Vec<smol_str::SmolStr> = session
                .subscriptions
                .iter()
                .filter(|sub| !auth.check_subscribe(listener, client, &sub.filter))
                .map(|sub| sub.filter.clone())
                .collect();
            for filter in &denied {
                info!(
                    "client {}: subscription {filter} removed: no longer allowed by the ACL",
                    session.client_id
                );
                self.subscriptions.unsubscribe(filter, key);
                self.journal
                    .session(session, |session| crate::store::Record::Unsubscribe {
                        session,
                        filter,
                    });
            }
            removed += denied.len();
            session
                .subscriptions
                .retain(|sub| !denied.contains(&sub.filter));
            // Queued messages the client may no longer read are dropped when they reach the
            // front of the queue (`pump`), which journals it; removing them here out of order
            // would make the log's queue records replay wrongly.
        }
        Reloaded {
            disconnected,
            subscriptions_removed: removed,
        }
    }

    /// The local session of a bridge that SIGHUP removed (or whose `local_clientid`
    /// changed): it stops collecting, since nothing drains it any more (its
    /// subscriptions go, journaled). A persistent session keeps what it had queued and in
    /// flight, on disk, for a bridge configured again with its client id; a clean one
    /// (`local_cleansession true`) ends with its messages, as it would at a restart.
    /// Returns the messages it held and whether they were kept; nothing is done when
    /// the id is gone or a client is connected under it (the session is that client's).
    pub fn bridge_release(&mut self, client_id: &str, now: Instant) -> (usize, bool) {
        let client_id: std::sync::Arc<str> = std::sync::Arc::from(client_id);
        let Some(key) = self.client_ids.get(&self.sessions, &client_id) else {
            return (0, false);
        };
        self.bridge_link(key, false);
        let Some(session) = self.sessions.get(key).filter(|s| s.conn.is_none()) else {
            return (0, false);
        };
        let (held, clean) = (
            session.queued_len() + session.inflight().len(),
            session.clean,
        );
        if clean {
            self.end_session(key, now);
        } else {
            self.bridge_subscriptions(key, &[], now);
        }
        (held, !clean)
    }
}
