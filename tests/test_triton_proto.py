"""servekit's own copy of Triton's protobuf schemas (servekit.serving.triton_proto): the same
schemas as the tritonclient the tests use, next to tritonclient in one process, every RPC
registered, and a serving stack that imports neither tritonclient nor onnx."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import text_format

from servekit.serving.triton_proto import model_config_pb2 as mc
from servekit.serving.triton_proto import service_pb2 as pb
from servekit.serving.triton_proto._descriptors import GRPC_SERVICE_PROTO, MODEL_CONFIG_PROTO
from servekit.serving.triton_proto.service_grpc import SERVICE, add_servicer_to_server


def test_the_schemas_are_those_of_the_installed_tritonclient():
    from tritonclient.grpc import model_config_pb2, service_pb2

    regenerate = "run tools/vendor_triton_protos.py to follow the installed tritonclient"
    assert model_config_pb2.DESCRIPTOR.serialized_pb == MODEL_CONFIG_PROTO, regenerate
    assert service_pb2.DESCRIPTOR.serialized_pb == GRPC_SERVICE_PROTO, regenerate


def test_messages_cross_to_tritonclient_and_back_as_bytes():
    # Both modules load into one process (separate pools: no duplicate-file conflict).
    from tritonclient.grpc import model_config_pb2, service_pb2

    request = pb.ModelInferRequest(model_name="digits", id="7")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    tensor.parameters["binary_data_size"].int64_param = 256
    request.raw_input_contents.append(b"\x00" * 256)
    theirs = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.model_name == "digits" and theirs.inputs[0].shape == [1, 64]
    assert theirs.inputs[0].parameters["binary_data_size"].int64_param == 256
    assert pb.ModelInferRequest.FromString(theirs.SerializeToString()) == request
    assert type(theirs) is not type(request)

    config = text_format.Parse(
        'name: "m" max_batch_size: 8 input { name: "x" data_type: TYPE_FP32 dims: [4] } '
        "instance_group { kind: KIND_CPU count: 2 } dynamic_batching { }",
        mc.ModelConfig(),
    )
    assert config.input[0].data_type == mc.TYPE_FP32 == model_config_pb2.TYPE_FP32
    assert mc.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_CPU"
    assert mc.DataType.Name(mc.TYPE_BF16) == "TYPE_BF16"
    same = model_config_pb2.ModelConfig.FromString(config.SerializeToString())
    assert text_format.MessageToString(same) == text_format.MessageToString(config)


def test_a_bad_config_text_is_a_parse_error():
    with pytest.raises(text_format.ParseError, match="no_such_field"):
        text_format.Parse('name: "m" no_such_field: 1', mc.ModelConfig())


class _Echo:
    """A servicer answering ServerLive, ModelInfer and ModelStreamInfer (echoing the request's
    id), and every other RPC but ``missing`` with UNIMPLEMENTED."""

    def __init__(self, missing: str = "") -> None:
        for method in SERVICE.methods:
            if method.name != missing and not hasattr(type(self), method.name):
                setattr(self, method.name, self._unimplemented)

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ModelInfer(self, request, context):
        return pb.ModelInferResponse(id=request.id)

    def ModelStreamInfer(self, requests, context):
        for request in requests:
            yield pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(id=request.id))


@pytest.fixture
def echo_server():
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_servicer_to_server(_Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_every_rpc_is_served_with_its_streaming_kind(echo_server):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    assert len(SERVICE.methods) == 20
    with grpc.insecure_channel(echo_server) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
        assert stub.ModelInfer(service_pb2.ModelInferRequest(id="a"), timeout=30).id == "a"
        requests = (service_pb2.ModelInferRequest(id=i) for i in ("1", "2"))
        answers = stub.ModelStreamInfer(requests, timeout=30)
        assert [a.infer_response.id for a in answers] == ["1", "2"]
        with pytest.raises(grpc.RpcError) as info:
            stub.LogSettings(service_pb2.LogSettingsRequest(), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_servicer_missing_an_rpc_is_refused():
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    with pytest.raises(AttributeError, match="LogSettings"):
        add_servicer_to_server(_Echo(missing="LogSettings"), server)


def test_the_serving_stack_imports_neither_tritonclient_nor_onnx():
    probe = (
        "import json, sys; import servekit.cli.serve, servekit.serving.rest.app, "
        "servekit.serving.grpc, servekit.serving.registry_source, servekit.serving.export, "
        "servekit.serving.warmup; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tritonclient', 'onnx', 'ml_dtypes', 'rapidjson'})))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
