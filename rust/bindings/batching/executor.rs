//! The Python runner as the batcher's [`Executor`]: instance threads concatenate the batch
//! without the interpreter, attach once to wrap it (zero-copy) and call `runner.run`, keep its
//! output arrays, and hand each finished request to its reply: a blocked thread's slot or the
//! caller loop's mailbox (so delivering needs no second attach here).

use super::convert::{
    numpy_asarray, to_dict, BatchOutput, BatchOutputs, Descrs, InputNames, Named, Rows,
};
use super::pending::PyPending;
use crate::batching::tensor;
use crate::batching::{Done, Executor, Mailbox, Payload, Timing};
use crate::error::{CoreError, CoreResult};
use numpy::npyffi::NPY_ARRAY_WRITEABLE;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::{Arc, Condvar, Mutex};

pub(super) type Outcome = (CoreResult<Rows>, Timing);

/// Where a finished request goes.
pub(super) enum Reply {
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
pub(super) struct Slot {
    pub(super) outcome: Mutex<Option<Outcome>>,
    pub(super) ready: Condvar,
}

pub(super) struct Delivery {
    pub(super) pending: Py<PyPending>,
    pub(super) outcome: Outcome,
    pub(super) with_timing: bool,
}

pub(super) struct Job {
    pub(super) inputs: Named,
    pub(super) rows: usize,
    pub(super) reply: Reply,
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

pub(super) struct PyExec {
    pub(super) run: Py<PyAny>,
    pub(super) descrs: Arc<Descrs>,
    pub(super) input_names: InputNames,
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
