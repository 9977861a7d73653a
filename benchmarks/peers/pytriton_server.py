"""Serves ONNX models through NVIDIA Triton by way of PyTriton, with Triton's dynamic batcher.

Run with the peers virtual environment's python (see benchmarks/setup_peers.sh); the bundled
tritonserver's Python backend stub links libpython, so LD_LIBRARY_PATH must hold the Python
installation's lib directory (bench_serving.py sets it):

    python pytriton_server.py --http-port P --grpc-port G --metrics-port M NAME=MODEL.onnx ...

Each model is bound under NAME with input ``input`` FP32 [-1, features] and every output of the
ONNX graph, max_batch_size 64 and dynamic batching with no queue delay (as servekit's digits
config: ``dynamic_batching {}``). ONNX Runtime runs with one intra-op thread. Triton's HTTP,
gRPC and metrics ports bind to 127.0.0.1. Serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import signal

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


def infer_function(path: str):
    """Returns (batched infer callable, output Tensor specs) for the ONNX model at ``path``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    # A 1-D output (a label per row) is returned as [n, 1]: PyTriton needs a non-empty shape.
    specs = [
        Tensor(name=o.name, dtype=ORT_TYPES[o.type], shape=tuple(-1 for _ in o.shape[1:]) or (1,))
        for o in session.get_outputs()
    ]

    # @batch passes each input as a keyword named after the tensor: "input".
    @batch
    def infer(input: np.ndarray) -> dict[str, np.ndarray]:
        outs = session.run(names, {"input": input})
        return {n: o.reshape(len(input), -1) for n, o in zip(names, outs, strict=True)}

    return infer, specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("models", nargs="+", help="NAME=PATH.onnx")
    args = parser.parse_args()
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        exit_timeout_secs=5,
    )
    # Triton.serve() returns on SIGINT; make SIGTERM mean the same.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Triton(config=config) as triton:
        for item in args.models:
            name, path = item.split("=", 1)
            infer, outputs = infer_function(path)
            triton.bind(
                model_name=name,
                infer_func=infer,
                inputs=[Tensor(name="input", dtype=np.float32, shape=(-1,))],
                outputs=outputs,
                config=ModelConfig(
                    max_batch_size=64,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=0),
                ),
                strict=False,
            )
        with contextlib.suppress(KeyboardInterrupt):
            triton.serve()


if __name__ == "__main__":
    main()
