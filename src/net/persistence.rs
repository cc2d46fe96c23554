//! Persistence as the loop sees it: opening the store (recovery before listening), the
//! end-of-turn hand-over of the turn's records to the writer thread, and journal
//! back-pressure.
//!
//! Back-pressure: while the bytes the writer has not written yet plus this turn's
//! records reach `journal_queue_bytes`, reading stops before the next read of every
//! connection, through the same pause as a full write buffer (`Connection::read` returns
//! `Paused`; `resume_paused` leaves them paused while the queue is full). The writer wakes
//! the loop after each write, and reading resumes once there is room. So a slow or
//! failing disk slows the clients down, memory stays within the budget plus one read's
//! records, and the loop thread never blocks. Episodes are logged when they start and end.
//!
//! Queues kept on disk: the broker gets a `store::Reader` of the data directory before
//! replay (its frame source), and each turn the locations of the batches the writer has
//! written (`Broker::handle_written`); snapshots keep the files its queues point into.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::Core;
use crate::store::{Reader, Store};

/// Journal back-pressure episodes closer together than this are logged at debug level
/// only (a disk that is merely slow can start one per fsync under load).
const JOURNAL_LOG_EVERY: Duration = Duration::from_secs(60);

impl Core {
    /// Opens the data directory (when persistence is on), replays it into the broker and
    /// starts a fresh log with a snapshot of what was recovered.
    pub(super) fn open_store(&mut self) -> io::Result<()> {
        let config = self.broker.config();
        if !config.persistence {
            return Ok(());
        }
        let dir = config.persistence_location.clone();
        let policy = config.fsync;
        let shared = Arc::clone(&self.shared);
        let notify = Box::new(move || shared.wake());
        let broker = &mut self.broker;
        let started = Instant::now();
        // The broker reads no clock; expiry across restarts needs the calendar time.
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        broker.set_wall_clock(crate::broker::WallClock {
            at: started,
            unix_ms,
        });
        broker.set_frame_source(Box::new(Reader::new(dir.clone())));
        let (mut store, _report) = Store::open_at(&dir, policy, notify, |r, at| {
            broker.restore_record_at(r, at, started)
        })
        .map_err(|e| io::Error::new(e.kind(), format!("data directory {}: {e}", dir.display())))?;
        broker.finish_restore(started);
        let (snapshot, keep) = broker.snapshot_keeping(started);
        store.compact_keeping(snapshot, keep);
        info!(
            "persistence in {} (fsync {policy}): {} sessions, {} retained messages",
            dir.display(),
            broker.session_count(),
            broker.retained_count()
        );
        self.store = Some(store);
        Ok(())
    }

    /// End of a turn: hands the turn's records to the writer, releases output whose
    /// records are durable, and compacts when the log has grown.
    pub(super) fn sync_store(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Some((seq, batch)) = self.broker.poll_journal() {
            if self.broker.journal_awaited() {
                store.submit(seq, batch);
            } else {
                store.submit_lazy(seq, batch);
            }
        }
        if self.broker.journal_wants_sync() {
            store.sync_soon();
        }
        store.take_located(&mut self.located);
        self.broker.handle_written(&self.located, Instant::now());
        self.located.clear();
        self.broker.handle_durable(store.durable());
        if store.wants_compaction() {
            let (snapshot, keep) = self.broker.snapshot_keeping(Instant::now());
            store.compact_keeping(snapshot, keep);
        }
        // Episodes of journal back-pressure, for the log (reads themselves are paused and
        // resumed by `read` and `resume_paused`).
        let queued = store.queued_bytes();
        let limit = self.broker.config().journal_queue_bytes as u64;
        let now = Instant::now();
        match self.journal_full_since {
            None if queued >= limit => {
                self.journal_full_since = Some(now);
                if self
                    .journal_warned_at
                    .is_none_or(|at| now.duration_since(at) >= JOURNAL_LOG_EVERY)
                {
                    self.journal_warned_at = Some(now);
                    warn!(
                        "persistence: {queued} bytes wait for the disk (journal_queue_bytes {limit}); not reading from clients until the writer catches up"
                    );
                } else {
                    debug!("persistence: journal queue full again ({queued} bytes)");
                }
            }
            Some(since) if queued < limit => {
                self.journal_full_since = None;
                let paused = now.duration_since(since);
                if self.journal_warned_at == Some(since) {
                    info!(
                        "persistence: the writer caught up after {} ms; reading from clients again",
                        paused.as_millis()
                    );
                } else {
                    debug!(
                        "persistence: journal queue drained after {} ms",
                        paused.as_millis()
                    );
                }
            }
            _ => {}
        }
    }

    /// Journal bytes the broker may still produce before reading stops: the budget less
    /// what the writer has not written yet. `None` without persistence.
    pub(super) fn journal_room(&self) -> Option<usize> {
        let store = self.store.as_ref()?;
        let queued = usize::try_from(store.queued_bytes()).unwrap_or(usize::MAX);
        Some(
            self.broker
                .config()
                .journal_queue_bytes
                .saturating_sub(queued),
        )
    }
}
