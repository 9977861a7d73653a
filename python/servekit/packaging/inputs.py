"""Validation of the sample inputs and labels given to packaging, and the held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError

#: Fewest sample rows packaging accepts: at least one row to train/calibrate and one held out.
MIN_ROWS = 2


def as_sample_array(inputs: Any) -> np.ndarray:
    """Return ``inputs`` as a C-contiguous float32 array of shape (rows, ...).

    Raises InvalidArgumentError when it is not numeric, has fewer than 2 dimensions or fewer than
    2 rows, or holds NaN or infinite values (the message gives the count and first position).
    """
    try:
        arr = np.asarray(inputs)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"sample inputs are not an array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise InvalidArgumentError(
            f"sample inputs must be numeric (float or integer), got dtype {arr.dtype}"
        )
    if arr.ndim < 2:
        raise InvalidArgumentError(
            f"sample inputs must have shape (rows, features...), got shape {arr.shape}"
        )
    if arr.shape[0] < MIN_ROWS:
        raise InvalidArgumentError(
            f"sample inputs need at least {MIN_ROWS} rows (some are held out for parity checks), "
            f"got {arr.shape[0]}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidArgumentError(
            f"sample inputs hold {int(bad.sum())} NaN or infinite values (first at index {first}); "
            "they are used for calibration and training, clean them first"
        )
    return arr


def check_labels(labels: Any, rows: int) -> np.ndarray:
    """Return ``labels`` as a 1-D array with one value per sample row.

    Integer labels mean classification, float labels regression. Raises InvalidArgumentError for
    a wrong length, a non-numeric dtype or non-finite values.
    """
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != rows:
        raise InvalidArgumentError(
            f"labels must be 1-D with one value per sample row ({rows}), got shape {y.shape}"
        )
    if y.dtype.kind not in "biuf":
        raise InvalidArgumentError(f"labels must be numeric, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise InvalidArgumentError("labels hold NaN or infinite values")
    return y


def holdout_split(rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, held-out indices): a seeded shuffle, ``fraction`` held out.

    At least one row lands on each side. Raises InvalidArgumentError for a fraction outside
    (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise InvalidArgumentError(f"holdout fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(rows)
    n_hold = min(rows - 1, max(1, round(rows * fraction)))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])
