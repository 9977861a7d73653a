"""KServe v2 gRPC messages <-> servekit's requests, responses and the data plane's dicts.

Tensors arrive either all in ``raw_input_contents`` (one entry per input, in input order, in
the binary tensor form of :mod:`servekit.serving.codecs.tensor`) or each in its typed
``contents`` field; outputs always go out in ``raw_output_contents``, as Triton sends them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format

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
from servekit.serving.codecs.v2 import read_shared_input
from servekit.serving.shm import SharedMemoryRegistry, shm_reference
from servekit.serving.triton_proto import service_pb2 as pb
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


def decode_infer_request(
    msg: pb.ModelInferRequest, shm: SharedMemoryRegistry | None = None
) -> InferRequest:
    """Decode a ``ModelInferRequest``; fixed-size raw tensors are read-only views of the
    message's bytes, shared-memory inputs are read from ``shm``. Raises InvalidArgumentError
    with the HTTP codec's wording for the same fault, and for raw contents that do not match
    the inputs outside shared memory one to one."""
    if not msg.inputs:
        raise InvalidArgumentError("the inference request needs a non-empty 'inputs' list")
    refs = [shm_reference(parameters_dict(t.parameters), f"input '{t.name}'") for t in msg.inputs]
    raw = msg.raw_input_contents
    carried = sum(ref is None for ref in refs)
    if raw and len(raw) != carried:
        raise InvalidArgumentError(
            f"raw_input_contents holds {len(raw)} tensors, but the request has {carried} "
            "inputs outside shared memory"
        )
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    raw_index = 0
    for tensor, ref in zip(msg.inputs, refs, strict=True):
        name = tensor.name
        if not name:
            raise InvalidArgumentError("an input has no 'name'")
        if name in inputs:
            raise InvalidArgumentError(f"input '{name}' already exists in request")
        datatype = check_datatype(name, tensor.datatype)
        shape, count = check_shape(name, datatype, list(tensor.shape))
        field = CONTENTS_FIELD.get(datatype)
        if ref is not None:
            if _any_contents(tensor):
                raise InvalidArgumentError(f"input '{name}' has both shared memory and data")
            inputs[name] = read_shared_input(shm, ref, name, datatype, shape, count)
        elif raw:
            if _any_contents(tensor):
                raise InvalidArgumentError(
                    f"input '{name}' has both 'contents' and raw_input_contents"
                )
            data = memoryview(raw[raw_index])
            raw_index += 1
            inputs[name] = from_binary(name, datatype, shape, count, data)
        elif field is None:
            raise InvalidArgumentError(
                f"input '{name}': {datatype} data must be sent in raw_input_contents"
            )
        else:
            _only_field(tensor, name, datatype, field)
            values = list(getattr(tensor.contents, field))
            inputs[name] = from_json(name, datatype, shape, count, values)
        datatypes[name] = datatype
    outputs = None
    if msg.outputs:
        outputs = []
        for out in msg.outputs:
            oparams = parameters_dict(out.parameters)
            if oparams.get("classification"):
                raise InvalidArgumentError(f"output '{out.name}': classification is not supported")
            ref = shm_reference(oparams, f"output '{out.name}'")
            outputs.append(RequestedOutput(out.name, None, ref))
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
        shared = response.shared.get(name)
        if shared is None:
            msg.raw_output_contents.append(to_binary(arr))
            continue
        # In shared memory: parameters say where, and an empty entry keeps the raw contents
        # aligned with the outputs (tritonclient indexes them by output position).
        out.parameters["shared_memory_region"].string_param = shared["shared_memory_region"]
        out.parameters["shared_memory_byte_size"].int64_param = shared["shared_memory_byte_size"]
        if "shared_memory_offset" in shared:
            out.parameters["shared_memory_offset"].int64_param = shared["shared_memory_offset"]
        msg.raw_output_contents.append(b"")
    return msg


def shm_status_message(rows: list[dict[str, Any]]) -> pb.SystemSharedMemoryStatusResponse:
    """The data plane's shared memory status as a ``SystemSharedMemoryStatusResponse``."""
    response = pb.SystemSharedMemoryStatusResponse()
    for row in rows:
        status = response.regions[row["name"]]
        status.name, status.key = row["name"], row["key"]
        status.offset, status.byte_size = row["offset"], row["byte_size"]
    return response


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
