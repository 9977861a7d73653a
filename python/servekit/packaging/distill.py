"""Distillation of a torch or scikit-learn teacher into a smaller torch student."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from servekit.packaging.sources import Source
from servekit.packaging.train import KDConfig, train_kd

#: Hidden width of the default student when the teacher has no hidden layer to scale from
#: (tree ensembles, linear models).
FALLBACK_WIDTH = 32


def teacher_width(source: Source) -> int | None:
    """The widest hidden layer of the teacher: out_features of its Linear layers but the last
    (torch) or max(hidden_layer_sizes) (scikit-learn MLPs); None when there is none."""
    if source.framework == "torch":
        import torch

        widths = [m.out_features for m in source.model.modules() if isinstance(m, torch.nn.Linear)]
        return max(widths[:-1]) if len(widths) > 1 else None
    model = source.model
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    sizes = getattr(final, "hidden_layer_sizes", None)
    if sizes is None:
        return None
    return max(sizes) if isinstance(sizes, tuple | list) else int(sizes)


def default_student(in_shape: tuple[int, ...], outputs: int, hidden: int) -> Any:
    """An MLP: Flatten, Linear(in, hidden), ReLU, Linear(hidden, outputs)."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(math.prod(in_shape), hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, outputs),
    )


def _conv_parameters(source: Source) -> int | None:
    """Parameter count of a torch teacher that has convolutions; None otherwise."""
    if source.framework != "torch":
        return None
    import torch

    convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    if not any(isinstance(m, convs) for m in source.model.modules()):
        return None
    return sum(p.numel() for p in source.model.parameters())


def student_hidden_width(source: Source, fraction: float, in_features: int, outputs: int) -> int:
    """Hidden width of the default student (at least 4): ``fraction`` of the teacher's widest
    hidden layer for MLP teachers; for convolutional teachers, whose width says little about
    their capacity, the width that gives the student ``fraction`` of the teacher's parameters;
    FALLBACK_WIDTH when the teacher has no hidden layer."""
    conv_params = _conv_parameters(source)
    if conv_params is not None:
        return max(4, round(fraction * conv_params / (in_features + outputs + 1)))
    width = teacher_width(source)
    return FALLBACK_WIDTH if width is None else max(4, round(width * fraction))


def with_softmax(student: Any) -> Any:
    """Wrap a classifier student so it outputs probabilities (for scikit-learn teachers, whose
    served output is ``probabilities``)."""
    import torch

    return torch.nn.Sequential(student, torch.nn.Softmax(dim=1)).eval()


def distill(
    source: Source,
    x: np.ndarray,
    labels: np.ndarray | None,
    *,
    student: Any | None,
    width_fraction: float,
    config: KDConfig,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Train a student on the teacher's outputs over ``x``; return (student, parameters).

    For scikit-learn classifiers the returned module ends in a softmax, so it outputs
    probabilities like the teacher's ONNX export; torch students output logits.
    """
    import torch

    torch.manual_seed(config.seed)
    teacher_out = source.predict(x)[source.score_output]
    classifier = source.task == "classifier"
    outputs = teacher_out.shape[1]
    hidden = None
    if student is None:
        hidden = student_hidden_width(source, width_fraction, math.prod(x.shape[1:]), outputs)
        student = default_student(tuple(x.shape[1:]), outputs, hidden)
    train_labels = labels
    if classifier and labels is not None and source.classes is not None:
        train_labels = np.searchsorted(source.classes, labels)
    trained = train_kd(
        student,
        x,
        teacher_out,
        train_labels,
        classifier=classifier,
        teacher_is_probabilities=source.framework == "sklearn",
        config=config,
        desc="distillation",
        progress=progress,
    )
    if classifier and source.framework == "sklearn":
        trained = with_softmax(trained)
    params = {
        **config.to_dict(),
        "student": "default-mlp" if hidden is not None else type(student).__name__,
        "student_hidden": hidden,
        "student_parameters": int(sum(p.numel() for p in trained.parameters())),
    }
    return trained, params
