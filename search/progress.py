"""One line per finished trial: what it tried and how it did (Tune's tables with --verbose)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ray import tune


def describe_schedule(config: dict[str, Any]) -> str:
    """``linear(start=0.2, full_at=0.5) T=4 alpha=0.5`` for a student config."""
    curriculum, distill = config.get("curriculum", {}), config.get("distill", {})
    kind = curriculum.get("kind", "?")
    if kind == "linear":
        kind = f"linear(start={curriculum['start']:.3g}, full_at={curriculum['full_at']:.3g})"
    temperature, alpha = (
        distill.get("temperature", float("nan")),
        distill.get("alpha", float("nan")),
    )
    return f"{kind} T={temperature:.3g} alpha={alpha:.3g}"


class ProgressPrinter(tune.Callback):
    def __init__(self, total: int, metric: str, *, stream: TextIO | None = None) -> None:
        self.total, self.metric, self.stream = total, metric, stream
        self.done = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        last = trial.last_result or {}
        value = last.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else "n/a"
        self._print(
            f"  [{self.done}/{self.total}] {trial.trial_id} {describe_schedule(trial.config)}: "
            f"{self.metric} {shown}, steps_to_target {last.get('steps_to_target')}"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        schedule = describe_schedule(trial.config)
        self._print(f"  [{self.done}/{self.total}] {trial.trial_id} FAILED: {schedule}")
