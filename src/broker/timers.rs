//! Deadlines: a min-heap with lazy invalidation.
//!
//! Each connection has one entry: the connect-timeout entry, which after CONNECT goes on
//! as the keepalive check (a second, keepalive entry only when the keepalive is shorter
//! than the connect timeout; 32 bytes per idle client saved, issue 11); each
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

/// One heap entry in 16 bytes instead of 32 (`(Instant, Timer)`; issue 11, one per idle
/// connection): the deadline in whole milliseconds after [`Timers::base`], rounded up (so
/// an entry never comes due before its deadline), shifted left by two with the timer's
/// kind in the low bits, split in two `u32`s (4-byte alignment, no padding); then the
/// kind's two values. Ordered by deadline first, as the derived order compares fields in
/// declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at_hi: u32,
    at_lo: u32,
    a: u32,
    b: u32,
}

impl Entry {
    fn new(at_ms: u64, timer: Timer) -> Entry {
        let (kind, a, b) = match timer {
            Timer::KeepAlive(c) => (0, c.index, c.generation),
            Timer::ConnectTimeout(c) => (1, c.index, c.generation),
            Timer::SessionExpiry(k, e) => (2, k, e),
            Timer::WillDelay(k, e) => (3, k, e),
        };
        let key = (at_ms.min(MAX_MS) << 2) | kind;
        Entry {
            at_hi: (key >> 32) as u32,
            at_lo: key as u32,
            a,
            b,
        }
    }

    fn key(&self) -> u64 {
        (u64::from(self.at_hi) << 32) | u64::from(self.at_lo)
    }

    fn at_ms(&self) -> u64 {
        self.key() >> 2
    }

    fn timer(&self) -> Timer {
        let conn = ConnId {
            index: self.a,
            generation: self.b,
        };
        match self.key() & 3 {
            0 => Timer::KeepAlive(conn),
            1 => Timer::ConnectTimeout(conn),
            2 => Timer::SessionExpiry(self.a, self.b),
            _ => Timer::WillDelay(self.a, self.b),
        }
    }
}

/// Deadlines past this many milliseconds after the base (over 2 million years) are kept
/// at it: the process never gets there.
const MAX_MS: u64 = u64::MAX >> 3;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    /// What entry deadlines count from: the first deadline scheduled (moved back if an
    /// earlier one comes, see `offset`).
    base: Option<Instant>,
}

/// Whole milliseconds in `d`, rounded up.
fn ceil_ms(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Whole milliseconds in `d`, rounded down.
fn floor_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, timer: Timer) {
        let ms = self.offset(at);
        self.heap.push(Reverse(Entry::new(ms, timer)));
    }

    /// `at` as milliseconds after the base, rounded up. Sets the base at the first
    /// deadline; a deadline before it (never the case with a monotonic `now`, except in
    /// tests) moves the base back and every entry with it.
    fn offset(&mut self, at: Instant) -> u64 {
        let base = *self.base.get_or_insert(at);
        if let Some(d) = at.checked_duration_since(base) {
            return ceil_ms(d);
        }
        let delta = ceil_ms(base.duration_since(at));
        let Some(new_base) = base.checked_sub(Duration::from_millis(delta)) else {
            return 0; // unreachable with a real clock: fires at the base instead
        };
        self.base = Some(new_base);
        let entries = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(e)| Reverse(Entry::new(e.at_ms().saturating_add(delta), e.timer())));
        self.heap = entries.collect();
        ceil_ms(at.saturating_duration_since(new_base))
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

    /// The earliest entry (at most a millisecond after its real deadline), which may be
    /// stale (the broker re-checks when it fires).
    pub fn next_deadline(&self) -> Option<Instant> {
        let Reverse(e) = self.heap.peek()?;
        let base = self.base?;
        Some(
            base.checked_add(Duration::from_millis(e.at_ms()))
                .unwrap_or(base),
        )
    }

    /// Removes and returns the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let Reverse(e) = self.heap.peek()?;
        // Before the base, nothing is due (every deadline is at or after it).
        let now_ms = floor_ms(now.checked_duration_since(self.base?)?);
        if e.at_ms() > now_ms {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| e.timer())
    }

    /// Drops entries whose connection is gone, so `next_deadline` does not wake the loop
    /// for nothing.
    pub fn discard_front_while(&mut self, mut stale: impl FnMut(&Timer) -> bool) {
        while let Some(Reverse(e)) = self.heap.peek() {
            if !stale(&e.timer()) {
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
        entries.retain(|Reverse(e)| !stale(&e.timer()));
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

    #[test]
    fn entries_take_16_bytes() {
        assert_eq!(std::mem::size_of::<Reverse<Entry>>(), 16);
    }

    #[test]
    fn an_entry_never_comes_due_before_its_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let at = t0 + Duration::from_micros(2_500);
        let c = ConnId {
            index: 7,
            generation: 9,
        };
        timers.schedule(t0, Timer::WillDelay(1, 2));
        timers.schedule(at, Timer::KeepAlive(c));
        assert_eq!(timers.pop_due(t0), Some(Timer::WillDelay(1, 2)));
        assert_eq!(timers.pop_due(at - Duration::from_nanos(1)), None);
        let next = timers.next_deadline().unwrap();
        assert!(next >= at && next < at + Duration::from_millis(1));
        assert_eq!(timers.pop_due(next), Some(Timer::KeepAlive(c)));
    }

    #[test]
    fn a_deadline_before_the_first_moves_the_base_back() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let late = t0 + Duration::from_secs(10);
        timers.schedule(late, Timer::SessionExpiry(3, 4));
        timers.schedule(
            t0 + Duration::from_micros(1_500),
            Timer::SessionExpiry(5, 6),
        );
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(1)), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_millis(2)),
            Some(Timer::SessionExpiry(5, 6))
        );
        assert_eq!(timers.pop_due(late - Duration::from_millis(1)), None);
        assert_eq!(timers.pop_due(late), Some(Timer::SessionExpiry(3, 4)));
    }
}
