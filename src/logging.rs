//! Logger set-up: `env_logger` on stderr, stdout or a file, level from `-v` or the config
//! file's `log_type`, overridden by `RUST_LOG`.
//!
//! A `log_dest file` is opened in append mode (created 0640: log lines name clients and
//! users) before privileges are dropped, and [`LogFile::reopen`] opens the path again on
//! SIGHUP so that logrotate can move the old file away. If the path cannot be opened at
//! start-up the broker logs to stderr with a warning instead of refusing to start:
//! under systemd stderr goes to the journal, and a missing `/var/log/mosquitto` should not
//! keep a gateway's broker down.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use log::LevelFilter;

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

/// Installs the logger with an explicit level and destination (`log_dest none` turns
/// logging off). `RUST_LOG` still wins over the level. Returns the log file, when lines
/// go to one, for [`LogFile::reopen`].
pub fn init_with(level: LevelFilter, dest: &LogDest) -> Option<LogFile> {
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
    builder.target(match dest {
        LogDest::Stdout => env_logger::Target::Stdout,
        LogDest::Stderr | LogDest::None => env_logger::Target::Stderr,
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
    // Fails only if a logger is already installed, which then stays in charge.
    let _ = builder.try_init();
    if let Some(why) = failed {
        log::warn!("{why}");
    }
    file
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
