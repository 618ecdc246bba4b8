"""The student's checkpoint: what :func:`trainables.train_student` and
:func:`trainables.student_worker` save with a report, and :func:`load_student`, which builds
the student back from one for inference.

Layout of a checkpoint directory (a Ray Tune or Ray Train checkpoint, under the trial's
directory as ``checkpoint_<n>/``; which reports save one: ``StudentConfig.checkpoint``)::

    state.pt       a list with one entry per seed (``repeats``): the run's whole state
                   (model, optimiser, sampler, generators, running summary), plain tensors and
                   Python values, read with ``torch.load(..., weights_only=True)``
    student.json   {"format": 1, "config": the StudentConfig (JSON),
                    "model": build_model's arguments (task, example_shape, num_classes,
                             vocab_size, pad_id), "record": the metrics reported with it}

Nothing here imports Ray: a checkpoint is read from a path (or from any object with
``.as_directory()`` or ``.path``, such as ``ray.tune.Checkpoint`` or a ``Result``'s
``checkpoint``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.config import StudentConfig
from trainables.models import build_model

STATE_FILE = "state.pt"
INFO_FILE = "student.json"
FORMAT = 1

__all__ = ["FORMAT", "INFO_FILE", "STATE_FILE", "load_student", "read_state", "save_checkpoint"]


def save_checkpoint(
    directory: str | os.PathLike,
    cfg: StudentConfig,
    states: list[dict[str, Any]],
    model_args: dict[str, Any],
    record: dict[str, Any],
) -> None:
    """Write a checkpoint into ``directory``: ``states`` (one ``run.state_dict()`` per seed),
    ``cfg``, the model's build arguments and the reported ``record``."""
    directory = Path(directory)
    torch.save(states, directory / STATE_FILE)
    info = {
        "format": FORMAT,
        "config": cfg.model_dump(mode="json"),
        "model": model_args,
        "record": {k: _plain(v) for k, v in record.items()},
    }
    (directory / INFO_FILE).write_text(json.dumps(info, indent=1, default=_scalar) + "\n")


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a reported value (NaN and infinities as None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _scalar(value: Any) -> Any:
    """A NumPy or torch scalar as its Python value (anything else as its text)."""
    return value.item() if hasattr(value, "item") else str(value)


def read_state(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-seed states of a checkpoint, loaded on the CPU with ``weights_only=True``: a
    file that names any other callable is refused (``pickle.UnpicklingError``), never run."""
    return torch.load(Path(directory) / STATE_FILE, weights_only=True, map_location="cpu")


def load_student(
    checkpoint: Any, *, repeat: int = 0, device: str | torch.device = "cpu"
) -> tuple[nn.Module, StudentConfig]:
    """The student saved in ``checkpoint``, in eval mode on ``device``, and the config it ran
    with: ``model(x)`` gives the logits of a batch ``x`` of shape ``(B, *example_shape)`` as
    the data holds it (float32 features, or int64 token ids; a ``causal_lm`` model takes
    ``x[:, :-1]``).

    ``checkpoint``: a checkpoint directory (holding ``student.json``), a trial's directory or
    a Ray Train run's directory (its latest ``checkpoint_*`` is taken), or an object with
    ``.as_directory()`` or ``.path`` (``ray.tune.Checkpoint``, ``Result.checkpoint``).
    ``repeat``: which seed's model when the trial ran ``repeats > 1`` (``seed + repeat``).

    Raises :class:`FileNotFoundError` naming the path when it holds no student checkpoint and
    :class:`ValueError` for a ``repeat`` out of range.
    """
    with _directory(checkpoint) as directory:
        info = json.loads((directory / INFO_FILE).read_text())
        if info.get("format") != FORMAT:
            raise ValueError(
                f"checkpoint: {str(directory)!r} has format {info.get('format')!r}; this "
                f"version reads format {FORMAT}"
            )
        cfg = StudentConfig.model_validate(info["config"])
        states = read_state(directory)
    if not 0 <= repeat < len(states):
        raise ValueError(
            f"repeat: {repeat} is out of range; the checkpoint holds {len(states)} seed(s) "
            f"(0 to {len(states) - 1})"
        )
    args = dict(info["model"], example_shape=tuple(info["model"]["example_shape"]))
    model = build_model(cfg.model, **args)
    model.load_state_dict(states[repeat]["model"])
    return model.to(device).eval(), cfg


@contextlib.contextmanager
def _directory(checkpoint: Any) -> Iterator[Path]:
    """The local directory of ``checkpoint`` (see :func:`load_student`)."""
    if hasattr(checkpoint, "as_directory"):
        with checkpoint.as_directory() as directory:
            yield Path(directory)
        return
    path = getattr(checkpoint, "path", checkpoint)
    if not isinstance(path, (str, os.PathLike)):
        raise FileNotFoundError(
            f"checkpoint: {checkpoint!r} is no checkpoint (a Result of a trial that failed, or "
            "saved none, has checkpoint None); pass a checkpoint directory, a trial's "
            "directory or a Result's checkpoint"
        )
    yield latest_checkpoint(path)


def latest_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a student checkpoint, else the newest one below it (by the
    number of its ``checkpoint_<n>`` directory, then its modification time).
    :class:`FileNotFoundError` when there is none, or when the checkpoints below it are
    several trials' (a sweep's directory: which trial's would be a guess)."""
    path = Path(path)
    if (path / INFO_FILE).is_file():
        return path
    found = [info.parent for info in path.rglob(INFO_FILE)] if path.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"checkpoint: no student checkpoint ({INFO_FILE}) in {str(path)!r}; pass a "
            "checkpoint directory, a trial's directory or a Result's checkpoint (trials save "
            "one with their last report unless student.checkpoint.final is false)"
        )
    runs = {d.parent for d in found}  # one trial's (or one Train run's) checkpoints only
    if len(runs) > 1:
        raise FileNotFoundError(
            f"checkpoint: {str(path)!r} holds the checkpoints of {len(runs)} trials; pass one "
            "trial's directory, or for a sweep search.checkpoint_of(sweep_dir, trial_id)"
        )
    return max(found, key=lambda d: (_number(d.name), d.stat().st_mtime))


def _number(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1
