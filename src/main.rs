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
use wrenmq::auth::Auth;
use wrenmq::cli::{self, Command, RunOptions};
use wrenmq::config::{self, Config, Parsed};
use wrenmq::logging;
use wrenmq::net::Server;
use wrenmq::passwd::{self, PasswdError};

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
        Err(e) => {
            eprintln!("wrenmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    let level = if opts.verbosity > 0 {
        logging::level(opts.verbosity)
    } else {
        config.log_level.unwrap_or(LevelFilter::Info)
    };
    logging::init_with(level, config.log_dest);
    for w in &warnings {
        warn!("{w}");
    }
    let auth = match Auth::load(&config) {
        Ok(auth) => auth,
        Err(e) => {
            eprintln!("wrenmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(user) = &config.user {
        info!("user {user}: wrenmq does not switch users; run it as that user (systemd User=)");
    }
    let pid_file = config.pid_file.clone();
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
            let (config, warnings) = load(&opts)?;
            for w in &warnings {
                warn!("{w}");
            }
            let auth = Auth::load(&config)?;
            Ok((config, auth))
        }));
    }
    if let Some(path) = &pid_file {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            eprintln!("wrenmq: pid_file {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
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
fn load(opts: &RunOptions) -> Result<(Config, Vec<config::Warning>), config::ConfigError> {
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
    Ok((config, warnings))
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
