"""Typed configuration of the teacher and student trainables.

One model per component, validated once at the trainable's boundary: unknown keys are
rejected and every problem is reported together (pydantic collects them, with field paths).
Below this boundary the engine receives plain values, never these objects' dicts.

A trainable's ``config`` dict is exactly ``StudentConfig.model_dump()`` (or the teacher's);
search spaces write into it with ``/``-separated names such as ``distill/temperature``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

CURRICULUM_KINDS = ("none", "linear")
CurriculumKind = Literal["none", "linear"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the examples come from and how they are split.

    ``kind: digits`` uses scikit-learn's handwritten digits (1,797 8x8 images, 10 classes).
    ``kind: file`` reads a user's table: ``.npz`` with arrays ``x`` and ``y``, or ``.parquet``
    with numeric feature columns plus ``label_column``.
    """

    kind: Literal["digits", "file"] = "digits"
    path: str | None = Field(
        default=None,
        validate_default=True,
        description="data file for kind=file (.npz with arrays x, y; or .parquet)",
    )
    label_column: str = "label"
    val_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    split_seed: int = 0
    standardize: bool = True

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind != "file":
            if path is not None:
                raise ValueError(f"only allowed when kind is 'file' (kind is {kind!r})")
            return path
        if not path:
            raise ValueError("required when kind is 'file': a .npz or .parquet file")
        if Path(path).suffix not in (".npz", ".parquet"):
            raise ValueError(f"{path!r} must end in .npz or .parquet")
        if not Path(path).is_file():
            raise ValueError(f"{path!r} does not exist or is not a file")
        return path


class ModelConfig(_Strict):
    """A multilayer perceptron: ``hidden`` widths, ReLU between layers."""

    hidden: list[int] = Field(default_factory=lambda: [32], max_length=8)

    @field_validator("hidden")
    @classmethod
    def _check_widths(cls, hidden: list[int]) -> list[int]:
        if any(w < 1 for w in hidden):
            raise ValueError(f"widths must be >= 1, got {hidden}")
        return hidden


class OptimConfig(_Strict):
    """Adam with a fixed step budget."""

    lr: float = Field(default=3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=32, ge=1)
    steps: int = Field(default=600, ge=1)


class DistillConfig(_Strict):
    """KD loss weights: ``alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T)``."""

    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)


class CurriculumConfig(_Strict):
    """Which examples the student may see, as a function of the fraction of the run done.

    ``none``: uniform shuffling over all data. ``linear``: the easiest fraction
    ``c(p) = min(1, start + (1 - start) * p / full_at)`` of the data (Wu et al. 2021's linear
    pacing with b = start, a = full_at); difficulty is the teacher's confidence on the label.
    ``start`` and ``full_at`` are ignored by ``none``.
    """

    kind: CurriculumKind = "none"
    start: float = Field(default=0.2, gt=0.0, le=1.0)
    full_at: float = Field(default=0.5, gt=0.0, le=1.0)


class TeacherConfig(_Strict):
    """Configuration of :func:`trainables.train_teacher`.

    ``output_dir`` is where the teacher's logits on every split are written (Arrow IPC),
    atomically: the directory appears only once complete.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(hidden=[256, 256]))
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=1e-3, batch_size=64, steps=800)
    )
    eval_every: int = Field(default=100, ge=1)
    seed: int = 0
    output_dir: str | None = None


class StudentConfig(_Strict):
    """Configuration of :func:`trainables.train_student`.

    ``teacher_outputs`` is a directory written by the teacher trainable. ``target_accuracy``
    defines ``steps_to_target``: the first evaluated step whose validation accuracy reaches it.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    eval_every: int = Field(default=100, ge=1)
    target_accuracy: float = Field(default=0.9, gt=0.0, le=1.0)
    seed: int = 0
    teacher_outputs: str | None = None
