"""One line per finished trial: what it tried and how it did (Tune's tables with --verbose)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from pydantic import ValidationError
from ray import tune
from ray.tune.logger import TBXLoggerCallback
from ray.tune.utils.util import unflatten_dict

from spaces import PARAMETER_PATHS
from trainables.config import StudentConfig, flatten, settings


def describe_schedule(config: dict[str, Any]) -> str:
    """A short description of a student config's schedule: the curriculum kind with every
    searchable setting it used, then the other searchable settings that differ from their
    defaults, e.g. ``paced(order=easy_first, score=confidence, pacing.kind=linear,
    pacing.start=0.2, pacing.full_at=0.5) distill.temperature=4 distill.alpha=0.5``.
    Settings are named by their config paths and derived from the space's parameters, so a
    new kind is described without changes here."""
    try:
        used = settings(StudentConfig.model_validate(config))
    except ValidationError:  # a trial that failed on its config: show what it was given
        used = flatten(config)
    kind = used.get("curriculum.kind", "?")
    details = [
        f"{path.removeprefix('curriculum.')}={_short(used[path])}"
        for path in PARAMETER_PATHS
        if path.startswith("curriculum.") and path != "curriculum.kind"
        and used.get(path) is not None and (path != "curriculum.prune_fraction" or used[path])
    ]  # fmt: skip
    text = f"{kind}({', '.join(details)})" if details else str(kind)
    rest = [
        f"{path}={_short(used[path])}"
        for path in PARAMETER_PATHS
        if not path.startswith("curriculum.") and used.get(path) is not None
        and (path in _ALWAYS or used[path] != _DEFAULTS.get(path))
    ]  # fmt: skip
    return " ".join([text, *rest])


_ALWAYS = ("distill.temperature", "distill.alpha")
_DEFAULTS = settings(StudentConfig())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class TensorBoardLogger(TBXLoggerCallback):
    """Tune's TensorBoard logger, with each trial's hyperparameters named by their dotted
    config paths (``distill.temperature``) instead of Tune's ``distill/temperature``."""

    def _try_log_hparams(self, trial, result):
        spelled = trial.evaluated_params
        trial.evaluated_params = flatten(unflatten_dict(spelled))
        try:
            super()._try_log_hparams(trial, result)
        finally:
            trial.evaluated_params = spelled


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
