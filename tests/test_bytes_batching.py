"""BYTES through the Rust dynamic batcher: string tensors batch like any other (concatenated,
as Triton does) and each caller gets its own strings back; end to end on a real server with
a string model, configured and auto-completed."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from _serving import start_server
from servekit.batching import DynamicBatcher
from servekit.errors import InvalidArgumentError


class Strings:
    """Upper-cases a batch of strings; records each batch; waits for ``release`` when gated."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.gate = threading.Semaphore(0)
        self.started = threading.Semaphore(0)

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.started.release()
        assert self.gate.acquire(timeout=10)
        s = batch["s"]
        self.batches.append(list(s[:, 0]))
        upper = np.array([v.upper() for v in s.reshape(-1)], dtype=object).reshape(s.shape)
        return {"u": upper}


def strings(*values: bytes) -> np.ndarray:
    return np.array(list(values), dtype=object).reshape(-1, 1)


def test_string_requests_share_a_batch_and_each_gets_its_own_rows():
    runner = Strings()

    async def scenario() -> list[dict[str, np.ndarray]]:
        with DynamicBatcher(runner, max_batch_size=8) as batcher:
            first = asyncio.ensure_future(batcher.infer({"s": strings(b"a")}))
            await asyncio.to_thread(runner.started.acquire, True, 10)  # batch 1 is running
            rest = [
                asyncio.ensure_future(batcher.infer({"s": strings(*values)}))
                for values in ([b"bb", b""], [b"c\x00c"], [b"\xff\xfe"])
            ]
            for _ in range(10_000):
                if batcher.stats()["queued"] == 3:
                    break
                await asyncio.sleep(0)
            runner.gate.release(2)
            return [await first, *[await r for r in rest]]

    results = asyncio.run(scenario())
    assert runner.batches == [[b"a"], [b"bb", b"", b"c\x00c", b"\xff\xfe"]]
    got = [list(r["u"][:, 0]) for r in results]
    assert got == [[b"A"], [b"BB", b""], [b"C\x00C"], [b"\xff\xfe"]]
    assert all(r["u"].dtype == object for r in results)


def test_non_bytes_object_elements_are_refused():
    runner = Strings()

    async def scenario() -> None:
        with DynamicBatcher(runner, max_batch_size=8) as batcher:
            await batcher.infer({"s": np.array([[1]], dtype=object)})

    with pytest.raises(InvalidArgumentError, match="input 's' element 0 is <class 'int'>"):
        asyncio.run(scenario())


def _string_model(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["u"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["n", 2])],
        [helper.make_tensor_value_info("u", TensorProto.STRING, ["n", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


CONFIGURED = """name: "configured"
platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "s" data_type: TYPE_STRING dims: [2] }
output { name: "u" data_type: TYPE_STRING dims: [2] }
dynamic_batching { max_queue_delay_microseconds: 100000 }
"""


def test_string_models_batch_on_a_real_server(tmp_path: Path):
    _string_model(tmp_path / "configured" / "1" / "model.onnx")
    (tmp_path / "configured" / "config.pbtxt").write_text(CONFIGURED)
    _string_model(tmp_path / "auto" / "1" / "model.onnx")  # auto-complete turns batching on
    server = start_server("--model-repo", str(tmp_path))
    try:
        with httpclient.InferenceServerClient(server.url, concurrency=8) as client:
            assert "dynamic_batching" in client.get_model_config("auto")

            def send(model: str, i: int) -> httpclient.InferAsyncRequest:
                data = np.array([[f"r{i}".encode(), f"é{i}".encode()]], dtype=object)
                inp = httpclient.InferInput("s", [1, 2], "BYTES")
                inp.set_data_from_numpy(data, binary_data=i % 2 == 0)
                out = httpclient.InferRequestedOutput("u", binary_data=i % 2 == 1)
                return client.async_infer(model, [inp], outputs=[out])

            for model in ("configured", "auto"):
                pending = [send(model, i) for i in range(16)]  # in flight together
                for i, request in enumerate(pending):
                    rows = request.get_result().as_numpy("u").tolist()
                    # tritonclient gives bytes for binary outputs, str for JSON ones.
                    text = [[v.decode() if isinstance(v, bytes) else v for v in r] for r in rows]
                    assert text == [[f"r{i}", f"é{i}"]], (model, i)
            stats = client.get_inference_statistics("configured")["model_stats"][0]
            assert stats["inference_count"] == 16
            assert stats["execution_count"] < 16  # requests shared batches
    finally:
        assert server.stop() == 0
