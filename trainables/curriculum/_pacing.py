"""Pacing functions: the fraction ``c(p)`` in ``(0, 1]`` of the (ordered) training data that is
available at fraction ``p`` in ``[0, 1]`` of the run.

Expressed in fractions of the run, so a schedule keeps its meaning when the step budget
changes. Each is a small frozen dataclass validated on construction and called with ``p``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol

from trainables.config import PacingKind, kinds

PACING_KINDS = kinds(PacingKind)
WU_SHAPES = ("linear", "quadratic", "root", "exp", "log", "step")  # the kinds WuPacing draws
assert set(WU_SHAPES) <= set(PACING_KINDS)


class Pacing(Protocol):
    def __call__(self, progress: float) -> float: ...


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")


@dataclass(frozen=True)
class ConstantPacing:
    """All data from the start: ``c(p) = 1`` (no curriculum)."""

    def __call__(self, progress: float) -> float:
        return 1.0


@dataclass(frozen=True)
class WuPacing:
    """The pacing family of Wu, Dyer & Neyshabur (2021), "When do curricula work?".

    With ``b = start`` (fraction available at the beginning), ``a = full_at`` (fraction of the
    run at which all data is available) and ``x = p / a``:

    - ``linear``: ``b + (1 - b) x``; ``quadratic``: ``b + (1 - b) x^2``;
      ``root``: ``b + (1 - b) x^(1/2)``
    - ``exp``: ``b + (1 - b) (e^(10 x) - 1) / (e^10 - 1)``
    - ``log``: ``b + (1 - b) (1 + 0.1 log(x + e^-10))``
    - ``step``: ``b + (1 - b) floor(k x) / k`` with ``k = num_steps`` equal jumps (``k = 1``
      is their single step ``bN + N floor(t / aT)``).

    All clipped to ``[b, 1]``.
    """

    shape: str
    start: float
    full_at: float
    num_steps: int = 1

    def __post_init__(self) -> None:
        if self.shape not in WU_SHAPES:
            raise ValueError(f"shape must be one of {', '.join(WU_SHAPES)}; got {self.shape!r}")
        _check_fraction("start", self.start)
        _check_fraction("full_at", self.full_at)
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")

    def __call__(self, progress: float) -> float:
        b, x = self.start, max(progress, 0.0) / self.full_at
        if self.shape == "linear":
            g = x
        elif self.shape == "quadratic":
            g = x * x
        elif self.shape == "root":
            g = math.sqrt(x)
        elif self.shape == "exp":
            g = math.expm1(10.0 * min(x, 1.0)) / math.expm1(10.0)
        elif self.shape == "log":
            g = 1.0 + 0.1 * math.log(x + math.exp(-10.0))
        else:  # step
            g = math.floor(self.num_steps * x + 1e-12) / self.num_steps
        return min(1.0, max(b, b + (1.0 - b) * g))


@dataclass(frozen=True)
class CompetencePacing:
    """Competence-based pacing (Platanios et al. 2019), root-p form.

    ``c(p) = min(1, (x (1 - c0^q) + c0^q)^(1/q))`` with ``x = p / full_at`` and ``q = power``;
    ``q = 2`` is their square-root competence ``sqrt(t (1 - c0^2) / T + c0^2)``, ``q = 1``
    linear competence.
    """

    start: float  # c0
    full_at: float  # T, as a fraction of the run
    power: float = 2.0

    def __post_init__(self) -> None:
        _check_fraction("start", self.start)
        _check_fraction("full_at", self.full_at)
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")

    def __call__(self, progress: float) -> float:
        x = max(progress, 0.0) / self.full_at
        c0q = self.start**self.power
        return min(1.0, (x * (1.0 - c0q) + c0q) ** (1.0 / self.power))


@dataclass(frozen=True)
class ExponentialStepPacing:
    """Fixed exponential pacing (Hacohen & Weinshall 2019):
    ``min(start * inc^floor(p / step_length), 1)``.

    Their defaults are ``start = 0.04``, ``inc = 1.9`` and a step length of 100 iterations;
    here the step length is a fraction of the run.
    """

    start: float = 0.04
    inc: float = 1.9
    step_length: float = 0.05

    def __post_init__(self) -> None:
        _check_fraction("start", self.start)
        _check_fraction("step_length", self.step_length)
        if self.inc <= 1.0:
            raise ValueError(f"inc must be > 1, got {self.inc}")

    def __call__(self, progress: float) -> float:
        jumps = math.floor(max(progress, 0.0) / self.step_length + 1e-12)
        return min(1.0, self.start * self.inc**jumps)


@dataclass(frozen=True)
class PiecewisePacing:
    """``pieces[i]`` from fraction ``at[i]`` of the run on (``at[0] = 0``): a pacing whose
    parameters change during the run, as Population Based Training changes them. Each piece is
    the whole pacing function of its parameters, evaluated at the run's progress ``p``."""

    at: tuple[float, ...]
    pieces: tuple[Pacing, ...]

    def __post_init__(self) -> None:
        if len(self.at) != len(self.pieces) or not self.at or self.at[0] != 0.0:
            raise ValueError("at and pieces must have one entry each, at[0] = 0")
        if list(self.at) != sorted(set(self.at)):
            raise ValueError(f"at must strictly increase, got {self.at}")

    def __call__(self, progress: float) -> float:
        piece = bisect.bisect_right(self.at, progress) - 1
        return self.pieces[max(piece, 0)](progress)


def make_pacing(
    kind: str,
    *,
    start: float = 0.2,
    full_at: float = 0.5,
    power: float = 2.0,
    num_steps: int = 1,
    inc: float = 1.9,
    step_length: float = 0.05,
) -> Pacing:
    """The pacing function named ``kind`` (one of ``PACING_KINDS``) from plain parameters."""
    if kind == "constant":
        return ConstantPacing()
    if kind in WU_SHAPES:
        return WuPacing(kind, start=start, full_at=full_at, num_steps=num_steps)
    if kind == "competence":
        return CompetencePacing(start=start, full_at=full_at, power=power)
    if kind == "exp_steps":
        return ExponentialStepPacing(start=start, inc=inc, step_length=step_length)
    raise ValueError(f"pacing kind must be one of {', '.join(PACING_KINDS)}; got {kind!r}")
