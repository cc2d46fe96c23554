//! The subscription table: which sessions want a topic.
//!
//! Flat and compact. Exact filters (no wildcard) sit in a hash map keyed by the filter, so
//! a publish to a topic finds them with one lookup however many there are. Wildcard filters
//! sit in a small trie of topic levels ([`Trie`]): a publish walks only the branches its own
//! levels select (the literal level, `+` and `#`), so unrelated wildcard filters cost
//! nothing, including those starting with `+` or `#`; subscribing or unsubscribing one is
//! O(levels). (Issue 11: per-publish scans over every root wildcard filter and linear
//! searches per SUBSCRIBE let one client stall the loop for seconds.) Filter text is an
//! `SmolStr` shared with the session's own list of subscriptions: inline up to 23 bytes
//! (most device topics, no allocation at all, issue 11), else one `Arc<str>` for both.
//!
//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2, also accepted from 3.1.1
//! clients as Mosquitto does) are groups in a slab (stable keys that routing refers to),
//! found by their full text in a hash map and by topic through a trie of their inner
//! filters; the broker picks one member per group per message (see `routing.rs`).

use slab::Slab;
use smol_str::SmolStr;
use std::collections::HashMap;

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
    pub full: SmolStr,
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

/// One node of a [`Trie`]: the filters that continue with a literal level, with `+`,
/// that end here, and that end here with `/#`.
#[derive(Debug)]
struct Node<T> {
    /// Boxed: most nodes are leaves, and an empty map would cost 48 bytes in each.
    #[allow(clippy::box_collection)]
    children: Option<Box<HashMap<Box<str>, Node<T>>>>,
    plus: Option<Box<Node<T>>>,
    /// The filter that ends at this node.
    here: Option<Box<T>>,
    /// The filter that ends at this node followed by `#` (matches this level too,
    /// [MQTT-4.7.1-2]).
    hash: Option<Box<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: None,
            plus: None,
            here: None,
            hash: None,
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_none() && self.plus.is_none() && self.here.is_none() && self.hash.is_none()
    }

    /// Calls `f` for the value of every filter under this node that matches the levels
    /// `rest` (`None` once every level is consumed). `dollar` (only ever true at the root)
    /// applies [MQTT-4.7.2-1]: a topic starting with `$` is not matched by a filter
    /// starting with a wildcard.
    fn for_each_match<'a>(&'a self, rest: Option<&str>, dollar: bool, f: &mut impl FnMut(&'a T)) {
        let Some(rest) = rest else {
            if let Some(v) = &self.here {
                f(v);
            }
            if let Some(v) = &self.hash {
                f(v);
            }
            return;
        };
        let (level, next) = match rest.split_once('/') {
            Some((level, next)) => (level, Some(next)),
            None => (rest, None),
        };
        if !dollar {
            if let Some(v) = &self.hash {
                f(v);
            }
            if let Some(plus) = &self.plus {
                plus.for_each_match(next, false, f);
            }
        }
        if let Some(child) = self.children.as_ref().and_then(|c| c.get(level)) {
            child.for_each_match(next, false, f);
        }
    }

    /// Removes the value of `levels` if `drop` says so; returns whether this node is now
    /// empty (and can be pruned by its parent).
    fn remove<'l>(
        &mut self,
        mut levels: impl Iterator<Item = &'l str>,
        drop: impl FnOnce(&mut T) -> bool,
    ) -> bool {
        match levels.next() {
            None => {
                if self.here.as_deref_mut().is_some_and(drop) {
                    self.here = None;
                }
            }
            Some("#") => {
                if self.hash.as_deref_mut().is_some_and(drop) {
                    self.hash = None;
                }
            }
            Some("+") => {
                if self.plus.as_mut().is_some_and(|p| p.remove(levels, drop)) {
                    self.plus = None;
                }
            }
            Some(level) => {
                if let Some(children) = self.children.as_mut() {
                    if children
                        .get_mut(level)
                        .is_some_and(|c| c.remove(levels, drop))
                    {
                        children.remove(level);
                    }
                    if children.is_empty() {
                        self.children = None;
                    }
                }
            }
        }
        self.is_empty()
    }
}

/// Topic filters by level, each with a value. Matching a topic visits only the branches its
/// levels select; no allocation while matching.
#[derive(Debug)]
pub struct Trie<T> {
    root: Node<T>,
}

impl<T> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
        }
    }
}

impl<T> Trie<T> {
    /// The value of `filter` (a valid filter), created by `make` if absent.
    pub fn entry(&mut self, filter: &str, make: impl FnOnce() -> T) -> &mut T {
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            node = match level {
                // Valid filters have `#` only as the last level [MQTT-4.7.1-2].
                "#" if levels.peek().is_none() => {
                    return node.hash.get_or_insert_with(|| Box::new(make()));
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => node
                    .children
                    .get_or_insert_with(Box::default)
                    .entry(level.into())
                    .or_default(),
            };
        }
        node.here.get_or_insert_with(|| Box::new(make()))
    }

    /// Calls `drop` on the value of `filter`; if it returns true the value is removed and
    /// the branches it leaves empty are pruned.
    pub fn remove_if(&mut self, filter: &str, drop: impl FnOnce(&mut T) -> bool) {
        self.root.remove(filter.split('/'), drop);
    }

    /// Calls `f` for the value of every filter matching `topic_name` (a valid topic name).
    pub fn for_each_match<'a>(&'a self, topic_name: &str, mut f: impl FnMut(&'a T)) {
        let dollar = topic_name.starts_with('$');
        self.root.for_each_match(Some(topic_name), dollar, &mut f);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

/// The subscribers of one exact filter. Most exact filters have one (a device's own
/// topic): it is stored inline in the hash entry instead of in a one-element vector of its
/// own (issue 11, per-connection memory); several are a boxed vector, so that the enum
/// takes 16 bytes (a `Subscriber`, its tag in a niche) instead of 24 in every hash slot.
#[derive(Debug)]
enum Subscribers {
    One(Subscriber),
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Subscriber>>),
}

impl Subscribers {
    fn as_slice(&self) -> &[Subscriber] {
        match self {
            Subscribers::One(s) => std::slice::from_ref(s),
            Subscribers::Many(v) => v.as_slice(),
        }
    }

    /// Adds or replaces `sub`; true if it is new.
    fn upsert(&mut self, sub: Subscriber) -> bool {
        match self {
            Subscribers::One(s) if s.session == sub.session => {
                *s = sub;
                false
            }
            Subscribers::One(s) => {
                *self = Subscribers::Many(Box::new(vec![*s, sub]));
                true
            }
            Subscribers::Many(v) => upsert(v, sub),
        }
    }

    /// Removes `session`'s subscription; returns (removed, now empty).
    fn remove(&mut self, session: SessionKey) -> (bool, bool) {
        match self {
            Subscribers::One(s) => {
                let hit = s.session == session;
                (hit, hit)
            }
            Subscribers::Many(v) => {
                let removed = remove(v, session);
                let empty = v.is_empty();
                if let &[last] = v.as_slice() {
                    *self = Subscribers::One(last);
                }
                (removed, empty)
            }
        }
    }
}

#[derive(Debug)]
struct WildcardFilter {
    filter: SmolStr,
    subscribers: Vec<Subscriber>,
}

#[derive(Debug, Default)]
pub struct SubscriptionTable {
    exact: HashMap<SmolStr, Subscribers>,
    /// Filters with a wildcard.
    wildcard: Trie<WildcardFilter>,
    /// Shared subscription groups; keys are stable while a group exists.
    shared: Slab<SharedGroup>,
    /// Group key by full filter (`$share/g/f`).
    shared_by_full: HashMap<SmolStr, usize>,
    /// Group keys by inner filter, for routing.
    shared_by_filter: Trie<Vec<usize>>,
    /// Number of (filter, session) pairs.
    len: usize,
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
    ) -> SmolStr {
        let sub = Subscriber {
            session,
            options,
            id,
        };
        if let Some(Ok((_, inner))) = parse_shared(filter) {
            if let Some(g) = self
                .shared_by_full
                .get(filter)
                .and_then(|&k| self.shared.get_mut(k))
            {
                if upsert(&mut g.members, sub) {
                    self.len += 1;
                }
                return g.full.clone();
            }
            let full = SmolStr::new(filter);
            let key = self.shared.insert(SharedGroup {
                full: full.clone(),
                filter_at: filter.len() - inner.len(),
                members: vec![sub],
                next: 0,
            });
            self.shared_by_full.insert(full.clone(), key);
            self.shared_by_filter.entry(inner, Vec::new).push(key);
            self.len += 1;
            return full;
        }
        let (key, added) = if !topic::has_wildcards(filter) {
            match self.exact.get_key_value(filter).map(|(k, _)| k.clone()) {
                Some(key) => {
                    let added = self
                        .exact
                        .get_mut(filter)
                        .is_some_and(|subs| subs.upsert(sub));
                    (key, added)
                }
                None => {
                    let key = SmolStr::new(filter);
                    self.exact.insert(key.clone(), Subscribers::One(sub));
                    (key, true)
                }
            }
        } else {
            let w = self.wildcard.entry(filter, || WildcardFilter {
                filter: SmolStr::new(filter),
                // Most filters have one subscriber: no room reserved for four.
                subscribers: Vec::with_capacity(1),
            });
            (w.filter.clone(), upsert(&mut w.subscribers, sub))
        };
        if added {
            self.len += 1;
        }
        key
    }

    /// Removes `session`'s subscription to `filter`. Returns true if it existed.
    pub fn unsubscribe(&mut self, filter: &str, session: SessionKey) -> bool {
        let removed = if let Some(shared) = parse_shared(filter) {
            match self.shared_by_full.get(filter).copied() {
                Some(key) => {
                    let group = self.shared.get_mut(key);
                    let removed = group.is_some_and(|g| remove(&mut g.members, session));
                    if self.shared.get(key).is_some_and(|g| g.members.is_empty()) {
                        self.shared.remove(key);
                        self.shared_by_full.remove(filter);
                        if let Ok((_, inner)) = shared {
                            self.shared_by_filter.remove_if(inner, |keys| {
                                keys.retain(|&k| k != key);
                                keys.is_empty()
                            });
                        }
                    }
                    removed
                }
                None => false,
            }
        } else if !topic::has_wildcards(filter) {
            match self.exact.get_mut(filter) {
                Some(subs) => {
                    let (removed, empty) = subs.remove(session);
                    if empty {
                        self.exact.remove(filter);
                    }
                    removed
                }
                None => false,
            }
        } else {
            let mut removed = false;
            self.wildcard.remove_if(filter, |w| {
                removed = remove(&mut w.subscribers, session);
                w.subscribers.is_empty()
            });
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
            out.extend_from_slice(subs.as_slice());
        }
        // [MQTT-4.7.2-1] is applied by the trie: filters starting with a wildcard do not
        // match `$` topics.
        self.wildcard
            .for_each_match(topic_name, |w| out.extend_from_slice(&w.subscribers));
    }

    /// Keys of the shared groups whose filter matches `topic_name`.
    pub fn shared_matches<'a>(&'a self, topic_name: &'a str) -> impl Iterator<Item = usize> + 'a {
        let mut keys = Vec::new();
        self.shared_by_filter
            .for_each_match(topic_name, |k| keys.extend_from_slice(k));
        keys.into_iter()
    }

    pub fn shared_group_mut(&mut self, key: usize) -> Option<&mut SharedGroup> {
        self.shared.get_mut(key)
    }

    /// Whether any shared subscription exists (routing skips the shared step otherwise).
    pub fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// Number of shared subscriptions (members of all groups), counted when asked.
    pub fn shared_len(&self) -> usize {
        self.shared.iter().map(|(_, g)| g.members.len()).sum()
    }

    /// Number of (filter, session) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        assert!(
            !a.is_heap_allocated() && a == b,
            "short filter text is inline"
        );
        let long = "a/long/filter/text/past/23/bytes/+";
        let a = table.subscribe(long, 7, opts(QoS::AtMostOnce), 0);
        let b = table.subscribe(long, 8, opts(QoS::AtMostOnce), 0);
        assert_eq!(a.as_ptr(), b.as_ptr(), "long filter text is stored once");
        assert!(table.unsubscribe(long, 7) && table.unsubscribe(long, 8));
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
        assert!(table.wildcard.is_empty(), "emptied branches are pruned");
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

    /// A small deterministic generator (xorshift), so the test needs no crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn levels(&mut self, pool: &[&str], wild: bool) -> String {
            let n = 1 + self.below(4);
            let mut out = Vec::new();
            for i in 0..n {
                let last = i + 1 == n;
                let pick = self.below(pool.len() + if wild { 3 } else { 0 });
                out.push(match pick {
                    p if p < pool.len() => pool[p],
                    p if p == pool.len() && last => "#",
                    _ => "+",
                });
            }
            out.join("/")
        }
    }

    #[test]
    fn trie_matches_agree_with_the_naive_oracle_through_churn() {
        let pool = ["a", "b", "", "$s", "cc"];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut filters: Vec<String> = (0..400).map(|_| rng.levels(&pool, true)).collect();
        // An empty filter or topic is malformed and never reaches the table.
        filters.retain(|f| !f.is_empty());
        filters.sort();
        filters.dedup();
        let mut topics: Vec<String> = (0..300).map(|_| rng.levels(&pool, false)).collect();
        topics.retain(|t| !t.is_empty());
        let mut table = SubscriptionTable::default();
        let mut live: Vec<(usize, &str)> = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            // Two sessions on some filters, so removal leaves shared leaves behind.
            for session in [i, i + 10_000].into_iter().take(1 + i % 2) {
                table.subscribe(f, session, opts(QoS::AtMostOnce), 0);
                table.subscribe(
                    &format!("$share/g{}/{f}", i % 3),
                    session,
                    opts(QoS::AtMostOnce),
                    0,
                );
                live.push((session, f));
            }
        }
        let check = |table: &SubscriptionTable, live: &[(usize, &str)]| {
            for t in &topics {
                let mut want: Vec<SessionKey> = live
                    .iter()
                    .filter(|(_, f)| topic::matches(f, t))
                    .map(|&(s, _)| s)
                    .collect();
                want.sort();
                assert_eq!(matching(table, t), want, "topic {t}");
                let mut groups: Vec<String> = table
                    .shared_matches(t)
                    .map(|k| table.shared[k].full.to_string())
                    .collect();
                groups.sort();
                let mut want_groups: Vec<String> = live
                    .iter()
                    .filter(|(_, f)| topic::matches(f, t))
                    .map(|&(s, f)| format!("$share/g{}/{f}", (s % 10_000) % 3))
                    .collect();
                want_groups.sort();
                want_groups.dedup();
                assert_eq!(groups, want_groups, "shared groups for {t}");
            }
        };
        check(&table, &live);
        // Remove every other subscription, in an order unrelated to insertion.
        let mut gone = Vec::new();
        for k in 0..live.len() {
            if rng.below(2) == 0 {
                gone.push(k);
            }
        }
        for &k in gone.iter().rev() {
            let (session, f) = live.remove(k);
            assert!(table.unsubscribe(f, session));
            let shared = format!("$share/g{}/{f}", (session % 10_000) % 3);
            assert!(table.unsubscribe(&shared, session));
        }
        check(&table, &live);
        assert_eq!(table.len(), 2 * live.len());
        for (session, f) in live.clone() {
            table.unsubscribe(f, session);
            table.unsubscribe(&format!("$share/g{}/{f}", (session % 10_000) % 3), session);
        }
        assert!(table.is_empty() && table.wildcard.is_empty() && table.exact.is_empty());
        assert!(table.shared.is_empty() && table.shared_by_filter.is_empty());
    }
}
