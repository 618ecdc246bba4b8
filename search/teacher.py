"""Teacher phase: train the sweep's teacher once (as a Tune trial, beside its cross-fitting
teachers) and build the bank of its outputs (a Ray Data job).

Everything lives under ``<root>/<key>/`` (``root``: ``teacher.bank.root``, default
``<storage>/_teachers``), ``key`` a content hash of the data and teacher settings, so a later
sweep (or another sweep at the same time) with the same teacher reuses it::

    <key>/teacher/          the teacher's run: weights at kept checkpoints, history, scores
    <key>/folds-<K>/fold-<f>/  the cross-fitting runs' scores of their held-out folds
    <key>/bank-<hash>/      a bank: shards + manifest (one per storage setting: top_k, ...)
    <key>/.lock             held by the driver building any of these
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from ray import tune

from analysis.tables import (
    TEACHER,
    TEACHER_FILE,
    TEACHER_RECORD,
    TEACHER_SCHEMA,
    write_parquet_atomic,
)
from search._lock import SweepLock, SweepLockedError
from search.progress import TuneConsole
from search.spec import SweepSpec
from trainables.bank import build_bank
from trainables.config import TeacherConfig
from trainables.data import check_data, data_files
from trainables.distill import (
    BankCorruptError,
    TeacherBank,
    bank_complete,
    open_bank,
    open_run,
    verify_bank,
)
from trainables.distill._run import RUN_FORMAT, read_fold
from trainables.teacher import train_teacher


class TeacherError(RuntimeError):
    """The teacher's trial failed. The message is one line: the error's type and text (from
    its traceback's last ``SomethingError:`` line on, joined); ``detail`` holds the whole
    error as Tune reported it."""

    def __init__(self, error: object, log_dir: Path, what: str = "teacher training") -> None:
        self.detail = "" if error is None else str(error)
        lines = [line.strip() for line in self.detail.splitlines() if line.strip()]
        starts = [i for i, line in enumerate(lines) if _RAISED.match(line)]
        text = " ".join(lines[starts[-1] if starts else -1 :])[:400] if lines else ""
        if isinstance(error, Exception) and not starts and lines:  # ours: its type and text
            text = f"{type(error).__name__}: {' '.join(lines)}"[:400]
        super().__init__(
            f"{what} failed: {text or 'it ended without its outputs'} (the whole error: {log_dir})"
        )


_RAISED = re.compile(r"[\w.]*(Error|Exception|Interrupt|Exit)\b.*:")


def teacher_key(spec: SweepSpec) -> str:
    """Content hash of everything that determines the teacher's training: data (the files'
    contents too), task and teacher settings, but not how its outputs are stored
    (``teacher.bank``) or whether folds are cross-fitted (``score_folds``)."""
    # data.paths and data.split_column: left out while unset (the data's own split); so are
    # data.source_column and data.noisy_source (no sources), here and in the teacher's copy
    # of the data, so adding them kept every key.
    unset = {
        n
        for n in ("paths", "split_column", "source_column", "noisy_source")
        if getattr(spec.data, n) is None
    }
    new = unset & {"source_column", "noisy_source"}  # the copy has always held the others
    teacher = spec.teacher.model_dump(exclude={"bank": True, "score_folds": True, "data": new})
    parts = {
        "format": RUN_FORMAT,  # the teacher's run, not the bank: a new bank format keeps it
        # A new teacher field changes every key (this version's transition_min_rise and
        # transition_holdout_fraction did: banks built before detected the transition on
        # validation), so the teachers of earlier versions are trained again, once.
        "data": spec.data.model_dump(exclude=unset),
        "task": spec.task.model_dump(),
        "teacher": teacher,
    }
    if spec.data.path or spec.data.paths:  # the files' contents, streamed (may be large)
        digest = hashlib.sha256()
        for path in data_files(spec.data):
            digest.update(f"{path.name}:{path.stat().st_size}:".encode())
            with open(path, "rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        parts["data_file"] = digest.hexdigest()
    return _hash(parts)


def _hash(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def teacher_dir(spec: SweepSpec, classes: int | None = None) -> Path:
    """The sweep's teacher bank: ``<root>/<teacher_key>/bank-<hash of how it is stored>``
    (``root``: ``teacher.bank.root``, default ``<storage>/_teachers``; the hash covers the
    resolved layout: settings that store the same, e.g. ``top_k`` unset or ``dense`` for 10
    classes, share a bank). Its parent holds the teacher's run (``teacher/``) and the
    cross-fitting runs (``folds-<K>/``), shared by every bank of that teacher. Hashes the data
    files, and reads the data for ``classes`` (the classes or vocabulary) unless given:
    compute it once per run."""
    bank = spec.teacher.bank
    root = Path(bank.root).expanduser() if bank.root else Path(spec.storage) / "_teachers"
    key = teacher_key(spec)
    if classes is None:
        classes = check_data(spec.data).num_classes
    top_k = bank.resolved_top_k(classes)
    storage = {
        "top_k": top_k, "precision": bank.precision if top_k else None,
        "shard_mb": bank.shard_mb, "score_folds": spec.teacher.score_folds,
    }  # fmt: skip
    return root.resolve() / key / f"bank-{_hash({'teacher': key, **storage})}"


def ensure_teacher(
    spec: SweepSpec,
    *,
    outputs: Path | None = None,
    verbose: int = 0,
    table: bool = True,
    tune_dir: Path | None = None,
    experiment: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Path:
    """Make sure the sweep's teacher bank is complete at ``outputs`` (default
    :func:`teacher_dir`) and write the sweep's ``teacher`` table.

    What is already there is reused: an intact bank as it is; otherwise the teacher's run and
    cross-fitting runs if intact (else trained, as Tune trials run side by side), and the
    finished shards of a killed build (the rest built on Ray Data). A damaged file is found
    by its checksum: a damaged shard is rebuilt alone; a damaged teacher run is moved aside
    and trained again. One driver builds at a time (a lock beside the bank, on the shared
    storage, that a dead driver does not hold): another sweep needing the same bank waits for
    it and reuses it. ``table``: write the sweep's ``teacher`` table; ``tune_dir``: where
    Tune keeps the teacher's trials (default ``<sweep>/tune``); ``experiment``: the context
    around the Tune experiment (the sweep's SIGINT handling: Ctrl-C outside it, e.g. while
    the bank is built, raises ``KeyboardInterrupt`` at once).
    """
    bank = outputs or teacher_dir(spec)
    if bank_complete(bank):
        print(f"teacher: reusing {bank}")
    else:
        lock = _wait_for_builder(bank)
        if lock is None:
            print(f"teacher: reusing {bank}, built meanwhile by another driver")
        else:
            try:
                _build(spec, bank, verbose, tune_dir or spec.sweep_dir / "tune", experiment)
            finally:
                lock.release()
    teacher = open_bank(bank)
    if table:
        table_dir = spec.sweep_dir / TEACHER
        table_dir.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(teacher_table(spec.name, teacher), table_dir / TEACHER_FILE)
    transition, rise = teacher.transition, teacher.metrics.get("transition_rise")
    if transition:
        where = (
            f"; phase transition {transition['start']}-{transition['end']}, checkpoint "
            f"{transition['checkpoint']}"
        )
    elif rise is not None:  # a flat teacher: two_shot from 'transition' is refused
        where = (
            f"; no phase transition (steepest rise {rise:.3f}, "
            f"{teacher.metrics['transition_required_rise']:.3f} required)"
        )
    else:
        where = ""
    folds = teacher.extra.get("score_folds") or 0
    fold_s = sum(f.get("wall_time_s", 0.0) for f in teacher.extra.get("folds") or [])
    print(
        f"teacher: step {teacher.step}, val_accuracy {teacher.metrics['val_accuracy']:.4f}, "
        f"test_accuracy {teacher.metrics['test_accuracy']:.4f}, "
        f"{len(teacher.checkpoints)} checkpoint{'s' * (len(teacher.checkpoints) != 1)} "
        f"kept{where}"
        + (
            f"; oof scores from {folds} folds ({folds} more teachers, {fold_s:.0f} s)"
            if folds
            else ""
        )
    )
    return bank


def _wait_for_builder(bank: Path) -> SweepLock | None:
    """The build lock beside ``bank`` (``<teacher_key>/.lock``), taken, once no live driver
    holds it; None if the bank was completed by another driver meanwhile."""
    lock, said = SweepLock(bank.parent), False
    while True:
        try:
            lock.acquire()
            return lock
        except SweepLockedError as exc:
            if bank_complete(bank):
                return None
            if not said:
                holder = exc.holder
                print(
                    f"teacher: another driver (pid {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}) is building {bank.parent}; waiting for it"
                )
                said = True
            time.sleep(_WAIT_S)


_WAIT_S = 1.0


def _build(
    spec: SweepSpec,
    bank: Path,
    verbose: int,
    tune_dir: Path,
    experiment: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """Under the build lock: check what is there, train what is missing, build the bank."""
    if _repair(bank):
        print(f"teacher: reusing {bank}, built meanwhile by another driver")
        return
    home, folds = bank.parent, spec.teacher.score_folds
    run_dir, folds_dir = home / "teacher", home / f"folds-{folds}"
    cfg = spec.teacher_config(str(run_dir))
    need_run = not _run_ready(run_dir)
    need_folds = [f for f in range(folds) if not _fold_ready(folds_dir / f"fold-{f}")]
    if need_run or need_folds:
        with experiment():
            _train(spec, cfg, need_run, need_folds, folds_dir, verbose, tune_dir)
    try:
        build_bank(cfg, run_dir, bank, folds_dir=folds_dir if folds else None, key=home.name)
    except (KeyboardInterrupt, OSError):  # Ctrl-C; a full or read-only disk: said elsewhere
        raise
    except Exception as exc:  # an actor's error (out of memory, CUDA, NaN outputs), ...
        log = bank / "build-error.txt"
        log.write_text("".join(traceback.format_exception(exc)))
        raise TeacherError(exc, log, what="building the teacher bank") from None


def _repair(bank: Path) -> bool:
    """True if ``bank`` is complete and intact. Otherwise make it resumable: a damaged shard
    (and its record) is removed, to be built again; a damaged manifest or scores file is
    removed (the manifest is written again at the end)."""
    try:
        verify_bank(bank)
        return True
    except FileNotFoundError:
        return False
    except BankCorruptError as error:
        bad, problem = error.path, error.problem
    print(f"teacher: {bad} is {problem}; building it again")
    (bank / "manifest.json").unlink(missing_ok=True)
    if bad.name.endswith(".arrow") and "shards" in bad.parts:
        bad.unlink(missing_ok=True)
        bad.with_name(bad.name + ".json").unlink(missing_ok=True)
    return False


def _run_ready(run_dir: Path) -> bool:
    """Whether the teacher's run is there and intact; a damaged one is moved aside (to a
    hidden ``.teacher.corrupt-<token>``), not deleted, with one line saying so."""
    try:
        open_run(run_dir).verify()
        return True
    except FileNotFoundError:
        if not run_dir.exists():
            return False
        bad, problem = run_dir / "run.json", "missing"  # runs appear whole: damaged
    except BankCorruptError as error:
        bad, problem = error.path, error.problem
    aside = run_dir.with_name(f".{run_dir.name}.corrupt-{secrets.token_hex(4)}")
    os.rename(run_dir, aside)
    print(f"teacher: {bad} is {problem}; moved the teacher's run to {aside}, training again")
    return False


def _fold_ready(fold_dir: Path) -> bool:
    try:
        read_fold(fold_dir)
        return True
    except (FileNotFoundError, BankCorruptError):
        return False


def _teacher_job(config: dict) -> None:
    """One teacher training of the sweep's (the teacher, or a cross-fitting one)."""
    train_teacher(config["job"])


def _train(
    spec: SweepSpec,
    cfg: TeacherConfig,
    need_run: bool,
    folds: list[int],
    folds_dir: Path,
    verbose: int,
    tune_dir: Path,
) -> None:
    """Train the teacher and the cross-fitting teachers of ``folds`` as trials of one Tune
    experiment (they run side by side as the cluster allows)."""
    jobs = [cfg.model_dump()] if need_run else []
    for fold in folds:
        update = {"fold": fold, "output_dir": str(folds_dir / f"fold-{fold}")}
        jobs.append(cfg.model_copy(update=update).model_dump())
    steps = cfg.optim.steps if cfg.train else 0
    what = [f"the teacher ({steps} steps) -> {cfg.output_dir}"] if need_run else []
    if folds:
        what.append(
            f"{len(folds)} cross-fitting teacher{'s' * (len(folds) != 1)} (score_folds "
            f"{cfg.score_folds}: each trains on {cfg.score_folds - 1}/{cfg.score_folds} of the "
            f"training split) -> {folds_dir}"
        )
    print(f"teacher: training {' and '.join(what)}: {len(jobs)} training run(s)")
    # a teacher gets what one student worker gets: its CPUs, and a GPU if they have one
    need = {"cpu": spec.resources.cpus_per_trial}
    if spec.resources.gpus_per_trial:
        need["gpu"] = min(1.0, spec.resources.gpus_per_trial)
    tuner = tune.Tuner(
        tune.with_resources(_teacher_job, need),
        param_space={"job": tune.grid_search(jobs)},
        run_config=tune.RunConfig(
            name="teacher",
            storage_path=str(tune_dir),
            callbacks=TuneConsole(verbose).alongside([]),
            verbose=0,  # Tune's console: TuneConsole shows it, naming the real directories
        ),
    )
    results = tuner.fit()  # empty when stopped (Ctrl-C) before its trials were made
    failed = [r for r in results if r.error is not None]
    if len(results) < len(jobs) or failed or (need_run and not _run_ready(Path(cfg.output_dir))):
        first = failed[0] if failed else (results[0] if len(results) else None)
        error, path = (first.error, first.path) if first is not None else (None, None)
        raise TeacherError(error, Path(path or tune_dir))


def teacher_table(sweep: str, teacher: TeacherBank) -> pa.Table:
    """One row per teacher evaluation, marking kept checkpoints and the phase transition
    (none marked, ``in_transition`` and ``is_transition_checkpoint`` false on every row,
    when the teacher has none: its accuracy never rose by ``teacher.transition_min_rise``)."""
    transition = teacher.transition or {}
    rows = []
    for record in teacher.history:
        step = record["step"]
        rows.append(
            {
                "sweep": sweep,
                **{k: record.get(k) for k in TEACHER_RECORD},
                "is_kept": step in teacher.checkpoints,
                "in_transition": bool(transition)
                and transition["start"] <= step <= transition["end"],
                "is_transition_checkpoint": step == transition.get("checkpoint"),
            }
        )
    return pa.Table.from_pylist(rows, schema=TEACHER_SCHEMA)
