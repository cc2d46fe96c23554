//! Persistence: an append-only log of state changes plus periodic snapshots, in one data
//! directory, written by one writer thread.
//!
//! The broker turns each state change it must not lose into a [`Record`] (format in
//! `record.rs`) and hands the records of one loop turn to [`Store::submit`] as a batch.
//! The writer thread appends batches and, under `fsync = batch`, fsyncs them together and
//! reports the highest durable batch through [`Store::durable`]; the broker holds back the
//! acknowledgements of a batch until then (group commit). While one fsync runs, the loop
//! keeps serving and the next batches pile up, so a slow SD card lowers the ack rate per
//! fsync, not the loop's responsiveness.
//!
//! Batches nobody waits for ([`Store::submit_lazy`]: a bridge's bookkeeping of what the
//! upstream acknowledged, whose loss in a power cut can only cause a QoS 1 resend) are
//! written at once (within [`COMMIT_DELAY`] while writes run back to back) and fsynced
//! with the next batch somebody waits for, or [`LAZY_SYNC`] after they were written,
//! whichever is first.
//! A drain to an uplink then costs no fsync per loop turn: on a one-core gateway the
//! fsyncs' CPU (and on flash their wear) was a third of the work.
//!
//! Back-pressure: [`Store::queued_bytes`] counts the bytes submitted and not yet written.
//! The loop stops reading clients while it is over `journal_queue_bytes` (see `net`), so
//! a slow or full SD card slows publishers down instead of growing this queue; the writer
//! wakes the loop after every write so that reading resumes as soon as it catches up.
//! While writes fail, batches wait in the writer (bounded by that budget) and are retried
//! every [`RETRY_AFTER`]; their acknowledgements stay held until they are durable.
//!
//! Compaction ([`Store::compact`]) starts a new log and writes a snapshot of the live state
//! (serialized by the broker on the loop thread, which is a memory copy of live state and
//! gives a consistent cut without locks); the writer thread does the file work (tmp, fsync,
//! rename, directory fsync, read back) and, once the new snapshot read back intact, deletes
//! the files older than the previous snapshot (except those on-disk queues still read, see
//! below), so disk use follows live state (at most two generations of snapshot and log,
//! plus kept logs), not traffic. Why a thread and not chunks on the loop: fsync latency on flash is
//! unbounded (tens of ms is common), and the loop must never wait for it.
//!
//! [`Store::open`] first takes the data directory's lock (`files::lock`): a second broker
//! on the same directory fails there, before reading, repairing or compacting anything.
//!
//! On-disk queues (issue 11): after each write the writer reports where every batch
//! landed ([`Store::take_located`]), so that the broker can keep a queued message as a
//! [`Location`] and read it back through a [`Reader`] instead of holding it in memory.
//! Compaction is told which files such locations still point into and keeps them (see
//! [`Store::compact_keeping`]): queued payloads are never copied into snapshots, and a
//! file is deleted only once no queue (in the new snapshot or the one before) uses it.
//!
//! Module map: `record` (the byte format), `scan` (reading a file's frames in bounded
//! chunks), `files` (directory layout, lock, recovery,
//! atomic snapshot writes), `reader` (reading single frames back by position), `fuzzing`
//! (the `store` harness: the loader fed arbitrary bytes; `cfg(fuzzing)` and tests), this
//! file (the writer thread and its handle).

pub mod files;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod reader;
pub mod record;
pub mod scan;

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info};

pub use files::{DirLock, RecoveryReport};
pub use reader::{FrameSource, Location, ReadError, Reader};
pub use record::Record;

use crate::config::FsyncPolicy;

/// Compact when the log has grown past this many bytes and past twice the last snapshot.
const COMPACT_MIN_LOG_BYTES: u64 = 16 * 1024 * 1024;

enum Command {
    /// Append a batch of framed records; `seq` numbers batches in submission order.
    Append {
        seq: u64,
        bytes: Vec<u8>,
        awaited: bool,
    },
    /// fsync what was written lazily, now (somebody waits for a batch already submitted).
    Sync,
    /// Start log `index` and write snapshot `index` (the state as of this point); the
    /// files in `keep` (by `Location::file_key`) are not deleted.
    Compact {
        index: u64,
        snapshot: Vec<u8>,
        keep: Vec<u32>,
    },
    /// Reply once every earlier command is done (see [`Store::wait_idle`]).
    Barrier(mpsc::SyncSender<()>),
    /// Make everything durable and stop.
    Stop,
}

/// What the writer thread shares with the loop.
struct Shared {
    /// Highest batch whose records are on disk per the fsync policy.
    durable: AtomicU64,
    /// Set after a write error, cleared by the next successful write; logged once.
    failing: AtomicBool,
    /// Bytes of batches submitted and not yet written to the log.
    queued: AtomicU64,
    /// Index of the last compaction the writer has carried out (or given up on).
    compacted: AtomicU64,
    /// Where the batches written since the loop last asked start: (seq, location).
    located: Mutex<Vec<(u64, Location)>>,
    /// Test hook: appends fail as on a full disk while set.
    #[cfg(test)]
    fail_writes: AtomicBool,
    /// Test hook: [`LAZY_SYNC`] in ms when not 0.
    #[cfg(test)]
    lazy_sync_ms: AtomicU64,
}

/// The handle the event loop owns.
pub struct Store {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    policy: FsyncPolicy,
    log_index: u64,
    log_bytes: u64,
    snapshot_bytes: u64,
    dir: PathBuf,
    /// Dropped after the writer has stopped (fields drop after `Drop::drop`).
    _lock: DirLock,
}

impl Store {
    /// Takes the data directory's lock, replays the directory into `apply` (creating it if
    /// needed), then starts the writer thread. The caller must call [`Store::compact`] with
    /// the restored state before submitting batches, which starts a fresh log. `notify` is
    /// called from the writer thread whenever `durable` advances (it should wake the event
    /// loop). Fails with `ErrorKind::WouldBlock`, having touched nothing, when another
    /// process holds the directory.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        notify: Box<dyn Fn() + Send>,
        mut apply: impl FnMut(Record<'_>),
    ) -> io::Result<(Store, RecoveryReport)> {
        Store::open_at(dir, policy, notify, |r, _| apply(r))
    }

    /// [`Store::open`], handing each record over with where its frame is.
    pub fn open_at(
        dir: &Path,
        policy: FsyncPolicy,
        notify: Box<dyn Fn() + Send>,
        apply: impl FnMut(Record<'_>, Option<Location>),
    ) -> io::Result<(Store, RecoveryReport)> {
        let lock = files::lock(dir)?;
        let report = files::recover_at(dir, apply)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            durable: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            compacted: AtomicU64::new(report.last_index),
            located: Mutex::new(Vec::new()),
            #[cfg(test)]
            fail_writes: AtomicBool::new(false),
            #[cfg(test)]
            lazy_sync_ms: AtomicU64::new(0),
        });
        let writer = Writer {
            dir: dir.to_path_buf(),
            rx,
            shared: Arc::clone(&shared),
            policy,
            notify,
            log: None,
            log_len: 0,
            pending: Vec::new(),
            pending_starts: Vec::new(),
            pending_seq: 0,
            written_seq: 0,
            log_index: 0,
            last_sync: Instant::now(),
            last_write: Instant::now(),
            last_awaited: Instant::now(),
            unsynced: false,
            awaited_unsynced: false,
            pending_awaited: false,
            lazy_since: None,
            keep_from: report.snapshot,
            kept: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("wrenmq-store".into())
            .spawn(move || writer.run())?;
        Ok((
            Store {
                tx,
                shared,
                thread: Some(thread),
                policy,
                log_index: report.last_index,
                log_bytes: 0,
                snapshot_bytes: 0,
                dir: dir.to_path_buf(),
                _lock: lock,
            },
            report,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Queues batch `seq` (numbers increase by one per batch) of framed records.
    pub fn submit(&mut self, seq: u64, bytes: Vec<u8>) {
        self.append(seq, bytes, true);
    }

    /// [`Store::submit`] for a batch nobody waits for (see the module docs): written soon,
    /// fsynced with the next awaited batch or within [`LAZY_SYNC`]; it becomes
    /// [`Store::durable`] only then.
    pub fn submit_lazy(&mut self, seq: u64, bytes: Vec<u8>) {
        self.append(seq, bytes, false);
    }

    fn append(&mut self, seq: u64, bytes: Vec<u8>, awaited: bool) {
        self.log_bytes += bytes.len() as u64;
        self.shared
            .queued
            .fetch_add(bytes.len() as u64, Ordering::AcqRel);
        // A send fails only if the writer thread is gone, which `Drop` alone causes.
        let _ = self.tx.send(Command::Append {
            seq,
            bytes,
            awaited,
        });
    }

    /// Somebody now waits for a batch submitted lazily: fsync without waiting for
    /// [`LAZY_SYNC`].
    pub fn sync_soon(&self) {
        let _ = self.tx.send(Command::Sync);
    }

    /// The highest batch that is durable under the fsync policy: fsynced under `batch`;
    /// written to the file (so it survives a crash of the process, not of the machine)
    /// under `interval` and `never`.
    pub fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Bytes submitted and not yet written to the log (what the writer holds in memory,
    /// besides a snapshot being written).
    pub fn queued_bytes(&self) -> u64 {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Whether the log has grown enough to be worth compacting. Never while the previous
    /// compaction is still with the writer, so at most one snapshot copy waits in memory
    /// however long writes fail.
    pub fn wants_compaction(&self) -> bool {
        self.log_bytes > COMPACT_MIN_LOG_BYTES
            && self.log_bytes > 2 * self.snapshot_bytes
            && self.shared.compacted.load(Ordering::Acquire) >= self.log_index
    }

    /// Test hook: lazy batches wait `ms` for their fsync instead of [`LAZY_SYNC`].
    #[cfg(test)]
    fn set_lazy_sync_ms(&self, ms: u64) {
        self.shared.lazy_sync_ms.store(ms, Ordering::Release);
    }

    /// Test hook: makes appends fail (`true`) as on a full disk, or work again.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, fail: bool) {
        self.shared.fail_writes.store(fail, Ordering::Release);
    }

    /// Starts a new log and writes `snapshot` (framed records of the whole live state, as
    /// of everything submitted so far) as its snapshot.
    pub fn compact(&mut self, snapshot: Vec<u8>) {
        self.compact_keeping(snapshot, Vec::new());
    }

    /// [`Store::compact`], keeping the files `keep` names (by [`Location::file_key`]):
    /// those the snapshot's on-disk queue entries point into. They stay until a
    /// compaction after the next one no longer names them, so that the previous
    /// snapshot (recovery's fallback) stays readable too.
    pub fn compact_keeping(&mut self, snapshot: Vec<u8>, keep: Vec<u32>) {
        self.log_index += 1;
        self.log_bytes = 0;
        self.snapshot_bytes = snapshot.len() as u64;
        let _ = self.tx.send(Command::Compact {
            index: self.log_index,
            snapshot,
            keep,
        });
    }

    /// Moves the locations of the batches written since the last call into `out`: batch
    /// `seq` starts at that location (its records follow one another from there).
    pub fn take_located(&self, out: &mut Vec<(u64, Location)>) {
        if let Ok(mut located) = self.shared.located.lock() {
            out.append(&mut located);
        }
    }

    /// A reader of this directory's files, for the broker's on-disk queues.
    pub fn reader(&self) -> Reader {
        Reader::new(self.dir.clone())
    }

    /// Blocks until the writer has carried out everything submitted so far (appends and
    /// compactions). Used once at start-up when the broker drops root, so that the files
    /// the first compaction creates exist before `main` hands the directory to the
    /// configured `user`; never on the loop's hot path.
    pub fn wait_idle(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Command::Barrier(tx)).is_ok() {
            // An Err means the writer is gone; there is nothing left to wait for.
            let _ = rx.recv();
        }
    }

    /// Makes everything submitted durable and stops the writer.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    rx: Receiver<Command>,
    shared: Arc<Shared>,
    policy: FsyncPolicy,
    notify: Box<dyn Fn() + Send>,
    log: Option<File>,
    /// Length of the log up to its last complete write; a failed write is cut back to it,
    /// so a half-written batch never sits in front of later records.
    log_len: u64,
    /// Batches not yet written (normally empty; holds them while writes fail).
    pending: Vec<u8>,
    /// Sequence number and offset in `pending` of each batch in it.
    pending_starts: Vec<(u64, usize)>,
    /// Sequence number of the last batch in `pending`.
    pending_seq: u64,
    /// Sequence number of the last batch written to the log (durable once fsynced).
    written_seq: u64,
    /// Index of the log appends should go to: the last compaction's. When creating it
    /// failed (no log is open), appending creates it first.
    log_index: u64,
    last_sync: Instant,
    /// When the log was last appended to.
    last_write: Instant,
    /// When the last batch somebody waits for came.
    last_awaited: Instant,
    unsynced: bool,
    /// Written and not fsynced, and somebody waits for it (a failed fsync is retried).
    awaited_unsynced: bool,
    /// `pending` holds a batch somebody waits for.
    pending_awaited: bool,
    /// When the oldest write not yet fsynced was made, while only lazy batches wait.
    lazy_since: Option<Instant>,
    /// The newest snapshot known intact (written and read back, or recovered from): files
    /// older than it may go once a newer snapshot is known intact too.
    keep_from: Option<u64>,
    /// Files the last compaction was told to keep (on-disk queues of the snapshot that is
    /// now the fallback still point into them).
    kept: Vec<u32>,
}

/// How long a failing writer waits before trying again when no new batch arrives.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest a lazily submitted batch stays written but not fsynced (`fsync batch`).
/// Short, so that a power cut costs few QoS 1 resends; long enough that a drain to an
/// uplink pays one fsync per many loop turns.
pub const LAZY_SYNC: Duration = Duration::from_millis(20);

/// Under load (the last fsync less than [`BUSY`] ago), the writer waits for more batches
/// before the next fsync (PostgreSQL's `commit_delay`): as long as the next batch comes
/// within [`COMMIT_GAP`], up to [`COMMIT_DELAY`] in all. The loop submits a batch per
/// turn, and on a fast disk an fsync per turn cost a third of a core on the bench VM
/// (and wears an SD card). Acknowledgements wait at most this much longer, and only
/// while batches pile up: a lone publisher waiting for each PUBACK never waits for
/// nothing. Batches nobody waits for are gathered the same way while writes run back to
/// back (their [`LAZY_SYNC`] is far longer).
const COMMIT_DELAY: Duration = Duration::from_millis(1);
const COMMIT_GAP: Duration = Duration::from_micros(250);
const BUSY: Duration = Duration::from_millis(2);

impl Writer {
    fn run(mut self) {
        loop {
            // Retry failed writes, and under `batch` a failed fsync: acknowledgements wait
            // for it, and the loop may have paused reading until the queue drains.
            let failing = self.shared.failing.load(Ordering::Acquire);
            let retry = !self.pending.is_empty()
                || (self.policy == FsyncPolicy::Batch
                    && (self.awaited_unsynced || (self.unsynced && failing)));
            let wait = if retry {
                Some(RETRY_AFTER)
            } else {
                match self.policy {
                    FsyncPolicy::Interval(every) if self.unsynced => {
                        Some(every.saturating_sub(self.last_sync.elapsed()))
                    }
                    FsyncPolicy::Batch if self.unsynced => {
                        let after = self.lazy_sync();
                        Some(after.saturating_sub(self.lazy_since.map_or(after, |t| t.elapsed())))
                    }
                    _ => None,
                }
            };
            let command = match wait {
                Some(wait) => match self.rx.recv_timeout(wait) {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) => {
                        self.write_pending(true);
                        self.sync();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => Command::Stop,
                },
                None => self.rx.recv().unwrap_or(Command::Stop),
            };
            let mut next = Some(command);
            while let Some(command) = next.take() {
                match command {
                    Command::Append {
                        seq,
                        bytes,
                        awaited,
                    } => {
                        // Group commit: every batch already waiting, and under load those
                        // arriving soon after (`COMMIT_DELAY`), go in one write and fsync.
                        self.gather(seq, &bytes, awaited);
                        let batch = self.policy == FsyncPolicy::Batch;
                        let syncing = batch && self.last_sync.elapsed() < BUSY;
                        // Lazy batches alone wait for company only while nobody waits
                        // for any (a drain): else the next PUBACK would wait with them.
                        let writing = batch
                            && self.last_write.elapsed() < BUSY
                            && self.last_awaited.elapsed() >= BUSY;
                        let until = Instant::now() + COMMIT_DELAY;
                        let mut slept = false;
                        'gather: loop {
                            let mut more = false;
                            loop {
                                match self.rx.try_recv() {
                                    Ok(Command::Append {
                                        seq,
                                        bytes,
                                        awaited,
                                    }) => {
                                        self.gather(seq, &bytes, awaited);
                                        more = true;
                                    }
                                    Ok(other) => {
                                        next = Some(other);
                                        break 'gather;
                                    }
                                    Err(_) => break,
                                }
                            }
                            let left = until
                                .saturating_duration_since(Instant::now())
                                .min(COMMIT_GAP);
                            // Lazy batches alone (a drain to an uplink) are gathered
                            // too while writes run back to back: a write per loop turn.
                            let worth = if self.pending_awaited {
                                syncing
                            } else {
                                writing
                            };
                            // Awaited batches only while they pile up: a lone publisher
                            // waiting for each PUBACK would wait for nothing. Lazy ones
                            // wait once for company.
                            let alone = !more && (self.pending_awaited || slept);
                            if alone || !worth || left.is_zero() {
                                break;
                            }
                            // Asleep rather than waiting on the channel: woken for every
                            // batch (one per loop turn), the writer cost two context
                            // switches per turn on the loop's core.
                            std::thread::sleep(left);
                            slept = true;
                        }
                        self.write_pending(false);
                    }
                    Command::Sync => self.write_pending(true),
                    Command::Compact {
                        index,
                        snapshot,
                        keep,
                    } => self.compact(index, &snapshot, keep),
                    Command::Barrier(done) => {
                        let _ = done.send(());
                    }
                    Command::Stop => {
                        self.write_pending(true);
                        self.sync();
                        return;
                    }
                }
            }
        }
    }

    /// Adds batch `seq` to the pending write.
    fn gather(&mut self, seq: u64, bytes: &[u8], awaited: bool) {
        self.pending_starts.push((seq, self.pending.len()));
        self.pending.extend_from_slice(bytes);
        self.pending_seq = seq;
        self.pending_awaited |= awaited;
        if awaited {
            self.last_awaited = Instant::now();
        }
    }

    /// Writes the pending batches and, under `batch`, fsyncs them when somebody waits for
    /// one of them or `force` (lazy batches alone wait, see [`LAZY_SYNC`]); then
    /// publishes the new durable sequence number. Wakes the loop after any progress: a
    /// durable batch releases acknowledgements, a write frees room in the queue (see
    /// `queued_bytes`) and locates queued messages.
    fn write_pending(&mut self, force: bool) {
        let wrote = self.append_pending();
        let synced = match self.policy {
            FsyncPolicy::Batch if force || self.awaited_unsynced => self.sync(),
            FsyncPolicy::Batch => !self.unsynced,
            _ => true,
        };
        let mut progress = wrote;
        if synced && self.written_seq > self.shared.durable.load(Ordering::Acquire) {
            self.shared
                .durable
                .store(self.written_seq, Ordering::Release);
            progress = true;
        }
        if progress {
            (self.notify)();
        }
    }

    /// Appends the pending batches to the log; returns whether anything was written.
    fn append_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        if let Some(e) = self.injected_failure() {
            self.failed("appending to the log", &e);
            return false;
        }
        if self.log.is_none() && self.log_index > 0 {
            // Creating the log failed at the last compaction (a full disk at start-up):
            // create it now. Nothing is lost by its missing snapshot: the files it would
            // have replaced are all still there, and recovery replays them before it.
            match files::create_log(&self.dir, self.log_index) {
                Ok(file) => {
                    self.log = Some(file);
                    self.log_len = record::HEADER_LEN as u64;
                }
                Err(e) => {
                    self.failed("creating a new log", &e);
                    return false;
                }
            }
        }
        let Some(log) = self.log.as_mut() else {
            self.failed(
                "appending to the log",
                &io::Error::other("no log file is open"),
            );
            return false;
        };
        if let Err(e) = log.write_all(&self.pending) {
            // Cut a partial write back so the next attempt starts on a record boundary.
            let _ = log.set_len(self.log_len);
            let _ = log.seek(SeekFrom::Start(self.log_len));
            self.failed("appending to the log", &e);
            return false;
        }
        let written = self.pending.len() as u64;
        if let Ok(mut located) = self.shared.located.lock() {
            for &(seq, start) in &self.pending_starts {
                if let Some(at) = Location::new(self.log_index, false, self.log_len + start as u64)
                {
                    located.push((seq, at));
                }
            }
        }
        self.pending_starts.clear();
        self.log_len += written;
        self.last_write = Instant::now();
        self.shared.queued.fetch_sub(written, Ordering::AcqRel);
        self.pending.clear();
        if self.pending.capacity() > 1 << 20 {
            self.pending = Vec::new();
        }
        self.unsynced = true;
        self.awaited_unsynced |= self.pending_awaited;
        self.pending_awaited = false;
        self.lazy_since.get_or_insert_with(Instant::now);
        self.written_seq = self.pending_seq;
        if self.policy != FsyncPolicy::Batch && self.shared.failing.swap(false, Ordering::AcqRel) {
            info!("data directory {} is writable again", self.dir.display());
        }
        true
    }

    #[cfg(test)]
    fn injected_failure(&self) -> Option<io::Error> {
        self.shared
            .fail_writes
            .load(Ordering::Acquire)
            .then(|| io::Error::other("injected by a test: no space left"))
    }

    #[cfg(not(test))]
    fn injected_failure(&self) -> Option<io::Error> {
        None
    }

    #[cfg(test)]
    fn lazy_sync(&self) -> Duration {
        match self.shared.lazy_sync_ms.load(Ordering::Acquire) {
            0 => LAZY_SYNC,
            ms => Duration::from_millis(ms),
        }
    }

    #[cfg(not(test))]
    fn lazy_sync(&self) -> Duration {
        LAZY_SYNC
    }

    /// fsyncs the log; returns whether it succeeded.
    fn sync(&mut self) -> bool {
        if !self.unsynced {
            return true;
        }
        let Some(log) = self.log.as_mut() else {
            return false;
        };
        match log.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                self.awaited_unsynced = false;
                self.lazy_since = None;
                self.last_sync = Instant::now();
                if self.shared.failing.swap(false, Ordering::AcqRel) {
                    info!("data directory {} is writable again", self.dir.display());
                }
                true
            }
            Err(e) => {
                self.failed("fsync of the log", &e);
                false
            }
        }
    }

    fn compact(&mut self, index: u64, snapshot: &[u8], keep: Vec<u32>) {
        self.compact_files(index, snapshot, keep);
        self.shared.compacted.store(index, Ordering::Release);
    }

    fn compact_files(&mut self, index: u64, snapshot: &[u8], keep: Vec<u32>) {
        // Everything before the snapshot point must be in the old log first, so that a crash
        // before the snapshot's rename still recovers from the old files.
        self.write_pending(true);
        if !self.pending.is_empty() || !self.sync() {
            return; // writes are failing; keep the current log and try compacting later
        }
        let created = match self.injected_failure() {
            Some(e) => Err(e),
            None => files::create_log(&self.dir, index),
        };
        match created {
            Ok(file) => {
                self.log = Some(file);
                self.log_len = record::HEADER_LEN as u64;
                self.log_index = index;
            }
            Err(e) => {
                if self.log.is_none() {
                    // No log to append to: the next append creates this one.
                    self.log_index = index;
                }
                self.failed("creating a new log", &e);
                return;
            }
        }
        if let Err(e) = files::write_snapshot(&self.dir, index, snapshot) {
            self.failed("writing a snapshot", &e);
            return;
        }
        if let Err(why) = files::verify_snapshot(&self.dir, index) {
            // Keep every older file: recovery falls back past this snapshot.
            error!(
                "persistence in {}: snapshot {index} did not read back intact ({why}); older files are kept",
                self.dir.display()
            );
            return;
        }
        // The previous intact generation stays as the fallback for this one.
        let kept = std::mem::replace(&mut self.kept, keep);
        if let Some(previous) = self.keep_from.replace(index) {
            let keep = |f: &files::DataFile| {
                let key = Location::key_of(f);
                self.kept.iter().chain(&kept).any(|&k| u64::from(k) == key)
            };
            if let Err(e) = files::remove_older(&self.dir, previous, keep) {
                self.failed("removing compacted files", &e);
            }
        }
    }

    fn failed(&self, what: &str, e: &io::Error) {
        // Acknowledgements stay held while writes fail: the broker never acknowledges what
        // is not on disk. Logged once per episode.
        if !self.shared.failing.swap(true, Ordering::AcqRel) {
            error!(
                "persistence in {}: {what} failed: {e}; acknowledgements are held until it works",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wrenmq-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &Path, policy: FsyncPolicy, seen: &mut Vec<u64>) -> Store {
        let (store, _) = Store::open(dir, policy, Box::new(|| {}), |r| {
            if let Record::Message { id, .. } = r {
                seen.push(id);
            }
        })
        .unwrap();
        store
    }

    fn batch(ids: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for id in ids {
            Record::Message {
                id,
                qos: 1,
                retain: false,
                topic: "t",
                payload: b"p",
            }
            .encode(&mut out);
        }
        out
    }

    /// Opens `dir` under `fsync batch` with a wake-up callback that counts its calls.
    fn open_counting_wakeups(dir: &Path) -> (Store, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let (store, _) = Store::open(
            dir,
            FsyncPolicy::Batch,
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }),
            |_| {},
        )
        .unwrap();
        (store, calls)
    }

    fn wait_durable(store: &Store, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.durable() < seq {
            assert!(
                Instant::now() < deadline,
                "batch {seq} never became durable"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the writer has written batch `seq` (it reports where it landed).
    fn wait_written(store: &Store, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut located = Vec::new();
        while !located.iter().any(|(s, _)| *s == seq) {
            assert!(Instant::now() < deadline, "batch {seq} never written");
            std::thread::sleep(Duration::from_millis(1));
            store.take_located(&mut located);
        }
    }

    #[test]
    fn lazy_batches_are_written_at_once_and_fsynced_with_the_next_awaited_one() {
        let dir = tempdir("lazy");
        let mut seen = Vec::new();
        let mut store = open(&dir, FsyncPolicy::Batch, &mut seen);
        store.set_lazy_sync_ms(3_600_000);
        store.compact(Vec::new());
        store.submit(1, batch(0..1));
        wait_durable(&store, 1);
        store.submit_lazy(2, batch(1..2));
        store.submit_lazy(3, batch(2..3));
        wait_written(&store, 3);
        assert_eq!(
            store.durable(),
            1,
            "nobody waits for 2 and 3: not fsynced yet"
        );
        // An awaited batch is fsynced at once, and the lazy ones before it with it.
        store.submit(4, batch(3..4));
        wait_durable(&store, 4);
        // `sync_soon` fsyncs a lazy batch without waiting for the next awaited one.
        store.submit_lazy(5, batch(4..5));
        wait_written(&store, 5);
        assert_eq!(store.durable(), 4);
        store.sync_soon();
        wait_durable(&store, 5);
        // Without either, the lazy deadline fsyncs it.
        store.set_lazy_sync_ms(5);
        store.submit_lazy(6, batch(5..6));
        wait_durable(&store, 6);
        store.close();
        let mut seen = Vec::new();
        open(&dir, FsyncPolicy::Batch, &mut seen).close();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn batches_become_durable_in_order_and_survive_reopening() {
        for policy in [
            FsyncPolicy::Batch,
            FsyncPolicy::Never,
            FsyncPolicy::Interval(Duration::from_millis(5)),
        ] {
            let dir = tempdir(&format!("{policy:?}").replace(['(', ')', ' '], ""));
            let mut seen = Vec::new();
            let mut store = open(&dir, policy, &mut seen);
            assert!(seen.is_empty());
            store.compact(Vec::new());
            store.submit(1, batch(0..3));
            store.submit(2, batch(3..5));
            wait_durable(&store, 2);
            store.close();
            let mut seen = Vec::new();
            let mut store = open(&dir, policy, &mut seen);
            assert_eq!(seen, vec![0, 1, 2, 3, 4], "{policy:?}");
            // Compaction keeps only what the snapshot says and drops the old files.
            store.compact(batch(10..11));
            store.submit(1, batch(11..12));
            wait_durable(&store, 1);
            store.close();
            let mut seen = Vec::new();
            let mut store = open(&dir, policy, &mut seen);
            assert_eq!(seen, vec![10, 11], "{policy:?}");
            store.compact(batch(10..12));
            store.close();
            // The previous generation stays as the fallback; older ones are removed.
            let files = files::list(&dir).unwrap();
            assert!(files.len() <= 4, "old files removed: {files:?}");
            assert!(files.iter().all(|f| f.index >= 2), "{files:?}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn the_writer_wakes_the_loop_when_a_batch_is_durable() {
        let dir = tempdir("notify");
        let (mut store, calls) = open_counting_wakeups(&dir);
        store.compact(Vec::new());
        store.submit(1, batch(0..1));
        wait_durable(&store, 1);
        assert!(calls.load(Ordering::SeqCst) >= 1);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_newest_snapshot_loses_nothing_after_compaction() {
        // The issue: snapshot N damaged, recovery replayed log N onto nothing and the
        // next compaction deleted what was left. Now the previous generation is kept.
        let dir = tempdir("damaged-newest");
        let mut seen = Vec::new();
        let mut store = open(&dir, FsyncPolicy::Batch, &mut seen);
        store.compact(Vec::new());
        store.submit(1, batch(0..3));
        wait_durable(&store, 1);
        store.close();
        let mut seen = Vec::new();
        let mut store = open(&dir, FsyncPolicy::Batch, &mut seen);
        store.compact(batch(0..3)); // snapshot 2: what was recovered
        store.submit(1, batch(3..5));
        wait_durable(&store, 1);
        store.close();
        let newest = files::snapshot_path(&dir, 2);
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[record::HEADER_LEN + 5] ^= 0x01;
        std::fs::write(&newest, &bytes).unwrap();

        let mut seen = Vec::new();
        let mut store = open(&dir, FsyncPolicy::Batch, &mut seen);
        assert_eq!(
            seen,
            [0, 1, 2, 3, 4],
            "fell back to snapshot 1 and logs 1, 2"
        );
        store.compact(batch(0..5));
        store.close();
        let mut seen = Vec::new();
        drop(open(&dir, FsyncPolicy::Batch, &mut seen));
        assert_eq!(
            seen,
            [0, 1, 2, 3, 4],
            "and the compaction after it kept it all"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_store_on_the_same_directory_fails_and_touches_nothing() {
        let dir = tempdir("second");
        let mut seen = Vec::new();
        let mut first = open(&dir, FsyncPolicy::Batch, &mut seen);
        first.compact(Vec::new());
        first.submit(1, batch(0..3));
        wait_durable(&first, 1);
        let snapshot = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            let mut all: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
                .collect();
            all.sort();
            all
        };
        let before = snapshot(&dir);
        let mut replayed = 0;
        let second = Store::open(&dir, FsyncPolicy::Batch, Box::new(|| {}), |_| replayed += 1);
        let err = second.err().expect("the second store is refused");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        assert_eq!(replayed, 0, "nothing was read");
        assert_eq!(snapshot(&dir), before, "nothing was changed");
        first.submit(2, batch(3..4));
        wait_durable(&first, 2);
        first.close();
        let mut seen = Vec::new();
        drop(open(&dir, FsyncPolicy::Batch, &mut seen));
        assert_eq!(seen, [0, 1, 2, 3]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failing_writes_hold_batches_and_lose_nothing_when_the_disk_recovers() {
        let dir = tempdir("failing");
        let (mut store, calls) = open_counting_wakeups(&dir);
        store.compact(Vec::new());
        store.wait_idle();
        store.fail_writes(true);
        let mut submitted = 0;
        for seq in 1..=3 {
            let b = batch(seq * 10..seq * 10 + 5);
            submitted += b.len() as u64;
            store.submit(seq, b);
        }
        store.wait_idle();
        // The writer tried and failed: nothing durable, every byte still counted as queued
        // (what the loop's back-pressure looks at).
        assert_eq!(store.durable(), 0);
        assert_eq!(store.queued_bytes(), submitted);
        let woken = calls.load(Ordering::SeqCst);
        store.fail_writes(false);
        // Retried without a new batch arriving.
        wait_durable(&store, 3);
        assert_eq!(store.queued_bytes(), 0);
        assert!(calls.load(Ordering::SeqCst) > woken, "the loop was woken");
        store.close();
        let mut seen = Vec::new();
        drop(open(&dir, FsyncPolicy::Batch, &mut seen));
        let expected: Vec<u64> = (1..=3).flat_map(|s| s * 10..s * 10 + 5).collect();
        assert_eq!(seen, expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn written_batches_are_located_and_compaction_keeps_the_files_queues_point_into() {
        let dir = tempdir("keep");
        let mut seen = Vec::new();
        let mut store = open(&dir, FsyncPolicy::Batch, &mut seen);
        store.compact(Vec::new());
        store.submit(1, batch(0..3));
        store.submit(2, batch(3..4));
        wait_durable(&store, 2);
        let mut located = Vec::new();
        store.take_located(&mut located);
        assert_eq!(located.iter().map(|l| l.0).collect::<Vec<_>>(), [1, 2]);
        let mut reader = store.reader();
        let id_at = |reader: &mut Reader, at| {
            let (payload, _) = reader.frame(at).expect("readable");
            match record::decode_payload(payload) {
                Ok(Record::Message { id, .. }) => id,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(id_at(&mut reader, located[0].1), 0);
        assert_eq!(id_at(&mut reader, located[1].1), 3);
        let log1 = files::log_path(&dir, 1);
        let key = located[0].1.file_key();
        for _ in 0..3 {
            store.compact_keeping(batch(10..11), vec![key]);
            store.wait_idle();
        }
        assert!(log1.exists(), "kept while a queue points into it");
        assert_eq!(id_at(&mut Reader::new(dir.clone()), located[1].1), 3);
        // No longer named: kept one more compaction (the fallback snapshot names it).
        store.compact(batch(10..11));
        store.wait_idle();
        assert!(log1.exists());
        store.compact(batch(10..11));
        store.wait_idle();
        assert!(!log1.exists());
        store.close();
        // Recovery replays the newest snapshot and its log, not the kept old files.
        let mut seen = Vec::new();
        drop(open(&dir, FsyncPolicy::Batch, &mut seen));
        assert_eq!(seen, [10]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_that_could_not_be_created_at_start_is_created_by_the_next_append() {
        // A full disk at start-up: the first compaction cannot create the new log. Before,
        // no log was ever opened again and acknowledgements were held for good.
        let dir = tempdir("nolog");
        let mut seen = Vec::new();
        let mut store = open(&dir, FsyncPolicy::Batch, &mut seen);
        store.compact(Vec::new());
        store.close();
        let mut store = open(&dir, FsyncPolicy::Batch, &mut seen);
        store.fail_writes(true);
        store.compact(Vec::new());
        store.wait_idle();
        store.submit(1, batch(0..2));
        store.wait_idle();
        assert_eq!(store.durable(), 0);
        store.fail_writes(false);
        wait_durable(&store, 1);
        store.close();
        let mut seen = Vec::new();
        drop(open(&dir, FsyncPolicy::Batch, &mut seen));
        assert_eq!(seen, [0, 1]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
