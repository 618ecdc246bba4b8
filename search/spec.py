"""The sweep spec: a YAML file validated into typed objects before anything touches Ray.

Every problem is reported at once, one line each, naming the field (dotted path), the value
and what is allowed (:class:`SpecError`), with credentials in URLs redacted (:func:`redact`).
Before validation a spec's size is bounded (:data:`MAX_VALUES`, :data:`MAX_DEPTH`: YAML alias
bombs, deep nesting) and the fields the sweep sets in each trial are refused
(:data:`SET_BY_THE_SWEEP`).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Sequence
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
from pydantic_core import InitErrorDetails, PydanticCustomError

from spaces import PARAMETER_PATHS, SpaceBounds, supported
from trainables.config import (
    OOF_SCORES,
    SEQUENCE_SCORES,
    SWEEP_SETS_DATA,
    DataConfig,
    ModelConfig,
    OptimConfig,
    SchedulerKind,
    SearchAlgorithm,
    StrictModel,
    StudentConfig,
    TaskConfig,
    TeacherConfig,
    check_curriculum,
    check_task,
    kinds,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # whole name: fullmatch, no trailing "\n"

# How big a spec may be, counted as expanded (a value reached twice through YAML aliases counts
# twice), checked before anything walks it recursively (PyYAML's composer, pydantic, json):
# a "billion laughs" file of a few lines expands to billions of values. The largest real spec,
# every field of SweepSpec written out, is ~500 values nested 7 deep; a search.points list of
# 1,000 points is ~40,000 values.
MAX_VALUES = 100_000
MAX_DEPTH = 64
_LIMITS = f"a sweep spec is at most {MAX_VALUES} values, nested at most {MAX_DEPTH} levels deep"

# Fields of the teacher's and student's configs that the sweep sets for each trial, and what
# to use instead; a spec (or --set) setting one is refused. ``seed`` is not among them: a
# student's repeats run with seeds ``seed, seed + 1, ...`` from the one the user sets.
SET_BY_THE_SWEEP: dict[str, dict[str, str]] = {
    "teacher": {
        "data": "use the top-level data, which the teacher and student share",
        "task": "use the top-level task, which the teacher and student share",
        "output_dir": "the teacher's run goes beside its bank under <storage>/_teachers/ "
        "(or teacher.bank.root)",
        "fold": "the sweep runs every fold of teacher.score_folds",
    },
    "student": {
        "data": "use the top-level data, which the teacher and student share",
        "task": "use the top-level task, which the teacher and student share",
        "teacher_bank": "the student learns from the sweep's own teacher; configure it under "
        "teacher",
        "repeats": "use the top-level repeats",
        "arm": "it labels each trial 'search' or 'baseline:<name>'; choose the baseline arms "
        "with the top-level baselines",
    },
}

_SET_BY_THE_SWEEP = "set by the sweep, not in a spec"

# ``scheme://user:password@`` (the password up to the token's last "@") and query parameters
# such as ``?password=`` / ``&sslkey=``; see :func:`redact`.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s'\"]*:)[^\s'\"]*@")
_SECRET_PARAMETER = re.compile(
    r"(?P<head>[?&;][\w.-]*(?:password|passwd|pwd|secret|token|key)=)[^&;#\s'\"]*", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``:
    ``postgresql://user:pw@host/db`` -> ``postgresql://user:***@host/db``, and
    ``?password=pw`` -> ``?password=***``. For whatever the sweep prints or stores; the
    staged spec of a submitted job keeps the real URL (the job needs it)."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _SECRET_PARAMETER.sub(r"\g<head>***", text)


def _redacted(value: Any) -> Any:
    """A JSON-like value with every string :func:`redact`-ed."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


class SpecError(ValueError):
    """A spec (or override) is invalid; ``problems`` holds one line per problem (credentials
    in URLs redacted: the lines are printed)."""

    def __init__(self, problems: list[str]) -> None:
        problems = [redact(problem) for problem in problems]
        super().__init__("\n".join(problems))
        self.problems = problems


Metric = Literal[
    "val_accuracy", "best_val_accuracy", "val_loss", "val_perplexity", "steps_to_target_capped",
    "wall_time_s", "samples_seen",
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
    with every report (``student.checkpoint.every: 1``), so a retried trial resumes from its
    last report instead of starting over: for long trials on clusters that lose nodes; costs
    one state save per report. PBT and PB2 trials always do. Single-worker trials only, so
    far. Without it a trial saves its student with its last report only
    (``student.checkpoint``; ``search.checkpoint_of`` finds it), and with every report
    under ASHA and median stopping, which may stop it before its last.
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
    task: TaskConfig = Field(default_factory=TaskConfig)
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

    def _check_space_needs(self) -> None:
        """A space none of whose curriculum kinds (or difficulty scores) this data and task
        can run is refused; otherwise the ones they cannot run are left out of the draws
        (:func:`spaces.supported`: a ``mixture`` needs data with sources, ``shapley``
        classification), with a note when the sweep starts."""
        base = self.space_base
        kinds = supported("curriculum.kind", self.space.curricula, {}, base)
        if not any(k != "mixture" for k in kinds) and self.data.sources is None:
            raise ValueError(
                "space.curricula: 'mixture' needs data with sources: set data.source_column "
                "(kind file) or data.noisy_source, or list other curricula"
            )
        if self.data.sources is None and self.space.mixture_sources is not None:
            raise ValueError(
                f"space.mixture_sources: {self.space.mixture_sources} but the data has no "
                "sources: set data.source_column (kind file) or data.noisy_source"
            )
        linear = "linear" in (self.space.mixture_schedules or [])
        mixture = self.student.curriculum.mixture
        own = mixture.weights is not None and mixture.end_weights is not None
        if linear and self.space.mixture_sources is None and not own:
            raise ValueError(
                "space.mixture_schedules: 'linear' anneals from weights to end_weights: list "
                "the sources in space.mixture_sources (both searched), or set "
                "student.curriculum.mixture.weights and end_weights"
            )
        if self.task.kind != "classify" and self.student.curriculum.prune_by == "shapley":
            raise ValueError(
                "student.curriculum.prune_by: 'shapley' (KNN-Shapley) values classification "
                f"examples; task.kind is {self.task.kind!r}"
            )
        if self.task.kind != "classify" and set(self.space.scores) == {"shapley"}:
            raise ValueError(
                f"space.scores: 'shapley' (KNN-Shapley) values classification examples; "
                f"task.kind is {self.task.kind!r}: list other scores"
            )

    def space_notes(self) -> list[str]:
        """What the space leaves out because this data or task cannot run it."""
        notes = []
        if self.data.sources is None and "mixture" in self.space.curricula:
            notes.append("the space leaves the mixture curriculum out: the data has no sources")
        if self.task.kind != "classify" and "shapley" in self.space.scores:
            notes.append("the space leaves the shapley score out: it values classification "
                         "examples")  # fmt: skip
        return notes

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
        for role in ("teacher", "student"):
            check_task(self.task, self.data, getattr(self, role).model, f"{role}.")
        try:
            check_curriculum(self.student.curriculum, self.data, self.task)
        except ValueError as exc:
            raise ValueError(f"student.{exc}") from None
        stored = self.teacher.bank.top_k
        wanted = [self.student.distill.top_k, *(self.space.top_ks or [])]
        wanted = [k for k in wanted if k is not None]
        if isinstance(stored, int) and wanted and max(wanted) > stored:
            raise ValueError(
                f"student.distill.top_k / space.top_ks: {max(wanted)} is more than the teacher "
                f"bank keeps (teacher.bank.top_k {stored}); use at most {stored}"
            )
        oof = [s for s in (self.student.curriculum.score, *self.space.scores) if s in OOF_SCORES]
        if oof and self.teacher.score_folds < 2:
            raise ValueError(
                f"space.scores / student.curriculum.score: {oof[0]!r} is a cross-fitted score; "
                "set teacher.score_folds (2 or more folds) to compute it"
            )
        self._check_space_needs()
        if self.data.is_tokens is False:  # a module dataset's items are known once read
            by_data = [s for s in SEQUENCE_SCORES if s in self.space.scores]
            if self.student.curriculum.score in SEQUENCE_SCORES:
                by_data.insert(0, self.student.curriculum.score)
            if by_data:
                raise ValueError(
                    f"space.scores / student.curriculum.score: {by_data[0]!r} is computed from "
                    f"token sequences; data.kind {self.data.kind!r} has none"
                )
        return self

    @property
    def objective_metrics(self) -> list[str]:
        return [o.metric for o in self.objectives] or [self.metric]

    @property
    def objective_modes(self) -> list[str]:
        return [o.mode for o in self.objectives] or [self.mode]

    @property
    def selection(self) -> tuple[str, str]:
        """The metric and mode the sweep selects on: ``metric`` / ``mode``, or the first
        objective's when ``objectives`` is set (the study, the schedulers, PBT's export and
        the printed best schedules all rank by it)."""
        return self.objective_metrics[0], self.objective_modes[0]

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name) or len(name) > 100:
            raise ValueError(
                f"must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or "
                f"digit, got {name!r}"
            )
        return name

    @field_validator("teacher", "student")
    @classmethod
    def _set_by_the_sweep(cls, value: TeacherConfig | StudentConfig, info: ValidationInfo):
        """Refuse :data:`SET_BY_THE_SWEEP` fields, one error each, in a config object given to
        the spec (:func:`validate_spec` catches them in a spec's mapping first)."""
        errors = [
            InitErrorDetails(
                type=PydanticCustomError("set_by_the_sweep", f"{_SET_BY_THE_SWEEP}; {hint}"),
                loc=(name,),
                input=getattr(value, name),
            )
            for name, hint in SET_BY_THE_SWEEP[info.field_name].items()
            if name in value.model_fields_set
        ]
        if errors:
            raise ValidationError.from_exception_data(type(value).__name__, errors)
        return value

    def public_json(self) -> dict[str, Any]:
        """``model_dump(mode="json")`` with credentials redacted from every string
        (:func:`redact`, e.g. a ``search.study_storage`` URL's password): what the sweep may
        store (its manifest) or print."""
        return _redacted(self.model_dump(mode="json"))

    def with_absolute_paths(self) -> SweepSpec:
        """This spec with its input files' relative paths (``data.path``, ``data.paths.*``,
        ``teacher.init_from``, the models' ``path``) made absolute against the current
        directory: trials run in directories of their own, where a relative path finds
        nothing. ``{stdlib}`` paths and absolute ones are kept as they are."""

        def absolute(value: str | None) -> str | None:
            if value is None or value.startswith("{stdlib}") or Path(value).is_absolute():
                return value
            return str(Path.cwd() / Path(value).expanduser())

        data = self.data.model_copy(update={"path": absolute(self.data.path)})
        if self.data.paths is not None:
            paths = {k: absolute(v) for k, v in self.data.paths.model_dump().items()}
            data = data.model_copy(update={"paths": self.data.paths.model_copy(update=paths)})
        roles = {
            role: getattr(self, role).model_copy(
                update={"model": getattr(self, role).model.model_copy(
                    update={"path": absolute(getattr(self, role).model.path)}
                )}
            )
            for role in ("teacher", "student")
        }  # fmt: skip
        roles["teacher"] = roles["teacher"].model_copy(
            update={"init_from": absolute(self.teacher.init_from)}
        )
        return self.model_copy(update={"data": data, **roles})

    @property
    def sweep_dir(self) -> Path:
        return Path(self.storage).resolve() / self.name

    def teacher_config(self, output_dir: str) -> TeacherConfig:
        return self.teacher.model_copy(
            update={"data": self.data, "task": self.task, "output_dir": output_dir}
        )

    @property
    def space_base(self) -> dict[str, Any]:
        """The nested student config the space draws over: ``student`` with the sweep's data
        and task, which decide what can run (a ``mixture`` needs data with sources)."""
        return {**self.student.model_dump(), "data": self.data.model_dump(),
                "task": self.task.model_dump()}  # fmt: skip

    def student_config(self, teacher_bank: str) -> StudentConfig:
        """The student config every trial starts from: ``student`` with the sweep's data,
        task, teacher bank and repeats, saving with every report when the trials must be
        able to continue from one (``resources.checkpoint``, PBT and PB2) or may be stopped
        before their last report (ASHA, median): every trial then leaves a student."""
        update = {"data": self.data, "task": self.task, "teacher_bank": teacher_bank,
                  "repeats": self.repeats}  # fmt: skip
        if self.resources.checkpoint or self.scheduler.kind != "fifo":
            update["checkpoint"] = self.student.checkpoint.model_copy(update={"every": 1})
        return self.student.model_copy(update=update)


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
        raw = _parse_yaml(path.read_text())
    except (UnicodeDecodeError, OSError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        raise SpecError([f"spec: cannot read {str(path)!r}: {reason}"]) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise SpecError([f"spec: {str(path)!r} is not valid YAML{line}"]) from None
    except _TooBig as exc:
        raise SpecError([f"spec: {str(path)!r} {exc}; {_LIMITS}"]) from None
    if not isinstance(raw, dict):
        raise SpecError(
            [f"spec: {str(path)!r} must be a mapping of keys, got {type(raw).__name__}"]
        )
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``a.b.c=value`` overrides in place; values are read as YAML (``1e-3``, ``[1, 2]``).

    The mappings along ``a.b`` are copied before they change: one shared through a YAML alias
    (``student: *common``) changes only where the override says."""
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
            value = _parse_yaml(text)
        except yaml.YAMLError:
            problems.append(f"--set {item!r}: value {text!r} is not valid YAML")
            continue
        except _TooBig as exc:
            problems.append(f"--set {_short(item)}: the value {exc}; {_LIMITS}")
            continue
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                problems.append(f"--set {item!r}: {where} is {child!r}, not a mapping")
                break
            node[part] = child = dict(child)
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise SpecError(problems)


def validate_spec(raw: dict[str, Any]) -> SweepSpec:
    """The spec ``raw`` describes; :class:`SpecError` lists every problem, one line each."""
    too_big = _too_big(raw, _value_children)
    if too_big:
        raise SpecError([f"spec: {too_big}; {_LIMITS}"])
    raw, problems = _without_sweep_fields(raw)
    try:
        spec = SweepSpec.model_validate(raw, context={SWEEP_SETS_DATA: True})
    except ValidationError as exc:
        problems += [_describe(err) for err in exc.errors()]
    if problems:
        raise SpecError(problems)
    return spec


def _without_sweep_fields(raw: Any) -> tuple[Any, list[str]]:
    """``raw`` without the :data:`SET_BY_THE_SWEEP` fields of its teacher and student, and one
    line for each that it sets (so they are reported beside every other problem)."""
    if not isinstance(raw, dict):
        return raw, []
    out, problems = dict(raw), []
    for section, owned in SET_BY_THE_SWEEP.items():
        given = raw.get(section)
        if not isinstance(given, dict) or not owned.keys() & given.keys():
            continue
        problems += [
            f"{section}.{name}: {_SET_BY_THE_SWEEP}; {hint} (got {_short(given[name])})"
            for name, hint in owned.items()
            if name in given
        ]
        out[section] = {k: v for k, v in given.items() if k not in owned}
    return out, problems


class _TooBig(ValueError):
    """A document beyond :data:`MAX_VALUES` / :data:`MAX_DEPTH`; the message says which."""


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing (:class:`_TooBig`) a document that expands beyond
    the limits before it is constructed: the composed node graph, where an alias is a shared
    node, is walked as expanded, so alias bombs (merge keys ``<<`` included) are caught at the
    cost of ``MAX_VALUES`` steps. PyYAML's composer recurses once per level: a document nested
    deeper than Python's recursion limit is refused the same way."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # an empty document
            return None
        too_big = _too_big(node, _node_children)
        if too_big:
            raise _TooBig(too_big)
        return loader.construct_document(node)
    except RecursionError:
        raise _TooBig(f"is nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def _too_big(root: Any, children: Callable[[Any], Sequence[Any]]) -> str | None:
    """Why ``root`` exceeds :data:`MAX_VALUES` values (counted as expanded: a value reached
    twice counts twice) or :data:`MAX_DEPTH` levels, or None. An explicit stack, no recursion;
    it stops as soon as a limit is crossed, so even a cyclic or exponential graph costs at
    most ``MAX_VALUES`` steps."""
    stack, count = [(root, 1)], 1
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"is nested more than {MAX_DEPTH} levels deep"
        below = children(node)
        count += len(below)
        if count > MAX_VALUES:
            return f"expands to more than {MAX_VALUES} values (YAML aliases?)"
        stack.extend((child, depth + 1) for child in below)
    return None


def _value_children(value: Any) -> Sequence[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return value if isinstance(value, (list, tuple)) else ()


def _node_children(node: yaml.Node) -> Sequence[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else ()


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
        # a model's own check names its field first ("pad_id: ..."): one dotted path
        name, sep, rest = msg.partition(": ")
        if sep and loc and _NAME.fullmatch(name) and name in _allowed_keys(err["loc"]):
            return f"{field}.{name}: {rest}"
        return f"{field}: {msg}"
    return f"{field}: {msg} (got {_short(value)})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = SweepSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        optional = [a for a in typing.get_args(model) if a is not type(None)]
        if len(optional) == 1 and type(None) in typing.get_args(model):  # X | None: X's keys
            model = optional[0]
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []


def _short(value: Any) -> str:
    text = redact(repr(value))  # before it is cut: a cut URL would keep half its password
    return text if len(text) <= 60 else text[:57] + "..."
