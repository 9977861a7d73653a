"""Edge bundles: build, verify and run a self-contained, digest-checked ONNX model archive.

Loading a bundle (:func:`load`) imports only numpy and onnxruntime besides servekit's own
core: no torch, scikit-learn, onnx or web framework.
"""

from servekit.edge.bundle import build_bundle, verify_bundle
from servekit.edge.extract import Limits
from servekit.edge.runtime import EdgeModel, load

__all__ = ["EdgeModel", "Limits", "build_bundle", "load", "verify_bundle"]
