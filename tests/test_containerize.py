"""``servekit containerize``: the build context, and (with podman) the image built and run.

The end-to-end test needs podman, runc and mmdebstrap (``.ci/run`` installs them) and Debian's
package mirror for the base image, built once per run with mmdebstrap (no image registry is
reachable here) and removed at the end with everything the test built.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.packaging import package
from servekit.registry import Registry

SERVE_ONLY_ABSENT = {
    "torch", "scikit_learn", "matplotlib", "skl2onnx", "skops", "tqdm", "onnx", "tritonclient",
    "ml_dtypes", "python_rapidjson",
}  # fmt: skip
#: The goal for what the ONNX serve layer adds to the base image (issue 16).
SERVE_LAYER_GOAL_MB = 200


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900):
    return subprocess.run(
        [sys.executable, "-m", "servekit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A registry with iris:1 (a packaged logistic regression) at alias production."""
    root = tmp_path_factory.mktemp("iris")
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, y)
    registry = Registry(root / "reg")
    package(
        model, x, labels=y, variants="onnx", name="iris", out_dir=root / "pk", progress=False,
        registry=registry,
    )  # fmt: skip
    registry.set_alias("iris:1", "production")
    return root / "reg", x


@pytest.fixture(scope="module")
def context(iris, tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry, _ = iris
    out = tmp_path_factory.mktemp("ctx") / "ctx"
    proc = run_cli(
        "containerize", "iris@production", "--registry", str(registry), "--out", str(out),
        "--base", "localhost/base:test", cwd=out.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "context for iris:1" in proc.stdout
    return out


def test_context_holds_a_containerfile_wheels_and_a_one_version_registry(iris, context):
    registry, _ = iris
    assert sorted(p.name for p in context.iterdir()) == [
        ".dockerignore", "Containerfile", "registry", "wheels",
    ]  # fmt: skip
    text = (context / "Containerfile").read_text()
    assert text.count("FROM localhost/base:test") == 2
    assert "USER 65534:65534" in text and "EXPOSE 8000 8001" in text
    assert "pip install --no-index --find-links /wheels" in text
    # No byte code at install, no tests/ directories; byte code for what the server imports.
    assert "--no-compile" in text and "-path '*/site-packages/*/tests' -exec rm -rf" in text
    assert (
        "python -m servekit.containerize.precompile servekit.serving.registry_source onnxruntime\n"
        in text
    )
    health = next(line for line in text.splitlines() if line.lstrip().startswith("CMD"))
    assert "/opt/servekit/bin/python" in health and "/v2/health/ready" in health
    assert "curl" not in text
    assert "SERVEKIT_GRPC_PORT=8001" in text and "SERVEKIT_EXIT_ON_ERROR=true" in text
    source = Registry(registry).get("iris@production")
    assert f'io.servekit.model.digest="{source.digest}"' in text
    assert 'io.servekit.model.name="iris"' in text
    assert "org.opencontainers.image.created=" in text

    # Closed cleanly: a read-only WAL index must come without -wal/-shm files.
    assert not list((context / "registry").glob("index.db-*"))
    copied = Registry(context / "registry")
    assert [m.name for m in copied.list_models()] == ["iris"]
    [version] = copied.list_versions("iris")
    assert version.digest == source.digest
    assert version.signature == source.signature and version.metrics == source.metrics
    assert version.source["containerized_from"] == "iris:1"
    assert (copied.artifact_path("iris:1") / "reference_profile.json").is_file()


def test_the_torch_extra_is_byte_compiled_too(iris):
    from servekit.containerize.context import containerfile

    registry, _ = iris
    text = containerfile(Registry(registry).get("iris:1"), "base:1", ("torch",), {})
    assert "'servekit[serve,torch]==" in text
    assert "precompile servekit.serving.registry_source onnxruntime torch\n" in text


def test_wheelhouse_holds_servekit_and_only_serve_dependencies(context):
    names = {w.name.split("-")[0].lower() for w in (context / "wheels").glob("*.whl")}
    assert {"servekit", "onnxruntime", "fastapi", "uvicorn", "numpy"} <= names
    assert names.isdisjoint(SERVE_ONLY_ABSENT), names & SERVE_ONLY_ABSENT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "nosuch"),
        (["iris@production", "--extras", "gpu"], "--extras gpu"),
        (["iris@production", "--extras", "nosuch"], "unknown extra"),
        (["iris@production", "--tag", "t"], "--tag needs --build"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(iris, tmp_path, args, message):
    registry, _ = iris
    proc = run_cli("containerize", *args, "--registry", str(registry), "--out", "ctx", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert (
        not any((tmp_path / "ctx").glob("*.whl")) and not (tmp_path / "ctx" / "registry").exists()
    )


def test_refuses_a_non_empty_out_dir(iris, tmp_path):
    registry, _ = iris
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "keep.txt").write_text("mine")
    proc = run_cli(
        "containerize", "iris", "--registry", str(registry), "--out", "ctx", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("servekit: error: ctx: exists and is not an empty directory")
    assert sorted(p.name for p in (tmp_path / "ctx").iterdir()) == ["keep.txt"]


def test_build_without_an_engine_says_so(iris, tmp_path):
    registry, _ = iris
    bin_dir = tmp_path / "bin"  # a PATH holding only this Python
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    proc = run_cli(
        "containerize", "iris", "--registry", str(registry), "--out", "ctx", "--build",
        cwd=tmp_path, env={"PATH": str(bin_dir)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "servekit: error: neither podman nor docker is on PATH: install one, or build the "
        "context with any OCI builder (it is a plain Dockerfile)"
    )
    assert (tmp_path / "ctx" / "Containerfile").is_file()  # the context is still usable


def test_build_runs_offline_and_keeps_the_healthcheck(tmp_path):
    from servekit.containerize.engine import build_command

    podman_cmd = build_command("/usr/bin/podman", tmp_path, "t:1")
    assert podman_cmd[:2] == ["/usr/bin/podman", "build"]
    assert podman_cmd[podman_cmd.index("--network") + 1] == "none"
    assert podman_cmd[podman_cmd.index("--format") + 1] == "docker"
    assert podman_cmd[-1] == str(tmp_path)
    docker_cmd = build_command("/usr/bin/docker", tmp_path, "t:1")
    assert "--format" not in docker_cmd and "--network" in docker_cmd


# -- end to end with podman ------------------------------------------------------------------

CONTAINERS_CONF = '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'
CONTAINERS_CONF += 'cgroup_manager = "cgroupfs"\n'


def podman(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def dangling_images() -> set[str]:
    return set(podman("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split())


@pytest.fixture(scope="session")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Debian bookworm image with python3 (3.11), made with mmdebstrap and podman import."""
    missing = [t for t in ("podman", "runc", "mmdebstrap") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install -y podman runc mmdebstrap)")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the test base image has Debian bookworm's Python 3.11")
    root = tmp_path_factory.mktemp("podman")
    (root / "containers.conf").write_text(CONTAINERS_CONF)
    previous = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(root / "containers.conf")
    tag = f"localhost/servekit-test-base:{uuid.uuid4().hex[:12]}"
    tar = root / "base.tar"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=apt",
         "--include=python3,python3-venv,ca-certificates", "bookworm", str(tar)],
        check=True, timeout=1200,
    )  # fmt: skip
    podman("import", "-q", str(tar), tag)
    tar.unlink()
    try:
        yield tag
    finally:
        podman("rmi", "-f", tag, check=False)
        if previous is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = previous


def wait_ready(url: str, container: str, deadline_s: float = 180) -> float:
    """Seconds until GET /v2/health/ready answers 200; fails if the container exits first."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        state = podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        assert state == "true", podman("logs", container, check=False).stderr
        time.sleep(0.2)  # polling readiness within the deadline: nothing to wait on instead
    raise AssertionError(f"{container} not ready in {deadline_s}s")


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the base image (mmdebstrap) and two image builds
def test_image_builds_offline_serves_as_non_root_and_refuses_a_tampered_artifact(
    iris, base_image, tmp_path
):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    registry, x = iris
    suffix = uuid.uuid4().hex[:12]
    image, tampered_image = f"localhost/servekit-e2e:{suffix}", f"localhost/servekit-e2e:t{suffix}"
    container, tampered_container = f"servekit-e2e-{suffix}", f"servekit-e2e-t{suffix}"
    before = dangling_images()
    try:
        start = time.monotonic()
        proc = run_cli(
            "containerize", "iris@production", "--registry", str(registry), "--out", "ctx",
            "--base", base_image, "--build", "--tag", image, cwd=tmp_path,
        )  # fmt: skip
        build_s = time.monotonic() - start
        assert proc.returncode == 0, proc.stdout + proc.stderr
        info = json.loads(podman("image", "inspect", image).stdout)[0]
        labels = info["Labels"]
        source = Registry(registry).get("iris@production")
        assert labels["io.servekit.model.digest"] == source.digest
        assert labels["io.servekit.model.version"] == "1"
        assert labels["org.opencontainers.image.title"] == "servekit-iris"
        assert info["Config"]["ExposedPorts"].keys() >= {"8000/tcp", "8001/tcp"}
        base_size = json.loads(podman("image", "inspect", base_image).stdout)[0]["Size"]

        start = time.monotonic()
        podman("run", "-d", "--name", container, "-p", "127.0.0.1::8000", "-p", "127.0.0.1::8001",
               image)  # fmt: skip
        host_port = podman("port", container, "8000").stdout.strip().rsplit(":", 1)[1]
        grpc_port = podman("port", container, "8001").stdout.strip().rsplit(":", 1)[1]
        wait_ready(f"http://127.0.0.1:{host_port}", container)
        ready_s = time.monotonic() - start

        client = httpclient.InferenceServerClient(f"127.0.0.1:{host_port}")
        rows = x[:16]
        inp = httpclient.InferInput("input", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)
        result = client.infer("iris", [inp])
        session = ort.InferenceSession(
            str(Registry(registry).model_file("iris@production")),
            providers=["CPUExecutionProvider"],
        )
        expected = dict(
            zip(
                [o.name for o in session.get_outputs()],
                session.run(None, {"input": rows}),
                strict=True,
            )
        )
        for name, want in expected.items():  # the server gives the label its [n, 1] dims
            np.testing.assert_array_equal(result.as_numpy(name).reshape(want.shape), want)
        client.close()
        # gRPC too, on servekit's own copy of Triton's protos (no tritonclient in the image).
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as grpc_client:
            grpc_input = grpcclient.InferInput("input", list(rows.shape), "FP32")
            grpc_input.set_data_from_numpy(rows)
            grpc_result = grpc_client.infer("iris", [grpc_input])
            for name, want in expected.items():
                got = grpc_result.as_numpy(name).reshape(want.shape)
                np.testing.assert_array_equal(got, want)

        health = podman("healthcheck", "run", container, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        status = podman("exec", container, "cat", "/proc/1/status").stdout
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert uid != "0"
        write = podman("exec", container, "touch", "/models/registry/blobs/x", check=False)
        assert write.returncode != 0  # the model directory is read-only to the server

        shutil.copytree(tmp_path / "ctx", tmp_path / "ctx2")
        blob = Registry(tmp_path / "ctx2" / "registry").model_file("iris:1", verify=False)
        os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        podman(
            "build", "--network", "none", "--format", "docker", "-t", tampered_image,
            str(tmp_path / "ctx2"),
        )  # fmt: skip
        refused = podman("run", "--name", tampered_container, tampered_image, check=False)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = [ln for ln in refused.stderr.splitlines() if not ln.startswith("time=")]
        assert len(lines) == 1, refused.stderr
        assert lines[0].startswith("servekit: error: --model iris:1:")

        size_mb = (info["Size"] - base_size) / 1e6
        assert size_mb <= SERVE_LAYER_GOAL_MB, f"the serve layer adds {size_mb:.0f} MB"
        print(
            f"\ncontainerize+build {build_s:.1f} s; image {info['Size'] / 1e6:.0f} MB, base "
            f"{base_size / 1e6:.0f} MB: the serve layer adds {size_mb:.0f} MB; run to READY "
            f"{ready_s:.1f} s (shared 2-core machine)"
        )
    finally:
        podman("rm", "-f", container, tampered_container, check=False)
        podman("rmi", "-f", image, tampered_image, check=False)
        leftover = dangling_images() - before
        if leftover:
            podman("rmi", "-f", *leftover, check=False)
    assert container not in podman("ps", "-a", "--format", "{{.Names}}").stdout
