"""ONNX variants: int8 dynamic and static (QDQ) quantization with ONNX Runtime, float16."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from servekit.errors import InvalidArgumentError, NotApplicableError, PackagingError
from servekit.packaging.export import save_onnx
from servekit.packaging.sources import INPUT_NAME

CalibrationMethod = Literal["minmax", "percentile", "entropy"]
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")

#: Operators whose weights int8 quantization can shrink (Gemm included: ONNX Runtime >= 1.20
#: quantizes it dynamically too; the result is checked, see _require_quantized).
_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "Gather", "LSTM", "Attention"}
#: Conv is left in float for dynamic quantization: ONNX Runtime's CPU ConvInteger takes uint8
#: weights only, so int8 dynamic Conv would not load. Static QDQ quantizes Conv.
_DYNAMIC_OPS = ["MatMul", "Gemm", "Gather", "LSTM", "Attention"]
_STATIC_OPS = ["MatMul", "Gemm", "Conv"]
_QUANTIZED_OPS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "DequantizeLinear", "QGemm"}


def op_types(path: Path) -> list[str]:
    """Sorted distinct operator types of a model file (``domain:Op`` for non-default domains)."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    return sorted({f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in model.graph.node})


def _require_ops(path: Path, wanted: set[str], variant: str) -> None:
    ops = op_types(path)
    if not wanted & set(ops):
        raise NotApplicableError(
            f"{variant}: the graph has no {', '.join(sorted(wanted))} node to quantize "
            f"(its operators: {', '.join(ops)})"
        )


def _require_quantized(path: Path, variant: str) -> None:
    if not _QUANTIZED_OPS & set(op_types(path)):
        raise NotApplicableError(
            f"{variant}: ONNX Runtime's quantizer left every operator in float "
            "(nothing was quantized), so the variant would equal the fp32 export"
        )


def _preprocess(src: Path, dst: Path) -> Path:
    """Run ONNX Runtime's quant_pre_process (shape inference + graph optimisation).

    Falls back to the unprocessed model when pre-processing cannot handle the graph (it
    fails on some ai.onnx.ml operators); returns the path to quantize.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(os.fspath(src), os.fspath(dst))
    except Exception:  # symbolic shape inference rejects some non-default-domain operators
        return src
    return dst


def quantize_int8_dynamic(src: Path, dst: Path) -> dict[str, Any]:
    """Write an int8 dynamically quantized copy of ``src`` to ``dst``; return its parameters.

    Weights int8 (per tensor), activations quantized at run time. Raises NotApplicableError
    when the graph has nothing to quantize (tree ensembles, linear models from skl2onnx).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _require_ops(src, set(_DYNAMIC_OPS), "int8-dynamic")
    with tempfile.TemporaryDirectory(prefix="servekit-quant-") as tmp:
        pre = _preprocess(src, Path(tmp) / "pre.onnx")
        try:
            quantize_dynamic(
                os.fspath(pre),
                os.fspath(dst),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=_DYNAMIC_OPS,
            )
        except Exception as exc:  # the quantizer raises plain exceptions
            raise PackagingError(f"int8-dynamic quantization failed: {exc}") from None
    _require_quantized(dst, "int8-dynamic")
    return {"weight_type": "int8", "per_channel": False, "op_types": _DYNAMIC_OPS}


class SampleCalibrationReader:
    """ONNX Runtime CalibrationDataReader over the sample inputs in equal-sized batches (a
    shorter remainder is left out), with a progress bar."""

    def __init__(self, inputs: np.ndarray, batch_size: int = 64, progress: bool = True) -> None:
        if not np.isfinite(inputs).all():
            raise InvalidArgumentError(
                "calibration data holds NaN or infinite values: calibration ranges would be NaN"
            )
        self._inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        self._batch_size = batch_size
        self._progress = progress
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from servekit.progress import progress_bar

        # Equal-sized batches: ONNX Runtime's histogram calibrators (Percentile, Entropy) stack
        # the batches and fail on a shorter last one, so the remainder rows are left out.
        size = min(self._batch_size, len(self._inputs))
        starts = range(0, len(self._inputs) - size + 1, size)
        for start in progress_bar(starts, progress=self._progress, desc="calibration"):
            yield {INPUT_NAME: self._inputs[start : start + size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as ``{"input": array}``, or None when the data is exhausted."""
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._iter = None


def quantize_int8_static(
    src: Path,
    dst: Path,
    calibration_inputs: np.ndarray,
    *,
    method: str = "minmax",
    progress: bool = True,
) -> dict[str, Any]:
    """Write an int8 statically quantized (QDQ, per-channel weights) copy of ``src`` to ``dst``.

    Activation ranges come from ``calibration_inputs`` with the MinMax (default), Percentile or
    Entropy method. Returns the parameters. Raises InvalidArgumentError for an unknown method or
    NaN/inf calibration data, NotApplicableError when there is nothing to quantize.
    """
    from onnxruntime.quantization import (
        CalibrationMethod as OrtMethod,
    )
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": OrtMethod.MinMax,
        "percentile": OrtMethod.Percentile,
        "entropy": OrtMethod.Entropy,
    }
    if method not in methods:
        raise InvalidArgumentError(
            f"unknown calibration method {method!r}: expected one of {', '.join(methods)}"
        )
    reader = SampleCalibrationReader(calibration_inputs, progress=progress)
    _require_ops(src, set(_STATIC_OPS), "int8-static")
    with tempfile.TemporaryDirectory(prefix="servekit-quant-") as tmp:
        pre = _preprocess(src, Path(tmp) / "pre.onnx")
        try:
            quantize_static(
                os.fspath(pre),
                os.fspath(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=_STATIC_OPS,
                calibrate_method=methods[method],
                # The int32-bias weight-scale adjustment crashes on per-channel Gemm weights in
                # ONNX Runtime 1.32 ("truth value of an array ... is ambiguous").
                extra_options={
                    "CalibTensorRangeSymmetric": False,
                    "QDQDisableWeightAdjustForInt32Bias": True,
                },
            )
        except Exception as exc:  # the quantizer raises plain exceptions
            raise PackagingError(f"int8-static quantization failed: {exc}") from None
    _require_quantized(dst, "int8-static")
    return {
        "format": "QDQ",
        "per_channel": True,
        "weight_type": "int8",
        "activation_type": "uint8",
        "calibration": method,
        "calibration_rows": len(calibration_inputs),
    }


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """Write a float16 copy of ``src`` keeping float32 inputs and outputs; return parameters.

    Halves the weights; on CPU it is not faster (useful on GPU). Raises NotApplicableError for
    graphs with ai.onnx.ml operators (skl2onnx output): the converter produced models that
    failed to load, and once hung, on them.
    """
    from onnxconverter_common import float16

    ml_ops = [op for op in op_types(src) if op.startswith("ai.onnx.ml:")]
    if ml_ops:
        raise NotApplicableError(
            "fp16: the graph uses ai.onnx.ml operators "
            f"({', '.join(op.split(':', 1)[1] for op in ml_ops)}), which the float16 converter "
            "does not handle reliably"
        )
    model = onnx.load(os.fspath(src))
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # the converter raises plain exceptions
        raise PackagingError(f"fp16 conversion failed: {exc}") from None
    save_onnx(converted, dst)
    return {"precision": "float16", "io_types": "float32"}
