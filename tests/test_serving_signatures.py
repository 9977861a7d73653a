"""``serve --trusted-key K --signature-policy enforce|warn``: what is served and what is not."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from _serving import EXAMPLE_REPO, start_server
from servekit.registry import Registry
from servekit.signing import generate_keys
from servekit.signing.registry import BUNDLE_TAG, sign_version

DIGITS = EXAMPLE_REPO / "digits" / "1" / "model.onnx"
#: model name -> how its only version is signed
CASES = {
    "good": "trusted key",
    "otherkey": "another key",
    "unsigned": "not signed",
    "forged": "signature tampered",
}


@pytest.fixture(scope="module")
def signed_registry(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("signed")
    generate_keys(tmp / "keys")
    generate_keys(tmp / "other")
    reg = Registry(tmp / "reg")
    for name in CASES:
        reg.register(name, DIGITS, format="onnx")
        reg.set_alias(f"{name}:1", "production")
    sign_version(reg, "good:1", tmp / "keys" / "private.pem")
    sign_version(reg, "otherkey:1", tmp / "other" / "private.pem")
    sign_version(reg, "forged:1", tmp / "keys" / "private.pem")
    bundle = json.loads(reg.get("forged:1").tags[BUNDLE_TAG])
    bundle["dsseEnvelope"]["payload"] = bundle["dsseEnvelope"]["payload"][:-8] + "AAAAAAA="
    reg.set_tags("forged:1", {BUNDLE_TAG: json.dumps(bundle)})
    return tmp / "reg", tmp / "keys" / "public.pem"


def _serve(root: Path, key: Path, policy: str):
    models = [arg for name in CASES for arg in ("--model", f"{name}@production")]
    return start_server(
        "--registry", str(root), *models, "--trusted-key", str(key), "--signature-policy", policy
    )


def test_enforce_serves_only_versions_signed_by_the_trusted_key(signed_registry):
    root, key = signed_registry
    server = _serve(root, key, "enforce")
    try:
        with httpclient.InferenceServerClient(server.url, network_timeout=30) as client:
            assert client.is_model_ready("good")
            index = {r["name"]: r for r in client.get_model_repository_index()}
            for name in ("otherkey", "unsigned", "forged"):
                assert not client.is_model_ready(name), name
                assert index[name]["state"] == "UNAVAILABLE"
                assert "refused by --signature-policy enforce" in index[name]["reason"]
            assert "Key mismatch" in index["otherkey"]["reason"]
            assert "unsigned:1 is not signed" in index["unsigned"]["reason"]
            assert "signature does not verify" in index["forged"]["reason"]
    finally:
        assert server.stop() == 0
    log = server.stderr_text()
    for name in ("otherkey", "unsigned", "forged"):
        assert f"{name}:1 refused: refused by --signature-policy enforce" in log


def test_warn_serves_them_with_a_log_line_and_a_metric(signed_registry):
    root, key = signed_registry
    server = _serve(root, key, "warn")
    try:
        with httpclient.InferenceServerClient(server.url, network_timeout=30) as client:
            for name in CASES:
                assert client.is_model_ready(name), name
        with urllib.request.urlopen(f"http://{server.url}/metrics", timeout=30) as resp:
            metrics = resp.read().decode()
    finally:
        assert server.stop() == 0
    for name in ("otherkey", "unsigned", "forged"):
        assert f'servekit_signature_failures_total{{model="{name}",policy="warn"}} 1.0' in metrics
    assert 'model="good"' not in metrics.split("servekit_signature_failures_total", 1)[1]
    log = server.stderr_text()
    assert "otherkey:1 served despite its signature (--signature-policy warn)" in log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--signature-policy", "warn"], "needs --trusted-key"),
        (["--signature-policy", "off", "--trusted-key", "KEY"], "ignored under"),
        (["--trusted-key", "/nonexistent/key.pem"], "does not exist"),
    ],
)
def test_bad_signature_options_are_refused(signed_registry, args, message):
    root, key = signed_registry
    args = [str(key) if a == "KEY" else a for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "servekit", "serve", "--port", "0", "--registry", str(root),
         "--model", "good@production", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.startswith("servekit: error: ")
