"""Edge bundles and the packaging command line, end to end through real files and processes."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier

from servekit import edge
from servekit.errors import IntegrityError, InvalidArgumentError
from servekit.packaging import package


@pytest.fixture(scope="module")
def iris_package(tmp_path_factory):
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = MLPClassifier((16,), max_iter=400, random_state=0).fit(x, y)
    out = tmp_path_factory.mktemp("pkg")
    report = package(model, x, labels=y, variants="onnx", name="iris", out_dir=out, progress=False)
    return model, x, y, report


@pytest.fixture(scope="module")
def bundle(iris_package, tmp_path_factory):
    _, _, _, report = iris_package
    fp32 = report.variant("fp32")
    path = tmp_path_factory.mktemp("bundle") / "iris.tar.gz"
    edge.build_bundle(
        fp32.directory,
        path,
        signature=fp32.signature.to_dict(),
        metadata={"variant": "fp32"},
        ort=True,
    )
    return path


def test_bundle_round_trip_matches_sklearn(iris_package, bundle):
    model, x, _, _ = iris_package
    loaded = edge.load(bundle)
    out = loaded.predict(x)
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), atol=1e-5)
    np.testing.assert_array_equal(out["label"], model.predict(x))
    assert loaded.metadata == {"variant": "fp32"}
    assert loaded.reference_profile["rows"] == len(x)
    names = {f["path"] for f in loaded.manifest["files"]}
    assert {"model.onnx", "model.ort", "signature.json", "reference_profile.json"} <= names
    ort_model = edge.load(bundle, model_format="ort")
    np.testing.assert_allclose(ort_model.predict(x)["probabilities"], out["probabilities"])
    with pytest.raises(InvalidArgumentError, match=r"shape \[4\]"):
        loaded.predict(x[0])


def test_edge_load_imports_only_numpy_and_onnxruntime(bundle):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from servekit import edge
        m = edge.load({str(bundle)!r})
        m.predict(np.zeros((2, 4), dtype=np.float32))
        heavy = sorted({{n.split(".")[0] for n in sys.modules}} & {{
            "torch", "sklearn", "skl2onnx", "onnx", "fastapi", "uvicorn", "scipy", "skops",
            "onnxconverter_common", "tqdm", "click"}})
        print(heavy)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]"


def _rewrite(src, dst, change):
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            data, name = change(member.name, data)
            if name is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            import io

            tout.addfile(info, io.BytesIO(data))


def test_tampered_bundle_fails_naming_the_file(bundle, tmp_path, run_cli):
    tampered = tmp_path / "tampered.tar.gz"
    _rewrite(bundle, tampered, lambda n, d: (d + b" " if n == "payload/signature.json" else d, n))
    with pytest.raises(IntegrityError, match=r"changed: payload/signature\.json"):
        edge.verify_bundle(tampered)
    with pytest.raises(IntegrityError, match=r"payload/signature\.json"):
        edge.load(tampered)
    missing = tmp_path / "missing.tar.gz"
    _rewrite(bundle, missing, lambda n, d: (d, None if n == "payload/model.ort" else n))
    with pytest.raises(IntegrityError, match=r"missing: payload/model\.ort"):
        edge.verify_bundle(missing)
    proc = run_cli("verify-bundle", str(tampered))
    assert proc.returncode == 2 and "payload/signature.json" in proc.stderr
    ok = run_cli("verify-bundle", str(bundle), check=True)
    assert ok.stdout.startswith("ok: ")
    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_text("hello")
    with pytest.raises(InvalidArgumentError, match="not an edge bundle"):
        edge.verify_bundle(not_tar)


def test_bundle_refuses_non_onnx_and_unwritable_out(iris_package, tmp_path):
    _, _, _, report = iris_package
    with pytest.raises(InvalidArgumentError, match=r"model\.onnx"):
        edge.build_bundle(tmp_path, tmp_path / "b.tar.gz", signature={})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from servekit.errors import StorageError

    with pytest.raises(StorageError, match="cannot write bundle"):
        edge.build_bundle(report.variant("fp32").directory, blocker / "b.tar.gz", signature={})


def test_cli_package_skops_and_export_edge(iris_package, tmp_path, run_cli):
    model, x, y, _ = iris_package
    skops.io.dump(model, tmp_path / "m.skops")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    args = [
        "package",
        str(tmp_path / "m.skops"),
        "--framework",
        "sklearn",
        "--inputs",
        str(tmp_path / "x.npy"),
        "--labels",
        str(tmp_path / "y.npy"),
        "--name",
        "iris",
        "--variants",
        "onnx,int8-dynamic",
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    refused = run_cli(*args)
    assert refused.returncode == 2 and "AdamOptimizer" in refused.stderr
    adam = "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"
    proc = run_cli(*args, "--trust", adam, check=True)
    report = json.loads(proc.stdout)
    assert [v["status"] for v in report["variants"]] == ["passed", "passed"]
    fp32_dir = report["variants"][0]["directory"]
    run_cli("export", "edge", fp32_dir, "--out", str(tmp_path / "b.tar.gz"), check=True)
    loaded = edge.load(tmp_path / "b.tar.gz")
    assert loaded.signature.output_names == ["label", "probabilities"]
    assert loaded.metadata["parity"]["passed"] is True


def test_cli_refuses_pickle_without_flag(iris_package, tmp_path, run_cli):
    model, x, _, _ = iris_package
    joblib.dump(model, tmp_path / "m.joblib")
    np.save(tmp_path / "x.npy", x)
    args = [
        "package",
        str(tmp_path / "m.joblib"),
        "--framework",
        "sklearn",
        "--inputs",
        str(tmp_path / "x.npy"),
        "--name",
        "iris",
        "--variants",
        "onnx",
        "--out",
        str(tmp_path / "out"),
    ]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert "runs arbitrary code" in proc.stderr and "--allow-pickle" in proc.stderr
    assert not (tmp_path / "out").exists()
    assert run_cli(*args, "--allow-pickle", check=True).returncode == 0
    helptext = run_cli("package", "--help", check=True).stdout
    assert "arbitrary code" in helptext


def test_cli_torch_factory_state_dict_and_torchscript(tmp_path, run_cli):
    torch = pytest.importorskip("torch")
    (tmp_path / "netdef.py").write_text(
        textwrap.dedent("""
        import torch
        def make():
            return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                       torch.nn.Linear(8, 3))
    """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import netdef
    finally:
        sys.path.remove(str(tmp_path))
    net = netdef.make()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    x, _y = load_iris(return_X_y=True)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    common = [
        "--framework",
        "torch",
        "--inputs",
        str(tmp_path / "x.npy"),
        "--name",
        "t",
        "--variants",
        "onnx,torchscript",
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    proc = run_cli(
        "package", "netdef:make", "--state-dict", str(tmp_path / "w.pt"), *common, check=True
    )
    report = json.loads(proc.stdout)
    assert [v["status"] for v in report["variants"]] == ["passed", "passed"]
    ts_file = report["variants"][1]["model_file"]
    again = json.loads(run_cli("package", ts_file, *common, check=True).stdout)
    assert again["variants"][0]["parity"]["max_abs_diff"] < 1e-5
    bad = run_cli("package", "netdef:missing", *common)
    assert bad.returncode == 2 and "netdef:missing" in bad.stderr


def test_single_file_registry_artifact_exports_to_an_edge_bundle(iris_package, tmp_path, run_cli):
    model, x, _, report = iris_package
    reg = ["--registry", str(tmp_path / "reg")]
    onnx_file = report.variant("fp32").model_file
    run_cli("registry", "register", "iris", str(onnx_file), "--format", "onnx", *reg, check=True)
    run_cli("registry", "alias", "set", "iris:1", "production", *reg, check=True)
    out = tmp_path / "iris.tar.gz"
    proc = run_cli("export", "edge", "iris@production", "--out", str(out), *reg)
    assert proc.returncode == 0, proc.stderr
    manifest = edge.verify_bundle(out)
    assert [f["path"] for f in manifest["files"]] == [
        "metadata.json",
        "model.onnx",
        "signature.json",
    ]
    loaded = edge.load(out)
    assert loaded.metadata["ref"] == "iris:1"
    np.testing.assert_array_equal(loaded.predict(x[:5])["label"], model.predict(x[:5]))
