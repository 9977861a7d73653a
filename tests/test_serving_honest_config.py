"""Every config.pbtxt field is honoured or refused at load, naming the field: refusals,
instance_group devices, and model_warmup (run before the version is READY), against a real
server in explicit mode (the load API carries each configuration)."""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _serving import (
    ADD_CONFIG,
    ServerProcess,
    _save,
    add_model,
    http_call,
    start_server,
    write_slow_model,
)

BASE: dict[str, Any] = {
    "platform": "onnxruntime_onnx",
    "max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}],
}
ADD_INPUT = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}]}
).encode()


def load(server: ServerProcess, model: str, **fields: Any) -> tuple[int, dict]:
    config = {"name": model, **BASE, **fields}
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    return http_call(server, "POST", f"/v2/repository/models/{model}/load", body)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("honest")
    _save(add_model(1.0), root / "adder" / "1" / "model.onnx")
    (root / "adder" / "config.pbtxt").write_text(ADD_CONFIG.format(name="adder", extra=""))
    warm = root / "adder" / "warmup"
    warm.mkdir()
    (warm / "ones.bin").write_bytes(np.ones((2, 4), "<f4").tobytes())
    (warm / "short.bin").write_bytes(b"\0" * 12)
    write_slow_model(root, "slow", 300_000)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    srv = start_server(
        "--model-repo", str(repo), "--model-control-mode", "explicit", "--load-model", "adder"
    )
    yield srv
    assert srv.stop() == 0


def assert_serving(server: ServerProcess, value: float = 1.0) -> None:
    status, body = http_call(server, "POST", "/v2/models/adder/infer", ADD_INPUT)
    assert status == 200 and body["outputs"][0]["data"] == [value] * 4


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        ({"sequence_batching": {}}, "sequence_batching", "stateful sequence models"),
        ({"ensemble_scheduling": {"step": []}}, "ensemble_scheduling", "ensembles"),
        (
            {"dynamic_batching": {"priority_levels": 2, "priority_queue_policy": {"3": {}}}},
            "dynamic_batching.priority_queue_policy",
            "priority level 3, outside 1..priority_levels (2)",
        ),
        (
            {"dynamic_batching": {"priority_queue_policy": {"1": {}}}},
            "dynamic_batching.priority_queue_policy",
            "priority level 1, outside 1..priority_levels (0)",
        ),
        ({"optimization": {"priority": "PRIORITY_MAX"}}, "optimization", "optimization"),
        ({"parameters": {"k": {"string_value": "v"}}}, "parameters", "backend parameters"),
        ({"response_cache": {"enable": True}}, "response_cache", "does not honour it"),
        ({"metric_tags": {"team": "a"}}, "metric_tags", "does not honour it"),
        ({"cc_model_filenames": {"7.0": "x.onnx"}}, "cc_model_filenames", "does not honour"),
        ({"model_transaction_policy": {"decoupled": True}}, "model_transaction_policy", ""),
        (
            {
                "output": [
                    {"name": "y", "data_type": "TYPE_FP32", "dims": [4], "label_filename": "l"}
                ]
            },
            "output.label_filename",
            "",
        ),
        (
            {"instance_group": [{"kind": "KIND_GPU"}, {"kind": "KIND_CPU"}]},
            "instance_group",
            "servekit runs a model version on one device",
        ),
        (
            {"instance_group": [{"kind": "KIND_GPU", "gpus": [0, 1]}]},
            "instance_group",
            "on one GPU",
        ),
        ({"instance_group": [{"kind": "KIND_MODEL"}]}, "instance_group", "KIND_MODEL"),
        (
            {"instance_group": [{"rate_limiter": {"priority": 2}}]},
            "instance_group.rate_limiter",
            "",
        ),
    ],
)
def test_fields_not_honoured_are_refused_naming_the_field(server, fields, field: str, why: str):
    status, body = load(server, "adder", **fields)
    assert status == 400, body
    assert field in body["error"] and why in body["error"]
    assert_serving(server)  # the refused load left the model as it was


def test_kind_gpu_without_cuda_is_a_clear_error(server):
    status, body = load(server, "adder", instance_group=[{"kind": "KIND_GPU", "gpus": [0]}])
    assert status == 400
    assert "instance_group KIND_GPU: device 'cuda:0' needs onnxruntime-gpu" in body["error"]
    status, _ = http_call(server, "POST", "/v2/repository/models/adder/load")  # back to its own
    assert status == 200
    assert_serving(server)


def test_kind_cpu_with_count_is_served(server):
    status, _ = load(server, "adder", instance_group=[{"kind": "KIND_CPU", "count": 3}])
    assert status == 200
    assert_serving(server)


def test_priority_queue_policy_and_delay_are_accepted(server):
    # Their semantics are tested in test_serving_queue_policy.py.
    policy = {"timeout_action": "DELAY", "default_timeout_microseconds": 1000}
    batching = {
        "priority_levels": 2,
        "default_queue_policy": policy,
        "priority_queue_policy": {"1": {**policy, "max_queue_size": 4}},
    }
    status, body = load(server, "adder", dynamic_batching=batching)
    assert status == 200, body
    assert_serving(server)
    _, config = http_call(server, "GET", "/v2/models/adder/config")
    assert config["dynamic_batching"]["priority_queue_policy"]["1"]["max_queue_size"] == 4


def _warmup(name: str, source: dict[str, Any], batch_size: int = 2, count: int = 0) -> dict:
    spec = {"data_type": "TYPE_FP32", "dims": [4], **source}
    return {"name": name, "batch_size": batch_size, "count": count, "inputs": {"x": spec}}


@pytest.mark.parametrize(
    "source",
    [{"zero_data": True}, {"random_data": True}, {"input_data_file": "ones.bin"}],
    ids=["zero", "random", "file"],
)
def test_model_warmup_runs_each_kind_of_data(server, source):
    status, body = load(server, "adder", model_warmup=[_warmup("w", source, count=3)])
    assert status == 200, body
    assert_serving(server)
    # Warm-up runs are not requests: the statistics of the new version start at zero... but
    # for the request just served.
    status, stats = http_call(server, "GET", "/v2/models/adder/stats")
    assert stats["model_stats"][0]["inference_count"] == 1


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (_warmup("w", {"input_data_file": "short.bin"}), "holds 12 bytes"),
        (_warmup("w", {"input_data_file": "missing.bin"}), "does not exist"),
        (_warmup("w", {"input_data_file": "../adder/warmup/ones.bin"}), "plain file name"),
        (
            _warmup("w", {"zero_data": True}, batch_size=0),
            "batch_size 0 must be in 1..max_batch_size (8)",
        ),
        (
            {
                "name": "w",
                "batch_size": 1,
                "inputs": {"nope": {"data_type": "TYPE_FP32", "dims": [4], "zero_data": True}},
            },
            "'nope' is not an input",
        ),
        (_warmup("w", {}), "give one of zero_data"),
    ],
)
def test_bad_model_warmup_fails_the_load_naming_the_sample(server, sample, message):
    status, body = load(server, "adder", model_warmup=[sample])
    assert status == 400, body
    assert "model_warmup 'w'" in body["error"] and message in body["error"]
    status, _ = http_call(server, "POST", "/v2/repository/models/adder/load")
    assert_serving(server)


def test_warmup_runs_before_the_version_is_ready(server):
    """The slow model's warm-up takes several model runs: while the load is in flight the
    model is not ready; once the load returns it is."""
    config = {
        "name": "slow",
        **BASE,
        "model_warmup": [_warmup("long", {"zero_data": True}, batch_size=1, count=3)],
    }
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    result: list[int] = []
    loader = threading.Thread(
        target=lambda: result.append(
            http_call(server, "POST", "/v2/repository/models/slow/load", body)[0]
        )
    )
    loader.start()
    seen_unready = False
    while loader.is_alive():
        status, _ = http_call(server, "GET", "/v2/models/slow/ready")
        if loader.is_alive() and status != 200:
            seen_unready = True
        time.sleep(0.01)  # poll gently: the warm-up shares the machine
    loader.join()
    assert result == [200]
    assert seen_unready
    assert http_call(server, "GET", "/v2/models/slow/ready")[0] == 200


def test_bytes_warmup_file_is_length_prefixed(tmp_path: Path):
    from servekit.serving.config import parse_json_config
    from servekit.serving.warmup import run_warmup

    (tmp_path / "warmup").mkdir()
    elements = [b"ab", b"", b"xyz"]
    (tmp_path / "warmup" / "s.bin").write_bytes(
        b"".join(struct.pack("<I", len(e)) + e for e in elements)
    )
    config = parse_json_config(
        json.dumps(
            {
                "name": "strings",
                "max_batch_size": 0,
                "input": [{"name": "s", "data_type": "TYPE_STRING", "dims": [3]}],
                "output": [{"name": "o", "data_type": "TYPE_STRING", "dims": [3]}],
                "model_warmup": [
                    {
                        "name": "w",
                        "batch_size": 1,
                        "inputs": {
                            "s": {
                                "data_type": "TYPE_STRING",
                                "dims": [3],
                                "input_data_file": "s.bin",
                            }
                        },
                    }
                ],
            }
        )
    )

    class Recorder:
        seen: list[list[bytes]] = []

        def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.seen.append(list(inputs["s"]))
            return {"o": inputs["s"]}

    recorder = Recorder()
    run_warmup(recorder, config, tmp_path, 1)
    assert recorder.seen == [elements]
