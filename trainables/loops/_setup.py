"""From a validated :class:`StudentConfig` to the engine objects a student run uses."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from trainables.config import (
    CurriculumConfig,
    DistillConfig,
    ScheduleConfig,
    TeacherScheduleConfig,
)
from trainables.curriculum import (
    BandSampler,
    ConfidenceSampler,
    ImportanceSampler,
    PacedSampler,
    PiecewisePacing,
    RhoSampler,
    Sampler,
    SelfPacedWeighting,
    ShuffleSampler,
    easy_first_order,
    focal_weights,
    make_pacing,
    prune,
)
from trainables.distill import TeacherBank
from trainables.distill._checkpoints import CheckpointSchedule, transition_checkpoint
from trainables.distill._schedules import CTKDTemperature, Schedule, make_schedule
from trainables.loops._batches import SplitData, cross_entropy_per_example

Weighting = Callable[[torch.Tensor, torch.Tensor, float, int], torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """``auto``: the (first) GPU this process may use, else the CPU. Ray hides the GPUs a trial
    was not given (``CUDA_VISIBLE_DEVICES``), so a CPU trial on a GPU node stays on the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA GPU is visible to this process")
    return torch.device(name)


def make_checkpoint_schedule(
    cfg: TeacherScheduleConfig, teacher: TeacherBank, total_steps: int
) -> CheckpointSchedule:
    """The teacher-checkpoint schedule, with ``transition`` resolved to the detected checkpoint."""
    first = cfg.checkpoint
    if first == "transition":
        first = transition_checkpoint(teacher.transition, teacher.checkpoints)
    return CheckpointSchedule(
        cfg.kind, tuple(teacher.checkpoints), total_steps, ratio=cfg.ratio, first=first,
        switch_at=cfg.switch_at, k=cfg.k, steps=tuple(cfg.steps), switches=tuple(cfg.switches),
    )  # fmt: skip


def train_difficulty(cfg: CurriculumConfig, teacher: TeacherBank) -> np.ndarray:
    """The per-training-example difficulty named by ``cfg.score`` (higher = harder)."""
    if cfg.score not in teacher.scores:
        raise ValueError(
            f"curriculum.score: {cfg.score!r} is not available"
            + (" (set data.difficulty_column)" if cfg.score == "column" else "")
            + (" (set teacher.score_folds)" if cfg.score.startswith("oof_") else "")
            + f"; available: {', '.join(sorted(teacher.scores))}"
        )
    return teacher.scores[cfg.score]


def pacing_of(cfg: CurriculumConfig):
    p = cfg.pacing

    def one(start: float, full_at: float):
        return make_pacing(
            p.kind, start=start, full_at=full_at, power=p.power, num_steps=p.num_steps,
            inc=p.inc, step_length=p.step_length,
        )  # fmt: skip

    if not p.changes:
        return one(p.start, p.full_at)
    return PiecewisePacing(
        at=(0.0, *(c.at for c in p.changes)),
        pieces=(one(p.start, p.full_at), *(one(c.start, c.full_at) for c in p.changes)),
    )


def batch_sampler(
    cfg: CurriculumConfig,
    teacher: TeacherBank,
    *,
    batch_size: int,
    total_steps: int,
    seed: int,
    irreducible_loss: np.ndarray | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Sampler:
    """The batch sampler for ``cfg.kind`` over the (pruned) training pool."""
    difficulty = train_difficulty(cfg, teacher)
    prune_scores = teacher.scores["forgetting"] if cfg.prune_by == "forgetting" else difficulty
    pool = prune(prune_scores, cfg.prune_fraction)
    common = {"seed": seed, "rank": rank, "world_size": world_size}
    if cfg.kind in ("none", "self_paced", "focal"):
        return ShuffleSampler(pool, batch_size, **common)
    if cfg.kind in ("paced", "staged"):
        order = pool[easy_first_order(difficulty[pool])]
        if cfg.order == "hard_first":
            order = order[::-1].copy()
        elif cfg.order == "random":
            order = np.random.default_rng([seed, 0x0DE5]).permutation(pool)
        if cfg.kind == "staged":
            return BandSampler(order, [s.band for s in cfg.stages], batch_size, **common)
        return PacedSampler(order, pacing_of(cfg), batch_size, total_steps=total_steps, **common)
    if cfg.kind == "confidence":
        confidence = 1.0 - teacher.scores["confidence"]
        return ConfidenceSampler(
            pool,
            confidence,
            batch_size,
            beta_max=cfg.beta_max,
            pool_factor=cfg.pool_factor,
            **common,
        )
    if cfg.kind == "importance":
        return ImportanceSampler(
            pool,
            batch_size,
            pool_factor=cfg.pool_factor,
            smoothing=cfg.importance_smoothing,
            **common,
        )
    if cfg.kind == "rho":
        assert irreducible_loss is not None, "rho needs the irreducible loss"
        return RhoSampler(pool, irreducible_loss, batch_size, pool_factor=cfg.pool_factor, **common)
    raise ValueError(f"curriculum.kind {cfg.kind!r} is not known")


def make_weighting(cfg: CurriculumConfig, num_classes: int) -> Weighting | None:
    """Per-example loss weights from (total, ce, progress, epoch), or None for uniform."""
    if cfg.kind == "focal":
        return lambda total, ce, progress, epoch: focal_weights(ce, cfg.focal_gamma)
    if cfg.kind == "self_paced":
        sp = cfg.self_paced
        spl = SelfPacedWeighting(
            sp.regularizer, loss_scale=math.log(num_classes), growth=sp.growth,
            lambda0=sp.lambda0, mu=sp.mu, pacing=pacing_of(cfg), mixture_ratio=sp.mixture_ratio,
        )  # fmt: skip
        return lambda total, ce, progress, epoch: spl(total, progress=progress, epoch=epoch)
    return None


def make_value_schedule(
    cfg: ScheduleConfig, start: float, stage_values: list[float | None]
) -> Callable[[float, int], float]:
    """A function of (progress, stage) -> value; explicit per-stage values win."""
    if cfg.kind == "stage":
        k = len(stage_values)
        end = start if cfg.end is None else cfg.end
        by_stage = list(cfg.values) or [start + (end - start) * i / max(k - 1, 1) for i in range(k)]
        by_stage += [by_stage[-1]] * (k - len(by_stage))
    else:
        schedule: Schedule = make_schedule(
            "constant" if cfg.kind == "ctkd" else cfg.kind, start=start, end=cfg.end,
            boundaries=tuple(cfg.boundaries), values=tuple(cfg.values),
        )  # fmt: skip

    def value(progress: float, stage: int) -> float:
        if stage_values[stage] is not None:
            return stage_values[stage]
        return by_stage[stage] if cfg.kind == "stage" else schedule(progress)

    return value


def make_temperature(cfg: DistillConfig) -> CTKDTemperature | None:
    if cfg.temperature_schedule.kind == "ctkd":
        return CTKDTemperature(cfg.temperature, warmup=cfg.temperature_schedule.warmup)
    return None


def fit_irreducible_loss(
    make_model: Callable[[], nn.Module],
    splits: dict[str, SplitData],
    *,
    steps: int,
    seed: int,
    batch_size: int = 32,
) -> np.ndarray:
    """RHO-LOSS's irreducible loss: per-training-example cross-entropy (per sequence: the mean
    over its counted tokens) of a model of the student's shape fit with labels on the held-out
    validation split (Mindermann et al. 2022)."""
    torch.manual_seed(seed)
    hold, train = splits["val"], splits["train"]
    model = make_model().to(hold.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sampler = ShuffleSampler(np.arange(len(hold)), min(batch_size, len(hold)), seed=seed)
    for _ in range(steps):
        inputs, targets = hold.gather(sampler.next_batch().indices)
        loss = cross_entropy_per_example(model(inputs), targets).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        losses = [
            cross_entropy_per_example(model(x), y) for x, y in map(train.gather, train.chunks())
        ]
    return torch.cat(losses).float().cpu().numpy()
