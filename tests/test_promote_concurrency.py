"""Compare-and-swap aliases: concurrent promotions from several processes, and --expect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from servekit.errors import InvalidArgumentError, PreconditionFailedError
from servekit.registry import REFUSED_ACTION, Registry

# Each worker judges its candidate's gates against production, reports that it has read the
# figures, and moves the alias only after the parent says "go": every worker has then decided
# on the same production version, so the compare-and-swap alone decides who wins.
PROMOTE_AFTER_BARRIER = """
import sys
from servekit.bench.promote import PromotionRaced, promote
from servekit.registry import Registry

class Barrier(Registry):
    def set_alias(self, *args, **kwargs):
        print("read", flush=True)
        sys.stdin.readline()
        return super().set_alias(*args, **kwargs)

root, ref = sys.argv[1], sys.argv[2]
try:
    result = promote(Barrier(root), ref, "production", ["accuracy >= production.accuracy"])
    print("won", result.event.previous_version, flush=True)
except PromotionRaced as exc:
    print("raced", exc, flush=True)
"""


def _registry(root: Path, candidates: int) -> Registry:
    reg = Registry(root)
    for i in range(candidates + 1):
        art = root.parent / f"m{i}.onnx"
        art.write_bytes(b"model %d" % i)
        reg.register("digits", art, format="onnx", metrics={"accuracy": 0.9 + i / 1000})
    reg.set_alias("digits:1", "production", reason="first release")
    return reg


def test_eight_processes_promoting_at_once_one_wins_and_every_attempt_is_audited(
    tmp_path: Path,
) -> None:
    reg = _registry(tmp_path / "reg", 8)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTE_AFTER_BARRIER, str(tmp_path / "reg"), f"digits:{v}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in range(2, 10)
    ]
    try:
        for p in procs:  # blocks until each worker has judged its gates
            assert p.stdout is not None and p.stdout.readline() == "read\n", p.stderr
        outcomes = [p.communicate("go\n", timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outcomes, strict=True):
        assert p.returncode == 0, err
    lines = [out.strip() for out, _ in outcomes]
    assert sorted(line.split()[0] for line in lines) == ["raced"] * 7 + ["won"]
    assert [line for line in lines if line.startswith("won")] == ["won 1"]
    for line in lines:
        if line.startswith("raced"):
            assert "digits@production moved: expected version 1, found version" in line

    history = [e for e in reg.history("digits") if e.alias == "production"]
    assert len(history) == 1 + 8  # the first release, then one event per attempt
    promoted = [e for e in history if e.action == "promote"]
    refused = [e for e in history if e.action == REFUSED_ACTION]
    assert len(promoted) == 1 and len(refused) == 7
    winner = promoted[0].new_version
    assert reg.get("digits@production").version == winner
    assert {e.new_version for e in refused} == set(range(2, 10)) - {winner}
    assert all(e.previous_version == winner for e in refused)


def test_set_alias_expect(tmp_path: Path) -> None:
    reg = _registry(tmp_path / "reg", 2)
    with pytest.raises(PreconditionFailedError, match="expected unset, found version 1"):
        reg.set_alias("digits:2", "production", expect=None)
    with pytest.raises(PreconditionFailedError, match="expected version 2, found version 1"):
        reg.set_alias("digits:2", "production", expect=2)
    assert reg.get("digits@production").version == 1
    assert reg.set_alias("digits:2", "production", expect=1).new_version == 2
    assert reg.set_alias("digits:3", "staging", expect=None).previous_version is None
    with pytest.raises(InvalidArgumentError, match="expect must be a version number"):
        reg.set_alias("digits:3", "production", expect="2")  # type: ignore[arg-type]
    actions = [e.action for e in reg.history("digits")]
    assert actions == ["set", REFUSED_ACTION, REFUSED_ACTION, "set", "set"]


def test_cli_alias_set_expect_refuses_with_exit_1(run_cli, tmp_path: Path) -> None:
    _registry(tmp_path / "reg", 2)
    r = ["--registry", str(tmp_path / "reg")]
    stale = run_cli("registry", "alias", "set", "digits:2", "production", "--expect", "2", *r)
    assert stale.returncode == 1
    assert stale.stderr.strip().startswith("servekit: refused: digits@production moved")
    assert len(stale.stderr.strip().splitlines()) == 1
    ok = run_cli("registry", "alias", "set", "digits:2", "production", "--expect", "1", *r)
    assert ok.returncode == 0 and ok.stdout.strip() == "digits@production: 1 -> 2"
    unset = run_cli("registry", "alias", "set", "digits:3", "canary", "--expect", "none", *r)
    assert unset.returncode == 0, unset.stderr
    bad = run_cli("registry", "alias", "set", "digits:3", "canary", "--expect", "latest", *r)
    assert bad.returncode == 2 and "--expect 'latest'" in bad.stderr
    history = run_cli("registry", "history", "digits", *r, check=True).stdout
    assert REFUSED_ACTION in history
