//! Editing Mosquitto password files (the `wrenmq passwd` command's file side; the format
//! and verification are in [`super::password`]). The edits are pure functions on the
//! file's text; [`read`] and [`write`] add the file system.
//!
//! Writing: a file is replaced atomically. The new text goes to a temporary file beside
//! it with a random name, created exclusively (`O_CREAT|O_EXCL`: a symlink or file an
//! attacker planted under a guessable name is refused, never followed or truncated) and
//! 0600; it takes the old file's mode and, where permitted, its owner and group (so a
//! file root edits for a broker running as `mosquitto` stays readable to it); it is
//! fsynced, renamed over the file, and the directory is fsynced so the rename survives a
//! power cut. A new file is 0600. [`world_readable`] tells whether the result can be read
//! by anyone, which both `wrenmq passwd` and the broker warn about (as Mosquitto 2.0 does).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::password::{format_line, Hash};

/// Why editing a password file failed.
#[derive(Debug)]
pub enum FileError {
    NoSuchUser(String),
    /// The file cannot be read or written.
    Io {
        file: PathBuf,
        error: io::Error,
    },
    /// A line in the file is neither blank, a comment nor `user:...`.
    BadLine {
        file: PathBuf,
        line: usize,
    },
    /// No OS randomness for a salt.
    Random(getrandom::Error),
}

/// `text` with `user`'s line replaced by (or, if absent, appended as) `user:hash`.
pub fn set_user(text: &str, user: &str, hash: &Hash) -> String {
    let new_line = format_line(user, hash);
    let mut out = String::with_capacity(text.len() + new_line.len() + 1);
    let mut found = false;
    for line in text.lines() {
        if line_user(line) == Some(user) {
            if !found {
                out.push_str(&new_line);
                out.push('\n');
                found = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&new_line);
        out.push('\n');
    }
    out
}

/// `text` without `user`'s line.
pub fn delete_user(text: &str, user: &str) -> Result<String, FileError> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for line in text.lines() {
        if line_user(line) == Some(user) {
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if found {
        Ok(out)
    } else {
        Err(FileError::NoSuchUser(user.to_string()))
    }
}

/// `text` with every plain-text password hashed. Lines already hashed are kept as they
/// are (hashing a hash, as `mosquitto_passwd -U` would, locks the user out).
pub fn hash_plaintext(text: &str, file: &Path, iterations: u32) -> Result<String, FileError> {
    let mut out = String::with_capacity(text.len() * 2);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            out.push_str(line);
        } else {
            let Some((user, password)) = line.split_once(':') else {
                return Err(FileError::BadLine {
                    file: file.to_path_buf(),
                    line: i + 1,
                });
            };
            if Hash::parse(password).is_ok() {
                out.push_str(line);
            } else {
                let hash = Hash::new(password.as_bytes(), iterations).map_err(FileError::Random)?;
                out.push_str(&format_line(user, &hash));
            }
        }
        out.push('\n');
    }
    Ok(out)
}

fn line_user(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(u, _)| u)
}

/// Whether anyone on the machine may read `path` (mode `o+r`). Hashes are slow to crack,
/// not impossible: Mosquitto 2.0 warns about such files and plans to refuse them.
pub fn world_readable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o004 != 0)
}

/// The warning both `wrenmq passwd` and the broker give for a world-readable file.
pub fn world_readable_warning(path: &Path) -> String {
    format!(
        "{} is world readable; run 'chmod o-rwx {}' (Mosquitto 2.0 warns about this too \
         and future versions refuse such files)",
        path.display(),
        path.display()
    )
}

pub fn read(file: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(file).map_err(|error| FileError::Io {
        file: file.to_path_buf(),
        error,
    })
}

/// Replaces `file` with `text` atomically and durably; see the module docs.
pub fn write(file: &Path, text: &str) -> Result<(), FileError> {
    let io_err = |error| FileError::Io {
        file: file.to_path_buf(),
        error,
    };
    let old = std::fs::metadata(file).ok();
    let (tmp, mut f) = create_temp(file).map_err(io_err)?;
    let result = (|| {
        if let Some(old) = &old {
            // Owner first: fchown may clear set-id bits, and the mode is set after it.
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid())) {
                if Some((old.uid(), old.gid())) != owner(&f) {
                    eprintln!(
                        "wrenmq passwd: warning: cannot keep the owner of {} ({e}); \
                         the new file belongs to you",
                        file.display()
                    );
                }
            }
            f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        // The rename is durable only once the directory entry is on disk.
        File::open(parent_dir(file))?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

/// A new, empty 0600 file beside `file` with an unpredictable name, created exclusively:
/// `create_new` is `O_CREAT|O_EXCL`, which fails on any existing path, a symlink
/// included, so nothing planted there is followed.
fn create_temp(file: &Path) -> io::Result<(PathBuf, File)> {
    let name = file
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut last = None;
    for _ in 0..8 {
        let mut rand = [0u8; 8];
        getrandom::getrandom(&mut rand).map_err(|e| io::Error::other(e.to_string()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{}.tmp",
            rand.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        let tmp = parent_dir(file).join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

pub(crate) fn parent_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn owner(f: &File) -> Option<(u32, u32)> {
    f.metadata().ok().map(|m| (m.uid(), m.gid()))
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::NoSuchUser(u) => write!(f, "user '{u}' not found"),
            FileError::Io { file, error } => write!(f, "{}: {error}", file.display()),
            FileError::BadLine { file, line } => {
                write!(f, "{}:{line}: expected user:password", file.display())
            }
            FileError::Random(e) => write!(f, "no random salt available: {e}"),
        }
    }
}

impl std::error::Error for FileError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordFile;

    #[test]
    fn set_replaces_or_appends_and_delete_removes() {
        let h = Hash::new(b"one", 3).unwrap();
        let text = set_user("# users\nbob:$7$1$YQ==$Yg==\n", "alice", &h);
        assert!(text.starts_with("# users\nbob:"));
        let h2 = Hash::new(b"two", 3).unwrap();
        let text = set_user(&text, "alice", &h2);
        assert_eq!(text.lines().filter(|l| l.starts_with("alice:")).count(), 1);
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.verify("alice", b"two"));
        let text = delete_user(&text, "alice").unwrap();
        assert!(!text.contains("alice"));
        assert!(matches!(
            delete_user(&text, "alice"),
            Err(FileError::NoSuchUser(_))
        ));
    }

    #[test]
    fn upgrade_hashes_plain_lines_only() {
        let text = "alice:secret\n\n# c\nbob:$7$1$YQ==$Yg==\n";
        let out = hash_plaintext(text, Path::new("pw"), 7).unwrap();
        let f = PasswordFile::parse(&out).unwrap();
        assert!(f.verify("alice", b"secret"));
        assert!(out.contains("bob:$7$1$YQ==$Yg==\n"));
        assert!(out.starts_with("alice:$7$7$"));
        let e = hash_plaintext("nocolon\n", Path::new("pw"), 7).unwrap_err();
        assert_eq!(e.to_string(), "pw:1: expected user:password");
    }
}
