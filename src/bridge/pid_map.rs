//! Maps keyed by MQTT packet id (`u16`) for the bridge's flows, with a cheap hasher:
//! every forwarded message is inserted, looked up and removed a few times, and the
//! standard SipHash cost more per message than the rest of the bookkeeping. Keys are
//! 16-bit packet ids (at most 65,535 entries whatever the upstream sends), so flooding
//! one bucket buys an attacker nothing that the id space does not already bound.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by packet id; build with `PidMap::default()`.
pub type PidMap<V> = HashMap<u16, V, BuildHasherDefault<PidHasher>>;

/// Multiplicative (Fibonacci) hashing of a packet id: spreads the id over the high bits
/// the table's control bytes use.
#[derive(Default)]
pub struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u16` keys are hashed here; any other input still hashes correctly.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_map_holds_every_packet_id() {
        let mut m: PidMap<u16> = PidMap::default();
        for pid in 1..=u16::MAX {
            m.insert(pid, pid);
        }
        assert_eq!(m.len(), usize::from(u16::MAX));
        assert!((1..=u16::MAX).all(|p| m.get(&p) == Some(&p)));
        assert_eq!(m.remove(&7), Some(7));
        assert!(!m.contains_key(&7));
    }
}
