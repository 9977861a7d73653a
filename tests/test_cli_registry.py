"""``servekit registry ...`` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from servekit.registry import Registry


def test_register_show_alias_history_lineage_verify_gc(run_cli, tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    model = tmp_path / "model.onnx"
    model.write_bytes(b"fp32 model")
    out = run_cli(
        "registry", "register", "digits", str(model), "--format", "onnx", "--variant", "fp32",
        "--tag", "team=ml", "--metric", "accuracy=0.97", "--registry", str(reg_dir), check=True,
    ).stdout  # fmt: skip
    ref, digest = out.split()
    assert ref == "digits:1" and digest.startswith("blake3:")
    quant = tmp_path / "int8.onnx"
    quant.write_bytes(b"int8 model")
    out = run_cli(
        "registry", "register", "digits", str(quant), "--format", "onnx",
        "--variant", "int8-dynamic", "--parent", "digits:1", "--registry", str(reg_dir), check=True,
    ).stdout  # fmt: skip
    assert out.startswith("digits:2 blake3:")

    r = ["--registry", str(reg_dir)]
    shown = json.loads(run_cli("registry", "show", "digits:1", "--json", *r, check=True).stdout)
    assert shown["ref"] == "digits:1" and shown["digest"] == digest
    assert shown["metrics"] == {"accuracy": 0.97} and shown["tags"] == {"team": "ml"}
    assert shown["manifest"] == [{"path": "model.onnx", "size": 10, "digest": digest}]

    out = run_cli("registry", "alias", "set", "digits:2", "production", "--reason", "faster", *r)
    assert out.returncode == 0 and out.stdout.strip() == "digits@production: - -> 2"
    run_cli("registry", "alias", "set", "digits:1", "production", *r, check=True)
    run_cli("registry", "alias", "rm", "digits", "production", *r, check=True)
    hist = run_cli("registry", "history", "digits", *r, check=True).stdout.splitlines()
    assert len(hist) == 3 and "faster" in hist[0] and "delete" in hist[2]

    listed = run_cli("registry", "list", *r, check=True).stdout
    assert listed.startswith("digits  latest=2  versions=2")
    assert "int8-dynamic" in run_cli("registry", "list", "digits", *r, check=True).stdout
    lineage = run_cli("registry", "lineage", "digits:2", *r, check=True).stdout.splitlines()
    assert [line.split()[0] for line in lineage] == ["digits:2", "digits:1"]
    assert run_cli("registry", "verify", *r, check=True).stdout.strip() == "ok"
    path = run_cli("registry", "path", "digits:1", *r, check=True).stdout.strip()
    assert Path(path).read_bytes() == b"fp32 model"

    # Corrupt one blob: verify exits 1 with one line per problem.
    Path(path).chmod(0o644)
    Path(path).write_bytes(b"tampered")
    bad = run_cli("registry", "verify", *r)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [line for line in bad.stdout.splitlines() if line]
    assert len(bad.stdout.splitlines()) == 1 and bad.stdout.startswith("digits:1:")
    assert digest in bad.stdout
    assert run_cli("registry", "verify", "digits:2", *r).returncode == 0
    refused = run_cli("registry", "path", "digits:1", *r)
    assert refused.returncode == 2 and "digits:1" in refused.stderr

    gc = run_cli("registry", "gc", *r, check=True).stdout
    assert gc.strip().endswith("0 removed, 0 bytes freed")


def test_registry_defaults_to_servekit_home(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SERVEKIT_HOME", str(tmp_path / "home"))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"m")
    run_cli("registry", "register", "m", str(model), "--format", "onnx", check=True)
    assert Registry(tmp_path / "home").get("m").version == 1


def test_bad_input_prints_one_line_and_exits_2(run_cli, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"m")
    r = ["--registry", str(tmp_path / "reg")]
    run_cli("registry", "register", "m", str(model), "--format", "onnx", *r, check=True)
    cases = [
        (["registry", "show", "nope"], '"nope"'),
        (["registry", "show", "m:7"], "no version 7"),
        (["registry", "show", "m@prod"], '"prod"'),
        (["registry", "show", "m:x"], '"m:x"'),
        (["registry", "register", "m", str(tmp_path / "gone"), "--format", "onnx"], "gone"),
        (["registry", "register", "m", str(model), "--format", "pickle"], '"pickle"'),
        (["registry", "register", "a/b", str(model), "--format", "onnx"], '"a/b"'),
        (["registry", "register", "m", str(model), "--format", "onnx", "--tag", "x"], "'x'"),
        (["registry", "register", "m", str(model), "--format", "onnx", "--metric", "a=b"], "a="),
        (["registry", "alias", "set", "m:3", "production"], "no version 3"),
        (["registry", "alias", "rm", "m", "production"], '"production"'),
        (["registry", "history", "nope"], '"nope"'),
        (["registry", "lineage", "m@x"], '"x"'),
    ]
    for args, needle in cases:
        proc = run_cli(*args, *r)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert needle in proc.stderr, (args, proc.stderr)
    assert [v.version for v in Registry(tmp_path / "reg").list_versions("m")] == [1]


def test_registry_option_on_the_group_and_on_each_command(run_cli, tmp_path: Path) -> None:
    group_dir, leaf_dir = tmp_path / "group", tmp_path / "leaf"
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model")
    g = ["registry", "--registry", str(group_dir)]
    assert run_cli(*g, "register", "digits", str(model), "--format", "onnx").returncode == 0
    assert run_cli(*g, "alias", "set", "digits:1", "production", check=True).returncode == 0
    assert run_cli(*g, "list", check=True).stdout.startswith("digits  latest=1")
    assert Registry(group_dir).get("digits@production").version == 1
    # The command's own --registry wins over the group's.
    run_cli(*g, "register", "iris", str(model), "--format", "onnx", "--registry", str(leaf_dir))
    assert [m.name for m in Registry(leaf_dir).list_models()] == ["iris"]
    assert [m.name for m in Registry(group_dir).list_models()] == ["digits"]
