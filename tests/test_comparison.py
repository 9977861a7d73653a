"""Live figures of a candidate (servekit.serving.comparison): recording the rows of several
requests at once gives exactly the figures of recording them one by one."""

from __future__ import annotations

import numpy as np

from servekit.serving.comparison import Comparison


def _answers(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    scores = rng.random((rows, 10), dtype=np.float32)
    return {"label": scores.argmax(axis=1).astype(np.int64), "probabilities": scores}


def _figures(c: Comparison) -> dict:
    out = c.to_dict()
    del out["since"], out["seconds"]
    return out


def test_a_batch_of_requests_records_what_they_record_one_by_one():
    rng = np.random.default_rng(0)
    rows = [1, 3, 2, 1, 4]
    candidate = [_answers(rng, n) for n in rows]
    production = [_answers(rng, n) for n in rows]
    for p in production[::2]:  # some rows agree exactly
        p["probabilities"][0] = 0.0
    latencies = [1_000 * (i + 1) for i in range(len(rows))]
    one_by_one, batched = Comparison(), Comparison()
    for c, p, ns in zip(candidate, production, latencies, strict=True):
        one_by_one.compared(c, p, 7_000, ns)

    def joined(answers: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {n: np.concatenate([a[n] for a in answers]) for n in answers[0]}

    batched.compared_batch(joined(candidate), joined(production), 7_000, latencies)
    assert _figures(batched) == _figures(one_by_one)
    assert batched.requests == 5 and batched.rows == sum(rows)


def test_mismatched_outputs_count_one_error_per_request_of_the_batch():
    rng = np.random.default_rng(1)
    figures = Comparison()
    production = _answers(rng, 3)
    candidate = {"label": production["label"], "probabilities": np.zeros((3, 4), np.float32)}
    figures.compared_batch(candidate, production, 1_000, [10, 20, 30])
    assert (figures.requests, figures.mismatches) == (0, 3)
    assert figures.errors == {"OutputMismatch": 3}
    assert figures.to_dict()["latency_ms"]["candidate"]["p50"] is None
