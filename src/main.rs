//! `wrenmq`: parse the command line, read the configuration, set up logging, bind, run
//! the loop. `wrenmq passwd ...` manages password files instead.
//!
//! Exit codes: 0 after a normal stop or `--help`/`--version`, 1 when the broker cannot
//! start (bad configuration, password or ACL file, bind failure) or its loop fails, 2 for
//! a bad command line.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use log::{info, warn, LevelFilter};
use wrenmq::auth::AuthSet;
use wrenmq::cli::{self, Command, RunOptions};
use wrenmq::config::{self, Config, Parsed};
use wrenmq::logging;
use wrenmq::net::Server;
use wrenmq::passwd::{self, PasswdError};
use wrenmq::privileges;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(arg) => {
                return usage_error(&format!("argument {arg:?} is not valid UTF-8"));
            }
        }
    }
    if args.first().map(String::as_str) == Some("passwd") {
        return run_passwd(&args[1..]);
    }
    let opts = match cli::parse(&args) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            println!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("{}", cli::version());
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(e.message()),
    };

    // Everything that can be wrong with the files is found before logging is set up and
    // before anything listens; eprintln so that RUST_LOG=off cannot hide it.
    let (config, warnings) = match load(&opts) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("wrenmq: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let level = if opts.verbosity > 0 {
        logging::level(opts.verbosity)
    } else {
        config.log_level.unwrap_or(LevelFilter::Info)
    };
    let style = logging::LogStyle {
        timestamp: config.log_timestamp,
        timestamp_format: config.log_timestamp_format.clone(),
        facility: config.log_facility,
    };
    let log_file = logging::init_styled(level, &config.log_dest, &style);
    for w in &warnings {
        warn!("{w}");
    }
    let auth = match AuthSet::load(&config) {
        Ok(auth) => auth,
        Err(e) => {
            eprintln!("wrenmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    warn_world_readable(&config);
    let pid_file = config.pid_file.clone();
    let privilege_plan = (config.user.clone(), data_dir_to_give(&config));
    let server = Server::bind_with(config, auth).and_then(|mut s| s.handle_signals().map(|()| s));
    let mut server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wrenmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.config.is_some() {
        let opts = opts.clone();
        server.set_reload(Box::new(move || {
            // SIGHUP: reopen the log file first (logrotate), whatever the reload finds.
            if let Some(f) = &log_file {
                if let Err(e) = f.reopen() {
                    warn!("log_dest file {}: cannot reopen: {e}", f.path().display());
                }
            }
            let (config, warnings) = load(&opts)?;
            for w in &warnings {
                warn!("{w}");
            }
            let auth = AuthSet::load(&config)?;
            warn_world_readable(&config);
            Ok((config, auth))
        }));
    }
    // A pid file is a convenience for init scripts; failing to write one (Debian's stock
    // `/run/mosquitto/` may not exist, or be read-only under the unit's sandbox) must not
    // keep the broker down, so it is a warning (Mosquitto exits here).
    let pid_file =
        pid_file.filter(
            |path| match std::fs::write(path, format!("{}\n", std::process::id())) {
                Ok(()) => true,
                Err(e) => {
                    warn!(
                        "pid_file {}: {e}; running without a pid file",
                        path.display()
                    );
                    false
                }
            },
        );
    // Last thing as root: listeners are bound, the data directory is open and locked, the
    // log and pid files are written. The start-up compaction runs on the store's thread:
    // its files must exist before the directory is given to `user`, or they stay root's.
    if privileges::is_root() && privilege_plan.0.as_deref().is_some_and(|u| u != "root") {
        server.wait_for_store();
    }
    if let Err(e) = drop_privileges(privilege_plan) {
        eprintln!("wrenmq: {e}");
        remove_pid_file(pid_file);
        return ExitCode::FAILURE;
    }
    // After binding, so that READY=1 (sent when the loop starts) means "accepting".
    server.notify_systemd();
    info!("{} started", cli::version());
    let result = server.run();
    remove_pid_file(pid_file);
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wrenmq: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration `opts` describes: the file if `-c` was given (with the flags that
/// override it), the defaults otherwise.
fn load(opts: &RunOptions) -> Result<(Config, Vec<config::Warning>), config::ConfigErrors> {
    let Parsed {
        mut config,
        warnings,
    } = match &opts.config {
        Some(path) => config::load(path)?,
        None => Parsed {
            config: Config::default(),
            warnings: Vec::new(),
        },
    };
    cli::apply_overrides(opts, &mut config);
    // Bridges run on the loop (net/bridge.rs); what that does not support yet is refused
    // rather than run without the uplink the file asks for.
    for b in &config.bridges {
        if let Err(why) = wrenmq::net::bridge::check(b) {
            return Err(config::ConfigError {
                file: b.file.clone(),
                line: b.line,
                key: Some("connection".to_string()),
                kind: config::ErrorKind::Unsupported(why),
            }
            .into());
        }
        if let Err(why) = wrenmq::net::bridge::check_files(b) {
            return Err(config::ConfigError {
                file: b.file.clone(),
                line: b.line,
                key: Some("connection".to_string()),
                kind: config::ErrorKind::Read(why),
            }
            .into());
        }
    }
    Ok((config, warnings))
}

/// The data directory as it was before start-up, when persistence is on.
enum DataDir {
    /// Did not exist: this start creates it, so it may be given to the `user`.
    Created(PathBuf),
    /// Existed: never chowned; the `user` must be able to write it.
    Existing(PathBuf),
}

fn data_dir_to_give(config: &Config) -> Option<DataDir> {
    let dir = config.persistence_location.clone();
    config.persistence.then(|| {
        if dir.exists() {
            DataDir::Existing(dir)
        } else {
            DataDir::Created(dir)
        }
    })
}

/// Switches to the configured `user` when started as root (see [`privileges`]).
fn drop_privileges(
    (user, data_dir): (Option<String>, Option<DataDir>),
) -> Result<(), privileges::PrivilegeError> {
    if !privileges::is_root() {
        return Ok(());
    }
    let name = match user.as_deref() {
        None => {
            warn!(
                "running as root: set `user` in the configuration to drop privileges after \
                 start-up (as Mosquitto does), or start wrenmq as an unprivileged user"
            );
            return Ok(());
        }
        Some("root") => {
            warn!("running as root (user root)");
            return Ok(());
        }
        Some(name) => name,
    };
    let user = privileges::lookup(name)?;
    match &data_dir {
        Some(DataDir::Created(dir)) => privileges::give_data_dir(dir, &user)?,
        Some(DataDir::Existing(dir)) => privileges::give_new_files(dir, &user)?,
        None => {}
    }
    privileges::switch_to(&user)?;
    if let Some(DataDir::Created(dir) | DataDir::Existing(dir)) = &data_dir {
        privileges::check_writable(dir, name)?;
    }
    info!(
        "dropped privileges to user {name} (uid {}, gid {})",
        user.uid, user.gid
    );
    Ok(())
}

/// Mosquitto 2.0 warns when it loads a password file anyone may read; so do we.
fn warn_world_readable(config: &Config) {
    let per_listener = config
        .listener_security
        .iter()
        .filter_map(|s| s.password_file.as_ref());
    for path in config.password_file.iter().chain(per_listener) {
        if passwd::world_readable(path) {
            warn!("password_file {}", passwd::world_readable_warning(path));
        }
    }
}

fn remove_pid_file(path: Option<PathBuf>) {
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

fn run_passwd(args: &[String]) -> ExitCode {
    match passwd::parse_args(args).and_then(passwd::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(PasswdError::Usage(m)) => {
            eprintln!("wrenmq passwd: {m}");
            eprintln!("Try 'wrenmq passwd -h' for more information.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("wrenmq passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("wrenmq: {message}");
    eprintln!("Try 'wrenmq --help' for more information.");
    ExitCode::from(2)
}
