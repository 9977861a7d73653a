"""Signatures and reference profiles: the JSON contracts shared by every stage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from servekit.errors import InvalidArgumentError
from servekit.signature import Signature, TensorSpec, datatype_of, dtype_of
from servekit.telemetry import ReferenceProfile, bin_indices, build_reference_profile


def test_signature_round_trip_and_lookups():
    sig = Signature(
        (TensorSpec("input", "FP32", (-1, 64)),),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 10))),
    )
    assert Signature.from_dict(sig.to_dict()) == sig
    assert sig.input("input").shape == (-1, 64)
    assert sig.output_names == ["label", "probabilities"]
    with pytest.raises(InvalidArgumentError, match="'nope'"):
        sig.input("nope")


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(np.float32, "FP32"), (np.int64, "INT64"), (np.bool_, "BOOL"), (np.float16, "FP16")],
)
def test_datatype_mapping(dtype, name):
    assert datatype_of(dtype) == name
    assert dtype_of(name) == np.dtype(dtype)
    assert datatype_of(np.array([b"a"]).dtype) == "BYTES"


def test_bad_signatures_are_refused():
    with pytest.raises(InvalidArgumentError, match="unknown datatype 'FP128'"):
        TensorSpec("x", "FP128", (1,))
    with pytest.raises(InvalidArgumentError, match="shape"):
        TensorSpec("x", "FP32", (-2,))
    with pytest.raises(InvalidArgumentError, match="malformed tensor spec"):
        Signature.from_dict({"inputs": [{"name": "x"}]})
    with pytest.raises(InvalidArgumentError, match="complex"):
        datatype_of(np.complex64)


def test_profile_bins_match_numpy_quantiles():
    x = load_digits().data
    profile = build_reference_profile(x, np.zeros(len(x), dtype=np.int64))
    assert profile.rows == len(x) and len(profile.features) == 64
    for j in (10, 20, 43):
        f = profile.features[j]
        expected = np.unique(np.quantile(x[:, j], np.linspace(0, 1, 11)[1:-1]))
        np.testing.assert_allclose(f.cuts, expected)
        counts = np.bincount(bin_indices(x[:, j], f.cuts), minlength=len(f.cuts) + 1)
        np.testing.assert_allclose(f.frequencies, counts / len(x))
        assert f.mean == pytest.approx(x[:, j].mean()) and f.max == x[:, j].max()
    assert profile.prediction is not None and profile.prediction.labels == [0]


def test_profile_json_round_trip_with_missing_values_and_scores(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    x[:50, 1] = np.nan
    profile = build_reference_profile(x, rng.random((500, 4)), feature_names=["a", "b", "c"])
    assert profile.features[1].missing_rate == pytest.approx(0.1)
    assert sum(profile.features[1].frequencies) == pytest.approx(1.0)
    assert profile.prediction is not None and profile.prediction.kind == "scores"
    profile.save(tmp_path / "p.json")
    assert ReferenceProfile.load(tmp_path / "p.json") == profile


def test_bad_profiles_are_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="2-D"):
        build_reference_profile(np.zeros(5))
    with pytest.raises(InvalidArgumentError, match="2 feature names for 3"):
        build_reference_profile(np.zeros((4, 3)), feature_names=["a", "b"])
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(InvalidArgumentError, match="not a servekit reference profile"):
        ReferenceProfile.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        ReferenceProfile.load(tmp_path / "broken.json")


def test_onnx_signature_from_file_and_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from servekit.signature import onnx_signature

    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2]),  # old-style
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [w],
    )
    model = helper.make_model(graph)
    expected = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 2)),))
    assert onnx_signature(model) == expected
    onnx.save(model, tmp_path / "m.onnx")
    assert onnx_signature(tmp_path / "m.onnx") == expected
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(InvalidArgumentError, match=r"cannot read ONNX model .*bad\.onnx"):
        onnx_signature(tmp_path / "bad.onnx")
    model.graph.node.append(helper.make_node("Cast", ["y"], ["z"], to=TensorProto.BFLOAT16))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.BFLOAT16, ["n", 2]))
    with pytest.raises(InvalidArgumentError, match=r"'z' has type tensor\(bfloat16\), which"):
        onnx_signature(model)


def test_onnx_signature_needs_no_onnx_package(tmp_path):
    # Serving reads signatures through ONNX Runtime: with `onnx` unimportable it still works.
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [None, 3])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    probe = (
        "import json, sys; sys.modules['onnx'] = None; "
        "from servekit.signature import onnx_signature; "
        f"print(json.dumps(onnx_signature({str(tmp_path / 'm.onnx')!r}).to_dict()))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1, 3]}],
    }
