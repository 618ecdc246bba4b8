"""Batches and evaluation over host-side data, for every task.

The examples stay in host memory (NumPy arrays, memory-mapped files, user Datasets): each step
gathers the batch's rows by index, and on a GPU copies them pinned and non-blocking. Only the
batch (inputs, targets and the teacher's outputs for it) crosses to the device; a split is
evaluated in chunks the same way, so data need not fit on the device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.tasks import IGNORE, Task

_EVAL_VALUES = 1 << 23  # output values per evaluation chunk (rows x positions x classes)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on ``device``: pinned and copied non-blocking to a GPU (the
    copy overlaps the work queued before it); on the CPU, the array's own memory."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def rows_to_device(source: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """``source[rows]`` on ``device``; on a GPU through :func:`pinned_rows`, then copied
    non-blocking."""
    if device.type != "cuda":
        return torch.from_numpy(np.ascontiguousarray(source[rows]))
    return pinned_rows(source, rows).to(device, non_blocking=True)


def pinned_rows(source: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """``source[rows]`` gathered straight into pinned host memory (PyTorch's caching host
    allocator, which reuses a block only once its copy to the device has finished): one
    host copy of the batch, not two."""
    dtype = torch.from_numpy(np.empty(0, dtype=source.dtype)).dtype
    staging = torch.empty((len(rows), *source.shape[1:]), dtype=dtype, pin_memory=True)
    np.take(source, rows, axis=0, out=staging.numpy())
    return staging


@dataclass(frozen=True)
class SplitData:
    """One split of a dataset under a task: ``x`` a row store of ``(n, *example_shape)``,
    ``y`` the labels (``classify``) or None (token data); :meth:`gather` gives the device
    tensors ``(inputs, targets)`` of any rows."""

    task: Task
    x: object  # a row store: __len__, shape, dtype, store[indices] -> np.ndarray
    y: np.ndarray | None
    split: str
    device: torch.device
    outputs: int  # values per example the model outputs (for the evaluation's chunk size)
    index: np.ndarray | None = None  # a subset's rows of the split (see :meth:`subset`)

    def __len__(self) -> int:
        return len(self.x) if self.index is None else len(self.index)

    def subset(self, rows: np.ndarray) -> SplitData:
        """The split's rows ``rows`` as a split of their own (row ``i`` is ``rows[i]``; the
        task's per-row choices, such as masked positions, stay those of the whole split)."""
        index = np.asarray(rows, dtype=np.int64)
        if self.index is not None:
            index = self.index[index]
        return dataclasses.replace(self, index=index)

    def host(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)`` of ``rows`` on the host."""
        if self.index is not None:
            rows = self.index[rows]
        x = np.asarray(self.x[rows])
        y = None if self.y is None else self.y[rows]
        inputs, targets = self.task.batch(x, y, rows, self.split)
        if inputs.dtype.kind == "f" and inputs.dtype != np.float32:
            inputs = inputs.astype(np.float32)
        return inputs, targets

    def gather(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of ``rows`` on the device."""
        inputs, targets = self.host(rows)
        return to_device(inputs, self.device), to_device(targets, self.device)

    def chunks(self) -> Iterator[np.ndarray]:
        """Row indices of the whole split, in order, a bounded chunk at a time."""
        size = max(1, min(65_536, _EVAL_VALUES // max(1, self.outputs)))
        for start in range(0, len(self), size):
            yield np.arange(start, min(start + size, len(self)))

    def targets(self) -> np.ndarray:
        """Every example's targets, ``(n,)`` or ``(n, positions)`` (host)."""
        return np.concatenate([self.host(rows)[1] for rows in self.chunks()])


@dataclass(frozen=True)
class Evaluation:
    """A model on one split. ``accuracy`` and ``loss`` are over the counted targets (token
    accuracy and mean token cross-entropy for the language-model tasks); ``correct`` is each
    example's accuracy (0/1, or the fraction of its counted tokens, NaN with none);
    ``predictions`` the argmax, ``(n,)`` or ``(n, positions)``, with ``counted`` marking the
    positions that count; ``logits`` the outputs on the host when asked for."""

    accuracy: float
    loss: float
    correct: torch.Tensor
    predictions: torch.Tensor
    counted: torch.Tensor | None
    logits: np.ndarray | None = None

    @property
    def perplexity(self) -> float:
        """``exp(loss)``: the language-model tasks' perplexity."""
        return math.exp(min(self.loss, 700.0))

    def agreement(self, other_predictions: torch.Tensor) -> float:
        """The fraction of counted targets where these predictions equal ``other``'s."""
        same = self.predictions == other_predictions
        if self.counted is None:
            return same.float().mean().item()
        return (same & self.counted).sum().item() / max(1, self.counted.sum().item())


@torch.no_grad()
def evaluate(model: nn.Module, data: SplitData, *, keep_logits: bool = False) -> Evaluation:
    """Accuracy, mean cross-entropy and per-example results of ``model`` on a split, in
    chunks (one host sync at the end, plus one per chunk with ``keep_logits``)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=data.device)  # ce, right, counted
    correct, predictions, counted_all, kept = [], [], [], []
    for rows in data.chunks():
        inputs, targets = data.gather(rows)
        logits = model(inputs).float()
        predicted = logits.argmax(dim=-1)
        if data.task.per_token:
            counted = targets != IGNORE
            ce = F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
            )
            hits = (predicted == targets) & counted
            per_sequence = counted.sum(dim=1)  # a sequence with none counted has no accuracy
            correct.append(
                (hits.sum(dim=1) / per_sequence).masked_fill(per_sequence == 0, math.nan)
            )
            counted_all.append(counted)
            totals += torch.stack([ce.double(), hits.sum().double(), counted.sum().double()])
        else:
            hits = predicted == targets
            ce = F.cross_entropy(logits, targets, reduction="sum")
            correct.append(hits.float())
            totals += torch.stack([ce.double(), hits.sum().double(), totals.new_tensor(len(rows))])
        predictions.append(predicted)
        if keep_logits:
            kept.append(logits.cpu().numpy())
    model.train(was_training)
    ce, right, count = totals.tolist()
    return Evaluation(
        accuracy=right / max(count, 1.0),
        loss=ce / max(count, 1.0),
        correct=torch.cat(correct),
        predictions=torch.cat(predictions),
        counted=torch.cat(counted_all) if counted_all else None,
        logits=np.concatenate(kept) if keep_logits else None,
    )


def output_shape(task: Task, example_shape: tuple[int, ...], num_classes: int) -> tuple[int, ...]:
    """One example's model output: ``(classes,)``, ``(L, vocab)`` for masked LM, ``(L - 1,
    vocab)`` for causal LM (the model reads all tokens but the last)."""
    if task.kind == "classify":
        return (num_classes,)
    length = example_shape[0] - (1 if task.kind == "causal_lm" else 0)
    return (length, num_classes)


def split_data(data, task: Task, device: torch.device) -> dict[str, SplitData]:
    """The three splits of :class:`~trainables.data.Splits` ``data`` under ``task``."""
    outputs = int(np.prod(output_shape(task, data.example_shape, data.num_classes)))
    return {
        name: SplitData(
            task, getattr(data, f"x_{name}"), getattr(data, f"y_{name}"), name, device, outputs
        )  # fmt: skip
        for name in ("train", "val", "test")
    }


def cross_entropy_per_example(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` cross-entropy: per example, or for ``(batch, positions, vocab)`` logits
    the mean over each sequence's counted tokens (0 with none)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, targets, reduction="none")
    counted = (targets != IGNORE).float()  # float32 even under bf16 autocast
    per_token = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none"
    ).reshape(targets.shape)
    return per_token.float().sum(dim=1) / counted.sum(dim=1).clamp(min=1)


def mean_loss(per_example: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
    """A batch's loss from per-example losses: their mean, or with ``counts`` (tokens per
    sequence) the mean over the batch's counted tokens."""
    if counts is None:
        return per_example.mean()
    return (per_example * counts).sum() / counts.sum().clamp(min=1)
