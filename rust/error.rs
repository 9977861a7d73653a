//! The one error type of the Rust core. Every fallible function in the plain Rust modules
//! returns [`CoreError`]; the binding layer maps each kind to one Python exception class.

use std::path::{Path, PathBuf};

/// Result alias used throughout the core.
pub type CoreResult<T> = Result<T, CoreError>;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A value given by the caller is not acceptable (unknown algorithm, malformed name...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A path, model, version or alias that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Stored content does not match its recorded digest.
    #[error("{0}")]
    Integrity(String),
    /// The operation conflicts with what is stored (a name taken, an immutable field changed).
    #[error("{0}")]
    Conflict(String),
    /// A compare-and-swap found the stored state other than the caller expected (an alias
    /// moved since it was read); nothing changed.
    #[error("{0}")]
    Precondition(String),
    /// The service cannot take the request now (stopping, overloaded); retrying may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A queue reached its maximum size; the message contains "Exceeds maximum queue size".
    #[error("{0}")]
    QueueFull(String),
    /// A request waited longer than its timeout; the message contains "Request timeout expired".
    #[error("{0}")]
    Timeout(String),
    /// The model failed while computing a result; the message is the model's own.
    #[error("{0}")]
    Inference(String),
    /// An operating-system error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        CoreError::InvalidArgument(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        CoreError::NotFound(msg.into())
    }

    /// Wrap an I/O error with the path it concerns. A missing path becomes `NotFound` so that
    /// callers can tell "does not exist" from "cannot be read".
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            CoreError::NotFound(format!("{}: no such file or directory", path.display()))
        } else {
            CoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}
