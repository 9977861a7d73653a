"""Signed registry versions: keys, sign, verify, and interop with the model_signing CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from servekit.errors import InvalidArgumentError
from servekit.registry import Registry
from servekit.signing import SignatureError, generate_keys, sign_path, verify_path
from servekit.signing.registry import BUNDLE_TAG, UnsignedError, sign_version, verify_version


def _model_signing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def setup(tmp_path: Path):
    keys, other = tmp_path / "keys", tmp_path / "other"
    generate_keys(keys)
    generate_keys(other)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07 an onnx model")
    reg = Registry(tmp_path / "reg")
    reg.register("digits", model, format="onnx")
    reg.register("digits", model, format="onnx")
    return reg, keys, other, model


def test_keys_generate_cli_writes_a_private_key_only_its_owner_reads(run_cli, tmp_path: Path):
    out = tmp_path / "keys"
    proc = run_cli("keys", "generate", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "public.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE((out / "private.pem").stat().st_mode) == 0o600
    again = run_cli("keys", "generate", "--out", str(out))
    assert again.returncode == 2 and "already holds" in again.stderr
    assert run_cli("keys", "generate", "--out", str(out), "--force").returncode == 0


def test_sign_and_verify_a_version_through_the_cli(run_cli, setup, tmp_path: Path):
    _, keys, other, _ = setup
    r = ["--registry", str(tmp_path / "reg")]
    signed = run_cli("registry", "sign", "digits:1", "--key", str(keys / "private.pem"), *r)
    assert signed.returncode == 0 and signed.stdout.startswith("signed digits:1 with key ")
    ok = run_cli("registry", "verify", "digits:1", "--key", str(keys / "public.pem"), *r)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: digits:1 signed by key"), ok.stderr
    wrong = run_cli("registry", "verify", "digits:1", "--key", str(other / "public.pem"), *r)
    assert wrong.returncode == 1 and "Key mismatch" in wrong.stdout
    unsigned = run_cli("registry", "verify", "digits:2", "--key", str(keys / "public.pem"), *r)
    assert unsigned.returncode == 1 and "digits:2: digits:2 is not signed" in unsigned.stdout


def test_a_tampered_signature_or_another_key_does_not_verify(setup):
    reg, keys, other, _ = setup
    sign_version(reg, "digits:1", keys / "private.pem")
    assert verify_version(reg, "digits:1", keys / "public.pem").ref == "digits:1"
    with pytest.raises(SignatureError, match="Key mismatch"):
        verify_version(reg, "digits:1", other / "public.pem")
    bundle = json.loads(reg.get("digits:1").tags[BUNDLE_TAG])
    sig = bundle["dsseEnvelope"]["signatures"][0]
    sig["sig"] = ("A" if sig["sig"][0] != "A" else "B") + sig["sig"][1:]
    reg.set_tags("digits:1", {BUNDLE_TAG: json.dumps(bundle)})
    with pytest.raises(SignatureError, match="signature does not verify"):
        verify_version(reg, "digits:1", keys / "public.pem")
    with pytest.raises(UnsignedError, match="digits:2 is not signed"):
        verify_version(reg, "digits:2", keys / "public.pem")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        sign_version(reg, "digits:2", keys / "missing.pem")


def test_servekit_signatures_verify_with_the_model_signing_cli(setup, tmp_path: Path):
    reg, keys, other, _ = setup
    sign_version(reg, "digits:1", keys / "private.pem")
    sig = tmp_path / "digits-1.sig"
    sig.write_text(reg.get("digits:1").tags[BUNDLE_TAG])
    artifact = str(reg.artifact_path("digits:1"))
    args = ["verify", "key", artifact, "--signature", str(sig)]
    ok = _model_signing(*args, "--public_key", str(keys / "public.pem"))
    assert ok.returncode == 0, ok.stderr + ok.stdout
    bad = _model_signing(*args, "--public_key", str(other / "public.pem"))
    assert bad.returncode != 0


def test_model_signing_cli_signatures_verify_in_servekit(setup, tmp_path: Path):
    reg, keys, other, model = setup
    directory = tmp_path / "model-dir"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(model.read_bytes())
    (directory / "parity.json").write_text("{}")
    for target in (model, directory):
        sig = tmp_path / f"{target.name}.sig"
        proc = _model_signing(
            "sign", "key", str(target), "--signature", str(sig),
            "--private_key", str(keys / "private.pem"),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr + proc.stdout
        verify_path(target, sig.read_text(), keys / "public.pem")
        with pytest.raises(SignatureError):
            verify_path(target, sig.read_text(), other / "public.pem")
    # Stored with a registry version (same content as model.onnx), it verifies there too.
    reg.set_tags("digits:2", {BUNDLE_TAG: (tmp_path / "model.onnx.sig").read_text()})
    assert verify_version(reg, "digits:2", keys / "public.pem").ref == "digits:2"
    (directory / "parity.json").write_text('{"tampered": true}')
    with pytest.raises(SignatureError, match="mismatch"):
        verify_path(directory, (tmp_path / "model-dir.sig").read_text(), keys / "public.pem")


def test_sign_path_refuses_a_missing_artifact(setup, tmp_path: Path):
    _, keys, _, _ = setup
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        sign_path(tmp_path / "nothing", keys / "private.pem")


def test_edge_bundles_carry_the_signature_and_verify_bundle_checks_it(
    run_cli, setup, tmp_path: Path
):
    reg, keys, other, _ = setup
    onnx = Path(__file__).parent.parent / "model_repo" / "digits" / "1" / "model.onnx"
    reg.register("edge", onnx, format="onnx")
    reg.register("edge", onnx, format="onnx")
    sign_version(reg, "edge:1", keys / "private.pem")
    r = ["--registry", str(tmp_path / "reg")]
    signed, unsigned = tmp_path / "signed.tar.gz", tmp_path / "unsigned.tar.gz"
    run_cli("export", "edge", "edge:1", "--out", str(signed), *r, check=True)
    run_cli("export", "edge", "edge:2", "--out", str(unsigned), *r, check=True)
    ok = run_cli("verify-bundle", str(signed), "--key", str(keys / "public.pem"))
    assert ok.returncode == 0, ok.stderr
    assert "signature verified" in ok.stdout
    wrong = run_cli("verify-bundle", str(signed), "--key", str(other / "public.pem"))
    assert wrong.returncode == 2 and "Key mismatch" in wrong.stderr
    none = run_cli("verify-bundle", str(unsigned), "--key", str(keys / "public.pem"))
    assert none.returncode == 2 and "carries no signature" in none.stderr
    # Without --key only the digests are checked.
    assert run_cli("verify-bundle", str(unsigned)).returncode == 0
