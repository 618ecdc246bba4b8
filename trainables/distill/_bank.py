"""The teacher bank: the teacher's outputs at each kept checkpoint on every split, stored once
in shards and memory-mapped by every student, plus per-example difficulty scores.

Layout of a bank directory::

    <bank>/shards/step-<step:09d>/<split>-<i:05d>.arrow       Arrow IPC, one row per example
    <bank>/shards/step-<step:09d>/<split>-<i:05d>.arrow.json  the shard's record (its rows,
                                                              size, SHA-256, teacher run)
    <bank>/scores.arrow                                       per training example, one
                                                              float64 column per score
    <bank>/manifest.json                                      {"format", "layout", "step",
        "checkpoints", "metrics", "history", "transition", "shards", "files", "meta_sha256"}

A shard holds rows ``[start, end)`` of one split at one checkpoint, about ``shard_mb`` of
them, in the columns of its :class:`Layout`: ``logits`` (dense, float32) or, for a top-k
bank, ``ids`` (the smallest integer type holding the vocabulary) and the k + 1 log-
probabilities of the top-k and the tail bucket, as ``values`` (float16) or ``codes`` (uint8)
with a per-token ``scale`` (float16) (:mod:`trainables.distill._topk`). Each column is a
fixed-size list, so a memory-mapped shard is a NumPy view with no copy, and a reader gathers
rows by index across shards touching only their pages.

Shards are built in place, each written under a hidden name and renamed when whole, then its
record (the ``.json`` beside it) written the same way: a killed build leaves whole shards
with records, which a resumed build keeps (after checking their checksums), and nothing a
reader can mistake for a shard. The manifest is written last: a bank is complete when its
manifest is there, and every file it lists is checked against its size and SHA-256 before
this process first reads it (:class:`BankCorruptError` names a bad one; never read silently).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from trainables.distill._files import (
    BankCorruptError,
    checked,
    read_ipc,
    read_json,
    write_atomic,
    write_json,
)
from trainables.distill._topk import (
    decode_topk,
    encode_topk,
    id_dtype,
    pack_topk,
    topk_of_logits,
)

SPLITS = ("train", "val", "test")
FORMAT = 4  # 4: sharded, top-k layouts, manifest.json
MANIFEST = "manifest.json"
SCORES = "scores.arrow"


@dataclass(frozen=True)
class Layout:
    """How one example's outputs are stored: ``shape`` (``[classes]``, or ``[positions,
    vocab]`` per token); ``top_k`` None for dense float32 logits, else the k kept per row
    (example or token) with ``precision`` ``fp16`` or ``int8``."""

    shape: tuple[int, ...]
    top_k: int | None = None
    precision: str = "fp16"

    @property
    def vocab(self) -> int:
        return int(self.shape[-1])

    @property
    def rows(self) -> int:
        """Rows of outputs per example: 1, or its positions."""
        return math.prod(self.shape[:-1])

    def columns(self) -> dict[str, tuple[np.dtype, int]]:
        """Each stored column's element type and width (values per example)."""
        if self.top_k is None:
            return {"logits": (np.dtype(np.float32), self.rows * self.vocab)}
        k, rows = self.top_k, self.rows
        ids = {"ids": (np.dtype(id_dtype(self.vocab)), rows * k)}
        if self.precision == "int8":
            return {**ids, "codes": (np.dtype(np.uint8), rows * (k + 1)),
                    "scale": (np.dtype(np.float16), rows)}  # fmt: skip
        return {**ids, "values": (np.dtype(np.float16), rows * (k + 1))}

    def example_bytes(self) -> int:
        return sum(dtype.itemsize * width for dtype, width in self.columns().values())

    def encode(self, logits: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """``(n, *shape)`` float logits -> each column as ``(n, width)``. A tensor's top-k is
        taken on its device (:func:`topk_of_logits`), so only the kept values cross to the
        host."""
        n = len(logits)
        if self.top_k is None:
            if isinstance(logits, torch.Tensor):
                logits = logits.float().cpu().numpy()
            if not np.isfinite(logits).all():
                raise ValueError("the teacher's outputs hold NaN or infinite values")
            return {"logits": np.ascontiguousarray(logits, dtype=np.float32).reshape(n, -1)}
        if isinstance(logits, torch.Tensor):
            ids, values = topk_of_logits(logits, self.top_k)
            if not torch.isfinite(values[..., 0]).all():
                raise ValueError("the teacher's outputs hold NaN or infinite values")
            encoded = pack_topk(
                ids.cpu().numpy(), values.double().cpu().numpy(), self.vocab, self.precision
            )
        else:
            encoded = encode_topk(np.asarray(logits, np.float32), self.top_k, self.precision)
        return {name: np.ascontiguousarray(encoded[name]).reshape(n, -1) for name in self.columns()}

    def decode(self, columns: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A top-k layout's stored columns of ``n`` examples (NumPy arrays or tensors, each
        ``(n, width)``) -> ``ids (n, *positions, k)`` int64 and normalised ``log_p (n,
        *positions, k+1)`` (:func:`decode_topk`; NumPy views of a shard are copied)."""
        k, lead = self.top_k, (len(columns["ids"]), *self.shape[:-1])
        return decode_topk(
            columns["ids"].reshape(*lead, k),
            values=columns["values"].reshape(*lead, k + 1) if "values" in columns else None,
            codes=columns["codes"].reshape(*lead, k + 1) if "codes" in columns else None,
            scale=columns["scale"].reshape(lead) if "scale" in columns else None,
        )

    def table(self, columns: dict[str, np.ndarray]) -> pa.Table:
        out = {}
        for name, (dtype, width) in self.columns().items():
            flat = np.ascontiguousarray(columns[name], dtype=dtype).reshape(-1)
            out[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
        return pa.table(out)

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "top_k": self.top_k, "precision": self.precision}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Layout:
        return cls(tuple(body["shape"]), body["top_k"], body["precision"])


@dataclass(frozen=True)
class ShardTask:
    """One shard to build: rows ``[start, end)`` of ``split`` at checkpoint ``step``."""

    step: int
    split: str
    index: int
    start: int
    end: int

    @property
    def file(self) -> str:
        return f"shards/step-{self.step:09d}/{self.split}-{self.index:05d}.arrow"


def plan_shards(
    layout: Layout, sizes: dict[str, int], checkpoints: list[int], shard_mb: float
) -> list[ShardTask]:
    """The bank's shards: each split at each checkpoint cut into runs of rows of about
    ``shard_mb`` MiB (at least one row each; an empty split has one empty shard)."""
    per_shard = max(1, int(shard_mb * 2**20) // max(1, layout.example_bytes()))
    tasks = []
    for step in checkpoints:
        for split in SPLITS:
            n = int(sizes[split])
            starts = list(range(0, n, per_shard)) or [0]
            for index, start in enumerate(starts):
                tasks.append(ShardTask(step, split, index, start, min(n, start + per_shard)))
    return tasks


def write_shard(
    bank: Path,
    task: ShardTask,
    layout: Layout,
    columns: dict[str, np.ndarray],
    run_id: str,
    built_by: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one shard, then its record, each atomically; returns the record (``built_by``:
    where it was built, e.g. the Ray node, kept in the record for the curious)."""
    path = bank / task.file
    path.parent.mkdir(parents=True, exist_ok=True)
    table = layout.table(columns)
    if table.num_rows != task.end - task.start:
        raise ValueError(
            f"shard {task.file}: {table.num_rows} rows, {task.end - task.start} planned"
        )
    record = {
        **write_atomic(path, table), "file": task.file, "start": task.start, "end": task.end,
        "run_id": run_id, "layout": layout.to_json(), "built_by": built_by or {},
    }  # fmt: skip
    write_atomic(path.with_name(path.name + ".json"), json.dumps(record).encode())
    return record


def finished_shard(bank: Path, task: ShardTask, layout: Layout, run_id: str) -> dict | None:
    """The record of ``task``'s shard if an earlier build finished it for this teacher run and
    layout and the file still matches its checksum; else None (to be built again)."""
    path = bank / task.file
    try:
        record = json.loads(path.with_name(path.name + ".json").read_bytes())
        if (
            record.get("start") != task.start or record.get("end") != task.end
            or record.get("run_id") != run_id or record.get("layout") != layout.to_json()
            or path.stat().st_size != record.get("size")
        ):  # fmt: skip
            return None
        checked(bank, task.file, {task.file: record}, bank)  # hashed once per process
        return record
    except (OSError, ValueError, AttributeError, TypeError, KeyError):  # BankCorruptError too
        return None


def write_manifest(
    bank: Path,
    *,
    layout: Layout,
    records: list[dict[str, Any]],
    step: int,
    checkpoints: list[int],
    metrics: dict[str, float],
    history: list[dict[str, Any]] = (),
    transition: dict[str, Any] | None = None,
    scores: dict[str, np.ndarray] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the scores and then the manifest, completing the bank at ``bank``."""
    table = pa.table({k: np.asarray(v, dtype=np.float64) for k, v in (scores or {}).items()})
    files = {SCORES: write_atomic(bank / SCORES, table)}
    shards: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in sorted(records, key=lambda r: (*_step_split(r["file"]), r["start"])):
        step_, split = _step_split(record["file"])
        shards.setdefault(str(step_), {}).setdefault(split, []).append(
            {"file": record["file"], "start": record["start"], "end": record["end"]}
        )
        files[record["file"]] = {"size": record["size"], "sha256": record["sha256"]}
    write_json(bank / MANIFEST, {
        "format": FORMAT, "layout": layout.to_json(), "step": step, "checkpoints": checkpoints,
        "metrics": metrics, "history": list(history), "transition": transition,
        "shards": shards, "files": files, **(extra or {}),
    })  # fmt: skip
    return bank


def _step_split(file: str) -> tuple[int, str]:
    _, step_dir, name = file.split("/")
    return int(step_dir.removeprefix("step-")), name.rsplit("-", 1)[0]


class SplitOutputs:
    """One split's outputs at one checkpoint, across its shards: each shard checked and
    memory-mapped when first touched. ``gather(rows)`` copies just those rows' columns."""

    def __init__(self, bank: TeacherBank, shards: list[dict[str, Any]]) -> None:
        self.bank, self.layout = bank, bank.layout
        self.shards = sorted(shards, key=lambda s: s["start"])
        ends = [0] + [s["end"] for s in self.shards[:-1]]
        if [s["start"] for s in self.shards] != ends:
            where = self.bank.directory / MANIFEST
            raise BankCorruptError(
                where, "corrupt (its shards leave gaps or overlap)", where.parent
            )
        self.starts = np.array([s["start"] for s in shards], dtype=np.int64)
        self.n = int(shards[-1]["end"]) if shards else 0
        self._views: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.n

    @property
    def sparse(self) -> bool:
        return self.layout.top_k is not None

    def _view(self, i: int) -> dict[str, np.ndarray]:
        if i not in self._views:
            shard = self.shards[i]
            path = checked(self.bank.directory, shard["file"], self.bank.files, self.bank.directory)
            table = read_ipc(path)
            rows = shard["end"] - shard["start"]
            views = {}
            for name, (_, width) in self.layout.columns().items():
                column = table.column(name)  # one record batch: one chunk, no copy
                column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
                flat = column.flatten().to_numpy(zero_copy_only=True)  # the memory map itself
                views[name] = flat.reshape(rows, width)
            self._views[i] = views
        return self._views[i]

    def gather(self, rows: np.ndarray, out: dict[str, np.ndarray] | None = None) -> dict:
        """Columns of ``rows`` (indices into the split), each ``(len(rows), width)``, in the
        order given (into ``out``'s arrays when given, e.g. pinned buffers)."""
        rows = np.asarray(rows, dtype=np.int64)
        columns = self.layout.columns()
        if out is None:
            out = {name: np.empty((len(rows), w), dtype) for name, (dtype, w) in columns.items()}
        if len(self.shards) == 1:
            view = self._view(0)
            for name in columns:
                np.take(view[name], rows, axis=0, out=out[name])
            return out
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for i in np.unique(which):
            mask = which == i
            local = rows[mask] - self.starts[i]
            view = self._view(int(i))
            for name in columns:
                out[name][mask] = view[name][local]
        return out

    def blocks(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(start, columns)`` for each shard in order: the whole split, a shard at a time."""
        for i, shard in enumerate(self.shards):
            yield int(shard["start"]), self._view(i)

    def dense(self) -> np.ndarray:
        """The split's logits as one ``(n, *shape)`` float32 array (dense banks only)."""
        if self.sparse:
            raise ValueError("a top-k bank keeps no dense logits; use gather()")
        parts = [cols["logits"] for _, cols in self.blocks()]
        flat = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return flat.reshape(self.n, *self.layout.shape)


@dataclass
class TeacherBank:
    """A bank opened for reading: the manifest's fields; :meth:`outputs` gives a split's
    outputs at a kept checkpoint (the final one by default)."""

    directory: Path
    layout: Layout
    step: int
    checkpoints: list[int]
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    transition: dict[str, Any] | None
    scores: dict[str, np.ndarray]  # per training example, higher = harder
    shards: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _outputs: dict[tuple[int, str], SplitOutputs] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.shape

    @property
    def num_classes(self) -> int:
        return self.layout.vocab

    @property
    def top_k(self) -> int | None:
        return self.layout.top_k

    def outputs(self, split: str, step: int | None = None) -> SplitOutputs:
        step = self.step if step is None else step
        if step not in self.checkpoints:
            raise ValueError(
                f"teacher checkpoint {step} is not in the bank; kept: {self.checkpoints}"
            )
        key = (step, split)
        if key not in self._outputs:
            self._outputs[key] = SplitOutputs(self, self.shards[str(step)][split])
        return self._outputs[key]

    def verify(self) -> None:
        for name in self.files:
            checked(self.directory, name, self.files, self.directory)


def read_manifest(bank: Path) -> dict[str, Any]:
    try:
        return read_json(bank / MANIFEST, bank, FORMAT)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"teacher outputs {str(bank)!r} are missing or incomplete"
        ) from None


def verify_bank(directory: str | os.PathLike) -> None:
    """Check every file of a bank against its manifest (a file already checked by this process
    and unchanged since is not read again).

    Raises ``FileNotFoundError`` if there is no complete bank (no manifest) and
    :class:`BankCorruptError`, naming the first bad file, if the bank is damaged.
    """
    bank = Path(directory)
    files = read_manifest(bank)["files"]
    for name in files:
        checked(bank, name, files, bank)


def bank_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a whole, intact bank of this version (:func:`verify_bank`)."""
    try:
        verify_bank(directory)
    except (FileNotFoundError, BankCorruptError):
        return False
    return True


def open_bank(directory: str | os.PathLike) -> TeacherBank:
    """Open a bank: reads the manifest and the scores; shards are checked and memory-mapped
    when first read.

    Raises ``FileNotFoundError`` if there is no bank, :class:`BankCorruptError` if a file it
    reads is damaged.
    """
    directory = Path(directory)
    meta = read_manifest(directory)
    files = meta["files"]
    table = read_ipc(checked(directory, SCORES, files, directory))
    known = {"format", "layout", "step", "checkpoints", "metrics", "history", "transition",
             "shards", "files", "meta_sha256"}  # fmt: skip
    return TeacherBank(
        directory=directory, layout=Layout.from_json(meta["layout"]), step=meta["step"],
        checkpoints=meta["checkpoints"], metrics=meta["metrics"], history=meta["history"],
        transition=meta["transition"],
        scores={name: table.column(name).to_numpy() for name in table.column_names},
        shards=meta["shards"], files=files,
        extra={k: v for k, v in meta.items() if k not in known},
    )  # fmt: skip


def write_bank(
    directory: str | os.PathLike,
    logits: dict[str, np.ndarray] | dict[int, dict[str, np.ndarray]],
    *,
    step: int | None = None,
    metrics: dict[str, float],
    history: list[dict[str, Any]] = (),
    scores: dict[str, np.ndarray] | None = None,
    top_k: int | None = None,
    precision: str = "fp16",
    shard_mb: float = 256.0,
    transition: dict[str, Any] | None = None,
) -> Path:
    """Write a whole bank in this process from logits in memory: ``{split: (n, *shape)}`` at
    checkpoint ``step``, or ``{step: {split: ...}}`` for several (the last is the final).
    The builder for sweeps is :func:`trainables.bank.build_bank`; this one serves tests,
    benchmarks and users with outputs at hand."""
    bank = Path(directory)
    by_step = {step: logits} if step is not None else dict(logits)
    checkpoints = sorted(by_step)
    first = by_step[checkpoints[0]]
    layout = Layout(tuple(first["train"].shape[1:]), top_k, precision)
    sizes = {split: len(first[split]) for split in SPLITS}
    records = []
    for task in plan_shards(layout, sizes, checkpoints, shard_mb):
        part = by_step[task.step][task.split][task.start : task.end]
        records.append(write_shard(bank, task, layout, layout.encode(part), "in-memory"))
    return write_manifest(
        bank, layout=layout, records=records, step=checkpoints[-1], checkpoints=checkpoints,
        metrics=metrics, history=history, transition=transition, scores=scores,
    )  # fmt: skip
