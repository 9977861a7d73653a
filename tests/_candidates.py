"""Helpers for the shadow/canary tests: digits candidates that disagree, fail, are slow or hang,
a registry holding them, and a small v2 client that keeps the raw response bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, compose, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from _serving import EXAMPLE_REPO
from servekit.registry import Registry

DIGITS = EXAMPLE_REPO / "digits" / "1" / "model.onnx"
X = load_digits().data.astype(np.float32)
Y = load_digits().target


def weak_digits() -> onnx.ModelProto:
    """A logistic regression trained on 60 digits: same signature as the digits model
    (``input`` -> ``label``, ``probabilities``), disagreeing with it on some rows."""
    model = LogisticRegression(max_iter=500).fit(X[:60] / 16.0, Y[:60])
    return to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 1},
    )


def _prefix(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "prefix",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("pre", TensorProto.FLOAT, ["n", 64])],
        initializers,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)],
        ir_version=8,
    )


def _slow_prefix(iterations: int) -> onnx.ModelProto:
    """``pre = input + 0`` computed by a Loop of ``iterations`` Adds: same values, slower."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("Add", ["v", "zero"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, ["n", 64]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["n", 64]),
        ],
        [helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])],
    )
    return _prefix(
        [helper.make_node("Loop", ["trips", "keep_going", "input"], ["pre"], body=body)],
        [
            helper.make_tensor("trips", TensorProto.INT64, [], [iterations]),
            helper.make_tensor("keep_going", TensorProto.BOOL, [], [True]),
        ],
    )


def _failing_prefix() -> onnx.ModelProto:
    """A Reshape to rows of 1000 values: fails at run time for any batch of up to 64 rows."""
    return _prefix(
        [
            helper.make_node("Reshape", ["input", "odd"], ["wide"]),
            helper.make_node("Reshape", ["wide", "back"], ["pre"]),
        ],
        [
            helper.make_tensor("odd", TensorProto.INT64, [2], [-1, 1000]),
            helper.make_tensor("back", TensorProto.INT64, [2], [-1, 64]),
        ],
    )


def _picky_prefix() -> onnx.ModelProto:
    """``pre = input + 0 * sum(gathered)``, gathering column ``input[:, 0]`` of each row: the
    same values, and a run-time failure for a row whose first value is not a column index
    (digits rows start with 0; a row starting with 99 fails, alone or in any batch)."""
    return _prefix(
        [
            helper.make_node("Slice", ["input", "start", "stop", "axis"], ["first"]),
            helper.make_node("Cast", ["first"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["input", "index"], ["gathered"], axis=1),
            helper.make_node("ReduceSum", ["gathered"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["input", "nothing"], ["pre"]),
        ],
        [
            helper.make_tensor("start", TensorProto.INT64, [1], [0]),
            helper.make_tensor("stop", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )


def prefixed_digits(prefix: onnx.ModelProto) -> onnx.ModelProto:
    """The digits model behind ``prefix`` (its ``pre`` output feeds the digits ``input``)."""
    digits = onnx.load(str(DIGITS))
    return compose.merge_models(prefix, digits, io_map=[("pre", "input")])


def one_row_digits() -> onnx.ModelProto:
    """The digits model with its first dimension fixed to 1: served without batching
    (max_batch_size 0, every request exactly one row). Its label is [1, 1], the shape
    production's answer has (its config reshapes the label to one value per row)."""
    model = onnx.load(str(DIGITS))
    for node in model.graph.node:
        node.output[:] = ["label_row" if name == "label" else name for name in node.output]
    axes = helper.make_tensor("label_axes", TensorProto.INT64, [1], [1])
    model.graph.initializer.append(axes)
    model.graph.node.append(helper.make_node("Unsqueeze", ["label_row", "label_axes"], ["label"]))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    label = next(v for v in model.graph.output if v.name == "label")
    label.type.tensor_type.shape.dim.add().dim_value = 1
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


#: Candidate kinds -> their registry alias.
KINDS = ("weak", "failing", "slow", "hanging", "picky", "unbatched")


def build_registry(root: Path) -> Registry:
    """Registry ``digits``: 1 production (the example digits model), 2 ``identical`` (the same
    model), 3 ``weak``, 4 ``failing`` (raises on every request), 5 ``slow`` (~10 ms a request,
    same answers), 6 ``hanging`` (~3 s a request), 7 ``picky`` (same answers, raises for a
    request with a row whose first value is 99), 8 ``unbatched`` (the same model, one row per
    request, no batching)."""
    reg = Registry(root / "reg")
    files = [
        DIGITS,
        DIGITS,
        save(weak_digits(), root / "weak.onnx"),
        save(prefixed_digits(_failing_prefix()), root / "failing.onnx"),
        save(prefixed_digits(_slow_prefix(2_000)), root / "slow.onnx"),
        save(prefixed_digits(_slow_prefix(600_000)), root / "hanging.onnx"),
        save(prefixed_digits(_picky_prefix()), root / "picky.onnx"),
        save(one_row_digits(), root / "unbatched.onnx"),
    ]
    for path in files:
        reg.register("digits", path, format="onnx")
    for version, alias in enumerate(["production", "identical", *KINDS], 1):
        reg.set_alias(f"digits:{version}", alias)
    return reg


def infer_body(rows: np.ndarray, request_id: str | None = None, **parameters: Any) -> dict:
    """A v2 JSON request for digits rows."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    if parameters:
        body["parameters"] = parameters
    return body


def candidates(client: httpx.Client, model: str = "digits") -> list[dict]:
    response = client.get(f"/v2/models/{model}/candidates")
    assert response.status_code == 200, response.text
    return response.json()["candidates"]
