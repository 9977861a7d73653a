//! A DDSketch-style quantile sketch of latencies over a sliding time window.
//!
//! Values are counted in logarithmic buckets `(gamma^(k-1), gamma^k]` with
//! `gamma = (1 + alpha) / (1 - alpha)`; a bucket is reported as `2 gamma^k / (gamma + 1)`, which is
//! within relative error `alpha` of every value in it. So a quantile read from the sketch is
//! within `alpha` (relative) of the sample's own quantile of the same rank ("lower" rank
//! convention, `sorted[floor(q (n - 1))]`), for values in `[MIN_VALUE, MAX_VALUE]`; smaller
//! values (including 0) count as `MIN_VALUE` and larger ones as `MAX_VALUE`.
//!
//! The window is a ring of sub-sketches, one per `span / slots` of a monotonic clock; the oldest
//! expires whole, so the window covers between `slots - 1` and `slots` sub-sketch widths. The
//! state has a fixed size; recording is O(1) and allocation-free.

use crate::error::{CoreError, CoreResult};

/// Smallest value resolved (100 ns when values are seconds).
pub const MIN_VALUE: f64 = 1e-7;
/// Largest value resolved (about 28 hours in seconds).
pub const MAX_VALUE: f64 = 1e5;

#[derive(Debug)]
pub struct SlidingSketch {
    alpha: f64,
    gamma: f64,
    ln_gamma: f64,
    /// Bucket index of `MIN_VALUE` (`ceil(ln(MIN_VALUE) / ln(gamma))`).
    offset: i64,
    buckets: usize,
    slot_ns: u64,
    slots: usize,
    /// `slots * buckets` counts, then the totals over all slots in `totals`.
    ring: Vec<u32>,
    slot_counts: Vec<u64>,
    /// Invariant: `totals[i]` is the sum of bucket `i` over the slots, `count` their sum.
    totals: Vec<u64>,
    count: u64,
    newest: u64,
}

impl SlidingSketch {
    /// A sketch with relative accuracy `alpha` (0 < alpha < 1, e.g. 0.01) over the last
    /// `span_ns` nanoseconds in `slots` sub-sketches.
    pub fn new(alpha: f64, span_ns: u64, slots: usize) -> CoreResult<Self> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(CoreError::invalid(format!(
                "relative accuracy must be in (0, 1), got {alpha}"
            )));
        }
        if slots == 0 || slots > 10_000 || span_ns < slots as u64 {
            return Err(CoreError::invalid(format!(
                "a sketch window needs 1 to 10000 slots of at least 1 ns, got {slots} slots over \
                 {span_ns} ns"
            )));
        }
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        let ln_gamma = gamma.ln();
        let offset = (MIN_VALUE.ln() / ln_gamma).ceil() as i64;
        let top = (MAX_VALUE.ln() / ln_gamma).ceil() as i64;
        let buckets = (top - offset + 1) as usize;
        if buckets > 1 << 20 {
            return Err(CoreError::invalid(format!(
                "relative accuracy {alpha} needs too many buckets ({buckets})"
            )));
        }
        Ok(SlidingSketch {
            alpha,
            gamma,
            ln_gamma,
            offset,
            buckets,
            slot_ns: span_ns / slots as u64,
            slots,
            ring: vec![0; slots * buckets],
            slot_counts: vec![0; slots],
            totals: vec![0; buckets],
            count: 0,
            newest: 0,
        })
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Values in the window.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes held by the sketch state (fixed at creation).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ring.len() * 4
            + self.slot_counts.len() * 8
            + self.totals.len() * 8
    }

    #[inline]
    fn bucket_of(&self, value: f64) -> usize {
        if value <= MIN_VALUE {
            return 0;
        }
        let k = (value.ln() / self.ln_gamma).ceil() as i64 - self.offset;
        k.clamp(0, self.buckets as i64 - 1) as usize
    }

    /// Count `value` (>= 0, not NaN) at monotonic time `now_ns`.
    pub fn record(&mut self, value: f64, now_ns: u64) -> CoreResult<()> {
        if value.is_nan() || value < 0.0 {
            return Err(CoreError::invalid(format!(
                "a latency must be a number >= 0, got {value}"
            )));
        }
        self.advance(now_ns);
        let bucket = self.bucket_of(value);
        let slot = (self.newest % self.slots as u64) as usize;
        self.ring[slot * self.buckets + bucket] += 1;
        self.slot_counts[slot] += 1;
        self.totals[bucket] += 1;
        self.count += 1;
        Ok(())
    }

    /// Expire the sub-sketches older than the window ending at `now_ns`.
    pub fn advance(&mut self, now_ns: u64) {
        let now_slot = now_ns / self.slot_ns;
        if now_slot <= self.newest {
            return;
        }
        let steps = (now_slot - self.newest).min(self.slots as u64);
        for step in 1..=steps {
            let slot = ((self.newest + step) % self.slots as u64) as usize;
            if self.slot_counts[slot] == 0 {
                continue;
            }
            let sub = &mut self.ring[slot * self.buckets..(slot + 1) * self.buckets];
            for (total, c) in self.totals.iter_mut().zip(sub.iter()) {
                *total -= u64::from(*c);
            }
            sub.fill(0);
            self.count -= self.slot_counts[slot];
            self.slot_counts[slot] = 0;
        }
        self.newest = now_slot;
    }

    /// The `q`-quantile (0 <= q <= 1) of the values in the window, `None` when it is empty.
    pub fn quantile(&self, q: f64) -> CoreResult<Option<f64>> {
        if !(0.0..=1.0).contains(&q) {
            return Err(CoreError::invalid(format!(
                "a quantile must be in [0, 1], got {q}"
            )));
        }
        if self.count == 0 {
            return Ok(None);
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (i, &c) in self.totals.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Ok(Some(self.value_of(i)));
            }
        }
        Ok(Some(self.value_of(self.buckets - 1)))
    }

    fn value_of(&self, bucket: usize) -> f64 {
        let k = bucket as i64 + self.offset;
        2.0 * (k as f64 * self.ln_gamma).exp() / (self.gamma + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_within_relative_accuracy() {
        let mut s = SlidingSketch::new(0.01, 1_000, 10).unwrap();
        // A deterministic spread of latencies from 50 us to about 2 s.
        let mut values: Vec<f64> = (0..10_000)
            .map(|i| 5e-5 * (1.0 + (i * 7919 % 10_000) as f64 / 250.0))
            .collect();
        for &v in &values {
            s.record(v, 0).unwrap();
        }
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            let got = s.quantile(q).unwrap().unwrap();
            let want = sorted_quantile(&values, q);
            assert!(((got - want) / want).abs() <= 0.01 + 1e-12, "q={q}");
        }
    }

    #[test]
    fn old_slots_expire() {
        let mut s = SlidingSketch::new(0.01, 100, 4).unwrap();
        s.record(1.0, 0).unwrap();
        s.record(0.001, 80).unwrap();
        assert_eq!(s.count(), 2);
        s.advance(110);
        assert_eq!(s.count(), 1);
        let p = s.quantile(0.5).unwrap().unwrap();
        assert!((p - 0.001).abs() < 0.001 * 0.01 + 1e-15);
        s.advance(1_000_000);
        assert_eq!(s.quantile(0.5).unwrap(), None);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut s = SlidingSketch::new(0.01, 100, 4).unwrap();
        assert!(s.record(f64::NAN, 0).is_err());
        assert!(s.record(-1.0, 0).is_err());
        assert!(s.quantile(1.5).is_err());
        assert!(SlidingSketch::new(0.0, 100, 4).is_err());
        assert!(SlidingSketch::new(0.01, 100, 0).is_err());
        s.record(0.0, 0).unwrap();
        assert!(s.quantile(0.5).unwrap().unwrap() <= MIN_VALUE * 1.01);
    }
}
