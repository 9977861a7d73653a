"""Packaging: export a trained scikit-learn or PyTorch model to ONNX (and TorchScript), build
quantized, float16, pruned and distilled variants, check each against the source, and profile
the reference data for drift monitoring.

torch is optional: this package imports without it; torch code paths import it when used.
"""

from servekit.packaging.export import (
    export_sklearn_onnx,
    export_torch_onnx,
    export_torchscript,
    load_torchscript,
    normalise_opsets,
)
from servekit.packaging.package import ALIASES, VARIANT_KINDS, package, parse_variants
from servekit.packaging.parity import DEFAULT_TOLERANCES, ParityResult, Tolerance
from servekit.packaging.prune import prune_structured
from servekit.packaging.quantize import (
    CALIBRATION_METHODS,
    SampleCalibrationReader,
    convert_fp16,
    quantize_int8_dynamic,
    quantize_int8_static,
)
from servekit.packaging.report import PackageReport, VariantResult
from servekit.packaging.sources import INPUT_NAME
from servekit.packaging.train import KDConfig

__all__ = [
    "ALIASES",
    "CALIBRATION_METHODS",
    "DEFAULT_TOLERANCES",
    "INPUT_NAME",
    "VARIANT_KINDS",
    "KDConfig",
    "PackageReport",
    "ParityResult",
    "SampleCalibrationReader",
    "Tolerance",
    "VariantResult",
    "convert_fp16",
    "export_sklearn_onnx",
    "export_torch_onnx",
    "export_torchscript",
    "load_torchscript",
    "normalise_opsets",
    "package",
    "parse_variants",
    "prune_structured",
    "quantize_int8_dynamic",
    "quantize_int8_static",
]
