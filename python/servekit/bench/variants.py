"""Loading registry versions for benchmarking: one ``predict(batch)`` callable per version.

In-process predictors use the serving runners (ONNX Runtime or TorchScript, same thread
settings as the server); HTTP predictors send binary KServe v2 requests to a running server
with tritonclient.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError, UnavailableError
from servekit.registry import ModelVersion, Registry
from servekit.signature import Signature, dtype_of

Predict = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class LoadedVersion:
    """A version ready to run: its predictor, signature, and the cost of loading it."""

    version: ModelVersion
    predict: Predict
    signature: Signature
    load_time_ms: float
    memory_mb: float
    inputs: np.ndarray


def resident_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0.0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def load_version(
    registry: Registry,
    version: ModelVersion,
    data: np.ndarray,
    *,
    device: str,
    threads: int,
    warm_rows: int = 64,
) -> LoadedVersion:
    """Verify and load ``version``, check ``data`` against its signature, run it once on
    ``warm_rows`` rows and measure load time and the resident memory that loading and that
    run added. Raises IntegrityError for a tampered artifact, InvalidArgumentError for a format
    that cannot run in-process or data that does not fit the signature."""
    from servekit.serving.runners import OnnxRunner, TorchScriptRunner

    path = registry.model_file(version.ref, verify=True)
    before = resident_mb()
    t0 = time.perf_counter()
    if version.format == "onnx":
        runner = OnnxRunner(path, device=device, threads=threads)
        signature = version.signature or runner.signature()
    elif version.format == "torchscript":
        if version.signature is None:
            raise InvalidArgumentError(f"{version.ref}: a torchscript version needs a signature")
        signature = version.signature
        runner = TorchScriptRunner(
            path,
            input_names=signature.input_names,
            output_names=signature.output_names,
            device=device,
            threads=threads,
        )
    else:
        raise InvalidArgumentError(
            f"{version.ref}: format {version.format!r} cannot be benchmarked; "
            "expected onnx or torchscript"
        )
    load_ms = (time.perf_counter() - t0) * 1e3
    if len(signature.inputs) != 1:
        raise InvalidArgumentError(
            f"{version.ref}: bench feeds one input array, the model has inputs "
            f"{signature.input_names}"
        )
    name = signature.inputs[0].name

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        return runner.run({name: batch})

    inputs = check_data(version.ref, signature, data)
    predict(inputs[:warm_rows])
    memory = max(resident_mb() - before, 0.0)
    return LoadedVersion(version, predict, signature, load_ms, memory, inputs)


def check_data(ref: str, signature: Signature, data: np.ndarray) -> np.ndarray:
    """``data`` in the dtype the model's input wants; InvalidArgumentError naming both shapes
    when its non-batch dimensions do not match the signature."""
    spec = signature.inputs[0]
    want = spec.shape[1:]
    got = data.shape[1:]
    if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got, strict=True)):
        raise InvalidArgumentError(
            f"data rows have shape {list(got)} but {ref} expects input "
            f"{spec.name!r} of shape {list(spec.shape)}"
        )
    return np.ascontiguousarray(data, dtype=dtype_of(spec.datatype))


def http_client(url: str) -> Any:
    """A tritonclient HTTP client for ``url`` whose server is live; UnavailableError if the
    server does not answer."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    host = url.split("://", 1)[-1].rstrip("/")
    try:
        client = httpclient.InferenceServerClient(host, connection_timeout=5, network_timeout=30)
        live = client.is_server_live()
    except (InferenceServerException, OSError) as exc:
        raise UnavailableError(f"server at {url} does not answer: {exc}") from None
    if not live:
        raise UnavailableError(f"server at {url} is not live")
    return client


def http_predictor(client: Any, model: str, version: int, signature: Signature) -> Predict | None:
    """A predictor sending binary v2 requests for ``model`` ``version`` through ``client``, or
    None when the server does not serve that version."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    try:
        if not client.is_model_ready(model, str(version)):
            return None
    except InferenceServerException:
        return None
    name = signature.inputs[0].name
    outputs = [httpclient.InferRequestedOutput(o, binary_data=True) for o in signature.output_names]

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        inp = httpclient.InferInput(name, list(batch.shape), np_to_triton_dtype(batch.dtype))
        inp.set_data_from_numpy(batch, binary_data=True)
        result = client.infer(model, [inp], model_version=str(version), outputs=outputs)
        return {o: result.as_numpy(o) for o in signature.output_names}

    return predict
