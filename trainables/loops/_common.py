from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import DataConfig, OptimConfig
from trainables.data import Splits, load_splits


def load_data(cfg: DataConfig) -> Splits:
    return load_splits(
        kind=cfg.kind,
        path=cfg.path,
        label_column=cfg.label_column,
        difficulty_column=cfg.difficulty_column,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        split_seed=cfg.split_seed,
        standardize=cfg.standardize,
        n_bits=cfg.n_bits,
        k=cfg.k,
        train_size=cfg.train_size,
        holdout_size=cfg.holdout_size,
        label_noise=cfg.label_noise,
    )


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.kind == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    logits: torch.Tensor  # (n, classes)
    correct: torch.Tensor  # (n,) bool


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> Evaluation:
    """Accuracy and mean cross-entropy of ``model`` on one split (one host sync); with
    ``y=None`` only the logits (accuracy and loss are NaN)."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(chunk) for chunk in torch.split(x, 65536)])
    model.train(was_training)
    if y is None:
        return Evaluation(math.nan, math.nan, logits, torch.zeros(0, dtype=torch.bool))
    correct = logits.argmax(dim=1) == y
    loss = F.cross_entropy(logits, y)
    return Evaluation(
        accuracy=correct.float().mean().item(), loss=loss.item(), logits=logits, correct=correct
    )


def as_tensors(*arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    # np.array(copy) because memory-mapped Arrow buffers are read-only.
    return tuple(torch.from_numpy(np.array(a)) for a in arrays)


def should_evaluate(step: int, every: int, total: int) -> bool:
    """Evaluate every ``every`` steps and always after the last step (``step`` is 1-based)."""
    return step % every == 0 or step == total
