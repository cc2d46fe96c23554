//! The subscription table: which sessions want a topic.
//!
//! Flat and compact. Exact filters (no wildcard) sit in a hash map keyed by the filter, so
//! a publish to a topic finds them with one lookup however many there are. Wildcard filters
//! are few on a gateway; they are grouped by their first level (a literal such as `sensors`
//! in `sensors/+/temp`) so a publish scans only the group of its own first level plus the
//! filters that start with a wildcard. Filter text is an `Arc<str>` shared with the
//! session's own list of subscriptions, stored once.
//!
//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2, also accepted from 3.1.1
//! clients as Mosquitto does) live in their own short list of groups; the broker picks one
//! member per group per message (see `publish.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::topic;
use crate::protocol::SubscriptionOptions;

/// Key of a session in the broker's session slab.
pub type SessionKey = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub session: SessionKey,
    pub options: SubscriptionOptions,
    /// MQTT 5 subscription identifier; 0 = none.
    pub id: u32,
}

/// One shared subscription group: the members share the messages matching `filter`.
#[derive(Debug)]
pub struct SharedGroup {
    /// The whole filter as subscribed (`$share/g/f`), shared with the sessions' lists.
    pub full: Arc<str>,
    /// Offset of the inner filter in `full`.
    filter_at: usize,
    pub members: Vec<Subscriber>,
    /// Round-robin position: the member after the last one that got a message.
    pub next: usize,
}

impl SharedGroup {
    pub fn filter(&self) -> &str {
        &self.full[self.filter_at..]
    }
}

/// Splits `$share/{group}/{filter}` into its group name and inner filter; `None` if `s`
/// is not a shared subscription. `Some(Err(()))` for a malformed one [MQTT-4.8.2-1/2].
pub fn parse_shared(s: &str) -> Option<Result<(&str, &str), ()>> {
    let rest = s.strip_prefix("$share/")?;
    let Some((group, filter)) = rest.split_once('/') else {
        return Some(Err(()));
    };
    if group.is_empty() || group.contains(['+', '#']) || !topic::is_valid_topic_filter(filter) {
        return Some(Err(()));
    }
    Some(Ok((group, filter)))
}

#[derive(Debug)]
struct WildcardFilter {
    filter: Arc<str>,
    subscribers: Vec<Subscriber>,
}

#[derive(Debug, Default)]
pub struct SubscriptionTable {
    exact: HashMap<Arc<str>, Vec<Subscriber>>,
    /// Wildcard filters whose first level is a literal, keyed by that level.
    wildcard_by_first: HashMap<Box<str>, Vec<WildcardFilter>>,
    /// Wildcard filters starting with `+` or `#`: they never match `$` topics.
    wildcard_root: Vec<WildcardFilter>,
    /// Shared subscription groups.
    shared: Vec<SharedGroup>,
    /// Number of (filter, session) pairs.
    len: usize,
}

fn first_level(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

fn upsert(subs: &mut Vec<Subscriber>, sub: Subscriber) -> bool {
    match subs.iter_mut().find(|s| s.session == sub.session) {
        Some(existing) => {
            // [MQTT-3.8.4-3] a repeated subscription replaces the existing one.
            existing.options = sub.options;
            existing.id = sub.id;
            false
        }
        None => {
            subs.push(sub);
            true
        }
    }
}

fn remove(subs: &mut Vec<Subscriber>, session: SessionKey) -> bool {
    match subs.iter().position(|s| s.session == session) {
        Some(i) => {
            subs.swap_remove(i);
            true
        }
        None => false,
    }
}

impl SubscriptionTable {
    /// Adds or replaces `session`'s subscription to `filter` (a valid filter). Returns the
    /// table's copy of the filter text, for the session to share.
    pub fn subscribe(
        &mut self,
        filter: &str,
        session: SessionKey,
        options: SubscriptionOptions,
        id: u32,
    ) -> Arc<str> {
        let sub = Subscriber {
            session,
            options,
            id,
        };
        if let Some(Ok((_, inner))) = parse_shared(filter) {
            let filter_at = filter.len() - inner.len();
            return match self.shared.iter_mut().find(|g| &*g.full == filter) {
                Some(g) => {
                    if upsert(&mut g.members, sub) {
                        self.len += 1;
                    }
                    g.full.clone()
                }
                None => {
                    let full: Arc<str> = Arc::from(filter);
                    self.shared.push(SharedGroup {
                        full: full.clone(),
                        filter_at,
                        members: vec![sub],
                        next: 0,
                    });
                    self.len += 1;
                    full
                }
            };
        }
        let (key, added) = if !topic::has_wildcards(filter) {
            match self.exact.get_key_value(filter).map(|(k, _)| k.clone()) {
                Some(key) => {
                    let added = self
                        .exact
                        .get_mut(filter)
                        .is_some_and(|subs| upsert(subs, sub));
                    (key, added)
                }
                None => {
                    let key: Arc<str> = Arc::from(filter);
                    self.exact.insert(key.clone(), vec![sub]);
                    (key, true)
                }
            }
        } else {
            let group = self.wildcard_group_mut(filter);
            match group.iter_mut().find(|w| &*w.filter == filter) {
                Some(w) => (w.filter.clone(), upsert(&mut w.subscribers, sub)),
                None => {
                    let key: Arc<str> = Arc::from(filter);
                    group.push(WildcardFilter {
                        filter: key.clone(),
                        subscribers: vec![sub],
                    });
                    (key, true)
                }
            }
        };
        if added {
            self.len += 1;
        }
        key
    }

    /// Removes `session`'s subscription to `filter`. Returns true if it existed.
    pub fn unsubscribe(&mut self, filter: &str, session: SessionKey) -> bool {
        let removed = if parse_shared(filter).is_some() {
            match self.shared.iter().position(|g| &*g.full == filter) {
                Some(i) => {
                    let removed = remove(&mut self.shared[i].members, session);
                    if self.shared[i].members.is_empty() {
                        self.shared.swap_remove(i);
                    }
                    removed
                }
                None => false,
            }
        } else if !topic::has_wildcards(filter) {
            match self.exact.get_mut(filter) {
                Some(subs) => {
                    let removed = remove(subs, session);
                    if subs.is_empty() {
                        self.exact.remove(filter);
                    }
                    removed
                }
                None => false,
            }
        } else {
            let first = first_level(filter);
            let group = if first == "+" || first == "#" {
                Some(&mut self.wildcard_root)
            } else {
                self.wildcard_by_first.get_mut(first)
            };
            let mut removed = false;
            if let Some(group) = group {
                if let Some(i) = group.iter().position(|w| &*w.filter == filter) {
                    removed = remove(&mut group[i].subscribers, session);
                    if group[i].subscribers.is_empty() {
                        group.swap_remove(i);
                    }
                }
                if group.is_empty() && first != "+" && first != "#" {
                    self.wildcard_by_first.remove(first);
                }
            }
            removed
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends every subscription matching `topic` (a valid topic name) to `out`. A session
    /// with several matching filters appears once per filter; the caller merges them.
    pub fn collect_matches(&self, topic_name: &str, out: &mut Vec<Subscriber>) {
        if let Some(subs) = self.exact.get(topic_name) {
            out.extend_from_slice(subs);
        }
        if let Some(group) = self.wildcard_by_first.get(first_level(topic_name)) {
            for w in group {
                if topic::matches(&w.filter, topic_name) {
                    out.extend_from_slice(&w.subscribers);
                }
            }
        }
        // [MQTT-4.7.2-1] filters starting with a wildcard do not match `$` topics.
        if !topic_name.starts_with('$') {
            for w in &self.wildcard_root {
                if topic::matches(&w.filter, topic_name) {
                    out.extend_from_slice(&w.subscribers);
                }
            }
        }
    }

    /// Indices of the shared groups whose filter matches `topic_name`.
    pub fn shared_matches<'a>(&'a self, topic_name: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.shared
            .iter()
            .enumerate()
            .filter(move |(_, g)| topic::matches(g.filter(), topic_name))
            .map(|(i, _)| i)
    }

    pub fn shared_group_mut(&mut self, index: usize) -> Option<&mut SharedGroup> {
        self.shared.get_mut(index)
    }

    /// Whether any shared subscription exists (routing skips the shared step otherwise).
    pub fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// Number of (filter, session) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn wildcard_group_mut(&mut self, filter: &str) -> &mut Vec<WildcardFilter> {
        let first = first_level(filter);
        if first == "+" || first == "#" {
            &mut self.wildcard_root
        } else {
            self.wildcard_by_first.entry(first.into()).or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    fn matching(table: &SubscriptionTable, t: &str) -> Vec<SessionKey> {
        let mut out = Vec::new();
        table.collect_matches(t, &mut out);
        let mut keys: Vec<_> = out.iter().map(|s| s.session).collect();
        keys.sort();
        keys
    }

    #[test]
    fn exact_and_wildcard_lookups_agree_with_the_oracle() {
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/b", "+", "$SYS/#", "$SYS/+", "x/y/z", "/", "+/+", "a//b",
            "a/+/b",
        ];
        let topics = [
            "a/b", "a", "a/c", "b", "$SYS/x", "$SYS", "x/y/z", "/", "a//b", "//", "/b",
        ];
        let mut table = SubscriptionTable::default();
        for (i, f) in filters.iter().enumerate() {
            table.subscribe(f, i, opts(QoS::AtLeastOnce), 0);
        }
        assert_eq!(table.len(), filters.len());
        for t in topics {
            let want: Vec<SessionKey> = (0..filters.len())
                .filter(|&i| topic::matches(filters[i], t))
                .collect();
            assert_eq!(matching(&table, t), want, "topic {t}");
        }
    }

    #[test]
    fn resubscribe_replaces_and_unsubscribe_removes() {
        let mut table = SubscriptionTable::default();
        let a = table.subscribe("s/+/t", 7, opts(QoS::AtMostOnce), 0);
        let b = table.subscribe("s/+/t", 7, opts(QoS::ExactlyOnce), 3);
        assert!(Arc::ptr_eq(&a, &b), "filter text is stored once");
        assert_eq!(table.len(), 1);
        let mut out = Vec::new();
        table.collect_matches("s/1/t", &mut out);
        assert_eq!(
            out,
            vec![Subscriber {
                session: 7,
                options: opts(QoS::ExactlyOnce),
                id: 3
            }]
        );
        assert!(table.unsubscribe("s/+/t", 7));
        assert!(!table.unsubscribe("s/+/t", 7));
        assert!(table.is_empty());
        assert!(table.wildcard_by_first.is_empty());
        table.subscribe("s/1/t", 1, opts(QoS::AtMostOnce), 0);
        assert!(table.unsubscribe("s/1/t", 1));
        assert!(table.exact.is_empty());
    }

    #[test]
    fn shared_groups_are_kept_apart_and_parsed_strictly() {
        assert_eq!(parse_shared("$share/g/a/+"), Some(Ok(("g", "a/+"))));
        assert_eq!(parse_shared("a/b"), None);
        for bad in ["$share/g", "$share//a", "$share/g+/a", "$share/g/"] {
            assert_eq!(parse_shared(bad), Some(Err(())), "{bad}");
        }
        let mut table = SubscriptionTable::default();
        table.subscribe("$share/g/a/+", 1, opts(QoS::AtLeastOnce), 0);
        table.subscribe("$share/g/a/+", 2, opts(QoS::AtLeastOnce), 0);
        table.subscribe("$share/h/a/+", 3, opts(QoS::AtLeastOnce), 0);
        let mut out = Vec::new();
        table.collect_matches("a/b", &mut out);
        assert!(
            out.is_empty(),
            "shared subscriptions are not ordinary matches"
        );
        let groups: Vec<usize> = table.shared_matches("a/b").collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(table.shared_group_mut(groups[0]).unwrap().members.len(), 2);
        assert!(table.unsubscribe("$share/g/a/+", 1));
        assert!(table.unsubscribe("$share/g/a/+", 2));
        assert_eq!(table.shared_matches("a/b").count(), 1);
        assert_eq!(table.len(), 1);
    }
}
