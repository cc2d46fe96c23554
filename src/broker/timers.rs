//! Deadlines: a min-heap with lazy invalidation.
//!
//! Each connection has at most one keepalive entry and one connect-timeout entry; each
//! offline session at most one expiry and one will-delay entry. Traffic
//! does not touch the heap: a packet only moves the connection's `last_activity`, and when
//! an entry comes due the broker checks the real deadline and re-arms it if it moved. So the
//! heap holds O(connections) entries, the loop wakes only when some deadline may really have
//! passed, and there is no periodic scan over all clients. (These are `DESIGN.md`'s "small
//! fixed set of deadlines per client"; one heap over all of them gives the next wake-up
//! without visiting every client.)
//!
//! Entries of connections that closed and sessions that came back online are not removed
//! when that happens (a heap cannot find them); they would stay until their deadline, up to
//! days. So once the heap holds more than [`COMPACT_FACTOR`] entries per live connection or
//! session (plus some slack), every stale entry is dropped in one O(n) pass. At most two
//! live entries exist per connection and per session, so a compaction at least halves the
//! heap and the pass costs O(1) per scheduled entry, amortized.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::ConnId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// [MQTT-3.1.2-24] keepalive × 1.5 without a packet closes the connection.
    KeepAlive(ConnId),
    /// A connection that has not sent CONNECT in time is closed.
    ConnectTimeout(ConnId),
    /// An offline session whose expiry interval ran out is discarded (5.0, or
    /// `persistent_client_expiration`); the epoch tells a stale entry from a live one.
    SessionExpiry(u32, u32),
    /// A delayed will is published (5.0 will delay interval).
    WillDelay(u32, u32),
}

/// Entries allowed per live connection or session before stale ones are dropped.
const COMPACT_FACTOR: usize = 4;
/// Entries always allowed, so a near-empty broker does not compact on every turn.
const COMPACT_SLACK: usize = 64;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// Schedules `timer` at `now + after`. Every delay here comes from the configuration
    /// or a client (`persistent_client_expiration`, 0xFFFFFFFF s of session expiry or will
    /// delay), and `Instant + Duration` panics on overflow: a deadline `Instant` cannot
    /// represent is one the process never reaches, so it is simply not scheduled.
    pub fn schedule_in(&mut self, now: Instant, after: Duration, timer: Timer) {
        if let Some(at) = now.checked_add(after) {
            self.schedule(at, timer);
        }
    }

    /// The earliest entry, which may be stale (the broker re-checks when it fires).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }

    /// Drops entries whose connection is gone, so `next_deadline` does not wake the loop
    /// for nothing.
    pub fn discard_front_while(&mut self, mut stale: impl FnMut(&Timer) -> bool) {
        while let Some(Reverse((_, t))) = self.heap.peek() {
            if !stale(t) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Drops every stale entry if the heap holds more than [`COMPACT_FACTOR`] entries per
    /// live connection or session (`live`).
    pub fn compact(&mut self, live: usize, mut stale: impl FnMut(&Timer) -> bool) {
        if self.heap.len() <= live.saturating_mul(COMPACT_FACTOR) + COMPACT_SLACK {
            return;
        }
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|Reverse((_, t))| !stale(t));
        entries.shrink_to(entries.len() * 2);
        self.heap = BinaryHeap::from(entries);
    }

    /// Number of entries, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let a = ConnId {
            index: 1,
            generation: 1,
        };
        let b = ConnId {
            index: 2,
            generation: 1,
        };
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_secs(5), Timer::KeepAlive(a));
        timers.schedule(t0 + Duration::from_secs(2), Timer::ConnectTimeout(b));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(3)),
            Some(Timer::ConnectTimeout(b))
        );
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(3)), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(5)),
            Some(Timer::KeepAlive(a))
        );
        assert!(timers.is_empty());
    }

    #[test]
    fn compaction_drops_stale_entries_only_past_the_bound() {
        let t0 = Instant::now();
        let id = |index| ConnId {
            index,
            generation: 1,
        };
        let mut timers = Timers::default();
        for i in 0..1000 {
            timers.schedule(t0 + Duration::from_secs(60), Timer::KeepAlive(id(i)));
        }
        // Ten connections live: everything else is stale.
        let stale = |t: &Timer| !matches!(t, Timer::KeepAlive(c) if c.index < 10);
        timers.compact(1000, stale);
        assert_eq!(timers.len(), 1000, "within the bound nothing is dropped");
        timers.compact(10, stale);
        assert_eq!(timers.len(), 10);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(60)).map(|_| ()),
            Some(())
        );
    }
}
