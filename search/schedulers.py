"""Every stopping and population rule of a sweep, and the one rule they share: baselines
are left alone.

FIFO (none), ASHA and the median stopping rule stop trials early on the student's ``step``;
Population Based Training (Jaderberg et al. 2017, "Population Based Training of Neural
Networks") and PB2 (Parker-Holder et al. 2020, a GP bandit choosing the new settings) evolve
the distillation temperature and alpha and the curriculum's pacing (``start`` and
``full_at``, its rate), and the schedule the best lineage followed is exported as a replayable
student config.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import optuna
import yaml
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)
from ray.tune.schedulers.pb2 import PB2

from search._study import enqueue_first_trials, run_seed
from search.spec import SweepSpec
from spaces import PARAMETERS, suggestion
from trainables.config import StudentConfig, nest

MAX_BOUNDARIES = 16  # ScheduleConfig's limit
# The settings PBT and PB2 evolve (within the space's bounds), by their config paths.
EVOLVED = (
    "distill.temperature",
    "distill.alpha",
    "curriculum.pacing.start",
    "curriculum.pacing.full_at",
)


def is_baseline(config: dict[str, Any] | None) -> bool:
    """Whether a trial's config is one of the sweep's baseline arms (``arm: baseline:...``);
    a trial stopped before it started has no config (None) and is not."""
    return str((config or {}).get("arm", "search")).startswith("baseline:")


class LeavesBaselines:
    """A scheduler mixin that never sees a baseline arm's results: baselines are the yardstick
    (``compare`` needs their final test metrics), so they are never stopped early, cloned
    from or perturbed, and do not move the rule's cut-offs."""

    def on_trial_result(self, tune_controller, trial, result):
        if is_baseline(trial.config):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class _ASHA(LeavesBaselines, ASHAScheduler):
    pass


class _Median(LeavesBaselines, MedianStoppingRule):
    pass


class _PBT(LeavesBaselines, PopulationBasedTraining):
    pass


class _PB2(LeavesBaselines, PB2):
    pass


def make_scheduler(spec: SweepSpec) -> TrialScheduler | None:
    """The spec's scheduler on the student's ``step`` (which survives trial restarts, unlike
    ``training_iteration``); None for FIFO."""
    sched, steps = spec.scheduler, spec.student.optim.steps
    if sched.population_based:
        return _population_scheduler(spec)
    grace = max(spec.student.eval_every, round(sched.grace_period * steps))
    if sched.kind == "asha":
        return _ASHA(
            time_attr="step", metric=spec.selection[0], mode=spec.selection[1], max_t=steps,
            grace_period=min(grace, steps), reduction_factor=sched.reduction_factor,
        )  # fmt: skip
    if sched.kind == "median":
        return _Median(
            time_attr="step", metric=spec.selection[0], mode=spec.selection[1], grace_period=grace,
            min_samples_required=sched.min_samples,
        )  # fmt: skip
    return None


def population(spec: SweepSpec, size: int, run: int = 0) -> list[dict[str, Any]]:
    """``size`` starting configs drawn at random from the space (seeded per run, see
    :func:`~search._study.run_seed`; in the first run, with ``cover_curricula``, the first ones
    try each curriculum kind), as partial student configs."""
    sampler = optuna.samplers.RandomSampler(seed=run_seed(spec.seed, run))
    study = optuna.create_study(sampler=sampler)
    if run == 0:
        enqueue_first_trials(study, spec, size)
    base = spec.space_base
    return [nest(suggestion(study.ask(), spec.space, base)) for _ in range(size)]


def _population_scheduler(spec: SweepSpec) -> PopulationBasedTraining:
    """PBT or PB2 over :data:`EVOLVED`; new values stay inside the space's bounds."""
    sched, steps = spec.scheduler, spec.student.optim.steps
    bounds = {path: spec.space.range_of(path) for path in EVOLVED}

    def keep_in_bounds(config: dict[str, Any]) -> dict[str, Any]:
        for path, (low, high) in bounds.items():
            *parents, name = path.split(".")
            section = functools.reduce(dict.__getitem__, parents, config)
            section[name] = min(max(section[name], low), high)
        return config

    interval = max(spec.student.eval_every, round(sched.perturbation_interval * steps))
    interval -= interval % spec.student.eval_every  # on an evaluation: when checkpoints exist
    random.seed(spec.seed)  # PBT draws its perturbations from the global `random`
    if sched.kind == "pb2":
        return _PB2(
            time_attr="step", metric=spec.selection[0], mode=spec.selection[1],
            perturbation_interval=interval,
            hyperparam_bounds=nest({path: list(b) for path, b in bounds.items()}),
            quantile_fraction=sched.quantile_fraction, custom_explore_fn=keep_in_bounds,
        )  # fmt: skip
    log_scale = {p.path for p in PARAMETERS if p.log}
    return _PBT(
        time_attr="step", metric=spec.selection[0], mode=spec.selection[1],
        perturbation_interval=interval,
        hyperparam_mutations=nest({
            path: tune.loguniform(*b) if path in log_scale else tune.uniform(*b)
            for path, b in bounds.items()
        }),
        quantile_fraction=sched.quantile_fraction,
        resample_probability=sched.resample_probability,
        custom_explore_fn=keep_in_bounds,
    )  # fmt: skip


def lineage(policy_file: Path, own_config: dict[str, Any], eval_every: int) -> list[tuple]:
    """``[(step, config), ...]``: the configs the best trial's lineage trained under and the
    step each took over, from PBT's policy log (``pbt_policy_<trial>.txt``: one line per
    exploit along the lineage, ``[target, clone, target_iter, clone_iter, old, new]``)."""
    if not policy_file.is_file():
        return [(0, own_config)]
    lines = [json.loads(line) for line in policy_file.read_text().splitlines() if line.strip()]
    timeline = [(0, lines[0][4])]
    for _, _, _, clone_iter, _, new in lines:
        timeline.append((clone_iter * eval_every, new))  # one report per evaluation
    return timeline


def pbt_replay(
    experiment_dir: Path,
    trial_id: str,
    final_config: dict[str, Any],
    *,
    steps: int,
    eval_every: int,
) -> dict[str, Any]:
    """The schedule a PBT trial followed, as student config sections (``curriculum``,
    ``teacher_schedule``, ``model``, ``optim``, ``distill``): its settings with the
    temperature and alpha it followed as explicit ``step`` schedules (boundaries as fractions
    of the run) and its pacing's ``start`` / ``full_at`` as ``pacing.changes``, from PBT's
    policy log in ``experiment_dir`` (its own settings when it never exploited)."""
    timeline = lineage(experiment_dir / f"pbt_policy_{trial_id}.txt", final_config, eval_every)
    at_fraction: dict[float, dict[str, Any]] = {}
    for step, config in timeline:
        at_fraction[min(step, steps) / steps] = config
    first_config = at_fraction.pop(0.0, timeline[0][1])
    later_configs = sorted(
        ((b, c) for b, c in at_fraction.items() if 0.0 < b < 1.0), key=lambda bc: bc[0]
    )[-MAX_BOUNDARIES:]
    first = first_config["distill"]
    later = [(b, c["distill"]) for b, c in later_configs]
    distill = dict(final_config["distill"])
    for name in ("temperature", "alpha"):
        distill[name] = first[name]
        distill[f"{name}_schedule"] = (
            {"kind": "step", "boundaries": [b for b, _ in later],
             "values": [d[name] for _, d in later]}
            if later else {"kind": "constant"}
        )  # fmt: skip
    replay = {
        key: final_config[key]
        for key in ("curriculum", "teacher_schedule", "model", "optim")
        if key in final_config
    }
    replay["distill"] = distill
    pacing = _pacing_changes(first_config, later_configs)
    if pacing is not None:
        replay["curriculum"] = {**replay.get("curriculum", {}), "pacing": pacing}
    return replay


def export_schedule(
    spec: SweepSpec, experiment_dir: Path, trial_id: str, final_config: dict[str, Any]
) -> Path:
    """Write ``<sweep>/pbt_schedule.yaml``: :func:`pbt_replay` of the best trial, which
    replays PBT's schedule in a plain run (``search.config_of`` gives the same, merged into
    the trial's whole config)."""
    replay = pbt_replay(
        experiment_dir, trial_id, final_config, steps=spec.student.optim.steps,
        eval_every=spec.student.eval_every,
    )  # fmt: skip
    shared = {"data": spec.data.model_dump(), "task": spec.task.model_dump()}
    StudentConfig.model_validate({**replay, **shared})  # replayable
    spec.sweep_dir.mkdir(parents=True, exist_ok=True)
    out = spec.sweep_dir / "pbt_schedule.yaml"
    header = (
        f"# The schedule PBT's best trial ({trial_id}) followed, as a student config:\n"
        "# merge it into a spec's `student` to replay it without PBT.\n"
    )
    out.write_text(header + yaml.safe_dump(replay, sort_keys=False))
    return out


def _pacing_changes(first: dict[str, Any], later: list[tuple[float, dict[str, Any]]]):
    """The lineage's pacing: its first ``start`` / ``full_at`` and a change at each fraction
    of the run where an exploit moved them; None when the configs carry no curriculum."""
    if "curriculum" not in first:
        return None
    pacing = {k: v for k, v in first["curriculum"]["pacing"].items() if k != "changes"}
    current, changes = (pacing["start"], pacing["full_at"]), []
    for at, config in later:
        moved = config.get("curriculum", {}).get("pacing", {})
        new = (moved.get("start", current[0]), moved.get("full_at", current[1]))
        if new != current:
            changes.append({"at": at, "start": new[0], "full_at": new[1]})
            current = new
    return {**pacing, "changes": changes}
