"""The sweep spec: a YAML file validated into typed objects before anything touches Ray.

Every problem is reported at once, one line each, naming the field (dotted path), the value
and what is allowed (:class:`SpecError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from spaces import PARAMETER_PATHS, SpaceBounds
from trainables.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    SchedulerKind,
    SearchAlgorithm,
    StrictModel,
    StudentConfig,
    TeacherConfig,
    kinds,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """A spec (or override) is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


Metric = Literal[
    "val_accuracy", "best_val_accuracy", "val_loss", "steps_to_target_capped", "wall_time_s",
    "samples_seen",
]  # fmt: skip
Mode = Literal["max", "min"]
Baseline = Literal["oneshot", "labels_only", "no_curriculum"]


class Objective(StrictModel):
    metric: Metric
    mode: Mode


class SearchSpec(StrictModel):
    """The search algorithm: an Optuna sampler, seeded with the sweep's ``seed``.

    ``tpe`` (multivariate and grouped by default, for conditional spaces), ``cmaes`` (the
    continuous parameters; categorical ones sampled independently), ``nsga2`` (multi-objective),
    ``random``, ``grid`` (over ``grid``: parameter name -> values, e.g.
    ``{"curriculum.kind": [none, paced]}``; parameters not in it are drawn at random).
    ``n_startup_trials`` random trials come before TPE / CMA-ES model the space.
    ``cover_curricula``: the first trials try each curriculum kind of the space once;
    ``points``: starting points (parameter name -> value, the rest sampled), tried first.
    ``study_storage``: an RDB URL for the Optuna study; default a journal file in the sweep
    directory (``optuna.journal``), so the study survives a crash and a re-run continues it.
    """

    algorithm: SearchAlgorithm = "tpe"
    n_startup_trials: int = Field(default=10, ge=0)
    multivariate: bool = True
    group: bool = True
    population_size: int = Field(default=20, ge=2)
    cover_curricula: bool = True
    points: list[dict[str, Any]] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    study_storage: str | None = None

    @model_validator(mode="after")
    def _check_grid(self) -> SearchSpec:
        if self.algorithm == "grid" and not self.grid:
            raise ValueError("algorithm 'grid' needs grid: parameter name -> list of values")
        if any(not values for values in self.grid.values()):
            raise ValueError("every grid parameter needs at least one value")
        return self

    @field_validator("grid", "points")
    @classmethod
    def _known_parameters(cls, value, info: ValidationInfo):
        names = value if info.field_name == "grid" else [n for p in value for n in p]
        unknown = [n for n in names if n not in PARAMETER_PATHS]
        if unknown:
            hint = unknown[0].replace("/", ".")
            hint = f" (did you mean {hint!r}?)" if hint in PARAMETER_PATHS else ""
            raise ValueError(
                f"unknown parameter {unknown[0]!r}{hint}; parameters are named by their config "
                f"path: {', '.join(PARAMETER_PATHS)}"
            )
        return value


class SchedulerSpec(StrictModel):
    """Early stopping on the student's own ``step`` counter (not ``training_iteration``).

    ``fifo``: none. ``asha``: asynchronous successive halving, rungs from ``grace_period``
    (a fraction of ``student.optim.steps``) by ``reduction_factor``. ``median``: stop a trial
    whose best result so far is below the median of the others' running averages at the same
    step, after ``grace_period`` and once ``min_samples`` trials have reported.
    ``pbt``: Population Based Training (Jaderberg et al. 2017) over the temperature, alpha and
    the pacing's ``start`` and ``full_at`` (its rate), within the space's bounds:
    every ``perturbation_interval`` of the run, a trial in the bottom ``quantile_fraction``
    continues from a top trial's state (model, optimiser, sampler) with that trial's settings
    perturbed (x0.8 / x1.2, or resampled from the space with ``resample_probability``). The
    population is drawn at random from the space; the best lineage's schedule is exported to
    ``<sweep>/pbt_schedule.yaml``, replayable as a student config. ``pb2``: the same with
    PB2's GP bandit choosing the new settings (Parker-Holder et al. 2020).
    """

    kind: SchedulerKind = "fifo"
    grace_period: float = Field(default=0.1, gt=0.0, le=1.0)
    reduction_factor: float = Field(default=3.0, gt=1.0)
    min_samples: int = Field(default=3, ge=1)
    perturbation_interval: float = Field(default=0.2, gt=0.0, lt=1.0)
    quantile_fraction: float = Field(default=0.25, gt=0.0, le=0.5)
    resample_probability: float = Field(default=0.25, ge=0.0, le=1.0)

    @property
    def population_based(self) -> bool:
        """PBT or PB2: trials continue from each other's checkpoints under new settings."""
        return self.kind in ("pbt", "pb2")


class ResourcesSpec(StrictModel):
    """Per trial: ``workers`` Ray Train workers of ``cpus_per_trial`` CPUs each (1: the loop
    runs inline in the Tune trial; more: TorchTrainer with DDP over gloo, or NCCL with one GPU
    per worker). ``gpus_per_trial``: whole or fractional (e.g. 0.25: four trials share a GPU)
    for single-worker trials; ``workers`` for multi-worker ones. ``max_concurrent``
    defaults to what the cluster's CPUs (and GPUs) hold. ``start_timeout_s``: a multi-worker
    trial whose workers cannot be placed in time fails with a clear message.
    ``max_failures``: retries of a failed trial before it counts as failed. Every error is
    retried, a diverging (NaN) trial too, so the default is 1; on clusters that lose nodes
    use 3: a node lost costs each trial running there one failure (see ``reuse_processes``).
    ``checkpoint``: save each trial's whole state (model, optimiser, sampler, generators)
    with every report, so a retried trial resumes from its last report instead of starting
    over: for long trials on clusters that lose nodes; costs one state save per report.
    PBT and PB2 trials always checkpoint. Single-worker trials only, so far.
    ``reuse_processes``: whether a single-worker trial may run in the process a finished one
    leaves (saves ~2 s of start-up per trial). Default: yes on a one-node cluster and under
    PBT/PB2, no on a multi-node one, where a process reused on a node just lost fails its
    trial without a retry (Ray 2.60), whatever ``max_failures`` says."""

    cpus_per_trial: float = Field(default=1.0, gt=0.0)
    workers: int = Field(default=1, ge=1, le=256)
    gpus_per_trial: float = Field(default=0.0, ge=0.0)
    max_concurrent: int | None = Field(default=None, ge=1)
    start_timeout_s: float = Field(default=120.0, gt=0.0)
    max_failures: int = Field(default=1, ge=0)
    reuse_processes: bool | None = None
    checkpoint: bool = False

    @model_validator(mode="after")
    def _checkpoint_single_worker(self) -> ResourcesSpec:
        if self.checkpoint and self.workers > 1:
            raise ValueError(
                f"checkpoint: only single-worker trials (workers: 1) checkpoint so far, got "
                f"workers: {self.workers}"
            )
        return self

    @model_validator(mode="after")
    def _whole_gpus_for_workers(self) -> ResourcesSpec:
        if self.workers > 1 and self.gpus_per_trial not in (0, self.workers):
            raise ValueError(
                f"gpus_per_trial: a {self.workers}-worker trial takes one GPU per worker "
                f"({self.workers}) or none, got {self.gpus_per_trial}; fractional GPUs are for "
                "single-worker trials only (ray#48012)"
            )
        return self


class SweepSpec(StrictModel):
    """A whole sweep: data, teacher, student, search space, search, scheduler, budget, repeats,
    baselines, resources and storage."""

    name: str = Field(description="sweep name: results go to <storage>/<name>/")
    storage: str = "results"
    seed: int = 0
    num_samples: int = Field(default=10, ge=1, description="searched trials (baselines extra)")
    time_budget_s: float | None = Field(
        default=None, gt=0,
        description="wall-clock budget of the student phase in seconds: then no trial starts "
        "and running ones stop (recorded as stopped; `run` again continues the sweep)",
    )  # fmt: skip
    metric: Metric = "val_accuracy"
    mode: Mode = "max"
    objectives: list[Objective] = Field(default_factory=list, max_length=4)
    repeats: int = Field(default=1, ge=1, le=64)
    baselines: list[Baseline] = Field(default_factory=lambda: list(kinds(Baseline)))
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(
        default_factory=lambda: TeacherConfig(
            model=ModelConfig(hidden=[256, 256]),
            optim=OptimConfig(lr=1e-3, batch_size=64, steps=800),
        )
    )
    student: StudentConfig = Field(default_factory=StudentConfig)
    space: SpaceBounds = Field(default_factory=SpaceBounds)
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @model_validator(mode="after")
    def _check_combinations(self) -> SweepSpec:
        multi = len(self.objectives) > 1
        if multi and self.scheduler.kind != "fifo":
            raise ValueError(
                f"scheduler.kind {self.scheduler.kind!r} stops trials on one metric; "
                "use fifo with several objectives"
            )
        population = self.scheduler.population_based
        chosen = "algorithm" in self.search.model_fields_set  # tpe by default: not a choice
        if population and chosen and self.search.algorithm != "random":
            raise ValueError(
                f"scheduler.kind {self.scheduler.kind!r} draws its population at random (Ray "
                f"Tune runs no search algorithm beside {self.scheduler.kind}); got "
                f"search.algorithm {self.search.algorithm!r}: use search.algorithm: random"
            )
        if population and self.resources.workers > 1:
            raise ValueError(
                f"scheduler.kind {self.scheduler.kind!r} continues trials from each other's "
                "checkpoints, which only single-worker trials write so far; got "
                f"resources.workers {self.resources.workers}: use 1"
            )
        if multi and self.search.algorithm in ("cmaes",):
            raise ValueError(
                "search.algorithm 'cmaes' is single-objective; use nsga2, tpe or random"
            )
        if len({o.metric for o in self.objectives}) != len(self.objectives):
            raise ValueError("objectives: each metric at most once")
        return self

    @property
    def objective_metrics(self) -> list[str]:
        return [o.metric for o in self.objectives] or [self.metric]

    @property
    def objective_modes(self) -> list[str]:
        return [o.mode for o in self.objectives] or [self.mode]

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME.match(name) or len(name) > 100:
            raise ValueError(
                f"must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or "
                f"digit, got {name!r}"
            )
        return name

    @field_validator("teacher", "student")
    @classmethod
    def _set_by_the_sweep(cls, value: TeacherConfig | StudentConfig, info: ValidationInfo):
        owned = {"data", "bank_dir", "teacher_bank", "repeats"} & value.model_fields_set
        if owned:
            raise ValueError(
                f"{', '.join(sorted(owned))} is set by the sweep, not here (use the top-level "
                "data / repeats)"
            )
        return value

    @property
    def sweep_dir(self) -> Path:
        return Path(self.storage).resolve() / self.name

    def teacher_config(self, bank_dir: str) -> TeacherConfig:
        return self.teacher.model_copy(update={"data": self.data, "bank_dir": bank_dir})

    def student_config(self, teacher_bank: str) -> StudentConfig:
        return self.student.model_copy(
            update={"data": self.data, "teacher_bank": teacher_bank, "repeats": self.repeats}
        )


def load_spec(path: str | Path, overrides: list[str] = ()) -> SweepSpec:
    """Read, override and validate a spec file; raise :class:`SpecError` listing every problem."""
    raw = read_yaml(path)
    try:
        apply_overrides(raw, overrides)
    except SpecError as override_error:
        try:
            validate_spec(raw)
        except SpecError as spec_error:
            raise SpecError(override_error.problems + spec_error.problems) from None
        raise
    return validate_spec(raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"spec: file {str(path)!r} does not exist"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise SpecError([f"spec: {str(path)!r} is not valid YAML{line}"]) from None
    if not isinstance(raw, dict):
        raise SpecError(
            [f"spec: {str(path)!r} must be a mapping of keys, got {type(raw).__name__}"]
        )
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``a.b.c=value`` overrides in place; values are read as YAML (``1e-3``, ``[1, 2]``)."""
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(
                f"--set {item!r}: expected KEY=VALUE with a dotted KEY, "
                "e.g. student.optim.steps=300"
            )
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            problems.append(f"--set {item!r}: value {text!r} is not valid YAML")
            continue
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                problems.append(f"--set {item!r}: {where} is {child!r}, not a mapping")
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise SpecError(problems)


def validate_spec(raw: dict[str, Any]) -> SweepSpec:
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_describe(err) for err in exc.errors()]) from None


def _describe(err: dict[str, Any]) -> str:
    """One line: ``field.path: problem (got value)``."""
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc) or "spec"
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(err["loc"][:-1])
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{field}: unknown key{hint}"
    if kind == "missing":
        return f"{field}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind.startswith("value_error") or kind == "assertion_error":
        return f"{field}: {msg}"
    return f"{field}: {msg} (got {_short(value)})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = SweepSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
