//! The shim's errors, each mapped to the ttrpc status code containerd
//! turns back into its own error kinds (errdefs): NotFound stays NotFound
//! on the `ctr` side, a precondition stays a precondition.

use containerd_shim_protos::ttrpc;

/// Everything a task request can fail with; each names its subject.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The OCI runtime failed; the message is its own (from its JSON log).
    #[error("{0}")]
    Runtime(String),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] runtime_core::Error),
}

impl Error {
    /// Wraps an io::Error with what was being done.
    pub fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    fn code(&self) -> ttrpc::Code {
        match self {
            Error::NotFound(_) => ttrpc::Code::NOT_FOUND,
            Error::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            Error::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
            Error::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            Error::Unimplemented(_) => ttrpc::Code::UNIMPLEMENTED,
            Error::Runtime(_) | Error::Io { .. } | Error::Core(_) => ttrpc::Code::UNKNOWN,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
