//! The Python exception hierarchy of servekit, created once here and mapped from
//! [`CoreError`] in one `From` impl. `servekit.errors` re-exports these classes.

use crate::error::CoreError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    servekit,
    ServekitError,
    PyException,
    "Base class of every servekit error."
);
create_exception!(
    servekit,
    InvalidArgumentError,
    ServekitError,
    "A value given by the caller is not acceptable."
);
create_exception!(
    servekit,
    NotFoundError,
    ServekitError,
    "A path, model, version or alias does not exist."
);
create_exception!(
    servekit,
    IntegrityError,
    ServekitError,
    "Stored content does not match its recorded digest."
);
create_exception!(
    servekit,
    StorageError,
    ServekitError,
    "An operating-system error reading or writing a named path."
);
create_exception!(
    servekit,
    ConflictError,
    ServekitError,
    "The operation conflicts with what is stored."
);
create_exception!(
    servekit,
    UnavailableError,
    ServekitError,
    "The service cannot take the request now (HTTP 503)."
);
create_exception!(
    servekit,
    QueueFullError,
    UnavailableError,
    "A queue is full: \"Exceeds maximum queue size\"."
);
create_exception!(
    servekit,
    RequestTimeoutError,
    UnavailableError,
    "A request expired: \"Request timeout expired\"."
);
create_exception!(
    servekit,
    InferenceError,
    ServekitError,
    "The model failed while computing a result."
);

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        let msg = err.to_string();
        match err {
            CoreError::InvalidArgument(_) => InvalidArgumentError::new_err(msg),
            CoreError::NotFound(_) => NotFoundError::new_err(msg),
            CoreError::Integrity(_) => IntegrityError::new_err(msg),
            CoreError::Conflict(_) => ConflictError::new_err(msg),
            CoreError::Unavailable(_) => UnavailableError::new_err(msg),
            CoreError::QueueFull(_) => QueueFullError::new_err(msg),
            CoreError::Timeout(_) => RequestTimeoutError::new_err(msg),
            CoreError::Inference(_) => InferenceError::new_err(msg),
            CoreError::Io { .. } => StorageError::new_err(msg),
        }
    }
}

/// Run a long core operation with the interpreter released, then convert its error.
/// Callers take owned (or `Send`) inputs before calling, so nothing borrowed from Python is
/// touched while detached.
pub fn enter<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, CoreError> + Send,
    T: Send,
{
    py.detach(f).map_err(PyErr::from)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ServekitError", py.get_type::<ServekitError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("UnavailableError", py.get_type::<UnavailableError>())?;
    m.add("QueueFullError", py.get_type::<QueueFullError>())?;
    m.add("RequestTimeoutError", py.get_type::<RequestTimeoutError>())?;
    m.add("InferenceError", py.get_type::<InferenceError>())?;
    Ok(())
}
