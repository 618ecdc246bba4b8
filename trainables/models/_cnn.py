"""A small residual convolutional network for ``C x H x W`` images.

The blocks are ResNet's basic block (He et al. 2016, "Deep Residual Learning for Image
Recognition", Fig. 2 and the option-B 1x1 projection shortcut), with GroupNorm (Wu & He 2018)
in place of BatchNorm: an example's output then does not depend on the rest of its batch, so
evaluation in chunks and training per batch see the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (the largest count dividing ``channels``)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ResidualBlock(nn.Module):
    """``relu(skip(x) + norm(conv(relu(norm(conv(x))))))``; both convolutions 3x3, the first
    with ``stride``; the skip is a 1x1 projection when the shape changes, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), _norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.skip(x))


class ResidualCNN(nn.Module):
    """Stem conv to ``channels[0]``, one :class:`ResidualBlock` per entry of ``channels``
    (stride 2 from the second block on), global average pooling, a linear head.

    Any ``H x W`` works (a stride-2 block on a 1x1 map keeps it 1x1), so 8x8 digits do too.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            _norm(channels[0]),
            nn.ReLU(),
        )
        widths = [channels[0], *channels]
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(widths[i], widths[i + 1], stride=1 if i == 0 else 2)
                for i in range(len(channels))
            )
        )
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` floats -> ``(B, num_classes)`` logits."""
        features = self.blocks(self.stem(x))
        return self.head(features.mean(dim=(2, 3)))


def cnn(example_shape: Sequence[int], channels: Sequence[int], num_classes: int) -> ResidualCNN:
    """A :class:`ResidualCNN` for examples of shape ``(C, H, W)``."""
    return ResidualCNN(example_shape[0], channels, num_classes)
