"""``model_warmup``, with Triton's semantics: every warm-up sample runs (``count`` times, at
least once) on a version's freshly loaded model before the version is installed, so it is
not READY, and takes no request, until its warm-up has run. A sample that cannot be built or
fails to run fails the version, with a message naming model_warmup and the sample.

A sample's inputs are named model inputs, each with ``data_type`` and ``dims`` (without the
batch dimension; ``batch_size`` rows are added when the model batches) and one source:

* ``zero_data``: zeros (empty strings for BYTES);
* ``random_data``: uniform values from a generator seeded per sample (numbers in [0, 1) for
  floats, [0, 100) for integers; 8 random letters per BYTES element);
* ``input_data_file``: a file in the model's ``warmup/`` directory holding the tensor's raw
  row-major bytes (BYTES: each element as a 4-byte little-endian length and its bytes, as
  Triton reads it). The name must be one plain file name and the file must be exactly the
  tensor's size.

Warm-up runs go straight to the model: they are not counted in the statistics or telemetry.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError, ServekitError
from servekit.serving.config import ModelConfig, kserve_type
from servekit.serving.paths import contained, plain_component
from servekit.serving.runners import Runner
from servekit.signature import dtype_of

log = logging.getLogger("servekit.serving")

#: The directory of a model holding its warm-up data files (Triton's layout).
WARMUP_DIR = "warmup"


def run_warmup(runner: Runner, config: ModelConfig, model_dir: Path, version: int) -> None:
    """Run every warm-up sample of ``config`` on ``runner``; return None when all ran.

    Raises InvalidArgumentError naming the sample when one cannot be built (unknown input,
    bad batch size, missing or mis-sized data file, a file name that is not plain) and
    re-raises, with the sample named, the model's own error when a run fails.
    """
    for sample in config.model_warmup:
        where = f"model '{config.name}': model_warmup '{sample.name}'"
        inputs = _sample_inputs(sample, config, model_dir, where)
        runs = max(sample.count, 1)
        for _ in range(runs):
            try:
                runner.run(inputs)
            except ServekitError as exc:
                raise type(exc)(f"{where} failed: {exc}") from None
        log.info("model '%s' version %d: warm-up '%s' ran %d time(s)", config.name, version,
                 sample.name, runs)  # fmt: skip


def _sample_inputs(
    sample: Any, config: ModelConfig, model_dir: Path, where: str
) -> dict[str, np.ndarray]:
    batched = config.max_batch_size > 0
    if batched and not 1 <= sample.batch_size <= config.max_batch_size:
        raise InvalidArgumentError(
            f"{where}: batch_size {sample.batch_size} must be in 1..max_batch_size "
            f"({config.max_batch_size})"
        )
    if not batched and sample.batch_size not in (0, 1):
        raise InvalidArgumentError(
            f"{where}: batch_size {sample.batch_size}, but the model does not batch (use 1)"
        )
    model_inputs = {t.name: t for t in config.input}
    if not sample.inputs:
        raise InvalidArgumentError(f"{where}: it has no inputs")
    out = {}
    seed = zlib.crc32(sample.name.encode())
    for name in sorted(sample.inputs):
        spec = sample.inputs[name]
        if name not in model_inputs:
            raise InvalidArgumentError(
                f"{where}: input '{name}' is not an input of the model ({sorted(model_inputs)})"
            )
        datatype = kserve_type(spec.data_type)
        dims = [int(d) for d in spec.dims]
        if any(d < 0 for d in dims):
            raise InvalidArgumentError(f"{where}: input '{name}' dims {dims} must be fixed")
        shape = (sample.batch_size, *dims) if batched else tuple(dims)
        arr = _data(spec, datatype, shape, model_dir, seed, f"{where}: input '{name}'")
        target = model_inputs[name]
        if target.HasField("reshape"):
            lead = shape[:1] if batched else ()
            arr = arr.reshape((*lead, *target.reshape.shape))
        out[name] = arr
    return out


def _data(
    spec: Any, datatype: str, shape: tuple[int, ...], model_dir: Path, seed: int, where: str
) -> np.ndarray:
    source = spec.WhichOneof("input_data_type")
    count = int(np.prod(shape, dtype=np.int64))
    if datatype == "BYTES":
        if source == "input_data_file":
            raw = _read(spec.input_data_file, model_dir, where)
            return _bytes_elements(raw, count, where).reshape(shape)
        rng = np.random.default_rng(seed)
        letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
        fill = [
            b"" if source == "zero_data" else rng.choice(letters, 8).tobytes() for _ in range(count)
        ]
        return np.array(fill, dtype=object).reshape(shape)
    dtype = dtype_of(datatype)
    if source == "zero_data":
        return np.zeros(shape, dtype)
    if source == "random_data":
        rng = np.random.default_rng(seed)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(dtype)
        if dtype.kind in "iu":
            return rng.integers(0, 100, shape).astype(dtype)
        return rng.random(shape).astype(dtype)
    if source == "input_data_file":
        raw = _read(spec.input_data_file, model_dir, where)
        if len(raw) != count * dtype.itemsize:
            raise InvalidArgumentError(
                f"{where}: input_data_file '{spec.input_data_file}' holds {len(raw)} bytes, "
                f"the tensor {list(shape)} of {datatype} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    raise InvalidArgumentError(f"{where}: give one of zero_data, random_data or input_data_file")


def _read(filename: str, model_dir: Path, where: str) -> bytes:
    plain_component(filename, f"{where}: input_data_file")
    path = model_dir / WARMUP_DIR / filename
    if not path.is_file():
        raise InvalidArgumentError(f"{where}: input_data_file {path} does not exist")
    contained(path, model_dir, f"{where}: input_data_file")
    return path.read_bytes()


def _bytes_elements(raw: bytes, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise InvalidArgumentError(f"{where}: input_data_file ends before element {i}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidArgumentError(f"{where}: input_data_file ends inside element {i}")
        out[i] = raw[offset : offset + length]
        offset += length
    if offset != len(raw):
        raise InvalidArgumentError(
            f"{where}: input_data_file has {len(raw) - offset} bytes after {count} elements"
        )
    return out
