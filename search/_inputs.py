"""Checking a sweep's inputs before anything starts: the data (:func:`check_data`) and then
each model against it (:func:`build_model`: a model is built once on the CPU and given a
dummy batch, so a factory that does not import, a sequence longer than a transformer's
``max_length``, an image shape a network cannot take, or outputs that do not match the data's
classes or vocabulary stop the sweep here, in one line, instead of in a trial)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from trainables.data import DataError, DataInfo, check_data
from trainables.distill import Layout
from trainables.loops import checkpoint_steps
from trainables.models import ModelError, build_model
from trainables.tasks import check_task_fits

__all__ = ["InputError", "bank_bytes", "check_bank_fits", "check_inputs"]

InputError = (DataError, ModelError)  # what check_inputs raises: bad data or a bad model


def check_inputs(spec, *, own_code: bool = True) -> DataInfo | None:
    """Check ``spec``'s data, then its teacher's and student's models against that data;
    raise :class:`DataError` or :class:`ModelError` (one line per problem, naming the field;
    both models' problems together).

    ``own_code=False`` (``submit``) leaves out the models built from code that may exist only
    on the cluster (``module`` factories, ``hf``): the job's own ``run`` checks them there."""
    if not own_code and spec.data.kind == "module":
        return None  # the data itself comes from such code
    info = check_data(spec.data)
    for note in info.notes:  # what the loader leaves out, e.g. binary files of a text glob
        print(f"note: {note}")
    try:
        source = f"data.factory {spec.data.factory!r}" if spec.data.factory else "the data"
        check_task_fits(spec.task.kind, info.tokens, source)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    problems = []
    for role in ("teacher", "student"):
        model = getattr(spec, role).model
        if not own_code and model.kind in ("module", "hf"):
            continue
        try:
            build_model(
                model, task=spec.task.kind, example_shape=tuple(info.example_shape),
                num_classes=info.num_classes, vocab_size=info.vocab_size, pad_id=info.pad_id,
                where=f"{role}.model",
            )  # fmt: skip
        except ModelError as exc:
            problems.append(str(exc))
    problems += _top_k_problems(spec, info)
    if problems:  # both models' problems at once, one line each
        raise ModelError("\n".join(problems))
    _check_source_names(spec, info)
    return info


def _check_source_names(spec, info: DataInfo) -> None:
    """:class:`DataError` (one line) for a source name the student's mixture weights or the
    space's ``mixture_sources`` give that the data's training rows do not have: every trial
    using it would fail."""
    mixes = spec.student.curriculum.kind == "mixture" or "mixture" in spec.space.curricula
    if info.source_names is None or not mixes:
        return
    mixture = spec.student.curriculum.mixture
    named = {
        "student.curriculum.mixture.weights": list(mixture.weights or {}),
        "student.curriculum.mixture.end_weights": list(mixture.end_weights or {}),
        **{f"student.curriculum.mixture.stages[{i}].weights": list(stage.weights)
           for i, stage in enumerate(mixture.stages)},
        "space.mixture_sources": list(spec.space.mixture_sources or []),
    }  # fmt: skip
    have = set(info.source_names)
    for field, names in named.items():
        unknown = [name for name in names if name not in have]
        if unknown:
            raise DataError(
                f"{field}: unknown source(s) {', '.join(map(repr, unknown))}; the data's "
                f"sources are {', '.join(info.source_names)}"
            )


def _top_k_problems(spec, info: DataInfo) -> list[str]:
    """The student's ``distill.top_k`` (and the space's ``top_ks``) against what the bank
    will keep for these classes or this vocabulary."""
    wanted = [spec.student.distill.top_k, *(spec.space.top_ks or [])]
    wanted = [k for k in wanted if k is not None]
    if not wanted:
        return []
    classes, stored = info.num_classes, spec.teacher.bank.resolved_top_k(info.num_classes)
    if max(wanted) > (stored or classes):
        what = f"the teacher bank keeps {stored}" if stored else f"the {classes} classes or tokens"
        return [
            f"student.distill.top_k / space.top_ks: {max(wanted)} is more than {what}; use "
            f"at most {stored or classes}"
        ]
    return []


def bank_bytes(spec, info: DataInfo) -> tuple[int, str]:
    """The teacher bank's size in bytes (the outputs of every example of every split at each
    kept checkpoint, in the bank's layout: dense float32, or top-k ids and log-probabilities
    per example or token) and how it is made up, for a message."""
    teacher = spec.teacher
    steps = teacher.optim.steps if teacher.train else 0
    kept = len(checkpoint_steps(
        steps, every=teacher.checkpoint_every, log_spaced=teacher.log_checkpoints
    ))  # fmt: skip
    if spec.task.kind == "classify":
        shape = (info.num_classes,)
        what = f"{info.num_classes:,} classes"
    else:
        positions = info.example_shape[0] - (spec.task.kind == "causal_lm")
        shape = (positions, info.num_classes)
        what = f"{positions:,} positions x {info.num_classes:,} tokens"
    layout = Layout(shape, teacher.bank.resolved_top_k(info.num_classes), teacher.bank.precision)
    kind = f"top-{layout.top_k} {layout.precision}" if layout.top_k else "dense float32"
    per_example = layout.example_bytes()
    total = info.rows * per_example * kept
    return total, (
        f"{info.rows:,} examples x {what} ({kind}: {per_example:,} bytes an example) x "
        f"{kept} checkpoints"
    )


def check_bank_fits(spec, info: DataInfo, teacher_dir: Path) -> None:
    """Refuse, before the teacher starts, a teacher bank larger than the free space under the
    storage (:class:`DataError`, one line): a dense per-token bank grows with examples x
    positions x vocabulary x checkpoints. A bank already built (``teacher_dir``) is reused and
    needs no room."""
    if (teacher_dir / "manifest.json").exists():
        return
    need, parts = bank_bytes(spec, info)
    where = teacher_dir  # under teacher.bank.root where it is set, else the storage
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise DataError(
            f"teacher: its bank would take {_size(need)} ({parts}), more than the {_size(free)} "
            f"free under {str(where)!r}; keep fewer examples (data.max_examples, "
            "data.train_size) or checkpoints (raise teacher.checkpoint_every, lower "
            "teacher.log_checkpoints), store a top-k (teacher.bank.top_k, "
            "teacher.bank.precision: int8), or use a --storage with more room"
        )


def _size(n: float) -> str:
    unit = min(int(math.log(max(n, 1), 1024)), 4)
    return f"{n / 1024**unit:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB'][unit]}"
