"""Hostile edge bundles: each attack is refused with a line naming the member, before writing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from servekit import edge, hashing
from servekit.edge.bundle import FORMAT, VERSION, extract_verified
from servekit.errors import IntegrityError

MODEL = b"\x08\x07onnx-model-bytes"


def _manifest(files: dict[str, bytes], digest: str | None = None) -> bytes:
    entries = sorted(
        ({"path": p, "size": len(d), "digest": hashing.digest_bytes(d)} for p, d in files.items()),
        key=lambda e: e["path"].encode(),
    )
    manifest_digest = digest or _tree_digest(files)
    return json.dumps(
        {"format": FORMAT, "version": VERSION, "algorithm": "blake3",
         "digest": manifest_digest, "files": entries}
    ).encode()  # fmt: skip


def _tree_digest(files: dict[str, bytes]) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for p, d in files.items():
            (Path(tmp) / p).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / p).write_bytes(d)
        return hashing.digest_tree(tmp).digest


def _write(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def _good_members(files: dict[str, bytes] | None = None) -> list:
    files = files or {"model.onnx": MODEL}
    return [("manifest.json", _manifest(files))] + [(f"payload/{p}", d) for p, d in files.items()]


def _special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_a_well_formed_bundle_verifies(tmp_path: Path) -> None:
    manifest = edge.verify_bundle(_write(tmp_path / "ok.tar.gz", _good_members()))
    assert [f["path"] for f in manifest["files"]] == ["model.onnx"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (_special("payload/link", tarfile.SYMTYPE, "/etc/passwd"), "'payload/link' is not a"),
        (_special("payload/hard", tarfile.LNKTYPE, "manifest.json"), "'payload/hard' is not a"),
        (_special("payload/dev", tarfile.CHRTYPE), "'payload/dev' is not a"),
        (_special("payload/fifo", tarfile.FIFOTYPE), "'payload/fifo' is not a"),
        (("/etc/evil", b"x"), "'/etc/evil' has an absolute"),
        (("payload/../../evil", b"x"), r"'payload/\.\./\.\./evil' leaves the bundle"),
        (("payload/model.onnx", MODEL), "'payload/model.onnx' appears twice"),
        (("payload/extra.txt", b"x"), "'payload/extra.txt' is not listed"),
    ],
)  # fmt: skip
def test_each_attack_is_refused_naming_the_member(tmp_path: Path, extra, message) -> None:
    bundle = _write(tmp_path / "bad.tar.gz", [*_good_members(), extra])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match=message):
        extract_verified(bundle, dest)
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_a_manifest_digest_that_is_not_its_files_digest_is_refused(tmp_path: Path) -> None:
    files = {"model.onnx": MODEL}
    forged = "blake3:" + "0" * 64
    bundle = _write(
        tmp_path / "forged.tar.gz",
        [("manifest.json", _manifest(files, digest=forged)), ("payload/model.onnx", MODEL)],
    )
    with pytest.raises(IntegrityError, match=r"the manifest digest .* is not the digest of its"):
        edge.verify_bundle(bundle)


def test_the_manifest_must_come_first(tmp_path: Path) -> None:
    members = _good_members()
    bundle = _write(tmp_path / "late.tar.gz", members[::-1])
    with pytest.raises(IntegrityError, match=r"first member must be manifest\.json"):
        edge.verify_bundle(bundle)


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    files = {f"f{i}.bin": b"%d" % i for i in range(5)}
    bundle = _write(tmp_path / "many.tar.gz", _good_members(files))
    with pytest.raises(IntegrityError, match=r"more than 3 members \(at 'payload/f2.bin'\)"):
        edge.verify_bundle(bundle, edge.Limits(max_members=3))


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read in chunks, so the bomb is never held in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def test_a_gzip_member_expanding_to_1_gib_is_refused_before_it_is_written(
    tmp_path: Path, run_cli
) -> None:
    size = 1 << 30
    bomb = tmp_path / "bomb.tar.gz"
    manifest = json.dumps(
        {"format": FORMAT, "version": VERSION, "algorithm": "blake3",
         "digest": "blake3:" + "0" * 64,
         "files": [{"path": "model.onnx", "size": size, "digest": "blake3:" + "0" * 64}]}
    ).encode()  # fmt: skip
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        info = tarfile.TarInfo("payload/model.onnx")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size), 1 << 20))
    assert bomb.stat().st_size < 8 << 20  # about 1000:1
    dest = tmp_path / "dest"
    dest.mkdir()
    limits = edge.Limits(max_member_bytes=256 << 20)
    with pytest.raises(IntegrityError, match=r"'payload/model.onnx' expands to 1073741824 bytes"):
        extract_verified(bomb, dest, limits)
    assert sorted(p.name for p in dest.rglob("*")) == ["manifest.json"]
    proc = run_cli("verify-bundle", str(bomb), "--max-member-bytes", str(256 << 20))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if "payload/model.onnx" in line
    ]
    total = edge.Limits(max_total_bytes=512 << 20)
    with pytest.raises(IntegrityError, match="members expand to more than 536870912 bytes"):
        edge.verify_bundle(bomb, total)
