"""Packaging: exports, variants, parity, pruning, distillation, profiles and bad input, on
models trained here on scikit-learn's bundled datasets."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from servekit.errors import InvalidArgumentError, StorageError, UnsupportedModelError
from servekit.packaging import (
    KDConfig,
    Tolerance,
    normalise_opsets,
    package,
    prune_structured,
)
from servekit.packaging.quantize import SampleCalibrationReader
from servekit.signature import onnx_signature
from servekit.telemetry import ReferenceProfile

torch.set_num_threads(1)
QUIET = {"progress": False}


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x / 16).astype(np.float32), y.astype(np.int64)


def _train(net, x, y, epochs=60):
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def torch_mlp(digits):
    x, y = digits
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return _train(net, x, y)


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.flat = torch.nn.Flatten()
        self.fc1 = torch.nn.Linear(16 * 4 * 4, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(self.flat(x))))


@pytest.fixture(scope="module")
def torch_cnn(digits):
    x, y = digits
    torch.manual_seed(0)
    return _train(SmallCNN(), x.reshape(-1, 1, 8, 8), y, epochs=40)


@pytest.fixture(scope="module")
def torch_report(torch_mlp, digits, tmp_path_factory):
    x, y = digits
    return package(
        torch_mlp,
        x,
        labels=y,
        name="digits-mlp",
        out_dir=tmp_path_factory.mktemp("pkg"),
        fine_tune_epochs=10,
        distillation=KDConfig(epochs=30),
        **QUIET,
    )


# --- scikit-learn -------------------------------------------------------------------------


def test_sklearn_logistic_regression_exports_with_parity_and_reports_quantization_na(tmp_path):
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, y)
    report = package(
        model,
        x,
        labels=y,
        variants="onnx,int8-dynamic,int8-static,fp16,pruned",
        name="iris",
        out_dir=tmp_path,
        **QUIET,
    )
    fp32 = report.variant("fp32")
    assert fp32.status == "passed"
    assert fp32.parity.max_abs_diff < 1e-5
    assert fp32.parity.top1_agreement == 1.0
    sig = fp32.signature.to_dict()
    assert sig["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in sig["outputs"]] == ["label", "probabilities"]
    assert sig["outputs"][1]["shape"] == [-1, 3]
    for kind in ("int8-dynamic", "int8-static"):
        v = report.variant(kind)
        assert v.status == "not-applicable"
        assert "LinearClassifier" in v.reason
        assert not (report.out_dir / kind).exists()
    assert report.variant("pruned").status == "not-applicable"
    # artifacts next to the model
    assert json.loads((fp32.directory / "parity.json").read_text())["passed"] is True
    ReferenceProfile.load(fp32.directory / "reference_profile.json")
    assert "fp32" in str(report) and "not-applicable" in str(report)


def test_sklearn_pipeline_and_random_forest_match_sklearn(tmp_path):
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
    for model in (pipe, forest):
        report = package(model, x, labels=y, variants="onnx", name="bc", out_dir=tmp_path, **QUIET)
        fp32 = report.variant("fp32")
        assert fp32.status == "passed", report.table()
        assert fp32.parity.max_abs_diff < 1e-4
        assert fp32.parity.metric == "accuracy"
        assert fp32.parity.metric_change == 0.0


def test_sklearn_mlp_int8_variants_and_distillation(digits, tmp_path):
    x, y = digits
    mlp = MLPClassifier((64,), max_iter=60, random_state=0).fit(x, y)
    report = package(
        mlp,
        x,
        labels=y,
        variants="onnx,int8-dynamic,int8-static,fp16,distilled",
        name="skl-mlp",
        out_dir=tmp_path,
        student_width_fraction=1.0,
        distillation=KDConfig(epochs=40),
        **QUIET,
    )
    assert report.variant("int8-dynamic").status == "passed", report.table()
    assert report.variant("int8-static").status == "passed", report.table()
    ops = {n.op_type for n in onnx.load(report.variant("int8-dynamic").model_file).graph.node}
    assert "MatMulInteger" in ops
    assert report.variant("fp16").status == "not-applicable"
    distilled = report.variant("distilled")
    assert distilled.status == "passed", report.table()
    assert distilled.signature.output_names == ["probabilities"]
    assert distilled.parity.metric_change > -0.08


def test_opset_duplicates_are_normalised():
    model = onnx.helper.make_model(
        onnx.helper.make_graph([], "g", [], []),
        opset_imports=[
            onnx.helper.make_opsetid("", 15),
            onnx.helper.make_opsetid("ai.onnx", 17),
            onnx.helper.make_opsetid("ai.onnx.ml", 1),
        ],
    )
    normalise_opsets(model)
    assert sorted((o.domain, o.version) for o in model.opset_import) == [
        ("", 17),
        ("ai.onnx.ml", 1),
    ]


def test_sklearn_regressor_output_is_prediction_with_r2(tmp_path):
    x, _y = load_breast_cancer(return_X_y=True)
    x, target = x[:, 1:].astype(np.float32), x[:, 0].astype(np.float64)
    report = package(
        LinearRegression().fit(x, target),
        x,
        labels=target,
        variants="onnx",
        name="reg",
        out_dir=tmp_path,
        **QUIET,
    )
    fp32 = report.variant("fp32")
    assert fp32.signature.output_names == ["prediction"]
    assert fp32.parity.metric == "r2" and fp32.parity.top1_agreement is None
    assert fp32.metrics["r2"] > 0.9


# --- torch --------------------------------------------------------------------------------


def test_torch_variants_all_pass_and_int8_shrinks(torch_report, torch_mlp):
    report = torch_report
    assert [v.kind for v in report.variants] == [
        "fp32",
        "int8-dynamic",
        "int8-static",
        "fp16",
        "torchscript",
        "pruned",
        "distilled",
    ]
    for v in report.variants:
        assert v.status == "passed", report.table()
    fp32 = report.variant("fp32")
    assert fp32.signature.output_names == ["logits"]
    assert fp32.signature.inputs[0].shape == (-1, 64)
    assert fp32.parity.max_rel_diff < 1e-5
    int8 = report.variant("int8-dynamic")
    assert fp32.size_bytes / int8.size_bytes >= 2.5
    assert report.variant("int8-static").params["calibration"] == "minmax"
    assert report.variant("fp16").size_bytes < 0.6 * fp32.size_bytes
    ts = report.variant("torchscript")
    assert ts.model_file.name == "model.pt" and ts.parity.max_abs_diff == 0.0
    pruned = report.variant("pruned")
    assert pruned.params["parameters"] < 0.6 * sum(p.numel() for p in torch_mlp.parameters())
    distilled = report.variant("distilled")
    assert distilled.params["student_hidden"] == 64
    assert distilled.size_bytes < 0.3 * fp32.size_bytes
    assert distilled.parity.metric_change >= -0.08


def test_pruning_removes_neurons_and_channels(torch_cnn, digits):
    x, _ = digits
    images = x.reshape(-1, 1, 8, 8)
    pruned, params = prune_structured(torch_cnn, images[:16], amount=0.5)
    assert pruned.conv1.out_channels == 4 and pruned.bn.num_features == 4
    assert pruned.conv2.weight.shape == (8, 4, 3, 3)
    assert pruned.fc1.weight.shape == (16, 8 * 4 * 4)
    assert pruned.fc2.weight.shape == (10, 16)
    assert torch_cnn.conv1.out_channels == 8  # original untouched
    before = sum(p.numel() for p in torch_cnn.parameters())
    assert params["parameters"] == sum(p.numel() for p in pruned.parameters()) < before / 2
    with torch.no_grad():
        out = pruned(torch.from_numpy(images[:5]))
    assert out.shape == (5, 10)


def test_cnn_package_with_static_int8_percentile(torch_cnn, digits, tmp_path):
    x, y = digits
    images = x.reshape(-1, 1, 8, 8)
    report = package(
        torch_cnn,
        images[:600],
        labels=y[:600],
        variants="onnx,int8-static,pruned",
        name="cnn",
        out_dir=tmp_path,
        calibration="percentile",
        fine_tune_epochs=5,
        **QUIET,
    )
    assert report.variant("fp32").signature.inputs[0].shape == (-1, 1, 8, 8)
    static = report.variant("int8-static")
    assert static.status == "passed", report.table()
    assert static.params["calibration"] == "percentile"
    assert report.variant("pruned").status in ("passed", "failed")
    assert report.variant("pruned").parity is not None
    profile = ReferenceProfile.load(report.variant("fp32").directory / "reference_profile.json")
    assert len(profile.features) == 64


def test_unsupported_layer_is_named(digits, tmp_path):
    x, y = digits
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 10)
    )
    with pytest.raises(UnsupportedModelError, match="LayerNorm"):
        prune_structured(net, x[:4])
    report = package(
        net, x[:64], labels=y[:64], variants="onnx,pruned", name="ln", out_dir=tmp_path, **QUIET
    )
    assert report.variant("pruned").status == "not-applicable"
    assert "LayerNorm" in report.variant("pruned").reason


def test_tight_tolerance_marks_variant_failed(torch_mlp, digits, tmp_path):
    x, y = digits
    report = package(
        torch_mlp,
        x[:300],
        labels=y[:300],
        variants="onnx,int8-dynamic",
        name="tight",
        out_dir=tmp_path,
        tolerance={"int8-dynamic": Tolerance(max_abs=1e-9)},
        **QUIET,
    )
    v = report.variant("int8-dynamic")
    assert v.status == "failed"
    assert v.parity.failures[0].startswith("max_abs_diff ")
    assert json.loads((v.directory / "parity.json").read_text())["passed"] is False


# --- reference profile --------------------------------------------------------------------


def test_reference_profile_matches_numpy_quantiles(torch_report, digits):
    x, _ = digits
    profile = ReferenceProfile.load(
        torch_report.variant("fp32").directory / "reference_profile.json"
    )
    assert profile.rows == len(x)
    for j in (10, 27, 43):
        expected = np.unique(np.quantile(x[:, j].astype(np.float64), np.linspace(0, 1, 11)[1:-1]))
        np.testing.assert_allclose(profile.features[j].cuts, expected, rtol=1e-6)
        assert profile.features[j].mean == pytest.approx(float(x[:, j].mean()), rel=1e-5)
    assert profile.prediction.kind == "classes"
    assert profile.prediction.labels == list(range(10))
    assert sum(profile.prediction.frequencies) == pytest.approx(1.0)


# --- bad input ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_lr():
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=300).fit(x, y), x.astype(np.float32), y


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros(4, dtype=np.float32), "shape"),
        (np.zeros((1, 4), dtype=np.float32), "at least 2 rows"),
        (np.array([["a"] * 4] * 3), "numeric"),
        (np.array([[1.0, np.nan, 0, 0], [0, 0, 0, 0]], dtype=np.float32), "NaN"),
        (np.array([[1.0, np.inf, 0, 0], [0, 0, 0, 0]], dtype=np.float32), "infinite"),
        (np.zeros((5, 3), dtype=np.float32), "3 features"),
    ],
)
def test_bad_sample_inputs(iris_lr, tmp_path, inputs, message):
    model, _, _ = iris_lr
    with pytest.raises(InvalidArgumentError, match=message):
        package(model, inputs, name="bad", out_dir=tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(iris_lr, tmp_path):
    model, x, y = iris_lr
    with pytest.raises(InvalidArgumentError, match="'int4'"):
        package(model, x, variants="onnx,int4", **QUIET)
    with pytest.raises(InvalidArgumentError, match="one value per sample row"):
        package(model, x, labels=y[:5], **QUIET)
    with pytest.raises(InvalidArgumentError, match=r"\[7\]"):
        package(model, x, labels=np.full(len(x), 7), **QUIET)
    with pytest.raises(InvalidArgumentError, match="'kmeans'"):
        package(model, x, calibration="kmeans", **QUIET)
    with pytest.raises(InvalidArgumentError, match="package name"):
        package(model, x, name="../escape", **QUIET)
    with pytest.raises(InvalidArgumentError, match="'int3'"):
        package(model, x, tolerance={"int3": Tolerance()}, **QUIET)
    with pytest.raises(InvalidArgumentError, match="not fitted"):
        package(LogisticRegression(), x, **QUIET)
    with pytest.raises(UnsupportedModelError, match="dict"):
        package({"weights": 1}, x, **QUIET)


def test_unsupported_estimator_is_named(tmp_path):
    from sklearn.semi_supervised import SelfTrainingClassifier

    x, y = load_iris(return_X_y=True)
    model = SelfTrainingClassifier(LogisticRegression(max_iter=300)).fit(x, y)
    with pytest.raises(UnsupportedModelError, match="SelfTrainingClassifier"):
        package(model, x.astype(np.float32), name="st", out_dir=tmp_path, **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_directory(iris_lr, tmp_path):
    model, x, _ = iris_lr
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="not writable"):
        package(model, x, out_dir=blocker / "sub", **QUIET)


def test_calibration_reader_rejects_nan():
    bad = np.ones((4, 2), dtype=np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(InvalidArgumentError, match="NaN"):
        SampleCalibrationReader(bad)
    reader = SampleCalibrationReader(np.ones((130, 2), dtype=np.float32), progress=False)
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["input"]))
    assert sizes == [64, 64]


def test_signature_from_exported_graph(torch_report):
    sig = onnx_signature(torch_report.variant("int8-static").model_file)
    assert sig.to_dict() == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }


def test_packaging_imports_without_loading_torch():
    import subprocess
    import sys

    code = "import sys, servekit.packaging; print('torch' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "False"


def test_a_graph_onnx_runtime_cannot_load_fails_its_variant_not_the_package(tmp_path):
    from onnx import TensorProto, helper

    from servekit.errors import PackagingError
    from servekit.packaging.export import graph_signature

    # Valid ONNX that ONNX Runtime refuses: an operator of a domain it has no kernels for.
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="com.example")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), tmp_path / "model.onnx")
    with pytest.raises(PackagingError, match=r"cannot read ONNX model .*model\.onnx"):
        graph_signature(tmp_path / "model.onnx")
