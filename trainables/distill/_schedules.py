"""Schedules for the distillation temperature and alpha: pure functions of run progress.

Each is a small frozen dataclass, validated on construction and called with ``progress`` in
``[0, 1]``. The adaptive temperature (CTKD) is a module with a learnable parameter instead.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

SCHEDULE_KINDS = ("constant", "linear", "cosine", "step")


class Schedule(Protocol):
    def __call__(self, progress: float) -> float: ...


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, progress: float) -> float:
        return self.value


@dataclass(frozen=True)
class Linear:
    """``start + (end - start) * p``."""

    start: float
    end: float

    def __call__(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        return self.start + (self.end - self.start) * p


@dataclass(frozen=True)
class Cosine:
    """Cosine annealing from ``start`` to ``end``: ``end + (start - end) (1 + cos(pi p)) / 2``."""

    start: float
    end: float

    def __call__(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass(frozen=True)
class Step:
    """Piecewise constant: ``values[0]`` before ``boundaries[0]``, ``values[i]`` from
    ``boundaries[i - 1]`` on (boundaries are fractions of the run, increasing)."""

    boundaries: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"values needs one more entry than boundaries, got {len(self.values)} values "
                f"and {len(self.boundaries)} boundaries"
            )
        if list(self.boundaries) != sorted(self.boundaries) or any(
            not 0 < b < 1 for b in self.boundaries
        ):
            raise ValueError(f"boundaries must increase within (0, 1), got {list(self.boundaries)}")

    def __call__(self, progress: float) -> float:
        return self.values[bisect.bisect_right(self.boundaries, progress)]


def make_schedule(
    kind: str, *, start: float, end: float | None = None,
    boundaries: tuple[float, ...] = (), values: tuple[float, ...] = (),
) -> Schedule:  # fmt: skip
    """The schedule named ``kind``; ``step`` starts at ``start`` and takes ``values`` at
    ``boundaries``."""
    if kind == "constant":
        return Constant(start)
    if kind in ("linear", "cosine"):
        if end is None:
            raise ValueError(f"a {kind} schedule needs an end value")
        return (Linear if kind == "linear" else Cosine)(start, end)
    if kind == "step":
        return Step(tuple(boundaries), (start, *values))
    raise ValueError(f"schedule kind must be one of {', '.join(SCHEDULE_KINDS)}; got {kind!r}")


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.strength * grad, None


class CTKDTemperature(nn.Module):
    """Curriculum temperature for KD (Li et al., CTKD, AAAI 2023), global variant.

    ``tau = 1 + 20 * sigmoid(theta)`` is learned *adversarially*: a gradient-reversal layer
    flips (and scales by ``lambda``) the gradient reaching ``theta``, so the temperature moves
    to make distillation harder while the student minimises it. ``lambda`` rises from 0 to 1
    along a cosine over the first ``warmup`` fraction of the run (the paper's 0 -> -1 over 10
    epochs, the sign carried by the reversal).
    """

    def __init__(self, initial: float, warmup: float = 0.1) -> None:
        super().__init__()
        if not 1.0 < initial < 21.0:
            raise ValueError(f"CTKD's temperature lies in (1, 21); initial must too, got {initial}")
        if not 0.0 < warmup <= 1.0:
            raise ValueError(f"warmup must be in (0, 1], got {warmup}")
        s = (initial - 1.0) / 20.0
        self.theta = nn.Parameter(torch.tensor(math.log(s / (1.0 - s))))
        self.warmup = warmup

    def strength(self, progress: float) -> float:
        p = min(progress / self.warmup, 1.0)
        return 0.5 * (1.0 - math.cos(math.pi * p))

    def forward(self, progress: float) -> torch.Tensor:
        tau = 1.0 + 20.0 * torch.sigmoid(self.theta)
        return _GradientReversal.apply(tau, self.strength(progress))
