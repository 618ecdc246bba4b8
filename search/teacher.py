"""Teacher phase: train the sweep's teacher once (as a Tune trial) and keep its outputs.

Outputs live under ``<storage>/_teachers/<key>/``, ``key`` a content hash of the data and
teacher settings, so a later sweep with the same teacher reuses them without training. A bank
found damaged (checked against its checksums) is moved aside to a hidden
``.<key>.corrupt-<token>`` beside it and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
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
from search.spec import SweepSpec
from trainables.data import data_files
from trainables.distill import (
    BANK_FORMAT,
    BankCorruptError,
    TeacherBank,
    bank_complete,
    open_bank,
    verify_bank,
)
from trainables.teacher import train_teacher


class TeacherError(RuntimeError):
    """The teacher's trial failed. The message is one line: the error's type and text (from
    its traceback's last ``SomethingError:`` line on, joined); ``detail`` holds the whole
    error as Tune reported it."""

    def __init__(self, error: object, log_dir: Path) -> None:
        self.detail = "" if error is None else str(error)
        lines = [line.strip() for line in self.detail.splitlines() if line.strip()]
        starts = [i for i, line in enumerate(lines) if _RAISED.match(line)]
        text = " ".join(lines[starts[-1] if starts else -1 :])[:400] if lines else ""
        super().__init__(
            f"teacher training failed: {text or 'it ended without its outputs'} "
            f"(the whole error: {log_dir})"
        )


_RAISED = re.compile(r"[\w.]*(Error|Exception|Interrupt|Exit)\b.*:")


def teacher_key(spec: SweepSpec) -> str:
    """Content hash of everything that determines the teacher's outputs."""
    parts = {
        "format": BANK_FORMAT,
        "data": spec.data.model_dump(),
        "task": spec.task.model_dump(),
        "teacher": spec.teacher.model_dump(),
    }
    if spec.data.path:  # the files' contents, streamed (a token file may be large)
        digest = hashlib.sha256()
        for path in data_files(spec.data):
            digest.update(f"{path.name}:{path.stat().st_size}:".encode())
            with open(path, "rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        parts["data_file"] = digest.hexdigest()
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def teacher_dir(spec: SweepSpec) -> Path:
    """Where the sweep's teacher bank lives: ``<storage>/_teachers/<teacher_key>`` (hashing
    the data files: compute it once per run)."""
    return Path(spec.storage).resolve() / "_teachers" / teacher_key(spec)


def ensure_teacher(spec: SweepSpec, *, outputs: Path | None = None, verbose: int = 0) -> Path:
    """Train the teacher unless an intact bank of it exists at ``outputs`` (default
    :func:`teacher_dir`; a damaged one is moved aside and rebuilt); write the sweep's
    ``teacher`` table."""
    outputs = outputs or teacher_dir(spec)
    if _intact(outputs):
        print(f"teacher: reusing {outputs}")
    else:
        print(f"teacher: training ({spec.teacher.optim.steps} steps) -> {outputs}")
        config = spec.teacher_config(str(outputs)).model_dump()
        # the teacher gets what one student worker gets: its CPUs, and a GPU if they have one
        need = {"cpu": spec.resources.cpus_per_trial}
        if spec.resources.gpus_per_trial:
            need["gpu"] = min(1.0, spec.resources.gpus_per_trial)
        tuner = tune.Tuner(
            tune.with_resources(train_teacher, need),
            param_space=config,
            run_config=tune.RunConfig(
                name="teacher", storage_path=str(spec.sweep_dir / "tune"), verbose=verbose
            ),
        )
        results = tuner.fit()  # empty when stopped (Ctrl-C) before its trial was made
        result = results[0] if len(results) else None
        if result is None or result.error is not None or not bank_complete(outputs):
            error, path = (result.error, result.path) if result is not None else (None, None)
            raise TeacherError(error, Path(path or spec.sweep_dir / "tune"))
    teacher = open_bank(outputs)
    table_dir = spec.sweep_dir / TEACHER
    table_dir.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(teacher_table(spec.name, teacher), table_dir / TEACHER_FILE)
    transition = teacher.transition
    where = (
        f"; phase transition {transition['start']}-{transition['end']}, checkpoint "
        f"{transition['checkpoint']}"
        if transition
        else ""
    )
    print(
        f"teacher: step {teacher.step}, val_accuracy {teacher.metrics['val_accuracy']:.4f}, "
        f"test_accuracy {teacher.metrics['test_accuracy']:.4f}, "
        f"{len(teacher.checkpoints)} checkpoint{'s' * (len(teacher.checkpoints) != 1)} "
        f"kept{where}"
    )
    return outputs


def _intact(outputs: Path) -> bool:
    """Whether ``outputs`` holds an intact bank (every file checked against its checksum). A
    damaged one is moved aside, not deleted, with one line saying so."""
    try:
        verify_bank(outputs)
        return True
    except FileNotFoundError:
        if not outputs.exists():
            return False
        bad, problem = outputs / "meta.json", "missing"  # banks appear whole: damaged
    except BankCorruptError as error:
        bad, problem = error.path, error.problem
    aside = outputs.with_name(f".{outputs.name}.corrupt-{secrets.token_hex(4)}")
    try:
        os.rename(outputs, aside)
    except FileNotFoundError:  # another sweep moved it first
        return False
    print(f"teacher: {bad} is {problem}; moved the bank to {aside}, rebuilding")
    return False


def teacher_table(sweep: str, teacher: TeacherBank) -> pa.Table:
    """One row per teacher evaluation, marking kept checkpoints and the phase transition."""
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
