//! Retained messages: the last retained message per topic (§3.3.1.3), and the state of
//! sending them to new subscriptions a little at a time.
//!
//! Messages sit in slots of a vector (a topic -> slot map finds them), so a scan over them
//! can stop and resume later at a slot index: a [`RetainedJob`] keeps such a cursor per
//! connection. Every store takes a fresh sequence number; a job skips messages stored after
//! its subscription began, because the subscription itself delivered those live (no
//! duplicates when a message changes mid-scan, and a reused slot is never mistaken for an
//! old one).
//!
//! Why incremental (issue 11): one SUBSCRIBE with 40,000 `#` filters after 200 retained
//! messages used to collect 8 million deliveries into one vector before sending any; now
//! the work per loop turn is bounded by a scan budget and by the connection's write buffer,
//! and memory by the job's pending filters (at most one entry per distinct filter).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use smol_str::SmolStr;

use super::message::Message;
use super::SessionKey;
use crate::protocol::{topic, QoS};

#[derive(Debug)]
struct Slot {
    msg: Arc<Message>,
    /// Value of `RetainedStore::seq` when this message was stored.
    seq: u64,
}

#[derive(Debug, Default)]
pub struct RetainedStore {
    by_topic: HashMap<Box<str>, usize>,
    slots: Vec<Option<Slot>>,
    /// Empty slots, reused before the vector grows.
    free: Vec<usize>,
    /// Sequence number of the last store.
    seq: u64,
    /// Topic, payload and property bytes of the stored messages (`max_retained_bytes`).
    bytes: usize,
    /// Messages and bytes of the broker's own `$SYS/` topics (see `sys.rs`), which the
    /// limits on clients' retained messages leave out.
    sys_count: usize,
    sys_bytes: usize,
}

/// Whether `topic` is one of the broker's own (clients cannot publish under `$SYS/`).
fn is_sys(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

impl RetainedStore {
    /// Stores `msg` as the retained message of its topic, replacing the previous one
    /// [MQTT-3.3.1-5]; an empty payload removes it instead [MQTT-3.3.1-10/11].
    pub fn store(&mut self, msg: &Arc<Message>) {
        if msg.payload.is_empty() {
            self.remove(&msg.topic);
            return;
        }
        self.seq += 1;
        let slot = Slot {
            msg: msg.clone(),
            seq: self.seq,
        };
        let sys = is_sys(&msg.topic);
        self.bytes += msg.stored_len();
        if sys {
            self.sys_bytes += msg.stored_len();
        }
        if let Some(&i) = self.by_topic.get(&*msg.topic) {
            if let Some(s) = self.slots.get_mut(i) {
                if let Some(old) = s.replace(slot) {
                    self.bytes -= old.msg.stored_len();
                    if sys {
                        self.sys_bytes -= old.msg.stored_len();
                    }
                }
                return;
            }
        }
        if sys {
            self.sys_count += 1;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_topic.insert(msg.topic.clone(), i);
    }

    /// Removes `topic`'s retained message.
    pub fn remove(&mut self, topic: &str) {
        if let Some(i) = self.by_topic.remove(topic) {
            if let Some(s) = self.slots.get_mut(i) {
                if let Some(old) = s.take() {
                    self.bytes -= old.msg.stored_len();
                    if is_sys(topic) {
                        self.sys_count -= 1;
                        self.sys_bytes -= old.msg.stored_len();
                    }
                }
                self.free.push(i);
            }
        }
        if self.by_topic.is_empty() {
            // Give the slot vector back once the store is empty.
            self.slots = Vec::new();
            self.free = Vec::new();
        }
    }

    /// Every retained message.
    pub fn messages(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.slots.iter().flatten().map(|s| &s.msg)
    }

    /// Calls `f` for every retained message whose topic matches `filter`.
    #[cfg(test)]
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&Arc<Message>)) {
        let mut from = 0;
        self.scan(filter, &mut from, u64::MAX, usize::MAX, |m| {
            f(m);
            true
        });
    }

    /// Sequence number of the latest store: a scan started now passes this as `up_to`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Resumable scan: calls `f` for the messages matching `filter` that were stored at or
    /// before sequence `up_to`, starting at slot `*from` and examining at most `budget`
    /// slots; `f` returns false to stop after the current message. `*from` is left where
    /// the next call resumes. Returns true when the scan is complete.
    pub fn scan(
        &self,
        filter: &str,
        from: &mut usize,
        up_to: u64,
        budget: usize,
        mut f: impl FnMut(&Arc<Message>) -> bool,
    ) -> bool {
        if !topic::has_wildcards(filter) {
            // One lookup; `from` only records that it was done.
            if *from == 0 {
                *from = 1;
                let slot = self.by_topic.get(filter).and_then(|&i| self.slot(i));
                if let Some(s) = slot.filter(|s| s.seq <= up_to) {
                    f(&s.msg);
                }
            }
            return true;
        }
        let mut budget = budget;
        while *from < self.slots.len() {
            if budget == 0 {
                return false;
            }
            budget -= 1;
            let i = *from;
            *from += 1;
            let Some(s) = self.slot(i) else {
                continue;
            };
            // [MQTT-4.7.2-1] is part of `matches`: `#` and `+/..` skip `$` topics.
            if s.seq <= up_to && topic::matches(filter, &s.msg.topic) && !f(&s.msg) {
                break;
            }
        }
        *from >= self.slots.len()
    }

    fn slot(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Whether some stored message could match `filter`: not when the store is empty, nor
    /// when it holds only `$SYS` messages and the filter does not start with `$` (those
    /// never match `$` topics [MQTT-4.7.2-1]). Spares a SUBSCRIBE the retained scan a
    /// non-empty `$SYS` tree would otherwise cost every filter.
    pub fn may_match(&self, filter: &str) -> bool {
        if filter.starts_with('$') {
            self.len() > 0
        } else {
            self.len() > self.sys_count
        }
    }

    /// Topic, payload and property bytes of all stored messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether storing `len` bytes as `topic`'s retained message keeps the store within
    /// `max_messages` and `max_bytes` (0 = no limit). Replacing a topic's message never
    /// adds to the count, and frees the old message's bytes. The broker's own `$SYS`
    /// messages do not count: the limits are on what clients can make it store.
    pub fn has_room(&self, topic: &str, len: usize, max_messages: usize, max_bytes: usize) -> bool {
        let old = self
            .by_topic
            .get(topic)
            .and_then(|&i| self.slot(i))
            .map(|s| s.msg.stored_len());
        let (count, bytes) = (self.len() - self.sys_count, self.bytes - self.sys_bytes);
        let count_ok = max_messages == 0 || old.is_some() || count < max_messages;
        let bytes_ok = max_bytes == 0 || bytes - old.unwrap_or(0) + len <= max_bytes;
        count_ok && bytes_ok
    }
}

/// What a pending filter of a [`RetainedJob`] delivers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingFilter {
    /// Granted QoS of the subscription (deliveries use min(message, granted)).
    pub qos: QoS,
    /// MQTT 5 subscription identifier; 0 = none.
    pub sub_id: u32,
    /// Retained store sequence when the subscription was made; later messages were
    /// delivered live.
    pub up_to: u64,
}

/// Retained messages still to be sent to one connection for its new subscriptions.
#[derive(Debug)]
pub struct RetainedJob {
    pub key: SessionKey,
    /// When the job was created: a time already past, for the loop's wake-up.
    pub since: Instant,
    /// Filters in the order they were subscribed; their options are in `pending`.
    order: VecDeque<SmolStr>,
    /// One entry per distinct filter: a filter repeated before its turn came only updates
    /// its options [MQTT-3.8.4-3], so N copies of `#` scan the store once, not N times.
    pending: HashMap<SmolStr, PendingFilter>,
    /// Slot cursor of the filter at the front of `order`.
    cursor: usize,
    /// Listed in the broker's ready list.
    pub ready: bool,
}

impl RetainedJob {
    pub fn new(key: SessionKey, since: Instant) -> RetainedJob {
        RetainedJob {
            key,
            since,
            order: VecDeque::new(),
            pending: HashMap::new(),
            cursor: 0,
            ready: false,
        }
    }

    /// Adds `filter`, or updates its options if it is still pending.
    pub fn push(&mut self, filter: &SmolStr, p: PendingFilter) {
        match self.pending.get_mut(filter) {
            Some(existing) => {
                existing.qos = p.qos;
                existing.sub_id = p.sub_id;
            }
            None => {
                self.pending.insert(filter.clone(), p);
                self.order.push_back(filter.clone());
            }
        }
    }

    /// Takes a filter out (unsubscribed before its retained messages were all sent).
    pub fn cancel(&mut self, filter: &str) {
        if self.pending.remove(filter).is_some()
            && self.order.front().is_some_and(|f| &**f == filter)
        {
            self.order.pop_front();
            self.cursor = 0;
        }
        // A cancelled filter further back is dropped when it reaches the front.
    }

    /// The filter being scanned, its options and its cursor; `None` when the job is done.
    pub fn front(&mut self) -> Option<(SmolStr, PendingFilter, &mut usize)> {
        loop {
            let filter = self.order.front()?;
            match self.pending.get(filter) {
                Some(&p) => return Some((filter.clone(), p, &mut self.cursor)),
                None => {
                    self.order.pop_front();
                    self.cursor = 0;
                }
            }
        }
    }

    /// The front filter is done.
    pub fn pop_front(&mut self) {
        if let Some(f) = self.order.pop_front() {
            self.pending.remove(&f);
        }
        self.cursor = 0;
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Filters still to scan.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: &str, p: &[u8]) -> Arc<Message> {
        Message::new(t, p, QoS::AtMostOnce, true)
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut v = Vec::new();
        store.for_each_match(filter, |m| v.push(m.topic.to_string()));
        v.sort();
        v
    }

    #[test]
    fn replace_clear_and_match() {
        let mut s = RetainedStore::default();
        s.store(&msg("a/b", b"1"));
        s.store(&msg("a/b", b"2"));
        s.store(&msg("a/c", b"3"));
        s.store(&msg("$SYS/x", b"4"));
        assert_eq!(s.len(), 3);
        let mut got = Vec::new();
        s.for_each_match("a/b", |m| got.push(m.payload.to_vec()));
        assert_eq!(got, vec![b"2".to_vec()]);
        assert_eq!(topics(&s, "a/+"), ["a/b", "a/c"]);
        assert_eq!(topics(&s, "#"), ["a/b", "a/c"]); // [MQTT-4.7.2-1]
        assert_eq!(topics(&s, "$SYS/#"), ["$SYS/x"]);
        s.store(&msg("a/b", b""));
        assert_eq!(topics(&s, "a/#"), ["a/c"]);
        assert_eq!(s.messages().count(), 2);
    }

    #[test]
    fn scan_resumes_within_budget_and_skips_later_stores() {
        let mut s = RetainedStore::default();
        for i in 0..10 {
            s.store(&msg(&format!("t/{i}"), b"x"));
        }
        let up_to = s.seq();
        // Stored after the scan began: delivered live, not by the scan.
        s.store(&msg("t/3", b"new"));
        s.store(&msg("t/late", b"y"));
        let (mut from, mut seen, mut calls) = (0, Vec::new(), 0);
        while !s.scan("t/#", &mut from, up_to, 3, |m| {
            seen.push(m.topic.to_string());
            true
        }) {
            calls += 1;
            assert!(calls < 10, "the scan makes progress");
        }
        seen.sort();
        let want: Vec<String> = (0..10)
            .filter(|&i| i != 3)
            .map(|i| format!("t/{i}"))
            .collect();
        assert_eq!(seen, want);
        assert!(calls >= 3, "a budget of 3 slots needs several calls");
        // Stopping early resumes after the message delivered last.
        let (mut from, mut n) = (0, 0);
        assert!(!s.scan("t/#", &mut from, u64::MAX, 100, |_| {
            n += 1;
            false
        }));
        assert_eq!((n, from), (1, 1));
    }

    #[test]
    fn sys_messages_do_not_count_against_the_limits() {
        let mut s = RetainedStore::default();
        s.store(&msg("$SYS/broker/uptime", b"1 seconds"));
        s.store(&msg("$SYS/broker/uptime", b"22 seconds"));
        s.store(&msg("$SYS/broker/version", b"v"));
        assert_eq!(s.len(), 2);
        assert!(s.has_room("a", 1, 1, 1));
        s.store(&msg("a", b"x"));
        assert!(!s.has_room("b", 1, 1, 0));
        assert!(!s.has_room("b", 1, 0, 2)); // "ax" (2 bytes) + 1 over 2
        s.remove("$SYS/broker/version");
        s.remove("$SYS/broker/uptime");
        assert_eq!((s.sys_count, s.sys_bytes), (0, 0));
        assert!(s.may_match("#"));
        s.remove("a");
        s.store(&msg("$SYS/broker/uptime", b"1 seconds"));
        assert!(!s.may_match("#") && !s.may_match("a/+") && s.may_match("$SYS/#"));
        assert!(s.has_room("a", 2, 1, 3));
    }

    #[test]
    fn removed_slots_are_reused_and_an_empty_store_frees_them() {
        let mut s = RetainedStore::default();
        s.store(&msg("a", b"1"));
        s.store(&msg("b", b"1"));
        s.remove("a");
        s.store(&msg("c", b"1"));
        assert_eq!(s.slots.len(), 2);
        s.remove("b");
        s.remove("c");
        assert_eq!(s.slots.capacity(), 0);
    }

    #[test]
    fn a_job_keeps_one_entry_per_distinct_filter() {
        let mut job = RetainedJob::new(1, Instant::now());
        let hash = SmolStr::new("#");
        let p = |qos| PendingFilter {
            qos,
            sub_id: 0,
            up_to: 5,
        };
        for _ in 0..40_000 {
            job.push(&hash, p(QoS::AtMostOnce));
        }
        job.push(&hash, p(QoS::AtLeastOnce));
        job.push(&SmolStr::new("a/b"), p(QoS::AtMostOnce));
        let (f, got, _) = job.front().unwrap();
        assert_eq!((&*f, got.qos), ("#", QoS::AtLeastOnce));
        job.pop_front();
        job.cancel("a/b");
        assert!(job.front().is_none());
        assert!(job.is_done());
    }
}
