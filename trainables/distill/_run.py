"""The teacher's run: its weights at every kept checkpoint, its history and its difficulty
scores, written once by the teacher's trainable and read by the bank's builder.

Layout of a run directory::

    <run>/step-<step:09d>.pt   the state_dict at each kept checkpoint (the last is the final one)
    <run>/scores.arrow         per training example, one float64 column per score
    <run>/run.json             {"format", "run_id", "step", "checkpoints", "shape",
                               "num_classes", "sizes", "metrics", "history", "transition",
                               "files", "meta_sha256"}

The directory is built under a hidden name and renamed into place when whole, so a reader
that finds ``run.json`` finds everything; every file's size and SHA-256 are in ``run.json``
and checked before a read. ``run_id`` is random per run: a bank's shards record the run they
came from, so shards of an earlier (replaced) teacher are never mixed into a new bank.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from trainables.distill._files import (
    BankCorruptError,
    checked,
    make_hidden_dir,
    read_ipc,
    read_json,
    sha256_file,
    write_atomic,
    write_json,
)

RUN_FORMAT = 1
RUN_META = "run.json"
SCORES = "scores.arrow"


def weights_file(step: int) -> str:
    return f"step-{step:09d}.pt"


class RunWriter:
    """Writes a teacher's run into a hidden directory; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block with an exception removes the hidden
    directory and leaves nothing at the final path. A run already in place (another builder's,
    or an earlier one being replaced by the caller) is replaced whole.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.final = Path(directory)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = make_hidden_dir(self.final)
        self.checkpoints: list[int] = []

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hidden build, if it was not committed."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_checkpoint(self, step: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Keep the weights at ``step`` (steps in increasing order)."""
        if self.checkpoints and step <= self.checkpoints[-1]:
            raise ValueError(f"checkpoints must be added in increasing step order, got {step}")
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()},
                   self.tmp / weights_file(step))  # fmt: skip
        self.checkpoints.append(int(step))

    def commit(
        self,
        *,
        shape: list[int],
        sizes: dict[str, int],
        metrics: dict[str, float],
        history: list[dict[str, Any]] = (),
        scores: dict[str, np.ndarray] | None = None,
        transition: dict[str, Any] | None = None,
    ) -> Path:
        """Write the scores and ``run.json`` and move the run into place."""
        if not self.checkpoints:
            raise ValueError("a teacher run needs at least one checkpoint")
        table = pa.table({k: np.asarray(v, dtype=np.float64) for k, v in (scores or {}).items()})
        write_atomic(self.tmp / SCORES, table)
        files = {
            path.name: {"size": path.stat().st_size, "sha256": sha256_file(path)}
            for path in sorted(self.tmp.iterdir())
            if path.is_file() and not path.name.startswith(".")
        }
        write_json(self.tmp / RUN_META, {
            "format": RUN_FORMAT, "run_id": secrets.token_hex(8), "step": self.checkpoints[-1],
            "checkpoints": self.checkpoints, "shape": list(shape),
            "num_classes": int(shape[-1]), "sizes": sizes, "metrics": metrics,
            "history": list(history), "transition": transition, "files": files,
        })  # fmt: skip
        if self.final.exists():  # a damaged or older run: replaced whole
            aside = make_hidden_dir(self.final)
            os.rename(self.final, aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(self.tmp, self.final)
        return self.final


@dataclass
class TeacherRun:
    """A teacher's run opened for reading (``run.json``'s fields)."""

    directory: Path
    run_id: str
    step: int
    checkpoints: list[int]
    shape: tuple[int, ...]
    sizes: dict[str, int]
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    transition: dict[str, Any] | None
    files: dict[str, dict[str, Any]]

    def weights(self, step: int) -> dict[str, torch.Tensor]:
        """The state_dict at kept checkpoint ``step`` (checked first)."""
        if step not in self.checkpoints:
            raise ValueError(f"teacher checkpoint {step} was not kept; kept: {self.checkpoints}")
        path = checked(self.directory, weights_file(step), self.files, self.directory)
        return torch.load(path, map_location="cpu", weights_only=True)

    def scores(self) -> dict[str, np.ndarray]:
        table = read_ipc(checked(self.directory, SCORES, self.files, self.directory))
        return {name: table.column(name).to_numpy() for name in table.column_names}

    def verify(self) -> None:
        """Check every file of the run (:class:`BankCorruptError` naming the first bad one)."""
        for name in self.files:
            checked(self.directory, name, self.files, self.directory)


def open_run(directory: str | os.PathLike) -> TeacherRun:
    """Open a teacher's run; ``FileNotFoundError`` if there is none (or it is incomplete),
    :class:`BankCorruptError` if ``run.json`` is damaged."""
    directory = Path(directory)
    try:
        meta = read_json(directory / RUN_META, directory, RUN_FORMAT)
    except FileNotFoundError:
        raise FileNotFoundError(f"no teacher run in {str(directory)!r}") from None
    return TeacherRun(
        directory=directory, run_id=meta["run_id"], step=meta["step"],
        checkpoints=meta["checkpoints"], shape=tuple(meta["shape"]), sizes=meta["sizes"],
        metrics=meta["metrics"], history=meta["history"], transition=meta["transition"],
        files=meta["files"],
    )  # fmt: skip


def run_intact(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a whole, intact teacher run."""
    try:
        open_run(directory).verify()
    except (FileNotFoundError, BankCorruptError):
        return False
    return True


FOLD_FORMAT = 1
FOLD_META = "fold.json"
FOLD_SCORES = "fold.arrow"


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """Each training example's fold, ``(n,)`` in ``[0, folds)``: a seeded random permutation
    dealt round-robin, so the folds differ in size by at most one."""
    return np.random.default_rng(seed).permutation(n) % folds


def write_fold(
    directory: str | os.PathLike,
    *,
    fold: int,
    folds: int,
    rows: np.ndarray,
    scores: dict[str, np.ndarray],
    metrics: dict[str, float],
) -> Path:
    """Write a cross-fitting run's scores of its held-out ``rows`` (atomically, like a run)."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_hidden_dir(final)
    try:
        columns = {"row": np.asarray(rows, dtype=np.int64)}
        columns |= {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
        record = write_atomic(tmp / FOLD_SCORES, pa.table(columns))
        write_json(tmp / FOLD_META, {
            "format": FOLD_FORMAT, "fold": fold, "folds": folds, "metrics": metrics,
            "files": {FOLD_SCORES: record},
        })  # fmt: skip
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_fold(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A fold run's ``fold.json`` and its scores by column (``row`` the example's index);
    ``FileNotFoundError`` if absent, :class:`BankCorruptError` if damaged."""
    directory = Path(directory)
    meta = read_json(directory / FOLD_META, directory, FOLD_FORMAT)
    table = read_ipc(checked(directory, FOLD_SCORES, meta["files"], directory))
    return meta, {name: table.column(name).to_numpy() for name in table.column_names}
