from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trainables.config import CURRICULUM_KINDS, CurriculumKind


class SpaceBounds(BaseModel):
    """What :func:`distillation_space` may choose from.

    Each range is ``[low, high]``; ``temperature`` is sampled on a log scale, the others
    uniformly. A range with ``low == high`` fixes that parameter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    curricula: list[CurriculumKind] = Field(
        default_factory=lambda: list(CURRICULUM_KINDS), min_length=1
    )
    temperature: tuple[float, float] = (1.0, 8.0)
    alpha: tuple[float, float] = (0.0, 1.0)
    start: tuple[float, float] = (0.1, 0.6)
    full_at: tuple[float, float] = (0.1, 0.9)

    @field_validator("curricula")
    @classmethod
    def _unique(cls, kinds: list[str]) -> list[str]:
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"has duplicates: {kinds}")
        return kinds

    @field_validator("temperature", "start", "full_at")
    @classmethod
    def _positive_fraction_range(cls, bounds: tuple[float, float], info: ValidationInfo):
        top = 100.0 if info.field_name == "temperature" else 1.0
        return _check_range(bounds, low=0.0, high=top, open_low=True)

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        return _check_range(bounds, low=0.0, high=1.0, open_low=False)


def _check_range(
    bounds: tuple[float, float], *, low: float, high: float, open_low: bool
) -> tuple[float, float]:
    a, b = bounds
    if not ((a > low if open_low else a >= low) and b <= high and a <= b):
        left = "(" if open_low else "["
        raise ValueError(
            f"must be [low, high] within {left}{low:g}, {high:g}] with low <= high, got [{a}, {b}]"
        )
    return bounds


def distillation_space(trial: optuna.Trial, bounds: SpaceBounds) -> None:
    """Curriculum kind with its conditional pacing parameters, temperature (log) and alpha."""
    kind = trial.suggest_categorical("curriculum/kind", bounds.curricula)
    if kind == "linear":
        trial.suggest_float("curriculum/start", *bounds.start)
        trial.suggest_float("curriculum/full_at", *bounds.full_at)
    trial.suggest_float("distill/temperature", *bounds.temperature, log=True)
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
