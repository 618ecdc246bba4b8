from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FlatSequential(nn.Sequential):
    """An ``nn.Sequential`` that flattens each example first (``(B, 1, 8, 8) -> (B, 64)``).

    A subclass rather than an ``nn.Flatten`` layer, so the parameter names stay ``0.weight``,
    ``0.bias``, ``2.weight`` ... as in a plain ``Sequential`` (stored checkpoints still load).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1) if x.dim() > 2 else x)


def mlp(num_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """A multilayer perceptron ``num_features -> hidden... -> num_classes`` with ReLU.

    Inputs with more than one dimension per example are flattened first.
    """
    layers: list[nn.Module] = []
    width = num_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return FlatSequential(*layers)
