"""KServe v2 gRPC messages <-> servekit's requests, responses and the data plane's dicts.

Tensors arrive either all in ``raw_input_contents`` (one entry per input, in input order, in
the binary tensor form of :mod:`servekit.serving.codecs.tensor`) or each in its typed
``contents`` field; outputs always go out in ``raw_output_contents``, as Triton sends them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb

from servekit.errors import InvalidArgumentError
from servekit.serving.codecs import (
    InferRequest,
    InferResponse,
    RequestedOutput,
    assemble_request,
)
from servekit.serving.codecs.tensor import (
    check_datatype,
    check_shape,
    from_binary,
    from_json,
    to_binary,
)
from servekit.signature import datatype_of

#: The ``InferTensorContents`` field of each datatype (FP16 and BF16 have none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(param: Any) -> Any:
    """The Python value of an ``InferParameter`` or ``ModelRepositoryParameter`` (None when
    no field of its oneof is set)."""
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def parameters_dict(params: Any) -> dict[str, Any]:
    """A protobuf parameters map as a dict of Python values."""
    return {key: parameter_value(value) for key, value in params.items()}


def decode_infer_request(msg: pb.ModelInferRequest) -> InferRequest:
    """Decode a ``ModelInferRequest``; fixed-size raw tensors are read-only views of the
    message's bytes. Raises InvalidArgumentError with the HTTP codec's wording for the same
    fault, and for raw contents that do not match the inputs one to one."""
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise InvalidArgumentError(
            f"raw_input_contents holds {len(raw)} tensors, but the request has "
            f"{len(msg.inputs)} inputs"
        )
    if not msg.inputs:
        raise InvalidArgumentError("the inference request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for i, tensor in enumerate(msg.inputs):
        name = tensor.name
        if not name:
            raise InvalidArgumentError("an input has no 'name'")
        if name in inputs:
            raise InvalidArgumentError(f"input '{name}' already exists in request")
        datatype = check_datatype(name, tensor.datatype)
        shape, count = check_shape(name, datatype, list(tensor.shape))
        params = parameters_dict(tensor.parameters)
        if any(k.startswith("shared_memory") for k in params):
            raise InvalidArgumentError(f"input '{name}': shared memory is not supported")
        field = CONTENTS_FIELD.get(datatype)
        if raw:
            if _any_contents(tensor):
                raise InvalidArgumentError(
                    f"input '{name}' has both 'contents' and raw_input_contents"
                )
            inputs[name] = from_binary(name, datatype, shape, count, memoryview(raw[i]))
        elif field is None:
            raise InvalidArgumentError(
                f"input '{name}': {datatype} data must be sent in raw_input_contents"
            )
        else:
            _only_field(tensor, name, datatype, field)
            values = list(getattr(tensor.contents, field))
            inputs[name] = from_json(name, datatype, shape, count, values)
        datatypes[name] = datatype
    outputs = [RequestedOutput(out.name, None) for out in msg.outputs] if msg.outputs else None
    for out in msg.outputs:
        oparams = parameters_dict(out.parameters)
        if any(k.startswith("shared_memory") for k in oparams):
            raise InvalidArgumentError(f"output '{out.name}': shared memory is not supported")
        if oparams.get("classification"):
            raise InvalidArgumentError(f"output '{out.name}': classification is not supported")
    return assemble_request(
        inputs, datatypes, msg.id or None, outputs, parameters_dict(msg.parameters)
    )


def _any_contents(tensor: Any) -> bool:
    return any(len(getattr(tensor.contents, f)) for f in set(CONTENTS_FIELD.values()))


def _only_field(tensor: Any, name: str, datatype: str, field: str) -> None:
    for other in set(CONTENTS_FIELD.values()) - {field}:
        if len(getattr(tensor.contents, other)):
            raise InvalidArgumentError(
                f"input '{name}': {datatype} data must be in contents.{field}, not {other}"
            )


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with every output's bytes in ``raw_output_contents``."""
    msg = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    for name, arr, _binary in response.outputs:
        out = msg.outputs.add()
        out.name = name
        out.datatype = datatype_of(arr.dtype)
        out.shape.extend(arr.shape)
        msg.raw_output_contents.append(to_binary(arr))
    return msg


def metadata_message(meta: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The data plane's model metadata as a ``ModelMetadataResponse``."""
    return json_format.ParseDict(meta, pb.ModelMetadataResponse())


def config_message(config: dict[str, Any]) -> pb.ModelConfigResponse:
    """The data plane's model configuration (Triton's JSON) as a ``ModelConfigResponse``."""
    response = pb.ModelConfigResponse()
    json_format.ParseDict(config, response.config)
    return response


def statistics_message(stats: dict[str, Any]) -> pb.ModelStatisticsResponse:
    """The data plane's statistics as a ``ModelStatisticsResponse`` (servekit's extra
    ``latency_quantiles`` field has no place in Triton's message and is left out)."""
    return json_format.ParseDict(stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)


def index_message(rows: list[dict[str, str]]) -> pb.RepositoryIndexResponse:
    """The data plane's repository index as a ``RepositoryIndexResponse``."""
    response = pb.RepositoryIndexResponse()
    for row in rows:
        response.models.add(
            name=row["name"],
            version=row.get("version", ""),
            state=row["state"],
            reason=row.get("reason", ""),
        )
    return response
