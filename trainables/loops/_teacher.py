from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainables.config import TeacherConfig
from trainables.curriculum import (
    ShuffleSampler,
    confidence_difficulty,
    el2n_difficulty,
    entropy_difficulty,
    forgetting_difficulty,
    loss_difficulty,
    margin_difficulty,
)
from trainables.distill import write_teacher_outputs
from trainables.loops._common import as_tensors, evaluate, load_data, should_evaluate
from trainables.models import mlp


def teacher_loop(cfg: TeacherConfig) -> Iterator[dict[str, Any]]:
    """Train the teacher with cross-entropy, yielding metrics every ``eval_every`` steps.

    After the last step, if ``cfg.output_dir`` is set, the teacher's logits on the train,
    validation and test splits are written there (see :func:`write_teacher_outputs`), with
    per-training-example difficulty scores from the final teacher (confidence, margin, loss,
    entropy) and from its trajectory of evaluations (EL2N, forgetting events).
    """
    data = load_data(cfg.data)
    torch.manual_seed(cfg.seed)
    x_train, y_train, x_val, y_val, x_test, y_test = as_tensors(
        data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test
    )
    model = mlp(data.num_features, cfg.model.hidden, data.num_classes)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    sampler = ShuffleSampler(np.arange(len(y_train)), cfg.optim.batch_size, seed=cfg.seed)
    started, loss_sum, losses, samples = time.perf_counter(), torch.zeros(()), 0, 0
    history, trajectory = (
        [],
        _Trajectory(data.y_train, early_until=cfg.el2n_fraction * cfg.optim.steps),
    )

    for step in range(1, cfg.optim.steps + 1):
        batch = torch.from_numpy(sampler.next_batch().indices)
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        losses, samples = losses + 1, samples + len(batch)
        if should_evaluate(step, cfg.eval_every, cfg.optim.steps):
            val = evaluate(model, x_val, y_val)
            trajectory.record(step, evaluate(model, x_train, y_train).logits.numpy())
            record = {
                "step": step,
                "samples_seen": samples,
                "wall_time_s": time.perf_counter() - started,
                "train_loss": loss_sum.item() / losses,  # host sync, once per evaluation
                "val_accuracy": val.accuracy,
                "val_loss": val.loss,
            }
            history.append(record)
            yield record
            loss_sum, losses = torch.zeros(()), 0

    if cfg.output_dir is not None:
        val, test = evaluate(model, x_val, y_val), evaluate(model, x_test, y_test)
        train = evaluate(model, x_train, y_train)
        write_teacher_outputs(
            cfg.output_dir,
            {"train": train.logits.numpy(), "val": val.logits.numpy(), "test": test.logits.numpy()},
            step=cfg.optim.steps,
            metrics={
                "train_accuracy": train.accuracy,
                "val_accuracy": val.accuracy,
                "test_accuracy": test.accuracy,
            },
            history=history,
            scores=trajectory.scores(train.logits.numpy(), data.difficulty_train),
        )


class _Trajectory:
    """Training-set predictions at each evaluation, reduced as they arrive (O(n) memory per
    evaluation for correctness, O(n) in all for EL2N)."""

    def __init__(self, labels: np.ndarray, *, early_until: float) -> None:
        self.labels, self.early_until = labels, early_until
        self.correct: list[np.ndarray] = []
        self.el2n_sum, self.el2n_count = np.zeros(len(labels)), 0

    def record(self, step: int, logits: np.ndarray) -> None:
        self.correct.append(logits.argmax(axis=1) == self.labels)
        if step <= self.early_until or self.el2n_count == 0:
            self.el2n_sum += el2n_difficulty(logits[None], self.labels)
            self.el2n_count += 1

    def scores(self, final_logits: np.ndarray, column: np.ndarray | None) -> dict[str, np.ndarray]:
        y = self.labels
        scores = {
            "confidence": confidence_difficulty(final_logits, y),
            "margin": margin_difficulty(final_logits, y),
            "loss": loss_difficulty(final_logits, y),
            "entropy": entropy_difficulty(final_logits),
            "el2n": self.el2n_sum / self.el2n_count,
            "forgetting": forgetting_difficulty(np.stack(self.correct)),
        }
        if column is not None:
            scores["column"] = column
        return scores
