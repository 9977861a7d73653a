"""Export to ONNX (scikit-learn via skl2onnx, torch via torch.onnx) and to TorchScript.

TorchScript is deprecated upstream (torch warns on every trace and load), but libtorch and
Triton's PyTorch backend still load it, so servekit keeps it as a format.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from servekit.errors import InvalidArgumentError, PackagingError, UnsupportedModelError
from servekit.packaging.sources import INPUT_NAME, Source
from servekit.signature import Signature, TensorSpec, datatype_of, onnx_signature

#: Default-domain opset for torch exports (supported by every ONNX Runtime we run on).
TORCH_OPSET = 17


def normalise_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep one ``opset_import`` entry per domain (the highest version), in place; return it.

    skl2onnx lists the default domain twice (as "" and again), which makes ONNX Runtime's
    quantizer fail with "Failed to find proper ai.onnx domain". "ai.onnx" is the default domain.
    """
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    del model.opset_import[:]
    for domain, version in versions.items():
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))
    return model


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for out in model.graph.output:
        if out.name == old:
            out.name = new


def export_sklearn_onnx(source: Source, sample: np.ndarray, path: Path) -> Signature:
    """Convert a scikit-learn estimator or pipeline to ONNX at ``path``; return its signature.

    float32 input ``input`` with a dynamic batch dimension, ZipMap off (probabilities come out
    as a tensor), a regressor's output renamed ``prediction``, opsets normalised. Raises
    UnsupportedModelError when skl2onnx has no converter for the estimator (named).
    """
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options: dict[Any, Any] = {}
    if source.task == "classifier":
        options = {"zipmap": False}
    try:
        model = to_onnx(
            source.model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, sample.shape[1]]))],
            options=options,
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, MissingShapeCalculator, ...
        raise UnsupportedModelError(
            f"skl2onnx cannot convert {type(source.model).__name__}: {exc}; supported: the "
            "estimators listed by skl2onnx.supported_converters() and pipelines of them"
        ) from None
    if source.task == "regressor":
        _rename_output(model, model.graph.output[0].name, "prediction")
    normalise_opsets(model)
    save_onnx(model, path)
    return graph_signature(path)


def export_torch_onnx(
    module: Any, sample: np.ndarray, path: Path, *, output_name: str, dynamo: bool = False
) -> Signature:
    """Export a torch module to ONNX at ``path``; return its signature from the written graph.

    Input ``input``, output ``output_name`` (``logits`` for classifiers), a dynamic batch
    dimension. The default TorchScript-based exporter (``dynamo=False``) is about 30x faster
    than the dynamo exporter and matches torch within ~1e-7; with ``dynamo=True`` the weights
    are kept inside the file (``external_data=False``). Raises UnsupportedModelError when the
    module cannot be exported (the layer named by torch).
    """
    import torch

    out_name = output_name
    example = (torch.from_numpy(np.ascontiguousarray(sample[:2])),)
    module = module.eval()
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [out_name]}
    if dynamo:
        batch = torch.export.Dim("batch")
        kwargs.update(dynamo=True, dynamic_shapes=({0: batch},), external_data=False)
    else:
        kwargs.update(
            dynamo=False,
            opset_version=TORCH_OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, out_name: {0: "batch"}},
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, os.fspath(path), **kwargs)
    except Exception as exc:  # torch raises many kinds for unsupported operators
        raise UnsupportedModelError(
            f"torch.onnx cannot export {type(module).__name__}: {exc}"
        ) from None
    return graph_signature(path)


def graph_signature(path: Path) -> Signature:
    """The signature of a written graph, read through ONNX Runtime (see
    :func:`~servekit.signature.onnx_signature`). Raises PackagingError when ONNX Runtime
    cannot load the graph or a tensor has no KServe datatype: that variant fails, not the
    whole package."""
    try:
        return onnx_signature(path)
    except InvalidArgumentError as exc:
        raise PackagingError(str(exc)) from None


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Check and write an ONNX model; PackagingError if it is invalid."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise PackagingError(f"the exported ONNX model is invalid: {exc}") from None
    onnx.save(model, os.fspath(path))


def export_torchscript(source: Source, sample: np.ndarray, path: Path) -> Signature:
    """Trace a torch module to TorchScript at ``path``; return the signature of the saved file.

    The signature is read by loading the saved file and running it on the sample (batch
    dimension -1). Raises UnsupportedModelError when tracing fails.
    """
    import torch

    module = source.model.eval()
    example = torch.from_numpy(np.ascontiguousarray(sample[:2]))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = (
                module
                if isinstance(module, torch.jit.ScriptModule)
                else torch.jit.trace(module, example)
            )
            torch.jit.save(traced, os.fspath(path))
    except Exception as exc:  # tracing raises for data-dependent control flow and more
        raise UnsupportedModelError(
            f"torch.jit.trace cannot trace {type(module).__name__}: {exc}"
        ) from None
    loaded = load_torchscript(path)
    with torch.no_grad():
        out = loaded(example)
    return Signature(
        (TensorSpec(INPUT_NAME, "FP32", (-1, *sample.shape[1:])),),
        (TensorSpec(source.score_output, datatype_of(_np_dtype(out)), (-1, *out.shape[1:])),),
    )


def _np_dtype(tensor: Any) -> np.dtype[Any]:
    import torch

    return torch.empty(0, dtype=tensor.dtype).numpy().dtype


def load_torchscript(path: str | os.PathLike[str]) -> Any:
    """Load a TorchScript file onto the CPU in eval mode; return the ScriptModule.

    Raises InvalidArgumentError when the file is missing or not TorchScript.
    """
    import torch

    if not Path(path).is_file():
        raise InvalidArgumentError(f"TorchScript file {os.fspath(path)!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(os.fspath(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError with a long C++ trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidArgumentError(
            f"{os.fspath(path)!r} is not a loadable TorchScript file: {first}"
        ) from None
    return module.eval()
