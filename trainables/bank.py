"""Build a teacher bank from a teacher's run: every kept checkpoint run over every split, as a
Ray Data job on the cluster the sweep runs on.

The shards to build (:func:`~trainables.distill._bank.plan_shards`) are the rows of a small
dataset; ``map_batches`` hands them, one at a time, to a pool of ``workers``
:class:`ShardBuilder` actors, each of which loads the data and the model once (a GPU each
when the cluster has GPUs), runs the checkpoint over the shard's rows ``batch_size`` at a
time, encodes the outputs (dense or top-k) and writes the shard to the bank's directory on
storage every node sees. Finished shards are kept across a killed build: the next build
checks them against their records and builds only the rest. The manifest is written last.

Without Ray (``use_ray=False``) the same builder runs in this process: the path for tests and
for users who build a bank inside a job of their own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.config import TeacherConfig
from trainables.distill._bank import (
    Layout,
    ShardTask,
    finished_shard,
    plan_shards,
    write_manifest,
    write_shard,
)
from trainables.distill._run import open_run, read_fold
from trainables.loops._batches import split_data
from trainables.loops._build import make_model
from trainables.loops._common import load_data
from trainables.loops._setup import resolve_device
from trainables.tasks import make_task

OOF = ("confidence", "margin", "loss", "entropy")  # the cross-fitted scores: oof_<name>
FORWARD_VALUES = 1 << 25  # outputs a forward of the builder makes at most (128 MiB float32)


def bank_layout(cfg: TeacherConfig, shape: tuple[int, ...]) -> Layout:
    """How a bank of ``cfg``'s teacher stores outputs of ``shape`` (see ``BankConfig``)."""
    return Layout(tuple(shape), cfg.bank.resolved_top_k(int(shape[-1])), cfg.bank.precision)


class ShardBuilder:
    """Runs teacher checkpoints over rows of the data and writes shards (one Ray Data actor,
    or plain in-process use). Loads the data and builds the model once; a checkpoint's
    weights are loaded when a shard of another checkpoint arrives."""

    def __init__(
        self,
        config: dict[str, Any],
        run_dir: str,
        bank_dir: str,
        layout: dict[str, Any],
        batch_size: int,
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        cfg = TeacherConfig.model_validate(config)
        data = load_data(cfg.data)
        task = make_task(
            cfg.task, vocab_size=data.vocab_size, pad_id=data.pad_id, tokens=data.tokens
        )
        self.device = resolve_device(cfg.device)
        self.splits = split_data(data, task, self.device)
        self.model = make_model(cfg, data, task).to(self.device).eval()
        self.run = open_run(run_dir)
        self.bank, self.layout = Path(bank_dir), Layout.from_json(layout)
        self.batch_size, self.step = batch_size, None
        self.built_by = {"host": socket.gethostname(), "pid": os.getpid()}
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():  # a Ray Data actor
            self.built_by["node"] = sys.modules["ray"].get_runtime_context().get_node_id()

    @torch.no_grad()
    def build(self, task: ShardTask) -> dict[str, Any]:
        if task.step != self.step:
            self.model.load_state_dict(self.run.weights(task.step))
            self.step = task.step
        split, parts = self.splits[task.split], []
        # examples a forward: batch_size, and no more than FORWARD_VALUES outputs (a long
        # sequence over a large vocabulary is megabytes of logits an example)
        per_forward = max(1, min(self.batch_size, FORWARD_VALUES // math.prod(self.layout.shape)))
        for start in range(task.start, task.end, per_forward):
            rows = np.arange(start, min(task.end, start + per_forward))
            inputs, _ = split.gather(rows)
            try:
                parts.append(self.layout.encode(self.model(inputs).float()))
            except ValueError as exc:
                raise ValueError(
                    f"teacher checkpoint {task.step}, {task.split} rows {rows[0]}-{rows[-1]}: {exc}"
                ) from None
        columns = {
            name: np.concatenate([p[name] for p in parts]) if parts
            else np.zeros((0, width), dtype)
            for name, (dtype, width) in self.layout.columns().items()
        }  # fmt: skip
        return write_shard(self.bank, task, self.layout, columns, self.run.run_id, self.built_by)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for i in range(len(batch["step"])):
            task = ShardTask(
                step=int(batch["step"][i]), split=str(batch["split"][i]),
                index=int(batch["index"][i]), start=int(batch["start"][i]),
                end=int(batch["end"][i]),
            )  # fmt: skip
            records.append(json.dumps(self.build(task)))
        return {"record": np.array(records, dtype=object)}


def build_bank(
    cfg: TeacherConfig,
    run_dir: str | Path,
    bank_dir: str | Path,
    *,
    folds_dir: str | Path | None = None,
    use_ray: bool = True,
    progress: Callable[[str], None] = print,
    key: str | None = None,
) -> Path:
    """Build (or finish) the bank at ``bank_dir`` from the teacher's run at ``run_dir``, with
    the cross-fitted ``oof_*`` scores from ``folds_dir`` when ``cfg.score_folds`` is set.
    ``key`` (the content hash of the data and teacher settings the sweep files the bank
    under) is recorded in the manifest, with the settings themselves.

    Shards finished by an earlier build of the same run and layout are kept (checked against
    their records first; a killed build's half-written hidden files are removed, so one
    builder at a time: a sweep holds a lock); the others are built, on Ray Data actors
    (``cfg.bank.workers`` of them, by default one per GPU of the cluster where it has GPUs and
    ``cfg.device`` allows, else one per CPU; each holds the model and the data) or, with
    ``use_ray=False``, here. Returns ``bank_dir``, complete.
    """
    run = open_run(run_dir)
    run.verify()
    bank = Path(bank_dir)
    bank.mkdir(parents=True, exist_ok=True)
    for stale in (bank / "shards").glob("*/.*"):  # half-written files of a killed build
        stale.unlink(missing_ok=True)
    layout = bank_layout(cfg, run.shape)
    tasks = plan_shards(layout, run.sizes, run.checkpoints, cfg.bank.shard_mb)
    records = {t: finished_shard(bank, t, layout, run.run_id) for t in tasks}
    todo = [t for t, record in records.items() if record is None]
    kept = len(tasks) - len(todo)
    rows = sum(t.end - t.start for t in todo)
    what = f"top-{layout.top_k} {layout.precision}" if layout.top_k else "dense float32"
    progress(
        f"bank: {len(todo)} of {len(tasks)} shards to build ({rows:,} examples x "
        f"{len(run.checkpoints)} checkpoint(s) in all, {what}, "
        f"{layout.example_bytes():,} bytes an example)" + (f", {kept} kept" if kept else "")
    )
    if todo:
        args = {
            "config": cfg.model_dump(), "run_dir": str(run.directory), "bank_dir": str(bank),
            "layout": layout.to_json(), "batch_size": cfg.bank.batch_size,
        }  # fmt: skip
        built = _on_ray(todo, args, cfg, progress) if use_ray else _here(todo, args, progress)
        for record in built:
            task = next(t for t in todo if t.file == record["file"])
            records[task] = record
    scores, folds = run.scores(), []
    if cfg.score_folds:
        oof, folds = oof_scores(Path(folds_dir), cfg.score_folds, run.sizes["train"])
        scores |= oof
    return write_manifest(
        bank, layout=layout, records=list(records.values()), step=run.step,
        checkpoints=run.checkpoints, metrics=run.metrics, history=run.history,
        transition=run.transition, scores=scores,
        extra={
            "key": key, "run_id": run.run_id, "sizes": run.sizes,
            "score_folds": cfg.score_folds, "folds": folds,
            "teacher": cfg.model_dump(mode="json", exclude={"output_dir", "fold"}),
        },
    )  # fmt: skip


class _Progress:
    """One line every few seconds while shards finish, and one at the end."""

    def __init__(self, total: int, rows: int, progress: Callable[[str], None]) -> None:
        self.total, self.rows, self.progress = total, rows, progress
        self.done = self.done_rows = 0
        self.started = self.last = time.monotonic()

    def add(self, record: dict[str, Any]) -> None:
        self.done, self.done_rows = self.done + 1, self.done_rows + record["end"] - record["start"]
        now = time.monotonic()
        if now - self.last >= 5.0 or self.done == self.total:
            self.last, elapsed = now, now - self.started
            rate = self.done_rows / max(elapsed, 1e-9)
            self.progress(
                f"bank: {self.done}/{self.total} shards, {self.done_rows:,}/{self.rows:,} "
                f"examples ({100 * self.done_rows / max(1, self.rows):.0f}%), {rate:,.0f}/s, "
                f"{elapsed:.1f} s"
            )


def _here(todo: list[ShardTask], args: dict, progress: Callable[[str], None]) -> list[dict]:
    builder, bar = ShardBuilder(**args), _Progress(len(todo), _rows(todo), progress)
    out = []
    for task in todo:
        out.append(builder.build(task))
        bar.add(out[-1])
    return out


def _on_ray(
    todo: list[ShardTask], args: dict, cfg: TeacherConfig, progress: Callable[[str], None]
) -> list[dict]:
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own line below: Ray Data's bars flood a log
    context.print_on_execution_start = False
    quiet = logging.getLogger("ray.data")  # its per-run INFO lines and the bars' warning
    level, quiet.level = quiet.level, logging.ERROR
    try:
        return _run_actors(todo, args, cfg, progress, ray)
    finally:
        quiet.setLevel(level)


def _run_actors(
    todo: list[ShardTask], args: dict, cfg: TeacherConfig, progress: Callable[[str], None], ray
) -> list[dict]:
    cluster = ray.cluster_resources()
    gpus = 1 if cfg.device != "cpu" and cluster.get("GPU", 0) >= 1 else 0
    workers = cfg.bank.workers or max(1, int(cluster.get("GPU" if gpus else "CPU", 1)))
    workers = min(workers, len(todo))
    dataset = ray.data.from_items(
        [dataclasses.asdict(t) for t in todo], override_num_blocks=len(todo)
    )
    built = dataset.map_batches(
        ShardBuilder, fn_constructor_kwargs={**args, "threads": 1 if not gpus else None},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
        num_gpus=gpus,
    )  # fmt: skip
    bar, out = _Progress(len(todo), _rows(todo), progress), []
    for row in built.iter_rows():
        out.append(json.loads(row["record"]))
        bar.add(out[-1])
    return out


def _rows(tasks: list[ShardTask]) -> int:
    return sum(t.end - t.start for t in tasks)


def oof_scores(
    folds_dir: Path, folds: int, n: int
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The cross-fitted scores ``oof_<name>`` of every training example, gathered from the
    fold runs under ``folds_dir`` (each scored the fold its teacher did not train on), and
    what each fold run cost (its metrics: steps, wall time, validation accuracy)."""
    scores = {f"oof_{name}": np.full(n, np.nan) for name in OOF}
    covered = np.zeros(n, dtype=bool)
    costs = []
    for fold in range(folds):
        meta, columns = read_fold(folds_dir / f"fold-{fold}")
        costs.append({"fold": fold, **meta["metrics"]})
        if meta["folds"] != folds or meta["fold"] != fold:
            raise ValueError(
                f"{folds_dir / f'fold-{fold}'} is fold {meta['fold']} of {meta['folds']}"
            )
        rows = columns["row"]
        covered[rows] = True
        for name in OOF:
            scores[f"oof_{name}"][rows] = columns[name]
    if not covered.all():
        raise ValueError(f"the {folds} folds under {folds_dir} leave {int((~covered).sum())} "
                         "training examples unscored")  # fmt: skip
    return scores, costs


def teacher_bank(
    cfg: TeacherConfig,
    bank_dir: str | Path,
    *,
    use_ray: bool = False,
    progress: Callable[[str], None] = print,
) -> Path:
    """Train ``cfg``'s teacher here (and its ``score_folds`` cross-fitting teachers, one after
    another) and build its bank at ``bank_dir``: the whole teacher phase of a sweep in one
    call, for a job of your own or a notebook. The teacher's run goes to
    ``<bank_dir>/teacher`` and the fold runs to ``<bank_dir>/folds``; the bank is built here
    or, with ``use_ray``, on Ray Data. Returns ``bank_dir``."""
    from trainables.loops import teacher_loop

    bank = Path(bank_dir)
    run_dir, folds_dir = bank / "teacher", bank / "folds"
    cfg = cfg.model_copy(update={"output_dir": str(run_dir), "fold": None})
    for _ in teacher_loop(cfg):
        pass
    for fold in range(cfg.score_folds):
        update = {"fold": fold, "output_dir": str(folds_dir / f"fold-{fold}")}
        for _ in teacher_loop(cfg.model_copy(update=update)):
            pass
    return build_bank(
        cfg, run_dir, bank, folds_dir=folds_dir if cfg.score_folds else None, use_ray=use_ray,
        progress=progress,
    )  # fmt: skip
