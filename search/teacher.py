"""Teacher phase: train the sweep's teacher once (as a Tune trial) and keep its outputs.

Outputs live under ``<storage>/_teachers/<key>/``, ``key`` a content hash of the data and
teacher settings, so a later sweep with the same teacher reuses them without training.
"""

from __future__ import annotations

import hashlib
import json
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
from trainables.distill import TeacherBank, bank_complete, open_bank
from trainables.distill._bank import FORMAT as BANK_FORMAT
from trainables.teacher import train_teacher


class TeacherError(RuntimeError):
    pass


def teacher_key(spec: SweepSpec) -> str:
    """Content hash of everything that determines the teacher's outputs."""
    parts = {
        "format": BANK_FORMAT,
        "data": spec.data.model_dump(),
        "teacher": spec.teacher.model_dump(),
    }
    if spec.data.path:
        path = Path(spec.data.path)
        parts["data_file"] = hashlib.sha256(path.read_bytes()).hexdigest()
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def ensure_teacher(spec: SweepSpec, *, verbose: int = 0) -> Path:
    """Train the teacher unless its outputs already exist; write the sweep's ``teacher`` table."""
    outputs = Path(spec.storage).resolve() / "_teachers" / teacher_key(spec)
    if bank_complete(outputs):
        print(f"teacher: reusing {outputs}")
    else:
        print(f"teacher: training ({spec.teacher.optim.steps} steps) -> {outputs}")
        config = spec.teacher_config(str(outputs)).model_dump()
        tuner = tune.Tuner(
            tune.with_resources(train_teacher, {"cpu": spec.resources.cpus_per_trial}),
            param_space=config,
            run_config=tune.RunConfig(
                name="teacher", storage_path=str(spec.sweep_dir / "tune"), verbose=verbose
            ),
        )
        result = tuner.fit()[0]
        if result.error is not None or not bank_complete(outputs):
            raise TeacherError(f"teacher training failed: {result.error}")
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
        f"{len(teacher.checkpoints)} checkpoints kept{where}"
    )
    return outputs


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
