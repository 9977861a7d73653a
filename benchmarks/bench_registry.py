"""Registry benchmark: lookups, listings and registration against baselines, in one run.

Measures:
- ``Registry.get`` of ``name:VERSION`` and ``name@ALIAS`` references on a registry holding
  100,000 versions across 1,000 models (goal >= 50,000 lookups/s on one thread); baseline: the
  same row fetched with Python's sqlite3 module (no decoding, no resolution);
- ``list_versions`` of a model with 10,000 versions and ``history`` of 10,000 alias moves
  (goal: each < 0.1 s);
- registering a 100 MiB file (copy while hashing, fsync, index row) vs ``shutil.copyfile`` plus
  ``hashlib.sha256`` of the same file (goal <= 1.2x). That baseline never writes to the disk
  (its copy is deleted before write-back), while the registry must fsync and keep its copy; a
  second baseline fsyncs and keeps its copies too, so the table separates what durability costs
  on this disk from what servekit adds;
- signing and verifying (OpenSSF model-signing, local P-256 key) the stored 100 MiB artifact
  vs hashing it once with ``hashlib.sha256`` (model-signing's own hash; goal: verify <= 1.2x),
  medians of ``--repeats`` runs with their spread.
The registry is built through the normal ``Registry.register`` API (one transaction per
version); the setup time is reported. Prints a table and writes JSON
(default benchmarks/results/registry.json).

    python benchmarks/bench_registry.py [--quick] [--models 1000] [--versions-per-model 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _results import write_results
from servekit.registry import Registry
from servekit.signature import Signature, TensorSpec

SIGNATURE = Signature(
    (TensorSpec("input", "FP32", (-1, 64)),), (TensorSpec("probabilities", "FP32", (-1, 10)),)
)


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def build(reg: Registry, tmp: Path, models: int, per_model: int, wide: int, moves: int) -> float:
    """Fill the registry through the public API; return the seconds it took."""
    artifacts = []
    for i in range(16):  # a few distinct small artifacts, as many versions share exports
        p = tmp / f"artifact{i}.onnx"
        p.write_bytes(os.urandom(4096))
        artifacts.append(p)
    t0 = time.perf_counter()
    for m in range(models):
        for v in range(per_model):
            reg.register(
                f"model-{m:04d}",
                artifacts[(m + v) % len(artifacts)],
                format="onnx",
                signature=SIGNATURE,
                metrics={"accuracy": 0.9 + v / 10_000, "latency_p50_ms": 0.4},
                tags={"team": "ml"},
                variant="fp32" if v % 2 else "int8-dynamic",
                metadata={"opset": 17},
            )
        reg.set_alias(f"model-{m:04d}:{per_model}", "production", actor="bench")
    for v in range(wide):
        reg.register("wide", artifacts[v % len(artifacts)], format="onnx", signature=SIGNATURE)
    for i in range(moves):
        reg.set_alias(f"wide:{i % 50 + 1}", "production", actor="bench", reason=f"move {i}")
    return time.perf_counter() - t0


def lookups(reg: Registry, refs: list[str]) -> float:
    t0 = time.perf_counter()
    for r in refs:
        reg.get(r)
    return time.perf_counter() - t0


def sqlite_baseline(db: Path, keys: list[tuple[str, int]]) -> float:
    con = sqlite3.connect(db)
    sql = (
        "SELECT v.* FROM versions v JOIN models m ON m.id = v.model_id "
        "WHERE m.name = ? AND v.version = ?"
    )
    t0 = time.perf_counter()
    for k in keys:
        con.execute(sql, k).fetchone()
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed


def register_big(reg: Registry, src: Path, algorithm: str, counter: list[int]) -> None:
    # New content each call (first 8 bytes), so every call stores and fsyncs a new blob.
    counter[0] += 1
    with open(src, "r+b") as fh:
        fh.write(counter[0].to_bytes(8, "little"))
    reg.register("big", src, format="onnx", algorithm=algorithm)


def copy_and_sha256(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(src, "rb") as fh:
        hashlib.file_digest(fh, "sha256").hexdigest()
    dst.unlink()


def durable_copy_and_sha256(src: Path, dst_dir: Path, counter: list[int]) -> None:
    """The baseline with the registry's durability: the copy is fsynced and kept."""
    counter[0] += 1
    dst = dst_dir / f"copy{counter[0]}.onnx"
    shutil.copyfile(src, dst)
    with open(src, "rb") as fh:
        hashlib.file_digest(fh, "sha256").hexdigest()
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def median_and_spread(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median, fastest and slowest of ``repeats`` timed calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def sha256_once(path: Path) -> None:
    with open(path, "rb") as fh:
        hashlib.file_digest(fh, "sha256").hexdigest()


def signing_timings(reg: Registry, tmp: Path, repeats: int) -> dict[str, tuple[float, ...]]:
    """Sign and verify the latest ``big`` version against hashing its artifact once."""
    from servekit.signing import generate_keys, sign_path, verify_path

    private, public = generate_keys(tmp / "keys")
    artifact = reg.artifact_path("big", verify=False)
    bundle = sign_path(artifact, private)
    return {
        "hashlib.sha256 once (baseline)": median_and_spread(lambda: sha256_once(artifact), repeats),
        "sign (model-signing)": median_and_spread(lambda: sign_path(artifact, private), repeats),
        "verify (model-signing)": median_and_spread(
            lambda: verify_path(artifact, bundle, public), repeats
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 versions, 100k lookups")
    ap.add_argument("--models", type=int, default=None)
    ap.add_argument("--versions-per-model", type=int, default=100)
    ap.add_argument("--lookups", type=int, default=None)
    ap.add_argument("--file-mib", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "registry.json")
    args = ap.parse_args()
    models = args.models or (200 if args.quick else 1000)
    per_model = args.versions_per_model
    n_lookups = args.lookups or (100_000 if args.quick else 300_000)
    wide = moves = 10_000

    with tempfile.TemporaryDirectory(prefix="servekit-bench-registry-") as tmpdir:
        tmp = Path(tmpdir)
        reg = Registry(tmp / "registry")
        setup_s = build(reg, tmp, models, per_model, wide, moves)
        total_versions = models * per_model + wide

        rng = random.Random(0)
        keys = [(f"model-{rng.randrange(models):04d}", rng.randrange(1, per_model + 1))]
        keys += [(f"model-{rng.randrange(models):04d}", rng.randrange(1, per_model + 1))
                 for _ in range(n_lookups - 1)]  # fmt: skip
        by_version = [f"{n}:{v}" for n, v in keys]
        by_alias = [f"{n}@production" for n, _ in keys]
        lookup_s = {
            "get name:VERSION": lookups(reg, by_version),
            "get name@ALIAS": lookups(reg, by_alias),
            "sqlite3 row fetch (baseline)": sqlite_baseline(reg.root / "index.db", keys),
        }
        lookup_rate = {k: n_lookups / v for k, v in lookup_s.items()}

        listing_s = {
            "list_versions (10,000 versions)": best_seconds(
                lambda: reg.list_versions("wide"), args.repeats
            ),
            "history (10,000 alias moves)": best_seconds(lambda: reg.history("wide"), args.repeats),
        }
        assert len(reg.list_versions("wide")) == wide and len(reg.history("wide")) == moves

        src = tmp / "big.onnx"
        chunk = os.urandom(1 << 20)
        with open(src, "wb") as fh:
            for _ in range(args.file_mib):
                fh.write(chunk)
        counter = [0]
        runs: dict[str, Callable[[], object]] = {
            "copyfile + hashlib.sha256 (baseline)": lambda: copy_and_sha256(src, tmp / "copy.onnx"),
            "copyfile + sha256 + fsync, kept (baseline)": lambda: durable_copy_and_sha256(
                src, tmp, counter
            ),
            "register blake3": lambda: register_big(reg, src, "blake3", counter),
            "register sha256": lambda: register_big(reg, src, "sha256", counter),
        }
        # Start from no dirty pages (the build above wrote many), then interleave the three
        # so that background load on the machine affects each alike; keep each one's best.
        os.sync()
        register_s = {k: float("inf") for k in runs}
        for _ in range(args.repeats):
            for k, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                register_s[k] = min(register_s[k], time.perf_counter() - t0)
        sign_s = signing_timings(reg, tmp, args.repeats)

    base = register_s["copyfile + hashlib.sha256 (baseline)"]
    goals = {
        "lookups/s name:VERSION (goal >= 50,000)": lookup_rate["get name:VERSION"],
        "lookups/s name@ALIAS (goal >= 50,000)": lookup_rate["get name@ALIAS"],
        "list_versions 10,000 s (goal < 0.1)": listing_s["list_versions (10,000 versions)"],
        "history 10,000 s (goal < 0.1)": listing_s["history (10,000 alias moves)"],
        "register blake3 / baseline (goal <= 1.2)": register_s["register blake3"] / base,
        "register sha256 / baseline": register_s["register sha256"] / base,
        "register blake3 / baseline with fsync": register_s["register blake3"]
        / register_s["copyfile + sha256 + fsync, kept (baseline)"],
        "verify / sha256 once (goal <= 1.2)": sign_s["verify (model-signing)"][0]
        / sign_s["hashlib.sha256 once (baseline)"][0],
        "sign / sha256 once": sign_s["sign (model-signing)"][0]
        / sign_s["hashlib.sha256 once (baseline)"][0],
    }

    print(
        f"registry: {total_versions:,} versions across {models + 1:,} models, "
        f"{moves:,} alias moves; built through Registry.register in {setup_s:.1f} s "
        f"({(total_versions + models + moves) / setup_s:,.0f} writes/s)"
    )
    print(f"\n{'lookups (' + format(n_lookups, ',') + ')':<40}{'seconds':>10}{'per s':>12}")
    for k, v in lookup_s.items():
        print(f"{k:<40}{v:>10.3f}{lookup_rate[k]:>12,.0f}")
    print(f"\n{'listing':<40}{'seconds':>10}")
    for k, v in listing_s.items():
        print(f"{k:<40}{v:>10.4f}")
    print(f"\n{f'{args.file_mib} MiB artifact, best of {args.repeats}':<46}{'seconds':>10}")
    for k, v in register_s.items():
        print(f"{k:<46}{v:>10.3f}")
    print(f"\n{f'sign/verify {args.file_mib} MiB, {args.repeats} runs':<46}"
          f"{'median s':>10}{'min':>8}{'max':>8}")  # fmt: skip
    for k, (med, lo, hi) in sign_s.items():
        print(f"{k:<46}{med:>10.3f}{lo:>8.3f}{hi:>8.3f}")
    print()
    for k, v in goals.items():
        print(f"{k:<45}{v:>12,.3f}")

    write_results(
        args.out,
        {
            "versions": total_versions,
            "models": models + 1,
            "setup_seconds": setup_s,
            "lookups": n_lookups,
            "lookup_seconds": lookup_s,
            "lookups_per_second": lookup_rate,
            "listing_seconds": listing_s,
            "file_mib": args.file_mib,
            "register_seconds": register_s,
            "sign_verify_seconds_median_min_max": sign_s,
            "goals": goals,
        },
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
