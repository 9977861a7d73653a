//! Bindings of [`crate::batching`]: numpy arrays in and out of Rust-owned tensors, the Python
//! runner as the batch executor, and delivery to asyncio futures or blocked threads.
//!
//! Interpreter use per batch: instance threads concatenate without it, attach once to wrap the
//! batch inputs (zero-copy) and call `runner.run`, keeping its output arrays. Results for
//! asyncio callers go to the caller loop's [`Mailbox`]; the loop makes each request's outputs
//! as views of its rows of those arrays (zero-copy) and resolves the awaitables, so
//! delivering needs no second attach here.

use crate::batching::tensor::{self, DType, Tensor};
use crate::batching::{
    Batcher, Config, Done, Executor, Mailbox, Payload, QueuePolicy, TimeoutAction, Timing,
};
use crate::error::{CoreError, CoreResult};
use numpy::npyffi::{self, NpyTypes, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{PyArray1, PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyException, PyRuntimeError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use std::os::raw::c_int;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// Named tensors sharing one name list (outputs of a batch, or one request's inputs).
struct Named {
    names: Arc<[String]>,
    tensors: Vec<Tensor>,
}

type Outcome = (CoreResult<Rows>, Timing);

/// Where a finished request goes.
enum Reply {
    /// A thread blocked in `infer_sync`.
    Sync(Arc<Slot>),
    /// An asyncio awaitable, resolved on its loop through the loop's mailbox.
    Async {
        mailbox: Arc<Mailbox<Delivery>>,
        pending: Py<PyPending>,
        with_timing: bool,
    },
}

#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
}

struct Delivery {
    pending: Py<PyPending>,
    outcome: Outcome,
    with_timing: bool,
}

struct Job {
    inputs: Named,
    rows: usize,
    reply: Reply,
}

impl Payload for Job {
    fn rows(&self) -> usize {
        self.rows
    }

    fn batches_with(&self, other: &Self) -> bool {
        self.inputs.names == other.inputs.names
            && self
                .inputs
                .tensors
                .iter()
                .zip(&other.inputs.tensors)
                .all(|(a, b)| a.dtype == b.dtype && a.inner_shape() == b.inner_shape())
    }
}

/// numpy dtype descriptors seen so far, by type number, to rebuild arrays from tensors.
#[derive(Default)]
struct Descrs(Mutex<Vec<(i32, Py<PyArrayDescr>)>>);

impl Descrs {
    fn remember(&self, descr: &Bound<'_, PyArrayDescr>) -> DType {
        let num = descr.num();
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !known.iter().any(|(n, _)| *n == num) {
            known.push((num, descr.clone().unbind()));
        }
        DType {
            num,
            itemsize: descr.itemsize(),
        }
    }

    fn get<'py>(&self, py: Python<'py>, dtype: DType) -> PyResult<Bound<'py, PyArrayDescr>> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known
            .iter()
            .find(|(n, _)| *n == dtype.num)
            .map(|(_, d)| d.bind(py).clone())
            .ok_or_else(|| PyException::new_err(format!("unknown dtype number {}", dtype.num)))
    }
}

/// Copy one numpy array (or anything `numpy.asarray` accepts) into a tensor; errors name it
/// as input `name`.
fn to_tensor(descrs: &Descrs, name: &str, value: &Bound<'_, PyAny>) -> CoreResult<Tensor> {
    let py = value.py();
    let converted;
    let mut arr = match value.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => {
            converted = numpy_asarray(py, value)
                .map_err(|e| CoreError::invalid(format!("input '{name}' is not an array: {e}")))?;
            converted
                .cast_into::<PyUntypedArray>()
                .map_err(|_| CoreError::invalid(format!("input '{name}' is not an array")))?
        }
    };
    let descr = arr.dtype();
    if descr.kind() == b'O' {
        return bytes_tensor(name, &arr);
    }
    if !matches!(descr.kind(), b'b' | b'i' | b'u' | b'f' | b'c') {
        return Err(CoreError::invalid(format!(
            "input '{name}' has dtype {}; batching handles bool, integer, float and complex \
             arrays and object arrays of bytes (BYTES)",
            descr.str().map(|s| s.to_string()).unwrap_or_default()
        )));
    }
    if descr.is_native_byteorder() == Some(false) {
        return Err(CoreError::invalid(format!(
            "input '{name}' is not in native byte order"
        )));
    }
    if arr.ndim() == 0 {
        return Err(CoreError::invalid(format!(
            "input '{name}' is a 0-d array; inputs need a batch dimension first"
        )));
    }
    if !arr.is_c_contiguous() {
        arr = arr
            .call_method0("copy")
            .and_then(|c| Ok(c.cast_into::<PyUntypedArray>()?))
            .map_err(|e| {
                CoreError::invalid(format!("input '{name}': cannot make it contiguous: {e}"))
            })?;
    }
    let dtype = descrs.remember(&descr);
    let shape = arr.shape().to_vec();
    let len = shape.iter().product::<usize>() * dtype.itemsize;
    // SAFETY: a C-contiguous array of this shape and item size holds `len` bytes at `data`;
    // the interpreter is held, so it cannot be freed or resized while we copy.
    let data = unsafe {
        let ptr = (*arr.as_array_ptr()).fields.data as *const u8;
        if len == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(ptr, len).to_vec()
        }
    };
    Tensor::new(dtype, shape, data)
}

/// Serialize an object array of bytes (KServe BYTES) into a [`DType::BYTES`] tensor; `str`
/// elements are taken as UTF-8. Errors name the input and the element.
fn bytes_tensor(name: &str, arr: &Bound<'_, PyUntypedArray>) -> CoreResult<Tensor> {
    if arr.ndim() == 0 {
        return Err(CoreError::invalid(format!(
            "input '{name}' is a 0-d array; inputs need a batch dimension first"
        )));
    }
    let shape = arr.shape().to_vec();
    let flat = arr
        .call_method1("reshape", (-1,))
        .and_then(|f| f.call_method0("tolist"))
        .map_err(|e| CoreError::invalid(format!("input '{name}': {e}")))?;
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(shape.iter().product());
    for (i, item) in flat
        .try_iter()
        .map_err(|e| CoreError::invalid(format!("input '{name}': {e}")))?
        .enumerate()
    {
        let item = item.map_err(|e| CoreError::invalid(format!("input '{name}': {e}")))?;
        let bytes = if let Ok(b) = item.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else if let Ok(s) = item.cast::<PyString>() {
            s.to_str()
                .map_err(|e| CoreError::invalid(format!("input '{name}' element {i}: {e}")))?
                .as_bytes()
                .to_vec()
        } else {
            return Err(CoreError::invalid(format!(
                "input '{name}' element {i} is {}, not bytes (BYTES elements are bytes)",
                item.get_type()
            )));
        };
        owned.push(bytes);
    }
    let data = tensor::serialize_bytes(owned.iter().map(Vec::as_slice))?;
    Tensor::new(DType::BYTES, shape, data)
}

/// An object array of bytes (each element a new bytes object) from a [`DType::BYTES`] tensor.
fn bytes_array<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let elements = tensor::deserialize_bytes(&t.data, t.shape.iter().product())?;
    let list: Vec<Bound<'py, PyBytes>> = elements.iter().map(|e| PyBytes::new(py, e)).collect();
    let numpy = py.import("numpy")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", numpy.getattr("object_")?)?;
    let flat = numpy.call_method("empty", (list.len(),), Some(&kwargs))?;
    for (i, item) in list.into_iter().enumerate() {
        flat.set_item(i, item)?;
    }
    flat.call_method1("reshape", (PyTuple::new(py, &t.shape)?,))
}

fn numpy_asarray<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    py.import("numpy")?.getattr("asarray")?.call1((value,))
}

/// Wrap a tensor as a numpy array without copying: the array views the tensor's buffer, owned
/// by a uint8 array set as its base.
fn to_array<'py>(py: Python<'py>, descrs: &Descrs, t: Tensor) -> PyResult<Bound<'py, PyAny>> {
    if t.dtype.is_bytes() {
        return bytes_array(py, &t);
    }
    let descr = descrs.get(py, t.dtype)?;
    let mut dims: Vec<npyffi::npy_intp> = t.shape.iter().map(|&d| d as npyffi::npy_intp).collect();
    let base = PyArray1::<u8>::from_vec(py, t.data);
    // SAFETY: `data` is the buffer `base` owns; `descr` is an owned reference.
    unsafe {
        let data = (*base.as_array_ptr()).fields.data;
        array_view(
            py,
            descr.into_ptr() as *mut npyffi::PyArray_Descr,
            &mut dims,
            data as *mut std::ffi::c_void,
            NPY_ARRAY_WRITEABLE,
            base.into_any(),
        )
    }
}

/// A numpy array over `data` (shape `dims`) kept alive by `base`.
///
/// # Safety
/// `descr` is an owned descriptor reference (stolen, also on failure); `data` points into a
/// buffer that `base` owns and that holds the whole array. Standard numpy C-API use:
/// `SetBaseObject` steals the `base` reference (also on failure), so the buffer lives as long
/// as the new array.
unsafe fn array_view<'py>(
    py: Python<'py>,
    descr: *mut npyffi::PyArray_Descr,
    dims: &mut [npyffi::npy_intp],
    data: *mut std::ffi::c_void,
    flags: c_int,
    base: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    unsafe {
        let arr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            descr,
            dims.len() as c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data,
            flags,
            std::ptr::null_mut(),
        );
        if arr.is_null() {
            return Err(PyErr::fetch(py));
        }
        let arr = Bound::from_owned_ptr(py, arr);
        if PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            arr.as_ptr() as *mut npyffi::PyArrayObject,
            base.into_ptr(),
        ) < 0
        {
            return Err(PyErr::fetch(py));
        }
        Ok(arr)
    }
}

fn to_dict<'py>(py: Python<'py>, descrs: &Descrs, named: Named) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, t) in named.names.iter().zip(named.tensors) {
        dict.set_item(name, to_array(py, descrs, t)?)?;
    }
    Ok(dict)
}

/// The sorted input names of the latest request, shared by later requests with the same
/// names so that a request allocates no name strings.
#[derive(Default)]
struct InputNames(Mutex<Option<Arc<[String]>>>);

impl InputNames {
    fn intern(&self, sorted: &[&str]) -> Arc<[String]> {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(names) = last.as_ref() {
            if names.len() == sorted.len() && names.iter().zip(sorted).all(|(a, b)| a == b) {
                return Arc::clone(names);
            }
        }
        let names: Arc<[String]> = sorted.iter().map(|s| s.to_string()).collect();
        *last = Some(Arc::clone(&names));
        names
    }
}

/// Read a request's inputs: names sorted, one tensor each, all with the same rows.
fn read_inputs(
    descrs: &Descrs,
    known: &InputNames,
    inputs: &Bound<'_, PyDict>,
) -> CoreResult<(Named, usize)> {
    if inputs.is_empty() {
        return Err(CoreError::invalid("a request needs at least one input"));
    }
    let mut pairs = Vec::with_capacity(inputs.len());
    for (k, v) in inputs.iter() {
        let key = k.cast_into::<PyString>().map_err(|e| {
            CoreError::invalid(format!(
                "input names must be strings, got {}",
                e.into_inner()
            ))
        })?;
        pairs.push((key, v));
    }
    let mut items = Vec::with_capacity(pairs.len());
    for (key, v) in &pairs {
        let name = key
            .to_str()
            .map_err(|e| CoreError::invalid(format!("input name {key} is not valid text: {e}")))?;
        items.push((name, to_tensor(descrs, name, v)?));
    }
    items.sort_by(|a, b| a.0.cmp(b.0));
    let rows = items[0].1.rows();
    if let Some((name, t)) = items.iter().find(|(_, t)| t.rows() != rows) {
        return Err(CoreError::invalid(format!(
            "input '{name}' has {} rows but input '{}' has {rows}; the inputs of one request share the batch dimension",
            t.rows(),
            items[0].0
        )));
    }
    let (names, tensors): (Vec<&str>, Vec<Tensor>) = items.into_iter().unzip();
    Ok((
        Named {
            names: known.intern(&names),
            tensors,
        },
        rows,
    ))
}

struct PyExec {
    run: Py<PyAny>,
    descrs: Arc<Descrs>,
    input_names: InputNames,
}

/// One output array of a batch as the runner returned it (made C-contiguous if it was not).
/// Each request gets a view of its rows whose base is this array, so no bytes are copied and
/// the array lives as long as any view of it.
struct BatchOutput {
    descr: Py<PyArrayDescr>,
    shape: Vec<usize>,
    data: *mut u8,
    row_bytes: usize,
    writeable: bool,
    array: Py<PyAny>,
}

// SAFETY: `data` points into `array`, which this value keeps alive; it is only dereferenced
// by numpy through views made with the interpreter held.
unsafe impl Send for BatchOutput {}
unsafe impl Sync for BatchOutput {}

/// The outputs of one batch, shared by the requests that ran in it.
struct BatchOutputs {
    names: Vec<String>,
    outputs: Vec<BatchOutput>,
}

/// One request's rows of its batch's outputs.
struct Rows {
    batch: Arc<BatchOutputs>,
    start: usize,
    rows: usize,
}

/// A numpy view of rows `start..start + rows` of `out`.
fn row_view<'py>(
    py: Python<'py>,
    out: &BatchOutput,
    start: usize,
    rows: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims: Vec<npyffi::npy_intp> =
        out.shape.iter().map(|&d| d as npyffi::npy_intp).collect();
    dims[0] = rows as npyffi::npy_intp;
    let flags = if out.writeable {
        NPY_ARRAY_WRITEABLE
    } else {
        0
    };
    // SAFETY: the rows lie inside the C-contiguous buffer of `out.array` (the runner's output
    // was checked to have all the batch's rows), which becomes the view's base.
    unsafe {
        array_view(
            py,
            out.descr.clone_ref(py).into_ptr() as *mut npyffi::PyArray_Descr,
            &mut dims,
            out.data.add(start * out.row_bytes) as *mut std::ffi::c_void,
            flags,
            out.array.bind(py).clone().into_any(),
        )
    }
}

fn rows_dict<'py>(py: Python<'py>, r: &Rows) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, out) in r.batch.names.iter().zip(&r.batch.outputs) {
        dict.set_item(name, row_view(py, out, r.start, r.rows)?)?;
    }
    Ok(dict)
}

fn model_error(py: Python<'_>, err: PyErr) -> CoreError {
    let name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    CoreError::Inference(format!("{name}: {}", err.value(py)))
}

impl PyExec {
    fn call_runner(&self, batch: Named, rows: usize) -> CoreResult<BatchOutputs> {
        Python::attach(|py| {
            let inputs = to_dict(py, &self.descrs, batch).map_err(|e| model_error(py, e))?;
            let out = self
                .run
                .bind(py)
                .call1((inputs,))
                .map_err(|e| model_error(py, e))?;
            let out = out.cast_into::<PyDict>().map_err(|e| {
                CoreError::Inference(format!(
                    "runner.run must return a dict of arrays, got {}",
                    e.into_inner().get_type()
                ))
            })?;
            let mut names = Vec::with_capacity(out.len());
            let mut outputs = Vec::with_capacity(out.len());
            for (k, v) in out.iter() {
                let name = k.str().map(|s| s.to_string()).unwrap_or_default();
                let what = format!("runner output '{name}'");
                let arr = if v
                    .cast::<PyUntypedArray>()
                    .is_ok_and(|a| a.is_c_contiguous())
                {
                    v
                } else {
                    numpy_asarray(py, &v)
                        .and_then(|a| a.call_method1("copy", ("C",)))
                        .map_err(|e| CoreError::Inference(format!("{what} is not an array: {e}")))?
                };
                let a = arr
                    .cast::<PyUntypedArray>()
                    .map_err(|_| CoreError::Inference(format!("{what} is not an array")))?;
                let descr = a.dtype();
                let shape = a.shape().to_vec();
                if shape.first() != Some(&rows) {
                    let got = shape
                        .first()
                        .map_or("no batch dimension".into(), |n| format!("{n} rows"));
                    return Err(CoreError::Inference(format!(
                        "{what} has {got} for a batch of {rows} rows; outputs must have the batch dimension first"
                    )));
                }
                let row_bytes = shape[1..].iter().product::<usize>() * descr.itemsize();
                // SAFETY: reading the fields of a live array, see BatchOutput.
                let (data, writeable) = unsafe {
                    let raw = &*a.as_array_ptr();
                    (
                        raw.fields.data as *mut u8,
                        raw.fields.flags & NPY_ARRAY_WRITEABLE != 0,
                    )
                };
                names.push(name);
                outputs.push(BatchOutput {
                    descr: descr.unbind(),
                    shape,
                    data,
                    row_bytes,
                    writeable,
                    array: arr.unbind(),
                });
            }
            Ok(BatchOutputs { names, outputs })
        })
    }
}

impl Executor for PyExec {
    type Payload = Job;
    type Output = Rows;

    fn run(&self, batch: &[Job]) -> CoreResult<Vec<Rows>> {
        let first = &batch[0].inputs;
        let tensors = (0..first.tensors.len())
            .map(|i| {
                tensor::concat(
                    &batch
                        .iter()
                        .map(|j| &j.inputs.tensors[i])
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<CoreResult<Vec<_>>>()?;
        let rows: Vec<usize> = batch.iter().map(|j| j.rows).collect();
        let merged = Named {
            names: Arc::clone(&first.names),
            tensors,
        };
        let outputs = Arc::new(self.call_runner(merged, rows.iter().sum())?);
        let mut start = 0;
        Ok(rows
            .iter()
            .map(|&n| {
                start += n;
                Rows {
                    batch: Arc::clone(&outputs),
                    start: start - n,
                    rows: n,
                }
            })
            .collect())
    }

    fn complete(&self, done: Vec<Done<Job, Rows>>) {
        let mut groups: Vec<(Arc<Mailbox<Delivery>>, Vec<Delivery>)> = Vec::new();
        for d in done {
            let outcome = (d.result, d.timing);
            match d.payload.reply {
                Reply::Sync(slot) => {
                    *slot.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                    slot.ready.notify_one();
                }
                Reply::Async {
                    mailbox,
                    pending,
                    with_timing,
                } => {
                    let item = Delivery {
                        pending,
                        outcome,
                        with_timing,
                    };
                    match groups.iter_mut().find(|(m, _)| Arc::ptr_eq(m, &mailbox)) {
                        Some((_, items)) => items.push(item),
                        None => groups.push((mailbox, vec![item])),
                    }
                }
            }
        }
        for (mailbox, items) in groups {
            mailbox.push_all(items);
        }
    }

    /// Attach once for the thread's lifetime and stay detached except inside `call_runner`:
    /// re-attaching then reuses this thread state instead of creating one per batch.
    fn instance_thread(&self, body: &mut (dyn FnMut() + Send)) {
        Python::attach(|py| py.detach(body))
    }
}

fn timing_tuple<'py>(py: Python<'py>, t: Timing) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [t.queue_ns, t.compute_ns, t.batch_size as u64])
}

/// The Python value of a finished request: outputs, or `(outputs, timing)`.
fn outcome_value<'py>(
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

fn micros(what: &str, v: Option<i64>) -> CoreResult<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(us) if us >= 0 => Ok(Some(Duration::from_micros(us as u64))),
        Some(us) => Err(CoreError::invalid(format!(
            "{what} must be >= 0 microseconds, got {us}"
        ))),
    }
}

fn count(what: &str, v: i64) -> CoreResult<usize> {
    usize::try_from(v).map_err(|_| CoreError::invalid(format!("{what} must be >= 0, got {v}")))
}

/// A queue policy as Python passes it: `(max_queue_size, default_timeout_us,
/// allow_timeout_override, timeout_action)`.
type PolicyArgs = (i64, i64, bool, String);

fn queue_policy((size, timeout_us, allow_override, action): PolicyArgs) -> CoreResult<QueuePolicy> {
    Ok(QueuePolicy {
        max_queue_size: count("max_queue_size", size)?,
        default_timeout: micros("default_timeout_us", Some(timeout_us))?.filter(|d| !d.is_zero()),
        allow_timeout_override: allow_override,
        timeout_action: TimeoutAction::from_name(&action)?,
    })
}

fn priority(p: i64) -> CoreResult<u32> {
    u32::try_from(p).map_err(|_| {
        CoreError::invalid(format!(
            "priority {p} is out of range: use 0 (default) or a level from 1"
        ))
    })
}

/// Completion mailbox of one asyncio loop; the loop watches `fileno()` and calls `deliver()`.
#[pyclass(frozen, name = "Mailbox", module = "servekit._core")]
struct PyMailbox {
    inner: Arc<Mailbox<Delivery>>,
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
struct PyPending {
    state: PendingState,
    callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
    event_loop: Py<PyAny>,
    blocking: bool,
    yielded: bool,
    /// The batcher and request id while it may still be queued (for cancellation). Weak:
    /// the queued request holds this object, so a strong reference would be a cycle.
    request: Option<(Weak<Batcher<PyExec>>, u64)>,
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
    fn new(event_loop: Py<PyAny>) -> Self {
        PyPending {
            state: PendingState::Waiting,
            callbacks: Vec::new(),
            event_loop,
            blocking: false,
            yielded: false,
            request: None,
        }
    }

    fn is_done(&self) -> bool {
        !matches!(self.state, PendingState::Waiting)
    }

    fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
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
    fn resolve(slf: &Bound<'_, Self>, value: PyResult<Bound<'_, PyAny>>) -> PyResult<()> {
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

    fn done(&self) -> bool {
        self.is_done()
    }

    fn cancelled(&self) -> bool {
        matches!(self.state, PendingState::Cancelled(_))
    }

    /// The outputs (or `(outputs, timing)`); raises the request's error, CancelledError or
    /// InvalidStateError while it is not done.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.outcome(py)
    }

    /// The request's error or None; raises CancelledError or InvalidStateError.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
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
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
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
fn install_pending_send(py: Python<'_>) {
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

/// The Rust batcher around a Python runner's `run` method.
#[pyclass(frozen, name = "Batcher", module = "servekit._core")]
struct PyBatcher {
    inner: Arc<Batcher<PyExec>>,
}

#[pymethods]
impl PyBatcher {
    #[new]
    #[pyo3(signature = (run, *, max_batch_size, max_queue_delay_us, preferred_batch_sizes, default_queue_policy, priority_queue_policy, priority_levels, instances))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        run: Py<PyAny>,
        max_batch_size: i64,
        max_queue_delay_us: i64,
        preferred_batch_sizes: Vec<i64>,
        default_queue_policy: PolicyArgs,
        priority_queue_policy: Vec<(i64, PolicyArgs)>,
        priority_levels: i64,
        instances: i64,
    ) -> PyResult<Self> {
        let cfg = Config {
            max_batch_size: count("max_batch_size", max_batch_size)?,
            max_queue_delay: micros("max_queue_delay_us", Some(max_queue_delay_us))?
                .unwrap_or_default(),
            preferred_batch_sizes: preferred_batch_sizes
                .into_iter()
                .map(|p| count("a preferred batch size", p))
                .collect::<CoreResult<_>>()?,
            default_policy: queue_policy(default_queue_policy)?,
            level_policies: priority_queue_policy
                .into_iter()
                .map(|(level, p)| Ok((count("a priority level", level)?, queue_policy(p)?)))
                .collect::<CoreResult<_>>()?,
            priority_levels: count("priority_levels", priority_levels)?,
            instances: count("instances", instances)?,
        };
        let exec = PyExec {
            run,
            descrs: Arc::default(),
            input_names: InputNames::default(),
        };
        Ok(PyBatcher {
            inner: Arc::new(Batcher::start(cfg, exec)?),
        })
    }

    /// A new mailbox for one event loop.
    fn mailbox(&self) -> PyResult<PyMailbox> {
        Ok(PyMailbox {
            inner: Arc::new(Mailbox::new()?),
        })
    }

    /// Queue a request; returns the awaitable that `mailbox` resolves on `event_loop`.
    #[pyo3(signature = (inputs, mailbox, event_loop, priority, timeout_us, with_timing))]
    fn submit<'py>(
        &self,
        inputs: &Bound<'py, PyDict>,
        mailbox: &Bound<'py, PyMailbox>,
        event_loop: Py<PyAny>,
        priority: i64,
        timeout_us: Option<i64>,
        with_timing: bool,
    ) -> PyResult<Bound<'py, PyPending>> {
        let py = inputs.py();
        let exec = self.inner.executor();
        let (named, rows) = read_inputs(&exec.descrs, &exec.input_names, inputs)?;
        let level = self::priority(priority)?;
        let timeout = micros("timeout_us", timeout_us)?;
        let pending = Bound::new(py, PyPending::new(event_loop))?;
        let job = Job {
            inputs: named,
            rows,
            reply: Reply::Async {
                mailbox: Arc::clone(&mailbox.get().inner),
                pending: pending.clone().unbind(),
                with_timing,
            },
        };
        let id = self.inner.submit(job, level, timeout)?;
        pending.borrow_mut().request = Some((Arc::downgrade(&self.inner), id));
        Ok(pending)
    }

    /// Queue a request and wait for it with the interpreter released.
    #[pyo3(signature = (inputs, priority, timeout_us, with_timing))]
    fn infer_sync<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyDict>,
        priority: i64,
        timeout_us: Option<i64>,
        with_timing: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exec = self.inner.executor();
        let (named, rows) = read_inputs(&exec.descrs, &exec.input_names, inputs)?;
        let slot = Arc::new(Slot::default());
        let job = Job {
            inputs: named,
            rows,
            reply: Reply::Sync(Arc::clone(&slot)),
        };
        self.inner.submit(
            job,
            self::priority(priority)?,
            micros("timeout_us", timeout_us)?,
        )?;
        let outcome = py.detach(|| {
            let mut g = slot.outcome.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(o) = g.take() {
                    return o;
                }
                g = slot.ready.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        });
        outcome_value(py, outcome, with_timing)
    }

    /// Remove a queued request; True when it had not started.
    fn cancel(&self, id: u64) -> bool {
        self.inner.cancel(id).is_some()
    }

    /// Counters as a dict (see `servekit.batching.DynamicBatcher.stats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        for (k, v) in [
            ("success", s.success),
            ("fail", s.fail),
            ("queue_full", s.queue_full),
            ("timeout", s.timeout),
            ("delayed", s.delayed),
            ("cancelled", s.cancelled),
            ("inference_count", s.inference_count),
            ("execution_count", s.execution_count),
            ("queue_ns", s.queue_ns),
            ("compute_ns", s.compute_ns),
            ("queued", s.queued),
        ] {
            d.set_item(k, v)?;
        }
        let sizes = PyDict::new(py);
        for (size, b) in s.batch_sizes {
            let e = PyDict::new(py);
            e.set_item("count", b.count)?;
            e.set_item("compute_ns", b.compute_ns)?;
            sizes.set_item(size, e)?;
        }
        d.set_item("batch_sizes", sizes)?;
        Ok(d)
    }

    /// Stop taking requests, drain or fail the queue, wait up to `timeout_s` for the instances;
    /// returns whether they all finished.
    #[pyo3(signature = (drain, timeout_s))]
    fn close(&self, py: Python<'_>, drain: bool, timeout_s: Option<f64>) -> PyResult<bool> {
        let timeout = match timeout_s {
            Some(t) if !(t >= 0.0 && t.is_finite()) => {
                return Err(CoreError::invalid(format!(
                    "timeout_s must be a finite number >= 0, got {t}"
                ))
                .into())
            }
            t => t.map(Duration::from_secs_f64),
        };
        Ok(py.detach(|| self.inner.close(drain, timeout)))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBatcher>()?;
    m.add_class::<PyPending>()?;
    install_pending_send(m.py());
    m.add_class::<PyMailbox>()?;
    Ok(())
}
