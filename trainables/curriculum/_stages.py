"""Progression through the stages of a multi-stage curriculum (easy -> medium -> hard)."""

from __future__ import annotations

from typing import Any

from trainables.config import Progression, kinds


class StageController:
    """Decides the current stage from run progress and, with a metric gate, from the stage's
    validation accuracy.

    ``fixed``: stage ``i`` runs for ``lengths[i]`` of the run (the last one to the end).
    ``threshold``: advance once the stage's validation accuracy reaches ``threshold``.
    ``plateau``: advance once it has not improved by more than ``min_delta`` for ``patience``
    evaluations. With a gate, ``lengths[i]`` is the stage's maximum share of the run.
    """

    def __init__(
        self, lengths: list[float], *, progression: str = "fixed", threshold: float = 0.9,
        patience: int = 3, min_delta: float = 1e-4,
    ) -> None:  # fmt: skip
        if progression not in kinds(Progression):
            raise ValueError(
                f"progression must be one of {', '.join(kinds(Progression))}; got {progression!r}"
            )
        if not lengths or any(length <= 0 for length in lengths):
            raise ValueError(f"lengths must be positive fractions of the run, got {lengths}")
        self.lengths, self.progression = list(lengths), progression
        self.threshold, self.patience, self.min_delta = threshold, patience, min_delta
        self.stage, self.stage_started = 0, 0.0
        self.best, self.stale = -1.0, 0

    @property
    def last(self) -> bool:
        return self.stage == len(self.lengths) - 1

    def _advance(self, progress: float) -> None:
        self.stage += 1
        self.stage_started, self.best, self.stale = progress, -1.0, 0

    def update(self, progress: float, stage_accuracy: float | None = None) -> int:
        """Call at every evaluation (and freely between); returns the stage to use next."""
        while not self.last and progress >= self.stage_started + self.lengths[self.stage] - 1e-12:
            self._advance(self.stage_started + self.lengths[self.stage])
        if self.last or stage_accuracy is None or self.progression == "fixed":
            return self.stage
        if self.progression == "threshold" and stage_accuracy >= self.threshold:
            self._advance(progress)
        elif self.progression == "plateau":
            if stage_accuracy > self.best + self.min_delta:
                self.best, self.stale = stage_accuracy, 0
            else:
                self.stale += 1
                if self.stale >= self.patience:
                    self._advance(progress)
        return self.stage

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("stage", "stage_started", "best", "stale")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
