from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(num_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """A multilayer perceptron ``num_features -> hidden... -> num_classes`` with ReLU."""
    layers: list[nn.Module] = []
    width = num_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
