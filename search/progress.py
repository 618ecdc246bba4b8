"""One line per finished trial: what it tried and how it did (Tune's tables with --verbose)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ray import tune


def describe_schedule(config: dict[str, Any]) -> str:
    """A short description of a student config's schedule, e.g.
    ``paced(easy_first, confidence, linear 0.2->@0.5) T=4 alpha=0.5``."""
    cur, distill = config.get("curriculum", {}), config.get("distill", {})
    kind = cur.get("kind", "?")
    pacing = cur.get("pacing", {})
    pace = f"{pacing.get('kind')} {pacing.get('start', 0):.2g}->@{pacing.get('full_at', 0):.2g}"
    details = {
        "paced": f"{cur.get('order')}, {cur.get('score')}, {pace}",
        "staged": f"{cur.get('progression')}, {cur.get('order')}, {cur.get('score')}",
        "self_paced": f"{cur.get('self_paced', {}).get('regularizer')}, {pace}",
        "focal": f"gamma={cur.get('focal_gamma', 0):.3g}",
        "confidence": f"beta_max={cur.get('beta_max', 0):.3g}",
    }.get(kind)
    text = f"{kind}({details})" if details else kind
    if cur.get("prune_fraction"):
        text += f" prune={cur['prune_fraction']:.2g}"
    t_schedule = distill.get("temperature_schedule", {})
    t_kind, temperature = (
        t_schedule.get("kind", "constant"),
        distill.get("temperature", float("nan")),
    )
    if t_kind in ("linear", "cosine"):
        t_text = f"T={temperature:.3g}->{t_schedule.get('end'):.3g} ({t_kind})"
    elif t_kind == "ctkd":
        t_text = f"T=ctkd({temperature:.3g})"
    else:
        t_text = f"T={temperature:.3g}"
    return f"{text} {t_text} alpha={distill.get('alpha', float('nan')):.3g}"


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
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
        self._print(
            f"  [{self.done}/{self.total}] {trial.trial_id} {describe_schedule(trial.config)}: "
            f"{self.metric} {shown}, steps_to_target {last.get('steps_to_target')}"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        schedule = describe_schedule(trial.config)
        self._print(f"  [{self.done}/{self.total}] {trial.trial_id} FAILED: {schedule}")
