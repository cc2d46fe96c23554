//! When and where to reconnect: the `restart_timeout` delay (constant, or Mosquitto's
//! "decorrelated jitter" backoff) and the order addresses are tried in.
//!
//! Randomness is injected ([`Rng`]) so the state machine stays deterministic under test;
//! the runtime passes a seeded generator.

use std::time::Duration;

use crate::config::bridge::Restart;

/// A source of random numbers.
pub trait Rng {
    fn next_u64(&mut self) -> u64;
}

/// xorshift64*: small, fast, good enough to spread reconnects; not for secrets.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A zero seed would stay zero; it is replaced by a fixed odd constant.
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
}

impl Rng for XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The delay before the next reconnection round.
#[derive(Clone, Debug)]
pub(super) struct Backoff {
    restart: Restart,
    /// The last jittered delay (starts at the base).
    last: Duration,
}

impl Backoff {
    pub(super) fn new(restart: Restart) -> Backoff {
        let last = match restart {
            Restart::Constant(d) => d,
            Restart::Backoff { base, .. } => base,
        };
        Backoff { restart, last }
    }

    /// The next delay: constant, or uniformly between the base and three times the last
    /// delay, at most the cap ("decorrelated jitter", as Mosquitto).
    pub(super) fn next(&mut self, rng: &mut dyn Rng) -> Duration {
        match self.restart {
            Restart::Constant(d) => d,
            Restart::Backoff { base, cap } => {
                let lo = base.as_millis() as u64;
                let hi = (self.last.as_millis() as u64).saturating_mul(3).max(lo);
                let span = hi - lo + 1;
                // Multiply-shift maps the draw onto 0..span without modulo bias.
                let offset = ((u128::from(rng.next_u64()) * u128::from(span)) >> 64) as u64;
                let d = Duration::from_millis(lo + offset).min(cap);
                self.last = d;
                d
            }
        }
    }

    /// After a successful connection: start again from the base.
    pub(super) fn reset(&mut self) {
        if let Restart::Backoff { base, .. } = self.restart {
            self.last = base;
        }
    }
}

/// Which address to dial next. A *round* tries each address once, starting at the primary
/// (or, with `round_robin`, after the one that failed last); a failed attempt moves to the
/// next address at once, and only a round where every address failed waits for the backoff.
#[derive(Clone, Debug)]
pub(super) struct AddressPlan {
    count: usize,
    round_robin: bool,
    current: usize,
    /// Attempts that failed in this round.
    failed: usize,
}

impl AddressPlan {
    pub(super) fn new(count: usize, round_robin: bool) -> AddressPlan {
        AddressPlan {
            count: count.max(1),
            round_robin,
            current: 0,
            failed: 0,
        }
    }

    pub(super) fn current(&self) -> usize {
        self.current
    }

    /// The attempt on the current address failed: `true` and the next address if this
    /// round has one left, `false` if the round is over (back off, then `new_round`).
    pub(super) fn failed(&mut self) -> bool {
        self.failed += 1;
        if self.failed >= self.count {
            return false;
        }
        self.current = (self.current + 1) % self.count;
        true
    }

    /// Start a round: at the primary, or with `round_robin` at the next address.
    pub(super) fn new_round(&mut self) {
        self.failed = 0;
        self.current = if self.round_robin {
            (self.current + 1) % self.count
        } else {
            0
        };
    }

    /// Connected: the round succeeded.
    pub(super) fn connected(&mut self) {
        self.failed = 0;
    }

    /// Move to `index` for the next attempt (back to the primary after a probe).
    pub(super) fn set(&mut self, index: usize) {
        self.failed = 0;
        self.current = index % self.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the values given, then repeats the last.
    pub(crate) struct Fixed(pub Vec<u64>);

    impl Rng for Fixed {
        fn next_u64(&mut self) -> u64 {
            if self.0.len() > 1 {
                self.0.remove(0)
            } else {
                self.0.first().copied().unwrap_or(0)
            }
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn constant_restart_is_constant() {
        let mut b = Backoff::new(Restart::Constant(secs(20)));
        let mut rng = XorShift::new(1);
        for _ in 0..5 {
            assert_eq!(b.next(&mut rng), secs(20));
        }
    }

    #[test]
    fn jittered_backoff_stays_between_base_and_cap_and_grows() {
        let restart = Restart::Backoff {
            base: secs(5),
            cap: secs(30),
        };
        for seed in 1..200 {
            let mut b = Backoff::new(restart);
            let mut rng = XorShift::new(seed);
            let mut last = secs(5);
            for _ in 0..20 {
                let d = b.next(&mut rng);
                assert!(d >= secs(5) && d <= secs(30), "{d:?}");
                assert!(d <= (last * 3).min(secs(30)), "{d:?} after {last:?}");
                last = d;
            }
        }
        // The largest draws reach the cap: 5 -> 15 -> 30 (capped from 45).
        let mut b = Backoff::new(restart);
        let mut max = Fixed(vec![u64::MAX]);
        let draws: Vec<_> = (0..3).map(|_| b.next(&mut max).as_secs()).collect();
        assert_eq!(draws, [15, 30, 30]);
        b.reset();
        let mut min = Fixed(vec![0]);
        assert_eq!(b.next(&mut min), secs(5));
    }

    #[test]
    fn failover_order_and_return_to_primary() {
        let mut p = AddressPlan::new(3, false);
        assert_eq!(p.current(), 0);
        assert!(p.failed());
        assert_eq!(p.current(), 1);
        assert!(p.failed());
        assert_eq!(p.current(), 2);
        assert!(!p.failed(), "round over after every address failed");
        p.new_round();
        assert_eq!(
            p.current(),
            0,
            "without round_robin a round starts at the primary"
        );

        let mut p = AddressPlan::new(3, true);
        assert!(p.failed());
        assert_eq!(p.current(), 1);
        p.connected();
        p.new_round(); // the link on address 1 failed
        assert_eq!(p.current(), 2, "round_robin moves on to the next address");
    }
}
