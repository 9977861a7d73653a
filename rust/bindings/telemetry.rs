//! Bindings of [`crate::telemetry`]: `DriftWindow` and `LatencySketch`.
//!
//! Both classes are frozen and keep their state behind a mutex, so server threads may share
//! one object: a call locks only after releasing the interpreter (or, for O(1) calls, while
//! holding it: the lock is never held while waiting for the interpreter, so this cannot
//! deadlock). Arrays are copied (any strides) while the interpreter is held, then recorded
//! without it.

use super::enter;
use crate::error::{CoreError, CoreResult};
use crate::telemetry::{drift_stats, BinnedWindow, Binner, SlidingSketch, ToF64, WindowSpec};
use numpy::ndarray::Array2;
use numpy::{
    dtype, Element, PyArrayDescrMethods, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Nanoseconds on the process-wide monotonic clock the telemetry objects use by default.
#[pyfunction]
fn telemetry_clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while recording cannot leave the counters half-updated in a way later calls
    // could not handle, so a poisoned lock is taken over rather than propagated.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn seconds_to_ns(seconds: f64, what: &str) -> CoreResult<u64> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(CoreError::invalid(format!(
            "{what} must be a positive number of seconds, got {seconds}"
        )));
    }
    Ok((seconds * 1e9).round() as u64)
}

/// Per-column bin counts over a sliding window, plus the reference each column is compared to.
#[pyclass(frozen, module = "servekit._core")]
struct DriftWindow {
    window: Mutex<BinnedWindow>,
    reference: Vec<Vec<f64>>,
    reference_rows: u64,
}

type ColumnStats = Option<(u64, f64, f64, f64, f64)>;

fn record_view<T: Copy + ToF64 + Element + Sync>(
    py: Python<'_>,
    window: &Mutex<BinnedWindow>,
    array: &PyReadonlyArray2<'_, T>,
    now_ns: u64,
) -> PyResult<()> {
    let view = array.as_array();
    if view.len() <= DETACH_ABOVE_VALUES {
        return Ok(lock(window).record(view, now_ns)?);
    }
    // A readonly borrow keeps only Rust writers away: Python threads may write the array as
    // soon as the interpreter is released, so the rows are copied while it is held.
    let rows: Array2<T> = view.to_owned();
    enter(py, move || lock(window).record(rows.view(), now_ns))
}

/// Arrays of up to this many values are binned in place with the interpreter held. Releasing
/// it costs more than binning a request's rows, and hands it to whichever thread waits for it
/// (a batcher instance thread, the telemetry timer) in the middle of the request: with the
/// release on every request, telemetry cost the digits model about 80-100 us of CPU per
/// request at 64 concurrent requests, without it about 10 (docs/hot-path.md). No deadlock: the
/// window's lock is never held by a thread waiting for the interpreter.
const DETACH_ABOVE_VALUES: usize = 1 << 14;

#[pymethods]
impl DriftWindow {
    /// `columns`: per column `("cuts", sorted cuts)` or `("labels", sorted labels)`;
    /// `reference`: per column the reference proportion of each bin (labels: one more bin for
    /// unseen labels). `rows` gives a count window, `seconds` a time window of `buckets` buckets,
    /// neither a cumulative one.
    #[new]
    #[pyo3(signature = (columns, reference, reference_rows, *, rows=None, seconds=None, buckets=12))]
    fn new(
        columns: Vec<(String, Vec<f64>)>,
        reference: Vec<Vec<f64>>,
        reference_rows: u64,
        rows: Option<usize>,
        seconds: Option<f64>,
        buckets: usize,
    ) -> PyResult<Self> {
        let spec = match (rows, seconds) {
            (Some(_), Some(_)) => {
                return Err(
                    CoreError::invalid("give a row window or a time window, not both").into(),
                )
            }
            (Some(n), None) => WindowSpec::Rows(n),
            (None, Some(s)) => WindowSpec::Time {
                span_ns: seconds_to_ns(s, "the window")?,
                buckets,
            },
            (None, None) => WindowSpec::Cumulative,
        };
        if reference.len() != columns.len() {
            return Err(CoreError::invalid(format!(
                "{} reference histograms for {} columns",
                reference.len(),
                columns.len()
            ))
            .into());
        }
        let mut binners = Vec::with_capacity(columns.len());
        for (j, ((kind, values), freqs)) in columns.into_iter().zip(&reference).enumerate() {
            let binner = match kind.as_str() {
                "cuts" => Binner::Cuts(values),
                "labels" => Binner::Labels(values),
                other => {
                    return Err(CoreError::invalid(format!(
                        "column {j}: unknown binning {other:?} (expected \"cuts\" or \"labels\")"
                    ))
                    .into())
                }
            };
            if freqs.len() != binner.bins() {
                return Err(CoreError::invalid(format!(
                    "column {j}: {} reference proportions for {} bins",
                    freqs.len(),
                    binner.bins()
                ))
                .into());
            }
            if freqs.iter().any(|f| !(f.is_finite() && *f >= 0.0)) {
                return Err(CoreError::invalid(format!(
                    "column {j}: reference proportions must be finite and >= 0"
                ))
                .into());
            }
            binners.push(binner);
        }
        Ok(DriftWindow {
            window: Mutex::new(BinnedWindow::new(binners, spec)?),
            reference,
            reference_rows,
        })
    }

    /// Bin and count every row of a 2-D float64, float32 or int64 array (rows x columns), read
    /// in place. `now_ns` defaults to `telemetry_clock_ns()`.
    #[pyo3(signature = (data, now_ns=None))]
    fn record(&self, py: Python<'_>, data: &Bound<'_, PyAny>, now_ns: Option<u64>) -> PyResult<()> {
        let now = now_ns.unwrap_or_else(telemetry_clock_ns);
        // Pick the element type from the dtype first: a failed extraction builds an exception,
        // which would cost more than the recording itself.
        if let Ok(array) = data.cast::<PyUntypedArray>() {
            let dt = array.dtype();
            if dt.is_equiv_to(&dtype::<f64>(py)) {
                if let Ok(a) = data.extract::<PyReadonlyArray2<'_, f64>>() {
                    return record_view(py, &self.window, &a, now);
                }
            } else if dt.is_equiv_to(&dtype::<f32>(py)) {
                if let Ok(a) = data.extract::<PyReadonlyArray2<'_, f32>>() {
                    return record_view(py, &self.window, &a, now);
                }
            } else if dt.is_equiv_to(&dtype::<i64>(py)) {
                if let Ok(a) = data.extract::<PyReadonlyArray2<'_, i64>>() {
                    return record_view(py, &self.window, &a, now);
                }
            }
        }
        Err(CoreError::invalid(format!(
            "expected a 2-D float64, float32 or int64 numpy array, got {}",
            describe(data)
        ))
        .into())
    }

    /// `(window rows, rows recorded in total, per column (values, psi, ks, ks_pvalue, js) or
    /// None when the window holds no value of the column)`, after expiring old time buckets.
    #[pyo3(signature = (now_ns=None))]
    fn statistics(
        &self,
        py: Python<'_>,
        now_ns: Option<u64>,
    ) -> PyResult<(u64, u64, Vec<ColumnStats>)> {
        let now = now_ns.unwrap_or_else(telemetry_clock_ns);
        enter(py, || {
            let mut w = lock(&self.window);
            w.advance(now);
            let stats = (0..w.columns())
                .map(|j| {
                    drift_stats(&self.reference[j], self.reference_rows, w.counts(j))
                        .map(|s| (w.present(j), s.psi, s.ks, s.ks_pvalue, s.js))
                })
                .collect();
            Ok((w.rows(), w.total_rows(), stats))
        })
    }

    /// `(window rows, rows recorded in total, per column its bin counts)` after expiring old
    /// time buckets: the state another process adds up with [`Self::statistics_of`].
    #[pyo3(signature = (now_ns=None))]
    fn state(&self, now_ns: Option<u64>) -> (u64, u64, Vec<Vec<u64>>) {
        let now = now_ns.unwrap_or_else(telemetry_clock_ns);
        let mut w = lock(&self.window);
        w.advance(now);
        let counts = (0..w.columns()).map(|j| w.counts(j).to_vec()).collect();
        (w.rows(), w.total_rows(), counts)
    }

    /// Per column `(values, psi, ks, ks_pvalue, js)` (or None for a column without values) of
    /// the given bin counts against this window's reference, as [`Self::statistics`] computes
    /// them for its own counts. Summed states of windows over the same profile give the
    /// statistics of all their rows. Fails when the counts do not have this window's columns
    /// and bins.
    fn statistics_of(&self, counts: Vec<Vec<u64>>) -> PyResult<Vec<ColumnStats>> {
        if counts.len() != self.reference.len() {
            return Err(CoreError::invalid(format!(
                "counts of {} columns for a window of {} columns",
                counts.len(),
                self.reference.len()
            ))
            .into());
        }
        let mut stats = Vec::with_capacity(counts.len());
        for (j, (c, reference)) in counts.iter().zip(&self.reference).enumerate() {
            if c.len() != reference.len() {
                return Err(CoreError::invalid(format!(
                    "column {j}: {} counts for {} bins",
                    c.len(),
                    reference.len()
                ))
                .into());
            }
            let present = c.iter().sum::<u64>();
            stats.push(
                drift_stats(reference, self.reference_rows, c)
                    .map(|s| (present, s.psi, s.ks, s.ks_pvalue, s.js)),
            );
        }
        Ok(stats)
    }

    /// Bin counts of one column over the window.
    fn counts(&self, column: usize) -> PyResult<Vec<u64>> {
        let w = lock(&self.window);
        if column >= w.columns() {
            return Err(CoreError::invalid(format!(
                "column {column} out of range: the window has {} columns",
                w.columns()
            ))
            .into());
        }
        Ok(w.counts(column).to_vec())
    }

    /// Forget every recorded row.
    fn clear(&self) {
        lock(&self.window).clear();
    }

    #[getter]
    fn columns(&self) -> usize {
        lock(&self.window).columns()
    }

    #[getter]
    fn rows(&self) -> u64 {
        lock(&self.window).rows()
    }

    /// Bytes held by the window state: fixed when the window is created.
    #[getter]
    fn state_bytes(&self) -> usize {
        lock(&self.window).state_bytes()
    }
}

fn describe(data: &Bound<'_, PyAny>) -> String {
    let dtype = data
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "?".into());
    let shape = data
        .getattr("shape")
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into());
    match data.get_type().name() {
        Ok(name) => format!("{name} (dtype {dtype}, shape {shape})"),
        Err(_) => format!("dtype {dtype}, shape {shape}"),
    }
}

/// A DDSketch-style latency sketch over a sliding time window (see `telemetry::sketch`).
#[pyclass(frozen, module = "servekit._core")]
struct LatencySketch {
    sketch: Mutex<SlidingSketch>,
}

#[pymethods]
impl LatencySketch {
    #[new]
    #[pyo3(signature = (alpha=0.01, seconds=60.0, slots=12))]
    fn new(alpha: f64, seconds: f64, slots: usize) -> PyResult<Self> {
        let span = seconds_to_ns(seconds, "the window")?;
        Ok(LatencySketch {
            sketch: Mutex::new(SlidingSketch::new(alpha, span, slots)?),
        })
    }

    /// Count one latency in seconds (>= 0). O(1); the interpreter is kept (the call is shorter
    /// than releasing it would be).
    #[pyo3(signature = (seconds, now_ns=None))]
    fn record(&self, seconds: f64, now_ns: Option<u64>) -> PyResult<()> {
        let now = now_ns.unwrap_or_else(telemetry_clock_ns);
        Ok(lock(&self.sketch).record(seconds, now)?)
    }

    /// `(count, [quantile or None per q])` over the window ending now.
    #[pyo3(signature = (qs, now_ns=None))]
    fn quantiles(&self, qs: Vec<f64>, now_ns: Option<u64>) -> PyResult<(u64, Vec<Option<f64>>)> {
        let now = now_ns.unwrap_or_else(telemetry_clock_ns);
        let mut s = lock(&self.sketch);
        s.advance(now);
        let values = qs
            .iter()
            .map(|&q| s.quantile(q))
            .collect::<CoreResult<Vec<_>>>()?;
        Ok((s.count(), values))
    }

    #[getter]
    fn alpha(&self) -> f64 {
        lock(&self.sketch).alpha()
    }

    #[getter]
    fn state_bytes(&self) -> usize {
        lock(&self.sketch).state_bytes()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DriftWindow>()?;
    m.add_class::<LatencySketch>()?;
    m.add_function(wrap_pyfunction!(telemetry_clock_ns, m)?)?;
    Ok(())
}
