"""The CLI imports a command's modules only when that command runs."""

from __future__ import annotations

import json
import subprocess
import sys

#: What ``servekit hash`` must not load: the serving, gRPC, packaging and torch stacks.
HEAVY = ("fastapi", "uvicorn", "grpc", "torch", "sklearn", "onnxruntime", "matplotlib")

PROBE = """
import json, sys
from servekit.cli import main
sys.argv = ["servekit", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def loaded_by(*args: str, cwd: str) -> tuple[int, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def test_hash_imports_no_serving_or_training_stack(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"weights")
    code, modules = loaded_by("hash", "m.onnx", cwd=str(tmp_path))
    assert code == 0
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))
    assert "click" in modules  # the probe did run the command line


def test_serve_help_loads_the_serving_stack_only_when_asked(tmp_path):
    code, modules = loaded_by("serve", "--help", cwd=str(tmp_path))
    assert code == 0
    assert "fastapi" in modules and "uvicorn" in modules
    assert modules.isdisjoint({"torch", "sklearn", "matplotlib"})
