//! The completion mailbox of one asyncio loop as a Python object: the loop watches its
//! descriptor and calls `deliver()`, which turns each finished request into its Python value
//! and resolves its awaitable.

use super::convert::rows_dict;
use super::executor::{Delivery, Outcome};
use super::pending::PyPending;
use crate::batching::{Mailbox, Timing};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::IntoPyObjectExt;
use std::sync::Arc;

fn timing_tuple<'py>(py: Python<'py>, t: Timing) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [t.queue_ns, t.compute_ns, t.batch_size as u64])
}

/// The Python value of a finished request: outputs, or `(outputs, timing)`.
pub(super) fn outcome_value<'py>(
    py: Python<'py>,
    outcome: Outcome,
    with_timing: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (result, timing) = outcome;
    let outputs = rows_dict(py, &result?)?;
    if with_timing {
        (outputs, timing_tuple(py, timing)?).into_bound_py_any(py)
    } else {
        Ok(outputs.into_any())
    }
}

/// Completion mailbox of one asyncio loop; the loop watches `fileno()` and calls `deliver()`.
#[pyclass(frozen, name = "Mailbox", module = "servekit._core")]
pub(super) struct PyMailbox {
    pub(super) inner: Arc<Mailbox<Delivery>>,
}

#[pymethods]
impl PyMailbox {
    fn fileno(&self) -> i32 {
        self.inner.fd()
    }

    /// Resolve every finished request and run its done callbacks (the awaiting tasks' steps)
    /// right here, instead of scheduling one loop callback per request; skips cancelled ones.
    /// A callback's `Exception` goes to the loop's exception handler; on a `BaseException`
    /// (KeyboardInterrupt, SystemExit) the undelivered requests go back to the mailbox and the
    /// exception propagates.
    fn deliver(&self, py: Python<'_>) -> PyResult<()> {
        let mut items = self.inner.take().into_iter();
        while let Some(d) = items.next() {
            let pending = d.pending.bind(py);
            if pending.borrow().is_done() {
                continue;
            }
            let value = outcome_value(py, d.outcome, d.with_timing);
            if let Err(fatal) = PyPending::resolve(pending, value) {
                self.inner.push_all(items);
                return Err(fatal);
            }
        }
        Ok(())
    }
}
