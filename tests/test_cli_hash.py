"""``servekit hash`` and ``--version`` through the real command line."""

from __future__ import annotations

import json

import blake3

from servekit import __version__


def test_version(run_cli):
    proc = run_cli("--version", check=True)
    assert __version__ in proc.stdout


def test_hash_file_prints_digest_and_path(run_cli, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"weights")
    proc = run_cli("hash", "m.onnx", check=True)
    assert proc.stdout == f"blake3:{blake3.blake3(b'weights').hexdigest()}  m.onnx\n"
    proc = run_cli("hash", "m.onnx", "--algorithm", "sha256", check=True)
    assert proc.stdout.startswith("sha256:")


def test_hash_tree_and_manifest(run_cli, tmp_path):
    (tmp_path / "model" / "1").mkdir(parents=True)
    (tmp_path / "model" / "1" / "model.onnx").write_bytes(b"abc")
    (tmp_path / "model" / "config.pbtxt").write_bytes(b"name: 'm'")
    proc = run_cli("hash", "model", check=True)
    digest, path = proc.stdout.split()
    assert digest.startswith("blake3:") and path == "model"
    manifest = json.loads(run_cli("hash", "model", "--manifest", check=True).stdout)
    assert [e["path"] for e in manifest] == ["1/model.onnx", "config.pbtxt"]
    assert manifest[0] == {
        "path": "1/model.onnx",
        "size": 3,
        "digest": "blake3:" + blake3.blake3(b"abc").hexdigest(),
    }


def test_bad_input_prints_one_line_and_exits_2(run_cli, tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_bytes(b"a")
    (tmp_path / "tree" / "link").symlink_to(tmp_path / "tree" / "a")
    (tmp_path / "f").write_bytes(b"x")
    for args, needle in [
        (("hash", "missing.onnx"), "missing.onnx"),
        (("hash", "f", "--algorithm", "md5"), "'md5'"),
        (("hash", "tree"), "symbolic link"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 2, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], proc.stderr
        assert proc.stdout == ""
