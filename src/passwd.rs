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
//! and either broker can use them. The edits themselves are pure functions on the file's
//! text; [`run`] adds the terminal and the file system.
//!
//! Writing: a file is replaced atomically. The new text goes to a temporary file beside
//! it with a random name, created exclusively (`O_CREAT|O_EXCL`: a symlink or file an
//! attacker planted under a guessable name is refused, never followed or truncated) and
//! 0600; it takes the old file's mode and, where permitted, its owner and group (so a
//! file root edits for a broker running as `mosquitto` stays readable to it); it is
//! fsynced, renamed over the file, and the directory is fsynced so the rename survives a
//! power cut. A new file is 0600. A world-readable result gets a warning, as Mosquitto
//! 2.0 gives when it loads one (the broker warns at start-up too).
//!
//! Prompting: on a terminal the password is read with echo off (via `stty`, so no unsafe
//! terminal code here); otherwise two lines are read from stdin, as `mosquitto_passwd`
//! does, which makes scripting `printf 'pw\npw\n' | wrenmq passwd FILE USER` possible.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use getopts::Options;

use crate::auth::password::{format_line, Hash, DEFAULT_ITERATIONS};

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
pub fn delete_user(text: &str, user: &str) -> Result<String, PasswdError> {
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
        Err(PasswdError::NoSuchUser(user.to_string()))
    }
}

/// `text` with every plain-text password hashed. Lines already hashed are kept as they
/// are (hashing a hash, as `mosquitto_passwd -U` would, locks the user out).
pub fn hash_plaintext(text: &str, file: &Path, iterations: u32) -> Result<String, PasswdError> {
    let mut out = String::with_capacity(text.len() * 2);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            out.push_str(line);
        } else {
            let Some((user, password)) = line.split_once(':') else {
                return Err(PasswdError::BadLine {
                    file: file.to_path_buf(),
                    line: i + 1,
                });
            };
            if Hash::parse(password).is_ok() {
                out.push_str(line);
            } else {
                let hash =
                    Hash::new(password.as_bytes(), iterations).map_err(PasswdError::Random)?;
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

fn warn_if_world_readable(path: &Path) {
    if world_readable(path) {
        eprintln!("wrenmq passwd: warning: {}", world_readable_warning(path));
    }
}

fn read(file: &Path) -> Result<String, PasswdError> {
    std::fs::read_to_string(file).map_err(|error| PasswdError::Io {
        file: file.to_path_buf(),
        error,
    })
}

/// Replaces `file` with `text` atomically and durably; see the module docs.
fn write(file: &Path, text: &str) -> Result<(), PasswdError> {
    let io_err = |error| PasswdError::Io {
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

fn parent_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn owner(f: &File) -> Option<(u32, u32)> {
    f.metadata().ok().map(|m| (m.uid(), m.gid()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordFile;

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
            Err(PasswdError::NoSuchUser(_))
        ));
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
        assert_eq!(parent_dir(Path::new("pw")), Path::new("."));
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
