"""Triton configuration, repository loading and runners (in process, no HTTP)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from _serving import ADD_CONFIG, EXAMPLE_REPO, add_model
from servekit.errors import InvalidArgumentError, NotFoundError, UnavailableError
from servekit.serving import DataPlane, ModelRepository, OnnxRunner, TorchScriptRunner
from servekit.serving.config import (
    ModelConfig,
    complete_config,
    kserve_type,
    parse_json_config,
    read_config,
    select_versions,
    signature_of,
    validate_config,
    write_config,
)
from servekit.serving.triton_proto import model_config_pb2 as mc
from servekit.signature import onnx_signature


def save_add(path: Path, value: float) -> Path:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(add_model(value), str(path))
    return path


def test_example_configs_parse_with_tritons_schema():
    for name in ("digits", "digits_int8"):
        text = (EXAMPLE_REPO / name / "config.pbtxt").read_text()
        config = text_format.Parse(text, mc.ModelConfig())
        assert config.name == name and config.max_batch_size == 64
        assert config.HasField("dynamic_batching")
        assert [i.name for i in config.input] == ["input"]
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_complete_from_onnx_as_triton_does(tmp_path):
    model = save_add(tmp_path / "1" / "model.onnx", 1.0)
    config = complete_config(ModelConfig(), "adder", model, onnx_signature(model))
    assert config.name == "adder" and config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    assert [(t.name, kserve_type(t.data_type), list(t.dims)) for t in config.input] == [
        ("x", "FP32", [4])
    ]
    sig = signature_of(config)
    assert sig.inputs[0].shape == (-1, 4) and sig.outputs[0].shape == (-1, 4)
    # A config that lists its tensors and sets no batching is kept as written.
    partial = text_format.Parse(ADD_CONFIG.format(name="adder", extra=""), ModelConfig())
    kept = complete_config(partial, "adder", model, onnx_signature(model))
    assert kept.max_batch_size == 8 and not kept.HasField("dynamic_batching")


def test_per_row_scalar_output_gets_triton_reshape():
    config = read_config(EXAMPLE_REPO / "digits" / "config.pbtxt")
    label = next(o for o in config.output if o.name == "label")
    assert list(label.dims) == [1] and label.HasField("reshape")
    assert list(label.reshape.shape) == []


def test_write_read_round_trip(tmp_path):
    config = read_config(EXAMPLE_REPO / "digits" / "config.pbtxt")
    write_config(config, tmp_path / "config.pbtxt")
    assert read_config(tmp_path / "config.pbtxt") == config


def test_invalid_configs(tmp_path):
    bad = tmp_path / "config.pbtxt"
    bad.write_text("max_batch_size: -")
    with pytest.raises(InvalidArgumentError, match=f"invalid {bad}: 1:"):
        read_config(bad)
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        read_config(tmp_path / "missing.pbtxt")
    with pytest.raises(InvalidArgumentError, match="invalid model config JSON"):
        parse_json_config('{"max_batch_size": "x"}')
    config = text_format.Parse(ADD_CONFIG.format(name="m", extra=""), ModelConfig())
    config.dynamic_batching.preferred_batch_size.append(9)
    with pytest.raises(
        InvalidArgumentError, match=r"preferred_batch_size 9 must be in 1\.\.max_batch_size \(8\)"
    ):
        validate_config(config)
    config.max_batch_size = 0
    with pytest.raises(InvalidArgumentError, match="dynamic_batching needs max_batch_size > 0"):
        validate_config(config)
    twice = text_format.Parse(ADD_CONFIG.format(name="m", extra=""), ModelConfig())
    twice.input.add(name="x", data_type=mc.TYPE_FP32, dims=[4])
    with pytest.raises(InvalidArgumentError, match="input 'x' is listed twice"):
        validate_config(twice)
    with pytest.raises(InvalidArgumentError, match="data type TYPE_BF16 is not supported"):
        kserve_type(mc.TYPE_BF16)
    no_tensors = ModelConfig(name="t", platform="pytorch_libtorch")
    with pytest.raises(InvalidArgumentError, match="must list its inputs and outputs"):
        complete_config(no_tensors, "t", tmp_path / "model.pt", None)


def test_version_policy():
    def policy(text: str) -> ModelConfig:
        return text_format.Parse(f"name: 'm' version_policy {{ {text} }}", ModelConfig())

    assert select_versions(ModelConfig(name="m"), [3, 1, 2]) == [3]
    assert select_versions(policy("latest { num_versions: 2 }"), [3, 1, 2]) == [2, 3]
    assert select_versions(policy("all { }"), [3, 1, 2]) == [1, 2, 3]
    assert select_versions(policy("specific { versions: [1, 3] }"), [3, 1, 2]) == [1, 3]
    with pytest.raises(InvalidArgumentError, match=r"asks for versions \[7\], found \[1, 2\]"):
        select_versions(policy("specific { versions: [7] }"), [1, 2])


def test_repository_keeps_serving_around_broken_models(tmp_path):
    shutil.copytree(EXAMPLE_REPO / "digits", tmp_path / "digits")
    (tmp_path / "empty").mkdir()
    save_add(tmp_path / "wrongfile" / "1" / "weights.bin", 1.0)
    (tmp_path / ".hidden").mkdir()
    repo = ModelRepository(tmp_path)
    plane = DataPlane(repo)

    async def scenario() -> None:
        await plane.load_all()
        assert plane.model_ready("digits")
        assert not plane.model_ready("empty") and not plane.model_ready("wrongfile")
        index = {r["name"]: r for r in plane.repository_index()}
        assert set(index) == {"digits", "empty", "wrongfile"}
        assert "has no numbered version directory" in index["empty"]["reason"]
        assert "holds no model file" in index["wrongfile"]["reason"]
        with pytest.raises(UnavailableError, match="model 'empty' is not ready"):
            plane.model("empty")
        with pytest.raises(NotFoundError):
            plane.model("nothing")
        with pytest.raises(InvalidArgumentError, match="model version 'one' is not an integer"):
            plane.model("digits", "one")
        await plane.close()

    asyncio.run(scenario())


def test_repository_root_must_be_a_directory(tmp_path):
    from servekit.errors import StorageError

    with pytest.raises(StorageError, match="is not a directory"):
        ModelRepository(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is not a directory"):
        ModelRepository(tmp_path / "file")


def test_onnx_runner(tmp_path):
    model = save_add(tmp_path / "model.onnx", 2.0)
    runner = OnnxRunner(model, threads=1)
    assert runner.providers == ["CPUExecutionProvider"]
    out = runner.run({"x": np.ones((3, 4), dtype=np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((3, 4), 3.0, dtype=np.float32))
    assert runner.signature().inputs[0].shape == (-1, 4)
    with pytest.raises(InvalidArgumentError, match="threads must be at least 1, got 0"):
        OnnxRunner(model, threads=0)
    with pytest.raises(InvalidArgumentError, match="unknown device 'tpu'"):
        OnnxRunner(model, device="tpu")
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    with pytest.raises(InvalidArgumentError, match="cannot load ONNX model"):
        OnnxRunner(tmp_path / "bad.onnx")
    from servekit.errors import InferenceError

    with pytest.raises(InferenceError, match="onnxruntime"):
        runner.run({"x": np.ones((3, 5), dtype=np.float32)})


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_cuda_without_onnxruntime_gpu_is_a_clear_error(tmp_path):
    model = save_add(tmp_path / "model.onnx", 2.0)
    with pytest.raises(UnavailableError, match="device 'cuda' needs onnxruntime-gpu"):
        OnnxRunner(model, device="cuda")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_model_served_from_the_repository(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).eval()
    traced = torch.jit.trace(module, torch.zeros(1, 4))
    (tmp_path / "ts" / "1").mkdir(parents=True)
    traced.save(str(tmp_path / "ts" / "1" / "model.pt"))
    (tmp_path / "ts" / "config.pbtxt").write_text(
        'platform: "pytorch_libtorch"\nmax_batch_size: 8\n'
        'input { name: "INPUT__0" data_type: TYPE_FP32 dims: [4] }\n'
        'output { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [3] }\n'
    )
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    runner = TorchScriptRunner(
        tmp_path / "ts" / "1" / "model.pt", input_names=["INPUT__0"], output_names=["OUTPUT__0"]
    )
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(runner.run({"INPUT__0": x})["OUTPUT__0"], expected, rtol=1e-6)

    plane = DataPlane(ModelRepository(tmp_path))

    async def scenario() -> tuple[bytes, int | None]:
        await plane.load_all()
        body = json.dumps(
            {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [5, 4],
                         "data": x.ravel().tolist()}]}
        ).encode()  # fmt: skip
        try:
            return await plane.infer_body("ts", None, body, None)
        finally:
            await plane.close()

    body, header = asyncio.run(scenario())
    assert header is None
    out = json.loads(body)["outputs"][0]
    assert out["name"] == "OUTPUT__0" and out["shape"] == [5, 3]
    np.testing.assert_allclose(np.array(out["data"]).reshape(5, 3), expected, rtol=1e-6)
    assert plane.model_config("ts")["backend"] == "pytorch"
