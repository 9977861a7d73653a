"""Hashing: known vectors, agreement with hashlib and the blake3 package, trees, errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import blake3
import numpy as np
import pytest

from servekit import hashing
from servekit.errors import InvalidArgumentError, NotFoundError, StorageError

# Official BLAKE3 test vectors: input is bytes i % 251 for i in range(length).
BLAKE3_VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1023: "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    2048: "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a",
    31744: "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47",
}
SIZES = [0, 1, 1023, 1024, 1025, 65535, 65537, 8 * 1024 * 1024 + 3]


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def test_sha256_known_vectors():
    assert hashing.digest_bytes(b"", "sha256") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert hashing.digest_bytes(b"abc", "sha256") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize(("length", "expected"), sorted(BLAKE3_VECTORS.items()))
def test_blake3_official_vectors(length, expected):
    assert hashing.digest_bytes(pattern(length)) == f"blake3:{expected}"


@pytest.mark.parametrize("size", SIZES)
def test_files_agree_with_reference_implementations(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert hashing.digest_file(path, "sha256") == "sha256:" + hashlib.sha256(data).hexdigest()
    assert hashing.digest_file(path) == "blake3:" + blake3.blake3(data).hexdigest()
    assert hashing.digest_bytes(data, "sha256") == hashing.digest_file(path, "sha256")


def test_digest_bytes_takes_any_contiguous_buffer():
    arr = np.arange(1000, dtype=np.float32)
    expected = "blake3:" + blake3.blake3(arr.tobytes()).hexdigest()
    assert hashing.digest_bytes(arr) == expected
    assert hashing.digest_bytes(memoryview(arr.tobytes())) == expected
    assert hashing.digest_bytes(bytearray(arr.tobytes())) == expected
    with pytest.raises(InvalidArgumentError, match="contiguous"):
        hashing.digest_bytes(np.arange(10, dtype=np.float32)[::2])


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


FILES = {"model.onnx": b"\x08\x07onnx", "meta/signature.json": b"{}", "meta/profile.json": b"[]"}


def test_tree_digest_ignores_order_mtime_and_location(tmp_path):
    a = make_tree(tmp_path / "a", FILES)
    b = make_tree(tmp_path / "elsewhere" / "b", dict(reversed(list(FILES.items()))))
    os.utime(b / "model.onnx", (0, 0))
    ta, tb = hashing.digest_tree(a), hashing.digest_tree(b)
    assert ta == tb
    assert [e.path for e in ta.manifest] == sorted(FILES)
    for e in ta.manifest:
        assert e.size == len(FILES[e.path])
        assert e.digest == "blake3:" + blake3.blake3(FILES[e.path]).hexdigest()


@pytest.mark.parametrize(
    "change",
    ["byte", "rename", "add-empty", "remove"],
)
def test_tree_digest_changes_with_any_change(tmp_path, change):
    root = make_tree(tmp_path / "t", FILES)
    before = hashing.digest_tree(root).digest
    if change == "byte":
        (root / "model.onnx").write_bytes(b"\x08\x07onnY")
    elif change == "rename":
        (root / "meta" / "profile.json").rename(root / "meta" / "profile2.json")
    elif change == "add-empty":
        (root / "empty").write_bytes(b"")
    else:
        (root / "meta" / "signature.json").unlink()
    assert hashing.digest_tree(root).digest != before


def test_removing_an_added_empty_file_restores_the_digest(tmp_path):
    root = make_tree(tmp_path / "t", FILES)
    before = hashing.digest_tree(root, "sha256").digest
    (root / "empty").write_bytes(b"")
    assert hashing.digest_tree(root, "sha256").digest != before
    (root / "empty").unlink()
    assert hashing.digest_tree(root, "sha256").digest == before


def test_verify_tree_reports_each_kind_of_difference(tmp_path):
    root = make_tree(tmp_path / "t", FILES)
    _, manifest = hashing.digest_tree(root)
    assert hashing.verify_tree(root, manifest).ok
    (root / "model.onnx").write_bytes(b"\x08\x07onnY")  # same size, other content
    (root / "meta" / "profile.json").unlink()
    (root / "extra.bin").write_bytes(b"x")
    report = hashing.verify_tree(root, manifest)
    assert report.changed == ["model.onnx"]
    assert report.missing == ["meta/profile.json"]
    assert report.unexpected == ["extra.bin"]
    assert not report.ok


def test_manifest_json_round_trip(tmp_path):
    root = make_tree(tmp_path / "t", FILES)
    _, manifest = hashing.digest_tree(root)
    text = hashing.manifest_to_json(manifest)
    assert hashing.manifest_from_json(text) == manifest
    assert hashing.verify_tree(root, json.loads(text)).ok


# --- errors ---------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(NotFoundError, match="nope"):
        hashing.digest_file(tmp_path / "nope")
    with pytest.raises(NotFoundError, match="nope"):
        hashing.digest_tree(tmp_path / "nope")


def test_directory_given_to_digest_file(tmp_path):
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        hashing.digest_file(tmp_path)


def test_file_given_to_digest_tree(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        hashing.digest_tree(tmp_path / "f")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    p = tmp_path / "secret"
    p.write_bytes(b"x")
    p.chmod(0)
    with pytest.raises(StorageError, match="secret"):
        hashing.digest_file(p)


def test_unreadable_file_is_a_storage_error_even_as_root(tmp_path):
    # A FIFO opened for reading would block; a directory entry that vanishes is the portable
    # unreadable case: digest a path whose parent is a file.
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(StorageError, match="f/child"):
        hashing.digest_file(tmp_path / "f" / "child")


def test_unknown_algorithm(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="'md5'"):
        hashing.digest_file(tmp_path / "f", "md5")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="'md5'"):
        hashing.digest_bytes(b"x", "md5")  # type: ignore[arg-type]


def test_symlink_inside_tree_is_refused(tmp_path):
    root = make_tree(tmp_path / "t", FILES)
    (root / "meta" / "link.onnx").symlink_to(root / "model.onnx")
    with pytest.raises(InvalidArgumentError, match=r"link\.onnx.*symbolic link"):
        hashing.digest_tree(root)


def test_special_file_inside_tree_is_refused(tmp_path):
    root = make_tree(tmp_path / "t", FILES)
    os.mkfifo(root / "pipe")
    with pytest.raises(InvalidArgumentError, match=r"pipe.*special file"):
        hashing.digest_tree(root)


def test_malformed_manifest(tmp_path):
    root = make_tree(tmp_path / "t", FILES)
    with pytest.raises(InvalidArgumentError, match="malformed digest"):
        hashing.verify_tree(root, [("model.onnx", 7, "sha256:00")])
    with pytest.raises(InvalidArgumentError, match="'digest'"):
        hashing.verify_tree(root, [{"path": "model.onnx", "size": 7}])
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        hashing.manifest_from_json("{")


def test_error_hierarchy_is_rooted_in_servekit_error():
    from servekit import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.ServekitError)
    assert issubclass(errors.QueueFullError, errors.UnavailableError)
    assert issubclass(errors.RequestTimeoutError, errors.UnavailableError)
