//! One error type for the library, so callers can match on what went wrong
//! and every message carries the path, ID or runtime output it is about.

use std::path::PathBuf;

/// Everything the library can fail with; each variant names its subject.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container {what} {value:?}: {reason}")]
    InvalidId {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("runtime {runtime} {op} failed: {message}")]
    Runtime {
        runtime: String,
        op: &'static str,
        message: String,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { len: usize, limit: usize },
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an io::Error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
