//! Logger set-up: `env_logger` on stderr, level from `-v`, overridden by `RUST_LOG`.

use log::LevelFilter;

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
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level(verbosity));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        if !spec.trim().is_empty() {
            builder.parse_filters(&spec);
        }
    }
    builder.target(env_logger::Target::Stderr);
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
