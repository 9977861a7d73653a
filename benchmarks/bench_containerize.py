"""Containerize benchmark: image build, size, start to READY, and CLI start-up, in one run.

Measures:
- ``servekit containerize`` (context and wheelhouse written) and the image build with podman
  (``--network none``) of a packaged iris classifier;
- the image's size against the base image alone (goal: the ONNX serve layer adds <= 200 MB),
  and what the layer holds: the image's site-packages by top-level entry (dist-info and
  ``.libs`` folders counted with their package) and its byte code;
- container start to READY: ``podman run -d`` until ``GET /v2/health/ready`` answers 200;
- ``servekit hash`` start-up with the lazy CLI against the eager baseline (every command's
  module imported first, as the CLI did before it loaded commands lazily), same run.
Medians of --runs starts/invocations with their spread (min-max). Needs podman configured for
this host (see ../shared/FIELD-NOTES.md, "Containers") and a local base image with Python of
this minor version (``--base``; tests/test_containerize.py shows how to make one with
mmdebstrap). Removes what it built. Writes JSON (default benchmarks/results/containerize.json).

    python benchmarks/bench_containerize.py --base localhost/debian-python:bookworm [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from _results import write_results
from servekit.packaging import package
from servekit.registry import Registry

EAGER = (
    "import importlib, sys; from servekit.cli import COMMANDS, main; "
    "[importlib.import_module(v.split(':')[0]) for v in COMMANDS.values()]; "
    "sys.argv = ['servekit', 'hash', sys.argv[1]]; main()"
)
LAZY = (
    "import sys; from servekit.cli import main; "
    "sys.argv = ['servekit', 'hash', sys.argv[1]]; main()"
)


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - start


#: Run inside the image: bytes of site-packages per top-level package, and of byte code.
BREAKDOWN = r"""
import json, os, re, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
sizes, pyc = {}, 0
for entry in os.listdir(site):
    top = re.sub(r"(-[^-]+\.dist-info|\.libs)$", "", entry).lower().replace("-", "_")
    top = top.removesuffix(".py")
    path = os.path.join(site, entry)
    files = [path] if os.path.isfile(path) else [
        os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
    for f in files:
        size = os.lstat(f).st_size
        sizes[top] = sizes.get(top, 0) + size
        pyc += size if f.endswith(".pyc") else 0
print(json.dumps({"site_packages": sizes, "byte_code": pyc}))
"""


def layer_breakdown(image: str) -> dict[str, object]:
    """MB per top-level package in the image's site-packages (largest first) and of byte code."""
    found = json.loads(podman("run", "--rm", "--entrypoint", "/opt/servekit/bin/python", image,
                              "-c", BREAKDOWN))  # fmt: skip
    packages = sorted(found["site_packages"].items(), key=lambda kv: -kv[1])
    return {
        "site_packages_mb": sum(found["site_packages"].values()) / 1e6,
        "byte_code_mb": found["byte_code"] / 1e6,
        "packages_mb": {name: round(size / 1e6, 1) for name, size in packages},
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def start_to_ready(image: str) -> float:
    name = f"servekit-bench-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    podman("run", "-d", "--name", name, "-p", "127.0.0.1::8000", image)
    try:
        port = podman("port", name, "8000").strip().rsplit(":", 1)[1]
        while time.monotonic() - start < 300:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).is_success:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling readiness: there is nothing to wait on instead
        raise RuntimeError(f"{image} not ready in 300 s")
    finally:
        podman("rm", "-f", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="local base image (Python of this minor)")
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 5")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/containerize.json"))
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        x, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=500).fit(x.astype(np.float32), y)
        registry = Registry(root / "reg")
        package(model, x.astype(np.float32), labels=y, variants="onnx", name="iris",
                out_dir=root / "pk", progress=False, registry=registry)  # fmt: skip
        image = f"localhost/servekit-bench:{uuid.uuid4().hex[:8]}"
        cli = [sys.executable, "-m", "servekit", "containerize", "iris", "--registry",
               str(root / "reg"), "--base", args.base]  # fmt: skip
        context_s = timed([*cli, "--out", "ctx"], root)
        dangling = set(podman("images", "-q", "--no-trunc", "--filter", "dangling=true").split())
        build_s = timed(["podman", "build", "--network", "none", "--format", "docker",
                         "-t", image, str(root / "ctx")], root)  # fmt: skip
        try:
            size = json.loads(podman("image", "inspect", image))[0]["Size"]
            base = json.loads(podman("image", "inspect", args.base))[0]["Size"]
            breakdown = layer_breakdown(image)
            ready = [start_to_ready(image) for _ in range(runs)]
        finally:  # the image and its build stage (left untagged by the build)
            podman("rmi", "-f", image)
            stage = set(podman("images", "-q", "--no-trunc", "--filter", "dangling=true").split())
            if stage - dangling:
                podman("rmi", "-f", *(stage - dangling))
        (root / "w.bin").write_bytes(b"weights")
        eager, lazy = [], []
        for _ in range(runs):  # interleaved, so machine noise hits both alike
            eager.append(timed([sys.executable, "-c", EAGER, "w.bin"], root))
            lazy.append(timed([sys.executable, "-c", LAZY, "w.bin"], root))
    results = {
        "runs": runs,
        "containerize_s": context_s,
        "build_s": build_s,
        "image_mb": size / 1e6,
        "base_mb": base / 1e6,
        "serve_layer_mb": (size - base) / 1e6,
        "serve_layer_goal_mb": 200,
        "serve_layer": breakdown,
        "start_to_ready_s": summary(ready),
        "hash_startup_eager_s": summary(eager),
        "hash_startup_lazy_s": summary(lazy),
        "hash_startup_ratio": statistics.median(lazy) / statistics.median(eager),
    }
    print(f"containerize {context_s:.1f} s, build {build_s:.1f} s (first build of the context)")
    print(f"image {size / 1e6:.0f} MB, base {base / 1e6:.0f} MB: serve layer "
          f"{(size - base) / 1e6:.0f} MB (goal <= 200)")  # fmt: skip
    top = ", ".join(f"{k} {v:.0f}" for k, v in list(breakdown["packages_mb"].items())[:8])
    print(f"site-packages {breakdown['site_packages_mb']:.0f} MB (byte code "
          f"{breakdown['byte_code_mb']:.1f} MB): {top} ...")  # fmt: skip
    r, e, la = summary(ready), summary(eager), summary(lazy)
    print(f"start to READY: median {r['median']:.2f} s ({r['min']:.2f}-{r['max']:.2f}), n={runs}")
    print(f"servekit hash start-up: lazy {la['median']:.2f} s ({la['min']:.2f}-{la['max']:.2f}) "
          f"vs eager {e['median']:.2f} s ({e['min']:.2f}-{e['max']:.2f}): "
          f"{results['hash_startup_ratio']:.2f}x")  # fmt: skip
    write_results(args.out, results)


if __name__ == "__main__":
    main()
