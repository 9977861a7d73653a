"""Model signatures: the names, datatypes and shapes of a model's inputs and outputs.

Datatypes use the KServe v2 / Triton names (``FP32``, ``INT64``, ``BYTES``...); shapes use -1 for
a dynamic dimension. The JSON form, shared by the registry, packaging and serving, is::

    {"inputs":  [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
     "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError

#: KServe v2 datatype name -> numpy dtype. BYTES maps to numpy object arrays of bytes.
DATATYPE_TO_DTYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_DTYPE_TO_DATATYPE = {dt: name for name, dt in DATATYPE_TO_DTYPE.items()}


def datatype_of(dtype: np.dtype[Any] | type) -> str:
    """Return the KServe datatype name of a numpy dtype (bytes and str arrays are BYTES).

    Raises InvalidArgumentError for a dtype with no KServe equivalent.
    """
    dt = np.dtype(dtype)
    if dt.kind in "SUO":
        return "BYTES"
    try:
        return _DTYPE_TO_DATATYPE[dt]
    except KeyError:
        raise InvalidArgumentError(f"numpy dtype {dt} has no KServe v2 datatype") from None


def dtype_of(datatype: str) -> np.dtype[Any]:
    """Return the numpy dtype of a KServe datatype name; InvalidArgumentError if unknown."""
    try:
        return DATATYPE_TO_DTYPE[datatype]
    except KeyError:
        known = ", ".join(DATATYPE_TO_DTYPE)
        raise InvalidArgumentError(
            f"unknown datatype {datatype!r}: expected one of {known}"
        ) from None


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, KServe datatype and shape (-1 = dynamic)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgumentError("a tensor needs a non-empty name")
        dtype_of(self.datatype)
        if any((not isinstance(d, int)) or d < -1 for d in self.shape):
            raise InvalidArgumentError(
                f"tensor {self.name!r}: shape {list(self.shape)} must hold integers >= -1"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Parse the JSON form; InvalidArgumentError if a key is missing or malformed."""
        try:
            return cls(
                str(data["name"]), str(data["datatype"]), tuple(int(d) for d in data["shape"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"malformed tensor spec {dict(data)!r}: {exc}") from None


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model."""

    inputs: tuple[TensorSpec, ...] = field(default_factory=tuple)
    outputs: tuple[TensorSpec, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"inputs": [...], "outputs": [...]}``."""
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Parse the JSON form; InvalidArgumentError if it is malformed."""
        if not isinstance(data, Mapping):
            raise InvalidArgumentError("a signature must be a mapping with 'inputs' and 'outputs'")
        return cls(
            tuple(TensorSpec.from_dict(t) for t in _seq(data, "inputs")),
            tuple(TensorSpec.from_dict(t) for t in _seq(data, "outputs")),
        )

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``; NotFound-style InvalidArgumentError if there is none."""
        for t in self.inputs:
            if t.name == name:
                return t
        raise InvalidArgumentError(f"unknown input {name!r}: expected one of {self.input_names}")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


#: ONNX Runtime's type of a tensor (``NodeArg.type``) -> KServe datatype name.
ORT_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def session_signature(session: Any, where: str = "ONNX model") -> Signature:
    """The inputs and outputs of an ONNX Runtime ``InferenceSession``: names, KServe datatypes,
    shapes with -1 for dynamic (symbolic or unknown) dimensions. ONNX Runtime lists the graph's
    inputs without the initializers that old exporters also declare as inputs.

    Raises InvalidArgumentError for a value with no KServe datatype (bfloat16, a sequence or a
    map such as a ZipMap output), naming ``where``.
    """

    def specs(values: Any) -> tuple[TensorSpec, ...]:
        out = []
        for value in values:
            datatype = ORT_DATATYPES.get(value.type)
            if datatype is None:
                raise InvalidArgumentError(
                    f"{where}: tensor '{value.name}' has type {value.type}, which has no "
                    "KServe v2 datatype"
                )
            dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in value.shape)
            out.append(TensorSpec(value.name, datatype, dims))
        return tuple(out)

    return Signature(specs(session.get_inputs()), specs(session.get_outputs()))


def onnx_signature(model: str | os.PathLike[str] | Any) -> Signature:
    """Read the inputs and outputs of an ONNX graph (a file, or a model object with
    ``SerializeToString`` such as ``onnx.ModelProto``, its weights inline) with ONNX Runtime, as
    Triton's ONNX backend completes a configuration: a CPU session with graph optimizations
    off, so serving needs no ``onnx`` package. See :func:`session_signature`.

    Raises InvalidArgumentError for a model ONNX Runtime cannot load and for a value with no
    KServe datatype; ModuleNotFoundError when onnxruntime is not installed.
    """
    import onnxruntime as ort

    serialize = getattr(model, "SerializeToString", None)
    source: str | bytes = serialize() if callable(serialize) else os.fspath(model)
    where = "ONNX model" if isinstance(source, bytes) else source
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the serving session logs its own warnings
    try:
        session = ort.InferenceSession(
            source, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types for a bad model
        raise InvalidArgumentError(f"cannot read ONNX model {where}: {exc}") from None
    return session_signature(session, where)


def _seq(data: Mapping[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise InvalidArgumentError(f"signature {key!r} must be a list of tensor specs")
    return value


__all__ = [
    "DATATYPE_TO_DTYPE",
    "ORT_DATATYPES",
    "Signature",
    "TensorSpec",
    "datatype_of",
    "dtype_of",
    "onnx_signature",
    "session_signature",
]
