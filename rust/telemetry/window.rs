//! Binned sliding windows: the hot path of drift monitoring.
//!
//! A [`BinnedWindow`] has one column per monitored feature (or one column for the predictions).
//! Each column bins its values by the reference profile's rule (`searchsorted(cuts, v,
//! side="right")` by binary search, or the position of a class label) and the window keeps, per
//! column and bin, how many of its values fall there. Recording allocates nothing: every buffer
//! is sized when the window is created, so the state has a fixed size whatever the traffic.
//!
//! Window kinds ([`WindowSpec`]):
//! - `Rows(n)`: the last `n` rows. A ring buffer holds each row's bin indices (2 bytes per value)
//!   so the oldest row can be subtracted when a new one arrives.
//! - `Time { span_ns, buckets }`: rows recorded during the last `span_ns` nanoseconds of a
//!   monotonic clock, in `buckets` time buckets of `span_ns / buckets` each; a whole bucket
//!   expires at once, so the window covers between `(buckets - 1)` and `buckets` bucket widths.
//! - `Cumulative`: every row since the window was created or cleared (used for offline batches).

use crate::error::{CoreError, CoreResult};
use ndarray::ArrayView2;

/// Most columns one window may monitor (bounds memory and metric label cardinality).
pub const MAX_COLUMNS: usize = 4096;
/// Most bins one column may have (bin indices are stored as `u16`).
pub const MAX_BINS: usize = 4096;
/// Stored in place of a bin index for a value that was not binned (NaN).
const MISSING: u16 = u16::MAX;

/// How a column turns a value into a bin index.
#[derive(Debug, Clone)]
pub enum Binner {
    /// Sorted, unique cut points: bin = number of cuts `<= v` (NaN is not binned).
    Cuts(Vec<f64>),
    /// Sorted, unique class labels: bin = the label's position; any other value goes to the
    /// extra last bin ("unseen label"); NaN is not binned.
    Labels(Vec<f64>),
}

impl Binner {
    /// Number of bins of this column.
    pub fn bins(&self) -> usize {
        match self {
            Binner::Cuts(c) => c.len() + 1,
            Binner::Labels(l) => l.len() + 1,
        }
    }

    /// Bin of `v`, or `None` for NaN. O(log bins).
    #[inline]
    pub fn bin(&self, v: f64) -> Option<u16> {
        if v.is_nan() {
            return None;
        }
        let idx = match self {
            Binner::Cuts(c) => c.partition_point(|&cut| cut <= v),
            Binner::Labels(l) => l
                .binary_search_by(|probe| probe.total_cmp(&v))
                .unwrap_or(l.len()),
        };
        // Column construction caps bins at MAX_BINS, so the index fits in u16.
        Some(idx as u16)
    }

    fn validate(&self, column: usize) -> CoreResult<()> {
        let (what, values) = match self {
            Binner::Cuts(c) => ("cuts", c),
            Binner::Labels(l) => ("labels", l),
        };
        if values.len() + 1 > MAX_BINS {
            return Err(CoreError::invalid(format!(
                "column {column}: {} {what} give more than {MAX_BINS} bins",
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(CoreError::invalid(format!(
                "column {column}: {what} must be finite numbers"
            )));
        }
        if values.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CoreError::invalid(format!(
                "column {column}: {what} must be strictly increasing"
            )));
        }
        Ok(())
    }
}

/// Which rows a window keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    Rows(usize),
    Time { span_ns: u64, buckets: usize },
    Cumulative,
}

#[derive(Debug)]
enum Retention {
    Rows {
        capacity: usize,
        /// `capacity * columns` bin indices, row-major; `MISSING` for NaN.
        ring: Vec<u16>,
        /// Slot the next row is written to.
        head: usize,
    },
    Time {
        bucket_ns: u64,
        buckets: usize,
        /// Per bucket: `total_bins` counts, then `columns` present counts, then one row count.
        ring: Vec<u32>,
        /// Absolute bucket number (`now_ns / bucket_ns`) of the newest bucket.
        newest: u64,
    },
    Cumulative,
}

/// Per-bin counts of the values in a sliding window, for a fixed set of columns.
#[derive(Debug)]
pub struct BinnedWindow {
    binners: Vec<Binner>,
    /// Offset of each column's bins in `counts` (`offsets[j]..offsets[j + 1]`).
    offsets: Vec<usize>,
    /// Invariant: `counts[offsets[j] + b]` is the number of values of column `j` in the window
    /// that fall in bin `b`, and `present[j]` their sum.
    counts: Vec<u64>,
    present: Vec<u64>,
    rows: u64,
    total_rows: u64,
    retention: Retention,
}

impl BinnedWindow {
    /// A window over the given columns. Fails on no columns, too many columns or bins, cuts
    /// that are not finite and strictly increasing, or a window of zero rows, time or buckets.
    pub fn new(binners: Vec<Binner>, spec: WindowSpec) -> CoreResult<Self> {
        if binners.is_empty() || binners.len() > MAX_COLUMNS {
            return Err(CoreError::invalid(format!(
                "a window needs 1 to {MAX_COLUMNS} columns, got {}",
                binners.len()
            )));
        }
        for (j, b) in binners.iter().enumerate() {
            b.validate(j)?;
        }
        let mut offsets = Vec::with_capacity(binners.len() + 1);
        let mut total = 0;
        for b in &binners {
            offsets.push(total);
            total += b.bins();
        }
        offsets.push(total);
        let columns = binners.len();
        let retention = match spec {
            WindowSpec::Rows(0) => {
                return Err(CoreError::invalid("a row window needs at least 1 row"))
            }
            WindowSpec::Rows(capacity) => {
                let len = capacity.checked_mul(columns).filter(|&n| n <= 1 << 31);
                let len = len.ok_or_else(|| {
                    CoreError::invalid(format!(
                        "a window of {capacity} rows x {columns} columns is too large"
                    ))
                })?;
                Retention::Rows {
                    capacity,
                    ring: vec![MISSING; len],
                    head: 0,
                }
            }
            WindowSpec::Time { span_ns, buckets } => {
                if buckets == 0 || buckets > 10_000 || span_ns < buckets as u64 {
                    return Err(CoreError::invalid(format!(
                        "a time window needs 1 to 10000 buckets of at least 1 ns, got {buckets} \
                         buckets over {span_ns} ns"
                    )));
                }
                Retention::Time {
                    bucket_ns: span_ns / buckets as u64,
                    buckets,
                    ring: vec![0; buckets * (total + columns + 1)],
                    newest: 0,
                }
            }
            WindowSpec::Cumulative => Retention::Cumulative,
        };
        Ok(BinnedWindow {
            binners,
            offsets,
            counts: vec![0; total],
            present: vec![0; columns],
            rows: 0,
            total_rows: 0,
            retention,
        })
    }

    pub fn columns(&self) -> usize {
        self.binners.len()
    }

    pub fn binner(&self, column: usize) -> &Binner {
        &self.binners[column]
    }

    /// Rows currently in the window.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows recorded since creation or the last [`clear`](Self::clear).
    pub fn total_rows(&self) -> u64 {
        self.total_rows
    }

    /// Bin counts of `column` over the window.
    pub fn counts(&self, column: usize) -> &[u64] {
        &self.counts[self.offsets[column]..self.offsets[column + 1]]
    }

    /// Binned (non-NaN) values of `column` in the window.
    pub fn present(&self, column: usize) -> u64 {
        self.present[column]
    }

    /// Bytes held by the window state (fixed at creation).
    pub fn state_bytes(&self) -> usize {
        let ring = match &self.retention {
            Retention::Rows { ring, .. } => ring.len() * 2,
            Retention::Time { ring, .. } => ring.len() * 4,
            Retention::Cumulative => 0,
        };
        let cuts: usize = self.binners.iter().map(|b| (b.bins() - 1) * 8).sum();
        std::mem::size_of::<Self>()
            + ring
            + cuts
            + self.counts.len() * 8
            + self.present.len() * 8
            + self.offsets.len() * 8
    }

    /// Record every row of `data` (rows x columns; any element type convertible to f64, any
    /// strides). `now_ns` is a monotonic clock reading used by time windows. Allocation-free.
    pub fn record<T: Copy + ToF64>(
        &mut self,
        data: ArrayView2<'_, T>,
        now_ns: u64,
    ) -> CoreResult<()> {
        if data.ncols() != self.columns() {
            return Err(CoreError::invalid(format!(
                "expected {} columns, got an array of shape ({}, {})",
                self.columns(),
                data.nrows(),
                data.ncols()
            )));
        }
        self.advance(now_ns);
        for row in data.rows() {
            self.evict_oldest_row();
            let columns = self.binners.len();
            for (j, &v) in row.iter().enumerate() {
                let bin = self.binners[j].bin(v.to_f64());
                let slot = match bin {
                    Some(b) => {
                        let at = self.offsets[j] + b as usize;
                        self.counts[at] += 1;
                        self.present[j] += 1;
                        b
                    }
                    None => MISSING,
                };
                match &mut self.retention {
                    Retention::Rows { ring, head, .. } => ring[*head * columns + j] = slot,
                    Retention::Time {
                        ring,
                        buckets,
                        newest,
                        ..
                    } => {
                        let stride = self.counts.len() + columns + 1;
                        let base = (*newest % *buckets as u64) as usize * stride;
                        if slot != MISSING {
                            ring[base + self.offsets[j] + slot as usize] += 1;
                            ring[base + self.counts.len() + j] += 1;
                        }
                    }
                    Retention::Cumulative => {}
                }
            }
            match &mut self.retention {
                Retention::Rows { head, capacity, .. } => *head = (*head + 1) % *capacity,
                Retention::Time {
                    ring,
                    buckets,
                    newest,
                    ..
                } => {
                    let stride = self.counts.len() + columns + 1;
                    let base = (*newest % *buckets as u64) as usize * stride;
                    ring[base + stride - 1] += 1;
                }
                Retention::Cumulative => {}
            }
            self.rows += 1;
            self.total_rows += 1;
        }
        Ok(())
    }

    /// Make room for one row in a full row window by subtracting the row at `head`.
    #[inline]
    fn evict_oldest_row(&mut self) {
        let Retention::Rows {
            capacity,
            ring,
            head,
        } = &self.retention
        else {
            return;
        };
        if self.rows < *capacity as u64 {
            return;
        }
        let columns = self.binners.len();
        let start = *head * columns;
        for (j, &b) in ring[start..start + columns].iter().enumerate() {
            if b != MISSING {
                self.counts[self.offsets[j] + b as usize] -= 1;
                self.present[j] -= 1;
            }
        }
        self.rows -= 1;
    }

    /// Expire the time buckets older than the window ending at `now_ns` (time windows only).
    /// A reading older than the newest bucket counts into the newest bucket.
    pub fn advance(&mut self, now_ns: u64) {
        let Retention::Time {
            bucket_ns,
            buckets,
            ring,
            newest,
        } = &mut self.retention
        else {
            return;
        };
        let now_bucket = now_ns / *bucket_ns;
        if now_bucket <= *newest {
            return;
        }
        let total_bins = self.counts.len();
        let stride = total_bins + self.present.len() + 1;
        let steps = (now_bucket - *newest).min(*buckets as u64);
        for step in 1..=steps {
            let base = ((*newest + step) % *buckets as u64) as usize * stride;
            let bucket = &mut ring[base..base + stride];
            for (total, c) in self.counts.iter_mut().zip(&bucket[..total_bins]) {
                *total -= u64::from(*c);
            }
            let present = &bucket[total_bins..stride - 1];
            for (total, c) in self.present.iter_mut().zip(present) {
                *total -= u64::from(*c);
            }
            self.rows -= u64::from(bucket[stride - 1]);
            bucket.fill(0);
        }
        *newest = now_bucket;
    }

    /// Forget every recorded row.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.present.fill(0);
        self.rows = 0;
        self.total_rows = 0;
        match &mut self.retention {
            Retention::Rows { ring, head, .. } => {
                ring.fill(MISSING);
                *head = 0;
            }
            Retention::Time { ring, .. } => ring.fill(0),
            Retention::Cumulative => {}
        }
    }
}

/// Element types a window can record.
pub trait ToF64 {
    fn to_f64(self) -> f64;
}

impl ToF64 for f64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

impl ToF64 for f32 {
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl ToF64 for i64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    fn cuts() -> Vec<Binner> {
        vec![Binner::Cuts(vec![0.0, 1.0]), Binner::Cuts(vec![10.0])]
    }

    #[test]
    fn bins_follow_searchsorted_right() {
        let b = Binner::Cuts(vec![0.0, 1.0, 2.0]);
        let got: Vec<_> = [-5.0, 0.0, 0.5, 1.0, 2.0, 9.0, f64::NAN]
            .iter()
            .map(|&v| b.bin(v))
            .collect();
        assert_eq!(
            got,
            [Some(0), Some(1), Some(1), Some(2), Some(3), Some(3), None]
        );
        let l = Binner::Labels(vec![0.0, 3.0, 7.0]);
        assert_eq!(l.bin(3.0), Some(1));
        assert_eq!(l.bin(4.0), Some(3));
    }

    #[test]
    fn row_window_keeps_last_rows_only() {
        let mut w = BinnedWindow::new(cuts(), WindowSpec::Rows(2)).unwrap();
        w.record(array![[-1.0, 0.0], [0.5, f64::NAN]].view(), 0)
            .unwrap();
        assert_eq!(w.counts(0), &[1, 1, 0]);
        assert_eq!(w.present(1), 1);
        w.record(array![[5.0f32, 20.0]].view(), 0).unwrap();
        assert_eq!(w.rows(), 2);
        assert_eq!(w.counts(0), &[0, 1, 1]);
        assert_eq!(w.counts(1), &[0, 1]);
        assert_eq!(w.present(1), 1);
        assert_eq!(w.total_rows(), 3);
    }

    #[test]
    fn time_window_expires_whole_buckets() {
        let spec = WindowSpec::Time {
            span_ns: 100,
            buckets: 4,
        };
        let mut w = BinnedWindow::new(cuts(), spec).unwrap();
        w.record(array![[0.5, 1.0]].view(), 10).unwrap();
        w.record(array![[2.0, 11.0], [2.0, 11.0]].view(), 60)
            .unwrap();
        assert_eq!(w.rows(), 3);
        w.advance(110); // bucket 4: bucket 0 (t=10) expires
        assert_eq!(w.rows(), 2);
        assert_eq!(w.counts(0), &[0, 0, 2]);
        w.advance(10_000);
        assert_eq!((w.rows(), w.present(0)), (0, 0));
        assert_eq!(w.counts(1), &[0, 0]);
    }

    #[test]
    fn state_size_does_not_grow() {
        let mut w = BinnedWindow::new(cuts(), WindowSpec::Rows(100)).unwrap();
        let before = w.state_bytes();
        let data = Array2::<f64>::from_elem((1000, 2), 0.5);
        for _ in 0..10 {
            w.record(data.view(), 0).unwrap();
        }
        assert_eq!(w.state_bytes(), before);
        assert_eq!(w.rows(), 100);
        assert_eq!(w.counts(0), &[0, 100, 0]);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(BinnedWindow::new(vec![], WindowSpec::Cumulative).is_err());
        let bad = vec![Binner::Cuts(vec![1.0, 1.0])];
        let err = BinnedWindow::new(bad, WindowSpec::Cumulative).unwrap_err();
        assert!(err.to_string().contains("strictly increasing"));
        assert!(BinnedWindow::new(cuts(), WindowSpec::Rows(0)).is_err());
        let mut w = BinnedWindow::new(cuts(), WindowSpec::Cumulative).unwrap();
        let err = w.record(array![[1.0, 2.0, 3.0]].view(), 0).unwrap_err();
        assert!(err.to_string().contains("expected 2 columns"));
    }
}
