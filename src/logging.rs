//! Logger set-up: `env_logger` on stderr (or stdout), level from `-v` or the config file's
//! `log_type`, overridden by `RUST_LOG`.

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
    init_with(level(verbosity), LogDest::Stderr);
}

/// Installs the logger with an explicit level and destination (`log_dest none` turns
/// logging off). `RUST_LOG` still wins over the level.
pub fn init_with(level: LevelFilter, dest: LogDest) {
    let mut builder = env_logger::Builder::new();
    let level = if dest == LogDest::None {
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
    builder.target(match dest {
        LogDest::Stdout => env_logger::Target::Stdout,
        LogDest::Stderr | LogDest::None => env_logger::Target::Stderr,
    });
    // Fails only if a logger is already installed, which then stays in charge.
    let _ = builder.try_init();
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
}
