//! Deadlines: a min-heap with lazy invalidation.
//!
//! Each connection has at most one keepalive entry and one connect-timeout entry; each
//! offline session at most one expiry and one will-delay entry. Traffic
//! does not touch the heap: a packet only moves the connection's `last_activity`, and when
//! an entry comes due the broker checks the real deadline and re-arms it if it moved. So the
//! heap holds O(connections) entries, the loop wakes only when some deadline may really have
//! passed, and there is no periodic scan over all clients.

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
}
