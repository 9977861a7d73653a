"""``servekit bench`` on real registry versions: in-process, over HTTP, metrics and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from _serving import start_server
from servekit.bench.run import benchmark, select_versions
from servekit.errors import InvalidArgumentError, NotFoundError, UnavailableError
from servekit.registry import Registry


@pytest.fixture(scope="module")
def digits_registry(tmp_path_factory) -> tuple[Registry, Path, Path]:
    tmp = tmp_path_factory.mktemp("bench")
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    reg = Registry(tmp / "reg")
    models = [
        ("fp32", LogisticRegression(max_iter=300)),
        ("distilled", MLPClassifier((16,), max_iter=400, random_state=0)),
    ]
    for variant, model in models:
        model.fit(x[:1200], y[:1200])
        onx = to_onnx(model, x[:1], options={"zipmap": False}, target_opset=17)
        path = tmp / f"{variant}.onnx"
        path.write_bytes(onx.SerializeToString())
        parent = None if variant == "fp32" else "digits:1"
        reg.register("digits", path, format="onnx", variant=variant, parent=parent)
    np.save(tmp / "x.npy", x[1200:])
    np.save(tmp / "y.npy", y[1200:])
    return reg, tmp / "x.npy", tmp / "y.npy"


def test_bench_logs_metrics_and_writes_reports(digits_registry, run_cli, tmp_path):
    reg, x, y = digits_registry
    proc = run_cli(
        "bench",
        "digits",
        "--data",
        str(x),
        "--labels",
        str(y),
        "--batch-sizes",
        "1,8",
        "--seconds",
        "0.2",
        "--registry",
        str(reg.root),
        "--out",
        str(tmp_path / "rep"),
        check=True,
    )
    assert "digits:1" in proc.stdout and "digits:2" in proc.stdout
    for name in ("report.json", "report.md", "latency.png", "pareto.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["ref"] for r in report["results"]] == ["digits:1", "digits:2"]
    v1, v2 = reg.get("digits:1"), reg.get("digits:2")
    assert 0.85 < v1.metrics["accuracy"] <= 1 and 0.85 < v2.metrics["accuracy"] <= 1
    assert "agreement_with_parent" not in v1.metrics
    assert 0.8 < v2.metrics["agreement_with_parent"] <= 1
    for m in ("latency_p50_ms_b1", "latency_p99_ms_b8", "throughput_rows_s_b8", "load_time_ms"):
        assert v2.metrics[m] > 0
    assert v2.metrics["latency_p50_ms_b1"] <= v2.metrics["latency_p99_ms_b1"]
    assert v1.metrics["size_bytes"] == v1.size_bytes
    # The registry shows them.
    shown = json.loads(
        run_cli(
            "registry", "show", "digits:2", "--json", "--registry", str(reg.root), check=True
        ).stdout
    )
    assert shown["metrics"]["accuracy"] == v2.metrics["accuracy"]


def test_bench_over_http_measures_the_served_version(digits_registry):
    reg, x, _ = digits_registry
    reg.set_alias("digits:2", "production")
    server = start_server("--registry", str(reg.root), "--model", "digits@production")
    try:
        report = benchmark(
            reg,
            "digits",
            np.load(x),
            versions=[1, 2],
            batch_sizes=[1, 4],
            url=f"http://{server.url}",
            seconds_per_batch_size=0.2,
            rounds=2,
            log_metrics=False,
            progress=False,
            say=lambda _m: None,
        )
    finally:
        server.stop()
    by_ref = {r.ref: r for r in report.results}
    assert by_ref["digits:1"].http == []  # not served: skipped with a note
    http = by_ref["digits:2"].http
    assert [f.batch_size for f in http] == [1, 4]
    assert all(f.p50_ms > 0 and f.calls >= 2 for f in http)
    assert "http_latency_p50_ms_b1" in by_ref["digits:2"].metrics()


def test_agreement_loads_a_parent_outside_the_selection(digits_registry):
    reg, x, y = digits_registry
    report = benchmark(
        reg,
        "digits",
        np.load(x),
        labels=np.load(y),
        versions=[2],
        batch_sizes=[2],
        seconds_per_batch_size=0.05,
        rounds=1,
        log_metrics=False,
        progress=False,
        say=lambda _m: None,
    )
    (only,) = report.results
    assert only.ref == "digits:2" and 0.8 < only.agreement_with_parent <= 1


def test_version_selection(digits_registry):
    reg, _, _ = digits_registry
    assert [v.version for v in select_versions(reg, "digits")] == [1, 2]
    assert [v.version for v in select_versions(reg, "digits", versions=[2])] == [2]
    assert [v.version for v in select_versions(reg, "digits", lineage="digits:1")] == [1, 2]
    assert [v.version for v in select_versions(reg, "digits", lineage="2")] == [1, 2]
    with pytest.raises(InvalidArgumentError, match="not both"):
        select_versions(reg, "digits", versions=[1], lineage="digits:1")


def test_bad_input(digits_registry, run_cli, tmp_path):
    reg, x, _ = digits_registry
    data = np.load(x)
    with pytest.raises(NotFoundError):
        benchmark(reg, "digits", data, versions=[7], progress=False, say=lambda _m: None)
    with pytest.raises(InvalidArgumentError, match=r"shape \[63\].*\[-1, 64\]"):
        benchmark(reg, "digits", data[:, :63], progress=False, say=lambda _m: None)
    with pytest.raises(InvalidArgumentError, match="10 labels for"):
        benchmark(
            reg, "digits", data, labels=np.zeros(10, np.int64), progress=False, say=lambda _m: None
        )
    with pytest.raises(UnavailableError, match="does not answer"):
        benchmark(
            reg,
            "digits",
            data,
            url="http://127.0.0.1:9",
            batch_sizes=[1],
            seconds_per_batch_size=0.05,
            rounds=1,
            log_metrics=False,
            progress=False,
            say=lambda _m: None,
        )
    before = reg.get("digits:1").metrics
    np.save(tmp_path / "short.npy", np.zeros(5, np.int64))
    for args, needle in [
        (("--versions", "1,x"), "comma-separated integers"),
        (("--labels", str(tmp_path / "short.npy")), "5 labels for"),
        (("--batch-sizes", "0"), "positive integers"),
        (("--url", "http://127.0.0.1:9"), "does not answer"),
    ]:
        proc = run_cli(
            "bench",
            "digits",
            "--data",
            str(x),
            "--seconds",
            "0.05",
            "--registry",
            str(reg.root),
            *args,
        )
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr.strip().splitlines()[-1]
    assert reg.get("digits:1").metrics == before
