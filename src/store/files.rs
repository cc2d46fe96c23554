//! The data directory: which files exist, the lock that keeps a second broker out,
//! reading the files back after a crash, and writing a snapshot atomically.
//!
//! Layout: `wrenmq-<N>.snap` holds the whole state as of the moment log `wrenmq-<N>.log`
//! was started; `wrenmq-<N>.log` holds the changes after that. `wrenmq.lock` is held
//! (`flock`) by the running broker and names its PID; it is left in place on exit (the
//! lock, not the file, is what counts). Files are created 0600, the directory 0700: they
//! hold every retained and queued message.
//!
//! Recovery starts from the newest intact snapshot `S` and replays every log numbered `S`
//! or more, in order; with no snapshot it replays every log. Files are read in bounded
//! chunks (`scan.rs`), so recovery needs memory for the largest record, not the largest
//! file; damaged files are copied aside the same way. A snapshot is written to
//! `*.tmp`, fsynced, renamed, the directory fsynced, and read back; only a snapshot that
//! read back intact lets compaction delete files, and then only those older than the
//! previous intact snapshot: the previous generation (snapshot and log) stays, so that a
//! snapshot damaged later (the medium lied) falls back to it without losing anything.
//! Older files that on-disk queues still point into (named by the broker at each
//! compaction, see `reader.rs`) are kept too; recovery never replays them, it reads
//! single records from them by position when a queue is drained. (With no snapshot left
//! at all, recovery replays every log, kept ones included, as before.)
//!
//! Damage policy — never delete or truncate the only copy of anything:
//! - A frame that fails its CRC is skipped and reading resumes at the next valid frame
//!   (v2 files; a v1 file stops at its first bad frame). The records around it are kept.
//! - A torn tail (an incomplete last frame, or zeros: a write a power cut interrupted) is
//!   ignored with a log line; those bytes were never acknowledged. Recovery never appends
//!   to an old log (the next log gets a new number), so nothing needs truncating.
//! - A file with any other damage is copied to `*.corrupt-<unix time>` and stays in
//!   place until compaction retires it, with a log line saying what was salvaged and what
//!   was not. A file that cannot be read at all (bad header, unknown version) is renamed
//!   to `*.corrupt-<unix time>`.
//! - A damaged newest snapshot: recovery falls back to the previous intact one and the
//!   logs after it; when there is none, it salvages the damaged snapshot's readable
//!   records and replays the logs after it.
//!
//! The broker never refuses to start because of its data files, only when another
//! process holds the directory.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{info, warn};

use super::reader::Location;
use super::record::{self, FileKind, Record};
use super::scan::{self, Scan, ScanError, CHUNK};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "wrenmq.lock";
/// Data files are readable by the broker's user only: they hold every message it keeps.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// One data file found in the directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DataFile {
    pub index: u64,
    pub is_snapshot: bool,
    pub path: PathBuf,
}

/// What recovery found and did, for the startup log line and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records handed to the broker.
    pub records: u64,
    /// Records whose CRC matched but whose payload this build cannot decode (skipped).
    pub bad_records: u64,
    /// Damaged stretches skipped (each may have held one or more records).
    pub damaged: u64,
    /// Bytes of damaged stretches, whose records are lost.
    pub lost_bytes: u64,
    /// Bytes of torn tails (writes interrupted by a crash), ignored.
    pub torn_bytes: u64,
    /// Copies of damaged files and unreadable files renamed aside (`*.corrupt-*`).
    pub set_aside: Vec<PathBuf>,
    /// Index of the intact snapshot recovery started from, if any.
    pub snapshot: Option<u64>,
    /// Index of a damaged snapshot whose readable records were used because no intact
    /// snapshot was left.
    pub salvaged_snapshot: Option<u64>,
    /// Highest file index seen (the next log gets a higher one).
    pub last_index: u64,
}

/// Exclusive use of a data directory, held while this value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

pub fn log_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("wrenmq-{index}.log"))
}

pub fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("wrenmq-{index}.snap"))
}

/// Creates the data directory (and missing parents) 0700 if it does not exist. An
/// existing directory keeps its mode: the administrator chose it.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Takes the directory's lock (creating the directory if needed) and writes our PID into
/// the lock file. Fails at once, touching nothing else, when another process holds it; the
/// error names that process's PID.
pub fn lock(dir: &Path) -> io::Result<DirLock> {
    create_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: until we hold the lock, the PID in it is the holder's.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = Read::take(&file, 32).read_to_string(&mut holder);
            let pid = holder.trim();
            let pid = if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                "unknown"
            } else {
                pid
            };
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "in use by another wrenmq process (pid {pid}, lock {}); stop it first or use another directory",
                    path.display()
                ),
            ));
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(DirLock { _file: file })
}

/// Data files in `dir`, sorted by index (snapshots before logs of the same index).
pub fn list(dir: &Path) -> io::Result<Vec<DataFile>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("wrenmq-") else {
            continue;
        };
        let (num, snapshot) = if let Some(n) = rest.strip_suffix(".snap") {
            (n, true)
        } else if let Some(n) = rest.strip_suffix(".log") {
            (n, false)
        } else {
            continue;
        };
        if let Ok(index) = num.parse::<u64>() {
            files.push(DataFile {
                index,
                is_snapshot: snapshot,
                path,
            });
        }
    }
    files.sort_by_key(|f| (f.index, !f.is_snapshot));
    Ok(files)
}

/// `path` with `.corrupt-<unix time>` appended.
fn corrupt_name(path: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".corrupt-{secs}"));
    PathBuf::from(target)
}

/// Renames a file nothing can be read from out of the way; returns the new path.
fn move_aside(path: &Path, why: &str) -> Option<PathBuf> {
    let target = corrupt_name(path);
    match fs::rename(path, &target) {
        Ok(()) => {
            warn!(
                "{}: {why}; nothing in it is readable; moved aside to {}",
                path.display(),
                target.display()
            );
            Some(target)
        }
        Err(e) => {
            warn!(
                "{}: {why}; could not move it aside ({e}), ignoring it",
                path.display()
            );
            None
        }
    }
}

/// Whether two files have the same contents, compared a chunk at a time.
fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// Keeps a copy of a damaged file next to it, unless an earlier start already kept an
/// identical one; returns the copy's path. The original stays in place: recovery may
/// still need it if this start is interrupted. Copied in chunks, never held whole.
fn keep_copy(path: &Path) -> io::Result<PathBuf> {
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        let prefix = format!("{name}.corrupt-");
        for entry in fs::read_dir(dir)?.flatten() {
            let same_name = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix));
            if same_name && same_contents(path, &entry.path()).unwrap_or(false) {
                return Ok(entry.path());
            }
        }
    }
    let target = corrupt_name(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&target)?;
    io::copy(&mut File::open(path)?, &mut file)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(target)
}

/// Scans the file at `path` in bounded chunks (see `scan`).
fn scan_file(
    path: &Path,
    kind: FileKind,
    apply: impl FnMut(Record<'_>, u64),
) -> io::Result<Result<Scan, String>> {
    match scan::scan_at(File::open(path)?, kind, CHUNK, apply) {
        Ok(s) => Ok(Ok(s)),
        Err(ScanError::Header(why)) => Ok(Err(why)),
        Err(ScanError::Io(e)) => Err(e),
    }
}

impl RecoveryReport {
    fn add(&mut self, s: &Scan) {
        self.records += s.records;
        self.bad_records += s.undecodable;
        self.damaged += s.damaged;
        self.lost_bytes += s.lost_bytes;
        self.torn_bytes += s.torn_bytes;
    }

    /// Keeps a copy of a damaged file and says what was salvaged from it.
    fn damaged_file(&mut self, path: &Path, s: &Scan, used: &str) {
        let copy = match keep_copy(path) {
            Ok(copy) => {
                let shown = copy.display().to_string();
                self.set_aside.push(copy);
                format!("a copy is kept at {shown}")
            }
            Err(e) => format!("keeping a copy failed ({e}); the file is left in place"),
        };
        warn!(
            "{}: {} damaged stretch(es), {} bytes unreadable; {} records readable{used}; {copy}",
            path.display(),
            s.damaged,
            s.lost_bytes,
            s.records
        );
    }
}

/// Replays the directory's state into `apply`, keeping a copy of whatever is damaged. The
/// directory is created if missing. The caller holds the directory's [`lock`].
pub fn recover(dir: &Path, mut apply: impl FnMut(Record<'_>)) -> io::Result<RecoveryReport> {
    recover_at(dir, |r, _| apply(r))
}

/// [`recover`], handing each record over with where its frame is (`None` only for a
/// file too large to address, see [`Location`]).
pub fn recover_at(
    dir: &Path,
    mut apply: impl FnMut(Record<'_>, Option<Location>),
) -> io::Result<RecoveryReport> {
    create_dir(dir)?;
    let mut report = RecoveryReport::default();
    // Leftovers of an interrupted snapshot write: never the only copy (the rename is what
    // makes a snapshot count, and the files before it are deleted only after it).
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            let _ = fs::remove_file(&path);
        }
    }
    let files = list(dir)?;
    report.last_index = files.iter().map(|f| f.index).max().unwrap_or(0);

    // The newest intact snapshot. A damaged newer one is copied aside; the newest
    // readable damaged one is remembered for salvage in case no intact one is left.
    // Each is read twice (checked, then replayed), never held in memory whole.
    let mut base: Option<&DataFile> = None;
    let mut salvage: Option<&DataFile> = None;
    let mut damaged_newer = Vec::new();
    for f in files.iter().rev().filter(|f| f.is_snapshot) {
        match scan_file(&f.path, FileKind::Snapshot, |_, _| {})? {
            Ok(s) if s.intact() => {
                base = Some(f);
                break;
            }
            Ok(s) => {
                report.damaged_file(&f.path, &s, " (not used yet)");
                damaged_newer.push(f.index);
                if salvage.is_none() {
                    salvage = Some(f);
                }
            }
            Err(why) => {
                if let Some(p) = move_aside(&f.path, &why) {
                    report.set_aside.push(p);
                }
            }
        }
    }
    let start = if let Some(&DataFile {
        index, ref path, ..
    }) = base
    {
        if !damaged_newer.is_empty() {
            let damaged: Vec<String> = damaged_newer.iter().map(u64::to_string).collect();
            warn!(
                "snapshot(s) {} damaged: falling back to snapshot {index} and the logs after it",
                damaged.join(", ")
            );
        }
        // Intact when checked above: a header error now cannot happen.
        let s = scan_file(path, FileKind::Snapshot, |r, at| {
            apply(r, Location::new(index, true, at))
        })?
        .unwrap_or_default();
        report.add(&s);
        report.snapshot = Some(index);
        Some(index)
    } else if let Some(&DataFile {
        index, ref path, ..
    }) = salvage
    {
        let s = scan_file(path, FileKind::Snapshot, |r, at| {
            apply(r, Location::new(index, true, at))
        })?
        .unwrap_or_default();
        warn!(
            "no intact snapshot left: salvaged {} records of damaged snapshot {index} ({} bytes lost) and replaying the logs after it",
            s.records, s.lost_bytes
        );
        report.add(&s);
        report.salvaged_snapshot = Some(index);
        Some(index)
    } else {
        None
    };

    for f in files
        .iter()
        .filter(|f| !f.is_snapshot && start.is_none_or(|s| f.index >= s))
    {
        let index = f.index;
        match scan_file(&f.path, FileKind::Log, |r, at| {
            apply(r, Location::new(index, false, at))
        })? {
            Ok(s) => {
                report.add(&s);
                if s.damaged > 0 {
                    report.damaged_file(&f.path, &s, " and replayed");
                }
                if s.torn_bytes > 0 {
                    warn!(
                        "{}: torn tail of {} bytes (a write interrupted by a crash) ignored",
                        f.path.display(),
                        s.torn_bytes
                    );
                }
            }
            Err(why) => {
                if let Some(p) = move_aside(&f.path, &why) {
                    report.set_aside.push(p);
                }
            }
        }
    }
    if report.records > 0 || !report.set_aside.is_empty() || report.torn_bytes > 0 {
        info!(
            "recovered {} records from {} ({}, {} damaged stretches with {} bytes lost, {} torn bytes ignored, {} files set aside)",
            report.records,
            dir.display(),
            report
                .snapshot
                .or(report.salvaged_snapshot)
                .map_or_else(|| "no snapshot".to_string(), |i| format!("snapshot {i}")),
            report.damaged,
            report.lost_bytes,
            report.torn_bytes,
            report.set_aside.len()
        );
    }
    Ok(report)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates log `index` with its header, durably.
pub fn create_log(dir: &Path, index: u64) -> io::Result<File> {
    let path = log_path(dir, index);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&path)?;
    file.write_all(&record::header(FileKind::Log))?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Writes snapshot `index` atomically: tmp file, fsync, rename, directory fsync.
pub fn write_snapshot(dir: &Path, index: u64, records: &[u8]) -> io::Result<()> {
    let final_path = snapshot_path(dir, index);
    let tmp = final_path.with_extension("snap.tmp");
    {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(&record::header(FileKind::Snapshot))?;
        file.write_all(records)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)
}

/// Reads snapshot `index` back and checks that every frame is intact: only then may the
/// files it replaces go.
pub fn verify_snapshot(dir: &Path, index: u64) -> Result<(), String> {
    let s = scan_file(&snapshot_path(dir, index), FileKind::Snapshot, |_, _| {})
        .map_err(|e| e.to_string())??;
    if s.intact() && s.undecodable == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} damaged stretch(es), {} torn bytes",
            s.damaged, s.torn_bytes
        ))
    }
}

/// Deletes data files numbered below `index` except those `keep` names (files that
/// on-disk queues still read from), oldest first, stopping at the first failure: a file
/// that is left never depends on one that is gone.
pub fn remove_older(dir: &Path, index: u64, keep: impl Fn(&DataFile) -> bool) -> io::Result<()> {
    for f in list(dir)? {
        if f.index < index && !keep(&f) {
            fs::remove_file(&f.path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::Frame;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wrenmq-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn records(ids: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in ids {
            Record::Message {
                id: i,
                qos: 1,
                retain: false,
                topic: "t",
                payload: &[i as u8; 5],
            }
            .encode(&mut out);
        }
        out
    }

    fn file(kind: FileKind, body: &[u8]) -> Vec<u8> {
        let mut bytes = record::header(kind).to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    fn ids(dir: &Path) -> (Vec<u64>, RecoveryReport) {
        let mut seen = Vec::new();
        let report = recover(dir, |r| {
            if let Record::Message { id, .. } = r {
                seen.push(id)
            }
        })
        .unwrap();
        (seen, report)
    }

    /// The same records in v1 framing (length, CRC of the payload, payload).
    fn as_v1(mut v2: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Frame::Complete { payload, len } = record::read_frame(v2) {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            out.extend_from_slice(payload);
            v2 = &v2[len..];
        }
        out
    }

    #[test]
    fn torn_log_tail_is_ignored_at_every_offset_and_the_file_left_alone() {
        let body = records(0..4);
        let full_len = record::HEADER_LEN + body.len();
        let frame = body.len() / 4;
        for cut in (full_len - 2 * frame)..=full_len {
            let dir = tempdir(&format!("torn-{cut}"));
            let mut bytes = file(FileKind::Log, &body);
            bytes.truncate(cut);
            fs::write(log_path(&dir, 1), &bytes).unwrap();
            let (seen, report) = ids(&dir);
            let complete = (cut - record::HEADER_LEN) / frame;
            assert_eq!(
                seen,
                (0..complete as u64).collect::<Vec<_>>(),
                "cut at {cut}"
            );
            let complete_len = record::HEADER_LEN + complete * frame;
            assert_eq!(report.torn_bytes as usize, cut - complete_len);
            assert_eq!((report.damaged, report.lost_bytes), (0, 0), "cut at {cut}");
            assert!(report.set_aside.is_empty(), "a torn tail is no damage");
            assert_eq!(fs::read(log_path(&dir, 1)).unwrap(), bytes, "not truncated");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let dir = tempdir("zeros");
        let mut bytes = file(FileKind::Log, &records(0..2));
        bytes.extend_from_slice(&[0; 4096]);
        fs::write(log_path(&dir, 1), &bytes).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(seen, [0, 1]);
        assert_eq!((report.torn_bytes, report.damaged), (4096, 0));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bit_flip_mid_log_keeps_the_records_after_it() {
        let body = records(0..6);
        let frame = body.len() / 6;
        // Every byte of the third frame: sync marker, length, CRC and payload.
        for offset in 0..frame {
            let dir = tempdir(&format!("flip-{offset}"));
            let mut bytes = file(FileKind::Log, &body);
            bytes[record::HEADER_LEN + 2 * frame + offset] ^= 0x10;
            fs::write(log_path(&dir, 1), &bytes).unwrap();
            let (seen, report) = ids(&dir);
            assert_eq!(seen, [0, 1, 3, 4, 5], "flip at frame offset {offset}");
            assert_eq!(report.damaged, 1);
            assert_eq!(report.lost_bytes as usize, frame);
            // The damaged file is kept as it is, and a copy of it is set aside.
            assert_eq!(fs::read(log_path(&dir, 1)).unwrap(), bytes);
            assert_eq!(report.set_aside.len(), 1);
            assert_eq!(fs::read(&report.set_aside[0]).unwrap(), bytes);
            // A second start finds the same damage and keeps no second copy.
            let (_, again) = ids(&dir);
            assert_eq!(again.set_aside, report.set_aside);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn damaged_last_record_is_kept_aside_not_dropped_silently() {
        let dir = tempdir("last");
        let mut bytes = file(FileKind::Log, &records(0..3));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(log_path(&dir, 1), &bytes).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(seen, [0, 1]);
        assert_eq!((report.damaged, report.torn_bytes), (1, 0));
        assert_eq!(report.set_aside.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn v1_log_still_reads_and_stops_at_its_first_bad_frame() {
        let body = as_v1(&records(0..4));
        let frame = body.len() / 4;
        let dir = tempdir("v1");
        let mut bytes = file(FileKind::Log, &body);
        bytes[8] = 1; // format version 1
        fs::write(log_path(&dir, 1), &bytes).unwrap();
        assert_eq!(ids(&dir).0, [0, 1, 2, 3]);
        bytes[record::HEADER_LEN + 2 * frame + 10] ^= 0xFF;
        fs::write(log_path(&dir, 1), &bytes).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(seen, [0, 1], "v1 frames have no sync marker to resume at");
        assert_eq!(report.set_aside.len(), 1, "the rest is kept aside");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_newest_snapshot_falls_back_to_the_previous_one_and_its_logs() {
        let dir = tempdir("fallback");
        write_snapshot(&dir, 1, &records(0..2)).unwrap();
        fs::write(log_path(&dir, 1), file(FileKind::Log, &records(2..3))).unwrap();
        write_snapshot(&dir, 2, &records(0..3)).unwrap();
        fs::write(log_path(&dir, 2), file(FileKind::Log, &records(3..4))).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!((seen, report.snapshot), (vec![0, 1, 2, 3], Some(2)));

        let mut bad = fs::read(snapshot_path(&dir, 2)).unwrap();
        bad[record::HEADER_LEN + 20] ^= 1;
        fs::write(snapshot_path(&dir, 2), &bad).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(seen, [0, 1, 2, 3], "nothing lost");
        assert_eq!(report.snapshot, Some(1));
        assert_eq!(report.salvaged_snapshot, None);
        assert_eq!(report.set_aside.len(), 1, "a copy of the damaged snapshot");
        assert_eq!(fs::read(&report.set_aside[0]).unwrap(), bad);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_only_snapshot_is_salvaged_not_replaced_by_its_log_alone() {
        let dir = tempdir("salvage");
        write_snapshot(&dir, 2, &records(0..4)).unwrap();
        fs::write(log_path(&dir, 2), file(FileKind::Log, &records(9..10))).unwrap();
        let mut bad = fs::read(snapshot_path(&dir, 2)).unwrap();
        let frame = (bad.len() - record::HEADER_LEN) / 4;
        bad[record::HEADER_LEN + 2 * frame + 15] ^= 1;
        fs::write(snapshot_path(&dir, 2), &bad).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(seen, [0, 1, 3, 9], "all but the damaged record");
        assert_eq!(report.salvaged_snapshot, Some(2));
        assert_eq!(report.lost_bytes as usize, frame);
        assert_eq!(
            fs::read(snapshot_path(&dir, 2)).unwrap(),
            bad,
            "left in place"
        );
        assert_eq!(report.set_aside.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_files_are_moved_aside_and_snapshot_plus_later_logs_replayed() {
        let dir = tempdir("aside");
        fs::write(log_path(&dir, 1), b"not a log at all").unwrap();
        write_snapshot(&dir, 2, &records(0..2)).unwrap();
        fs::write(log_path(&dir, 2), file(FileKind::Log, &records(9..10))).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(
            seen,
            vec![0, 1, 9],
            "log 1 is older than snapshot 2 and is not replayed"
        );
        assert_eq!(report.snapshot, Some(2));
        fs::write(snapshot_path(&dir, 3), b"WRENMQDB\x63\x00\x02\x00").unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(seen, vec![0, 1, 9], "a newer format version is not read");
        assert_eq!(report.set_aside.len(), 1);
        assert!(!snapshot_path(&dir, 3).exists(), "renamed aside");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn data_files_and_directory_are_private_to_the_broker_user() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempdir("modes");
        let dir = base.join("a/b");
        let _lock = lock(&dir).unwrap();
        create_log(&dir, 1).unwrap();
        write_snapshot(&dir, 1, &records(0..1)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.join("a")), 0o700);
        for f in [
            dir.join(LOCK_FILE),
            log_path(&dir, 1),
            snapshot_path(&dir, 1),
        ] {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_locked_directory_refuses_a_second_holder_and_names_the_first() {
        let dir = tempdir("lock");
        let first = lock(&dir).unwrap();
        let err = lock(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let _again = lock(&dir).expect("free once the holder is gone");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_larger_than_the_read_chunk_recovers_with_frames_across_chunk_boundaries() {
        // 3000 records of 1000-odd bytes: ~3 MB, 50 read chunks, and frames of every
        // alignment against the chunk edges; a damaged frame in the middle and a torn tail.
        let mut body = Vec::new();
        let mut starts = Vec::new();
        for i in 0..3000u64 {
            starts.push(body.len());
            Record::Message {
                id: i,
                qos: 1,
                retain: false,
                topic: "big/log",
                payload: &vec![i as u8; 1000 + (i % 97) as usize],
            }
            .encode(&mut body);
        }
        let mut bytes = file(FileKind::Log, &body);
        bytes[record::HEADER_LEN + starts[1500] + 30] ^= 0x04;
        bytes.truncate(bytes.len() - 7);
        assert!(bytes.len() > 40 * scan::CHUNK);
        let dir = tempdir("chunked");
        fs::write(log_path(&dir, 1), &bytes).unwrap();
        let (seen, report) = ids(&dir);
        let expected: Vec<u64> = (0..2999).filter(|&i| i != 1500).collect();
        assert_eq!(seen, expected);
        assert_eq!(report.damaged, 1);
        assert_eq!(report.lost_bytes as usize, starts[1501] - starts[1500]);
        assert_eq!(report.torn_bytes as usize, body.len() - 7 - starts[2999]);
        // The same with tiny chunks, against the whole-file reader.
        for chunk in [1, 5, 13, 4096] {
            let mut streamed = Vec::new();
            let s = scan::scan(io::Cursor::new(&bytes), FileKind::Log, chunk, |r| {
                streamed.push(format!("{r:?}"))
            })
            .unwrap();
            let mut whole = Vec::new();
            let w =
                scan::scan_slice(&bytes, FileKind::Log, |r| whole.push(format!("{r:?}"))).unwrap();
            assert_eq!((s, &streamed), (w, &whole), "chunk {chunk}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
