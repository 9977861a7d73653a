"""Every wrong invocation of the CLI prints one ``servekit: error: ...`` line and exits 2.

One table: the invocations the README's users hit (issue 13), then for each command a missing
argument, a bad reference, a missing file and a bad value. Each case runs the real command in
a subprocess from a directory holding a small registry (``digits:1``) and a few input files,
and asserts exactly one line on stderr, the exit status, the message, and that nothing that
was there is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from servekit.registry import Registry
from servekit.telemetry import build_reference_profile

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "model_repo" / "digits" / "1" / "model.onnx"

#: (id, arguments, exit status, text the one stderr line must contain)
CASES: list[tuple[str, list[str], int, str]] = [
    # The wrong invocations of issue 13.
    ("serve-port-out-of-range", ["serve", "--model-repo", "repo", "--port", "99999"], 2,
     "99999 is not in the range 0<=x<=65535"),
    ("drift-profile-is-npy", ["drift", "report", "--profile", "current.npy", "--data",
                              "current.npy"], 2, "current.npy: not a reference profile"),
    ("demo-workdir-unwritable", ["demo", "--workdir", "/proc/nonexistent/x"], 2,
     "no such file or directory"),
    ("verify-bundle-not-a-bundle", ["verify-bundle", "current.npy"], 2,
     "current.npy: not an edge bundle"),
    ("bench-data-is-json", ["bench", "digits", "--registry", "reg", "--data", "profile.json"], 2,
     "profile.json: not a numpy .npy input array (no .npy header)"),
    ("export-edge-missing-dir", ["export", "edge", "nosuchdir/fp32", "--out", "b.tar.gz"], 2,
     "nosuchdir/fp32: no such directory"),
    ("promote-gate-syntax", ["promote", "digits:1", "--to", "production", "--gate",
                             "accuracy >== 1", "--registry", "reg"], 2, "at column 12"),
    ("registry-list-missing-root", ["registry", "list", "--registry", "noreg"], 2,
     "noreg: no registry there"),
    ("serve-nothing-loads", ["serve", "--registry", "reg", "--model", "digits@nosuch",
                             "--startup-grace", "0", "--port", "0"], 2, "nothing to serve"),
    ("unknown-command", ["nosuch"], 2, "No such command 'nosuch'"),
    # hash
    ("hash-missing-argument", ["hash"], 2, "Missing argument 'PATH'"),
    ("hash-missing-file", ["hash", "nosuch.onnx"], 2, "nosuch.onnx"),
    ("hash-bad-value", ["hash", "notes.txt", "--algorithm", "md5"], 2, "md5"),
    # registry
    ("registry-init-missing-argument", ["registry", "init"], 2, "Missing argument 'ROOT'"),
    ("registry-register-missing-file", ["registry", "register", "digits", "nosuch.onnx",
                                        "--format", "onnx", "--registry", "reg"], 2, "nosuch.onnx"),
    ("registry-register-bad-value", ["registry", "register", "digits", "notes.txt", "--format",
                                     "onnx", "--metric", "accuracy=high", "--registry", "reg"], 2,
     "not a number"),
    ("registry-register-bad-parent", ["registry", "register", "digits", "notes.txt", "--format",
                                      "onnx", "--parent", "digits:99", "--registry", "reg"], 2,
     "digits:99"),
    ("registry-show-bad-reference", ["registry", "show", "bad name!", "--registry", "reg"], 2,
     "bad name!"),
    ("registry-show-unknown", ["registry", "show", "digits:7", "--registry", "reg"], 2,
     "no version 7"),
    ("registry-alias-bad-value", ["registry", "alias", "set", "digits:1", "bad alias!",
                                  "--registry", "reg"], 2, "bad alias!"),
    ("registry-history-missing-argument", ["registry", "history", "--registry", "reg"], 2,
     "Missing argument 'NAME'"),
    ("registry-verify-missing-root", ["registry", "verify", "--registry", "noreg"], 2,
     "no registry there"),
    ("registry-gc-missing-root", ["registry", "gc", "--registry", "noreg"], 2,
     "no registry there"),
    # drift
    ("drift-missing-option", ["drift", "report", "--data", "current.npy"], 2, "--profile"),
    ("drift-missing-file", ["drift", "report", "--profile", "nosuch.json", "--data",
                            "current.npy"], 2, "nosuch.json"),
    # package
    ("package-missing-argument", ["package"], 2, "Missing argument"),
    ("package-missing-file", ["package", "nosuch.skops", "--framework", "sklearn", "--inputs",
                              "current.npy", "--name", "m"], 2, "nosuch.skops"),
    ("package-missing-inputs", ["package", "notes.txt", "--framework", "sklearn", "--inputs",
                                "nosuch.npy", "--name", "m"], 2, "nosuch.npy"),
    ("package-bad-value", ["package", "notes.txt", "--framework", "sklearn", "--inputs",
                           "current.npy", "--name", "m", "--variants", "int3"], 2, "int3"),
    # export
    ("export-edge-bad-reference", ["export", "edge", "digits:9", "--out", "b.tar.gz",
                                   "--registry", "reg"], 2, "no version 9"),
    ("export-edge-missing-option", ["export", "edge", "digits:1"], 2, "--out"),
    ("export-triton-bad-reference", ["export", "triton", "nosuch", "--out", "t",
                                     "--registry", "reg"], 2, "nosuch"),
    ("export-triton-bad-value", ["export", "triton", "digits:1", "--out", "t", "--kind", "tpu",
                                 "--registry", "reg"], 2, "tpu"),
    # verify-bundle
    ("verify-bundle-missing-file", ["verify-bundle", "nosuch.tar.gz"], 2, "nosuch.tar.gz"),
    # bench
    ("bench-missing-file", ["bench", "digits", "--registry", "reg", "--data", "nosuch.npy"], 2,
     "nosuch.npy: no such file or directory"),
    ("bench-bad-reference", ["bench", "digits", "--registry", "reg", "--data", "current.npy",
                             "--lineage", "digits:9"], 2, "no version 9"),
    ("bench-bad-value", ["bench", "digits", "--registry", "reg", "--data", "current.npy",
                         "--batch-sizes", "one"], 2, "--batch-sizes"),
    # promote
    ("promote-missing-option", ["promote", "digits:1", "--registry", "reg"], 2, "--to"),
    ("promote-bad-reference", ["promote", "digits:9", "--to", "production", "--gate",
                               "accuracy >= 0", "--registry", "reg"], 2, "no version 9"),
    ("promote-missing-gates-file", ["promote", "digits:1", "--to", "production",
                                    "--gates-file", "nosuch.txt", "--registry", "reg"], 2,
     "nosuch.txt"),
    # serve
    ("serve-missing-argument", ["serve"], 2, "give --model-repo DIR"),
    ("serve-missing-repo", ["serve", "--model-repo", "nosuchdir", "--port", "0"], 2,
     "nosuchdir"),
    ("serve-bad-reference", ["serve", "--registry", "reg", "--model", "bad ref!",
                             "--startup-grace", "0", "--port", "0"], 2, "bad ref!"),
    ("serve-bad-value", ["serve", "--model-repo", "repo", "--threads", "0"], 2, "--threads"),
    ("serve-missing-registry", ["serve", "--registry", "noreg", "--model", "digits"], 2,
     "no registry there"),
    # demo
    ("demo-bad-value", ["demo", "--workdir", "notes.txt"], 2, "notes.txt"),
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with registry ``reg`` (digits:1), an empty repository ``repo``, a profile,
    a ``.npy`` array and a text file."""
    root = tmp_path_factory.mktemp("cli-errors")
    Registry(root / "reg").register("digits", MODEL, format="onnx")
    (root / "repo").mkdir()
    rng = np.random.default_rng(0)
    build_reference_profile(rng.normal(size=(200, 4))).save(root / "profile.json")
    np.save(root / "current.npy", rng.normal(size=(50, 4)))
    (root / "notes.txt").write_text("not a model\n")
    return root


def _snapshot(root: Path) -> set[str]:
    return {os.fspath(p.relative_to(root)) for p in root.rglob("*") if ".lock" not in p.name}


@pytest.mark.parametrize(("args", "status", "text"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_wrong_invocation_is_one_line(workdir: Path, args: list[str], status: int, text: str):
    before = _snapshot(workdir)
    proc = subprocess.run(
        [sys.executable, "-m", "servekit", *args],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == status, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("servekit: error: "), lines[0]
    assert text in lines[0]
    assert "Traceback" not in proc.stderr
    assert before <= _snapshot(workdir), "a wrong invocation removed files"
    assert not (workdir / "noreg").exists(), "a read-only command created a registry"


def test_registry_init_creates_a_registry_read_only_commands_accept(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servekit", *args], capture_output=True, text=True, timeout=60
        )

    root = tmp_path / "new-registry"
    made = cli("registry", "init", str(root))
    assert made.returncode == 0 and made.stdout.strip() == str(root), made.stderr
    listed = cli("registry", "list", "--registry", str(root))
    assert listed.returncode == 0 and listed.stdout == "", listed.stderr
