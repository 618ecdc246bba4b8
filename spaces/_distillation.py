from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trainables.config import (
    CURRICULUM_KINDS,
    PACING_KINDS,
    SCORE_KINDS,
    CurriculumKind,
    PacingKind,
    ScoreKind,
)

Range = tuple[float, float]


class SpaceBounds(BaseModel):
    """What :func:`distillation_space` may choose from. The defaults span every curriculum
    kind, order, score and pacing (the ``all`` preset).

    Each range is ``[low, high]``; ``temperature`` and ``temperature_end`` are sampled on a log
    scale, the others uniformly. A range with ``low == high`` fixes that parameter, and a
    choice list with one entry fixes that choice.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    curricula: list[CurriculumKind] = Field(
        default_factory=lambda: list(CURRICULUM_KINDS), min_length=1
    )
    orders: list[str] = Field(
        default_factory=lambda: ["easy_first", "hard_first", "random"], min_length=1
    )
    scores: list[ScoreKind] = Field(
        default_factory=lambda: [s for s in SCORE_KINDS if s != "column"], min_length=1
    )
    pacings: list[PacingKind] = Field(
        default_factory=lambda: [p for p in PACING_KINDS if p != "constant"], min_length=1
    )
    spl_regularizers: list[str] = Field(
        default_factory=lambda: ["hard", "linear", "log", "mixture"], min_length=1
    )
    progressions: list[str] = Field(
        default_factory=lambda: ["fixed", "threshold", "plateau"], min_length=1
    )
    temperature_schedules: list[str] = Field(
        default_factory=lambda: ["constant", "linear", "cosine", "ctkd"], min_length=1
    )
    losses: list[str] = Field(default_factory=lambda: ["hinton"], min_length=1)
    teacher_schedules: list[str] = Field(default_factory=lambda: ["final"], min_length=1)
    switch_at: Range = (0.05, 0.5)
    uniform_k: tuple[int, int] = (2, 8)
    temperature: Range = (1.0, 8.0)
    temperature_end: Range = (1.0, 8.0)
    alpha: Range = (0.0, 1.0)
    start: Range = (0.05, 0.6)
    full_at: Range = (0.1, 0.9)
    focal_gamma: Range = (0.5, 5.0)
    beta_max: Range = (0.5, 8.0)
    prune_fraction: Range = (0.0, 0.0)
    competence_power: Range = (1.0, 3.0)
    step_count: tuple[int, int] = (1, 4)
    exp_steps_inc: Range = (1.2, 3.0)
    gate_threshold: Range = (0.7, 0.95)
    gate_patience: tuple[int, int] = (1, 4)

    @field_validator(
        "curricula", "orders", "scores", "pacings", "spl_regularizers", "progressions",
        "temperature_schedules", "losses", "teacher_schedules",
    )  # fmt: skip
    @classmethod
    def _unique_and_known(cls, kinds: list[str], info: ValidationInfo) -> list[str]:
        allowed = {
            "orders": ("easy_first", "hard_first", "random"),
            "spl_regularizers": ("hard", "linear", "log", "mixture"),
            "progressions": ("fixed", "threshold", "plateau"),
            "temperature_schedules": ("constant", "linear", "cosine", "ctkd"),
            "losses": ("hinton", "progressive"),
            "teacher_schedules": ("final", "lockstep", "two_shot", "uniform_k"),
        }.get(info.field_name)
        if allowed and any(k not in allowed for k in kinds):
            raise ValueError(f"entries must be among {', '.join(allowed)}; got {kinds}")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"has duplicates: {kinds}")
        return kinds

    @field_validator(
        "temperature", "temperature_end", "start", "full_at", "focal_gamma", "beta_max"
    )
    @classmethod
    def _positive_range(cls, bounds: Range, info: ValidationInfo) -> Range:
        top = {
            "temperature": 100.0,
            "temperature_end": 100.0,
            "focal_gamma": 10.0,
            "beta_max": 50.0,
        }
        return _check_range(bounds, low=0.0, high=top.get(info.field_name, 1.0), open_low=True)

    @field_validator("switch_at")
    @classmethod
    def _switch_range(cls, bounds: Range) -> Range:
        return _check_range(bounds, low=0.0, high=0.99, open_low=True)

    @field_validator("step_count", "gate_patience", "uniform_k")
    @classmethod
    def _count_range(cls, bounds: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        top = {"step_count": 100, "uniform_k": 64}.get(info.field_name, 1000)
        return _check_range(bounds, low=1, high=top, open_low=False)

    @field_validator("competence_power")
    @classmethod
    def _power_range(cls, bounds: Range) -> Range:
        return _check_range(bounds, low=0.0, high=10.0, open_low=True)

    @field_validator("exp_steps_inc")
    @classmethod
    def _inc_range(cls, bounds: Range) -> Range:
        return _check_range(bounds, low=1.0, high=10.0, open_low=True)

    @field_validator("gate_threshold")
    @classmethod
    def _gate_range(cls, bounds: Range) -> Range:
        return _check_range(bounds, low=0.0, high=1.0, open_low=True)

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, bounds: Range) -> Range:
        return _check_range(bounds, low=0.0, high=1.0, open_low=False)

    @field_validator("prune_fraction")
    @classmethod
    def _prune_range(cls, bounds: Range) -> Range:
        return _check_range(bounds, low=0.0, high=0.9, open_low=False)


def _check_range(bounds: Range, *, low: float, high: float, open_low: bool) -> Range:
    a, b = bounds
    if not ((a > low if open_low else a >= low) and b <= high and a <= b):
        left = "(" if open_low else "["
        raise ValueError(
            f"must be [low, high] within {left}{low:g}, {high:g}] with low <= high, got [{a}, {b}]"
        )
    return bounds


PRESETS: dict[str, dict[str, Any]] = {
    "all": {},
    "quickstart": {
        "curricula": ["none", "paced"],
        "orders": ["easy_first"],
        "scores": ["confidence"],
        "pacings": ["linear"],
        "temperature_schedules": ["constant"],
    },
}


def preset(name: str, **overrides: Any) -> SpaceBounds:
    """A named space (``all``: every kind; ``quickstart``: none vs linear pacing)."""
    if name not in PRESETS:
        raise ValueError(f"space preset must be one of {', '.join(PRESETS)}; got {name!r}")
    return SpaceBounds(**{**PRESETS[name], **overrides})


def distillation_space(trial: optuna.Trial, bounds: SpaceBounds) -> None:
    """Define-by-run space over the curriculum kind and its conditional parameters, the loss
    form, the teacher-checkpoint schedule, the temperature (log scale) and its schedule, and
    alpha. Names unflatten into StudentConfig."""
    kind = trial.suggest_categorical("curriculum/kind", bounds.curricula)
    if kind in ("paced", "staged"):
        trial.suggest_categorical("curriculum/order", bounds.orders)
        trial.suggest_categorical("curriculum/score", bounds.scores)
    if kind == "paced" or kind == "self_paced":
        pacing = trial.suggest_categorical("curriculum/pacing/kind", bounds.pacings)
        trial.suggest_float("curriculum/pacing/start", *bounds.start)
        if pacing == "exp_steps":
            trial.suggest_float("curriculum/pacing/inc", *bounds.exp_steps_inc)
        else:
            trial.suggest_float("curriculum/pacing/full_at", *bounds.full_at)
        if pacing == "competence":
            trial.suggest_float("curriculum/pacing/power", *bounds.competence_power)
        elif pacing == "step":
            trial.suggest_int("curriculum/pacing/num_steps", *bounds.step_count)
    if kind == "self_paced":
        trial.suggest_categorical("curriculum/self_paced/regularizer", bounds.spl_regularizers)
    elif kind == "focal":
        trial.suggest_float("curriculum/focal_gamma", *bounds.focal_gamma)
    elif kind == "confidence":
        trial.suggest_float("curriculum/beta_max", *bounds.beta_max)
    elif kind == "staged":
        progression = trial.suggest_categorical("curriculum/progression", bounds.progressions)
        if progression == "threshold":
            trial.suggest_float("curriculum/gate_threshold", *bounds.gate_threshold)
        elif progression == "plateau":
            trial.suggest_int("curriculum/gate_patience", *bounds.gate_patience)
    if bounds.prune_fraction[1] > 0:
        trial.suggest_float("curriculum/prune_fraction", *bounds.prune_fraction)

    trial.suggest_categorical("distill/loss", bounds.losses)
    teacher_schedule = trial.suggest_categorical("teacher_schedule/kind", bounds.teacher_schedules)
    if teacher_schedule == "two_shot":  # from the checkpoint detected inside the transition
        trial.suggest_float("teacher_schedule/switch_at", *bounds.switch_at)
    elif teacher_schedule == "uniform_k":
        trial.suggest_int("teacher_schedule/k", *bounds.uniform_k)

    schedule = trial.suggest_categorical(
        "distill/temperature_schedule/kind", bounds.temperature_schedules
    )
    low, high = bounds.temperature
    if schedule == "ctkd":  # CTKD's temperature lives in (1, 21)
        low, high = min(max(low, 1.05), 20.0), min(max(high, 1.05), 20.0)
    trial.suggest_float("distill/temperature", low, high, log=True)
    if schedule in ("linear", "cosine"):
        trial.suggest_float("distill/temperature_schedule/end", *bounds.temperature_end, log=True)
    trial.suggest_float("distill/alpha", *bounds.alpha)


def suggest_config(
    trial: optuna.Trial, bounds: SpaceBounds, base: dict[str, Any]
) -> dict[str, Any]:
    """Run the space on ``trial`` and merge its choices into a copy of the nested ``base``
    config (what Ray Tune does with a define-by-run searcher's suggestion)."""
    distillation_space(trial, bounds)
    config = _deepcopy(base)
    for name, value in trial.params.items():
        node = config
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def _deepcopy(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in tree.items()}
