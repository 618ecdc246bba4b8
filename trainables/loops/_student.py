from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from trainables.config import StudentConfig, TeacherScheduleConfig
from trainables.curriculum import (
    ConfidenceSampler,
    StageController,
    confidence_difficulty,
    to_ranks,
)
from trainables.distill import TeacherOutputs, kd_loss_per_example, read_teacher_outputs
from trainables.distill._checkpoints import CheckpointSchedule, transition_checkpoint
from trainables.loops._common import (
    as_tensors,
    evaluate,
    load_data,
    make_optimizer,
    should_evaluate,
)
from trainables.loops._setup import (
    fit_irreducible_loss,
    make_sampler,
    make_temperature,
    make_value_schedule,
    make_weighting,
)
from trainables.models import mlp


def make_checkpoint_schedule(
    cfg: TeacherScheduleConfig, teacher: TeacherOutputs, total_steps: int
) -> CheckpointSchedule:
    """The teacher-checkpoint schedule, with ``transition`` resolved to the detected checkpoint."""
    first = cfg.checkpoint
    if first == "transition":
        first = transition_checkpoint(teacher.transition, teacher.checkpoints)
    return CheckpointSchedule(
        cfg.kind, tuple(teacher.checkpoints), total_steps, ratio=cfg.ratio, first=first,
        switch_at=cfg.switch_at, k=cfg.k, steps=tuple(cfg.steps), switches=tuple(cfg.switches),
    )  # fmt: skip


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
    data, teacher = load_data(cfg.data), read_teacher_outputs(cfg.teacher_outputs)
    if teacher.logits["train"].shape != (len(data.y_train), data.num_classes):
        raise ValueError(
            f"teacher_outputs {cfg.teacher_outputs!r} do not match the data: logits of shape "
            f"{teacher.logits['train'].shape}, train split of {len(data.y_train)} rows and "
            f"{data.num_classes} classes"
        )
    cur, steps = cfg.curriculum, cfg.optim.steps
    torch.manual_seed(cfg.seed)
    x_train, y_train, t_train, x_val, y_val, t_val, x_test, y_test = as_tensors(
        data.x_train, data.y_train, teacher.logits["train"],
        data.x_val, data.y_val, teacher.logits["val"], data.x_test, data.y_test,
    )  # fmt: skip
    val_rank = torch.from_numpy(to_ranks(confidence_difficulty(teacher.logits["val"], data.y_val)))
    teacher_val_pred = t_val.argmax(dim=1)

    model = mlp(data.num_features, cfg.model.hidden, data.num_classes)
    learned_t = make_temperature(cfg.distill)  # CTKD, or None
    params = list(model.parameters()) + (list(learned_t.parameters()) if learned_t else [])
    optimizer = make_optimizer(params, cfg.optim)
    checkpoint_at = make_checkpoint_schedule(cfg.teacher_schedule, teacher, steps)
    checkpoint = teacher.step
    irreducible = None
    if cur.kind == "rho":
        irreducible = fit_irreducible_loss(
            data, cfg.model.hidden, steps=cur.rho_holdout_steps, seed=cfg.seed
        )
    sampler = make_sampler(
        cur, teacher, batch_size=cfg.optim.batch_size, total_steps=steps, seed=cfg.seed,
        irreducible_loss=irreducible,
    )  # fmt: skip
    weighting = make_weighting(cur, data.num_classes)
    staged = cur.kind == "staged"
    stages = cur.stages if staged else cur.stages[:1]
    controller = StageController(
        [s.length for s in stages], progression=cur.progression, threshold=cur.gate_threshold,
        patience=cur.gate_patience,
    )  # fmt: skip
    temperature_at = make_value_schedule(
        cfg.distill.temperature_schedule,
        cfg.distill.temperature,
        [s.temperature if staged else None for s in stages],
    )
    alpha_at = make_value_schedule(
        cfg.distill.alpha_schedule, cfg.distill.alpha, [s.alpha if staged else None for s in stages]
    )
    noise = torch.Generator().manual_seed(cfg.seed + 1)

    form = cfg.distill.loss

    def distill(x: torch.Tensor, idx: torch.Tensor):
        return kd_loss_per_example(
            model(x), t_train[idx], y_train[idx], temperature=temperature, alpha=alpha, form=form
        )

    def scorer(indices: np.ndarray) -> np.ndarray:  # the student's current per-example loss
        idx = torch.from_numpy(indices)
        with torch.no_grad():
            per = distill(x_train[idx], idx)
        return (per.ce if cur.kind == "rho" else per.total).numpy()

    best, steps_to_target, samples = -math.inf, None, 0
    sums, count = torch.zeros(3), 0  # running (total, ce, kd) since the last evaluation
    started = time.perf_counter()
    for step in range(1, steps + 1):
        progress = (step - 1) / steps
        stage = controller.update(progress)
        if checkpoint_at(step) != checkpoint:  # switch teacher checkpoint: memory-mapped logits
            checkpoint = checkpoint_at(step)
            t_train = torch.from_numpy(np.array(teacher.checkpoint_logits(checkpoint)["train"]))
        if staged:
            sampler.set_stage(stage)
        alpha = alpha_at(progress, stage)
        temperature = learned_t(progress) if learned_t else temperature_at(progress, stage)
        fraction = sampler.fraction
        batch = sampler.next_batch(scorer)
        idx = torch.from_numpy(batch.indices)
        x = x_train[idx]
        if staged and stages[stage].augment > 0:
            x = x + stages[stage].augment * torch.randn(x.shape, generator=noise)
        per = distill(x, idx)
        if batch.weights is not None:
            weights = torch.from_numpy(batch.weights).to(per.total.dtype)
        elif weighting is not None:
            weights = weighting(per.total, per.ce, progress, samples // len(sampler.pool))
        else:
            weights = None
        loss = (per.total * weights).mean() if weights is not None else per.total.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if isinstance(sampler, ConfidenceSampler):
            sampler.observe(torch.exp(-per.ce.detach()).mean().item())
        sums += torch.stack([loss.detach(), per.ce.detach().mean(), per.kd.detach().mean()])
        count, samples = count + 1, samples + len(idx)
        if not should_evaluate(step, cfg.eval_every, steps):
            continue

        val = evaluate(model, x_val, y_val)
        low, high = stages[stage].band if staged else (0.0, 1.0)
        in_band = (val_rank >= low) & (val_rank <= high)
        controller.update(step / steps, val.correct[in_band].float().mean().item())
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
            "temperature": float(temperature.detach() if learned_t else temperature),
            "alpha": alpha,
            "teacher_checkpoint": checkpoint,
            "stage": stage,
            "easy_accuracy": val.correct[val_rank <= 0.5].float().mean().item(),
            "hard_accuracy": val.correct[val_rank > 0.5].float().mean().item(),
            "teacher_agreement": (val.logits.argmax(dim=1) == teacher_val_pred)
            .float()
            .mean()
            .item(),
            "best_val_accuracy": best,
            "steps_to_target": steps_to_target,
            "steps_to_target_capped": steps_to_target or steps + cfg.eval_every,
        }
        last = step == steps or (cfg.stop_at_target and steps_to_target is not None)
        if last:
            record["test_accuracy"] = evaluate(model, x_test, y_test).accuracy
        yield record
        if last:
            return
        sums, count = torch.zeros(3), 0
