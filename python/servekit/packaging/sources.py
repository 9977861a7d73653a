"""The model being packaged, behind one interface for scikit-learn and PyTorch.

Output names (the contract every exported artifact keeps):

- scikit-learn classifier: ``label`` (INT64 class values) and ``probabilities`` (FP32, one
  column per class, in ``classes_`` order);
- scikit-learn regressor: ``prediction`` (FP32, shape (-1, 1));
- torch classifier: ``logits`` (FP32, one column per class; class i is index i);
- torch regressor: ``prediction``.

The input is always called ``input``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from servekit.errors import InvalidArgumentError, UnsupportedModelError

INPUT_NAME = "input"
Task = Literal["classifier", "regressor"]
Framework = Literal["sklearn", "torch"]

SUPPORTED = (
    "a fitted scikit-learn estimator or pipeline that skl2onnx converts, "
    "a torch.nn.Module, or a TorchScript module"
)


def is_torch_module(model: Any) -> bool:
    """True when ``model`` is a torch.nn.Module (torch is imported only if already loaded or
    installed)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return isinstance(model, torch.nn.Module)


def is_sklearn_estimator(model: Any) -> bool:
    """True when ``model`` is a scikit-learn estimator (has ``fit`` and ``get_params``)."""
    from sklearn.base import BaseEstimator

    return isinstance(model, BaseEstimator)


@dataclass
class Source:
    """A model with its framework, task and the names of its outputs."""

    model: Any
    framework: Framework
    task: Task
    #: class values (classifiers), index i <-> column i of the score output
    classes: np.ndarray | None

    @property
    def score_output(self) -> str:
        """Name of the output that parity checks compare (probabilities, logits, prediction)."""
        if self.task == "regressor":
            return "prediction"
        return "probabilities" if self.framework == "sklearn" else "logits"

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the source model; return its outputs keyed by the exported output names."""
        if self.framework == "sklearn":
            if self.task == "classifier":
                return {
                    "label": np.asarray(self.model.predict(x)).astype(np.int64),
                    "probabilities": np.asarray(self.model.predict_proba(x), dtype=np.float32),
                }
            pred = np.asarray(self.model.predict(x), dtype=np.float32).reshape(len(x), -1)
            return {"prediction": pred}
        return {self.score_output: torch_predict(self.model, x)}

    def predicted_classes(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Class values predicted from a score output (argmax mapped through ``classes``)."""
        scores = outputs[self.score_output]
        idx = np.argmax(scores, axis=1)
        return self.classes[idx] if self.classes is not None else idx


def torch_predict(module: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Run a torch module in eval mode without gradients on float32 ``x``; return float32."""
    import torch

    module.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out = module(torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])))
            outs.append(out.detach().float().numpy())
    result = np.concatenate(outs, axis=0)
    return result.reshape(len(x), -1) if result.ndim == 1 else result


def make_source(model: Any, x: np.ndarray, labels: np.ndarray | None) -> Source:
    """Wrap ``model`` as a Source, working out its task.

    scikit-learn: a classifier has ``predict_proba`` and integer ``classes_``. torch: integer
    labels mean classifier, float labels regressor; without labels a 2-D output with more than one
    column means classifier. Raises UnsupportedModelError for other model types or string class
    labels, InvalidArgumentError for an unfitted estimator or inputs the model rejects.
    """
    if is_torch_module(model):
        try:
            out = torch_predict(model, x[:2])
        except Exception as exc:  # the module's own forward rejected the inputs
            raise InvalidArgumentError(
                f"the torch model cannot run on sample inputs of shape {list(x.shape)}: {exc}"
            ) from None
        if labels is not None:
            task: Task = "classifier" if labels.dtype.kind in "biu" else "regressor"
        else:
            task = "classifier" if out.ndim == 2 and out.shape[1] > 1 else "regressor"
        classes = np.arange(out.shape[1]) if task == "classifier" else None
        if labels is not None and task == "classifier" and labels.max() >= out.shape[1]:
            raise InvalidArgumentError(
                f"label {int(labels.max())} is out of range for a model with {out.shape[1]} outputs"
            )
        return Source(model, "torch", task, classes)
    if is_sklearn_estimator(model):
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError:
            raise InvalidArgumentError(
                f"the {type(model).__name__} is not fitted: fit it before packaging"
            ) from None
        if x.ndim != 2:
            raise InvalidArgumentError(
                f"scikit-learn models take 2-D sample inputs, got shape {list(x.shape)}"
            )
        n_features = getattr(model, "n_features_in_", x.shape[1])
        if n_features != x.shape[1]:
            raise InvalidArgumentError(
                f"sample inputs have {x.shape[1]} features, the model expects {n_features}"
            )
        if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
            classes = np.asarray(model.classes_)
            if classes.dtype.kind not in "biu":
                raise UnsupportedModelError(
                    f"{type(model).__name__} has class labels of dtype {classes.dtype}; "
                    "servekit packages classifiers with integer class labels only"
                )
            return Source(model, "sklearn", "classifier", classes)
        return Source(model, "sklearn", "regressor", None)
    raise UnsupportedModelError(
        f"cannot package a {type(model).__qualname__}: expected {SUPPORTED}"
    )
