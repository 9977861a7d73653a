"""Progress output: ``--progress/--no-progress`` honoured, bars on stderr and only on a terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.bench.run import benchmark
from servekit.packaging import package
from servekit.progress import bars_shown
from servekit.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "model_repo" / "digits" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with the example digits model and 32 input rows."""
    root = tmp_path_factory.mktemp("progress")
    Registry(root / "reg").register("digits", MODEL, format="onnx")
    rng = np.random.default_rng(0)
    np.save(root / "x.npy", rng.random((32, 64), dtype=np.float32))
    return root


def _bench(root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", "bench", "digits", "--registry", "reg", "--data",
         "x.npy", "--batch-sizes", "1", "--seconds", "0.05", "--no-log", *flags],
        capture_output=True, text=True, cwd=root, timeout=300,
    )  # fmt: skip


def test_bars_need_a_terminal_on_stderr() -> None:
    assert not bars_shown(False)
    assert bars_shown(True) == sys.stderr.isatty()


def test_no_progress_prints_nothing_on_stderr(bench_dir: Path) -> None:
    proc = _bench(bench_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "digits:1" in proc.stdout


def test_progress_on_a_pipe_is_messages_without_bars(bench_dir: Path) -> None:
    proc = _bench(bench_dir, "--progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["loading digits:1 (onnx)"]  # no bar: stderr is a pipe
    assert "loading" not in proc.stdout


def test_python_api_with_progress_false_is_silent(bench_dir: Path, capfd) -> None:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=300).fit(x, y)
    package(model, x, labels=y, variants="onnx", name="iris", out_dir=bench_dir / "pkg",
            progress=False)  # fmt: skip
    benchmark(Registry(bench_dir / "reg"), "digits", np.load(bench_dir / "x.npy"),
              batch_sizes=[1], seconds_per_batch_size=0.05, rounds=1, log_metrics=False,
              progress=False)  # fmt: skip
    out, err = capfd.readouterr()
    assert "loading" not in out + err
    assert err == ""
