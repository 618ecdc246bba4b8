"""The sweep spec: a YAML file validated into typed objects before anything touches Ray.

Every problem is reported at once, one line each, naming the field (dotted path), the value
and what is allowed (:class:`SpecError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from spaces import SpaceBounds
from trainables.config import DataConfig, ModelConfig, OptimConfig, StudentConfig, TeacherConfig

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """A spec (or override) is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchSpec(_Strict):
    """Optuna's TPE sampler, seeded; ``n_startup_trials`` random trials before TPE kicks in.

    ``cover_curricula``: the first trials try each curriculum kind of the space once (their
    other parameters sampled), so no arm goes untried by chance.
    """

    algorithm: Literal["tpe"] = "tpe"
    n_startup_trials: int = Field(default=10, ge=0)
    cover_curricula: bool = True


class ResourcesSpec(_Strict):
    cpus_per_trial: float = Field(default=1.0, gt=0.0)
    max_concurrent: int | None = Field(default=None, ge=1)


class SweepSpec(_Strict):
    """A whole sweep: data, teacher, student, search space, search and budget."""

    name: str = Field(description="sweep name: results go to <storage>/<name>/")
    storage: str = "results"
    seed: int = 0
    num_samples: int = Field(default=10, ge=1)
    metric: Literal["val_accuracy", "best_val_accuracy", "val_loss", "steps_to_target_capped"] = (
        "val_accuracy"
    )
    mode: Literal["max", "min"] = "max"
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
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

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
        owned = {"data", "output_dir", "teacher_outputs"} & value.model_fields_set
        if owned:
            raise ValueError(
                f"{', '.join(sorted(owned))} is set by the sweep, not here (use the top-level data)"
            )
        return value

    @property
    def sweep_dir(self) -> Path:
        return Path(self.storage).resolve() / self.name

    def teacher_config(self, output_dir: str) -> TeacherConfig:
        return self.teacher.model_copy(update={"data": self.data, "output_dir": output_dir})

    def student_config(self, teacher_outputs: str) -> StudentConfig:
        return self.student.model_copy(
            update={"data": self.data, "teacher_outputs": teacher_outputs}
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
