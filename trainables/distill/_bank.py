"""The teacher bank: the teacher's logits at each kept checkpoint on every split, stored once
and memory-mapped by every student, plus per-example difficulty scores.

Layout of a bank directory::

    <dir>/step-<step:09d>/{train,val,test}.arrow  Arrow IPC, column ``logits``:
                                                  fixed_size_list<float32>
    <dir>/scores.arrow                             per training example, one float64 column
                                                  per score
    <dir>/meta.json                                {"format", "step", "checkpoints",
                                                  "num_classes", "metrics", "history",
                                                  "transition"}

A bank is built under a hidden temporary name beside its final place and renamed into place
once complete, so a reader never sees a half-written one: if ``meta.json`` is there, so is
everything else. A build that dies (even by SIGKILL) leaves at most a hidden ``.<name>.*``
directory, which no reader looks at.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SPLITS = ("train", "val", "test")
FORMAT = 2


def _write_ipc(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_ipc(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:09d}"


class BankWriter:
    """Builds a bank in a temporary directory; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block with an exception removes the temporary
    directory and leaves nothing at the final path.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.final = Path(directory)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", dir=self.final.parent))
        self.checkpoints: list[int] = []
        self.num_classes: int | None = None

    def __enter__(self) -> BankWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary build, if it was not committed."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_checkpoint(self, step: int, logits: dict[str, np.ndarray]) -> None:
        """Store one checkpoint's logits, ``(n, classes)`` for each split."""
        if set(logits) != set(SPLITS):
            raise ValueError(f"logits must have exactly the splits {SPLITS}, got {sorted(logits)}")
        if self.checkpoints and step <= self.checkpoints[-1]:
            raise ValueError(f"checkpoints must be added in increasing step order, got {step}")
        directory = _checkpoint_dir(self.tmp, step)
        directory.mkdir()
        for split, array in logits.items():
            array = np.ascontiguousarray(array, dtype=np.float32)
            self.num_classes = array.shape[1]
            column = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
            _write_ipc(directory / f"{split}.arrow", pa.table({"logits": column}))
        self.checkpoints.append(int(step))

    def commit(
        self,
        *,
        metrics: dict[str, float],
        history: list[dict[str, Any]] = (),
        scores: dict[str, np.ndarray] | None = None,
        transition: dict[str, Any] | None = None,
    ) -> Path:
        """Write the scores and metadata and move the bank into place (the last checkpoint is
        the final teacher). If another builder got there first, its bank is kept."""
        if not self.checkpoints:
            raise ValueError("a bank needs at least one checkpoint")
        table = pa.table({k: np.asarray(v, dtype=np.float64) for k, v in (scores or {}).items()})
        _write_ipc(self.tmp / "scores.arrow", table)
        meta = {
            "format": FORMAT,
            "step": self.checkpoints[-1],
            "checkpoints": self.checkpoints,
            "num_classes": self.num_classes,
            "metrics": metrics,
            "history": list(history),
            "transition": transition,
        }
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not bank_complete(self.final):
                raise
        return self.final


@dataclass
class TeacherBank:
    """A bank opened for reading. ``logits`` are the final teacher's, ``(n, classes)`` float32
    per split; :meth:`checkpoint_logits` memory-maps any kept checkpoint."""

    logits: dict[str, np.ndarray]
    step: int
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    scores: dict[str, np.ndarray]  # per training example, higher = harder
    checkpoints: list[int] = field(default_factory=list)
    transition: dict[str, Any] | None = None
    directory: Path | None = None

    def checkpoint_logits(self, step: int) -> dict[str, np.ndarray]:
        if step not in self.checkpoints or self.directory is None:
            raise ValueError(
                f"teacher checkpoint {step} is not in the bank; kept: {self.checkpoints}"
            )
        return _read_checkpoint(self.directory, step)


def _read_checkpoint(directory: Path, step: int) -> dict[str, np.ndarray]:
    out = {}
    for split in SPLITS:
        column = _read_ipc(_checkpoint_dir(directory, step) / f"{split}.arrow").column("logits")
        column = column.combine_chunks()
        out[split] = column.values.to_numpy().reshape(len(column), column.type.list_size)
    return out


def write_bank(
    directory: str | os.PathLike,
    logits: dict[str, np.ndarray],
    *,
    step: int,
    metrics: dict[str, float],
    history: list[dict[str, Any]] = (),
    scores: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a bank holding a single (final) checkpoint, atomically."""
    with BankWriter(directory) as writer:
        writer.add_checkpoint(step, logits)
        return writer.commit(metrics=metrics, history=history, scores=scores)


def bank_complete(directory: str | os.PathLike) -> bool:
    meta = Path(directory) / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT


def open_bank(directory: str | os.PathLike) -> TeacherBank:
    """Open a bank: memory-maps the final logits and the scores (no copy on read)."""
    directory = Path(directory)
    if not bank_complete(directory):
        raise FileNotFoundError(f"teacher outputs {str(directory)!r} are missing or incomplete")
    meta = json.loads((directory / "meta.json").read_text())
    scores_table = _read_ipc(directory / "scores.arrow")
    return TeacherBank(
        logits=_read_checkpoint(directory, meta["step"]),
        step=meta["step"],
        metrics=meta["metrics"],
        history=meta["history"],
        scores={name: scores_table.column(name).to_numpy() for name in scores_table.column_names},
        checkpoints=meta["checkpoints"],
        transition=meta["transition"],
        directory=directory,
    )
