//! The command line: flags parsed once into typed values, with errors that name the flag.
//!
//! Owns the mapping from argv to [`Command`]. Printing, logging set-up and exit codes are
//! `main`'s business, so everything here is a pure function and unit-tested.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use getopts::Options;

/// The MQTT port (IANA), used when neither `-p` nor `-l` is given.
pub const DEFAULT_PORT: u16 = 1883;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start the broker.
    Run(RunOptions),
    /// Print the usage text (`-h`).
    Help,
    /// Print `wrenmq <version>` (`--version`).
    Version,
}

/// Settings for a broker run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Addresses to listen on: `-l` values, or the loopback defaults on `-p`'s port.
    pub listeners: Vec<SocketAddr>,
    /// Whether `-p` or `-l` was given: they then replace the config file's listeners.
    pub listeners_set: bool,
    /// `-c FILE`: the Mosquitto-style configuration file.
    pub config: Option<PathBuf>,
    /// Number of `-v` flags: 0 = info, 1 = debug, 2+ = trace.
    pub verbosity: u8,
    /// `--data-dir`: where persistent state lives (default `./wrenmq-data`).
    pub data_dir: Option<PathBuf>,
    /// `--no-persistence`: keep everything in memory.
    pub no_persistence: bool,
}

/// A command line that cannot be used; its message names the flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError(String);

impl CliError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// The flag table.
fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "c",
        "config",
        "read the configuration from FILE (Mosquitto format); -p/-l/-v override it; \
         SIGHUP reloads it",
        "FILE",
    );
    opts.optopt(
        "p",
        "port",
        "port for the default loopback listeners (127.0.0.1 and ::1)",
        "PORT",
    );
    opts.optmulti(
        "l",
        "listen",
        "listen on ADDR:PORT instead of the defaults; repeatable; ADDR is an IP address \
         (IPv6 as [::1]:1883) or localhost (127.0.0.1 and ::1); a bare PORT is every \
         interface, as 'listener PORT'",
        "ADDR:PORT",
    );
    opts.optopt(
        "",
        "data-dir",
        "directory for persistent sessions, queues and retained messages (default ./wrenmq-data)",
        "DIR",
    );
    opts.optflag(
        "",
        "no-persistence",
        "keep all state in memory (lost on restart)",
    );
    opts.optflagmulti("v", "verbose", "more log output: -v debug, -vv trace");
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("", "version", "print the version and exit");
    opts
}

/// The help text.
pub fn usage() -> String {
    let brief = "Usage: wrenmq [-c FILE] [-p PORT | -l ADDR:PORT...] [--data-dir DIR | --no-persistence] [-v...]\n       \
                 wrenmq passwd [-c] [-b] [-D] [-U] [-I ITER] FILE [USER [PASSWORD]]\n\n\
                 A small MQTT broker for low-power gateways. Logs go to stderr; \
                 RUST_LOG overrides the -v level. 'wrenmq passwd -h' explains passwd.";
    options().usage(brief)
}

/// The `--version` line.
pub fn version() -> String {
    format!("wrenmq {}", env!("CARGO_PKG_VERSION"))
}

/// Parses the arguments after the program name.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Command, CliError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let matches = options()
        .parse(&args)
        .map_err(|e| CliError(e.to_string()))?;
    if matches.opt_present("h") {
        return Ok(Command::Help);
    }
    if matches.opt_present("version") {
        return Ok(Command::Version);
    }
    if let Some(extra) = matches.free.first() {
        return Err(CliError(format!("unexpected argument '{extra}'")));
    }
    let listen = matches.opt_strs("l");
    let port = matches.opt_str("p");
    let listeners_set = port.is_some() || !listen.is_empty();
    let listeners = match (port, listen.is_empty()) {
        (Some(_), false) => {
            return Err(CliError(
                "-p/--port cannot be combined with -l/--listen (give the port in each -l)"
                    .to_string(),
            ))
        }
        (Some(port), true) => default_listeners(parse_port(&port)?),
        (None, true) => default_listeners(DEFAULT_PORT),
        (None, false) => {
            let mut all = Vec::new();
            for s in &listen {
                all.extend(parse_listen(s)?);
            }
            all
        }
    };
    let verbosity = u8::try_from(matches.opt_count("v")).unwrap_or(u8::MAX);
    let data_dir = matches.opt_str("data-dir").map(PathBuf::from);
    let no_persistence = matches.opt_present("no-persistence");
    if no_persistence && data_dir.is_some() {
        return Err(CliError(
            "--data-dir cannot be combined with --no-persistence".to_string(),
        ));
    }
    Ok(Command::Run(RunOptions {
        listeners,
        listeners_set,
        config: matches.opt_str("c").map(PathBuf::from),
        verbosity,
        data_dir,
        no_persistence,
    }))
}

/// Applies the flags that override the configuration file.
pub fn apply_overrides(opts: &RunOptions, config: &mut crate::config::Config) {
    if opts.listeners_set || opts.config.is_none() {
        config.listeners.clone_from(&opts.listeners);
    }
    if let Some(dir) = &opts.data_dir {
        config.persistence_location.clone_from(dir);
        config.persistence = true;
    }
    if opts.no_persistence {
        config.persistence = false;
    }
}

/// The loopback listeners on `port`, IPv4 first.
pub fn default_listeners(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
    ]
}

fn parse_port(s: &str) -> Result<u16, CliError> {
    s.parse().map_err(|_| {
        CliError(format!(
            "invalid value '{s}' for -p/--port: expected a port number 0-65535"
        ))
    })
}

/// One `-l` value, read as the config file's `listener PORT ADDR` reads it:
/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (both loopback addresses) or a bare `PORT`
/// (every interface, IPv4 and IPv6).
fn parse_listen(s: &str) -> Result<Vec<SocketAddr>, CliError> {
    let bad = || {
        CliError(format!(
            "invalid value '{s}' for -l/--listen: expected IP:PORT, [IPv6]:PORT, \
             localhost:PORT or PORT, such as 0.0.0.0:1883 or [::1]:1883"
        ))
    };
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if let Ok(port) = s.parse::<u16>() {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]);
    }
    match s.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
            Ok(default_listeners(port.parse().map_err(|_| bad())?))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> RunOptions {
        match parse(args) {
            Ok(Command::Run(opts)) => opts,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Err(e) => e.to_string(),
            ok => panic!("{args:?} gave {ok:?}"),
        }
    }

    #[test]
    fn no_arguments_listen_on_loopback_1883() {
        let opts = run(&[]);
        assert_eq!(
            opts.listeners,
            [
                "127.0.0.1:1883".parse().unwrap(),
                "[::1]:1883".parse().unwrap()
            ]
        );
        assert_eq!(opts.verbosity, 0);
    }

    #[test]
    fn port_applies_to_the_defaults() {
        let opts = run(&["-p", "1884"]);
        assert_eq!(opts.listeners, default_listeners(1884));
        assert_eq!(run(&["--port=0"]).listeners, default_listeners(0));
    }

    #[test]
    fn listen_is_repeatable_and_replaces_the_defaults() {
        let opts = run(&[
            "-l",
            "0.0.0.0:1883",
            "--listen",
            "[::1]:8883",
            "-l192.168.1.2:1",
        ]);
        let want: Vec<SocketAddr> = ["0.0.0.0:1883", "[::1]:8883", "192.168.1.2:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(opts.listeners, want);
    }

    #[test]
    fn listen_accepts_what_a_listener_line_does() {
        // `-l localhost:1883` used to be refused; `listener 1883 localhost` works.
        assert_eq!(
            run(&["-l", "localhost:1884"]).listeners,
            default_listeners(1884)
        );
        assert_eq!(run(&["-l", "LOCALHOST:1"]).listeners, default_listeners(1));
        assert_eq!(
            run(&["-l", "1883"]).listeners,
            [
                "0.0.0.0:1883".parse::<SocketAddr>().unwrap(),
                "[::]:1883".parse().unwrap()
            ]
        );
        assert_eq!(
            run(&["-l", "[::1]:2", "-l", "localhost:3"]).listeners,
            [
                "[::1]:2".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:3".parse().unwrap(),
                "[::1]:3".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(err(&["-p", "65536"]).contains("-p/--port"));
        assert!(err(&["-p", "mqtt"]).contains("'mqtt'"));
        assert!(err(&["-l", "localhost"]).contains("-l/--listen"));
        assert!(err(&["-l", "localhost:x"]).contains("-l/--listen"));
        assert!(err(&["-l", "broker.example:1883"]).contains("-l/--listen"));
        assert!(err(&["-l", "70000"]).contains("-l/--listen"));
        assert!(err(&["-l", "::1:1883"]).contains("-l/--listen"));
        assert!(err(&["-l", "127.0.0.1"]).contains("-l/--listen"));
        assert!(err(&["-p", "1", "-l", "127.0.0.1:2"]).contains("-p/--port"));
        assert!(err(&["-x"]).contains('x'));
        assert!(err(&["-p"]).contains('p'));
        assert!(err(&["extra"]).contains("'extra'"));
    }

    #[test]
    fn config_file_and_overrides() {
        use crate::config::Config;
        let opts = run(&["-c", "/etc/wrenmq.conf"]);
        assert_eq!(opts.config, Some(PathBuf::from("/etc/wrenmq.conf")));
        assert!(!opts.listeners_set);
        let mut c = Config {
            listeners: vec!["0.0.0.0:1".parse().unwrap()],
            ..Config::default()
        };
        apply_overrides(&opts, &mut c);
        assert_eq!(c.listeners, ["0.0.0.0:1".parse().unwrap()]); // the file's
        let opts = run(&["--config=/x", "-p", "2"]);
        apply_overrides(&opts, &mut c);
        assert_eq!(c.listeners, default_listeners(2)); // the flag's
        assert!(!run(&[]).listeners_set);
        assert!(err(&["-c"]).contains('c'));
    }

    #[test]
    fn verbosity_counts_v_flags() {
        assert_eq!(run(&["-v"]).verbosity, 1);
        assert_eq!(run(&["-vv"]).verbosity, 2);
        assert_eq!(run(&["-v", "--verbose", "-v"]).verbosity, 3);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
        assert_eq!(parse(&["--help", "-p", "x"]), Ok(Command::Help));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(version(), format!("wrenmq {}", env!("CARGO_PKG_VERSION")));
        assert!(usage().contains("--listen"));
    }
}
