//! The loop's side of lingering connections (see `connection`'s module docs): starting
//! the graceful close, discarding input, writing the final bytes, the deadline check.

use std::time::Instant;

use log::debug;
use mio::Registry;

use super::connection::{Id, LingerStep, State};
use super::{token, Core, LINGER_TIME};
use crate::broker::ConnId;

impl Core {
    /// Starts the graceful close of a connection the broker ended with `final_bytes`.
    pub(super) fn linger(
        &mut self,
        registry: &Registry,
        key: usize,
        final_bytes: Vec<u8>,
        now: Instant,
    ) {
        let (Some(conn), Some(token)) = (self.conns.get_mut(key), token::connection(key)) else {
            return;
        };
        let id = conn.id;
        // The tail goes; the final bytes are the loop's until it closes (`memory_limit`).
        self.broker
            .account_input(conn.tail_bytes(), final_bytes.capacity());
        if conn.linger(registry, token, final_bytes) == LingerStep::Done {
            self.close(registry, key, "closed by broker", &[]);
            return;
        }
        debug!("{}: final bytes queued, lingering", Id(id));
        self.lingering.push_back((now + LINGER_TIME, key, id));
        // Input already waiting raises no new (edge-triggered) event.
        self.drain(registry, key);
    }

    /// Discards a lingering connection's input; closes it when the peer is done.
    pub(super) fn drain(&mut self, registry: &Registry, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.drain(&mut self.scratch) {
            LingerStep::Wait => {}
            LingerStep::Capped => {
                if !conn.queued {
                    conn.queued = true;
                    self.readable.push((key, conn.id));
                }
            }
            LingerStep::Done => self.close(registry, key, "closed by broker", &[]),
        }
    }

    /// Writes more of a lingering connection's final bytes.
    pub(super) fn linger_write(&mut self, registry: &Registry, key: usize) {
        let (Some(conn), Some(token)) = (self.conns.get_mut(key), token::connection(key)) else {
            return;
        };
        if conn.linger_write(registry, token) == LingerStep::Done {
            self.close(registry, key, "closed by broker", &[]);
        }
    }

    /// Whether slot `key` still holds lingering connection `id`.
    pub(super) fn is_lingering(&self, key: usize, id: ConnId) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| c.id == id && c.state == State::Lingering)
    }
}
