"""An MLServer custom runtime that serves one ONNX model with ONNX Runtime.

MLServer has no ONNX runtime of its own; this is the one users write. Used by bench_serving.py
from the peers virtual environment (benchmarks/setup_peers.sh): its model-settings.json names
``mlserver_onnx.OnnxRuntime`` as implementation, ``parameters.uri`` as the .onnx file, and
``max_batch_size``/``max_batch_time`` so MLServer's adaptive batcher merges concurrent requests
into one ``predict`` call. ONNX Runtime runs with one intra-op thread.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    """Runs every output of the ONNX graph on the request's ``input`` tensor."""

    async def load(self) -> bool:
        """Opens the ONNX Runtime session on ``parameters.uri``; returns True when ready."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Returns every output for the (possibly batched) ``input``; raises InferenceError
        when the request has no ``input`` tensor."""
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        if "input" not in feeds:
            raise InferenceError(f"missing input 'input', got {sorted(feeds)}")
        outs = self._session.run(self._outputs, {"input": feeds["input"]})
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(n, o) for n, o in zip(self._outputs, outs, strict=True)
            ],
        )
