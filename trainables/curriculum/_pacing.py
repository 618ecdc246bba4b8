from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Pacing(Protocol):
    """Fraction of the (easiest) training data available, as a function of run progress.

    Called with ``progress`` in ``[0, 1]`` (the fraction of the step budget done), returns a
    fraction in ``(0, 1]``. Expressed in fractions of the run so a schedule keeps its meaning
    when the step budget changes.
    """

    def __call__(self, progress: float) -> float: ...


@dataclass(frozen=True)
class ConstantPacing:
    """All data from the start: ``c(p) = 1`` (no curriculum)."""

    def __call__(self, progress: float) -> float:
        return 1.0


@dataclass(frozen=True)
class LinearPacing:
    """Linear pacing of Wu, Dyer & Neyshabur (2021), in fractions of the run.

    ``c(p) = min(1, start + (1 - start) * p / full_at)``: the easiest ``start`` fraction at the
    beginning, growing linearly to all data at fraction ``full_at`` of the run (their ``b`` and
    ``a``).
    """

    start: float
    full_at: float

    def __post_init__(self) -> None:
        if not 0.0 < self.start <= 1.0:
            raise ValueError(f"start must be in (0, 1], got {self.start}")
        if not 0.0 < self.full_at <= 1.0:
            raise ValueError(f"full_at must be in (0, 1], got {self.full_at}")

    def __call__(self, progress: float) -> float:
        return min(1.0, self.start + (1.0 - self.start) * progress / self.full_at)
