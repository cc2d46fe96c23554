//! `wrenmq passwd`: manage Mosquitto-format password files, like `mosquitto_passwd`.
//!
//! ```text
//! wrenmq passwd [-I ITER] [-c] FILE USER            prompt for the password (twice)
//! wrenmq passwd [-I ITER] [-c] -b FILE USER PASS    password on the command line
//! wrenmq passwd -D FILE USER                        delete USER
//! wrenmq passwd [-I ITER] -U FILE                   hash a plain-text user:password file
//! ```
//!
//! Files are written as `user:$7$<iter>$<salt>$<hash>` (PBKDF2-HMAC-SHA512, 12-byte salt,
//! 101 iterations by default), exactly what `mosquitto_passwd` 2.0 writes, so either tool
//! and either broker can use them. This module is the command: arguments, prompting and
//! messages. The file edits and the safe atomic write live in [`crate::auth::passwd_file`];
//! a world-readable result gets a warning, as Mosquitto 2.0 gives when it loads one (the
//! broker warns at start-up too).
//!
//! Prompting: on a terminal the password is read with echo off (via `stty`, so no unsafe
//! terminal code here); otherwise two lines are read from stdin, as `mosquitto_passwd`
//! does, which makes scripting `printf 'pw\npw\n' | wrenmq passwd FILE USER` possible.

use std::fmt;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use getopts::Options;

use crate::auth::passwd_file::{delete_user, hash_plaintext, read, set_user, write, FileError};
use crate::auth::password::{Hash, DEFAULT_ITERATIONS};
// The broker's start-up check uses these through this module too.
pub use crate::auth::passwd_file::{world_readable, world_readable_warning};

/// What the `passwd` command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Add or update a user; `password` is `None` when it must be prompted for.
    Set {
        file: PathBuf,
        user: String,
        password: Option<String>,
        create: bool,
        iterations: u32,
    },
    Delete {
        file: PathBuf,
        user: String,
    },
    /// Hash every plain-text `user:password` line in place.
    Upgrade {
        file: PathBuf,
        iterations: u32,
    },
    Help,
}

/// Why `wrenmq passwd` failed.
#[derive(Debug)]
pub enum PasswdError {
    /// A bad command line (exit code 2).
    Usage(String),
    /// A user name Mosquitto cannot store (empty or containing `:`).
    BadUser(String),
    NoSuchUser(String),
    PasswordsDiffer,
    EmptyPassword,
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

fn options() -> Options {
    let mut o = Options::new();
    o.optflag("c", "", "create a new file (overwriting an existing one)");
    o.optflag("b", "", "batch mode: the password is the last argument");
    o.optflag("D", "", "delete the user");
    o.optflag("U", "", "hash every plain-text password in the file");
    o.optopt("I", "", "PBKDF2 iterations (default 101)", "ITER");
    o.optopt(
        "H",
        "",
        "hash: sha512-pbkdf2 (the only one written)",
        "HASH",
    );
    o.optflag("h", "help", "print this help");
    o
}

/// The `passwd` help text.
pub fn usage() -> String {
    let brief = "Usage: wrenmq passwd [-I ITER] [-c] [-b] FILE USER [PASSWORD]\n       \
                 wrenmq passwd -D FILE USER\n       \
                 wrenmq passwd [-I ITER] -U FILE\n\n\
                 Manage a Mosquitto-compatible password file ($7$ PBKDF2-SHA512).";
    options().usage(brief)
}

/// Parses the arguments after `passwd`.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Action, PasswdError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let m = options()
        .parse(&args)
        .map_err(|e| PasswdError::Usage(e.to_string()))?;
    if m.opt_present("h") {
        return Ok(Action::Help);
    }
    if let Some(h) = m.opt_str("H") {
        if h != "sha512-pbkdf2" {
            return Err(PasswdError::Usage(format!(
                "invalid value '{h}' for -H: only sha512-pbkdf2 is written"
            )));
        }
    }
    let iterations = match m.opt_str("I") {
        None => DEFAULT_ITERATIONS,
        Some(i) => i.parse().ok().filter(|&i| i > 0).ok_or_else(|| {
            PasswdError::Usage(format!("invalid value '{i}' for -I: expected a count > 0"))
        })?,
    };
    let modes = ["c", "D", "U"].iter().filter(|f| m.opt_present(f)).count();
    if modes > 1 {
        return Err(PasswdError::Usage(
            "-c, -D and -U cannot be combined".to_string(),
        ));
    }
    let free = &m.free;
    let wrong = |what: &str| PasswdError::Usage(format!("expected {what}"));
    if m.opt_present("U") {
        return match free.as_slice() {
            [file] => Ok(Action::Upgrade {
                file: file.into(),
                iterations,
            }),
            _ => Err(wrong("-U FILE")),
        };
    }
    if m.opt_present("D") {
        return match free.as_slice() {
            [file, user] => Ok(Action::Delete {
                file: file.into(),
                user: valid_user(user)?,
            }),
            _ => Err(wrong("-D FILE USER")),
        };
    }
    let create = m.opt_present("c");
    match (m.opt_present("b"), free.as_slice()) {
        (true, [file, user, password]) => Ok(Action::Set {
            file: file.into(),
            user: valid_user(user)?,
            password: Some(password.clone()),
            create,
            iterations,
        }),
        (false, [file, user]) => Ok(Action::Set {
            file: file.into(),
            user: valid_user(user)?,
            password: None,
            create,
            iterations,
        }),
        (true, _) => Err(wrong("-b FILE USER PASSWORD")),
        (false, _) => Err(wrong("FILE USER")),
    }
}

fn valid_user(user: &str) -> Result<String, PasswdError> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(PasswdError::BadUser(user.to_string()));
    }
    Ok(user.to_string())
}

/// Carries out `action` on the file system and the terminal.
pub fn run(action: Action) -> Result<(), PasswdError> {
    match action {
        Action::Help => {
            println!("{}", usage());
            Ok(())
        }
        Action::Set {
            file,
            user,
            password,
            create,
            iterations,
        } => {
            let text = if create { String::new() } else { read(&file)? };
            let password = match password {
                Some(p) => p,
                None => prompt_twice()?,
            };
            let hash = Hash::new(password.as_bytes(), iterations).map_err(PasswdError::Random)?;
            write(&file, &set_user(&text, &user, &hash))?;
            warn_if_world_readable(&file);
            Ok(())
        }
        Action::Delete { file, user } => {
            let text = read(&file)?;
            write(&file, &delete_user(&text, &user)?)?;
            warn_if_world_readable(&file);
            Ok(())
        }
        Action::Upgrade { file, iterations } => {
            let text = read(&file)?;
            write(&file, &hash_plaintext(&text, &file, iterations)?)?;
            warn_if_world_readable(&file);
            Ok(())
        }
    }
}

fn warn_if_world_readable(path: &Path) {
    if world_readable(path) {
        eprintln!("wrenmq passwd: warning: {}", world_readable_warning(path));
    }
}

fn prompt_twice() -> Result<String, PasswdError> {
    let first = prompt("Password: ")?;
    let second = prompt("Reenter password: ")?;
    if first != second {
        return Err(PasswdError::PasswordsDiffer);
    }
    if first.is_empty() {
        return Err(PasswdError::EmptyPassword);
    }
    Ok(first)
}

/// One password line from the terminal (echo off) or from stdin.
fn prompt(text: &str) -> Result<String, PasswdError> {
    let stdin = io::stdin();
    let tty = stdin.is_terminal();
    let stdin_err = |error| PasswdError::Io {
        file: PathBuf::from("<stdin>"),
        error,
    };
    if tty {
        eprint!("{text}");
        let _ = io::stderr().flush();
        stty("-echo");
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    read.map_err(stdin_err)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Best effort: without `stty` the password is echoed, which is no worse than `-b`.
fn stty(arg: &str) {
    let _ = std::process::Command::new("stty")
        .arg(arg)
        .stdin(std::process::Stdio::inherit())
        .status();
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswdError::Usage(m) => f.write_str(m),
            PasswdError::BadUser(u) => write!(
                f,
                "invalid user name '{u}': it must be non-empty and contain no ':' or control characters"
            ),
            PasswdError::NoSuchUser(u) => write!(f, "user '{u}' not found"),
            PasswdError::PasswordsDiffer => f.write_str("passwords do not match"),
            PasswdError::EmptyPassword => f.write_str("empty password"),
            PasswdError::Io { file, error } => write!(f, "{}: {error}", file.display()),
            PasswdError::BadLine { file, line } => {
                write!(f, "{}:{line}: expected user:password", file.display())
            }
            PasswdError::Random(e) => write!(f, "no random salt available: {e}"),
        }
    }
}

impl std::error::Error for PasswdError {}

impl From<FileError> for PasswdError {
    fn from(e: FileError) -> PasswdError {
        match e {
            FileError::NoSuchUser(u) => PasswdError::NoSuchUser(u),
            FileError::Io { file, error } => PasswdError::Io { file, error },
            FileError::BadLine { file, line } => PasswdError::BadLine { file, line },
            FileError::Random(e) => PasswdError::Random(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordFile;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn set(args: &[&str]) -> Action {
        parse_args(args).unwrap()
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            set(&["-c", "-b", "pw", "alice", "s3"]),
            Action::Set {
                file: "pw".into(),
                user: "alice".into(),
                password: Some("s3".into()),
                create: true,
                iterations: 101
            }
        );
        assert_eq!(
            set(&["-I", "1000", "pw", "bob"]),
            Action::Set {
                file: "pw".into(),
                user: "bob".into(),
                password: None,
                create: false,
                iterations: 1000
            }
        );
        assert_eq!(
            set(&["-D", "pw", "bob"]),
            Action::Delete {
                file: "pw".into(),
                user: "bob".into()
            }
        );
        assert_eq!(
            set(&["-U", "pw"]),
            Action::Upgrade {
                file: "pw".into(),
                iterations: 101
            }
        );
        let err = |a: &[&str]| parse_args(a).unwrap_err().to_string();
        assert_eq!(
            err(&["-c", "-D", "pw", "u"]),
            "-c, -D and -U cannot be combined"
        );
        assert_eq!(err(&["-b", "pw", "u"]), "expected -b FILE USER PASSWORD");
        assert_eq!(err(&["pw"]), "expected FILE USER");
        assert!(err(&["-I", "0", "pw", "u"]).contains("-I"));
        assert!(err(&["pw", "a:b"]).contains("invalid user name 'a:b'"));
        assert!(err(&["-H", "md5", "pw", "u"]).contains("sha512-pbkdf2"));
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("wrenmq-passwd-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set_pw(file: &Path, user: &str, create: bool) {
        run(Action::Set {
            file: file.to_path_buf(),
            user: user.into(),
            password: Some("pw".into()),
            create,
            iterations: 1,
        })
        .unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn temp_file_is_never_a_planted_symlink() {
        // The temporary file used to be FILE.tmp, opened with create+truncate: a symlink
        // planted there made `wrenmq passwd` (often run as root) overwrite its target.
        let d = TempDir::new("symlink");
        let victim = d.0.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let pw = d.0.join("pw");
        std::os::unix::fs::symlink(&victim, d.0.join("pw.tmp")).unwrap();
        set_pw(&pw, "alice", true);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let meta = std::fs::symlink_metadata(&pw).unwrap();
        assert!(meta.file_type().is_file(), "pw must be a regular file");
        assert!(PasswordFile::parse(&std::fs::read_to_string(&pw).unwrap())
            .unwrap()
            .verify("alice", b"pw"));
        // Nothing left behind but the planted link.
        let mut names: Vec<String> = std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["pw", "pw.tmp", "victim"]);
    }

    #[test]
    fn new_files_are_0600_and_edits_keep_the_mode() {
        let d = TempDir::new("mode");
        let pw = d.0.join("pw");
        set_pw(&pw, "alice", true);
        assert_eq!(mode(&pw), 0o600);
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
        set_pw(&pw, "bob", false);
        assert_eq!(mode(&pw), 0o640);
        run(Action::Delete {
            file: pw.clone(),
            user: "bob".into(),
        })
        .unwrap();
        assert_eq!(mode(&pw), 0o640);
        assert!(!world_readable(&pw));
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(world_readable(&pw));
        assert!(world_readable_warning(&pw).contains("world readable"));
        // A relative path writes beside it in the current directory's terms.
        assert_eq!(
            crate::auth::passwd_file::parent_dir(Path::new("pw")),
            Path::new(".")
        );
    }

    #[test]
    fn edits_keep_the_owner_when_run_as_root() {
        let d = TempDir::new("owner");
        let pw = d.0.join("pw");
        set_pw(&pw, "alice", true);
        if std::os::unix::fs::chown(&pw, Some(65534), Some(65534)).is_err() {
            return; // not root: cannot set up the case
        }
        set_pw(&pw, "bob", false);
        let meta = std::fs::metadata(&pw).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }
}
