//! The Python exception hierarchy of servekit, created once here and mapped from
//! [`CoreError`] in one `From` impl. `servekit.errors` re-exports these classes.
//!
//! Each class keeps `ServekitError` as its base and also subclasses the built-in a user would
//! catch for it (`InvalidArgumentError` is a `ValueError`, `NotFoundError` a `LookupError`,
//! `RequestTimeoutError` a `TimeoutError`...). A class with two bases cannot be declared with
//! `create_exception!`, so the classes are built once per interpreter with `type(...)`.

use crate::error::CoreError;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// One class: name, parent in this table (`None`: `Exception`), built-in also subclassed, doc.
struct Class {
    name: &'static str,
    parent: Option<Kind>,
    builtin: Option<&'static str>,
    doc: &'static str,
}

/// The classes, in an order where every parent comes before its children.
#[derive(Clone, Copy)]
enum Kind {
    Servekit,
    InvalidArgument,
    NotFound,
    Integrity,
    Storage,
    Conflict,
    Precondition,
    Unavailable,
    QueueFull,
    Timeout,
    Inference,
}

const CLASSES: [Class; 11] = [
    Class {
        name: "ServekitError",
        parent: None,
        builtin: None,
        doc: "Base class of every servekit error.",
    },
    Class {
        name: "InvalidArgumentError",
        parent: Some(Kind::Servekit),
        builtin: Some("ValueError"),
        doc: "A value given by the caller is not acceptable.",
    },
    Class {
        name: "NotFoundError",
        parent: Some(Kind::Servekit),
        builtin: Some("LookupError"),
        doc: "A path, model, version or alias does not exist.",
    },
    Class {
        name: "IntegrityError",
        parent: Some(Kind::Servekit),
        builtin: Some("ValueError"),
        doc: "Stored content does not match its recorded digest (or changed while it was read).",
    },
    Class {
        name: "StorageError",
        parent: Some(Kind::Servekit),
        builtin: Some("OSError"),
        doc: "An operating-system error reading or writing a named path.",
    },
    Class {
        name: "ConflictError",
        parent: Some(Kind::Servekit),
        builtin: None,
        doc: "The operation conflicts with what is stored.",
    },
    Class {
        name: "PreconditionFailedError",
        parent: Some(Kind::Conflict),
        builtin: None,
        doc: "A compare-and-swap found other than expected (an alias moved); nothing changed.",
    },
    Class {
        name: "UnavailableError",
        parent: Some(Kind::Servekit),
        builtin: None,
        doc: "The service cannot take the request now (HTTP 503).",
    },
    Class {
        name: "QueueFullError",
        parent: Some(Kind::Unavailable),
        builtin: None,
        doc: "A queue is full: \"Exceeds maximum queue size\".",
    },
    Class {
        name: "RequestTimeoutError",
        parent: Some(Kind::Unavailable),
        builtin: Some("TimeoutError"),
        doc: "A request expired: \"Request timeout expired\".",
    },
    Class {
        name: "InferenceError",
        parent: Some(Kind::Servekit),
        builtin: Some("RuntimeError"),
        doc: "The model failed while computing a result.",
    },
];

static TYPES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn build(py: Python<'_>) -> PyResult<Vec<Py<PyType>>> {
    let builtins = py.import("builtins")?;
    let make_type = builtins.getattr("type")?;
    let mut made: Vec<Py<PyType>> = Vec::with_capacity(CLASSES.len());
    for class in &CLASSES {
        let mut bases: Vec<Bound<'_, PyAny>> = Vec::with_capacity(2);
        match class.parent {
            Some(parent) => bases.push(made[parent as usize].bind(py).clone().into_any()),
            None => bases.push(py.get_type::<PyException>().into_any()),
        }
        if let Some(builtin) = class.builtin {
            bases.push(builtins.getattr(builtin)?);
        }
        let namespace = PyDict::new(py);
        namespace.set_item("__doc__", class.doc)?;
        namespace.set_item("__module__", "servekit.errors")?;
        let ty = make_type.call1((class.name, PyTuple::new(py, bases)?, namespace))?;
        made.push(ty.cast_into::<PyType>()?.unbind());
    }
    Ok(made)
}

fn class(py: Python<'_>, kind: Kind) -> Bound<'_, PyType> {
    let types = TYPES
        .get_or_try_init(py, || build(py))
        .expect("the exception classes are built from built-in types only");
    types[kind as usize].bind(py).clone()
}

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        let kind = match &err {
            CoreError::InvalidArgument(_) => Kind::InvalidArgument,
            CoreError::NotFound(_) => Kind::NotFound,
            CoreError::Integrity(_) => Kind::Integrity,
            CoreError::Conflict(_) => Kind::Conflict,
            CoreError::Precondition(_) => Kind::Precondition,
            CoreError::Unavailable(_) => Kind::Unavailable,
            CoreError::QueueFull(_) => Kind::QueueFull,
            CoreError::Timeout(_) => Kind::Timeout,
            CoreError::Inference(_) => Kind::Inference,
            CoreError::Io { .. } => Kind::Storage,
        };
        let msg = err.to_string();
        Python::attach(|py| PyErr::from_type(class(py, kind), (msg,)))
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
    let types = TYPES.get_or_try_init(py, || build(py))?;
    for (class, ty) in CLASSES.iter().zip(types) {
        m.add(class.name, ty.bind(py))?;
    }
    Ok(())
}
