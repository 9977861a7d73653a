"""Side-by-side measurement and reports, on real ONNX Runtime sessions."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from servekit.bench.measure import batches, measure
from servekit.bench.report import BenchReport, VariantResult, human_bytes, pareto_front
from servekit.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def sessions():
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    out = {}
    for key, model in {
        "iris:1": LogisticRegression(max_iter=500),
        "iris:2": MLPClassifier((32,), max_iter=2000, random_state=0),
    }.items():
        model.fit(x, y)
        onx = to_onnx(model, x[:1], options={"zipmap": False}, target_opset=17)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(
            onx.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        out[key] = sess
    return x, out


def test_measure_interleaves_every_variant_and_batch_size(sessions):
    x, sess = sessions
    calls: dict[str, list[int]] = {k: [] for k in sess}

    def predictor(key):
        def run(batch):
            calls[key].append(len(batch))
            return sess[key].run(None, {"X": batch})

        return run

    figures = measure(
        {k: predictor(k) for k in sess},
        x,
        [1, 8],
        seconds_per_batch_size=0.1,
        rounds=3,
        warmup_calls=2,
    )
    for key, figs in figures.items():
        assert [f.batch_size for f in figs] == [1, 8]
        for f in figs:
            assert 0 < f.p50_ms <= f.p90_ms <= f.p99_ms
            assert f.throughput_rows_s > 0 and f.calls >= 3
        assert set(calls[key]) == {1, 8}


def test_batches_cycle_through_small_data():
    data = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = batches(data, 8)
    assert len(out) == 1 and out[0].shape == (8, 2)
    np.testing.assert_array_equal(out[0][5], data[0])
    with pytest.raises(InvalidArgumentError, match="empty"):
        batches(data[:0], 1)


def test_measure_refuses_bad_settings(sessions):
    x, _ = sessions
    with pytest.raises(InvalidArgumentError, match="no variants"):
        measure({}, x, [1])
    with pytest.raises(InvalidArgumentError, match=r"\[0\]"):
        measure({"a": lambda b: b}, x, [0])


def test_pareto_front():
    # (latency, accuracy): lower latency and higher accuracy are better.
    points = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.94), (0.5, 0.80), (2.0, 0.93)]
    assert pareto_front(points) == [0, 1, 3]


def test_report_writes_every_format(sessions, tmp_path):
    x, sess = sessions
    figures = measure(
        {k: (lambda b, s=s: s.run(None, {"X": b})) for k, s in sess.items()},
        x,
        [1, 4],
        seconds_per_batch_size=0.05,
        rounds=2,
        warmup_calls=1,
    )
    results = [
        VariantResult(
            ref=k,
            variant=v,
            format="onnx",
            size_bytes=1000 * (i + 1),
            load_time_ms=1.0,
            memory_mb=0.5,
            batches=figures[k],
            metric_name="accuracy",
            metric=0.9 + i / 100,
            agreement_with_parent=None if i == 0 else 0.97,
        )
        for i, (k, v) in enumerate(zip(sess, ["fp32", "distilled"], strict=True))
    ]
    report = BenchReport("iris", "cpu", {"batch_sizes": [1, 4]}, results)
    paths = report.write(tmp_path)
    assert {p.name for p in paths} == {"report.json", "report.md", "latency.png", "pareto.png"}
    for p in paths:
        assert p.stat().st_size > 0
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["ref"] for r in data["results"]] == ["iris:1", "iris:2"]
    assert "| iris:2 | distilled |" in (tmp_path / "report.md").read_text()
    table = report.table()
    assert "p50/p99 ms b4" in table and "iris:1" in table
    metrics = results[1].metrics()
    assert metrics["accuracy"] == pytest.approx(0.91)
    assert metrics["agreement_with_parent"] == 0.97
    assert {"latency_p99_ms_b1", "throughput_rows_s_b4", "size_bytes"} <= set(metrics)


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(4.5 * 1024 * 1024) == "4.5 MiB"
