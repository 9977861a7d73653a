"""Parity always measures: every variant gets a numeric check, or is not-verified."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits

from servekit.packaging import package
from servekit.packaging.parity import DEFAULT_TOLERANCES, Tolerance, compare

torch.set_num_threads(1)


def _regression_outputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(150.0, 60.0, size=(200, 1))


def test_a_wrong_regressor_variant_without_labels_fails():
    source = _regression_outputs()
    wrong = source[::-1].copy()  # plausible values, wrong rows
    result = compare(
        "int8-dynamic", "y", source, wrong, DEFAULT_TOLERANCES["int8-dynamic"],
        classes=None, labels=None,
    )  # fmt: skip
    assert result.status == "failed" and not result.passed
    (check,) = [c for c in result.checks if c.name == "max_abs_err/spread"]
    assert check.value == pytest.approx(result.max_abs_diff / source.std())
    assert check.threshold == 0.25 and not check.passed
    assert result.failures == [f"max_abs_err/spread {check.value:.4g} > 0.25"]


def test_a_close_regressor_variant_passes_with_its_checks_listed():
    source = _regression_outputs()
    close = source + 0.05 * source.std() * np.sin(np.arange(len(source)))[:, None]
    result = compare(
        "int8-dynamic", "y", source, close, DEFAULT_TOLERANCES["int8-dynamic"],
        classes=None, labels=None,
    )  # fmt: skip
    assert result.status == "passed"
    data = result.to_dict()
    assert data["status"] == "passed" and data["passed"] is True
    assert [c["name"] for c in data["checks"]] == ["max_abs_err/spread"]
    assert data["checks"][0]["value"] == pytest.approx(0.05, rel=0.01)


def test_a_variant_with_no_check_that_could_run_is_not_verified():
    source = _regression_outputs()
    result = compare("pruned", "y", source, source * 3, Tolerance(), classes=None, labels=None)
    assert result.status == "not-verified" and not result.passed and result.checks == []
    # A classifier-only limit cannot run on a regressor.
    only_agreement = Tolerance(min_agreement=0.9)
    result = compare("pruned", "y", source, source, only_agreement, classes=None, labels=None)
    assert result.status == "not-verified"


def test_a_classifier_without_labels_gets_agreement_and_a_score_error_bound():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 10))
    classes = np.arange(10)
    tol = DEFAULT_TOLERANCES["int8-dynamic"]
    same_top = logits + 0.01 * rng.normal(size=logits.shape)
    ok = compare("int8-dynamic", "logits", logits, same_top, tol, classes=classes, labels=None)
    assert ok.status == "passed"
    assert {c.name for c in ok.checks} == {"top1_agreement", "mean_score_err/spread"}
    # Same argmax everywhere, scores blown up: agreement alone would pass it.
    inflated = logits * 5
    bad = compare("int8-dynamic", "logits", logits, inflated, tol, classes=classes, labels=None)
    assert bad.top1_agreement == 1.0 and bad.status == "failed"
    assert bad.failures[0].startswith("mean_score_err/spread ")


class _Regressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_a_packaged_regressor_without_labels_fails_a_broken_variant(tmp_path):
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    target = ((y - y.mean()) / y.std()).astype(np.float32)
    torch.manual_seed(0)
    net = _Regressor()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(target)[:, None]
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(xt), yt).backward()
        opt.step()
    report = package(
        net.eval(), x, variants="onnx,pruned", name="diabetes", out_dir=tmp_path,
        prune_amount=0.95, fine_tune_epochs=0, progress=False,
    )  # fmt: skip
    fp32, pruned = report.variant("fp32"), report.variant("pruned")
    assert fp32.status == "passed", report.table()
    assert pruned.status == "failed", report.table()
    saved = json.loads((pruned.directory / "parity.json").read_text())
    assert saved["status"] == "failed" and saved["metric"] is None
    names = {c["name"]: c for c in saved["checks"]}
    assert names["max_abs_err/spread"]["passed"] is False
    assert names["max_abs_err/spread"]["threshold"] == 0.5


def test_digits_int8_without_labels_is_checked_on_scores_too(tmp_path):
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
    report = package(
        net.eval(), x[:400], variants="onnx,int8-dynamic", name="d", out_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    int8 = report.variant("int8-dynamic")
    assert int8.status == "passed", report.table()
    assert {c.name for c in int8.parity.checks} == {"top1_agreement", "mean_score_err/spread"}
