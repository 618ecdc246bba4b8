"""Typed configuration of the teacher and student trainables.

One model per component, validated once at the trainable's boundary: unknown keys are
rejected and every problem is reported together (pydantic collects them, with field paths).
Below this boundary the engine receives plain values, never these objects' dicts.

A trainable's ``config`` dict is exactly ``StudentConfig.model_dump()`` (or the teacher's).
A setting's one name, everywhere a user meets it (search spaces, result columns, ``--set``,
PBT), is its dotted path, ``distill.temperature``; :func:`nest` and :func:`flatten` convert
between dotted paths and the nested dicts the trainables and Ray Tune take.

This module is also the vocabulary: every kind (curriculum, pacing, score, schedule, ...) is
a ``Literal`` here, and each config class says in ``unused()`` which settings its kind does
not use; the search space, the trials table and the progress line derive from both.
"""

from __future__ import annotations

import copy
import math
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# The vocabulary: every kind is named once, here. Space bounds, PBT mutations, column
# translations, the progress line and the docs derive from these (``kinds(CurriculumKind)``).
CurriculumKind = Literal[
    "none", "paced", "confidence", "self_paced", "focal", "importance", "rho", "staged", "bandit",
    "mixture",
]  # fmt: skip
Order = Literal["easy_first", "hard_first", "random"]
ScoreKind = Literal[
    "confidence", "margin", "loss", "entropy", "el2n", "forgetting", "column", "length", "rarity",
    "oof_confidence", "oof_margin", "oof_loss", "oof_entropy", "shapley",
]  # fmt: skip
PacingKind = Literal[
    "constant", "linear", "quadratic", "root", "exp", "log", "step", "competence", "exp_steps"
]  # fmt: skip
SPLRegularizer = Literal["hard", "linear", "log", "mixture"]
SPLGrowth = Literal["mu", "pacing"]
Progression = Literal["fixed", "threshold", "plateau"]
PruneBy = Literal["score", "forgetting", "shapley"]
BanditPolicy = Literal["exp3s", "thompson"]
BanditReward = Literal["prediction_gain", "self_prediction_gain", "target_prediction_gain"]
MixtureSchedule = Literal["constant", "stages", "linear", "temperature"]
LossForm = Literal["hinton", "progressive"]
TeacherScheduleKind = Literal["final", "lockstep", "two_shot", "uniform_k", "explicit"]
ScheduleKind = Literal["constant", "linear", "cosine", "step", "stage", "ctkd"]
DataKind = Literal["digits", "file", "sparse_parity", "tokens", "text", "pcfg", "module"]
TaskKind = Literal["classify", "masked_lm", "causal_lm"]
ModelKind = Literal["mlp", "cnn", "transformer", "module", "hf"]
OptimizerKind = Literal["adam", "adamw", "sgd"]
SchedulerKind = Literal["fifo", "asha", "median", "pbt", "pb2"]
SearchAlgorithm = Literal["tpe", "cmaes", "nsga2", "random", "grid"]

CTKD_TEMPERATURE = (1.0, 21.0)  # CTKD's learned temperature lies in this open interval
TOKEN_DATA = ("tokens", "text", "pcfg")  # data kinds whose examples are token sequences
SEQUENCE_SCORES = ("length", "rarity")  # difficulty scores computed from token data
OOF_SCORES = ("oof_confidence", "oof_margin", "oof_loss", "oof_entropy")  # need score_folds
DENSE_UP_TO = 1024  # a bank stores dense outputs up to this many classes / tokens, else top-k
DEFAULT_TOP_K = 32
BankPrecision = Literal["fp16", "int8"]


def kinds(literal: Any) -> tuple[str, ...]:
    """The values of one of the vocabulary's ``Literal`` types, in order."""
    return typing.get_args(literal)


class StrictModel(BaseModel):
    """The base of every config and spec model: unknown keys are errors, values are frozen.

    :meth:`unused` names the fields this object's own values make irrelevant (a ``none``
    curriculum uses no pacing): :func:`settings` reports them as null, and the search space
    draws only what is used. A new kind declares what it uses there, nowhere else.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def unused(self) -> set[str]:
        """Names (dotted below this model) of the fields that these values do not use."""
        return set()


_DATA_SUFFIXES = {"file": (".npz", ".parquet"), "tokens": (".npy", ".parquet")}  # per kind


class DataPaths(StrictModel):
    """``data.paths``: one file per split (kinds ``file`` and ``tokens``), each by the rules of
    ``data.path``; ``holdout`` (optional): rows reserved for training-time decisions, added to
    the training split after its own rows (:attr:`trainables.data.Splits.holdout`)."""

    train: str
    val: str
    test: str
    holdout: str | None = None


class DataConfig(StrictModel):
    """Where the examples come from and how they are split.

    - ``digits``: scikit-learn's handwritten digits (1,797 8x8 images, 10 classes); with
      ``shape: [1, 8, 8]`` each example is a one-channel image (for a ``cnn``).
    - ``file``: a user's table: ``.npz`` with arrays ``x`` (``(n, ...)``, any trailing shape,
      e.g. images) and ``y``; or ``.parquet`` with numeric feature columns (scalars, lists or
      fixed-size lists) plus ``label_column`` (a pandas index stored in the file is not a
      feature). ``shape`` reshapes each example's features.
    - ``sparse_parity``: (``n_bits``, ``k``) sparse parity (Panigrahi et al. 2024): x uniform
      in {-1, +1}^n_bits, the label the parity of the first ``k`` bits, ``train_size`` training
      examples (labels flipped with probability ``label_noise``), ``holdout_size`` each for
      validation and test.
    - ``tokens``: pre-tokenized sequences, a ``.npy`` ``(n, seq_len)`` integer array
      (memory-mapped) or a Parquet ``list<int>`` column ``tokens_column`` (shorter sequences
      padded with ``pad_id``); ids in ``[0, vocab_size)`` (default: the largest id + 1).
    - ``text``: UTF-8 text files (``path``: a file, a directory searched for ``*.txt`` and
      ``*.py``, or a glob), byte-level tokens (``vocab_size`` 256), cut into windows of
      ``seq_len`` bytes; at most ``max_examples`` windows, drawn evenly over the text.
      ``{stdlib}`` in ``path`` stands for this Python's standard-library directory, so an
      example can train on the standard library's sources, present on every machine.
      ``whole_lines: true`` trims each window to the whole lines in it (padded with id 256),
      so sequences vary in length and never start or end mid-line.
    - ``pcfg``: sequences of ``seq_len`` terminals from a seeded probabilistic context-free
      grammar (``pcfg_*`` fields, ``vocab_size`` terminals; the setting of Panigrahi et al. 2024
      after Allen-Zhu & Li's cfg3), ``train_size`` for training and ``holdout_size`` each for
      validation and test.
    - ``module``: a user factory ``"package.module:function"`` called with ``kwargs``, returning
      a map-style ``torch.utils.data.Dataset`` whose items are ``(x, label)`` pairs (``classify``)
      or 1-D token tensors (language-model tasks). It is imported where the trial runs.

    Splits: by default a seeded permutation of the rows cut by ``val_fraction`` and
    ``test_fraction`` (``split_seed``). Kinds ``file`` and ``tokens`` take the user's split
    instead, so a clean test set stays exactly the test set:

    - ``split_column``: a string column of the Parquet ``path`` naming each row's split,
      ``train``, ``val``, ``test`` or ``holdout`` (any other value is an error); rows keep
      their file order within a split.
    - ``paths: {train: ..., val: ..., test: ..., holdout: ...}`` (holdout optional): one file
      per split instead of ``path``, all of one format; the files must agree (feature columns
      and their kinds, or ``x``'s example shape; ``.npy`` token files the same length), and
      the classes or vocabulary are those of all the files together. No file may serve two
      splits (the same resolved path, or a copy with the same bytes).

    Each of train, val and test needs a row, and (``file``) every class of the val and test
    rows needs ``train`` rows (holdout rows do not count; a training class missing from val
    or test is fine: a small val set may miss one). ``holdout`` rows (optional) join the
    training split after its own rows and are marked there
    (:attr:`trainables.data.Splits.holdout`), for training-time decisions that must not use
    validation data. With a user split
    ``val_fraction`` and ``test_fraction`` are unused (setting either to other than its
    default is refused, not ignored) and ``split_seed`` does not move a row.
    """

    kind: DataKind = "digits"
    paths: DataPaths | None = Field(
        default=None,
        description="kind=file or tokens: one file per split (train, val, test; optional "
        "holdout), instead of path",
    )
    path: str | None = Field(
        default=None,
        validate_default=True,
        description="kind=file: .npz or .parquet; kind=tokens: .npy or .parquet; kind=text: a "
        "file, a directory or a glob",
    )
    label_column: str = "label"
    difficulty_column: str | None = Field(
        default=None, description="a column of per-example difficulty (score: column)"
    )
    split_column: str | None = Field(
        default=None,
        description="kind=file or tokens, a .parquet path: a string column naming each row's "
        "split (train, val, test or holdout)",
    )
    source_column: str | None = Field(
        default=None,
        description="kind=file: a column (Parquet) or array (.npz) naming each row's source, "
        "for mixture and bandit curricula over sources",
    )
    noisy_source: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="classification data: this fraction of the training rows becomes a source "
        "'noisy' with uniformly random labels, the rest source 'clean' (seeded by split_seed; "
        "validation and test stay clean): a constructed task for data-mix curricula",
    )
    tokens_column: str = "tokens"
    shape: list[int] | None = Field(default=None, min_length=1, max_length=4)
    vocab_size: int | None = Field(default=None, ge=2, le=1_000_000)
    pad_id: int | None = Field(default=None, ge=0)
    seq_len: int = Field(default=64, ge=2, le=65_536)
    whole_lines: bool = False
    max_examples: int | None = Field(default=None, ge=10)
    factory: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    val_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    split_seed: int = 0
    standardize: bool = True
    n_bits: int = Field(default=50, ge=2, le=10_000)
    k: int = Field(default=4, ge=1, le=64)
    train_size: int = Field(default=100_000, ge=10)
    holdout_size: int = Field(default=4096, ge=10)
    label_noise: float = Field(default=0.0, ge=0.0, lt=0.5)
    pcfg_levels: int = Field(default=4, ge=1, le=12)
    pcfg_symbols: int = Field(default=3, ge=1, le=64)
    pcfg_rules: int = Field(default=2, ge=1, le=16)
    pcfg_seed: int = 0

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, shape: list[int] | None) -> list[int] | None:
        if shape is not None and any(d < 1 for d in shape):
            raise ValueError(f"every dimension must be >= 1, got {shape}")
        return shape

    @field_validator("paths")
    @classmethod
    def _check_paths(cls, paths: DataPaths | None, info: ValidationInfo) -> DataPaths | None:
        """Each split's file: it exists, with a suffix of ``kind``, the same for every split."""
        kind = info.data.get("kind")
        if paths is None:
            return paths
        if kind not in _DATA_SUFFIXES:
            raise ValueError(f"only allowed when kind is 'file' or 'tokens' (kind is {kind!r})")
        allowed = _DATA_SUFFIXES[kind]
        given = [(n, getattr(paths, n)) for n in type(paths).model_fields]
        given = [(split, path) for split, path in given if path is not None]
        for split, path in given:
            if Path(path).suffix not in allowed:
                raise ValueError(
                    f"{split}: {path!r} must end in {' or '.join(allowed)} for kind {kind!r}"
                )
        for split, path in given:
            if Path(path).suffix != Path(paths.train).suffix:
                raise ValueError(
                    f"{split}: {path!r} is {Path(path).suffix} but train {paths.train!r} is "
                    f"{Path(paths.train).suffix}; every split's file must have the same format"
                )
            if not Path(path).is_file():
                raise ValueError(f"{split}: file {path!r} does not exist or is not a file")
        return paths

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        suffixes = _DATA_SUFFIXES
        if kind not in ("file", "tokens", "text"):
            if path is not None:
                raise ValueError(
                    f"only allowed when kind is 'file', 'tokens' or 'text' (kind is {kind!r})"
                )
            return path
        if kind in suffixes and info.data.get("paths", False) is not None:
            # data.paths given (or refused: that error is reported already)
            if path is not None and "paths" in info.data:
                raise ValueError(
                    "not allowed together with data.paths: give one file (path) or one file "
                    "per split (paths)"
                )
            return path
        if not path:
            what = " or ".join(suffixes.get(kind, ("a text file, directory or glob",)))
            raise ValueError(f"required when kind is {kind!r}: {what}")
        if kind == "text":
            return path  # a glob: checked with the data (trainables.data.check_data)
        if Path(path).suffix not in suffixes[kind]:
            raise ValueError(
                f"{path!r} must end in {' or '.join(suffixes[kind])} for kind {kind!r}"
            )
        if not Path(path).is_file():
            raise ValueError(f"{path!r} does not exist or is not a file")
        return path

    @model_validator(mode="after")
    def _check_kind_fields(self) -> DataConfig:
        if self.kind == "module" and not self.factory:
            raise ValueError("factory: required when kind is 'module' ('package.module:function')")
        if self.factory is not None and self.kind != "module":
            raise ValueError(f"factory: only allowed when kind is 'module' (kind is {self.kind!r})")
        if self.kind == "text" and self.vocab_size not in (None, 256):
            raise ValueError(f"vocab_size: text is byte-level (256 ids), got {self.vocab_size}")
        if (
            self.pad_id is not None
            and self.vocab_size is not None
            and self.pad_id >= self.vocab_size
        ):
            raise ValueError(f"pad_id: {self.pad_id} must be < vocab_size {self.vocab_size}")
        self._check_user_split()
        self._check_sources()
        return self

    def _check_sources(self) -> None:
        """``source_column`` where a column can be read; ``noisy_source`` on labelled data."""
        if self.source_column is not None:
            if self.kind != "file":
                raise ValueError(
                    f"source_column: only allowed when kind is 'file' (kind is {self.kind!r})"
                )
            if self.noisy_source is not None:
                raise ValueError(
                    "noisy_source: not allowed together with source_column (noisy_source makes "
                    "the sources 'clean' and 'noisy' itself); use one or the other"
                )
            if self.source_column in (self.label_column, self.difficulty_column):
                raise ValueError(
                    f"source_column: {self.source_column!r} is the label or difficulty column; "
                    "name a separate column of source names"
                )
        if self.noisy_source is not None and self.kind in TOKEN_DATA:
            raise ValueError(
                f"noisy_source: needs labelled data; data.kind {self.kind!r} has token "
                "sequences only"
            )

    @property
    def sources(self) -> str | None:
        """The name of the data's source column: ``source_column``, ``"source"`` with
        ``noisy_source``, else None (the data has no sources)."""
        if self.source_column is not None:
            return self.source_column
        return "source" if self.noisy_source is not None else None

    def _check_user_split(self) -> None:
        """``split_column`` where it can be read; no fraction set beside a user's split."""
        column = self.split_column
        if column is not None:
            if self.kind not in _DATA_SUFFIXES:
                raise ValueError(
                    f"split_column: only allowed when kind is 'file' or 'tokens' (kind is "
                    f"{self.kind!r})"
                )
            if self.paths is not None:
                raise ValueError(
                    f"split_column: {column!r} is not allowed together with data.paths, whose "
                    "files are the splits; use one or the other"
                )
            if Path(self.path or "").suffix != ".parquet":
                raise ValueError(
                    f"split_column: {column!r} needs a .parquet data.path; {self.path!r} has no "
                    "columns: use data.paths (one file per split) or a Parquet file"
                )
            taken = {"label_column": self.label_column, "difficulty_column":
                     self.difficulty_column, "source_column": self.source_column,
                     } if self.kind == "file" else {
                     "tokens_column": self.tokens_column}  # fmt: skip
            for name, value in taken.items():
                if value == column:
                    raise ValueError(
                        f"split_column: {column!r} is data.{name}; name a separate string "
                        "column of split names (train, val, test, holdout)"
                    )
        given = "data.split_column" if column is not None else "data.paths"
        if column is None and self.paths is None:
            return
        for name in ("val_fraction", "test_fraction"):
            value, default = getattr(self, name), type(self).model_fields[name].default
            if value != default:
                raise ValueError(
                    f"{name}: {value} is not used when {given} gives the splits; remove it "
                    f"(or leave it at its default {default})"
                )

    @property
    def is_tokens(self) -> bool | None:
        """Whether examples are token sequences (None: a ``module`` dataset, known on load)."""
        return True if self.kind in TOKEN_DATA else None if self.kind == "module" else False

    def unused(self) -> set[str]:
        every = set(type(self).model_fields) - {"kind", "split_seed"}
        uses = {
            "digits": {"val_fraction", "test_fraction", "standardize", "shape", "noisy_source"},
            "file": {"path", "label_column", "difficulty_column", "val_fraction", "test_fraction",
                     "standardize", "shape", "paths", "split_column", "source_column",
                     "noisy_source"},
            "sparse_parity": {"n_bits", "k", "train_size", "holdout_size", "label_noise",
                              "noisy_source"},
            "tokens": {"path", "tokens_column", "vocab_size", "pad_id", "max_examples",
                       "val_fraction", "test_fraction", "paths", "split_column"},
            "text": {"path", "seq_len", "whole_lines", "max_examples", "val_fraction",
                     "test_fraction"},
            "pcfg": {"vocab_size", "seq_len", "train_size", "holdout_size", "pcfg_levels",
                     "pcfg_symbols", "pcfg_rules", "pcfg_seed"},
            "module": {"factory", "kwargs", "vocab_size", "pad_id", "val_fraction",
                       "test_fraction", "standardize", "shape", "noisy_source"},
        }[self.kind]  # fmt: skip
        if self.paths is not None or self.split_column is not None:  # the user's split
            uses = uses - {"val_fraction", "test_fraction"}
        return every - uses


class ModelConfig(StrictModel):
    """A teacher's or student's network.

    - ``mlp``: a multilayer perceptron, ``hidden`` widths, ReLU between layers (inputs
      flattened).
    - ``cnn``: a small residual convolutional network for ``C x H x W`` inputs: one residual
      block per entry of ``channels`` (its width), stride 2 between blocks, global average
      pooling, a linear head.
    - ``transformer`` (torch.nn only): ``depth`` layers of ``width`` with ``heads`` attention
      heads, learned positions up to ``max_length`` tokens, ``dropout``; an encoder for
      ``classify`` (mean-pooled) and ``masked_lm``, decoder-only (causal mask) for
      ``causal_lm``.
    - ``module``: a user factory ``"package.module:function"`` called with ``kwargs``,
      returning any ``nn.Module`` mapping a batch of inputs to logits (a tensor, or an object
      with ``.logits``). It is imported on the worker that runs the trial, so the package must
      be importable there (installed, or shipped with the job's ``runtime_env``).
    - ``hf``: a Hugging Face ``transformers`` model (the ``[hf]`` extra): ``architecture`` (a
      class name such as ``BertForMaskedLM``) built from the ``config`` fields with random
      weights, or loaded from the local directory ``path``. Nothing is downloaded.
    """

    kind: ModelKind = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [32], max_length=8)
    channels: list[int] = Field(default_factory=lambda: [16, 32], min_length=1, max_length=6)
    width: int = Field(default=64, ge=4, le=8192)
    depth: int = Field(default=2, ge=1, le=48)
    heads: int = Field(default=4, ge=1, le=64)
    max_length: int = Field(default=128, ge=2, le=65_536)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    factory: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    architecture: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    path: str | None = None

    @field_validator("hidden", "channels")
    @classmethod
    def _check_widths(cls, widths: list[int], info: ValidationInfo) -> list[int]:
        if any(w < 1 for w in widths):
            raise ValueError(f"widths must be >= 1, got {widths}")
        return widths

    @model_validator(mode="after")
    def _check_kind_fields(self) -> ModelConfig:
        if self.kind == "transformer" and self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.kind == "module" and not self.factory:
            raise ValueError("factory: required when kind is 'module' ('package.module:function')")
        if self.kind == "hf" and (self.architecture is None) == (self.path is None):
            raise ValueError(
                "kind 'hf' needs exactly one of architecture (with config fields, random "
                "weights) or path (a local directory saved with save_pretrained)"
            )
        if self.kind == "hf" and self.path is not None and not Path(self.path).is_dir():
            raise ValueError(f"path: {self.path!r} is not a directory")
        for name in ("factory", "architecture", "path"):
            if getattr(self, name) is not None and name not in self._uses():
                raise ValueError(f"{name}: not used by kind {self.kind!r}")
        return self

    def _uses(self) -> set[str]:
        return {
            "mlp": {"hidden"}, "cnn": {"channels"},
            "transformer": {"width", "depth", "heads", "max_length", "dropout"},
            "module": {"factory", "kwargs"}, "hf": {"architecture", "config", "path"},
        }[self.kind]  # fmt: skip

    def unused(self) -> set[str]:
        return set(type(self).model_fields) - {"kind"} - self._uses()


class TaskConfig(StrictModel):
    """What the student learns to predict.

    ``classify``: one label per example. ``masked_lm``: masked tokens (BERT's rule, Devlin et
    al. 2019): each non-padding token is chosen with probability ``mask_rate`` (at least one
    per sequence); a chosen token is replaced by the mask id with probability ``mask_prob``,
    by a random token with ``random_prob``, else kept; the targets are the chosen tokens. The
    choice is a fixed function of (``mask_seed``, example, position): the teacher's stored
    outputs and the student see the same masked inputs (static masking). ``causal_lm``: the
    next token at every non-padding position.
    """

    kind: TaskKind = "classify"
    mask_rate: float = Field(default=0.15, gt=0.0, lt=1.0)
    mask_prob: float = Field(default=0.8, ge=0.0, le=1.0)
    random_prob: float = Field(default=0.1, ge=0.0, le=1.0)
    mask_seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.mask_prob + self.random_prob > 1.0:
            raise ValueError(
                f"mask_prob + random_prob must be <= 1, got {self.mask_prob} + {self.random_prob}"
            )
        return self

    def unused(self) -> set[str]:
        masking = {"mask_rate", "mask_prob", "random_prob", "mask_seed"}
        return set() if self.kind == "masked_lm" else masking


def check_task(task: TaskConfig, data: DataConfig, model: ModelConfig, where: str = "") -> None:
    """Refuse a task the data cannot give or the model cannot do (``ValueError`` naming the
    fields; ``where`` prefixes the model's field, e.g. ``student.``)."""
    tokens = data.is_tokens
    if task.kind == "classify" and tokens:
        raise ValueError(
            f"task.kind: 'classify' needs labelled data; data.kind {data.kind!r} has token "
            "sequences only (use task.kind masked_lm or causal_lm)"
        )
    if task.kind != "classify" and tokens is False:
        raise ValueError(
            f"task.kind: {task.kind!r} needs token sequences (data.kind tokens, text, pcfg or "
            f"module), got data.kind {data.kind!r}"
        )
    if task.kind != "classify" and model.kind in ("mlp", "cnn"):
        raise ValueError(
            f"{where}model.kind: {model.kind!r} cannot do task {task.kind!r} (per-token outputs); "
            "use transformer, module or hf"
        )
    if tokens and model.kind == "cnn":
        raise ValueError(
            f"{where}model.kind: 'cnn' needs images, data.kind {data.kind!r} is tokens"
        )


class OptimConfig(StrictModel):
    """The optimiser (``adam``; ``adamw``, Adam with decoupled weight decay, Loshchilov &
    Hutter 2019; or ``sgd`` with ``momentum``) and the step budget."""

    kind: OptimizerKind = "adam"
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    lr: float = Field(default=3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=32, ge=1)
    steps: int = Field(default=600, ge=1)

    def unused(self) -> set[str]:
        return {"momentum"} if self.kind != "sgd" else set()


class ScheduleConfig(StrictModel):
    """How a distillation weight moves over the run (``progress`` p in [0, 1]).

    ``constant``: the start value throughout. ``linear`` / ``cosine``: from the start value to
    ``end``. ``step``: the start value, then ``values[i]`` from ``boundaries[i]`` on.
    ``stage`` (multi-stage curricula): ``values[i]`` in stage ``i`` if given, else evenly from the
    start value to ``end`` across the stages. ``ctkd`` (temperature only): learned adversarially
    (CTKD, Li et al. 2023) from the start value, its gradient reversal ramped up over ``warmup``.
    """

    kind: ScheduleKind = "constant"
    end: float | None = Field(default=None, ge=0.0)
    boundaries: list[float] = Field(default_factory=list, max_length=16)
    values: list[float] = Field(default_factory=list, max_length=17)
    warmup: float = Field(default=0.1, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.kind in ("linear", "cosine") and self.end is None:
            raise ValueError(f"kind {self.kind!r} needs end")
        if self.kind == "step":
            if len(self.values) != len(self.boundaries) or not self.values:
                raise ValueError("kind 'step' needs as many values as boundaries (at least one)")
            if self.boundaries != sorted(self.boundaries) or any(
                not 0 < b < 1 for b in self.boundaries
            ):
                raise ValueError(f"boundaries must increase within (0, 1), got {self.boundaries}")
        return self

    def unused(self) -> set[str]:
        uses = {
            "constant": set(), "linear": {"end"}, "cosine": {"end"},
            "step": {"boundaries", "values"}, "stage": {"end", "values"}, "ctkd": {"warmup"},
        }[self.kind]  # fmt: skip
        return {"end", "boundaries", "values", "warmup"} - uses


class TeacherScheduleConfig(StrictModel):
    """Which teacher checkpoint the student learns from over its run (progressive
    distillation, Panigrahi et al. 2024).

    ``final`` (one-shot); ``lockstep`` (the first checkpoint at or after ``ratio`` x the
    student's step); ``two_shot`` (``checkpoint`` -- a kept step or ``transition``, the one the
    detector picks inside the teacher's phase transition -- until ``switch_at``, then final);
    ``uniform_k`` (``k`` checkpoints, evenly); ``explicit`` (``steps`` switching at
    ``switches``, fractions of the run).
    """

    kind: TeacherScheduleKind = "final"
    checkpoint: int | Literal["transition"] = "transition"
    switch_at: float = Field(default=0.3, gt=0.0, lt=1.0)
    ratio: float = Field(default=1.0, gt=0.0)
    k: int = Field(default=4, ge=1, le=64)
    steps: list[int] = Field(default_factory=list, max_length=64)
    switches: list[float] = Field(default_factory=list, max_length=63)

    def unused(self) -> set[str]:
        uses = {
            "final": set(), "lockstep": {"ratio"}, "two_shot": {"checkpoint", "switch_at"},
            "uniform_k": {"k"}, "explicit": {"steps", "switches"},
        }[self.kind]  # fmt: skip
        return set(type(self).model_fields) - {"kind"} - uses


class DistillConfig(StrictModel):
    """KD loss weights: ``alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T)``
    (``loss: hinton``), or the progressive-distillation paper's form ``alpha * CE + (1 - alpha)
    * CE(softmax(teacher / T), student)`` (``loss: progressive``: T on the teacher only, no
    T^2, so T near 0 gives hard teacher labels; T down to 1e-20 works).

    ``temperature`` and ``alpha`` are the values at the start of the run; their schedules say
    how they move. ``top_k`` uses the teacher's k most likely outputs of a top-k bank (at most
    the bank's k; unset: all it keeps), the rest merged into its tail bucket: a searchable k
    without rebuilding the bank.
    """

    loss: LossForm = "hinton"
    top_k: int | None = Field(default=None, ge=1, le=65536)
    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature_schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    alpha_schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if self.alpha_schedule.kind == "ctkd":
            raise ValueError("alpha_schedule: kind 'ctkd' is for the temperature only")
        a = self.alpha_schedule
        if any(v > 1 for v in a.values) or (a.end is not None and a.end > 1):
            raise ValueError("alpha_schedule values and end must lie in [0, 1]")
        low, high = CTKD_TEMPERATURE
        if self.temperature_schedule.kind == "ctkd" and not low < self.temperature < high:
            raise ValueError(
                f"temperature must be in ({low:g}, {high:g}) with a ctkd schedule, got "
                f"{self.temperature}"
            )
        t = self.temperature_schedule
        if any(v <= 0 for v in t.values) or (t.end is not None and t.end <= 0):
            raise ValueError("temperature_schedule values and end must be > 0")
        return self

    @property
    def labels_only(self) -> bool:
        """alpha is 1 throughout: no teacher signal, so temperature and loss form are unused."""
        return self.alpha == 1.0 and self.alpha_schedule.kind == "constant"

    def unused(self) -> set[str]:
        if self.labels_only:
            return {"loss", "top_k", "temperature", "temperature_schedule"}
        return set()


class PacingChange(StrictModel):
    """From fraction ``at`` of the run on, the pacing uses this ``start`` and ``full_at`` (the
    rate): how a schedule found by Population Based Training replays its pacing."""

    at: float = Field(gt=0.0, lt=1.0)
    start: float = Field(gt=0.0, le=1.0)
    full_at: float = Field(gt=0.0, le=1.0)


class PacingConfig(StrictModel):
    """The fraction c(p) of the ordered data available at fraction p of the run.

    ``constant``: all data. Wu et al. (2021)'s family ``linear``, ``quadratic``, ``root``,
    ``exp``, ``log``, ``step`` (``num_steps`` jumps): from ``start`` to all data at ``full_at``.
    ``competence`` (Platanios et al. 2019): ``min(1, (p/full_at (1 - start^power) +
    start^power)^(1/power))``, power 2 being their square-root competence. ``exp_steps``
    (Hacohen & Weinshall 2019): ``min(start * inc^floor(p / step_length), 1)``. Fields a kind
    does not use are ignored. ``changes``: new ``start`` / ``full_at`` from given fractions of
    the run on (piecewise; what PBT's exported schedules use).
    """

    kind: PacingKind = "linear"
    start: float = Field(default=0.2, gt=0.0, le=1.0)
    full_at: float = Field(default=0.5, gt=0.0, le=1.0)
    power: float = Field(default=2.0, gt=0.0, le=10.0)
    num_steps: int = Field(default=1, ge=1, le=100)
    inc: float = Field(default=1.9, gt=1.0, le=10.0)
    step_length: float = Field(default=0.05, gt=0.0, le=1.0)
    changes: list[PacingChange] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _changes_in_order(self) -> PacingConfig:
        at = [c.at for c in self.changes]
        if at != sorted(set(at)):
            raise ValueError(f"changes: 'at' must strictly increase, got {at}")
        return self

    def unused(self) -> set[str]:
        shape = {"start", "full_at", "changes"}
        uses = {
            "constant": set(), "step": shape | {"num_steps"}, "competence": shape | {"power"},
            "exp_steps": {"start", "inc", "step_length", "changes"},
        }.get(self.kind, shape)  # fmt: skip
        return set(type(self).model_fields) - {"kind"} - uses


class SelfPacedConfig(StrictModel):
    """Self-paced weights from the student's own loss (Kumar et al. 2010; Jiang et al. 2014).

    ``regularizer``: ``hard`` 1[l < lambda], ``linear`` max(0, 1 - l/lambda), ``log``,
    ``mixture``. Losses are divided by log(classes) (a uniform guess has loss 1). ``growth``:
    ``mu`` multiplies lambda (from ``lambda0``) by ``mu`` each epoch; ``pacing`` admits the
    easiest ``c(p)`` fraction of each batch, c the curriculum's ``pacing``, reaching all data
    when c reaches 1.
    """

    regularizer: SPLRegularizer = "hard"
    growth: SPLGrowth = "pacing"
    lambda0: float = Field(default=0.5, gt=0.0)
    mu: float = Field(default=1.3, ge=1.0)
    mixture_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)

    def unused(self) -> set[str]:
        out = {"lambda0", "mu"} if self.growth == "pacing" else set()
        return out | ({"mixture_ratio"} if self.regularizer != "mixture" else set())


class StageConfig(StrictModel):
    """One stage of a multi-stage curriculum: train on examples whose difficulty rank is in
    ``band``; ``temperature`` / ``alpha`` override the distill schedules when set; ``augment`` is
    the standard deviation of Gaussian feature noise (in standardised units; float inputs only:
    token ids are never noised); ``length`` is the stage's share of the run (with a metric
    gate: its maximum)."""

    band: tuple[float, float] = (0.0, 1.0)
    temperature: float | None = Field(default=None, gt=0.0, le=100.0)
    alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    augment: float = Field(default=0.0, ge=0.0, le=10.0)
    length: float = Field(default=1 / 3, gt=0.0, le=1.0)

    @field_validator("band")
    @classmethod
    def _check_band(cls, band: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= band[0] < band[1] <= 1.0:
            raise ValueError(f"must satisfy 0 <= low < high <= 1, got {list(band)}")
        return band


class BanditConfig(StrictModel):
    """``curriculum.bandit``: an automated curriculum that learns online which part of the
    data to train on (Graves et al. 2017, "Automated Curriculum Learning for Neural
    Networks").

    Arms: ``buckets`` difficulty buckets (equal-size quantiles of ``curriculum.score``,
    easiest first), or with ``arms_column`` the values of the data's source column (it must
    be ``data.source_column``, or ``source`` with ``data.noisy_source``). Each step the policy
    picks one arm and the batch is drawn from its rows.

    ``policy``: ``exp3s`` (Exp3.S, Graves et al.'s Algorithm 1: ``step_size`` eta,
    ``exploration`` epsilon, weight ``sharing`` alpha, unset: 1 / steps as in Auer et al.
    2002) or ``thompson`` (discounted Thompson sampling over Beta posteriors, discount
    ``1 - 1/window``, with ``exploration``).

    ``reward``: the learning progress the step made (Graves et al.'s signals), rescaled to
    [-1, 1] by the 20th and 80th percentiles of the last ``window`` rewards:

    - ``prediction_gain``: the loss of the batch before minus after the update (two more
      forward passes of the batch a step);
    - ``self_prediction_gain``: the same on up to 4 batches of the arm's held-out rows
      (two forwards of those a step);
    - ``target_prediction_gain``: the same on up to 4 batches of all held-out rows (the
      target).

    Gains are measured in eval mode (no dropout; batch norm's statistics never see held-out
    rows).

    The held-out rows (``holdout_fraction`` of the training split, or the data's own
    ``holdout`` rows) are never trained on; validation stays for selection. The default is
    ``self_prediction_gain``: on digits with half the rows a source of random labels,
    ``prediction_gain`` rewarded the noisy source more than the clean one after 100 steps
    (the batch's own loss falls as the student memorises it), while the self prediction gain
    of the clean source was 20 times the noisy one's over the first 100 steps. Like every
    learning-progress signal it chases what is not learnt yet: once the clean source is
    learnt, its gains shrink to the noisy one's and the policy drifts back. Graves et al. use
    eta = 1e-3 over 10^5+ steps; runs here are 10^2 to 10^4 steps, so the default 0.05 is
    about Exp3's sqrt(2 ln N / (T N)) for 5 arms and 500 steps.
    """

    policy: BanditPolicy = "exp3s"
    arms_column: str | None = Field(default=None, min_length=1)
    buckets: int = Field(default=5, ge=2, le=64)
    reward: BanditReward = "self_prediction_gain"
    step_size: float = Field(default=0.05, gt=0.0, le=10.0)
    exploration: float = Field(default=0.05, ge=0.0, le=1.0)
    sharing: float | None = Field(default=None, ge=0.0, le=1.0)
    window: int = Field(default=1000, ge=2, le=1_000_000)
    holdout_fraction: float = Field(default=0.1, gt=0.0, le=0.5)

    @field_validator("exploration")
    @classmethod
    def _check_exploration(cls, exploration: float, info: ValidationInfo) -> float:
        if info.data.get("policy") == "exp3s" and exploration == 0:
            raise ValueError(
                "exp3s needs exploration > 0 (its importance-weighted update divides by each "
                "arm's probability, which exploration keeps from 0); got 0"
            )
        return exploration

    def unused(self) -> set[str]:
        out = set()
        if self.policy == "thompson":
            out |= {"step_size", "sharing"}
        if self.arms_column is not None:
            out.add("buckets")
        if self.reward == "prediction_gain":
            out.add("holdout_fraction")
        return out


class MixtureStage(StrictModel):
    """One stage of a staged data mix: from progress ``at`` on, sample sources by
    ``weights``."""

    at: float = Field(ge=0.0, lt=1.0)
    weights: dict[str, float]

    @field_validator("weights", mode="before")
    @classmethod
    def _names(cls, weights: Any) -> Any:
        return _source_names(weights)

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        return _check_source_weights(weights)


def _source_names(weights: Any) -> Any:
    """Integer keys (``{0: 1}`` in YAML, an integer source column) as the names of sources,
    which are their digits."""
    if isinstance(weights, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v
                for k, v in weights.items()}  # fmt: skip
    return weights


def _check_source_weights(weights: dict[str, float] | None) -> dict[str, float] | None:
    if weights is None:
        return weights
    bad = {k: v for k, v in weights.items() if not (v >= 0 and math.isfinite(v))}
    if bad:
        raise ValueError(f"source weights must be finite and >= 0, got {bad}")
    if not weights or sum(weights.values()) <= 0:
        raise ValueError(f"need at least one source with a weight > 0, got {weights}")
    return weights


class MixtureConfig(StrictModel):
    """``curriculum.mixture``: a data-mix curriculum over the data's sources
    (``data.source_column``, or ``data.noisy_source``), as pretraining and multilingual
    mixes schedule them. Each step's batch is split among the sources by the schedule's
    probabilities at that point of the run (a multinomial draw), then drawn uniformly from
    each source's rows.

    ``schedule``:

    - ``constant``: ``weights`` throughout;
    - ``stages``: piecewise constant, ``weights`` from the start, then each of ``stages`` from
      its ``at`` (a fraction of the run) on;
    - ``linear``: annealed linearly from ``weights`` to ``end_weights``;
    - ``temperature``: temperature sampling ``p_s ∝ n_s^(1/tau)`` over the sources' sizes
      ``n_s`` (Arivazhagan et al. 2019; tau 1 is the natural mix, large tau tends to
      uniform), tau linear from ``tau`` to ``tau_end`` (unset: constant).

    Weights name sources (``{clean: 0.8, noisy: 0.2}``) and are normalised; a source not
    named gets weight 0; unset ``weights``: the natural mix (proportional to size). A search
    draws each listed source's weight log-uniformly (the space's ``mixture_sources``) and
    normalises: every point of the simplex with ratios up to the range's (100:1 by default)
    is reachable.
    """

    schedule: MixtureSchedule = "temperature"
    weights: dict[str, float] | None = None
    end_weights: dict[str, float] | None = None
    stages: list[MixtureStage] = Field(default_factory=list, max_length=16)
    tau: float = Field(default=1.0, gt=0.0, le=100.0)
    tau_end: float | None = Field(default=None, gt=0.0, le=100.0)

    @field_validator("weights", "end_weights", mode="before")
    @classmethod
    def _names(cls, weights: Any) -> Any:
        return _source_names(weights)

    @field_validator("weights", "end_weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        return _check_source_weights(weights)

    @model_validator(mode="after")
    def _check_schedule(self) -> MixtureConfig:
        if self.schedule == "linear" and (self.weights is None or self.end_weights is None):
            raise ValueError("schedule 'linear' needs both weights and end_weights")
        if self.schedule == "stages":
            if not self.stages:
                raise ValueError("schedule 'stages' needs stages: [{at: ..., weights: ...}, ...]")
            at = [s.at for s in self.stages]
            if at != sorted(set(at)) or at[0] <= 0:
                raise ValueError(f"stages: each at must be > 0 and increasing, got {at}")
        return self

    def unused(self) -> set[str]:
        uses = {
            "constant": {"weights"},
            "stages": {"weights", "stages"},
            "linear": {"weights", "end_weights"},
            "temperature": {"tau", "tau_end"},
        }[self.schedule]
        return set(type(self).model_fields) - {"schedule"} - uses


def _default_stages() -> list[StageConfig]:
    """Easy -> medium -> hard, each stage keeping the easier data, augmentation fading out."""
    return [
        StageConfig(band=(0.0, 1 / 3), augment=0.3, length=0.25),
        StageConfig(band=(0.0, 2 / 3), augment=0.15, length=0.25),
        StageConfig(band=(0.0, 1.0), augment=0.0, length=0.5),
    ]


# The settings each curriculum kind uses (besides ``kind`` and ``prune_fraction``), refined in
# :meth:`CurriculumConfig.unused`; the search space draws exactly these.
CURRICULUM_USES: dict[str, tuple[str, ...]] = {
    "none": (),
    "paced": ("order", "score", "pacing"),
    "confidence": ("beta_max", "pool_factor"),
    "self_paced": ("self_paced", "pacing"),
    "focal": ("focal_gamma",),
    "importance": ("pool_factor", "importance_smoothing"),
    "rho": ("pool_factor", "rho_holdout_steps", "rho_holdout_fraction"),
    "staged": (
        "order",
        "score",
        "stages",
        "progression",
        "gate_threshold",
        "gate_patience",
        "gate_holdout_fraction",
    ),
    "bandit": ("score", "bandit"),
    "mixture": ("mixture",),
}
assert set(CURRICULUM_USES) == set(kinds(CurriculumKind)), "every curriculum kind says its uses"


class CurriculumConfig(StrictModel):
    """Which examples the student sees when, and how much each one counts.

    ``kind``:

    - ``none``: uniform shuffling.
    - ``paced``: batches drawn uniformly from the first c(p) of the data in ``order``
      (``easy_first`` curriculum, ``hard_first`` anti-curriculum, ``random`` control), c the
      ``pacing``; difficulty from ``score``.
    - ``confidence``: sampling proportional to teacher confidence^beta, beta = ``beta_max``
      times (1 - the student's running confidence).
    - ``self_paced``: uniform batches, ``self_paced`` weights from the student's loss.
    - ``focal``: uniform batches weighted by (1 - p_student(y))^``focal_gamma``.
    - ``importance``: loss-proportional sampling from a ``pool_factor`` x larger candidate pool,
      importance-weighted (Katharopoulos & Fleuret 2018).
    - ``rho``: RHO-LOSS (Mindermann et al. 2022): the batch of highest student loss minus
      irreducible loss out of a ``pool_factor`` x larger candidate pool. The irreducible loss
      comes from a model fit for ``rho_holdout_steps`` on a holdout carved from the training
      split (``rho_holdout_fraction`` of it, or the data's own ``holdout`` rows), which the
      student never trains on; the validation split stays for selection.
    - ``staged``: multi-stage distillation over ``stages``, advancing by ``progression``:
      ``fixed`` lengths, ``threshold`` (the stage's accuracy reaches ``gate_threshold``) or
      ``plateau`` (no improvement for ``gate_patience`` evaluations). A gate measures the
      stage's accuracy on a holdout carved from the training split (``gate_holdout_fraction``
      of it, at most 10,000 rows, or the data's own ``holdout`` rows) which the student never
      trains on, not on the validation split.

    Validation is for selection only: both holdouts come from the training split. They are
    drawn by a permutation seeded with the trial's ``seed`` (not ``data.split_seed``), so a
    resumed or PBT-copied run rebuilds the same pool, and the seeds of ``repeats`` hold out
    different rows. The default 0.1 keeps 90% of the rows for training while leaving the
    holdout enough rows: an accuracy on n rows has a standard error of at most 0.5/sqrt(n),
    0.016 on 1,000. At most half the split may be held out.

    ``score`` (``confidence``, ``margin``, ``loss``, ``entropy``, ``el2n``, ``forgetting``, or
    ``column``: the data's own difficulty column) orders examples for ``paced`` and ``staged``
    and picks what ``prune_fraction`` drops first (``prune_by: score``) unless ``prune_by`` is
    ``forgetting`` (drop the least-forgotten examples) or ``shapley`` (drop the examples of
    lowest KNN-Shapley value: harmful or mislabelled ones). ``shapley`` as a score orders by
    value, most valuable first under ``easy_first`` (classification only).
    """

    kind: CurriculumKind = "none"
    order: Order = "easy_first"
    score: ScoreKind = "confidence"
    pacing: PacingConfig = Field(default_factory=PacingConfig)
    self_paced: SelfPacedConfig = Field(default_factory=SelfPacedConfig)
    focal_gamma: float = Field(default=2.0, ge=0.0, le=10.0)
    beta_max: float = Field(default=4.0, ge=0.0, le=50.0)
    pool_factor: int = Field(default=4, ge=1, le=64)
    importance_smoothing: float = Field(default=0.1, ge=0.0)
    rho_holdout_steps: int = Field(default=300, ge=1)
    rho_holdout_fraction: float = Field(default=0.1, gt=0.0, le=0.5)
    prune_fraction: float = Field(default=0.0, ge=0.0, le=0.9)
    prune_by: PruneBy = "score"
    stages: list[StageConfig] = Field(default_factory=_default_stages, min_length=1, max_length=16)
    progression: Progression = "fixed"
    gate_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    gate_patience: int = Field(default=3, ge=1)
    gate_holdout_fraction: float = Field(default=0.1, gt=0.0, le=0.5)
    bandit: BanditConfig = Field(default_factory=BanditConfig)
    mixture: MixtureConfig = Field(default_factory=MixtureConfig)

    def unused(self) -> set[str]:
        uses = set(CURRICULUM_USES[self.kind])
        if self.kind == "bandit" and self.bandit.arms_column is not None:
            uses.discard("score")  # arms are sources, not difficulty buckets
        if self.kind == "self_paced" and self.self_paced.growth == "mu":
            uses.discard("pacing")
        if self.kind == "staged":
            uses -= {"threshold": {"gate_patience"}, "plateau": {"gate_threshold"}}.get(
                self.progression, {"gate_threshold", "gate_patience", "gate_holdout_fraction"}
            )
        if self.order == "random":  # a seeded permutation: no score orders it
            uses.discard("score")
        if self.prune_fraction > 0:
            uses.add("prune_by")
            uses |= {"score"} if self.prune_by == "score" else set()
        return set(type(self).model_fields) - {"kind", "prune_fraction"} - uses


class BankConfig(StrictModel):
    """How the teacher bank stores and builds the teacher's outputs.

    ``top_k``: ``dense`` keeps every class's logit (float32); an integer keeps, per example or
    token, the top-k ids and log-probabilities plus the remaining mass (a tail bucket); unset:
    dense when the classes or vocabulary number at most 1024, else 32. ``precision`` of the
    stored top-k log-probabilities: ``fp16``, or ``int8`` (8-bit codes with a per-row scale:
    99 bytes a token at k = 32 and a vocabulary up to 65536, against 130 for fp16).
    ``shard_mb``: the size of one shard file (Arrow IPC). ``workers``: Ray Data actors that
    run the teacher over the data, each loading the model once and taking a GPU when the
    cluster has GPUs, else one CPU and one thread (unset: one per GPU, or per CPU, of the
    cluster); ``batch_size`` examples per forward. ``root``: the directory of banks (default
    ``<storage>/_teachers``); sweeps whose teacher settings match share one bank there.
    """

    top_k: int | Literal["dense"] | None = Field(default=None)
    precision: BankPrecision = "fp16"
    shard_mb: float = Field(default=256.0, gt=0.0, le=65536.0, allow_inf_nan=False)
    workers: int | None = Field(default=None, ge=1, le=1024)
    batch_size: int = Field(default=256, ge=1, le=1_000_000)
    root: str | None = None

    @field_validator("top_k", mode="before")
    @classmethod
    def _check_top_k(cls, top_k: Any) -> int | str | None:
        """One error naming what is allowed (not one per member of the union)."""
        if top_k is None or top_k == "dense":
            return top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 65536:
            raise ValueError(f"must be 'dense' or an integer in [1, 65536], got {top_k!r}")
        return top_k

    @field_validator("root")
    @classmethod
    def _check_root(cls, root: str | None) -> str | None:
        where = Path(root).expanduser() if root is not None else None
        if where is not None and where.exists() and not where.is_dir():
            raise ValueError(f"{root!r} is a file, not a directory")
        return root

    def resolved_top_k(self, classes: int) -> int | None:
        """The k stored for ``classes`` classes or tokens; None for dense outputs."""
        if self.top_k == "dense" or (self.top_k is None and classes <= DENSE_UP_TO):
            return None
        k = DEFAULT_TOP_K if self.top_k is None else self.top_k
        return None if k >= classes else k

    def unused(self) -> set[str]:
        return {"precision"} if self.top_k == "dense" else set()


class TeacherConfig(StrictModel):
    """Configuration of :func:`trainables.train_teacher`.

    Checkpoints kept in the bank: every ``checkpoint_every`` steps, ``log_checkpoints``
    log-spaced steps, and always the final step; the teacher is evaluated at each of them too.
    ``init_from`` loads a state_dict (of the same model) first; ``train: false`` only banks it.
    ``device``: ``auto`` is the GPU Ray gave the trial, if any, else the CPU.
    At every evaluation the teacher also records its training-set predictions, from which the
    trajectory scores are computed: forgetting events over all evaluations and
    EL2N averaged over the evaluations in the first ``el2n_fraction`` of the run.
    ``bank`` says how the bank of its outputs is stored and built (:class:`BankConfig`).
    ``score_folds: K`` (K >= 2) also trains K teachers, each on K-1 folds of the training
    split, and scores each fold with the teacher that did not see it: the ``oof_*`` scores
    (cross-fitting), which a teacher that memorised an example cannot call easy.
    ``output_dir`` is where the trainable writes the teacher's run (weights at every kept
    checkpoint, history, scores) atomically: it appears only once complete; for a fold run
    (``fold``: the held-out fold, set by the sweep), the fold's scores.

    Phase transition (Panigrahi et al. 2024; what ``two_shot`` from checkpoint ``transition``
    distils from): the window of ``transition_window`` evaluation intervals where the
    teacher's accuracy rises most, measured on training rows, never on the validation split
    (which is for selection only). With ``transition_holdout_fraction`` (drawn with ``seed``)
    or the data's own ``holdout`` rows, on those rows, which the teacher then never trains
    on; by default (0, no such rows) on its whole training split, which keeps every row for
    the teacher and all its difficulty scores in-sample. Training accuracy shows the
    transition wherever the teacher cannot memorise its data before it generalises (plentiful
    data, as in the paper's sparse parity and PCFG); a holdout is for the other case. The
    window counts as a transition only if its rise reaches ``transition_min_rise`` and three
    standard errors of the difference of its two accuracies on the rows measured (binomial;
    three, not two, because the steepest of many windows is taken). The default 0.05 lies
    well above the noise of one evaluation (0.02-0.03 on a few hundred examples) and well
    below a real transition (tens of points: 0.61 -> 0.997 in a sparse-parity pilot), so a
    flat teacher has none and ``two_shot`` from ``transition`` refuses it.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(hidden=[256, 256]))
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=1e-3, batch_size=64, steps=800)
    )
    eval_every: int = Field(default=100, ge=1)
    el2n_fraction: float = Field(default=0.25, gt=0.0, le=1.0)
    checkpoint_every: int | None = Field(default=None, ge=1)
    log_checkpoints: int = Field(default=0, ge=0, le=200)
    transition_window: int = Field(default=3, ge=1)
    transition_min_rise: float = Field(default=0.05, ge=0.0, lt=1.0)
    transition_holdout_fraction: float = Field(default=0.0, ge=0.0, le=0.5)
    init_from: str | None = None
    train: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    bank: BankConfig = Field(default_factory=BankConfig)
    score_folds: int = Field(default=0, ge=0, le=20)
    fold: int | None = Field(default=None, ge=0)
    output_dir: str | None = None

    @model_validator(mode="after")
    def _check_init(self) -> TeacherConfig:
        check_task(self.task, self.data, self.model)
        if self.score_folds == 1:
            raise ValueError("score_folds must be 0 (off) or at least 2, got 1")
        if self.score_folds and (self.init_from is not None or not self.train):
            raise ValueError(
                f"score_folds: {self.score_folds} needs teachers trained from scratch: with "
                "init_from (or train: false) each fold's teacher would start from weights "
                "that may have seen its held-out fold; set score_folds: 0"
            )
        if self.fold is not None and not self.fold < max(self.score_folds, 2):
            raise ValueError(
                f"fold must be below score_folds ({self.score_folds}), got {self.fold}"
            )
        if self.init_from is not None and not Path(self.init_from).is_file():
            raise ValueError(f"init_from: {self.init_from!r} does not exist or is not a file")
        if not self.train and self.init_from is None:
            raise ValueError("train: false needs init_from (a state_dict saved with torch.save)")
        return self


class CheckpointConfig(StrictModel):
    """When :func:`trainables.train_student` saves the student with a report (a Tune
    checkpoint; layout and loading: :mod:`trainables.checkpoint`).

    ``every``: save with every ``every``-th report too (1: every report, which PBT needs and
    which lets a retried trial continue from its last report instead of starting over, and
    which leaves a student from a trial a scheduler stops early; each save writes the model,
    optimiser and sampler state of every seed). ``final``: save with the run's last report,
    so that every trial that runs to its end leaves a student that
    :func:`trainables.load_student` loads (one save per trial). With both off a trial saves
    nothing. Sweeps set ``every: 1`` under PBT, PB2, ASHA and median stopping."""

    every: int | None = Field(default=None, ge=1)
    final: bool = True

    def due(self, report: int, last: bool) -> bool:
        """Whether report number ``report`` (1-based) saves; ``last``: the run's last."""
        return (last and self.final) or (self.every is not None and report % self.every == 0)


SWEEP_SETS_DATA = "sweep_sets_data"  # validation context: data and task come from the sweep


def check_curriculum(cur: CurriculumConfig, data: DataConfig, task: TaskConfig) -> None:
    """Refuse a curriculum the data or task cannot run (``ValueError`` naming the fields): a
    ``mixture`` or a bandit over sources needs data with sources, ``shapley`` values
    classification examples."""
    sources = data.sources
    if cur.kind == "mixture" and sources is None:
        raise ValueError(
            "curriculum.kind: 'mixture' needs data with sources: set data.source_column "
            "(kind file) or data.noisy_source"
        )
    column = cur.bandit.arms_column
    if cur.kind == "bandit" and column is not None and column != sources:
        have = f"the data's source column is {sources!r}" if sources else "the data has none"
        raise ValueError(
            f"curriculum.bandit.arms_column: {column!r} is not the data's source column "
            f"({have}); set data.source_column: {column} (kind file), or use source with "
            "data.noisy_source, or leave it unset for difficulty buckets"
        )
    used = {k for k, v in settings(cur).items() if v is not None}
    wants_shapley = ("score" in used and cur.score == "shapley") or (
        "prune_by" in used and cur.prune_by == "shapley"
    )
    if wants_shapley and task.kind != "classify":
        raise ValueError(
            "curriculum.score / prune_by: 'shapley' (KNN-Shapley) values classification "
            f"examples; task.kind is {task.kind!r}"
        )
    if data.noisy_source is not None and task.kind != "classify":
        raise ValueError(f"data.noisy_source: needs task.kind classify, got {task.kind!r}")


class StudentConfig(StrictModel):
    """Configuration of :func:`trainables.train_student`.

    ``teacher_bank`` is a directory written by the teacher trainable. ``target_accuracy``
    defines ``steps_to_target``: the first evaluated step whose validation accuracy reaches it
    (``steps_to_target_capped`` is the same, or ``steps + eval_every`` when never reached, a
    number a searcher can minimise). ``stop_at_target`` ends the run there: the one
    training-time use of the validation split, early stopping on the selection metric itself
    (``steps_to_target`` is fixed by then; see :mod:`trainables.loops` for the audit).

    ``repeats``: the configuration runs with seeds ``seed, seed + 1, ...`` in lockstep and every
    record reports their mean (what a searcher should see); the last record also lists each
    seed's final metrics (``*_seeds``). ``arm`` is a free label kept in the results (the sweep
    marks its baselines with it). ``device``: ``auto`` is the GPU Ray gave the trial, if any,
    else the CPU. The model lives there; data and teacher outputs stay in host memory and each
    step's batch is gathered and copied there (pinned, non-blocking). ``precision: bf16`` runs
    forward and loss under bfloat16 autocast. ``checkpoint``: which reports save the student
    (by default the last: :func:`trainables.load_student` loads it).
    """

    data: DataConfig = Field(default_factory=DataConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    repeats: int = Field(default=1, ge=1, le=64)
    arm: str = Field(default="search", max_length=100)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    distill: DistillConfig = Field(default_factory=DistillConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    teacher_schedule: TeacherScheduleConfig = Field(default_factory=TeacherScheduleConfig)
    eval_every: int = Field(default=100, ge=1)
    target_accuracy: float = Field(default=0.9, gt=0.0, le=1.0)
    stop_at_target: bool = False
    seed: int = 0
    teacher_bank: str | None = None
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _check_task(self, info: ValidationInfo) -> StudentConfig:
        check_task(self.task, self.data, self.model)
        if not (info.context or {}).get(SWEEP_SETS_DATA):  # a sweep checks its own data
            check_curriculum(self.curriculum, self.data, self.task)
        return self

    @property
    def uses_teacher(self) -> bool:
        """False when no step learns from the teacher (labels only, in every stage)."""
        staged = self.curriculum.kind == "staged"
        stage_alphas = [s.alpha for s in self.curriculum.stages if s.alpha is not None]
        return not self.distill.labels_only or (staged and any(a < 1 for a in stage_alphas))

    def unused(self) -> set[str]:
        if self.uses_teacher:
            return set()
        return {"teacher_schedule", "distill.loss", "distill.top_k", "distill.temperature",
                "distill.temperature_schedule"}  # fmt: skip


def settings(config: BaseModel, prefix: str = "") -> dict[str, Any]:
    """The config as ``{dotted.path: value}``, one entry per leaf field, ``None`` where the
    config's own values make the field irrelevant (:meth:`StrictModel.unused`): what a trial
    actually used. Lists stay lists (of plain dicts for lists of models)."""
    unused = config.unused() if isinstance(config, StrictModel) else set()
    return _settings(config, prefix, unused)


def _settings(config: BaseModel, prefix: str, unused: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(config).model_fields:
        value, path = getattr(config, name), f"{prefix}{name}"
        below = {u.removeprefix(f"{name}.") for u in unused if u.startswith(f"{name}.")}
        if isinstance(value, BaseModel):
            if name in unused:
                out.update(dict.fromkeys(settings(value, f"{path}."), None))
            else:
                own = value.unused() if isinstance(value, StrictModel) else set()
                out.update(_settings(value, f"{path}.", own | below))
        elif name in unused:
            out[path] = None
        elif isinstance(value, (list, tuple)):
            out[path] = [v.model_dump() if isinstance(v, BaseModel) else v for v in value]
        else:
            out[path] = value
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a nested config dict by dotted paths (the one
    name of every field)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def nest(flat: dict[str, Any], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (merged into a copy of ``into``): the one place
    a dotted path becomes the nested dict that the trainables and Ray Tune take."""
    tree = copy.deepcopy(into) if into is not None else {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            if node.get(part) is None:  # a mapping left unset (``mixture.weights: null``)
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return tree
