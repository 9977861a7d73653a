"""Model executors: an ONNX Runtime session or a TorchScript module behind one ``run`` method.

Threads: each runner uses ``threads`` intra-op threads (default 1) and one inter-op thread.
On a small machine, a server with several model instances must not oversubscribe the cores:
instances x threads should not exceed the cores left after the HTTP front end, so the default
is one thread per instance and ``--threads`` raises it for a single compute-heavy model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from servekit.errors import InferenceError, InvalidArgumentError, UnavailableError
from servekit.signature import Signature, session_signature

DEVICES = ("cpu", "cuda")


class Runner(Protocol):
    """What the data plane and the batcher call: named arrays in, named arrays out."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _check_device(device: str) -> int:
    """The CUDA device index of ``device`` ("cuda" is 0; -1 for "cpu"); InvalidArgumentError
    for anything but "cpu", "cuda" and "cuda:N"."""
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise InvalidArgumentError(
            f"unknown device {device!r}: expected one of {DEVICES} or cuda:N"
        )
    return -1 if kind == "cpu" else int(index or 0)


class OnnxRunner:
    """An ONNX Runtime inference session.

    ``device="cpu"`` uses CPUExecutionProvider; ``device="cuda"`` uses CUDAExecutionProvider
    then CPU for the operators CUDA lacks, and needs onnxruntime-gpu.
    """

    def __init__(self, path: Path, *, device: str = "cpu", threads: int = 1) -> None:
        """Create the session. Raises InvalidArgumentError for a bad device or thread count,
        UnavailableError when CUDA is asked for but not available, InvalidArgumentError when
        the file is not a loadable ONNX model."""
        import onnxruntime as ort

        gpu = _check_device(device)
        if threads < 1:
            raise InvalidArgumentError(f"threads must be at least 1, got {threads}")
        providers: list[Any] = ["CPUExecutionProvider"]
        if gpu >= 0:
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise UnavailableError(
                    f"device '{device}' needs onnxruntime-gpu with CUDAExecutionProvider; this "
                    f"onnxruntime has {available}"
                )
            providers = [("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InvalidArgumentError(f"cannot load ONNX model {path}: {exc}") from None
        # One RunOptions shared by every run: terminate() stops them all at once.
        self._run_options = ort.RunOptions()
        self.device = device
        self.providers = self._session.get_providers()
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._string_inputs = [
            i.name for i in self._session.get_inputs() if i.type == "tensor(string)"
        ]

    def signature(self) -> Signature:
        """The session's inputs and outputs (dynamic dimensions as -1); InvalidArgumentError
        for one with no KServe datatype."""
        return session_signature(self._session)

    def terminate(self) -> None:
        """Make the runs in progress, and every later one, fail at once with InferenceError
        (for a model closed without finishing its work, such as a hung shadow)."""
        self._run_options.terminate = True

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; return every output by name.

        Raises InvalidArgumentError for BYTES input that is not UTF-8 (ONNX Runtime string
        tensors take Python strings), InferenceError when the model fails.
        """
        if self._string_inputs:
            inputs = dict(inputs)
            for name in self._string_inputs:
                if name in inputs:
                    inputs[name] = _as_strings(name, inputs[name])
        try:
            outputs = self._session.run(self._output_names, inputs, self._run_options)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"onnxruntime: {exc}") from None
        return dict(zip(self._output_names, outputs, strict=True))


def _as_strings(name: str, arr: np.ndarray) -> np.ndarray:
    out = np.empty(arr.shape, dtype=object)
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    for i, item in enumerate(flat_in):
        try:
            flat_out[i] = item.decode() if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"input '{name}': BYTES element {i} is not UTF-8, which ONNX Runtime string "
                "tensors need"
            ) from None
    return out


class TorchScriptRunner:
    """A TorchScript module called with the inputs in configuration order.

    Its outputs (a tensor, or a tuple/list of tensors) are named by ``output_names`` in order.
    ``threads`` sets torch's intra-op threads for the whole process (torch has one pool).
    """

    def __init__(
        self,
        path: Path,
        *,
        input_names: list[str],
        output_names: list[str],
        device: str = "cpu",
        threads: int = 1,
    ) -> None:
        """Load the module. Raises InvalidArgumentError for a bad device, thread count or
        file, UnavailableError when CUDA is asked for but torch has none."""
        import torch

        gpu = _check_device(device)
        if threads < 1:
            raise InvalidArgumentError(f"threads must be at least 1, got {threads}")
        if gpu >= 0 and gpu >= (torch.cuda.device_count() if torch.cuda.is_available() else 0):
            raise UnavailableError(
                f"device '{device}' needs a CUDA build of torch and GPU {gpu}; this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s)"
            )
        device = f"cuda:{gpu}" if gpu >= 0 else "cpu"
        torch.set_num_threads(threads)
        try:
            self._module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # torch raises RuntimeError and friends for a bad file
            raise InvalidArgumentError(f"cannot load TorchScript model {path}: {exc}") from None
        self._module.eval()
        self._torch = torch
        self.device = device
        self._input_names = input_names
        self._output_names = output_names

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the module; return the outputs by name. Raises InferenceError on failure."""
        torch = self._torch
        try:
            tensors = [
                torch.from_numpy(np.require(inputs[name], requirements=["W"])).to(self.device)
                for name in self._input_names
            ]
            with torch.inference_mode():
                result = self._module(*tensors)
        except Exception as exc:  # torch raises RuntimeError and friends
            raise InferenceError(f"torchscript: {exc}") from None
        results = list(result) if isinstance(result, tuple | list) else [result]
        if len(results) != len(self._output_names):
            raise InferenceError(
                f"torchscript: the module returned {len(results)} outputs, the configuration "
                f"names {len(self._output_names)}"
            )
        return {
            name: t.detach().cpu().numpy()
            for name, t in zip(self._output_names, results, strict=True)
        }
