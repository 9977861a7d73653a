"""Hashing benchmark: servekit's Rust hashing against blake3-py and hashlib, in one run.

Measures, on a large file in the page cache and on a tree of many small files:
- digest_file BLAKE3 vs the ``blake3`` package (best of its single- and multi-thread modes),
- BLAKE3 vs ``hashlib.sha256``, and digest_file SHA-256 vs ``hashlib.sha256``,
- digest_tree vs a Python loop with hashlib over the same files.
Prints a table and writes JSON (default benchmarks/results/hashing.json).

    python benchmarks/bench_hashing.py [--quick] [--file-mib 1024] [--files 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from _results import write_results
from servekit import hashing


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_file(path: Path, mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(chunk)


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"d{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(size))


def hashlib_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def blake3_py(path: Path, threads: int) -> str:
    return blake3.blake3(max_threads=threads).update_mmap(path).hexdigest()


def python_tree(root: Path) -> str:
    """What a user writes without servekit: walk, sort, hash each file, hash the listing."""
    lines = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            lines.append(f"{rel}\0{p.stat().st_size}\0{hashlib_file(p)}\n")
    lines.sort()
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 MiB file, 2,000-file tree")
    ap.add_argument("--file-mib", type=int, default=None)
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hashing.json")
    args = ap.parse_args()
    file_mib = args.file_mib or (256 if args.quick else 1024)
    files = args.files or (2000 if args.quick else 10_000)
    file_size = 4096

    with tempfile.TemporaryDirectory(prefix="servekit-bench-hash-") as tmp:
        big = Path(tmp) / "big.bin"
        tree = Path(tmp) / "tree"
        make_file(big, file_mib)
        make_tree(tree, files, file_size)
        gb_file = file_mib * (1 << 20) / 1e9
        gb_tree = files * file_size / 1e9
        r = args.repeats
        secs = {
            "servekit blake3 file": best_seconds(lambda: hashing.digest_file(big), r),
            "blake3-py 1 thread": best_seconds(lambda: blake3_py(big, 1), r),
            "blake3-py multithread": best_seconds(lambda: blake3_py(big, blake3.blake3.AUTO), r),
            "servekit sha256 file": best_seconds(lambda: hashing.digest_file(big, "sha256"), r),
            "hashlib sha256 file": best_seconds(lambda: hashlib_file(big), r),
            "servekit blake3 tree": best_seconds(lambda: hashing.digest_tree(tree), r),
            "servekit sha256 tree": best_seconds(lambda: hashing.digest_tree(tree, "sha256"), r),
            "python hashlib tree": best_seconds(lambda: python_tree(tree), r),
        }

    rates = {k: (gb_tree if "tree" in k else gb_file) / v for k, v in secs.items()}
    best_b3py = max(rates["blake3-py 1 thread"], rates["blake3-py multithread"])
    ratios = {
        "blake3 file vs blake3-py best (goal >= 0.95)": rates["servekit blake3 file"] / best_b3py,
        "blake3 file vs hashlib sha256 (goal >= 2)": rates["servekit blake3 file"]
        / rates["hashlib sha256 file"],
        "sha256 file vs hashlib sha256 (goal >= 0.9)": rates["servekit sha256 file"]
        / rates["hashlib sha256 file"],
        "sha256 tree vs python hashlib loop (goal >= 2)": rates["servekit sha256 tree"]
        / rates["python hashlib tree"],
        "blake3 tree vs python hashlib loop": rates["servekit blake3 tree"]
        / rates["python hashlib tree"],
    }

    print(f"file: {file_mib} MiB in page cache; tree: {files} files x {file_size} B; best of {r}")
    print(f"{'measurement':<28}{'seconds':>10}{'GB/s':>9}")
    for k, v in secs.items():
        print(f"{k:<28}{v:>10.4f}{rates[k]:>9.2f}")
    print()
    for k, v in ratios.items():
        print(f"{k:<50}{v:>7.2f}x")

    write_results(
        args.out,
        {
            "file_mib": file_mib,
            "tree_files": files,
            "seconds": secs,
            "gb_per_s": rates,
            "ratios": ratios,
        },
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
