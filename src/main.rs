//! `wrenmq`: parse the command line, set up logging, bind, run the loop.
//!
//! Exit codes: 0 after a normal stop or `--help`/`--version`, 1 when the broker cannot
//! start (bind failure) or its loop fails, 2 for a bad command line.

use std::process::ExitCode;

use wrenmq::cli::{self, Command};
use wrenmq::config::Config;
use wrenmq::logging;
use wrenmq::net::Server;

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
    logging::init(opts.verbosity);

    let config = Config {
        listeners: opts.listeners,
        ..Config::default()
    };
    let server = match Server::bind(config).and_then(|mut s| s.handle_signals().map(|()| s)) {
        Ok(server) => server,
        Err(e) => {
            // eprintln rather than log: RUST_LOG=off must not hide why we did not start.
            eprintln!("wrenmq: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut server = server;
    // After binding, so that READY=1 (sent when the loop starts) means "accepting".
    server.notify_systemd();
    log::info!("{} started", cli::version());
    match server.run() {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wrenmq: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("wrenmq: {message}");
    eprintln!("Try 'wrenmq --help' for more information.");
    ExitCode::from(2)
}
