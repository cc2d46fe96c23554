//! Why a configuration file cannot be used, and what in it deserves a warning.
//!
//! Every error names the file, and where it applies the line and the key, so that a user
//! reading only the lines the broker printed before exiting knows what to fix. A file is
//! checked to the end and every error in it reported ([`ConfigErrors`]), so one edit can
//! fix them all instead of one restart per mistake.

use std::fmt;
use std::path::PathBuf;

use super::bridge::BridgeError;

/// A configuration file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error concerns the whole file (it cannot be read).
    pub line: usize,
    /// The key on that line, when there is one.
    pub key: Option<String>,
    pub kind: ErrorKind,
}

/// What is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file (or an `include_dir` directory) cannot be read.
    Read(String),
    /// Neither a Mosquitto key nor one of ours; `suggestion` is the known key closest to
    /// it, if one is close enough to be a typo.
    UnknownKey { suggestion: Option<&'static str> },
    /// The key needs a value.
    MissingValue,
    /// The value does not parse; `expected` says what would.
    InvalidValue {
        value: String,
        expected: &'static str,
    },
    /// A Mosquitto setting wrenmq refuses rather than ignores, because ignoring it would
    /// silently weaken security or change what clients see (TLS, websockets, ...).
    Unsupported(&'static str),
    /// `include_dir` in an included file (Mosquitto allows it only in the main file).
    NestedInclude,
    /// A bridge (`connection` block) that cannot be used.
    Bridge(BridgeError),
}

/// A setting accepted but not (fully) honoured; logged at start-up and on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        match &self.kind {
            ErrorKind::Read(e) => write!(f, ": cannot read: {e}"),
            ErrorKind::UnknownKey { suggestion: None } => {
                f.write_str(": unknown configuration key")
            }
            ErrorKind::UnknownKey {
                suggestion: Some(s),
            } => write!(f, ": unknown configuration key (did you mean `{s}`?)"),
            ErrorKind::MissingValue => f.write_str(": missing value"),
            ErrorKind::InvalidValue { value, expected } => {
                write!(f, ": invalid value '{value}' (expected {expected})")
            }
            ErrorKind::Unsupported(why) => write!(f, ": not supported: {why}"),
            ErrorKind::NestedInclude => {
                f.write_str(": only allowed in the main configuration file")
            }
            ErrorKind::Bridge(e) => write!(f, ": {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration (never empty), in file and line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}

/// One error per line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.key,
            self.message
        )
    }
}
