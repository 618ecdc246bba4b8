"""Which teacher checkpoint a student learns from at each step (progressive distillation), and
where the teacher's phase transition lies.

Panigrahi et al. (2024), "Progressive distillation induces an implicit curriculum": a student
taught by intermediate teacher checkpoints -- above all one taken inside the teacher's phase
transition -- learns much faster than one taught by the final teacher alone.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from trainables.config import TeacherScheduleKind, kinds

CHECKPOINT_SCHEDULES = kinds(TeacherScheduleKind)


TRANSITION_Z = 3.0  # standard errors a rise must reach (the steepest of many windows is taken)


def steepest_rise(
    steps: list[int], accuracies: list[float], *, window: int = 3
) -> dict[str, Any] | None:
    """The window of ``window`` consecutive evaluation intervals with the steepest rise in
    accuracy, whatever its size: ``{"start", "end", "rise", "step"}``, ``step`` being the
    first evaluation in the window at or above the midpoint of the window's accuracies. None
    with fewer than two evaluations."""
    found = _steepest(steps, accuracies, window)
    if found is None:
        return None
    i, w = found
    middle = (accuracies[i] + accuracies[i + w]) / 2
    crossing = next(steps[j] for j in range(i, i + w + 1) if accuracies[j] >= middle)
    return {
        "start": steps[i], "end": steps[i + w], "rise": accuracies[i + w] - accuracies[i],
        "step": crossing,
    }  # fmt: skip


def _steepest(steps: list[int], accuracies: list[float], window: int) -> tuple[int, int] | None:
    """``(i, w)``: the steepest window runs from evaluation ``i`` to ``i + w``."""
    if len(steps) != len(accuracies):
        raise ValueError("steps and accuracies must have the same length")
    if len(steps) < 2:
        return None
    w = max(1, min(window, len(steps) - 1))
    rises = [accuracies[i + w] - accuracies[i] for i in range(len(steps) - w)]
    return max(range(len(rises)), key=lambda j: (rises[j], -j)), w


def required_rise(low: float, high: float, *, min_rise: float, rows: int | None = None) -> float:
    """The rise from accuracy ``low`` to ``high`` that counts as a phase transition: at least
    ``min_rise``, and with ``rows`` (the examples each accuracy is measured on) at least
    :data:`TRANSITION_Z` standard errors of the difference of two independent binomial
    accuracies, ``sqrt((low (1 - low) + high (1 - high)) / rows)``. Three rather than two:
    the steepest of many windows is taken, and a flat curve's steepest noise is about two."""
    if rows is None or rows < 1:
        return min_rise
    variance = (low * (1 - low) + high * (1 - high)) / rows
    return max(min_rise, TRANSITION_Z * math.sqrt(max(variance, 0.0)))


def detect_transition(
    steps: list[int],
    accuracies: list[float],
    *,
    window: int = 3,
    min_rise: float = 0.05,
    rows: int | None = None,
) -> dict[str, Any] | None:
    """The teacher's phase transition (Panigrahi et al. 2024): the :func:`steepest_rise`
    window when its rise reaches :func:`required_rise` (``min_rise``, and the binomial noise
    of ``rows`` examples); None when there is none: a flat curve (a rise of 0.004 is noise,
    not a transition), or fewer than two evaluations."""
    found = _steepest(steps, accuracies, window)
    if found is None:
        return None
    i, w = found
    need = required_rise(accuracies[i], accuracies[i + w], min_rise=min_rise, rows=rows)
    if accuracies[i + w] - accuracies[i] < need:
        return None
    return steepest_rise(steps, accuracies, window=window)


def transition_checkpoint(transition: dict[str, Any] | None, checkpoints: list[int]) -> int:
    """The kept checkpoint nearest the transition's midpoint crossing, preferring ones inside
    the transition window; the final checkpoint when there is no transition (a student's
    ``two_shot`` from checkpoint ``transition`` refuses that case instead, see
    :func:`trainables.loops.missing_transition`)."""
    if not transition:
        return checkpoints[-1]
    inside = [
        c for c in checkpoints if transition["start"] <= c <= transition["end"]
    ] or checkpoints
    return min(inside, key=lambda c: (abs(c - transition["step"]), c))


@dataclass(frozen=True)
class CheckpointSchedule:
    """Maps a student step (1-based, of ``total_steps``) to a kept teacher checkpoint.

    - ``final``: the final teacher throughout (one-shot distillation).
    - ``lockstep``: the first checkpoint at or after ``ratio * step`` teacher steps, the
      paper's progressive mode (the final one once the student has passed them all).
    - ``two_shot``: ``first`` until fraction ``switch_at`` of the run, then the final teacher.
    - ``uniform_k``: ``k`` checkpoints evenly spread over the kept ones (the last being the
      final teacher), each for ``1/k`` of the run.
    - ``explicit``: ``steps[i]`` from ``switches[i - 1]`` on (``switches`` are fractions).
    """

    kind: str
    checkpoints: tuple[int, ...]
    total_steps: int
    ratio: float = 1.0
    first: int | None = None
    switch_at: float = 0.5
    k: int = 4
    steps: tuple[int, ...] = ()
    switches: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CHECKPOINT_SCHEDULES:
            raise ValueError(
                f"kind must be one of {', '.join(CHECKPOINT_SCHEDULES)}; got {self.kind!r}"
            )
        if not self.checkpoints or list(self.checkpoints) != sorted(set(self.checkpoints)):
            raise ValueError(
                f"checkpoints must be increasing and non-empty, got {list(self.checkpoints)}"
            )
        missing = [
            s
            for s in (*self.steps, *([self.first] if self.first is not None else []))
            if s not in self.checkpoints
        ]
        if missing:
            raise ValueError(
                f"teacher checkpoints {missing} are not in the bank; kept: {list(self.checkpoints)}"
            )
        if self.kind == "two_shot" and self.first is None:
            raise ValueError("two_shot needs a first checkpoint")
        if self.kind == "explicit" and (
            not self.steps or len(self.switches) != len(self.steps) - 1
        ):
            raise ValueError("explicit needs steps and one switch fraction fewer than steps")
        if list(self.switches) != sorted(self.switches) or any(
            not 0 < s < 1 for s in self.switches
        ):
            raise ValueError(f"switches must increase within (0, 1), got {list(self.switches)}")

    def __call__(self, step: int) -> int:
        progress = (step - 1) / self.total_steps
        final = self.checkpoints[-1]
        if self.kind == "final":
            return final
        if self.kind == "lockstep":
            i = bisect.bisect_left(self.checkpoints, self.ratio * step)
            return self.checkpoints[min(i, len(self.checkpoints) - 1)]
        if self.kind == "two_shot":
            return self.first if progress < self.switch_at else final
        if self.kind == "uniform_k":
            k = min(self.k, len(self.checkpoints))
            if k == 1:
                return final
            picks = [
                self.checkpoints[round(j * (len(self.checkpoints) - 1) / max(k - 1, 1))]
                for j in range(k)
            ]
            return picks[min(math.floor(progress * k), k - 1)]
        return self.steps[bisect.bisect_right(self.switches, progress)]
