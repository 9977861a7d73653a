"""Regenerate the example Triton model repository in this directory, reproducibly.

Trains a scikit-learn MLP on the bundled digits dataset (fixed seed), exports it to ONNX and
writes two models with their config.pbtxt (dynamic batching, one CPU instance):

    digits/config.pbtxt       digits/1/model.onnx        fp32
    digits_int8/config.pbtxt  digits_int8/1/model.onnx   int8 dynamic quantization

Each version folder also gets ``reference_profile.json`` (the 64 inputs over the whole dataset
and the fp32 model's predicted labels), so ``servekit serve`` monitors drift out of the box.

Run: ``python model_repo/generate.py [--out model_repo]``; then
``servekit serve --model-repo model_repo``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from servekit.serving.config import ModelConfig, complete_config, onnx_signature, write_config
from servekit.telemetry import build_reference_profile

SEED = 0
HIDDEN = 128
MAX_BATCH_SIZE = 64


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """The digits inputs as the models take them (pixels / 16, float32) and the labels."""
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def train() -> tuple[MLPClassifier, float]:
    """Train the digits MLP; return it and its held-out accuracy."""
    x, y = inputs()
    split = 1500
    model = MLPClassifier((HIDDEN,), max_iter=300, random_state=SEED)
    model.fit(x[:split], y[:split])
    return model, float(model.score(x[split:], y[split:]))


def export(model: MLPClassifier) -> onnx.ModelProto:
    """skl2onnx export with outputs ``label`` (INT64) and ``probabilities`` (FP32 x 10)."""
    proto = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # skl2onnx may list the default domain twice, which ONNX Runtime's quantizer rejects.
    seen, unique = set(), []
    for opset in proto.opset_import:
        if opset.domain not in seen:
            seen.add(opset.domain)
            unique.append(opset)
    del proto.opset_import[:]
    proto.opset_import.extend(unique)
    proto.producer_name = "servekit model_repo/generate.py"
    return proto


def write_model(out: Path, name: str, model_file: Path) -> None:
    """Write ``out/name/config.pbtxt`` for an ONNX file already in ``out/name/1/``."""
    config = ModelConfig(max_batch_size=MAX_BATCH_SIZE)
    config.dynamic_batching.max_queue_delay_microseconds = 0
    config.instance_group.add(count=1, kind="KIND_CPU")
    config = complete_config(config, name, model_file, onnx_signature(model_file))
    write_config(config, out / name / "config.pbtxt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    model, accuracy = train()
    proto = export(model)
    for name in ("digits", "digits_int8"):
        (args.out / name / "1").mkdir(parents=True, exist_ok=True)
    fp32 = args.out / "digits" / "1" / "model.onnx"
    onnx.save(proto, str(fp32))
    int8 = args.out / "digits_int8" / "1" / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.onnx"
        onnx.save(proto, str(source))
        quantize_dynamic(str(source), str(int8), weight_type=QuantType.QInt8)
    write_model(args.out, "digits", fp32)
    write_model(args.out, "digits_int8", int8)
    x, _ = inputs()
    profile = build_reference_profile(x, model.predict(x).astype(np.int64))
    for name in ("digits", "digits_int8"):
        profile.save(args.out / name / "1" / "reference_profile.json")
    print(f"digits MLP: held-out accuracy {accuracy:.4f}; wrote {fp32} and {int8}")


if __name__ == "__main__":
    main()
