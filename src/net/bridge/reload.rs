//! SIGHUP for bridges (Mosquitto restarts none; issue 14 asks for it): the new
//! `connection` blocks are compared with the running bridges by name.
//!
//! - Unchanged (the same settings, where the block sits in the file aside): untouched,
//!   the link stays up. Their TLS files are read again for the next connection, as for
//!   listeners (a renewed certificate is what a SIGHUP is usually for).
//! - Changed: stopped cleanly (`Bridge::stop`: "0" upstream, DISCONNECT) and started
//!   again with the new settings in the same token slot. The same local client id finds
//!   the same local session, so the durable queue and what was in flight carry over.
//! - Removed: stopped; its local session stops collecting (`Broker::bridge_release`),
//!   keeping on disk what it held for a bridge configured again with its client id.
//! - Added: started.
//!
//! A new configuration with errors never gets here: the reload function (`main`) refuses
//! it as a whole, naming file, line and key, and the running bridges stay as they are.

use std::time::Instant;

use log::info;
use mio::Registry;

use super::Uplinks;
use crate::bridge::Settings;
use crate::broker::Broker;
use crate::config::bridge::BridgeConfig;

/// What a reload does to the bridges, by position in the running list and in the new.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub keep: Vec<(usize, usize)>,
    pub restart: Vec<(usize, usize)>,
    pub stop: Vec<usize>,
    pub start: Vec<usize>,
}

/// Whether two bridges would behave the same; the block's place in the file is left out.
fn same(a: &Settings, b: &Settings) -> bool {
    let placed = |s: &Settings| BridgeConfig {
        file: Default::default(),
        line: 0,
        ..s.bridge.clone()
    };
    placed(a) == placed(b)
        && a.remote_clientid == b.remote_clientid
        && a.notification_topic == b.notification_topic
        && a.max_inflight == b.max_inflight
        && a.max_packet_in == b.max_packet_in
}

/// Compares the running bridges with the wanted ones (names are unique in a file).
pub(super) fn plan(running: &[&Settings], wanted: &[Settings]) -> Plan {
    let mut p = Plan::default();
    for (i, r) in running.iter().enumerate() {
        match wanted.iter().position(|w| w.bridge.name == r.bridge.name) {
            Some(j) if same(r, &wanted[j]) => p.keep.push((i, j)),
            Some(j) => p.restart.push((i, j)),
            None => p.stop.push(i),
        }
    }
    for (j, w) in wanted.iter().enumerate() {
        if !running.iter().any(|r| r.bridge.name == w.bridge.name) {
            p.start.push(j);
        }
    }
    p
}

impl Uplinks {
    /// Applies the bridges of a reloaded configuration; see the module docs.
    pub fn reload(
        &mut self,
        broker: &mut Broker,
        registry: &Registry,
        bridges: &[BridgeConfig],
        max_inflight: u16,
        now: Instant,
    ) {
        let wanted: Vec<Settings> = bridges
            .iter()
            .map(|b| Settings::new(b.clone(), &self.host, max_inflight))
            .collect();
        let running: Vec<&Settings> = self.links.iter().map(|l| l.bridge.settings()).collect();
        let plan = plan(&running, &wanted);
        let changed = plan.restart.len() + plan.stop.len() + plan.start.len();
        if changed == 0 && !plan.keep.is_empty() {
            info!("bridges unchanged by the reload");
        }
        let local_id = |s: &Settings| s.bridge.local_clientid(&self.host);
        let new_ids: Vec<String> = wanted.iter().map(local_id).collect();
        // Stop first: a renamed bridge may take over the local session of a removed one.
        let mut ending: Vec<(usize, Option<usize>)> =
            plan.stop.iter().map(|&i| (i, None)).collect();
        ending.extend(plan.restart.iter().map(|&(i, j)| (i, Some(j))));
        ending.sort_unstable_by_key(|e| std::cmp::Reverse(e.0)); // remove from the back
        let mut restart = Vec::new();
        for (i, j) in ending {
            let mut l = self.links.remove(i);
            let old_id = local_id(l.bridge.settings());
            l.bridge.stop();
            l.service(broker, registry, &mut self.dns, now);
            l.drop_stream(registry);
            l.drop_probe(registry);
            match j {
                Some(j) => {
                    info!("bridge {}: changed by the reload: restarting", l.name());
                    restart.push((l.slot, j));
                }
                None => info!("bridge {}: removed by the reload: stopped", l.name()),
            }
            if !new_ids.contains(&old_id) {
                let (held, kept) = broker.bridge_release(&old_id, now);
                if kept {
                    info!(
                        "bridge {}: its local session {old_id} keeps {held} messages on disk; \
                         it collects no more until a bridge uses that local_clientid again",
                        l.name()
                    );
                } else if held > 0 {
                    info!(
                        "bridge {}: {held} messages of its clean local session {old_id} dropped",
                        l.name()
                    );
                }
            }
        }
        for &(slot, j) in &restart {
            self.start_one(broker, wanted[j].clone(), Some(slot), now);
        }
        for &j in &plan.start {
            if self.start_one(broker, wanted[j].clone(), None, now) {
                info!("bridge {}: added by the reload", wanted[j].bridge.name);
            }
        }
        #[cfg(feature = "tls")]
        for l in &mut self.links {
            if let Some(b) = bridges.iter().find(|b| b.name == l.name()) {
                // `main` loaded these files a moment ago; a failure keeps the old ones.
                if let Ok(tls) = super::load_tls(b) {
                    l.tls = tls;
                }
            }
        }
        for l in &mut self.links {
            l.service(broker, registry, &mut self.dns, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_with, MemSource};
    use std::path::{Path, PathBuf};

    fn settings(text: &str, max_inflight: u16) -> Vec<Settings> {
        let src = MemSource(
            [(PathBuf::from("/w.conf"), text.to_string())]
                .into_iter()
                .collect(),
        );
        let parsed = parse_with(&src, Path::new("/w.conf")).unwrap_or_else(|e| panic!("{e}"));
        parsed
            .config
            .bridges
            .into_iter()
            .map(|b| Settings::new(b, "gw", max_inflight))
            .collect()
    }

    const A: &str = "connection a\naddress 127.0.0.1:1\ntopic a/# out 1\n";
    const B: &str = "connection b\naddress up.example:1\ntopic b/# out 1\n";

    #[test]
    fn unchanged_blocks_are_kept_wherever_they_sit_in_the_file() {
        let old = settings(&format!("{A}{B}"), 20);
        let new = settings(&format!("# moved\n\n{B}{A}"), 20);
        let running: Vec<&Settings> = old.iter().collect();
        assert_eq!(
            plan(&running, &new),
            Plan {
                keep: vec![(0, 1), (1, 0)],
                ..Plan::default()
            }
        );
    }

    #[test]
    fn changed_removed_and_added_blocks_are_told_apart() {
        let old = settings(&format!("{A}{B}"), 20);
        let c = "connection c\naddress 127.0.0.1:2\ntopic c/# out\n";
        let new = settings(&format!("{B}topic extra/# out 1\n{c}"), 20);
        let running: Vec<&Settings> = old.iter().collect();
        assert_eq!(
            plan(&running, &new),
            Plan {
                keep: vec![],
                restart: vec![(1, 0)],
                stop: vec![0],
                start: vec![1],
            }
        );
        // A global setting a bridge uses counts as a change of that bridge.
        let new = settings(&format!("{A}{B}"), 10);
        assert_eq!(plan(&running, &new).restart, vec![(0, 0), (1, 1)]);
    }
}
