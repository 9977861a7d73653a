"""Drift windows and statistics against independent computations (scipy, numpy)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from servekit._core import DriftWindow, LatencySketch
from servekit.errors import InvalidArgumentError
from servekit.telemetry import (
    MAX_MONITORED_FEATURES,
    DriftMonitor,
    DriftThresholds,
    bin_indices,
    build_reference_profile,
    summarize_inputs,
)

RNG = np.random.default_rng(7)
REFERENCE = RNG.normal(size=(5000, 10))
PROFILE = build_reference_profile(REFERENCE)


def _bins(values, cuts):
    return np.bincount(bin_indices(values, cuts), minlength=len(cuts) + 1)


def test_ks_matches_scipy_within_binning_resolution():
    ref = RNG.normal(size=(4000, 1))
    cur = RNG.normal(0.3, 1.2, size=(1500, 1))
    profile = build_reference_profile(ref, bins=20)
    monitor = DriftMonitor(profile, window_rows=None)
    monitor.record(cur)
    s = monitor.report().features[0].statistics
    cuts = profile.features[0].cuts
    exact = stats.ks_2samp(ref[:, 0], cur[:, 0]).statistic
    ref_p = _bins(ref[:, 0], cuts) / len(ref)
    cur_p = _bins(cur[:, 0], cuts) / len(cur)
    # The documented resolution: binned <= exact <= binned + the largest bin proportion.
    assert s.ks <= exact + 1e-12
    assert exact - s.ks <= max(ref_p.max(), cur_p.max())
    # On the binned samples themselves scipy gives the same statistic and p-value.
    binned = stats.ks_2samp(
        bin_indices(ref[:, 0], cuts), bin_indices(cur[:, 0], cuts), method="asymp"
    )
    assert s.ks == pytest.approx(binned.statistic, abs=1e-12)
    assert s.ks_pvalue == pytest.approx(binned.pvalue, rel=0.1, abs=1e-3)


def test_ks_pvalue_agrees_with_scipy_for_a_small_shift():
    ref = RNG.normal(size=(3000, 1))
    cur = RNG.normal(0.08, 1.0, size=(800, 1))
    profile = build_reference_profile(ref, bins=10)
    monitor = DriftMonitor(profile, window_rows=None)
    monitor.record(cur)
    s = monitor.report().features[0].statistics
    cuts = profile.features[0].cuts
    binned = stats.ks_2samp(
        bin_indices(ref[:, 0], cuts), bin_indices(cur[:, 0], cuts), method="asymp"
    )
    assert 1e-4 < binned.pvalue < 0.999
    assert s.ks_pvalue == pytest.approx(binned.pvalue, abs=0.02)


def test_psi_and_js_match_numpy_on_the_same_bins():
    cur = RNG.normal(0.5, 1.5, size=(3000, 10))
    monitor = DriftMonitor(PROFILE, window_rows=5000)
    monitor.record(cur)
    report = monitor.report()
    for j in (0, 4, 9):
        f = PROFILE.features[j]
        p = np.asarray(f.frequencies)
        q = _bins(cur[:, j], f.cuts) / len(cur)
        pe, qe = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
        psi = np.sum((qe - pe) * np.log(qe / pe))
        m = (p + q) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_p = np.sum(np.where(p > 0, p * np.log2(p / m), 0.0))
            kl_q = np.sum(np.where(q > 0, q * np.log2(q / m), 0.0))
        js = np.sqrt((kl_p + kl_q) / 2)
        s = report.features[j].statistics
        assert s.psi == pytest.approx(psi, rel=1e-9)
        assert s.js == pytest.approx(js, rel=1e-9)
        assert s.js == pytest.approx(jensenshannon(p, q, base=2), rel=1e-6)
        assert report.features[j].window_size == 3000


@pytest.mark.parametrize("method", ["psi", "js"])
def test_mean_shift_in_3_of_10_features_is_detected_within_one_window(method):
    monitor = DriftMonitor(PROFILE, window_rows=1000, thresholds=DriftThresholds(method=method))
    monitor.record(RNG.normal(size=(3000, 10)))
    assert monitor.report().drifted_features == []
    shifted = RNG.normal(size=(1000, 10))
    shifted[:, [1, 4, 8]] += 1.0  # 1 standard deviation
    monitor.record(shifted)
    report = monitor.report()
    assert report.window_rows == 1000 and report.total_rows == 4000
    assert report.drifted_features == ["x1", "x4", "x8"]
    assert not report.dataset_drift  # 3 of 10 is under half
    body = report.to_dict()
    assert body["drifted_share"] == pytest.approx(0.3)
    x4 = body["features"][4]
    assert x4["drifted"] and x4["statistics"][method]["exceeded"]
    assert x4["window_size"] == 1000 and x4["reference_size"] == 5000


def test_half_the_features_drifting_is_dataset_drift():
    monitor = DriftMonitor(PROFILE, window_rows=1000)
    shifted = RNG.normal(size=(1000, 10))
    shifted[:, :5] += 1.0
    monitor.record(shifted)
    report = monitor.report()
    assert len(report.drifted_features) == 5 and report.dataset_drift and report.drift_detected


@pytest.mark.parametrize("method", ["psi", "js", "ks"])
def test_windows_from_the_reference_rarely_alarm(method):
    monitor = DriftMonitor(PROFILE, window_rows=500, thresholds=DriftThresholds(method=method))
    alarms = 0
    for _ in range(100):
        monitor.clear()
        monitor.record(RNG.normal(size=(500, 10)))
        report = monitor.report()
        # psi/js: no feature at all may flag; ks: its p-value flags ~5% of features by design,
        # so the alarm there is the dataset-level one.
        alarm = report.dataset_drift if method == "ks" else bool(report.drifted_features)
        alarms += alarm
    assert alarms <= 5


def test_small_windows_are_not_judged():
    monitor = DriftMonitor(PROFILE, window_rows=1000, min_values=100)
    monitor.record(RNG.normal(5.0, 1.0, size=(50, 10)))
    report = monitor.report()
    assert report.judged_features == 0 and not report.dataset_drift
    assert report.features[0].statistics.psi > 1.0  # computed, just not judged


def test_window_memory_is_independent_of_rows():
    monitor = DriftMonitor(PROFILE, window_rows=1000)
    before = monitor.state_bytes
    batch = RNG.normal(size=(10_000, 10)).astype(np.float32)
    for _ in range(10):
        monitor.record(batch)
    assert monitor.state_bytes == before
    report = monitor.report()
    assert report.window_rows == 1000 and report.total_rows == 100_000
    assert sum(monitor._inputs.counts(0)) == 1000


def test_time_window_expires_old_rows():
    monitor = DriftMonitor(PROFILE, window_seconds=10.0, buckets=10)
    s = 1_000_000_000
    monitor.record(RNG.normal(3.0, 1.0, size=(500, 10)), now_ns=100 * s)
    monitor.record(RNG.normal(size=(500, 10)), now_ns=105 * s)
    assert monitor.report(now_ns=105 * s).window_rows == 1000
    report = monitor.report(now_ns=111 * s)  # the rows of t=100 s are out of the window
    assert report.window_rows == 500 and report.drifted_features == []
    assert monitor.report(now_ns=200 * s).window_rows == 0


def test_predictions_class_frequencies_and_unseen_labels():
    labels = RNG.integers(0, 3, size=5000)
    profile = build_reference_profile(REFERENCE, labels)
    monitor = DriftMonitor(profile, window_rows=2000)
    monitor.record(None, RNG.integers(0, 3, size=1000))
    assert not monitor.report().prediction.drifted
    monitor.record(None, np.full(1000, 7))  # a label never seen in the reference
    report = monitor.report()
    assert report.prediction.drifted and report.drift_detected and not report.dataset_drift
    probabilities = np.eye(3)[RNG.integers(0, 3, size=2000)]  # 2-D scores: argmax labels
    monitor.record(None, probabilities)
    assert not monitor.report().prediction.drifted


def test_score_predictions_use_the_row_maximum():
    scores = RNG.random((5000, 4))
    profile = build_reference_profile(REFERENCE, scores)
    monitor = DriftMonitor(profile, window_rows=1000)
    monitor.record(None, RNG.random((1000, 4)))
    assert not monitor.report().prediction.drifted
    monitor.record(None, RNG.random((1000, 4)) * 0.3)
    assert monitor.report().prediction.drifted


def test_images_are_monitored_by_per_channel_mean():
    images = RNG.normal(size=(2000, 3, 8, 8)).astype(np.float32)
    summary = summarize_inputs(images)
    assert summary.shape == (2000, 3)
    np.testing.assert_allclose(summary[5], images[5].reshape(3, -1).mean(axis=1), rtol=1e-6)
    monitor = DriftMonitor(build_reference_profile(summary), window_rows=500)
    live = RNG.normal(size=(500, 3, 8, 8)).astype(np.float32)
    live[:, 2] += 0.5  # one channel brighter
    monitor.record(live)
    assert monitor.report().drifted_features == ["x2"]


def test_feature_cap_bounds_monitored_features():
    wide = RNG.normal(size=(300, MAX_MONITORED_FEATURES + 44))
    monitor = DriftMonitor(build_reference_profile(wide), window_rows=100)
    assert len(monitor.feature_names) == MAX_MONITORED_FEATURES
    assert monitor.unmonitored_features[0] == f"x{MAX_MONITORED_FEATURES}"
    monitor.record(wide[:10])
    report = monitor.report()
    assert len(report.features) == MAX_MONITORED_FEATURES
    assert report.to_dict()["unmonitored_features"][-1] == f"x{wide.shape[1] - 1}"


def test_per_feature_thresholds_and_nan_values():
    monitor = DriftMonitor(
        PROFILE, window_rows=1000, feature_thresholds={"x3": DriftThresholds(psi=50.0)}
    )
    live = RNG.normal(size=(1000, 10))
    live[:, 3] += 2.0
    live[:, 0] += 2.0
    live[:500, 6] = np.nan
    monitor.record(live)
    report = monitor.report()
    assert report.drifted_features == ["x0"]
    assert report.feature("x3").thresholds.psi == 50.0
    assert report.feature("x6").window_size == 500


def test_concurrent_recording_counts_every_row():
    monitor = DriftMonitor(PROFILE, window_rows=None)
    batch = RNG.normal(size=(10, 10))

    def work():
        for _ in range(200):
            monitor.record(batch)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert monitor.report().total_rows == 4 * 200 * 10


def test_recording_reads_arrays_in_place_and_converts_other_dtypes():
    monitor = DriftMonitor(PROFILE, window_rows=None)
    fortran = np.asfortranarray(RNG.normal(size=(20, 10)))
    monitor.record(fortran)
    monitor.record(fortran[::2])  # strided view
    monitor.record(np.ones((3, 10), dtype=np.int32))
    monitor.record(RNG.normal(size=10))  # one row
    assert monitor.report().total_rows == 20 + 10 + 3 + 1


def test_small_and_large_batches_bin_the_same_way():
    # Small batches are binned with the interpreter held, large ones (over 16,384 values)
    # copied and binned without it: both paths must count identically.
    rows = RNG.normal(size=(2000, 10))  # 20,000 values: the released path
    one_call = DriftMonitor(PROFILE, window_rows=None)
    one_call.record(rows)
    row_by_row = DriftMonitor(PROFILE, window_rows=None)
    for start in range(0, len(rows), 50):  # 500 values each: the held path
        row_by_row.record(rows[start : start + 50])
    assert one_call.state() == row_by_row.state()
    assert one_call.report().total_rows == 2000


def test_bad_inputs_are_refused():
    monitor = DriftMonitor(PROFILE, window_rows=100)
    with pytest.raises(InvalidArgumentError, match=r"shape \(4, 3\).*10 features"):
        monitor.record(np.zeros((4, 3)))
    with pytest.raises(InvalidArgumentError, match="dtype <U1"):
        monitor.record(np.full((2, 10), "a"))
    with pytest.raises(InvalidArgumentError, match="unknown drift method 'mean'"):
        DriftThresholds(method="mean")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="psi must be > 0"):
        DriftThresholds(psi=0)
    with pytest.raises(InvalidArgumentError, match=r"unknown features: \['nope'\]"):
        DriftMonitor(PROFILE, feature_thresholds={"nope": DriftThresholds()})
    with pytest.raises(InvalidArgumentError, match="positive number of seconds"):
        DriftMonitor(PROFILE, window_seconds=-1.0)
    with pytest.raises(InvalidArgumentError, match="max_features"):
        DriftMonitor(PROFILE, max_features=MAX_MONITORED_FEATURES + 1)
    with pytest.raises(InvalidArgumentError, match="at least 1 row"):
        DriftMonitor(PROFILE, window_rows=0)
    with pytest.raises(InvalidArgumentError, match="'x99' is not monitored"):
        monitor.histogram("x99")
    with pytest.raises(InvalidArgumentError, match="3 reference proportions for 2 bins"):
        DriftWindow([("cuts", [0.0])], [[0.2, 0.3, 0.5]], 10)
    with pytest.raises(InvalidArgumentError, match="strictly increasing"):
        DriftWindow([("cuts", [1.0, 0.0])], [[0.2, 0.3, 0.5]], 10)
    with pytest.raises(InvalidArgumentError, match='unknown binning "quantiles"'):
        DriftWindow([("quantiles", [0.0])], [[0.5, 0.5]], 10)
    window = DriftWindow([("cuts", [0.0])], [[0.5, 0.5]], 10)
    with pytest.raises(InvalidArgumentError, match="expected 1 columns"):
        window.record(np.zeros((2, 2)))
    with pytest.raises(InvalidArgumentError, match="2-D float64, float32 or int64"):
        window.record(np.zeros(3))
    # Nothing recorded before an error is lost.
    monitor.record(np.zeros((5, 10)))
    assert monitor.report().window_rows == 5


def test_latency_sketch_quantiles_within_stated_error_of_numpy():
    sketch = LatencySketch(alpha=0.01, seconds=60.0, slots=6)
    values = RNG.lognormal(mean=-6.0, sigma=1.0, size=20_000)  # around 2.5 ms
    for v in values:
        sketch.record(float(v), 0)
    qs = [0.5, 0.9, 0.99]
    count, got = sketch.quantiles(qs, 0)
    assert count == len(values)
    want = np.quantile(values, qs, method="lower")
    np.testing.assert_allclose(got, want, rtol=0.01)
    _, expired = sketch.quantiles(qs, 61_000_000_000)
    assert expired == [None, None, None]
    with pytest.raises(InvalidArgumentError, match="latency must be a number >= 0"):
        sketch.record(-1.0)
    with pytest.raises(InvalidArgumentError, match="quantile must be in"):
        sketch.quantiles([2.0])
