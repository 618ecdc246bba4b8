"""The teacher's logits on every split, stored once and memory-mapped by every student.

Layout of a teacher-outputs directory::

    <dir>/{train,val,test}.arrow  Arrow IPC, column ``logits``: fixed_size_list<float32>
    <dir>/scores.arrow            per training example: one float64 column per difficulty score
    <dir>/meta.json               {"step", "num_classes", "metrics", "history"}

The directory is built under a temporary name and renamed into place, so a reader never sees
a half-written one: if ``meta.json`` is there, so is everything else.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TeacherOutputs:
    """Teacher logits per split, ``(n, classes)`` float32, and the teacher step they came from."""

    logits: dict[str, np.ndarray]
    step: int
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    scores: dict[str, np.ndarray]  # per training example, higher = harder


def write_teacher_outputs(
    directory: str | os.PathLike,
    logits: dict[str, np.ndarray],
    *,
    step: int,
    metrics: dict[str, float],
    history: list[dict[str, Any]] = (),
    scores: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write logits for every split atomically; return the final directory.

    ``history`` is the teacher's evaluation records (kept for the sweep's ``teacher`` table);
    ``scores`` are per-training-example difficulty scores, one float array per name.
    If another writer finished the same directory first, its (identical-by-key) result is kept.
    """
    final = Path(directory)
    if set(logits) != set(SPLITS):
        raise ValueError(f"logits must have exactly the splits {SPLITS}, got {sorted(logits)}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        num_classes = None
        for split, array in logits.items():
            array = np.ascontiguousarray(array, dtype=np.float32)
            num_classes = array.shape[1]
            column = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), num_classes)
            table = pa.table({"logits": column})
            with (
                pa.OSFile(str(tmp / f"{split}.arrow"), "wb") as sink,
                pa.ipc.new_file(sink, table.schema) as writer,
            ):
                writer.write_table(table)
        table = pa.table({k: np.asarray(v, dtype=np.float64) for k, v in (scores or {}).items()})
        with (
            pa.OSFile(str(tmp / "scores.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, table.schema) as writer,
        ):
            writer.write_table(table)
        meta = {
            "step": int(step),
            "num_classes": int(num_classes),
            "metrics": metrics,
            "history": list(history),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def teacher_outputs_complete(directory: str | os.PathLike) -> bool:
    return (Path(directory) / "meta.json").is_file()


def read_teacher_outputs(directory: str | os.PathLike) -> TeacherOutputs:
    """Memory-map the logits written by :func:`write_teacher_outputs` (no copy on read)."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"teacher outputs {str(directory)!r} are missing or incomplete")
    meta = json.loads(meta_path.read_text())
    logits = {}
    for split in SPLITS:
        table = pa.ipc.open_file(pa.memory_map(str(directory / f"{split}.arrow"))).read_all()
        column = table.column("logits").combine_chunks()
        logits[split] = column.values.to_numpy().reshape(len(column), meta["num_classes"])
    scores_table = pa.ipc.open_file(pa.memory_map(str(directory / "scores.arrow"))).read_all()
    scores = {name: scores_table.column(name).to_numpy() for name in scores_table.column_names}
    return TeacherOutputs(
        logits=logits,
        step=meta["step"],
        metrics=meta["metrics"],
        history=meta["history"],
        scores=scores,
    )
