"""ONNX Runtime sessions with explicit thread counts (oversubscription is ruinous on few cores)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from servekit.errors import PackagingError
from servekit.packaging.sources import INPUT_NAME


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """Open a CPU session on ``path`` with ``threads`` intra-op threads and one inter-op thread.

    Raises PackagingError when ONNX Runtime cannot load the model.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph classes
        raise PackagingError(f"ONNX Runtime cannot load {Path(path).name}: {exc}") from None


def run_onnx(session: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``session`` on ``x`` (fed as ``input``); return every output by name."""
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    return dict(zip(names, values, strict=True))
