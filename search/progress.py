"""What a sweep shows while it runs: one line per finished trial (what it tried and how it
did), trial directories (TensorBoard's run names) that say the same, TensorBoard scalars
against the student's step, and Tune's own console output (its tables with ``--verbose``)
without its dumps of every trial's whole config."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Collection
from typing import Any, TextIO

import numpy as np
from pydantic import ValidationError
from ray import tune
from ray.tune.experimental.output import AirVerbosity, ProgressReporter, TuneTerminalReporter
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.utils.util import flatten_dict, unflatten_dict

from spaces import PARAMETER_PATHS, PARAMETERS, SpaceBounds
from trainables.config import StudentConfig, flatten, settings

# Settings shown whenever a trial uses them (the others: when searched or not the default).
_ALWAYS = ("distill.temperature", "distill.alpha")
_DEFAULTS = settings(StudentConfig())
# A run name (a trial's directory) has at most this many characters.
NAME_LIMIT = 96


def varying(bounds: SpaceBounds) -> tuple[str, ...]:
    """The config paths the space draws (more than one choice, or a range with low < high):
    what differs between its trials, so what their descriptions show."""
    out = []
    for parameter in PARAMETERS:
        values = getattr(bounds, parameter.bounds)
        if values is None:
            continue
        if parameter.draw in ("choice", "values"):
            if len(values) > 1:
                out.append(parameter.path)
        elif values[0] < values[1]:
            out.append(parameter.path)
    return tuple(out)


def describe_schedule(config: dict[str, Any], *, searched: Collection[str] = ()) -> str:
    """A short description of a student config's schedule: the curriculum kind with every
    searchable setting it used, each other kind with its settings, then the remaining
    searchable settings, e.g. ``paced(order=easy_first, score=confidence, pacing.kind=linear,
    pacing.start=0.2, pacing.full_at=0.5) teacher_schedule=two_shot(switch_at=0.3)
    distill.temperature=2.5e-4 distill.alpha=0``; a baseline arm leads with its name.

    A setting is shown when the trial used it (one its kinds do not use never is) and it is
    ``searched`` (the space varies it: :func:`varying`), temperature or alpha, or not its
    default. Settings are named by their config paths and derived from the space's
    parameters, so a new kind is described without changes here."""
    return " ".join(
        _group_text(head, value, details) for head, value, details in _groups(config, searched)
    )


def run_name(trial_id: str, config: dict[str, Any], *, searched: Collection[str] = ()) -> str:
    """A trial's directory name, the run TensorBoard lists: its id, then what
    :func:`describe_schedule` says of the ``searched`` settings (given none: of those not at
    their default), most telling first (the kinds, then temperature and alpha, then the
    kinds' settings), each by the last part of its path, cut at a whole setting to stay
    within :data:`NAME_LIMIT` characters; only ``[A-Za-z0-9._=+-]``, no
    timestamps (the same trial gets the same name, so a restored experiment finds it)."""
    groups = _groups(config, searched, constants=not searched)
    parts = [_safe(_label(head, value, short=True)) for head, value, _ in groups]
    for head, _, details in groups:
        parts += [
            _safe(f"{_leaf(path)}={value}")
            for path, value in details
            if not searched or f"{head}.{path}" in searched
        ]
    name = _safe(trial_id)
    for part in parts:
        if len(name) + 1 + len(part) > NAME_LIMIT:
            break
        name = f"{name}_{part}"
    return name


class TrialDirname:
    """Tune's ``trial_dirname_creator``: :func:`run_name` of the trial (picklable, so a
    restored Tuner names trials the same way)."""

    def __init__(self, searched: Collection[str] = ()) -> None:
        self.searched = tuple(searched)

    def __call__(self, trial: Any) -> str:
        return run_name(trial.trial_id, trial.config, searched=self.searched)


def _used(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return settings(StudentConfig.model_validate(config))
    except ValidationError:  # a trial that failed on its config: show what it was given
        return flatten(config)


Detail = tuple[str, str]  # a setting under a kind: its path below the kind, its value shown
Group = tuple[str, Any, list[Detail]]  # what one part of a description shows


def _groups(
    config: dict[str, Any], searched: Collection[str], *, constants: bool = True
) -> list[Group]:
    """``(head, value, details)`` in the order shown: the arm of a baseline, the curriculum
    kind, every other kind (``head``: its path without ``.kind``), then each lone setting
    (``head``: its path); ``details``: the ``(path, value)`` settings below a kind. Without
    ``constants``, a setting not searched is left out even where it is not its default."""
    used = _used(config)
    arm = config.get("arm")
    groups: list[Group] = [("arm", arm, [])] if arm not in (None, "search") else []
    kinds = [p.removesuffix(".kind") for p in PARAMETER_PATHS if p.endswith(".kind")]
    for path in PARAMETER_PATHS:
        value = used.get(path)
        owner = next((k for k in kinds if path.startswith(f"{k}.")), None)
        if value is None or (owner is not None and path != f"{owner}.kind"):
            continue  # unused, or shown with its kind
        if not _shown(path, value, searched, constants) and path != "curriculum.kind":
            continue
        details = [
            (p.removeprefix(f"{owner}."), _number(used[p]))
            for p in PARAMETER_PATHS
            if owner and p.startswith(f"{owner}.") and p != path and _detail(p, used.get(p))
        ]  # fmt: skip
        groups.append((owner or path, value, details))
    return groups


def _shown(path: str, value: Any, searched: Collection[str], constants: bool) -> bool:
    changed = constants and value != _DEFAULTS.get(path)
    return path in searched or path in _ALWAYS or changed


def _detail(path: str, value: Any) -> bool:
    """Whether a setting of a kind the trial uses is shown beside it (a zero prune fraction,
    the default, prunes nothing)."""
    return value is not None and (path != "curriculum.prune_fraction" or bool(value))


def _group_text(head: str, value: Any, details: list[Detail]) -> str:
    text = _label(head, value)
    if details:
        text += f"({', '.join(f'{path}={shown}' for path, shown in details)})"
    return text


def _label(head: str, value: Any, *, short: bool = False) -> str:
    if head in ("arm", "curriculum"):
        return str(value)
    return f"{_leaf(head) if short else head}={_number(value)}"


def _leaf(path: str) -> str:
    """The last part of a path naming a setting (a kind by what it is the kind of)."""
    return path.removesuffix(".kind").rsplit(".", 1)[-1]


def _number(value: Any) -> str:
    """Floats in three significant digits, in scientific notation where a temperature of
    1e-4 would otherwise read 0.0001 (``2.5e-4``, ``1e-20``); a mapping (a mixture's source
    weights) as ``{clean: 0.607, noisy: 0.846}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_number(v)}" for k, v in value.items()) + "}"
    if not isinstance(value, float):
        return str(value)
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-")


class TensorBoardLogger(TBXLoggerCallback):
    """Tune's TensorBoard logger, with scalars against the student's ``step`` (Tune's: its
    report count) and each trial's hyperparameters named by their dotted config paths
    (``distill.temperature``) instead of Tune's ``distill/temperature``."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = result.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            step = result[TRAINING_ITERATION]
        drop = {"config", "pid", "timestamp", "time_total_s", TRAINING_ITERATION}
        flat = flatten_dict({k: v for k, v in result.items() if k not in drop}, delimiter="/")
        scalars = {
            f"ray/tune/{name}": value
            for name, value in flat.items()
            if isinstance(value, (int, float, np.floating, np.integer))
            and not isinstance(value, bool) and np.isfinite(value)
        }  # fmt: skip
        writer = self._trial_writer[trial]
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=int(step))
        self._trial_result[trial] = scalars
        writer.flush()

    def _try_log_hparams(self, trial, result):
        spelled = trial.evaluated_params
        trial.evaluated_params = flatten(unflatten_dict(spelled))
        try:
            super()._try_log_hparams(trial, result)
        finally:
            trial.evaluated_params = spelled


class TuneConsole(TuneTerminalReporter):
    """Tune's console output for one experiment, in place of its own (run it with
    ``RunConfig(verbose=0)`` and this in the callbacks: Tune drives the first such reporter
    it finds). ``verbose=0``: nothing; 1: Tune's start box, status tables and trial
    start/end lines, each trial described by ``describe`` (a config in one line, e.g.
    :func:`describe_schedule`; unset: by its name only) instead of a dump of its whole
    config; the TensorBoard hint names the experiment's own directory, not Ray's
    temporary one that vanishes with the session."""

    def __init__(
        self, verbose: int, metric: str | None = None, mode: str | None = None,
        *, describe: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(AirVerbosity(min(max(verbose, 0), 2)), metric=metric, mode=mode)
        self.describe = describe
        self._callbacks: list = []

    def alongside(self, callbacks: list) -> list:
        """``callbacks`` with this console last, the list to give ``RunConfig(callbacks=)``.

        Tune appends its own (silent) reporter to that very list and sets up only the first
        reporter it finds, this one; its own is left without a start time, and its
        ``on_trial_error`` (which prints at every verbosity) then fails the whole experiment
        on the first failed trial. :meth:`setup` gives it this one's."""
        callbacks.append(self)
        self._callbacks = callbacks
        return callbacks

    def setup(self, start_time: float | None = None, **info: Any) -> None:
        start_time = time.time() if start_time is None else start_time
        super().setup(start_time=start_time, **info)
        for other in self._callbacks:
            if other is not self and isinstance(other, ProgressReporter):
                other.setup(start_time=start_time, **info)

    def experiment_started(self, experiment_name, experiment_path, *args, **kwargs) -> None:
        if self.verbosity < AirVerbosity.DEFAULT:
            return
        kwargs["tensorboard_path"] = experiment_path if kwargs.get("tensorboard_path") else None
        super().experiment_started(experiment_name, experiment_path, *args, **kwargs)

    def _get_heartbeat(self, trials, *sys_args, force_full_output: bool = False):
        lines, table = super()._get_heartbeat(
            trials, *sys_args, force_full_output=force_full_output
        )
        lines = [line for line in lines if not line.startswith("Current best trial")]
        best = _best(trials, self._metric, self._mode)
        if best is not None:
            value = best.last_result[self._metric]
            lines.append(
                f"Current best trial: {best.trial_id} with {self._metric}={_number(value)}"
                f"{self._about(best)}"
            )
        return lines, table

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if self.verbosity < AirVerbosity.DEFAULT:
            return
        self._start_block(f"trial_{trial}_start")
        print(f"Trial {trial} started{self._about(trial)}")

    def _about(self, trial: Any) -> str:
        return f": {self.describe(trial.config)}" if self.describe else ""

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """Nothing: Tune's own reporter reports errors at every verbosity."""

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Nothing: as :meth:`on_trial_error`."""


def _best(trials: list, metric: str | None, mode: str | None) -> Any:
    sign = 1 if mode == "max" else -1
    scored = [
        t for t in trials
        if metric and isinstance((t.last_result or {}).get(metric), (int, float))
    ]  # fmt: skip
    return max(scored, key=lambda t: sign * t.last_result[metric], default=None)


class ProgressPrinter(tune.Callback):
    """One line per finished or failed trial: its id, :func:`describe_schedule` (showing the
    ``searched`` settings) and its ``metric``."""

    def __init__(
        self, total: int, metric: str, *, stream: TextIO | None = None,
        searched: Collection[str] = (),
    ) -> None:  # fmt: skip
        self.total, self.metric, self.stream = total, metric, stream
        self.searched = tuple(searched)
        self.done = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        last = trial.last_result or {}
        value = last.get(self.metric)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
        schedule = describe_schedule(trial.config, searched=self.searched)
        self._print(
            f"  [{self.done}/{self.total}] {trial.trial_id} {schedule}: "
            f"{self.metric} {shown}, steps_to_target {last.get('steps_to_target')}"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        schedule = describe_schedule(trial.config, searched=self.searched)
        self._print(f"  [{self.done}/{self.total}] {trial.trial_id} FAILED: {schedule}")
