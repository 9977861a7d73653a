"""Triton configurations for registry versions, and exporting them as repository entries."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from servekit.errors import InvalidArgumentError
from servekit.serving.config import (
    ModelConfig,
    add_tensor,
    validate_config,
    write_config,
)
from servekit.serving.repository import PROFILE_FILE
from servekit.signature import Signature, onnx_signature

if TYPE_CHECKING:
    from servekit.registry import Registry
    from servekit.registry.records import ModelVersion

#: Registry format -> (Triton platform, backend, file name in the version folder).
TRITON_FORMATS = {
    "onnx": ("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "torchscript": ("pytorch_libtorch", "pytorch", "model.pt"),
}


@dataclass(frozen=True)
class BatchingOptions:
    """What goes in a generated config beyond the model's signature."""

    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1
    kind: str = "KIND_CPU"


def triton_config(
    version: ModelVersion, model_file: Path, options: BatchingOptions | None = None
) -> ModelConfig:
    """The configuration serving a registry version: platform from its format, inputs and
    outputs from its signature (or, for ONNX, the graph), dynamic batching with
    ``options.max_batch_size`` when every input and output has a dynamic first dimension.

    Raises InvalidArgumentError for a format Triton cannot serve or a TorchScript version
    registered without a signature.
    """
    options = options or BatchingOptions()
    if version.format not in TRITON_FORMATS:
        raise InvalidArgumentError(
            f"{version.ref}: format {version.format!r} cannot be served by Triton; expected "
            f"one of {sorted(TRITON_FORMATS)}"
        )
    if options.kind not in ("KIND_CPU", "KIND_GPU"):
        raise InvalidArgumentError(f"instance kind {options.kind!r}: expected KIND_CPU or KIND_GPU")
    platform, backend, _ = TRITON_FORMATS[version.format]
    signature: Signature | None = version.signature
    if signature is None and version.format == "onnx":
        signature = onnx_signature(model_file)
    if signature is None:
        raise InvalidArgumentError(
            f"{version.ref}: a {version.format} version needs a registered signature to be served"
        )
    batchable = all(t.shape and t.shape[0] == -1 for t in (*signature.inputs, *signature.outputs))
    config = ModelConfig(name=version.name, platform=platform, backend=backend)
    if batchable and options.max_batch_size > 0:
        config.max_batch_size = options.max_batch_size
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch_sizes)
    config.instance_group.add(count=options.instances, kind=options.kind)
    skip = 1 if config.max_batch_size > 0 else 0
    for spec in signature.inputs:
        add_tensor(config.input, spec, skip)
    for spec in signature.outputs:
        add_tensor(config.output, spec, skip)
    validate_config(config)
    return config


def export_triton(
    registry: Registry,
    ref: str,
    out: Path,
    options: BatchingOptions | None = None,
    *,
    name: str | None = None,
) -> Path:
    """Write ``out/<name>/config.pbtxt`` and ``out/<name>/<version>/model.*`` for a registry
    version (its artifact verified first), with the version's ``reference_profile.json`` when
    it has one (so the entry is drift-monitored when served); return the model's directory.
    ``name`` is the model's name in the repository (default: the registry name).

    Raises IntegrityError for a tampered artifact, InvalidArgumentError for a format Triton
    cannot serve, NotFoundError for an unknown reference.
    """
    version = registry.get(ref)
    model_file = registry.model_file(version.ref, verify=True)
    config = triton_config(version, model_file, options)
    if name is not None:
        config.name = name
    model_dir = Path(out) / config.name
    version_dir = model_dir / str(version.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, version_dir / TRITON_FORMATS[version.format][2])
    profile = model_file.parent / PROFILE_FILE
    if profile.is_file():
        shutil.copyfile(profile, version_dir / PROFILE_FILE)
    write_config(config, model_dir / "config.pbtxt")
    return model_dir
