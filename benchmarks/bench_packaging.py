"""Packaging benchmark: variant x (file size, ONNX Runtime latency p50 at batch 1 and 64 with one
intra-op thread, accuracy) for a weight-dominated torch MLP on digits (hidden 1024) and a small
CNN, each variant measured against the fp32 export in the same run.

Goals (ratios to fp32): int8-dynamic >= 2x faster at batch 64, size <= 30%, accuracy drop <= 0.5
pt; pruned (half the hidden units) >= 1.5x faster, drop <= 1.5 pt; distilled (a quarter of the
parameters) >= 2x faster, drop <= 2 pt. Writes benchmarks/results/packaging.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from _results import write_results
from servekit.packaging import KDConfig, package
from servekit.packaging.runtime import ort_session
from servekit.packaging.train import train_classifier

GOALS = {
    "int8-dynamic": {"speedup": 2.0, "size": 0.30, "drop": 0.005},
    "pruned": {"speedup": 1.5, "drop": 0.015},
    "distilled": {"speedup": 2.0, "drop": 0.02},
}


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.flat = torch.nn.Flatten()
        self.fc1 = torch.nn.Linear(64 * 4 * 4, 256)
        self.fc2 = torch.nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc2(torch.relu(self.fc1(self.flat(x))))


def train(net, x, y, epochs):
    torch.manual_seed(0)
    return train_classifier(net, x, y, epochs=epochs)


def p50_ms(path, x, repeats):
    session = ort_session(path, threads=1)
    for _ in range(10):
        session.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def accuracy(path, x, y):
    session = ort_session(path, threads=1)
    out = session.run(None, {"input": x})[0]
    return float(np.mean(out.argmax(axis=1) == y))


def bench_model(label, net, x_tr, y_tr, x_te, y_te, args):
    report = package(
        net,
        x_tr,
        labels=y_tr,
        name=label,
        progress=False,
        fine_tune_epochs=args.fine_tune,
        distillation=KDConfig(epochs=args.distill),
        student_width_fraction=0.25,
        variants="onnx,int8-dynamic,int8-static,fp16,pruned,distilled",
    )
    rows = []
    for v in report.variants:
        if v.model_file is None:
            rows.append({"model": label, "variant": v.kind, "status": v.status, "reason": v.reason})
            continue
        rows.append(
            {
                "model": label,
                "variant": v.kind,
                "status": v.status,
                "size_bytes": v.size_bytes,
                "p50_ms_b1": p50_ms(v.model_file, x_te[:1], args.repeats),
                "p50_ms_b64": p50_ms(v.model_file, x_te[:64], args.repeats),
                "accuracy": accuracy(v.model_file, x_te, y_te),
                "parameters": v.params.get("parameters") or v.params.get("student_parameters"),
            }
        )
    base = next(r for r in rows if r["variant"] == "fp32")
    for r in rows:
        if "size_bytes" not in r:
            continue
        r["size_ratio"] = r["size_bytes"] / base["size_bytes"]
        r["speedup_b64"] = base["p50_ms_b64"] / r["p50_ms_b64"]
        r["accuracy_drop"] = base["accuracy"] - r["accuracy"]
        goal = GOALS.get(r["variant"])
        if goal:
            r["goal_met"] = (
                r["speedup_b64"] >= goal["speedup"]
                and r["accuracy_drop"] <= goal["drop"]
                and r["size_ratio"] <= goal.get("size", 1.0)
            )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    args = parser.parse_args()
    args.repeats = 100 if args.quick else 500
    args.epochs = 15 if args.quick else 40
    args.fine_tune = 10 if args.quick else 30
    args.distill = 30 if args.quick else 80
    torch.set_num_threads(2)
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=0.3, random_state=0)
    mlp = train(
        torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)),
        x_tr,
        y_tr,
        args.epochs,
    )
    rows = bench_model("mlp-1024", mlp, x_tr, y_tr, x_te, y_te, args)
    img_tr, img_te = x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8)
    cnn = train(SmallCNN(), img_tr, y_tr, args.epochs)
    rows += bench_model("cnn", cnn, img_tr, y_tr, img_te, y_te, args)
    head = (
        f"{'model':9} {'variant':13} {'status':15} {'size':>9} {'x fp32':>6} {'b1 ms':>7} "
        f"{'b64 ms':>7} {'speedup':>7} {'acc':>6} {'drop':>6}  goal"
    )
    print(head)
    for r in rows:
        if "size_bytes" not in r:
            print(f"{r['model']:9} {r['variant']:13} {r['status']:15} {r['reason'][:60]}")
            continue
        goal = {True: "met", False: "MISSED"}.get(r.get("goal_met"), "-")
        print(
            f"{r['model']:9} {r['variant']:13} {r['status']:15} {r['size_bytes']:>9} "
            f"{r['size_ratio']:>6.2f} {r['p50_ms_b1']:>7.3f} {r['p50_ms_b64']:>7.3f} "
            f"{r['speedup_b64']:>6.2f}x {r['accuracy']:>6.3f} "
            f"{r['accuracy_drop'] * 100:>+5.1f}pt  {goal}"
        )
    out = Path(__file__).parent / "results" / "packaging.json"
    write_results(out, {"quick": args.quick, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
