//! Logger set-up: `env_logger` on stderr, stdout, a file or syslog, level from `-v` or the
//! config file's `log_type`, overridden by `RUST_LOG`.
//!
//! Lines look like Mosquitto's, so that tools written for its logs keep working:
//! `1796369456: New connection from 127.0.0.1:51082 on port 1883.` — Unix seconds (or
//! `log_timestamp_format`, a strftime subset, in UTC), a colon, the message; no level or
//! module names (`log_timestamp false` drops the time stamp). Under systemd, when stderr
//! (or stdout) is the journal (`$JOURNAL_STREAM` names it), lines carry no time stamp but a
//! `<N>` priority prefix instead, which journald turns into the entry's priority
//! (`journalctl -p warning` works). `log_dest syslog` sends each line as one datagram to
//! `/dev/log` (facility daemon, tag `wrenmq`); without `/dev/log` the broker warns and
//! logs to stderr.
//!
//! A `log_dest file` is opened in append mode (created 0640: log lines name clients and
//! users) before privileges are dropped, and [`LogFile::reopen`] opens the path again on
//! SIGHUP so that logrotate can move the old file away. If the path cannot be opened at
//! start-up the broker logs to stderr with a warning instead of refusing to start:
//! under systemd stderr goes to the journal, and a missing `/var/log/mosquitto` should not
//! keep a gateway's broker down.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use log::{Level, LevelFilter};

use crate::config::LogDest;

/// The level for a number of `-v` flags: info, debug, then trace.
pub fn level(verbosity: u8) -> LevelFilter {
    match verbosity {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger. A non-empty `RUST_LOG` (env_logger syntax, e.g.
/// `wrenmq=debug,mio=info`) replaces the `-v` level. Calling it twice is harmless.
pub fn init(verbosity: u8) {
    init_with(level(verbosity), &LogDest::Stderr);
}

/// How log lines look (`log_timestamp`, `log_timestamp_format`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStyle {
    pub timestamp: bool,
    /// strftime-style; `None` = Unix seconds, as Mosquitto.
    pub timestamp_format: Option<String>,
    /// `log_facility`: syslog local0-local7; `None` = daemon.
    pub facility: Option<u8>,
}

impl Default for LogStyle {
    fn default() -> LogStyle {
        LogStyle {
            timestamp: true,
            timestamp_format: None,
            facility: None,
        }
    }
}

/// How a line is framed for its destination.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `STAMP: message`, Mosquitto's format.
    Plain,
    /// `<N>message`: stderr/stdout is the systemd journal.
    Journal,
    /// `<N>wrenmq[pid]: message`, one datagram per line.
    Syslog,
}

/// Installs the logger with an explicit level and destination (`log_dest none` turns
/// logging off). `RUST_LOG` still wins over the level. Returns the log file, when lines
/// go to one, for [`LogFile::reopen`].
pub fn init_with(level: LevelFilter, dest: &LogDest) -> Option<LogFile> {
    init_styled(level, dest, &LogStyle::default())
}

/// [`init_with`] with the time stamp settings.
pub fn init_styled(level: LevelFilter, dest: &LogDest, style: &LogStyle) -> Option<LogFile> {
    let mut builder = env_logger::Builder::new();
    let level = if *dest == LogDest::None {
        LevelFilter::Off
    } else {
        level
    };
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        if !spec.trim().is_empty() {
            builder.parse_filters(&spec);
        }
    }
    let mut file = None;
    let mut failed = None;
    let mut framing = Framing::Plain;
    builder.target(match dest {
        LogDest::Stdout => {
            if is_journal(io::stdout().as_fd()) {
                framing = Framing::Journal;
            }
            env_logger::Target::Stdout
        }
        LogDest::Stderr | LogDest::None => {
            if is_journal(io::stderr().as_fd()) {
                framing = Framing::Journal;
            }
            env_logger::Target::Stderr
        }
        LogDest::Syslog => match Syslog::connect() {
            Ok(s) => {
                framing = Framing::Syslog;
                env_logger::Target::Pipe(Box::new(s))
            }
            Err(e) => {
                failed = Some(format!("log_dest syslog: /dev/log: {e}; logging to stderr"));
                env_logger::Target::Stderr
            }
        },
        LogDest::File(path) => match LogFile::open(path) {
            Ok(f) => {
                file = Some(f.clone());
                env_logger::Target::Pipe(Box::new(f))
            }
            Err(e) => {
                failed = Some(format!(
                    "log_dest file {}: {e}; logging to stderr",
                    path.display()
                ));
                env_logger::Target::Stderr
            }
        },
    });
    let style = style.clone();
    let pid = std::process::id();
    // Facility daemon (3), or local0-local7 (16-23) from `log_facility`.
    let facility = style.facility.map_or(3, |n| 16 + n.min(7));
    builder.format(move |buf, record| {
        let args = record.args();
        match framing {
            Framing::Journal => writeln!(buf, "<{}>{args}", priority(record.level())),
            Framing::Syslog => {
                let pri = facility * 8 + priority(record.level());
                writeln!(buf, "<{pri}>wrenmq[{pid}]: {args}")
            }
            Framing::Plain if style.timestamp => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                match &style.timestamp_format {
                    None => writeln!(buf, "{secs}: {args}"),
                    Some(f) => writeln!(buf, "{}: {args}", strftime_utc(f, secs)),
                }
            }
            Framing::Plain => writeln!(buf, "{args}"),
        }
    });
    // Fails only if a logger is already installed, which then stays in charge.
    let _ = builder.try_init();
    if let Some(why) = failed {
        log::warn!("{why}");
    }
    file
}

/// The syslog/journald priority of a level (error 3 ... debug 7).
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether `fd` is the stream systemd connected to the journal: `$JOURNAL_STREAM` holds
/// its `device:inode` (systemd.exec(5)).
fn is_journal(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some(meta) = fd
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| File::from(fd).metadata().ok())
    else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}

/// Formats `secs` (Unix time, UTC) with a strftime subset: `%Y %m %d %H %M %S %y %j %F
/// %T %s %z %Z %%`; other conversions are copied as they are.
pub fn strftime_utc(format: &str, secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days);
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write_fmt(&mut out, format_args!("{y}")),
            Some('y') => write_fmt(&mut out, format_args!("{:02}", y % 100)),
            Some('m') => write_fmt(&mut out, format_args!("{mo:02}")),
            Some('d') => write_fmt(&mut out, format_args!("{d:02}")),
            Some('H') => write_fmt(&mut out, format_args!("{h:02}")),
            Some('M') => write_fmt(&mut out, format_args!("{mi:02}")),
            Some('S') => write_fmt(&mut out, format_args!("{s:02}")),
            Some('j') => write_fmt(&mut out, format_args!("{yday:03}")),
            Some('F') => write_fmt(&mut out, format_args!("{y}-{mo:02}-{d:02}")),
            Some('T') => write_fmt(&mut out, format_args!("{h:02}:{mi:02}:{s:02}")),
            Some('s') => write_fmt(&mut out, format_args!("{secs}")),
            Some('z') => write_fmt(&mut out, format_args!("+0000")),
            Some('Z') => write_fmt(&mut out, format_args!("UTC")),
            Some('%') => write_fmt(&mut out, format_args!("%")),
            Some(other) => write_fmt(&mut out, format_args!("%{other}")),
            None => write_fmt(&mut out, format_args!("%")),
        };
    }
    out
}

fn write_fmt(out: &mut String, args: std::fmt::Arguments<'_>) -> std::fmt::Result {
    std::fmt::Write::write_fmt(out, args)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01, for years from 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// `log_dest syslog`: each line one datagram to `/dev/log`, without its newline.
struct Syslog {
    socket: UnixDatagram,
    line: Vec<u8>,
}

impl Syslog {
    fn connect() -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect("/dev/log")?;
        Ok(Syslog {
            socket,
            line: Vec::new(),
        })
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            // A full syslog (or a restarted journald) loses the line rather than the broker.
            let _ = self.socket.send(&self.line[..end]);
            self.line.drain(..=end);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A log file shared by the logger and whoever reopens it.
#[derive(Clone, Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens `path` for appending, creating it 0640.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    /// Opens the path again (after logrotate moved the file away) and writes there from
    /// now on. On failure (e.g. no longer permitted after dropping privileges) the old
    /// file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let new = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = new;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A poisoned lock only means a panic elsewhere while logging; the file is fine.
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_sends_one_datagram_per_line_without_the_newline() {
        let (socket, peer) = UnixDatagram::pair().unwrap();
        let mut s = Syslog {
            socket,
            line: Vec::new(),
        };
        s.write_all(b"<30>wrenmq[1]: one\n<27>wrenmq[1]: tw")
            .unwrap();
        s.write_all(b"o\n").unwrap();
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<30>wrenmq[1]: one");
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<27>wrenmq[1]: two");
    }

    #[test]
    fn timestamps_format_in_utc() {
        // 2026-12-04 07:34:44 UTC, a Friday, day 338.
        let t = 1_796_369_684;
        assert_eq!(strftime_utc("%F %T", t), "2026-12-04 07:34:44");
        assert_eq!(
            strftime_utc("%Y-%m-%dT%H:%M:%S%z", t),
            "2026-12-04T07:34:44+0000"
        );
        assert_eq!(strftime_utc("%j %y %s %% %Q", t), "338 26 1796369684 % %Q");
        assert_eq!(strftime_utc("%F", 0), "1970-01-01");
        assert_eq!(strftime_utc("%F", 951_782_400), "2000-02-29");
        assert_eq!(strftime_utc("trailing %", 0), "trailing %");
    }

    #[test]
    fn v_flags_raise_the_level() {
        assert_eq!(level(0), LevelFilter::Info);
        assert_eq!(level(1), LevelFilter::Debug);
        assert_eq!(level(2), LevelFilter::Trace);
        assert_eq!(level(9), LevelFilter::Trace);
    }

    #[test]
    fn log_file_appends_and_reopens_after_a_move() {
        let dir = std::env::temp_dir().join(format!("wrenmq-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = LogFile::open(&path).unwrap();
        f.write_all(b"one\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\none\n");
        // logrotate: move away, then SIGHUP.
        let rotated = dir.join("w.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        f.write_all(b"two\n").unwrap();
        f.reopen().unwrap();
        f.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "old\none\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        // A reopen that fails keeps the current file.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(f.reopen().is_err());
        assert!(f.write_all(b"four\n").is_ok());
    }
}
