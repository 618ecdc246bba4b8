from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from trainables.config import CurriculumConfig, StudentConfig
from trainables.curriculum import (
    LinearPacing,
    PacedSampler,
    Sampler,
    ShuffleSampler,
    confidence_difficulty,
    easy_first_order,
)
from trainables.distill import kd_loss, read_teacher_outputs
from trainables.loops._common import as_tensors, evaluate, load_data, should_evaluate
from trainables.models import mlp


def make_sampler(
    cfg: CurriculumConfig, difficulty: np.ndarray, *, batch_size: int, total_steps: int, seed: int
) -> Sampler:
    """The batch sampler a curriculum config names (difficulty: per training example)."""
    if cfg.kind == "none":
        return ShuffleSampler(len(difficulty), batch_size, seed=seed)
    if cfg.kind == "linear":
        pacing = LinearPacing(start=cfg.start, full_at=cfg.full_at)
        order = easy_first_order(difficulty)
        return PacedSampler(order, pacing, batch_size, total_steps=total_steps, seed=seed)
    raise ValueError(f"curriculum.kind must be 'none' or 'linear', got {cfg.kind!r}")


def student_loop(cfg: StudentConfig) -> Iterator[dict[str, Any]]:
    """Distil the stored teacher outputs into a student, yielding a record per evaluation.

    Every record holds the curve metrics (``val_accuracy``, ``val_loss``, ``train_loss``,
    ``ce_loss``, ``kd_loss`` averaged since the previous evaluation, ``curriculum_fraction``,
    ``temperature``, ``alpha``, ``teacher_checkpoint``, ``stage``, ``easy_accuracy`` and
    ``hard_accuracy`` on the validation examples the teacher finds easier / harder than the
    median, ``teacher_agreement``) and the running summary (``best_val_accuracy``,
    ``steps_to_target``, ``step``, ``samples_seen``, ``wall_time_s``). The last record also
    holds ``test_accuracy`` of the final student.
    """
    if cfg.teacher_outputs is None:
        raise ValueError("teacher_outputs is required: a directory written by the teacher")
    data = load_data(cfg.data)
    teacher = read_teacher_outputs(cfg.teacher_outputs)
    if teacher.logits["train"].shape != (len(data.y_train), data.num_classes):
        raise ValueError(
            f"teacher_outputs {cfg.teacher_outputs!r} do not match the data: logits of shape "
            f"{teacher.logits['train'].shape}, train split of {len(data.y_train)} rows and "
            f"{data.num_classes} classes"
        )
    torch.manual_seed(cfg.seed)
    x_train, y_train, t_train, x_val, y_val, t_val, x_test, y_test = as_tensors(
        data.x_train, data.y_train, teacher.logits["train"],
        data.x_val, data.y_val, teacher.logits["val"],
        data.x_test, data.y_test,
    )  # fmt: skip
    val_difficulty = confidence_difficulty(teacher.logits["val"], data.y_val)
    val_hard = torch.from_numpy(val_difficulty > np.median(val_difficulty))
    teacher_val_pred = t_val.argmax(dim=1)

    model = mlp(data.num_features, cfg.model.hidden, data.num_classes)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    sampler = make_sampler(
        cfg.curriculum,
        confidence_difficulty(teacher.logits["train"], data.y_train),
        batch_size=cfg.optim.batch_size,
        total_steps=cfg.optim.steps,
        seed=cfg.seed,
    )
    temperature, alpha = cfg.distill.temperature, cfg.distill.alpha
    best, steps_to_target, samples = -math.inf, None, 0
    sums, count = torch.zeros(3), 0  # running (total, ce, kd) since the last evaluation
    started = time.perf_counter()

    for step in range(1, cfg.optim.steps + 1):
        fraction = sampler.fraction
        batch = torch.from_numpy(sampler.next_batch())
        loss = kd_loss(
            model(x_train[batch]), t_train[batch], y_train[batch],
            temperature=temperature, alpha=alpha,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        sums += torch.stack([loss.total.detach(), loss.ce.detach(), loss.kd.detach()])
        count, samples = count + 1, samples + len(batch)
        if not should_evaluate(step, cfg.eval_every, cfg.optim.steps):
            continue

        val = evaluate(model, x_val, y_val)
        train_loss, ce, kd = (sums / count).tolist()  # host sync, once per evaluation
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at step {step}")
        best = max(best, val.accuracy)
        if steps_to_target is None and val.accuracy >= cfg.target_accuracy:
            steps_to_target = step
        record = {
            "step": step,
            "samples_seen": samples,
            "wall_time_s": time.perf_counter() - started,
            "val_accuracy": val.accuracy,
            "val_loss": val.loss,
            "train_loss": train_loss,
            "ce_loss": ce,
            "kd_loss": kd,
            "curriculum_fraction": fraction,
            "temperature": temperature,
            "alpha": alpha,
            "teacher_checkpoint": teacher.step,
            "stage": 0,
            "easy_accuracy": val.correct[~val_hard].float().mean().item(),
            "hard_accuracy": val.correct[val_hard].float().mean().item(),
            "teacher_agreement": (val.logits.argmax(dim=1) == teacher_val_pred)
            .float()
            .mean()
            .item(),
            "best_val_accuracy": best,
            "steps_to_target": steps_to_target,
        }
        if step == cfg.optim.steps:
            record["test_accuracy"] = evaluate(model, x_test, y_test).accuracy
        yield record
        sums, count = torch.zeros(3), 0
