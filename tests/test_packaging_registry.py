"""Registration of packaged variants: directory artifacts, lineage, metadata and metrics, and
edge bundles exported from registry references."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier

from servekit import edge
from servekit.errors import InvalidArgumentError
from servekit.packaging import Tolerance, package

registry_module = pytest.importorskip("servekit.registry")


@pytest.fixture(scope="module")
def iris():
    x, y = load_iris(return_X_y=True)
    model = MLPClassifier((16,), max_iter=400, random_state=0).fit(x, y)
    return model, x.astype(np.float32), y


def test_variants_are_registered_with_lineage(iris, tmp_path):
    model, x, y = iris
    reg = registry_module.Registry(tmp_path / "reg")
    report = package(
        model,
        x,
        labels=y,
        variants="onnx,int8-dynamic,int8-static,fp16",
        name="iris",
        registry=reg,
        out_dir=tmp_path / "out",
        progress=False,
        tolerance={"int8-static": Tolerance(max_abs=1e-12)},
    )
    fp32 = report.variant("fp32")
    assert fp32.ref == "iris:1"
    root = reg.get(fp32.ref)
    assert root.variant == "fp32" and root.parent is None and root.format == "onnx"
    assert root.signature.to_dict() == fp32.signature.to_dict()
    assert {e.path for e in root.manifest} == {
        "model.onnx",
        "parity.json",
        "reference_profile.json",
    }
    assert root.metrics["accuracy"] == pytest.approx(fp32.parity.variant_metric)
    assert root.metrics["size_bytes"] == fp32.size_bytes
    assert root.metadata["parity"]["passed"] is True
    assert "onnxruntime" in root.metadata["frameworks"]
    dyn = reg.get(report.variant("int8-dynamic").ref)
    assert dyn.variant == "int8-dynamic" and dyn.parent == fp32.ref
    assert reg.model_file(dyn.ref).name == "model.onnx"
    # failed (int8-static, impossible tolerance) and not-applicable (fp16) are not registered
    assert report.variant("int8-static").status == "failed"
    assert report.variant("int8-static").ref is None
    assert report.variant("fp16").ref is None
    assert len(reg.list_versions("iris")) == 2


def test_bad_input_registers_nothing(iris, tmp_path):
    model, x, _ = iris
    reg = registry_module.Registry(tmp_path / "reg")
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InvalidArgumentError, match="NaN"):
        package(model, bad, name="iris", registry=reg, progress=False)
    assert reg.list_models() == []


def test_export_edge_from_registry_ref(iris, tmp_path, run_cli):
    model, x, y = iris
    reg_root = tmp_path / "reg"
    package(
        model,
        x,
        labels=y,
        variants="onnx",
        name="iris",
        registry=reg_root,
        out_dir=tmp_path / "out",
        progress=False,
    )
    run_cli(
        "export",
        "edge",
        "iris:1",
        "--registry",
        str(reg_root),
        "--out",
        str(tmp_path / "b.tar.gz"),
        check=True,
    )
    loaded = edge.load(tmp_path / "b.tar.gz")
    assert loaded.metadata["ref"] == "iris:1" and loaded.metadata["variant"] == "fp32"
    np.testing.assert_allclose(
        loaded.predict(x)["probabilities"], model.predict_proba(x), atol=1e-5
    )
    assert json.loads(json.dumps(loaded.reference_profile))["rows"] == len(x)
    missing = run_cli(
        "export", "edge", "nope:3", "--registry", str(reg_root), "--out", str(tmp_path / "c.tar.gz")
    )
    assert missing.returncode == 2 and "nope" in missing.stderr
