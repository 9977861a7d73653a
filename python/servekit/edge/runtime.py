"""Running an edge bundle with nothing but numpy and onnxruntime."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from servekit.edge.bundle import PAYLOAD, extract_verified
from servekit.errors import InvalidArgumentError
from servekit.signature import Signature, dtype_of


class EdgeModel:
    """A verified bundle loaded into an ONNX Runtime session.

    Attributes: ``signature`` (Signature), ``metadata`` (dict), ``reference_profile`` (the
    profile's JSON mapping, or None), ``manifest`` (dict).
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: Signature,
        metadata: dict[str, Any],
        reference_profile: dict[str, Any] | None,
        manifest: dict[str, Any],
    ) -> None:
        self.session = session
        self.signature = signature
        self.metadata = metadata
        self.reference_profile = reference_profile
        self.manifest = manifest

    def predict(self, inputs: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; return every output by name.

        ``inputs`` is one array (for a single-input model) or a mapping by input name. Raises
        InvalidArgumentError for a missing input, a wrong rank or fixed dimension.
        """
        if not isinstance(inputs, dict):
            if len(self.signature.inputs) != 1:
                raise InvalidArgumentError(
                    f"the model has inputs {self.signature.input_names}: pass a mapping"
                )
            inputs = {self.signature.inputs[0].name: inputs}
        feed = {}
        for spec in self.signature.inputs:
            if spec.name not in inputs:
                raise InvalidArgumentError(f"missing input {spec.name!r}")
            arr = np.ascontiguousarray(inputs[spec.name], dtype=dtype_of(spec.datatype))
            if arr.ndim != len(spec.shape) or any(
                d != -1 and d != a for d, a in zip(spec.shape, arr.shape, strict=True)
            ):
                raise InvalidArgumentError(
                    f"input {spec.name!r} has shape {list(arr.shape)}, expected {list(spec.shape)}"
                )
            feed[spec.name] = arr
        names = self.signature.output_names
        return dict(zip(names, self.session.run(names, feed), strict=True))


def load(
    bundle: str | os.PathLike[str],
    *,
    threads: int = 1,
    model_format: Literal["onnx", "ort"] = "onnx",
) -> EdgeModel:
    """Verify ``bundle`` (every file re-hashed) and load it; return an EdgeModel.

    ``threads`` sets ONNX Runtime's intra-op threads (explicit: oversubscription hurts small
    devices). ``model_format="ort"`` loads ``model.ort`` (bundles built with ``--ort``).
    Raises IntegrityError for a tampered bundle, InvalidArgumentError for an unreadable one or
    a missing ``.ort`` model.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if model_format == "ort":
        options.add_session_config_entry("session.load_model_format", "ORT")
    with tempfile.TemporaryDirectory(prefix="servekit-edge-") as tmp:
        manifest = extract_verified(bundle, Path(tmp))
        payload = Path(tmp) / PAYLOAD
        model = payload / f"model.{model_format}"
        if not model.is_file():
            raise InvalidArgumentError(f"bundle has no model.{model_format}")
        # The session reads the model bytes now, so the temporary directory can go.
        session = ort.InferenceSession(
            model.read_bytes(), options, providers=["CPUExecutionProvider"]
        )
        signature = Signature.from_dict(json.loads((payload / "signature.json").read_text()))
        metadata = json.loads((payload / "metadata.json").read_text())
        profile_path = payload / "reference_profile.json"
        profile = json.loads(profile_path.read_text()) if profile_path.is_file() else None
    return EdgeModel(session, signature, metadata, profile, manifest)
