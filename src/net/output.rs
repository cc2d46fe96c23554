//! The loop's side of writing: flushing one connection's broker output to its socket,
//! draining the broker's close and transmit lists each turn, and resuming connections
//! paused for back-pressure once their output (and the journal queue) has drained.

use std::mem;
use std::time::Instant;

use mio::Registry;

use super::connection::{FlushEnd, State};
use super::{token, Core};
use crate::broker::Disconnect;

impl Core {
    /// Writes the broker's pending output for one connection.
    pub(super) fn flush(&mut self, registry: &Registry, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == State::Closed {
            return;
        }
        let Some(token) = token::connection(key) else {
            return; // admit() only inserts keys that have a token
        };
        if let FlushEnd::Failed(e) = conn.flush(&mut self.broker, registry, token) {
            let id = conn.id;
            if conn.is_open() {
                self.broker.handle_disconnect(id, Disconnect::IoError, now);
            }
            self.close(registry, key, &format!("write error: {e}"), &[]);
        }
    }

    /// Drains the broker's closes and transmits, then closes broker-ended connections the
    /// broker did not list.
    pub(super) fn transmit(&mut self, registry: &Registry, now: Instant) {
        loop {
            if let Some(close) = self.broker.poll_close() {
                if let Some(key) = self.key_of(close.id) {
                    if close.final_bytes.is_empty() {
                        self.close(registry, key, "closed by broker", &[]);
                    } else {
                        self.linger(registry, key, close.final_bytes, now);
                    }
                }
                continue;
            }
            let Some(id) = self.broker.poll_transmit() else {
                break;
            };
            if let Some(key) = self.key_of(id) {
                self.flush(registry, key, now);
            }
        }
        let mut ending = mem::take(&mut self.ending);
        for &key in &ending {
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.state == State::Ending)
            {
                self.close(registry, key, "ended by broker", &[]);
            }
        }
        ending.clear();
        self.ending = ending;
    }

    /// Moves paused connections whose output has drained to the read work list, unless
    /// the journal queue is still full (then the writer's wake-up brings the loop back).
    pub(super) fn resume_paused(&mut self) {
        let journal_full = self
            .journal_room()
            .is_some_and(|room| self.broker.journal_bytes() >= room);
        if journal_full {
            return;
        }
        let Core {
            paused,
            conns,
            broker,
            readable,
            ..
        } = self;
        paused.retain(|&(key, id)| {
            let Some(conn) = conns.get_mut(key).filter(|c| c.id == id && c.is_open()) else {
                return false;
            };
            if !broker.wants_read(id) {
                return true;
            }
            conn.paused = false;
            if !conn.queued {
                conn.queued = true;
                readable.push((key, id));
            }
            false
        });
    }
}
