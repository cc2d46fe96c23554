//! SIGHUP: re-read the configuration, password and ACL files and apply them without
//! dropping a client.
//!
//! The loop does not know where configuration comes from: the binary installs a
//! [`Reload`] function (re-read the file, re-apply the command-line overrides, load the
//! password and ACL files). On SIGHUP the loop calls it and then:
//! 1. binds the listeners the new configuration adds; if one cannot be bound the reload is
//!    abandoned as a whole and the old configuration stays (nothing half-applied);
//! 2. closes the listeners it no longer lists (their accepted clients stay connected);
//! 3. hands the new configuration and auth to the broker (`Broker::reload`: it also
//!    disconnects the clients the new files no longer admit, through `poll_close`), and
//!    takes over the limits the loop itself enforces (`max_packet_size`,
//!    `max_connections`);
//! 4. restarts the bridges whose `connection` block changed, stops the removed ones and
//!    starts the new ones; unchanged bridges keep their link (`bridge/reload.rs`).
//!
//! Listeners are matched by their configured address (port 0 included), so a listener
//! that is in both configurations keeps its socket and its backlog. Listener tokens are
//! positional, so the survivors are re-registered under their new positions; an event
//! fetched under an old position is only a hint to accept, which is harmless.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Instant;

use log::{error, info, warn};
use mio::{Interest, Registry};

use super::listener;
use super::{token, Core};
use crate::auth::AuthSet;
use crate::config::Config;

/// Produces the configuration to switch to, or why there is none.
pub type Reload = Box<dyn FnMut() -> Result<(Config, AuthSet), Box<dyn Error>> + Send>;

/// What a reload does to the listeners.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ListenerPlan {
    /// Positions (in the current list) of listeners to close.
    pub(crate) remove: Vec<usize>,
    /// Configured addresses to bind.
    pub(crate) add: Vec<SocketAddr>,
}

/// Compares the configured addresses of the running listeners with the new list.
pub(crate) fn plan(current: &[SocketAddr], wanted: &[SocketAddr]) -> ListenerPlan {
    let remove = current
        .iter()
        .enumerate()
        .filter(|(_, a)| !wanted.contains(a))
        .map(|(i, _)| i)
        .collect();
    let mut add: Vec<SocketAddr> = Vec::new();
    for a in wanted {
        if !current.contains(a) && !add.contains(a) {
            add.push(*a);
        }
    }
    ListenerPlan { remove, add }
}

impl Core {
    /// Handles SIGHUP; see the module docs.
    pub(super) fn reload(&mut self, registry: &Registry, now: Instant) {
        let Some(reload) = self.reload.as_mut() else {
            info!("SIGHUP received: no configuration file to reload");
            return;
        };
        let (config, auth) = match reload() {
            Ok(new) => new,
            Err(e) => {
                error!("reload failed, keeping the current configuration: {e}");
                return;
            }
        };
        // Certificates are re-read for every TLS listener, kept or new: a renewed
        // certificate is what a SIGHUP is usually for. Existing connections keep theirs.
        let layers = match listener::load_layers(&config, &config.listeners) {
            Ok(layers) => layers,
            Err(e) => {
                error!("reload failed, keeping the current configuration: {e}");
                return;
            }
        };
        let current: Vec<SocketAddr> = self.listeners.iter().map(|l| l.configured).collect();
        let plan = plan(&current, &config.listeners);
        let kept = current.len() - plan.remove.len();
        if kept + plan.add.len() > token::MAX_LISTENERS {
            error!(
                "reload failed, keeping the current configuration: more than {} listeners",
                token::MAX_LISTENERS
            );
            return;
        }
        let mut added = if plan.add.is_empty() {
            Vec::new()
        } else {
            match listener::bind_all(&plan.add) {
                Ok(added) => added,
                Err(e) => {
                    error!("reload failed, keeping the current configuration: {e}");
                    return;
                }
            }
        };

        // From here on the reload cannot fail.
        let old = std::mem::take(&mut self.listeners);
        for (i, mut l) in old.into_iter().enumerate() {
            if plan.remove.contains(&i) {
                let _ = registry.deregister(&mut l.socket);
                info!("no longer listening on {}", l.addr);
            } else {
                self.listeners.push(l);
            }
        }
        self.listeners.append(&mut added);
        listener::set_layers(&mut self.listeners, &layers);
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let token = token::listener(i);
            let registered = if i < kept {
                registry.reregister(&mut l.socket, token, Interest::READABLE)
            } else {
                registry.register(&mut l.socket, token, Interest::READABLE)
            };
            if let Err(e) = registered {
                warn!("listener {}: cannot register after reload: {e}", l.addr);
            }
        }

        self.max_packet_size = config.max_packet_size;
        self.max_connections = config.max_connections;
        let bridges = (config.bridges.clone(), config.max_inflight_messages);
        let done = self.broker.reload(config, auth, now);
        // After the broker's: a bridge session's ACL checks use the new files.
        let (bridges, max_inflight) = bridges;
        self.bridges
            .reload(&mut self.broker, registry, &bridges, max_inflight, now);
        info!(
            "configuration reloaded: {} listeners, {} clients no longer admitted, {} subscriptions removed by the new ACL",
            self.listeners.len(),
            done.disconnected,
            done.subscriptions_removed
        );
        // Connections that arrived while listeners were re-registered raise no new edge.
        for i in 0..self.listeners.len() {
            self.accept(registry, i, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plan_keeps_common_listeners_and_diffs_the_rest() {
        let current = [a("127.0.0.1:1883"), a("[::1]:1883"), a("127.0.0.1:0")];
        let wanted = [
            a("127.0.0.1:0"),
            a("127.0.0.1:1883"),
            a("0.0.0.0:8883"),
            a("0.0.0.0:8883"),
        ];
        assert_eq!(
            plan(&current, &wanted),
            ListenerPlan {
                remove: vec![1],
                add: vec![a("0.0.0.0:8883")],
            }
        );
        assert_eq!(
            plan(&current, &current),
            ListenerPlan {
                remove: vec![],
                add: vec![]
            }
        );
    }
}
