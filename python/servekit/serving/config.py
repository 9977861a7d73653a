"""Triton model configuration (``config.pbtxt``): read, complete from an ONNX graph, write.

The text is parsed exactly as Triton parses it, as the ``ModelConfig`` protobuf of Triton's
``model_config.proto`` (servekit's copy: :mod:`servekit.serving.triton_proto`). With
``max_batch_size > 0`` the configured ``dims`` exclude the batch dimension; :func:`signature_of`
gives the full shapes (batch dimension -1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format

from servekit.errors import InvalidArgumentError
from servekit.serving.config_support import refuse_unsupported
from servekit.serving.paths import plain_component
from servekit.serving.triton_proto import model_config_pb2 as mc
from servekit.signature import Signature, TensorSpec

ModelConfig = mc.ModelConfig

#: Triton platform and backend of each model file servekit can run.
PLATFORMS: dict[str, tuple[str, str]] = {
    "model.onnx": ("onnxruntime_onnx", "onnxruntime"),
    "model.pt": ("pytorch_libtorch", "pytorch"),
}

#: max_batch_size given to an ONNX model whose first dimensions are all dynamic (Triton's
#: auto-complete default).
DEFAULT_MAX_BATCH_SIZE = 4

_TO_TRITON = {
    "BOOL": mc.TYPE_BOOL,
    "UINT8": mc.TYPE_UINT8,
    "UINT16": mc.TYPE_UINT16,
    "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64,
    "INT8": mc.TYPE_INT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "FP16": mc.TYPE_FP16,
    "FP32": mc.TYPE_FP32,
    "FP64": mc.TYPE_FP64,
    "BYTES": mc.TYPE_STRING,
}
_FROM_TRITON = {v: k for k, v in _TO_TRITON.items()}


# ONNX TensorProto element types -> KServe datatype.
def triton_type(datatype: str) -> int:
    """The Triton ``DataType`` enum value of a KServe datatype name."""
    return _TO_TRITON[datatype]


def kserve_type(data_type: int) -> str:
    """The KServe datatype name of a Triton ``DataType``; InvalidArgumentError if unsupported."""
    try:
        return _FROM_TRITON[data_type]
    except KeyError:
        name = mc.DataType.Name(data_type) if data_type in mc.DataType.values() else data_type
        raise InvalidArgumentError(f"data type {name} is not supported") from None


def read_config(path: Path) -> ModelConfig:
    """Parse a ``config.pbtxt``; return the ModelConfig.

    Raises InvalidArgumentError naming the file and the parser's message when it is invalid
    or cannot be read.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc}") from None
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise InvalidArgumentError(f"invalid {path}: {exc}") from None


def parse_json_config(text: str) -> ModelConfig:
    """Parse a model configuration given as JSON (the load API's ``config`` parameter)."""
    try:
        return json_format.Parse(text, ModelConfig())
    except json_format.ParseError as exc:
        raise InvalidArgumentError(f"invalid model config JSON: {exc}") from None


def write_config(config: ModelConfig, path: Path) -> None:
    """Write ``config`` as protobuf text to ``path`` (a ``config.pbtxt``)."""
    path.write_text(text_format.MessageToString(config))


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The JSON form of a configuration, as Triton's config endpoint returns it."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def complete_config(
    config: ModelConfig, name: str, model_file: Path | None, signature: Signature | None
) -> ModelConfig:
    """Fill what a configuration leaves out, as Triton's auto-complete does for ONNX.

    Sets the name, platform and backend from the model file; inputs and outputs from the model's
    ``signature`` when the configuration lists none; and, when the configuration sets no
    ``max_batch_size`` and every input and output has a dynamic first dimension,
    ``max_batch_size`` = :data:`DEFAULT_MAX_BATCH_SIZE` with dynamic batching. Returns a new
    ModelConfig; raises InvalidArgumentError when inputs or outputs are missing and the model
    cannot supply them (TorchScript).
    """
    out = ModelConfig()
    out.CopyFrom(config)
    if not out.name:
        out.name = name
    if model_file is not None and model_file.name in PLATFORMS:
        platform, backend = PLATFORMS[model_file.name]
        if not out.platform and not out.backend:
            out.platform = platform
        if not out.backend:
            out.backend = backend
    if signature is not None:
        batchable = all(
            t.shape and t.shape[0] == -1 for t in (*signature.inputs, *signature.outputs)
        )
        if out.max_batch_size == 0 and batchable and not out.input and not out.output:
            out.max_batch_size = DEFAULT_MAX_BATCH_SIZE
            if not out.HasField("dynamic_batching"):
                out.dynamic_batching.SetInParent()
        skip = 1 if out.max_batch_size > 0 else 0
        if not out.input:
            for t in signature.inputs:
                add_tensor(out.input, t, skip)
        if not out.output:
            for t in signature.outputs:
                add_tensor(out.output, t, skip)
    if not out.input or not out.output:
        raise InvalidArgumentError(
            f"model '{out.name}': config.pbtxt must list its inputs and outputs "
            "(they can only be completed from an ONNX model)"
        )
    validate_config(out)
    return out


def add_tensor(tensors: Any, spec: TensorSpec, skip: int) -> None:
    """Append ``spec`` to a config's inputs or outputs, without its first ``skip`` dims."""
    dims = spec.shape[skip:]
    if dims:
        tensors.add(name=spec.name, data_type=triton_type(spec.datatype), dims=dims)
    else:
        # Triton needs at least one dim: a per-row scalar is [1] on the wire, reshaped to [].
        tensor = tensors.add(name=spec.name, data_type=triton_type(spec.datatype), dims=[1])
        tensor.reshape.SetInParent()


def validate_config(config: ModelConfig) -> None:
    """Check the parts of a configuration servekit relies on, and that it sets no field
    servekit would ignore; InvalidArgumentError naming the field if wrong."""
    where = f"model '{config.name}'"
    refuse_unsupported(config)
    if config.default_model_filename:
        plain_component(config.default_model_filename, f"{where}: default_model_filename")
    if config.max_batch_size < 0:
        raise InvalidArgumentError(f"{where}: max_batch_size {config.max_batch_size} is negative")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen = set()
        for t in tensors:
            if not t.name:
                raise InvalidArgumentError(f"{where}: an {kind} has no name")
            if t.name in seen:
                raise InvalidArgumentError(f"{where}: {kind} '{t.name}' is listed twice")
            seen.add(t.name)
            kserve_type(t.data_type)
            if not t.dims or any(d < -1 for d in t.dims):
                raise InvalidArgumentError(
                    f"{where}: {kind} '{t.name}' dims {list(t.dims)} must be non-empty, >= -1"
                )
    if config.HasField("dynamic_batching"):
        db = config.dynamic_batching
        if config.max_batch_size == 0:
            raise InvalidArgumentError(f"{where}: dynamic_batching needs max_batch_size > 0")
        for size in db.preferred_batch_size:
            if size <= 0 or size > config.max_batch_size:
                raise InvalidArgumentError(
                    f"{where}: preferred_batch_size {size} must be in 1..max_batch_size "
                    f"({config.max_batch_size})"
                )
        for level in sorted(db.priority_queue_policy):
            if not 1 <= level <= db.priority_levels:
                raise InvalidArgumentError(
                    f"{where}: dynamic_batching.priority_queue_policy has a policy for priority "
                    f"level {level}, outside 1..priority_levels ({db.priority_levels})"
                )
    for group in config.instance_group:
        if group.count < 0:
            raise InvalidArgumentError(f"{where}: instance_group count {group.count} is negative")
    instance_device(config, "cpu")  # refuses groups servekit cannot honour


def signature_of(config: ModelConfig) -> Signature:
    """Full-shape signature of a configuration (batch dimension -1 when it batches)."""
    lead = (-1,) if config.max_batch_size > 0 else ()

    def specs(tensors: Any) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(t.name, kserve_type(t.data_type), (*lead, *t.dims)) for t in tensors
        )

    return Signature(specs(config.input), specs(config.output))


def instance_count(config: ModelConfig) -> int:
    """Total model instances the configuration asks for (1 when it has no instance_group)."""
    total = sum(g.count if g.count > 0 else 1 for g in config.instance_group)
    return total or 1


def instance_device(config: ModelConfig, default: str) -> str:
    """The device of a model's instances, from its ``instance_group`` as Triton reads it.

    No group, or only ``KIND_AUTO`` groups: ``default`` (the server's ``--device``).
    ``KIND_CPU``: "cpu". ``KIND_GPU``: "cuda:N" for the one GPU its ``gpus`` list (0 when it
    lists none). Raises InvalidArgumentError naming instance_group for what one version on
    one device cannot honour: groups of different kinds, more than one GPU, KIND_MODEL.
    """
    kinds = {g.kind for g in config.instance_group} - {mc.ModelInstanceGroup.KIND_AUTO}
    where = f"model '{config.name}': instance_group"
    if not kinds:
        return default
    if len(kinds) > 1:
        names = sorted(mc.ModelInstanceGroup.Kind.Name(k) for k in kinds)
        raise InvalidArgumentError(
            f"{where} mixes {names}: servekit runs a model version on one device"
        )
    kind = kinds.pop()
    if kind == mc.ModelInstanceGroup.KIND_CPU:
        return "cpu"
    if kind != mc.ModelInstanceGroup.KIND_GPU:
        name = mc.ModelInstanceGroup.Kind.Name(kind)
        raise InvalidArgumentError(f"{where} kind {name} is not supported (KIND_CPU, KIND_GPU)")
    gpus = {gpu for g in config.instance_group for gpu in g.gpus} or {0}
    if len(gpus) > 1:
        raise InvalidArgumentError(
            f"{where} gpus {sorted(gpus)}: servekit runs a model version on one GPU"
        )
    return f"cuda:{gpus.pop()}"


def select_versions(config: ModelConfig, available: list[int]) -> list[int]:
    """The versions to serve under the configuration's version_policy (default: latest 1).

    Raises InvalidArgumentError when a specific version asked for is not in ``available``.
    """
    ordered = sorted(available)
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return ordered
    if which == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in ordered]
        if missing:
            raise InvalidArgumentError(
                f"model '{config.name}': version_policy asks for versions {missing}, "
                f"found {ordered}"
            )
        return wanted
    n = policy.latest.num_versions if which == "latest" else 1
    return ordered[-max(n, 1) :]
