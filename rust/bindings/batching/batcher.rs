//! `Batcher`, the Python class: settings checked and converted, requests read into tensors and
//! queued with their reply (an awaitable or a blocked thread), counters and close.

use super::convert::{read_inputs, InputNames};
use super::executor::{Job, PyExec, Reply, Slot};
use super::mailbox::{outcome_value, PyMailbox};
use super::pending::PyPending;
use crate::batching::{Batcher, Config, Mailbox, QueuePolicy, TimeoutAction};
use crate::error::{CoreError, CoreResult};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::time::Duration;

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

/// The Rust batcher around a Python runner's `run` method.
#[pyclass(frozen, name = "Batcher", module = "servekit._core")]
pub(super) struct PyBatcher {
    pub(super) inner: Arc<Batcher<PyExec>>,
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
