"""``servekit demo --quick`` end to end in a temporary working directory."""

from __future__ import annotations

import json

import pytest

from servekit.registry import Registry


@pytest.mark.slow
def test_demo_quick_runs_every_stage(run_cli, tmp_path):
    work = tmp_path / "work"
    proc = run_cli("demo", "--quick", "--workdir", str(work), check=True)
    out = proc.stdout
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    # Packaging registered the variants with lineage, the benchmark logged its figures.
    reg = Registry(work / "registry")
    versions = {v.variant: v for v in reg.list_versions("digits")}
    assert {"fp32", "int8-dynamic", "pruned", "distilled"} <= set(versions)
    fp32 = versions["fp32"]
    for v in versions.values():
        assert v.parent == (None if v is fp32 else fp32.ref)
        assert "latency_p50_ms_b64" in v.metrics and "accuracy" in v.metrics
    # The bench report and plots are under the working directory.
    for name in ("report.json", "report.md", "latency.png", "pareto.png"):
        assert (work / "bench" / name).stat().st_size > 0
    assert len(json.loads((work / "bench" / "report.json").read_text())["results"]) == 4
    # Promotion went through gates and is in the audit log.
    actions = [e.action for e in reg.history("digits") if e.alias == "production"]
    assert actions[0] == "promote" and reg.get("digits@production") is not None
    # Each variant has an alias named after it (the README's references), and the fp32 and
    # int8 exports form a Triton model repository with their reference profiles.
    for kind, v in versions.items():
        assert reg.get(f"digits@{kind}").ref == v.ref
    for name, kind in (("digits", "fp32"), ("digits_int8", "int8-dynamic")):
        version_dir = work / "model_repo" / name / str(versions[kind].version)
        assert (version_dir / "model.onnx").is_file()
        assert (version_dir / "reference_profile.json").is_file()
        assert f'name: "{name}"' in (work / "model_repo" / name / "config.pbtxt").read_text()
    # The candidate was shadowed on live traffic first; the decision recorded those figures.
    assert "live requests: agreement" in out
    assert any("live figures from" in (e.reason or "") for e in reg.history("digits"))
    # Telemetry saw no drift on training-like traffic, then drift on the shifted traffic.
    lines = out.splitlines()
    normal = next(line for line in lines if "rows like the training data" in line)
    shifted = next(line for line in lines if "shifted rows" in line)
    assert "no dataset drift" in normal and "DATASET DRIFT" in shifted
    assert "request latency in the server" in out
    assert "server stopped (exit status 0)" in out
    assert (work / "server.log").exists()
