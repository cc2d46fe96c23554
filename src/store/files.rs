//! The data directory: which files exist, reading them back after a crash, and writing a
//! snapshot atomically.
//!
//! Layout: `wrenmq-<N>.snap` holds the whole state as of the moment log `wrenmq-<N>.log`
//! was started; `wrenmq-<N>.log` holds the changes after that. Recovery loads the newest
//! readable snapshot `S` and replays every log numbered `S` or more, in order; with no
//! snapshot it replays every log. A snapshot is written to `*.tmp`, fsynced, renamed and the
//! directory fsynced, so a crash leaves either the old or the new snapshot, never half of
//! one; older files are deleted only after that.
//!
//! Damage policy: a log whose tail is torn or corrupt (a power cut mid-write) is truncated
//! at its last complete record, with a log line saying how many bytes were dropped. A
//! file that cannot be read at all (bad header, unknown version, a corrupt snapshot) is
//! renamed to `*.corrupt-<unix time>` and recovery goes on with what remains. The broker
//! never refuses to start because of its data files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{info, warn};

use super::record::{self, decode_payload, FileKind, Frame, Record};

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
    /// Records whose payload could not be decoded (skipped).
    pub bad_records: u64,
    /// Bytes cut from torn or corrupt log tails.
    pub truncated_bytes: u64,
    /// Files renamed to `*.corrupt-*`.
    pub moved_aside: Vec<PathBuf>,
    /// Index of the snapshot loaded, if any.
    pub snapshot: Option<u64>,
    /// Highest file index seen (the next log gets a higher one).
    pub last_index: u64,
}

pub fn log_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("wrenmq-{index}.log"))
}

pub fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("wrenmq-{index}.snap"))
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

/// Renames a damaged file out of the way; returns the new path.
fn move_aside(path: &Path, why: &str) -> Option<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".corrupt-{secs}"));
    let target = PathBuf::from(target);
    match fs::rename(path, &target) {
        Ok(()) => {
            warn!(
                "{}: {why}; moved aside to {}",
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

/// Reads every frame of a file. Returns the records' count and the offset just past the last
/// complete record, or `Err` if the header is unusable.
fn scan(
    bytes: &[u8],
    kind: FileKind,
    mut apply: impl FnMut(Record<'_>),
) -> Result<(u64, u64, usize), String> {
    record::check_header(bytes, kind)?;
    let mut at = record::HEADER_LEN;
    let (mut good, mut bad) = (0u64, 0u64);
    while at < bytes.len() {
        match record::read_frame(&bytes[at..]) {
            Frame::Complete { payload, len } => {
                match decode_payload(payload) {
                    Ok(r) => {
                        apply(r);
                        good += 1;
                    }
                    // A frame whose CRC matches but that this build cannot read: skip it.
                    Err(_) => bad += 1,
                }
                at += len;
            }
            Frame::Torn | Frame::Corrupt => break,
        }
    }
    Ok((good, bad, at))
}

/// Replays the directory's state into `apply`, repairing what it must. The directory is
/// created if missing.
pub fn recover(dir: &Path, mut apply: impl FnMut(Record<'_>)) -> io::Result<RecoveryReport> {
    fs::create_dir_all(dir)?;
    let mut report = RecoveryReport::default();
    // Leftovers of an interrupted snapshot write.
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            let _ = fs::remove_file(&path);
        }
    }
    let files = list(dir)?;
    report.last_index = files.iter().map(|f| f.index).max().unwrap_or(0);

    // The newest snapshot that reads completely. A snapshot is all or nothing: it was
    // fsynced before being renamed into place, so any damage means the medium lied.
    let mut start = None;
    for f in files.iter().rev().filter(|f| f.is_snapshot) {
        let bytes = fs::read(&f.path)?;
        match scan(&bytes, FileKind::Snapshot, |_| {}) {
            Ok((_, _, end)) if end == bytes.len() => {
                // Valid: now replay it for real.
                let (good, bad, _) =
                    scan(&bytes, FileKind::Snapshot, &mut apply).unwrap_or((0, 0, 0));
                report.records += good;
                report.bad_records += bad;
                start = Some(f.index);
                break;
            }
            Ok(_) => {
                if let Some(p) = move_aside(&f.path, "snapshot is damaged") {
                    report.moved_aside.push(p);
                }
            }
            Err(why) => {
                if let Some(p) = move_aside(&f.path, &why) {
                    report.moved_aside.push(p);
                }
            }
        }
    }
    report.snapshot = start;

    for f in files
        .iter()
        .filter(|f| !f.is_snapshot && start.is_none_or(|s| f.index >= s))
    {
        let bytes = fs::read(&f.path)?;
        match scan(&bytes, FileKind::Log, &mut apply) {
            Ok((good, bad, end)) => {
                report.records += good;
                report.bad_records += bad;
                if end < bytes.len() {
                    let cut = (bytes.len() - end) as u64;
                    warn!(
                        "{}: torn or corrupt tail, truncating {cut} bytes after the last complete record",
                        f.path.display()
                    );
                    let file = OpenOptions::new().write(true).open(&f.path)?;
                    file.set_len(end as u64)?;
                    file.sync_all()?;
                    report.truncated_bytes += cut;
                }
            }
            Err(why) => {
                if let Some(p) = move_aside(&f.path, &why) {
                    report.moved_aside.push(p);
                }
            }
        }
    }
    if report.records > 0 || !report.moved_aside.is_empty() {
        info!(
            "recovered {} records from {} (snapshot {:?}, {} bytes truncated, {} files moved aside)",
            report.records,
            dir.display(),
            report.snapshot,
            report.truncated_bytes,
            report.moved_aside.len()
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
            .open(&tmp)?;
        file.write_all(&record::header(FileKind::Snapshot))?;
        file.write_all(records)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)
}

/// Deletes data files numbered below `index` (after snapshot `index` is durable).
pub fn remove_older(dir: &Path, index: u64) -> io::Result<()> {
    for f in list(dir)? {
        if f.index < index {
            fs::remove_file(&f.path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wrenmq-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn records(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
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

    #[test]
    fn torn_log_tail_is_truncated_at_every_offset() {
        let body = records(4);
        let full_len = record::HEADER_LEN + body.len();
        let frame = body.len() / 4;
        for cut in (full_len - 2 * frame)..=full_len {
            let dir = tempdir(&format!("torn-{cut}"));
            let mut bytes = record::header(FileKind::Log).to_vec();
            bytes.extend_from_slice(&body);
            bytes.truncate(cut);
            fs::write(log_path(&dir, 1), &bytes).unwrap();
            let (seen, report) = ids(&dir);
            let complete = (cut - record::HEADER_LEN) / frame;
            assert_eq!(
                seen,
                (0..complete as u64).collect::<Vec<_>>(),
                "cut at {cut}"
            );
            let expected_len = record::HEADER_LEN + complete * frame;
            assert_eq!(
                fs::metadata(log_path(&dir, 1)).unwrap().len() as usize,
                expected_len
            );
            assert_eq!(report.truncated_bytes as usize, cut - expected_len);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn flipped_byte_keeps_the_records_before_it() {
        let body = records(4);
        let frame = body.len() / 4;
        let dir = tempdir("flip");
        let mut bytes = record::header(FileKind::Log).to_vec();
        bytes.extend_from_slice(&body);
        let third = record::HEADER_LEN + 2 * frame + 10;
        bytes[third] ^= 0xFF;
        fs::write(log_path(&dir, 1), &bytes).unwrap();
        let (seen, _) = ids(&dir);
        assert_eq!(seen, vec![0, 1]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_files_are_moved_aside_and_snapshot_plus_later_logs_replayed() {
        let dir = tempdir("aside");
        fs::write(log_path(&dir, 1), b"not a log at all").unwrap();
        write_snapshot(&dir, 2, &records(2)).unwrap();
        let mut log = record::header(FileKind::Log).to_vec();
        Record::Message {
            id: 9,
            qos: 0,
            retain: false,
            topic: "x",
            payload: b"",
        }
        .encode(&mut log);
        fs::write(log_path(&dir, 2), &log).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(
            seen,
            vec![0, 1, 9],
            "log 1 is older than snapshot 2 and is not replayed"
        );
        assert_eq!(report.snapshot, Some(2));
        // A corrupt newest snapshot falls back to the previous one.
        let mut bad = fs::read(snapshot_path(&dir, 2)).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        fs::write(snapshot_path(&dir, 3), &bad).unwrap();
        let (seen, report) = ids(&dir);
        assert_eq!(seen, vec![0, 1, 9]);
        assert_eq!(report.moved_aside.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
