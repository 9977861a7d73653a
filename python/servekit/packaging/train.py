"""Training loops: knowledge distillation (shared by distillation and post-pruning
fine-tuning) and plain supervised training of a torch classifier.

Hinton et al. (2015): for classifiers the loss is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)``
(the cross-entropy term only when labels exist; without labels alpha is 1). Regressors use
``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from servekit.progress import progress_bar

#: torch threads used for training: explicit, since torch's default (all cores) next to another
#: busy process slows it 20-30x on small machines.
TRAIN_THREADS = 2


@dataclass(frozen=True)
class KDConfig:
    """Training parameters: epochs, temperature T, weight alpha of the soft term, Adam lr."""

    epochs: int = 40
    temperature: float = 4.0
    alpha: float = 0.5
    lr: float = 2e-3
    batch_size: int = 64
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping of the parameters."""
        return dict(self.__dict__)


def train_kd(
    student: Any,
    x: np.ndarray,
    teacher_scores: np.ndarray,
    labels: np.ndarray | None,
    *,
    classifier: bool,
    teacher_is_probabilities: bool,
    config: KDConfig,
    desc: str,
    progress: bool = True,
) -> Any:
    """Train ``student`` (in place) to match ``teacher_scores`` (and ``labels``); return it.

    ``teacher_scores`` are logits, or probabilities when ``teacher_is_probabilities`` (a
    scikit-learn teacher's predict_proba: their logs serve as logits). Returns the student in
    eval mode.
    """
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(TRAIN_THREADS)
    torch.manual_seed(config.seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = torch.from_numpy(np.ascontiguousarray(teacher_scores, dtype=np.float32))
    if classifier and teacher_is_probabilities:
        t = torch.log(t.clamp_min(1e-7))
    yt = None
    if labels is not None:
        yt = torch.from_numpy(labels.astype(np.int64 if classifier else np.float32))
    alpha = config.alpha if yt is not None else 1.0
    temp = config.temperature
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    student.train()
    for _ in progress_bar(range(config.epochs), progress=progress, desc=desc):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), config.batch_size):
            idx = order[start : start + config.batch_size]
            out = student(xt[idx])
            if classifier:
                soft = F.kl_div(
                    F.log_softmax(out / temp, dim=1),
                    F.log_softmax(t[idx] / temp, dim=1),
                    reduction="batchmean",
                    log_target=True,
                ) * (temp * temp)
                hard = F.cross_entropy(out, yt[idx]) if yt is not None else 0.0
            else:
                out = out.reshape(len(idx), -1)
                soft = F.mse_loss(out, t[idx].reshape(len(idx), -1))
                hard = F.mse_loss(out[:, 0], yt[idx]) if yt is not None else 0.0
            loss = alpha * soft + (1.0 - alpha) * hard
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return student.eval()


def train_classifier(
    module: Any,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> Any:
    """Train a torch classifier (in place) on ``x`` and integer ``labels`` with Adam and
    cross-entropy, in shuffled mini-batches, on TRAIN_THREADS threads; return it in eval mode."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(TRAIN_THREADS)
    torch.manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(module(xt[idx]), yt[idx]).backward()
            optimizer.step()
    return module.eval()
