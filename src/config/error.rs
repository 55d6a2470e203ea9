//! `config::Error`: every way a configuration can be rejected.
//!
//! Each variant that comes from a line of a file names the file, the line and the option,
//! in Mosquitto's wording ("Error: Invalid max_inflight_messages value 'abc' in
//! /etc/x.conf line 12"). This module only describes errors; it never reads files.

use std::path::PathBuf;

/// Where an option was read: file and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The configuration file (or included file).
    pub file: PathBuf,
    /// The line, from 1.
    pub line: usize,
}

impl Location {
    /// Line `line` (from 1) of `file`.
    pub fn new(file: impl Into<PathBuf>, line: usize) -> Self {
        Self {
            file: file.into(),
            line,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The value of an option does not parse or is out of range.
    #[error("Error: Invalid {option} value '{value}' in {at} ({reason}).")]
    InvalidValue {
        /// Where the option is (file and line).
        at: Location,
        /// The option, as written.
        option: String,
        /// The value, as written.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An option that needs a value has none.
    #[error("Error: Empty {option} value in {at}.")]
    MissingValue {
        /// Where the option is (file and line).
        at: Location,
        /// The option, as written.
        option: String,
    },
    /// The option is understood but not allowed here or in this combination
    /// (e.g. `protocol websockets`, `address` outside a `connection` block).
    #[error("Error: {message} ({option} in {at}).")]
    Invalid {
        /// Where the option is (file and line).
        at: Location,
        /// The option, as written.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The top-level configuration file cannot be read.
    #[error("Error: Unable to open config file {}: {source}.", path.display())]
    Unreadable {
        /// The configuration file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory named by an option (`include_dir`) cannot be read.
    #[error("Error: Unable to read {} ({option} in {at}): {source}.", path.display())]
    UnreadableInclude {
        /// Where the option is (file and line).
        at: Location,
        /// The option, as written.
        option: String,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// `include_dir` nesting too deep (a directory including itself).
    #[error("Error: include_dir nested more than {max} levels in {at}.")]
    IncludeTooDeep {
        /// Where the option is (file and line).
        at: Location,
        /// The deepest nesting allowed.
        max: usize,
    },
    /// Neither Mosquitto nor shardmq has this option (a typo must not, say, drop an ACL).
    #[error("Error: Unknown configuration variable \"{option}\" in {at}.")]
    Unknown {
        /// Where the option is (file and line).
        at: Location,
        /// The option, as written.
        option: String,
    },
    /// A Mosquitto option (or value) shardmq cannot honour yet; it concerns security,
    /// listening or routing, so the broker does not start without it.
    #[error("Error: {option} is not supported yet ({reason}), in {at}.")]
    NotYet {
        /// Where the option is (file and line).
        at: Location,
        /// The option, as written.
        option: String,
        /// Why it is refused.
        reason: String,
    },
    /// Several lines are wrong; each is reported (in file order).
    #[error("{}", join_lines(.0))]
    Many(Vec<Self>),
}

fn join_lines(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// The file and line the error points at, when it comes from a line.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::InvalidValue { at, .. }
            | Self::MissingValue { at, .. }
            | Self::Invalid { at, .. }
            | Self::UnreadableInclude { at, .. }
            | Self::IncludeTooDeep { at, .. }
            | Self::Unknown { at, .. }
            | Self::NotYet { at, .. } => Some(at),
            Self::Many(errors) => errors.first().and_then(Self::location),
            Self::Unreadable { .. } => None,
        }
    }
}
