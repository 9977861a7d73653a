"""The model registry through its Python API: real files, real SQLite, temporary directories."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from servekit import hashing
from servekit.errors import (
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
)
from servekit.registry import FORMATS, AliasEvent, ModelVersion, Registry, default_actor
from servekit.signature import Signature, TensorSpec

SIGNATURE = Signature(
    (TensorSpec("input", "FP32", (-1, 64)),),
    (TensorSpec("probabilities", "FP32", (-1, 10)),),
)


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def onnx_dir(tmp_path: Path) -> Path:
    """A directory artifact shaped like an exported model with external data and a profile."""
    d = tmp_path / "export"
    write(d / "model.onnx", b"graph-bytes")
    write(d / "model.onnx.data", os.urandom(3 << 20))
    write(d / "reference_profile.json", b'{"features": []}')
    write(d / "extra" / "notes.txt", b"calibrated on digits")
    return d


def stored_artifacts(reg: Registry) -> list[Path]:
    root = reg.root
    return sorted(p for top in ("blobs", "trees") for p in (root / top).glob("*/*"))


def snapshot(reg: Registry) -> tuple[object, ...]:
    """Everything observable about a registry's content."""
    models = reg.list_models()
    versions = [reg.list_versions(m.name) for m in models]
    history = [reg.history(m.name) for m in models]
    return models, versions, history, stored_artifacts(reg)


def test_register_file_records_everything(reg: Registry, tmp_path: Path) -> None:
    f = write(tmp_path / "digits.onnx", b"onnx model")
    v = reg.register(
        "digits",
        f,
        format="onnx",
        signature=SIGNATURE,
        metadata={"onnx": "1.17", "opset": 17},
        metrics={"accuracy": 0.97, "latency_p50_ms": 0.4},
        tags={"team": "ml"},
        variant="fp32",
        source={"dataset": "blake3:abc", "code": "git:1234", "hyperparameters": {"lr": 0.1}},
        description="first export",
    )
    assert isinstance(v, ModelVersion)
    assert (v.name, v.version, v.ref, v.kind, v.format) == ("digits", 1, "digits:1", "file", "onnx")
    assert v.digest == hashing.digest_file(f)
    assert v.manifest == [hashing.FileEntry("digits.onnx", 10, v.digest)]
    assert v.size_bytes == 10
    assert v.created_at.endswith("Z") and v.created_at[10] == "T"
    assert v.signature == SIGNATURE
    assert v.metadata == {"onnx": "1.17", "opset": 17}
    assert v.metrics == {"accuracy": 0.97, "latency_p50_ms": 0.4}
    assert v.tags == {"team": "ml"} and v.variant == "fp32"
    assert v.source["hyperparameters"] == {"lr": 0.1}
    assert (v.description, v.aliases, v.archived, v.parent) == ("first export", [], False, None)
    assert reg.get("digits") == v == reg.get("digits:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.version = 2  # type: ignore[misc]
    path = reg.artifact_path("digits:1")
    assert path.read_bytes() == b"onnx model"
    assert path == reg.root / "blobs" / "blake3" / v.digest.split(":")[1]
    assert reg.model_file("digits") == path
    assert not os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert v.to_dict()["signature"] == SIGNATURE.to_dict()


def test_register_directory_keeps_file_names_and_dedupes(
    reg: Registry, onnx_dir: Path, tmp_path: Path
) -> None:
    v = reg.register("mlp", onnx_dir, format="onnx", signature=SIGNATURE.to_dict())
    tree = hashing.digest_tree(onnx_dir)
    assert (v.kind, v.digest, v.manifest) == ("directory", tree.digest, tree.manifest)
    assert v.size_bytes == sum(e.size for e in tree.manifest)
    path = reg.artifact_path("mlp:1")
    assert path.is_dir()
    assert (path / "model.onnx.data").read_bytes() == (onnx_dir / "model.onnx.data").read_bytes()
    assert hashing.verify_tree(path, v.manifest).ok
    assert reg.model_file("mlp") == path / "model.onnx"
    assert not (path / "model.onnx").stat().st_mode & stat.S_IWUSR

    # Identical content under another name and again under the same: stored once.
    copy = shutil.copytree(onnx_dir, tmp_path / "copy")
    v2 = reg.register("mlp", copy, format="onnx")
    v3 = reg.register("other", onnx_dir, format="onnx")
    assert v2.version == 2 and v3.version == 1
    assert v.digest == v2.digest == v3.digest
    assert len(stored_artifacts(reg)) == 1
    assert list((reg.root / "tmp").iterdir()) == []


def test_model_file_by_format_and_missing_main_file(reg: Registry, tmp_path: Path) -> None:
    write(tmp_path / "ts" / "model.pt", b"torchscript")
    write(tmp_path / "ts" / "labels.json", b"[]")
    assert reg.model_file(reg.register("ts", tmp_path / "ts", format="torchscript").ref).name == (
        "model.pt"
    )
    write(tmp_path / "ort" / "model.ort", b"ort")
    assert reg.model_file(reg.register("edge", tmp_path / "ort", format="ort").ref).name == (
        "model.ort"
    )
    write(tmp_path / "sk" / "model.skops", b"skops")
    assert reg.model_file(reg.register("sk", tmp_path / "sk", format="sklearn").ref).name == (
        "model.skops"
    )
    write(tmp_path / "sk" / "more.bin", b"x")
    reg.register("sk", tmp_path / "sk", format="sklearn")
    with pytest.raises(InvalidArgumentError, match=r"sk:2.*no main file"):
        reg.model_file("sk:2")
    before = snapshot(reg)
    with pytest.raises(InvalidArgumentError, match=r"must contain model\.onnx"):
        reg.register("bad", tmp_path / "ts", format="onnx")
    assert snapshot(reg) == before
    assert list((reg.root / "tmp").iterdir()) == []


def test_versions_aliases_history_and_archive(reg: Registry, tmp_path: Path) -> None:
    for i in range(3):
        reg.register("m", write(tmp_path / f"v{i}", f"content {i}".encode()), format="onnx")
    assert [v.version for v in reg.list_versions("m")] == [1, 2, 3]
    assert reg.get("m").version == 3

    e1 = reg.set_alias("m:1", "production", reason="initial release")
    assert isinstance(e1, AliasEvent)
    assert (e1.previous_version, e1.new_version, e1.action) == (None, 1, "set")
    assert e1.actor == default_actor() and "@" in e1.actor
    e2 = reg.set_alias("m:3", "production", actor="ci", reason="passed gates", action="promote")
    reg.set_alias("m@production", "staging")
    reg.set_alias("m:2", "production", actor="oncall", reason="latency regression", action="force")
    reg.delete_alias("m", "staging", reason="cleanup")
    assert e2.previous_version == 1
    assert reg.get("m@production").version == 2
    assert reg.get("m:2").aliases == ["production"]
    hist = reg.history("m")
    assert [(e.alias, e.action, e.previous_version, e.new_version) for e in hist] == [
        ("production", "set", None, 1),
        ("production", "promote", 1, 3),
        ("staging", "set", None, 3),
        ("production", "force", 3, 2),
        ("staging", "delete", 3, None),
    ]
    assert [e.time for e in hist] == sorted(e.time for e in hist)
    assert hist[1].actor == "ci" and hist[1].reason == "passed gates"
    with pytest.raises(NotFoundError, match="staging"):
        reg.get("m@staging")

    # Archiving: refused while an alias points there; the latest skips archived versions.
    with pytest.raises(ConflictError, match="production"):
        reg.archive("m:2")
    assert reg.archive("m:3").archived
    assert reg.get("m").version == 2
    with pytest.raises(ConflictError, match="archived"):
        reg.set_alias("m:3", "canary")
    models = reg.list_models()
    assert [(m.name, m.latest_version, m.version_count, m.aliases) for m in models] == [
        ("m", 2, 3, {"production": 2})
    ]
    # Versions are never reused.
    assert reg.register("m", tmp_path / "v0", format="onnx").version == 4


def test_tags_metrics_description_and_filters(reg: Registry, tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"x")
    for variant, acc in [("fp32", 0.97), ("int8-dynamic", 0.96), ("int8-dynamic", None)]:
        metrics = {} if acc is None else {"accuracy": acc}
        reg.register("m", f, format="onnx", variant=variant, metrics=metrics)
    v = reg.set_tags("m:2", {"stage": "candidate", "owner": "ana"})
    v = reg.set_tags("m:2", {"owner": None, "stage": "approved"})
    assert v.tags == {"stage": "approved"}
    v = reg.log_metrics("m:2", {"latency_p99_ms": 1.5})
    v = reg.log_metrics("m:2", {"accuracy": 0.965})
    assert v.metrics == {"accuracy": 0.965, "latency_p99_ms": 1.5}
    assert reg.set_description("m:2", "quantized").description == "quantized"
    assert reg.get("m:2").digest == reg.get("m:1").digest  # artifact untouched

    def versions(**kw: object) -> list[int]:
        return [x.version for x in reg.list_versions("m", **kw)]  # type: ignore[arg-type]

    assert versions(variant="int8-dynamic") == [2, 3]
    assert versions(tags={"stage": "approved"}) == [2]
    assert versions(tags={"stage": "nope"}) == []
    assert versions(order_by="-metrics.accuracy") == [1, 2, 3]
    assert versions(order_by="metrics.accuracy") == [2, 1, 3]
    assert versions(order_by="-version") == [3, 2, 1]
    assert versions(order_by="-created_at") == [3, 2, 1]
    with pytest.raises(InvalidArgumentError, match=r"\"size\""):
        reg.list_versions("m", order_by="size")

    m = reg.update_model("m", description="digits classifier", tags={"domain": "vision"})
    assert (m.description, m.tags) == ("digits classifier", {"domain": "vision"})


def test_lineage_and_parents(reg: Registry, tmp_path: Path) -> None:
    reg.register("mlp", write(tmp_path / "a", b"fp32"), format="onnx", variant="fp32")
    reg.set_alias("mlp:1", "production")
    q = reg.register(
        "mlp-int8", write(tmp_path / "b", b"int8"), format="onnx", parent="mlp@production"
    )
    assert q.parent == "mlp:1"
    p = reg.register("mlp-int8-pruned", tmp_path / "b", format="onnx", parent="mlp-int8")
    assert [v.ref for v in reg.lineage(p.ref)] == ["mlp-int8-pruned:1", "mlp-int8:1", "mlp:1"]
    before = snapshot(reg)
    with pytest.raises(NotFoundError, match=r"parent.*mlp:9"):
        reg.register("x", tmp_path / "a", format="onnx", parent="mlp:9")
    assert snapshot(reg) == before


BAD_CALLS = [
    ("get unknown model", lambda r, t: r.get("nope"), NotFoundError, '"nope"'),
    ("get unknown version", lambda r, t: r.get("m:7"), NotFoundError, "no version 7"),
    ("get unknown alias", lambda r, t: r.get("m@prod"), NotFoundError, '"prod"'),
    ("malformed ref", lambda r, t: r.get("m:abc"), InvalidArgumentError, '"m:abc"'),
    ("ref with both", lambda r, t: r.get("m:1@x"), InvalidArgumentError, '"m:1@x"'),
    ("not a string", lambda r, t: r.get(3), InvalidArgumentError, "int"),
    (
        "missing path",
        lambda r, t: r.register("m", t / "nowhere.onnx", format="onnx"),
        NotFoundError,
        "nowhere.onnx",
    ),
    (
        "path not a path",
        lambda r, t: r.register("m", None, format="onnx"),
        InvalidArgumentError,
        "NoneType",
    ),
    (
        "unknown format",
        lambda r, t: r.register("m", t / "f", format="pickle"),
        InvalidArgumentError,
        '"pickle"',
    ),
    (
        "alias on missing version",
        lambda r, t: r.set_alias("m:5", "production"),
        NotFoundError,
        "no version 5",
    ),
    (
        "alias with slash",
        lambda r, t: r.set_alias("m:1", "prod/x"),
        InvalidArgumentError,
        '"prod/x"',
    ),
    (
        "unknown alias action",
        lambda r, t: r.set_alias("m:1", "p", action="yolo"),
        InvalidArgumentError,
        '"yolo"',
    ),
    ("delete missing alias", lambda r, t: r.delete_alias("m", "x"), NotFoundError, '"x"'),
    (
        "non-finite metric",
        lambda r, t: r.log_metrics("m:1", {"acc": float("nan")}),
        InvalidArgumentError,
        "'acc'",
    ),
    (
        "non-number metric",
        lambda r, t: r.register("m", t / "f", format="onnx", metrics={"acc": "high"}),
        InvalidArgumentError,
        "'acc'",
    ),
    (
        "bool metric",
        lambda r, t: r.log_metrics("m:1", {"ok": True}),
        InvalidArgumentError,
        "'ok'",
    ),
    (
        "non-string tag",
        lambda r, t: r.register("m", t / "f", format="onnx", tags={"k": 1}),
        InvalidArgumentError,
        "'k'",
    ),
    (
        "bad signature",
        lambda r, t: r.register("m", t / "f", format="onnx", signature={"inputs": 3}),
        InvalidArgumentError,
        "inputs",
    ),
    (
        "metadata not JSON",
        lambda r, t: r.register("m", t / "f", format="onnx", metadata={"x": object()}),
        InvalidArgumentError,
        "metadata",
    ),
    (
        "unknown algorithm",
        lambda r, t: r.register("m", t / "f", format="onnx", algorithm="md5"),
        InvalidArgumentError,
        "'md5'",
    ),
    (
        "control char in variant",
        lambda r, t: r.register("m", t / "f", format="onnx", variant="a\x00b"),
        InvalidArgumentError,
        "variant",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "needle"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_typed_errors_and_changes_nothing(
    reg: Registry, tmp_path: Path, call, error, needle
) -> None:
    write(tmp_path / "f", b"model")
    reg.register("m", tmp_path / "f", format="onnx", metrics={"acc": 0.5})
    before = snapshot(reg)
    with pytest.raises(error) as info:
        call(reg, tmp_path)
    assert needle in str(info.value)
    assert snapshot(reg) == before
    assert reg.verify() == []


@pytest.mark.parametrize(
    "name",
    ["", "..", "a/b", "../escape", "a b", " lead", "tab\t", "nl\n", "bell\x07", "x" * 129, "é"],
)
def test_names_that_could_escape_or_confuse_are_refused(
    reg: Registry, tmp_path: Path, name: str
) -> None:
    f = write(tmp_path / "f", b"x")
    with pytest.raises(InvalidArgumentError, match="model name"):
        reg.register(name, f, format="onnx")
    assert reg.list_models() == []
    assert reg.register("x" * 128, f, format="onnx").version == 1


def test_formats_are_one_list() -> None:
    assert {"onnx", "torchscript", "ort", "sklearn", "pytorch-state-dict", "other"} == set(FORMATS)


def tamper(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def test_tampered_truncated_and_missing_artifacts_are_refused(
    reg: Registry, tmp_path: Path, onnx_dir: Path
) -> None:
    f = write(tmp_path / "m.onnx", b"A" * 1000)
    a = reg.register("a", f, format="onnx")
    reg.register("a", f, format="onnx")  # a:2 shares a:1's blob
    t = reg.register("t", onnx_dir, format="onnx")
    assert reg.verify() == []

    blob = reg.artifact_path("a:1")
    tamper(blob, b"A" * 999 + b"B")
    with pytest.raises(IntegrityError) as info:
        reg.artifact_path("a:1")
    msg = str(info.value)
    assert "a:1" in msg and a.digest in msg
    with pytest.raises(IntegrityError, match="a:2"):
        reg.model_file("a:2")
    assert reg.artifact_path("a:1", verify=False) == blob  # explicit opt-out still hands it out
    tamper(blob, b"A" * 10)  # truncated
    with pytest.raises(IntegrityError, match=a.digest):
        reg.artifact_path("a")

    tree = reg.artifact_path("t:1")
    tamper(tree / "model.onnx.data", os.urandom(3 << 20))
    write(tree / "planted.py", b"import os")
    with pytest.raises(IntegrityError, match=t.digest):
        reg.artifact_path("t:1")
    problems = reg.verify()
    assert len(problems) == 4, problems
    assert any(p.startswith("a:1:") for p in problems)
    assert any(p.startswith("a:2:") for p in problems)
    assert any("model.onnx.data changed" in p and p.startswith("t:1:") for p in problems)
    assert any("planted.py is unexpected" in p for p in problems)
    assert reg.verify("t:1") == [p for p in problems if p.startswith("t:1:")]

    blob.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        reg.artifact_path("a:1", verify=False)
    assert any("missing" in p for p in reg.verify("a:1"))


def test_gc_removes_unreferenced_artifacts_only(reg: Registry, tmp_path: Path) -> None:
    v = reg.register("m", write(tmp_path / "f", b"kept"), format="onnx")
    stray = write(reg.root / "blobs" / "blake3" / ("0" * 64), b"orphan")
    stray_tree = write(reg.root / "trees" / "sha256" / ("1" * 64) / "model.onnx", b"orphan")
    dead = write(reg.root / "tmp" / "123-dead.data", b"partial")
    write(reg.root / "tmp" / "123-dead.lock", b"")
    report = reg.gc()
    assert set(report.removed) == {
        stray,
        stray_tree.parent,
        dead,
        reg.root / "tmp" / "123-dead.lock",
    }
    assert report.bytes_freed >= len(b"orphan") * 2
    assert reg.verify() == []
    assert reg.artifact_path(v.ref).read_bytes() == b"kept"
    assert reg.gc().removed == []


def test_index_is_sqlite_wal_with_a_schema_version(reg: Registry, tmp_path: Path) -> None:
    reg.register("m", write(tmp_path / "f", b"x"), format="onnx")
    reg.set_alias("m:1", "production")
    con = sqlite3.connect(reg.root / "index.db")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == 1
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM alias_events")
        con.execute("PRAGMA user_version = 50")
        con.commit()
    finally:
        con.close()
    with pytest.raises(ConflictError, match="schema version 50"):
        Registry(reg.root)


def test_root_defaults_to_servekit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEKIT_HOME", str(tmp_path / "home"))
    assert Registry().root == tmp_path / "home"
    assert (tmp_path / "home" / "index.db").exists()
    monkeypatch.delenv("SERVEKIT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert Registry().root == tmp_path / "user" / ".servekit"


def test_threads_share_one_registry_and_separate_handles(reg: Registry, tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"shared")
    other = Registry(reg.root)  # a second connection in the same process

    def work(i: int) -> list[int]:
        r = reg if i % 2 else other
        out = []
        for _ in range(20):
            out.append(r.register("t", f, format="onnx").version)
            assert r.get("t").version >= out[-1]
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = [v for vs in pool.map(work, range(4)) for v in vs]
    assert sorted(got) == list(range(1, 81))
