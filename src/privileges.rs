//! Dropping root privileges after start-up, as Mosquitto does with its `user` option.
//!
//! When wrenmq is started as root and the configuration names a `user`, `main` binds the
//! listeners, opens (and locks) the data directory, opens the log file and writes the
//! pid file as root, and then switches to that user for good: supplementary groups from
//! the group database (`initgroups`, so a password file readable by one of the user's
//! groups stays readable), then the user's primary group, then the user id. A data
//! directory this start created is given to the user first; one that existed must
//! already be writable by it, which is checked after the switch, so that the broker
//! fails at start-up rather than at its first compaction.
//!
//! Unlike Mosquitto, `user` has no default: without it a broker started as root keeps
//! running as root, with a warning. (Mosquitto defaults to `mosquitto`; wrenmq's systemd
//! unit never runs it as root, and silently switching users would lock a root-started
//! broker out of a data directory root created.) `user root` keeps root without the
//! warning being any different. A `user` that does not exist is an error, as in
//! Mosquitto.
//!
//! The switch uses the `nix` crate (feature `user` only): safe wrappers for `setuid`,
//! `setgid`, `initgroups` and `getpwnam_r`, so no `unsafe` here. glibc and musl apply
//! `setuid`/`setgid` to every thread of the process (the store's writer thread
//! included); the integration test checks each thread's ids.

use std::ffi::CString;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{self, Uid, User};

/// Why the broker cannot switch to its configured user.
#[derive(Debug)]
pub enum PrivilegeError {
    /// No such user in the password database.
    NoSuchUser(String),
    /// The lookup itself failed.
    Lookup { user: String, errno: Errno },
    /// `initgroups`, `setgid` or `setuid` failed.
    Switch { step: &'static str, errno: Errno },
    /// After the switch, root could be regained: refuse to run.
    NotDropped,
    /// The data directory cannot be given to the user, or the user cannot write it.
    DataDir {
        dir: PathBuf,
        user: String,
        error: io::Error,
    },
}

/// Whether the process runs with root's effective user id.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Looks `name` up in the password database.
pub fn lookup(name: &str) -> Result<User, PrivilegeError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(PrivilegeError::NoSuchUser(name.to_string())),
        Err(errno) => Err(PrivilegeError::Lookup {
            user: name.to_string(),
            errno,
        }),
    }
}

/// Gives `dir` and the files directly in it (what the store created there this start)
/// to `user`. Not recursive: the store keeps no subdirectories, and a data directory
/// that existed before is never chowned.
pub fn give_data_dir(dir: &Path, user: &User) -> Result<(), PrivilegeError> {
    let owner = |path: &Path| {
        // lchown: a symlink in the directory is changed itself, never what it points to.
        std::os::unix::fs::lchown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
    };
    let result = (|| {
        owner(dir)?;
        for entry in std::fs::read_dir(dir)? {
            owner(&entry?.path())?;
        }
        Ok(())
    })();
    result.map_err(|error| PrivilegeError::DataDir {
        dir: dir.to_path_buf(),
        user: user.name.clone(),
        error,
    })
}

/// Switches the whole process to `user` for good and checks that root cannot be
/// regained.
pub fn switch_to(user: &User) -> Result<(), PrivilegeError> {
    let step = |step: &'static str| move |errno| PrivilegeError::Switch { step, errno };
    let name = CString::new(user.name.as_str()).map_err(|_| PrivilegeError::Switch {
        step: "initgroups",
        errno: Errno::EINVAL,
    })?;
    unistd::initgroups(&name, user.gid).map_err(step("initgroups"))?;
    unistd::setgid(user.gid).map_err(step("setgid"))?;
    unistd::setuid(user.uid).map_err(step("setuid"))?;
    // As root, setuid sets the real, effective and saved ids, so this must fail.
    if !user.uid.is_root() && unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::NotDropped);
    }
    Ok(())
}

/// Checks, as the current user, that files can be created in `dir` (the store creates
/// snapshots and new log files there while it runs).
pub fn check_writable(dir: &Path, user: &str) -> Result<(), PrivilegeError> {
    let probe = dir.join(format!(".wrenmq-write-check-{}", std::process::id()));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe));
    result.map_err(|error| PrivilegeError::DataDir {
        dir: dir.to_path_buf(),
        user: user.to_string(),
        error,
    })
}

impl fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivilegeError::NoSuchUser(u) => {
                write!(f, "user {u}: no such user, cannot drop privileges to it")
            }
            PrivilegeError::Lookup { user, errno } => {
                write!(f, "user {user}: lookup failed: {errno}")
            }
            PrivilegeError::Switch { step, errno } => {
                write!(f, "cannot drop privileges: {step} failed: {errno}")
            }
            PrivilegeError::NotDropped => {
                f.write_str("cannot drop privileges: root could be regained after setuid")
            }
            PrivilegeError::DataDir { dir, user, error } => write!(
                f,
                "persistence_location {}: not usable by user {user} ({error}); \
                 make it theirs: chown -R {user}: {}",
                dir.display(),
                dir.display()
            ),
        }
    }
}

impl std::error::Error for PrivilegeError {}
