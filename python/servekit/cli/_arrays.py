"""Reading the ``.npy`` arrays that commands take as inputs, labels or predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servekit.errors import InvalidArgumentError, NotFoundError


def load_array(path: Path, what: str) -> np.ndarray:
    """The array stored at ``path`` (pickled objects refused). Raises NotFoundError for a
    missing file and InvalidArgumentError, naming the file and ``what`` it should hold, for a
    file that is not a numpy ``.npy`` array."""
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or directory")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidArgumentError(f"{path}: not a numpy .npy {what} array: {exc}") from None
