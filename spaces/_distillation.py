"""The distillation search space: which config settings it draws, within which bounds.

Every parameter is named by its dotted config path (``distill.temperature``), the one name a
field has everywhere (Optuna, the ``trials`` table's ``config.distill.temperature``, PBT's
mutations, ``--set``). The kinds a choice may take are the config's own ``Literal`` types
(:mod:`trainables.config`), and whether a setting is drawn at all follows what the config
says its kind uses (:meth:`trainables.config.StrictModel.unused`): a new curriculum kind needs
no change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import optuna
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from trainables.config import (
    CTKD_TEMPERATURE,
    OOF_SCORES,
    BanditPolicy,
    BanditReward,
    CurriculumKind,
    LossForm,
    Order,
    PacingKind,
    Progression,
    ScheduleKind,
    ScoreKind,
    SPLRegularizer,
    StrictModel,
    StudentConfig,
    TeacherScheduleKind,
    kinds,
    nest,
    settings,
)
from trainables.config import MixtureSchedule as MixtureScheduleKind

Range = tuple[float, float]


@dataclass(frozen=True)
class Parameter:
    """One setting the space can draw: its config ``path``, the :class:`SpaceBounds` field
    holding its choices or range, and how it is drawn (``choice`` of the config's kinds,
    ``values``: a choice of plain values, ``float``, ``int``, ``weights``: one float per
    source named in :attr:`SpaceBounds.mixture_sources`, drawn at ``<path>.<source>``)."""

    path: str
    bounds: str
    draw: str = "float"
    log: bool = False


# In drawing order: a choice comes before the settings whose use it decides.
PARAMETERS = (
    Parameter("curriculum.kind", "curricula", "choice"),
    Parameter("curriculum.order", "orders", "choice"),
    Parameter("curriculum.score", "scores", "choice"),
    Parameter("curriculum.pacing.kind", "pacings", "choice"),
    Parameter("curriculum.pacing.start", "start"),
    Parameter("curriculum.pacing.inc", "exp_steps_inc"),
    Parameter("curriculum.pacing.full_at", "full_at"),
    Parameter("curriculum.pacing.power", "competence_power"),
    Parameter("curriculum.pacing.num_steps", "step_count", "int"),
    Parameter("curriculum.self_paced.regularizer", "spl_regularizers", "choice"),
    Parameter("curriculum.focal_gamma", "focal_gamma"),
    Parameter("curriculum.beta_max", "beta_max"),
    Parameter("curriculum.progression", "progressions", "choice"),
    Parameter("curriculum.gate_threshold", "gate_threshold"),
    Parameter("curriculum.gate_patience", "gate_patience", "int"),
    Parameter("curriculum.bandit.policy", "bandit_policies", "choice"),
    Parameter("curriculum.bandit.reward", "bandit_rewards", "choice"),
    Parameter("curriculum.bandit.buckets", "bandit_buckets", "int"),
    Parameter("curriculum.bandit.step_size", "bandit_step_size", log=True),
    Parameter("curriculum.bandit.exploration", "bandit_exploration"),
    Parameter("curriculum.bandit.window", "bandit_window", "int"),
    Parameter("curriculum.mixture.schedule", "mixture_schedules", "choice"),
    Parameter("curriculum.mixture.weights", "mixture_weight", "weights", log=True),
    Parameter("curriculum.mixture.end_weights", "mixture_weight", "weights", log=True),
    Parameter("curriculum.mixture.tau", "mixture_tau", log=True),
    Parameter("curriculum.mixture.tau_end", "mixture_tau", log=True),
    Parameter("curriculum.prune_fraction", "prune_fraction"),
    Parameter("distill.loss", "losses", "choice"),
    Parameter("teacher_schedule.kind", "teacher_schedules", "choice"),
    Parameter("teacher_schedule.switch_at", "switch_at"),
    Parameter("teacher_schedule.k", "uniform_k", "int"),
    Parameter("distill.temperature_schedule.kind", "temperature_schedules", "choice"),
    Parameter("distill.temperature", "temperature", log=True),
    Parameter("distill.temperature_schedule.end", "temperature_end", log=True),
    Parameter("distill.alpha", "alpha"),
    Parameter("distill.top_k", "top_ks", "values"),
)
PARAMETER_PATHS = tuple(p.path for p in PARAMETERS)
_BY_BOUNDS = {p.bounds: p for p in PARAMETERS}  # a shared range: its last parameter

# Kinds the config has but the space cannot draw, and why.
NOT_SEARCHABLE = {
    "teacher_schedule.kind": {"explicit": "needs its own steps and switches"},
    "curriculum.mixture.schedule": {"stages": "needs its own stages"},
    "distill.temperature_schedule.kind": {
        "step": "needs its own boundaries and values",
        "stage": "needs stage values",
    },
}
# Settings unset by default (their absence means something: a constant tau) that a search
# draws wherever the config would use them once set.
_UNSET_UNTIL_DRAWN = ("curriculum.mixture.tau_end",)
# A range is checked by building the config at its ends, with these settings beside it.
_RANGE_CONTEXT = {
    "distill.temperature_schedule.end": {"distill.temperature_schedule.kind": "linear"}
}


def _searchable(path: str, literal: Any, *, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The kinds of ``literal`` the space draws by default."""
    skip = set(NOT_SEARCHABLE.get(path, {})) | set(leave_out)
    return [k for k in kinds(literal) if k not in skip]


def _choices(path: str, literal: Any, *, leave_out: tuple[str, ...] = (), only=None):
    default = only or _searchable(path, literal, leave_out=leave_out)
    return Field(default_factory=lambda: list(default), min_length=1)


class SpaceBounds(StrictModel):
    """What :func:`distillation_space` may choose from. The defaults span every curriculum
    kind, order, score and pacing (the ``all`` preset).

    A choice list takes the config's kinds (``curricula``: ``curriculum.kind``, ...). Each range
    is ``[low, high]`` within what its config setting allows; ``temperature`` and
    ``temperature_end`` are sampled on a log scale, the others uniformly. A range with
    ``low == high`` or a choice list with one entry fixes that setting.
    """

    curricula: list[CurriculumKind] = _choices("curriculum.kind", CurriculumKind)
    orders: list[Order] = _choices("curriculum.order", Order)
    # column, length and rarity exist for some data only, the oof_* scores with
    # teacher.score_folds only: a space lists them explicitly
    # shapley values classification examples: left out where the task is a language model
    scores: list[ScoreKind] = _choices(
        "curriculum.score", ScoreKind, leave_out=("column", "length", "rarity", *OOF_SCORES)
    )
    pacings: list[PacingKind] = _choices(
        "curriculum.pacing.kind", PacingKind, leave_out=("constant",)
    )
    spl_regularizers: list[SPLRegularizer] = _choices(
        "curriculum.self_paced.regularizer", SPLRegularizer
    )
    progressions: list[Progression] = _choices("curriculum.progression", Progression)
    temperature_schedules: list[ScheduleKind] = _choices(
        "distill.temperature_schedule.kind", ScheduleKind
    )
    losses: list[LossForm] = _choices("distill.loss", LossForm, only=["hinton"])
    teacher_schedules: list[TeacherScheduleKind] = _choices(
        "teacher_schedule.kind", TeacherScheduleKind, only=["final"]
    )
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
    bandit_policies: list[BanditPolicy] = _choices("curriculum.bandit.policy", BanditPolicy)
    bandit_rewards: list[BanditReward] = _choices("curriculum.bandit.reward", BanditReward)
    bandit_buckets: tuple[int, int] = (3, 8)
    bandit_step_size: Range = (0.005, 0.5)
    bandit_exploration: Range = (0.01, 0.3)
    bandit_window: tuple[int, int] = (100, 1000)
    # unset (null): not searched, the student's own schedule stays (a hand-written linear or
    # stages mix keeps its weights); linear needs weights and end_weights to anneal between
    mixture_schedules: list[MixtureScheduleKind] | None = None
    mixture_tau: Range = (0.5, 10.0)
    # The sources whose mixture weights are searched (the data's source names): each weight
    # is drawn log-uniformly in ``mixture_weight`` and the config normalises them (the point
    # p_s = w_s / sum w on the simplex). Unset: weights are not searched (the base config's
    # stay: by default the natural mix).
    mixture_sources: list[str] | None = Field(default=None, min_length=2)
    mixture_weight: Range = (0.01, 1.0)
    # the teacher's top-k the student learns from (null: all the bank keeps); unset: not
    # searched, the student's own distill.top_k stays
    top_ks: list[Annotated[int, Field(ge=1, le=65536)] | None] | None = None

    @field_validator(*(p.bounds for p in PARAMETERS if p.draw in ("choice", "values")))
    @classmethod
    def _unique_and_searchable(cls, choices: list[str], info: ValidationInfo) -> list[str]:
        if choices is None:  # a setting the space leaves alone
            return choices
        if not choices:
            raise ValueError("needs at least one choice")
        path = _BY_BOUNDS[info.field_name].path
        refused = {c: why for c, why in NOT_SEARCHABLE.get(path, {}).items() if c in choices}
        if refused:
            kind, why = next(iter(refused.items()))
            raise ValueError(f"{kind!r} cannot be searched ({path} {why}); got {choices}")
        if len(set(choices)) != len(choices):
            raise ValueError(f"has duplicates: {choices}")
        return choices

    @field_validator(*(p.bounds for p in PARAMETERS if p.draw in ("float", "int")))
    @classmethod
    def _within_the_config(cls, bounds: Range, info: ValidationInfo) -> Range:
        """Both ends must be values the config setting accepts (the config states its limits
        once; the space does not repeat them)."""
        low, high = bounds
        if low > high:
            raise ValueError(f"must be [low, high] with low <= high, got [{low}, {high}]")
        path = _BY_BOUNDS[info.field_name].path
        for value in dict.fromkeys(bounds):
            problem = _config_problem(path, value)
            if problem:
                raise ValueError(f"{value} is not a valid {path}: {problem}")
        return bounds

    @field_validator("mixture_weight")
    @classmethod
    def _positive_weights(cls, bounds: Range) -> Range:
        low, high = bounds
        if not 0 < low <= high:
            raise ValueError(f"must be [low, high] with 0 < low <= high, got [{low}, {high}]")
        return bounds

    @field_validator("mixture_sources", mode="before")
    @classmethod
    def _source_names(cls, sources: Any) -> Any:
        """Integer sources (an integer source column) are named by their digits."""
        if isinstance(sources, list):
            return [
                str(s) if isinstance(s, int) and not isinstance(s, bool) else s for s in sources
            ]
        return sources

    @field_validator("mixture_sources")
    @classmethod
    def _distinct_sources(cls, sources: list[str] | None) -> list[str] | None:
        if sources is not None and len(set(sources)) != len(sources):
            raise ValueError(f"has duplicates: {sources}")
        dotted = [s for s in sources or () if "." in s or not s]
        if dotted:
            raise ValueError(
                f"{dotted[0]!r}: a searched source's weight is the parameter "
                "curriculum.mixture.weights.<source>, so its name cannot be empty or hold a "
                "'.'; rename the source in the data"
            )
        return sources

    def choices(self, parameter: Parameter) -> list[Any] | None:
        values = getattr(self, parameter.bounds)
        return None if values is None else list(values)

    def range_of(self, path: str) -> tuple[float, float]:
        """The bounds of the setting at ``path`` (e.g. ``distill.alpha``)."""
        (parameter,) = [p for p in PARAMETERS if p.path == path]
        return tuple(getattr(self, parameter.bounds))


def _config_problem(path: str, value: float) -> str | None:
    """Why a student config with ``value`` at ``path`` is invalid, or None."""
    try:
        StudentConfig.model_validate(nest({**_RANGE_CONTEXT.get(path, {}), path: value}))
    except ValidationError as exc:
        return exc.errors()[0]["msg"].removeprefix("Value error, ")
    return None


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


def distillation_space(
    trial: optuna.Trial, bounds: SpaceBounds, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Define-by-run space: walk :data:`PARAMETERS` in order and draw each setting the config
    drawn so far uses (over ``base``, a nested student config; default: the defaults). A
    setting whose range or choice list holds one value is not drawn but returned, with every
    other fixed value, as ``{path: value}`` (Ray Tune merges such constants into the
    suggestion). No computation beyond validating the partial config."""
    drawn: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for parameter in PARAMETERS:
        probe = {}  # a plain-values setting unset by default is used if a value would be
        if parameter.draw == "values":
            values = [v for v in bounds.choices(parameter) or [] if v is not None]
            probe = {parameter.path: values[0]} if values else {}
        if parameter.draw == "weights":
            if bounds.mixture_sources is None:  # not searched: the base config's stay
                continue
            probe = {parameter.path: dict.fromkeys(bounds.mixture_sources, 1.0)}
        if parameter.path in _UNSET_UNTIL_DRAWN:  # used once it has a value
            probe = {parameter.path: getattr(bounds, parameter.bounds)[0]}
        if not _used(parameter.path, {**fixed, **drawn, **probe}, base):
            continue
        if parameter.draw == "weights":
            low, high = bounds.mixture_weight
            for source in bounds.mixture_sources:
                path = f"{parameter.path}.{source}"
                if low == high:
                    fixed[path] = low
                else:
                    drawn[path] = trial.suggest_float(path, low, high, log=True)
            continue
        if parameter.draw in ("choice", "values"):
            choices = bounds.choices(parameter)
            if choices is None:  # not searched: the base config's value stays
                continue
            if parameter.path in ("curriculum.kind", "curriculum.score"):
                choices = supported(parameter.path, choices, {**fixed, **drawn}, base)
            if len(choices) == 1:
                fixed[parameter.path] = choices[0]
            else:
                drawn[parameter.path] = trial.suggest_categorical(parameter.path, choices)
            continue
        low, high = _range(parameter, bounds, {**fixed, **drawn})
        if low == high:
            fixed[parameter.path] = low
        elif parameter.draw == "int":
            drawn[parameter.path] = trial.suggest_int(parameter.path, low, high)
        else:
            drawn[parameter.path] = trial.suggest_float(
                parameter.path, low, high, log=parameter.log
            )
    return fixed


def supported(
    path: str, choices: list[str], chosen: dict[str, Any], base: dict[str, Any] | None
) -> list[str]:
    """The ``choices`` at ``path`` that the base config's data and task can run with the
    settings ``chosen`` so far (a ``mixture`` curriculum needs data with sources, the
    ``shapley`` score classification); all of them where the config does not validate
    without them either. The sweep notes what its space leaves out, and refuses a space
    with nothing runnable (:class:`search.spec.SweepSpec`)."""
    try:
        StudentConfig.model_validate(nest(chosen, into=base))
    except ValidationError:
        return choices
    out = []
    for choice in choices:
        try:
            StudentConfig.model_validate(nest({**chosen, path: choice}, into=base))
        except ValidationError:
            continue
        out.append(choice)
    return out or choices


def _range(parameter: Parameter, bounds: SpaceBounds, chosen: dict[str, Any]) -> tuple:
    low, high = getattr(bounds, parameter.bounds)
    ctkd = chosen.get("distill.temperature_schedule.kind") == "ctkd"
    if parameter.path == "distill.temperature" and ctkd:  # CTKD's temperature is bounded
        floor, ceiling = CTKD_TEMPERATURE[0] + 0.05, CTKD_TEMPERATURE[1] - 1.0
        low, high = min(max(low, floor), ceiling), min(max(high, floor), ceiling)
    return low, high


def _used(path: str, chosen: dict[str, Any], base: dict[str, Any] | None) -> bool:
    """Whether the student config with the choices so far uses the setting at ``path``. A
    partial config that does not validate yet (a schedule that needs the very value about to
    be drawn) counts as using it."""
    try:
        config = StudentConfig.model_validate(nest(chosen, into=base))
    except ValidationError:
        return True
    return settings(config)[path] is not None


def suggestion(
    trial: optuna.Trial, bounds: SpaceBounds, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the space on ``trial``: every setting it drew or fixed, ``{path: value}``."""
    fixed = distillation_space(trial, bounds, base)
    return {**trial.params, **fixed}


def suggest_config(
    trial: optuna.Trial, bounds: SpaceBounds, base: dict[str, Any]
) -> dict[str, Any]:
    """Run the space on ``trial`` and merge its choices into a copy of the nested ``base``
    config (what the sweep's searcher does with a suggestion)."""
    return nest(suggestion(trial, bounds, base), into=base)
