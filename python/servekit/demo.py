"""The end-to-end demo behind ``servekit demo``: every stage of servekit, offline.

train (torch MLP + scikit-learn model on digits) -> package variants with parity checks ->
register -> benchmark side by side -> promote through gates -> serve NAME@production ->
traffic like the training data, then shifted -> latency figures and detected drift -> stop.
Everything is written under the working directory.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError, ServekitError, UnavailableError

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes that ``--quick`` shrinks."""

    hidden: int
    epochs: int
    fine_tune_epochs: int
    bench_seconds: float
    traffic_rows: int

    @classmethod
    def make(cls, quick: bool) -> DemoSettings:
        if quick:
            return cls(
                hidden=128, epochs=15, fine_tune_epochs=3, bench_seconds=0.3, traffic_rows=400
            )
        return cls(hidden=256, epochs=40, fine_tune_epochs=10, bench_seconds=1.5, traffic_rows=1000)


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order].astype(np.int64)
    return x[:1300], y[:1300], x[1300:], y[1300:]


def train_torch_mlp(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int) -> Any:
    """A 64-hidden-hidden-10 MLP trained on ``x``, ``y`` (fixed seed)."""
    import torch
    from torch import nn

    from servekit.packaging.train import train_classifier

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )
    return train_classifier(model, x, y, epochs=epochs)


def _wait_for_server(proc: subprocess.Popen[str], log: Path, timeout: float) -> str:
    """The ``host:port`` the server prints once listening; UnavailableError (with the end of
    its ``log``) if it exits or does not listen within ``timeout`` seconds."""
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.match(r"servekit: serving on http://(\S+)", line)
            if m and not found:
                found.append(m.group(1))
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            tail = log.read_text().strip().splitlines()[-3:]
            raise UnavailableError("the demo server did not start: " + " | ".join(tail))
    return found[0]


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _send(client: Any, model: str, rows: np.ndarray, batch: int = 8) -> np.ndarray:
    import tritonclient.http as httpclient

    preds = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        inp = httpclient.InferInput("input", list(chunk.shape), "FP32")
        inp.set_data_from_numpy(chunk, binary_data=True)
        out = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("logits")])
        preds.append(out.as_numpy("logits").argmax(axis=1))
    return np.concatenate(preds)


def _describe_drift(drift: dict[str, Any]) -> str:
    drifted = [f["name"] for f in drift.get("features", []) if f.get("drifted")]
    verdict = "DATASET DRIFT" if drift.get("dataset_drift") else "no dataset drift"
    shown = ", ".join(drifted[:8]) + (" ..." if len(drifted) > 8 else "")
    return f"{verdict}; {len(drifted)} drifted features{': ' + shown if drifted else ''}"


def run_demo(
    workdir: Path, *, quick: bool = False, progress: bool = False, say: Say = print
) -> dict[str, Any]:
    """Run every stage under ``workdir`` and return a summary (refs, promoted version, drift).
    ``progress``: training, calibration and benchmark bars on stderr when it is a terminal.

    Raises InvalidArgumentError when torch is missing (``pip install 'servekit[all]'``) and the
    stages' own errors.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InvalidArgumentError(
            "the demo trains a PyTorch model: pip install 'servekit[all]'"
        ) from None
    from sklearn.linear_model import LogisticRegression

    from servekit.bench.promote import PromotionRefused, promote
    from servekit.bench.run import benchmark
    from servekit.packaging import package
    from servekit.registry import Registry

    s = DemoSettings.make(quick)
    workdir.mkdir(parents=True, exist_ok=True)
    reg = Registry(workdir / "registry")
    x_train, y_train, x_test, y_test = _digits()
    np.save(workdir / "test_inputs.npy", x_test)
    np.save(workdir / "test_labels.npy", y_test)

    say("\n[1/6] Train: a PyTorch MLP and a scikit-learn logistic regression on digits")
    mlp = train_torch_mlp(x_train, y_train, s.hidden, s.epochs)
    sk = LogisticRegression(max_iter=500).fit(x_train, y_train)
    say(f"      sklearn accuracy on held-out rows: {sk.score(x_test, y_test):.3f}")

    say(
        "\n[2/6] Package: ONNX export plus int8, pruned and distilled variants, each checked "
        "against the source model, then registered with lineage"
    )
    report = package(
        mlp,
        x_train,
        labels=y_train,
        variants=["onnx", "int8-dynamic", "pruned", "distilled"],
        name="digits",
        registry=reg,
        out_dir=workdir / "packages",
        fine_tune_epochs=s.fine_tune_epochs,
        progress=progress,
    )
    say(str(report))
    sk_report = package(
        sk,
        x_train,
        labels=y_train,
        variants=["onnx", "int8-dynamic"],
        name="digits-sklearn",
        registry=reg,
        out_dir=workdir / "packages",
        progress=progress,
    )
    for v in sk_report.variants:
        say(f"      digits-sklearn {v.kind}: {v.status}" + (f" ({v.reason})" if v.reason else ""))
    fp32 = report.variant("fp32").ref
    if fp32 is None:
        raise ServekitError("the fp32 export failed its parity check; see the table above")
    _alias_variants(reg, report, say)
    _write_model_repo(reg, report, workdir / "model_repo", say)

    say("\n[3/6] Benchmark: every variant on the same machine, interleaved, logged as metrics")
    bench = benchmark(
        reg,
        "digits",
        x_test,
        labels=y_test,
        lineage=fp32,
        batch_sizes=[1, 64],
        seconds_per_batch_size=s.bench_seconds,
        rounds=3,
        progress=progress,
        say=lambda _m: None,
    )
    say(bench.table())
    paths = bench.write(workdir / "bench")
    say("      report: " + ", ".join(p.name for p in paths) + f" in {workdir / 'bench'}")

    say(
        "\n[4/6] Promote: the fp32 export goes to production, then the fastest variant that keeps "
        "accuracy, shadowed on live traffic first, is promoted through gates"
    )
    promote(reg, fp32, "production", ["accuracy >= 0.9"], reason="initial release")
    base = reg.get(fp32).metrics
    candidates = [
        r for r in bench.results if r.ref != fp32 and (r.metric or 0) >= base["accuracy"] - 0.01
    ]
    candidates.sort(key=lambda r: r.batches[-1].p50_ms)
    gates = [
        "accuracy >= production.accuracy - 0.01",
        "latency_p50_ms_b64 <= production.latency_p50_ms_b64",
    ]
    promoted = fp32
    for cand in candidates:
        try:
            result = _shadow_then_promote(workdir, reg, cand.ref, gates, x_test, say)
        except PromotionRefused as refused:
            say(refused.result.table())
            say(f"      {cand.ref} refused; trying the next candidate")
            continue
        say(result.table())
        promoted = cand.ref
        break
    say(f"      digits@production -> {promoted} ({reg.get(promoted).variant})")

    say("\n[5/6] Serve digits@production over KServe v2 and send traffic with tritonclient")
    summary = _serve_and_watch(workdir, reg.root, x_test, s.traffic_rows, say)
    summary.update({"fp32": fp32, "promoted": promoted, "workdir": str(workdir)})
    say("\n[6/6] Done. Everything is under " + str(workdir))
    return summary


def _alias_variants(reg: Any, report: Any, say: Say) -> None:
    """Point an alias named after each variant at the version this run registered, so the
    README's examples name ``digits@fp32`` etc. instead of version numbers (a second run in
    the same directory registers new numbers and moves the aliases)."""
    moved = []
    for v in report.variants:
        if v.ref is not None:
            reg.set_alias(v.ref, v.kind, reason="servekit demo")
            moved.append(f"digits@{v.kind} -> {v.ref}")
    say("      aliases: " + ", ".join(moved))


def _write_model_repo(reg: Any, report: Any, out: Path, say: Say) -> None:
    """A Triton model repository of the fp32 and int8 exports (``digits``, ``digits_int8``),
    each with its reference profile, for the README's ``--model-repo`` examples."""
    from servekit.serving.export import export_triton

    written = []
    for kind, name in (("fp32", "digits"), ("int8-dynamic", "digits_int8")):
        ref = report.variant(kind).ref
        if ref is not None:
            shutil.rmtree(out / name, ignore_errors=True)  # a previous run's version folder
            export_triton(reg, ref, out, name=name)
            written.append(name)
    say(f"      model repository: {out} ({', '.join(written)})")


def _shadow_then_promote(
    workdir: Path, reg: Any, ref: str, gates: list[str], x: np.ndarray, say: Say
) -> Any:
    """Serve production with ``ref`` as its shadow, send traffic, then promote ``ref`` on the
    offline ``gates`` plus gates on the live figures. Returns the PromotionResult; raises
    PromotionRefused (recorded in the audit log with the live figures)."""
    import tritonclient.http as httpclient

    from servekit.bench.live import read_live
    from servekit.bench.promote import promote

    reg.set_alias(ref, "candidate", reason="shadowed before promotion")
    cmd = [
        sys.executable, "-m", "servekit", "serve", "--registry", str(reg.root),
        "--model", "digits@production", "--shadow", "digits@candidate", "--port", "0",
    ]  # fmt: skip
    log_path = workdir / "shadow.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        host = _wait_for_server(proc, log_path, timeout=120)
        client = httpclient.InferenceServerClient(host)
        rows = x[np.random.default_rng(2).integers(0, len(x), 200)]
        _send(client, "digits", rows)
        requests = -(-len(rows) // 8)
        deadline = time.monotonic() + 30
        while True:  # the shadow compares off the response path: wait for the last copies
            (c,) = _get_json(f"http://{host}/v2/models/digits/candidates")["candidates"]
            if c["requests"] + c["errors"] + c["dropped"] >= requests:
                break
            if time.monotonic() > deadline:
                raise UnavailableError(f"the shadow of {ref} did not finish within 30 s")
            time.sleep(0.05)
        live = read_live(f"http://{host}", "digits", reg.get(ref).version)
        lat = c["latency_ms"]
        say(
            f"      shadow {ref} on {c['requests']} live requests: agreement "
            f"{c['agreement']:.4f}, p99 {lat['candidate']['p99']:.3f} ms (production "
            f"{lat['production']['p99']:.3f} ms), {c['errors']} errors, {c['dropped']} dropped"
        )
        live_gates = ["live.agreement >= 0.95", f"live.requests >= {requests}", "live.errors == 0"]
        return promote(reg, ref, "production", [*gates, *live_gates], live=live)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _serve_and_watch(
    workdir: Path, registry_root: Path, x: np.ndarray, rows: int, say: Say
) -> dict[str, Any]:
    import tritonclient.http as httpclient

    cmd = [
        sys.executable,
        "-m",
        "servekit",
        "serve",
        "--registry",
        str(registry_root),
        "--model",
        "digits@production",
        "--port",
        "0",
        "--drift-window-rows",
        str(rows),
    ]
    log_path = workdir / "server.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        host = _wait_for_server(proc, log_path, timeout=120)
        base = f"http://{host}"
        say(f"      server: {base} (log: {workdir / 'server.log'})")
        client = httpclient.InferenceServerClient(host)
        rng = np.random.default_rng(1)
        normal = x[rng.integers(0, len(x), rows)]
        t0 = time.perf_counter()
        _send(client, "digits", normal)
        elapsed = time.perf_counter() - t0
        drift_before = _get_json(f"{base}/v2/models/digits/drift")
        say(
            f"      {rows} rows like the training data in {elapsed:.2f} s: "
            + _describe_drift(drift_before)
        )
        shifted = np.clip(x[rng.integers(0, len(x), rows)] + 0.35, 0, None).astype(np.float32)
        _send(client, "digits", shifted)
        drift_after = _get_json(f"{base}/v2/models/digits/drift")
        say(f"      {rows} shifted rows (+0.35 on every pixel): " + _describe_drift(drift_after))
        stats = client.get_inference_statistics("digits")["model_stats"]
        for m in stats:
            ok = m["inference_stats"]["success"]
            if ok["count"]:
                say(
                    f"      version {m['version']}: {ok['count']} requests, mean "
                    f"{ok['ns'] / ok['count'] / 1e6:.3f} ms, {m['inference_count']} rows in "
                    f"{m['execution_count']} model runs"
                )
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        quantiles = re.findall(
            r'servekit_latency_quantile_seconds\{kind="request",[^}]*quantile="([\d.]+)"[^}]*\} '
            r"(\S+)",
            metrics,
        )
        if quantiles:
            say(
                "      request latency in the server (sketch, 1% accuracy): "
                + ", ".join(f"p{float(q) * 100:g} {float(v) * 1e3:.3f} ms" for q, v in quantiles)
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(timeout=10)
        log.close()
    say(f"      server stopped (exit status {code})")
    return {
        "drift_before": drift_before.get("dataset_drift"),
        "drift_after": drift_after.get("dataset_drift"),
        "server_exit": code,
    }
