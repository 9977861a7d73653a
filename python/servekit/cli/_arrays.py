"""Reading the ``.npy`` arrays that commands take as inputs, labels or predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servekit.errors import InvalidArgumentError, NotFoundError

#: The first bytes of every ``.npy`` file (numpy's format, version independent).
NPY_MAGIC = b"\x93NUMPY"


def load_array(path: Path, what: str) -> np.ndarray:
    """The array stored at ``path`` (pickled objects refused). Raises NotFoundError for a
    missing file and InvalidArgumentError, naming the file and ``what`` it should hold, for a
    file that is not a numpy ``.npy`` array."""
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or directory")
    with open(path, "rb") as fh:
        if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise InvalidArgumentError(f"{path}: not a numpy .npy {what} array (no .npy header)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise InvalidArgumentError(
                f"{path}: holds Python objects ({what} must be a numeric .npy array; "
                "pickled objects are never loaded)"
            ) from None
        raise InvalidArgumentError(f"{path}: not a numpy .npy {what} array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InvalidArgumentError(f"{path}: not a numpy .npy {what} array: {exc}") from None
