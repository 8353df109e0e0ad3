//! The image crate's one error type. Every variant carries what the user
//! needs to act: the path, the digest, the reference, the registry's words.

use std::path::PathBuf;

/// Errors of the image store, unpacking, import and pull.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image name {name:?}: {reason}")]
    InvalidReference { name: String, reason: &'static str },
    #[error("invalid digest {0:?}: expected sha256: and 64 lowercase hex digits")]
    InvalidDigest(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image reference {0:?} is ambiguous: it matches more than one image ID")]
    Ambiguous(String),
    #[error("{0}")]
    InUse(String),
    #[error("layer {layer}: entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("layer {layer}: {message}")]
    Layer { layer: String, message: String },
    #[error("{path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error("{what} does not parse: {message}")]
    Json { what: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("no manifest for {wanted} in {reference} (it has: {available})")]
    Platform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("{0}")]
    Registry(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error with the operation and the path it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Wraps an errno from a nix call.
    pub fn errno(op: &'static str, path: impl Into<PathBuf>, e: nix::errno::Errno) -> Self {
        Error::io(op, path, std::io::Error::from(e))
    }

    /// Whether the error is a user's mistake about what exists (exit 125
    /// either way, but some callers word it differently).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
