//! The `memory_limit` accounting of the broker (issue 11): what [`Broker::memory_used`]
//! counts, the event loop's share of it, and the episode logic at the limit. The policy
//! applied at the limit (refuse QoS 1/2, drop QoS 0) is in `inbound.rs`.

use log::{info, warn};

use super::{Broker, QUEUED_ENTRY};

impl Broker {
    /// Bytes the broker holds as `memory_limit` counts them: every live message once
    /// (topic, payload, properties and its allocation, however many queues, inflight slots
    /// and the retained store share it), each in-memory queue entry ([`QUEUED_ENTRY`]),
    /// the entries of queues kept on disk (not their payloads), the connections' write
    /// buffers and output held until the journal is durable, and what the event loop
    /// reported (`account_input`: partial input, lingering final bytes). Kept in O(1)
    /// counters; a later `$SYS` publishes it as heap/current.
    pub fn memory_used(&self) -> usize {
        self.meter.bytes() + self.queued_entries * QUEUED_ENTRY + self.out_bytes + self.input_bytes
    }

    /// The event loop read `n` bytes from clients (`$SYS/broker/bytes/received`).
    pub fn count_received(&mut self, n: usize) {
        self.stats.bytes_received += n as u64;
    }

    /// Bytes the event loop holds for connections changed from `before` to `after` (one
    /// connection's partial-input tail grew, shrank or was dropped; a lingering
    /// connection's final bytes were handed over or freed).
    pub fn account_input(&mut self, before: usize, after: usize) {
        self.input_bytes = self.input_bytes.saturating_sub(before) + after;
    }

    /// Whether the broker is over `memory_limit` now. An episode starts when the count
    /// reaches the limit and ends once it is back under 7/8 of it (so that a broker at the
    /// edge does not flip, and log, on every message); both are logged once.
    pub(super) fn check_memory(&mut self) -> bool {
        let limit = self.config.memory_limit;
        if limit == 0 && !self.memory_full {
            return false;
        }
        let used = self.memory_used();
        let full = if limit == 0 {
            false
        } else if self.memory_full {
            used >= limit - limit / 8
        } else {
            used >= limit
        };
        if full != self.memory_full {
            self.memory_full = full;
            if full {
                warn!(
                    "memory_limit reached ({used} of {limit} bytes): dropping QoS 0 messages \
                     and refusing QoS 1/2 messages until memory frees"
                );
            } else {
                info!("memory back under memory_limit ({used} of {limit} bytes): accepting messages again");
            }
        }
        full
    }
}
