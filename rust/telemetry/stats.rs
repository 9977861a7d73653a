//! Drift statistics between a reference histogram and a window's bin counts. Computed off the
//! request path: O(bins) per column.
//!
//! - PSI: `sum (q - p) ln(q / p)`, with proportions below [`PSI_EPSILON`] raised to it (as
//!   Evidently does), so empty bins give a large but finite value.
//! - KS: the largest difference of the two cumulative distributions at the bin edges. For the
//!   same samples it is never above the exact two-sample statistic and at most the largest bin
//!   proportion below it. Its p-value is the asymptotic Kolmogorov distribution for sample sizes
//!   `n` and `m` with Stephens' small-sample correction.
//! - Jensen-Shannon distance: the square root of the JS divergence in base 2 (in [0, 1]), as
//!   `scipy.spatial.distance.jensenshannon(p, q, base=2)`.

/// Proportions below this count as this in PSI.
pub const PSI_EPSILON: f64 = 1e-4;

/// The statistics of one column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftStats {
    pub psi: f64,
    pub ks: f64,
    pub ks_pvalue: f64,
    pub js: f64,
}

/// Statistics of current `counts` against `reference` proportions from `reference_rows` rows.
/// `None` when the window holds no value for the column or the lengths differ.
pub fn drift_stats(reference: &[f64], reference_rows: u64, counts: &[u64]) -> Option<DriftStats> {
    let n: u64 = counts.iter().sum();
    if n == 0 || reference.len() != counts.len() {
        return None;
    }
    let ref_total: f64 = reference.iter().sum();
    if ref_total <= 0.0 {
        return None;
    }
    let nf = n as f64;
    let mut psi = 0.0;
    let mut js = 0.0;
    let (mut cum_p, mut cum_q, mut ks) = (0.0f64, 0.0f64, 0.0f64);
    for (&r, &c) in reference.iter().zip(counts) {
        let p = r / ref_total;
        let q = c as f64 / nf;
        let (pe, qe) = (p.max(PSI_EPSILON), q.max(PSI_EPSILON));
        psi += (qe - pe) * (qe / pe).ln();
        let m = 0.5 * (p + q);
        if p > 0.0 {
            js += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            js += 0.5 * q * (q / m).log2();
        }
        cum_p += p;
        cum_q += q;
        ks = ks.max((cum_p - cum_q).abs());
    }
    Some(DriftStats {
        psi,
        ks,
        ks_pvalue: ks_pvalue(ks, n, reference_rows.max(1)),
        js: js.max(0.0).sqrt(),
    })
}

/// Asymptotic p-value of a two-sample KS statistic `d` for sample sizes `n` and `m`.
pub fn ks_pvalue(d: f64, n: u64, m: u64) -> f64 {
    let en = ((n as f64) * (m as f64) / ((n + m) as f64)).sqrt();
    kolmogorov_sf((en + 0.12 + 0.11 / en) * d)
}

/// Survival function of the Kolmogorov distribution, `Q(x) = 2 sum (-1)^(k-1) exp(-2 k^2 x^2)`.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x < 0.2 {
        // The series converges slowly here and the value is 1 to double precision.
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let kf = f64::from(k);
        let term = (-2.0 * kf * kf * x * x).exp();
        sum += sign * term;
        if term < 1e-16 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_have_zero_drift() {
        let s = drift_stats(&[0.25, 0.25, 0.5], 100, &[25, 25, 50]).unwrap();
        assert!(s.psi.abs() < 1e-12 && s.ks < 1e-12 && s.js < 1e-7);
        assert!((s.ks_pvalue - 1.0).abs() < 1e-12);
    }

    #[test]
    fn disjoint_distributions_are_maximal() {
        let s = drift_stats(&[1.0, 0.0], 1000, &[0, 1000]).unwrap();
        assert!((s.js - 1.0).abs() < 1e-12);
        assert!((s.ks - 1.0).abs() < 1e-12);
        assert!(s.ks_pvalue < 1e-10);
        assert!(s.psi > 10.0 && s.psi.is_finite());
    }

    #[test]
    fn kolmogorov_sf_known_values() {
        // scipy.special.kolmogorov(1.0) = 0.26999967167735456
        assert!((kolmogorov_sf(1.0) - 0.269_999_671_677_354_6).abs() < 1e-12);
        assert!((kolmogorov_sf(1.358) - 0.05).abs() < 1e-3);
    }

    #[test]
    fn empty_window_has_no_statistics() {
        assert!(drift_stats(&[0.5, 0.5], 10, &[0, 0]).is_none());
        assert!(drift_stats(&[0.5, 0.5], 10, &[1, 0, 0]).is_none());
    }
}
