from __future__ import annotations

import torch

from trainables.config import DataConfig, OptimConfig
from trainables.data import Splits, load_splits


def load_data(cfg: DataConfig) -> Splits:
    return load_splits(cfg)


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.kind == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def should_evaluate(step: int, every: int, total: int) -> bool:
    """Evaluate every ``every`` steps and always after the last step (``step`` is 1-based)."""
    return step % every == 0 or step == total
