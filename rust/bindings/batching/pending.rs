//! `PendingResult`, the awaitable of one asyncio request, and its `am_send` slot.

use super::executor::PyExec;
use crate::batching::Batcher;
use pyo3::exceptions::{PyException, PyRuntimeError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Weak;

enum PendingState {
    Waiting,
    Ready(Py<PyAny>),
    Failed(PyErr),
    /// Cancelled, with the message given to `cancel`.
    Cancelled(Option<Py<PyAny>>),
}

/// The awaitable of one asyncio request: a minimal asyncio-compatible future implemented
/// here so that a request costs no `asyncio.Future`, no `loop.call_soon` handle and no extra
/// loop iteration. It speaks the protocol `asyncio.Task` uses for foreign futures
/// (`_asyncio_future_blocking`, `get_loop`, `add_done_callback` with a context, `result`,
/// `cancel`). Invariant: it is only touched on its loop's thread, with the interpreter held;
/// worker threads merely move the reference into the mailbox.
#[pyclass(name = "PendingResult", module = "servekit._core")]
pub(super) struct PyPending {
    state: PendingState,
    callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
    event_loop: Py<PyAny>,
    blocking: bool,
    yielded: bool,
    /// The batcher and request id while it may still be queued (for cancellation). Weak:
    /// the queued request holds this object, so a strong reference would be a cycle.
    pub(super) request: Option<(Weak<Batcher<PyExec>>, u64)>,
}

fn asyncio_error<'py>(py: Python<'py>, name: &str, msg: Option<&Py<PyAny>>) -> PyErr {
    let made = py
        .import("asyncio")
        .and_then(|m| m.getattr(name))
        .and_then(|cls| match msg {
            Some(m) => cls.call1((m,)),
            None => cls.call0(),
        });
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

impl PyPending {
    pub(super) fn new(event_loop: Py<PyAny>) -> Self {
        PyPending {
            state: PendingState::Waiting,
            callbacks: Vec::new(),
            event_loop,
            blocking: false,
            yielded: false,
            request: None,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        !matches!(self.state, PendingState::Waiting)
    }

    pub(super) fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.state {
            PendingState::Ready(v) => Ok(v.clone_ref(py)),
            PendingState::Failed(e) => Err(e.clone_ref(py)),
            PendingState::Cancelled(msg) => Err(asyncio_error(py, "CancelledError", msg.as_ref())),
            PendingState::Waiting => Err(asyncio_error(py, "InvalidStateError", None)),
        }
    }

    /// Settle a waiting request and run its done callbacks now (we are a callback of the
    /// loop ourselves, so this is what the loop would do one iteration later). Returns the
    /// first `BaseException` that is not an `Exception`; others go to the loop's handler.
    pub(super) fn resolve(
        slf: &Bound<'_, Self>,
        value: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let callbacks = {
            let mut p = slf.borrow_mut();
            if p.is_done() {
                return Ok(());
            }
            p.state = match value {
                Ok(v) => PendingState::Ready(v.unbind()),
                Err(e) => PendingState::Failed(e),
            };
            p.request = None;
            std::mem::take(&mut p.callbacks)
        };
        for (callback, context) in callbacks {
            let ran = match context {
                Some(ctx) => ctx
                    .bind(py)
                    .call_method1(intern!(py, "run"), (callback.bind(py), slf)),
                None => callback.bind(py).call1((slf,)),
            };
            if let Err(e) = ran {
                if !e.is_instance_of::<PyException>(py) {
                    return Err(e);
                }
                let report = PyDict::new(py);
                report.set_item("message", "Exception in a servekit request callback")?;
                report.set_item("exception", e.value(py))?;
                report.set_item("future", slf)?;
                slf.borrow()
                    .event_loop
                    .bind(py)
                    .call_method1("call_exception_handler", (report,))?;
            }
        }
        Ok(())
    }

    /// Schedule `callback(self)` on the loop (for callbacks added or fired outside `deliver`).
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: &Py<PyAny>,
        context: Option<&Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let kwargs = PyDict::new(py);
        kwargs.set_item("context", context)?;
        slf.borrow().event_loop.bind(py).call_method(
            intern!(py, "call_soon"),
            (callback, slf),
            Some(&kwargs),
        )?;
        Ok(())
    }
}

#[pymethods]
impl PyPending {
    #[getter(_asyncio_future_blocking)]
    fn get_blocking(&self) -> bool {
        self.blocking
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(&mut self, value: bool) {
        self.blocking = value;
    }

    /// The event loop this request resolves on.
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    pub(super) fn done(&self) -> bool {
        self.is_done()
    }

    pub(super) fn cancelled(&self) -> bool {
        matches!(self.state, PendingState::Cancelled(_))
    }

    /// The outputs (or `(outputs, timing)`); raises the request's error, CancelledError or
    /// InvalidStateError while it is not done.
    pub(super) fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.outcome(py)
    }

    /// The request's error or None; raises CancelledError or InvalidStateError.
    pub(super) fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.state {
            PendingState::Failed(e) => Ok(Some(e.value(py).clone().into_any().unbind())),
            PendingState::Ready(_) => Ok(None),
            _ => self.outcome(py).map(|_| None),
        }
    }

    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        if slf.borrow().is_done() {
            return Self::call_soon(slf, &callback, context.as_ref());
        }
        slf.borrow_mut().callbacks.push((callback, context));
        Ok(())
    }

    /// Remove every registration of `callback`; returns how many were removed.
    fn remove_done_callback(&mut self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> usize {
        let before = self.callbacks.len();
        self.callbacks
            .retain(|(c, _)| !c.bind(py).eq(callback).unwrap_or(false));
        before - self.callbacks.len()
    }

    /// Cancel the request: it leaves the queue if it has not started, and the awaiting task
    /// gets CancelledError. Returns False when it was already done.
    #[pyo3(signature = (msg=None))]
    pub(super) fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let (callbacks, request) = {
            let mut p = slf.borrow_mut();
            if p.is_done() {
                return Ok(false);
            }
            p.state = PendingState::Cancelled(msg);
            (std::mem::take(&mut p.callbacks), p.request.take())
        };
        if let Some((batcher, id)) = request {
            if let Some(batcher) = batcher.upgrade() {
                batcher.cancel(id);
            }
        }
        for (callback, context) in &callbacks {
            Self::call_soon(slf, callback, context.as_ref())?;
        }
        Ok(true)
    }

    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Yield itself once to the awaiting task, then finish with the result (see `step`;
    /// `await` uses the `am_send` slot instead, which needs no StopIteration).
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        match Self::step(slf)? {
            Step::Yield(me) => Ok(me),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
        }
    }
}

enum Step {
    Yield(Py<PyAny>),
    Return(Py<PyAny>),
}

impl PyPending {
    /// One step of `await`: yield this object to the task while waiting (once), then return
    /// the result or raise the error.
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let py = slf.py();
        let mut p = slf.try_borrow_mut()?;
        if !p.is_done() {
            if p.yielded {
                return Err(PyRuntimeError::new_err("await wasn't used with future"));
            }
            p.yielded = true;
            p.blocking = true;
            return Ok(Step::Yield(slf.clone().into_any().unbind()));
        }
        p.outcome(py).map(Step::Return)
    }
}

/// The `am_send` slot of PendingResult: `await` resumes through it and gets the result back
/// directly, where `__next__` must wrap it in a StopIteration exception.
unsafe extern "C" fn pending_send(
    iter: *mut pyo3::ffi::PyObject,
    _arg: *mut pyo3::ffi::PyObject,
    result: *mut *mut pyo3::ffi::PyObject,
) -> pyo3::ffi::PySendResult {
    use pyo3::ffi::PySendResult;
    // SAFETY: CPython calls this slot with the interpreter attached and `iter` a live object
    // of the type the slot was installed on.
    let py = unsafe { Python::assume_attached() };
    let iter = unsafe { Bound::ref_from_ptr(py, &iter) };
    let stepped = iter
        .cast::<PyPending>()
        .map_err(PyErr::from)
        .and_then(PyPending::step);
    let (status, value) = match stepped {
        Ok(Step::Yield(v)) => (PySendResult::PYGEN_NEXT, v.into_ptr()),
        Ok(Step::Return(v)) => (PySendResult::PYGEN_RETURN, v.into_ptr()),
        Err(e) => {
            e.restore(py);
            (PySendResult::PYGEN_ERROR, std::ptr::null_mut())
        }
    };
    // SAFETY: CPython passes a valid place for the result.
    unsafe { *result = value };
    status
}

/// Install `pending_send` as PendingResult's `am_send` slot (PyO3 has no way to declare it).
pub(super) fn install_pending_send(py: Python<'_>) {
    let ty = py.get_type::<PyPending>();
    // SAFETY: PyO3 creates pyclass types as heap types (PyType_FromSpec), whose
    // `tp_as_async` points at the `as_async` table inside the type object itself (checked);
    // one slot of it is filled before any instance exists. Without it, `__next__` serves.
    unsafe {
        let heap = ty.as_ptr() as *mut pyo3::ffi::PyHeapTypeObject;
        if std::ptr::eq((*heap).ht_type.tp_as_async, &raw mut (*heap).as_async) {
            (*heap).as_async.am_send = Some(pending_send);
        }
    }
}
