"""Several processes writing one registry at once, and a writer killed mid-registration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from servekit.registry import Registry

REGISTER_50 = """
import sys
from pathlib import Path
from servekit.registry import Registry

root, worker = Path(sys.argv[1]), int(sys.argv[2])
reg = Registry(root)
for i in range(50):
    f = root.parent / f"w{worker}-{i}.bin"
    f.write_bytes(f"worker {worker} item {i}".encode() * 10)
    v = reg.register("shared", f, format="onnx", tags={"worker": str(worker), "item": str(i)})
    print(v.version)
"""


def test_eight_processes_register_400_versions_without_gaps(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    Registry(root)  # create and migrate once, so workers race on registering only
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_50, str(root), str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(8)
    ]
    seen: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        got = [int(line) for line in out.split()]
        assert got == sorted(got) and len(got) == 50  # each worker sees its own versions grow
        seen.extend(got)
    assert sorted(seen) == list(range(1, 401))
    reg = Registry(root)
    versions = reg.list_versions("shared")
    assert [v.version for v in versions] == list(range(1, 401))
    # Each version holds the artifact its worker registered under it.
    pairs = {(v.tags["worker"], v.tags["item"]) for v in versions}
    assert len(pairs) == 400
    sample = versions[123]
    content = reg.artifact_path(sample.ref).read_bytes()
    assert content == f"worker {sample.tags['worker']} item {sample.tags['item']}".encode() * 10
    assert reg.verify() == []
    assert list((root / "tmp").iterdir()) == []


REGISTER_FOREVER = """
import sys
from pathlib import Path
from servekit.registry import Registry

root, artifact = Path(sys.argv[1]), Path(sys.argv[2])
reg = Registry(root)
i = 0
while True:
    # New content each round (the first 8 bytes differ), so every round places a new blob.
    with open(artifact, "r+b") as f:
        f.write(i.to_bytes(8, "little"))
    reg.register("big", artifact, format="onnx")
    i += 1
"""


def _staging(root: Path) -> list[Path]:
    tmp = root / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def test_sigkill_mid_register_leaves_index_consistent_and_gc_cleans(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    Registry(root)
    artifact = tmp_path / "big.onnx"
    artifact.write_bytes(os.urandom(24 << 20))
    strays_seen = 0
    for _attempt in range(4):
        child = subprocess.Popen([sys.executable, "-c", REGISTER_FOREVER, str(root), str(artifact)])
        try:
            deadline = time.monotonic() + 60
            # Let at least one version land, then kill as soon as a copy is being staged.
            while time.monotonic() < deadline and child.poll() is None:
                if Registry(root).list_models() and any(
                    p.suffix == ".data" for p in _staging(root)
                ):
                    break
                time.sleep(0.002)
            assert child.poll() is None, "the registering child died on its own"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        reg = Registry(root)
        # Consistent: every committed row points at an intact artifact, numbering has no gaps.
        assert reg.verify() == []
        versions = [v.version for v in reg.list_versions("big")]
        assert versions == list(range(1, len(versions) + 1))
        strays_seen += any(p.suffix == ".data" for p in _staging(root))
        report = reg.gc()
        assert _staging(root) == []
        for p in report.removed:  # staging files, or an artifact placed but never committed
            assert p.parent == root / "tmp" or p.parent.parent.parent == root, p
        assert reg.verify() == []
        if strays_seen >= 2:
            break
    assert strays_seen >= 1, "no kill landed while a copy was staged"
    # The registry keeps working after the crashes; version numbers are not reused.
    reg = Registry(root)
    last = reg.get("big").version
    assert reg.register("big", artifact, format="onnx").version == last + 1
