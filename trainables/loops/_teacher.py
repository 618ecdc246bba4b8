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
from trainables.distill import BankWriter
from trainables.distill._checkpoints import detect_transition, transition_checkpoint
from trainables.loops._common import (
    as_tensors,
    evaluate,
    load_data,
    make_optimizer,
    should_evaluate,
)
from trainables.models import mlp


def checkpoint_steps(total: int, *, every: int | None, log_spaced: int) -> set[int]:
    """Steps whose teacher outputs are banked: multiples of ``every``, ``log_spaced`` steps
    spread evenly in log scale over ``[1, total]``, and always ``total``."""
    steps = {total}
    if every:
        steps |= set(range(every, total + 1, every))
    if log_spaced:
        steps |= {int(round(s)) for s in np.geomspace(1, total, log_spaced)}
    return steps


def teacher_loop(cfg: TeacherConfig) -> Iterator[dict[str, Any]]:
    """Train the teacher with cross-entropy, yielding metrics every ``eval_every`` steps and at
    every kept checkpoint.

    If ``cfg.bank_dir`` is set, the teacher bank is built there (atomically, see
    :class:`BankWriter`): logits on every split at each kept checkpoint, the final weights
    (``teacher.pt``), the detected phase transition, and per-training-example difficulty
    scores from the final teacher (confidence, margin, loss, entropy) and from its trajectory
    of evaluations (EL2N, forgetting events).
    """
    data = load_data(cfg.data)
    torch.manual_seed(cfg.seed)
    x_train, y_train, x_val, y_val, x_test, y_test = as_tensors(
        data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test
    )
    model = mlp(data.num_features, cfg.model.hidden, data.num_classes)
    if cfg.init_from is not None:
        model.load_state_dict(torch.load(cfg.init_from, map_location="cpu", weights_only=True))
    steps = cfg.optim.steps if cfg.train else 0
    kept = checkpoint_steps(steps, every=cfg.checkpoint_every, log_spaced=cfg.log_checkpoints)
    writer = BankWriter(cfg.bank_dir) if cfg.bank_dir is not None else None

    def bank(step: int) -> None:
        if writer is not None:
            splits = {"train": x_train, "val": x_val, "test": x_test}
            writer.add_checkpoint(
                step, {s: evaluate(model, x, None).logits.numpy() for s, x in splits.items()}
            )

    optimizer = make_optimizer(model.parameters(), cfg.optim)
    sampler = ShuffleSampler(np.arange(len(y_train)), cfg.optim.batch_size, seed=cfg.seed)
    started, loss_sum, losses, samples = time.perf_counter(), torch.zeros(()), 0, 0
    history = []
    trajectory = _Trajectory(data.y_train, early_until=cfg.el2n_fraction * steps)
    try:
        for step in range(1, steps + 1):
            batch = torch.from_numpy(sampler.next_batch().indices)
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            losses, samples = losses + 1, samples + len(batch)
            if step in kept:
                bank(step)
            if not (should_evaluate(step, cfg.eval_every, steps) or step in kept):
                continue
            val = evaluate(model, x_val, y_val)
            trajectory.record(step, evaluate(model, x_train, y_train).logits.numpy())
            record = {
                "step": step,
                "samples_seen": samples,
                "wall_time_s": time.perf_counter() - started,
                "train_loss": loss_sum.item() / losses,  # host sync, once per evaluation
                "val_accuracy": val.accuracy,
                "val_loss": val.loss,
                "is_kept": step in kept,
            }
            history.append(record)
            yield record
            loss_sum, losses = torch.zeros(()), 0
        if writer is None:
            return
        if steps == 0:  # a loaded teacher, banked as it is
            bank(0)
            trajectory.record(0, evaluate(model, x_train, y_train).logits.numpy())
        train, val, test = (
            evaluate(model, x, y) for x, y in ((x_train, y_train), (x_val, y_val), (x_test, y_test))
        )
        transition = detect_transition(
            [r["step"] for r in history],
            [r["val_accuracy"] for r in history],
            window=cfg.transition_window,
        )
        if transition is not None:
            transition["checkpoint"] = transition_checkpoint(transition, writer.checkpoints)
        torch.save(model.state_dict(), writer.tmp / "teacher.pt")
        writer.commit(
            metrics={
                "train_accuracy": train.accuracy,
                "val_accuracy": val.accuracy,
                "test_accuracy": test.accuracy,
            },
            history=history,
            scores=trajectory.scores(train.logits.numpy(), data.difficulty_train),
            transition=transition,
        )
    finally:
        if writer is not None:
            writer.close()  # removes the temporary build unless it was committed


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
