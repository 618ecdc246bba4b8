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
    BanditSampler,
    BandSampler,
    ConfidenceSampler,
    Exp3S,
    ImportanceSampler,
    MixtureSampler,
    MixtureSchedule,
    PacedSampler,
    PiecewisePacing,
    RewardScaler,
    RhoSampler,
    Sampler,
    SelfPacedWeighting,
    ShuffleSampler,
    Thompson,
    bucket_arms,
    easy_first_order,
    focal_weights,
    make_pacing,
    prune,
    source_arms,
    to_ranks,
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
    """The teacher-checkpoint schedule, with ``transition`` resolved to the detected checkpoint.
    ``two_shot`` from checkpoint ``transition`` of a teacher without a phase transition is a
    ``ValueError`` (:func:`missing_transition`): an arbitrary checkpoint is not the paper's
    two-shot distillation (Panigrahi et al. 2024: only a checkpoint inside the transition
    helps), and silently using the final one would make it one-shot."""
    first = cfg.checkpoint
    if first == "transition" and cfg.kind == "two_shot":
        problem = missing_transition(teacher, where=f"the teacher bank {teacher.directory}")
        if problem is not None:
            raise ValueError(problem)
    if first == "transition":
        first = transition_checkpoint(teacher.transition, teacher.checkpoints)
    return CheckpointSchedule(
        cfg.kind, tuple(teacher.checkpoints), total_steps, ratio=cfg.ratio, first=first,
        switch_at=cfg.switch_at, k=cfg.k, steps=tuple(cfg.steps), switches=tuple(cfg.switches),
    )  # fmt: skip


def missing_transition(
    teacher: TeacherBank, *, where: str, field: str = "teacher_schedule.checkpoint"
) -> str | None:
    """None if the teacher has a phase transition; else the one-line refusal of a ``two_shot``
    schedule from checkpoint ``transition``, naming ``where`` the teacher's marks are (the
    sweep's ``teacher`` table, or the bank), the measured rise, the rise required and what to
    do instead (``field``: the checkpoint setting's name as the user writes it)."""
    if teacher.transition is not None:
        return None
    metrics, settings = teacher.metrics, teacher.extra.get("teacher") or {}
    rise, need = metrics.get("transition_rise"), metrics.get("transition_required_rise")
    min_rise = settings.get("transition_min_rise")
    if rise is None or need is None:
        measured = "it records no rise (fewer than two evaluations)"
    else:
        window = settings.get("transition_window", "teacher.transition_window")
        measured = (
            f"its steepest rise in accuracy over {window} evaluations is {rise:.3f}, below the "
            f"{need:.3f} required"
        )
        if min_rise is not None:
            measured += (
                f" (three standard errors of the accuracies measured; teacher.transition_min_rise"
                f" is {min_rise:g})"
                if need > min_rise
                else f" (teacher.transition_min_rise {min_rise:g})"
            )
    kept = teacher.checkpoints
    shown = ", ".join(map(str, kept if len(kept) <= 12 else [*kept[:6], "...", *kept[-5:]]))
    lower = (  # lowering the threshold helps only where it, not the noise, set the bar
        " or lower teacher.transition_min_rise (the teacher is then trained again)"
        if min_rise is not None and need is not None and need <= min_rise
        else ""
    )
    return (
        f"{field}: 'transition' with two_shot needs the teacher's phase transition, but "
        f"{where} shows none: {measured}; set {field} to one of the kept steps "
        f"({shown}){lower}"
    )


def carve_holdout(
    n_train: int,
    fraction: float,
    *,
    seed: int,
    given: np.ndarray | None = None,
    field: str = "holdout fraction",
    most: int | None = None,
) -> np.ndarray:
    """Rows of the training split held out for a training-time decision (validation is for
    selection only), in increasing order: the data's own ``holdout`` rows (``given``, indices
    into the training split) when it has them, else ``fraction`` of the split (at least one
    row, at most ``most``, never all) drawn by a permutation seeded with ``seed``."""
    if given is not None:
        rows = np.unique(np.asarray(given, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= n_train):
            raise ValueError(
                f"the data's holdout rows must be indices into its {n_train} training rows, "
                f"got {rows[0]}..{rows[-1]}"
            )
        if len(rows) == 0 or len(rows) >= n_train:
            raise ValueError(
                f"data.split_column / data.paths.holdout: {len(rows)} of the {n_train} "
                "training rows are holdout rows; a run that holds rows out needs at least one "
                "holdout row and one row to train on"
            )
        return rows
    if n_train < 2:
        raise ValueError(
            f"{field}: {fraction} of {n_train} training row(s) leaves none to train on; "
            "the training split needs at least 2 rows"
        )
    size = min(max(1, round(fraction * n_train)), n_train - 1, most or n_train)
    order = np.random.default_rng([seed, _HOLDOUT_SALT]).permutation(n_train)
    return np.sort(order[:size])


_HOLDOUT_SALT = 0x401D  # the holdout's stream, apart from the samplers' (same seed)
GATE_HOLDOUT_MAX = 10_000  # rows the stage gate evaluates at most (standard error <= 0.005)


def student_holdout(
    cfg: CurriculumConfig, n_train: int, *, seed: int, given: np.ndarray | None = None
) -> np.ndarray | None:
    """The training rows a student run holds out, never to train on: RHO's irreducible-loss
    model is fit on them (``rho_holdout_fraction``) and a staged curriculum's gate measures
    the stage's accuracy on them (``gate_holdout_fraction``, at most
    :data:`GATE_HOLDOUT_MAX` rows); the data's own ``holdout`` rows when it has them. None
    for a run that makes no training-time decision (it trains on every row)."""
    if cfg.kind == "rho":
        return carve_holdout(
            n_train, cfg.rho_holdout_fraction, seed=seed, given=given,
            field="curriculum.rho_holdout_fraction",
        )  # fmt: skip
    if cfg.kind == "bandit" and cfg.bandit.reward != "prediction_gain":
        return carve_holdout(
            n_train, cfg.bandit.holdout_fraction, seed=seed, given=given,
            field="curriculum.bandit.holdout_fraction",
        )  # fmt: skip
    if cfg.kind == "staged" and cfg.progression != "fixed":
        return carve_holdout(
            n_train, cfg.gate_holdout_fraction, seed=seed, given=given,
            field="curriculum.gate_holdout_fraction", most=GATE_HOLDOUT_MAX,
        )  # fmt: skip
    return None


def band_ranks(
    cfg: CurriculumConfig, difficulty: np.ndarray, rows: np.ndarray, *, seed: int
) -> np.ndarray:
    """Each of ``rows``' rank in ``[0, 1]`` in the curriculum's order among ``rows`` (easiest
    first, hardest first, or a seeded random order), so that a stage's ``band`` picks the
    same part of them as it picks of the training pool (:class:`BandSampler`)."""
    if cfg.order == "random":
        order = np.random.default_rng([seed, 0x0DE5, 1]).permutation(len(rows))
        ranks = np.empty(len(rows))
        ranks[order] = np.arange(len(rows)) / max(len(rows) - 1, 1)
        return ranks
    ranks = to_ranks(difficulty[rows])
    return 1.0 - ranks if cfg.order == "hard_first" else ranks


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
    holdout: np.ndarray | None = None,
    sources: tuple[np.ndarray, tuple[str, ...]] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Sampler:
    """The batch sampler for ``cfg.kind`` over the training pool: every training row but the
    ``holdout`` (:func:`student_holdout`), less what ``prune_fraction`` drops of them. The
    pool is a function of the config, the bank and the seed alone, so a resumed sampler
    (``load_state_dict``) continues over the same rows."""
    difficulty = train_difficulty(cfg, teacher)
    prune_scores = _prune_scores(cfg, teacher, difficulty)
    if holdout is None:  # every row (no copies of a large split's scores)
        pool = prune(prune_scores, cfg.prune_fraction)
    else:
        rows = np.setdiff1d(np.arange(len(difficulty)), holdout, assume_unique=True)
        pool = rows[prune(prune_scores[rows], cfg.prune_fraction)]
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
    if cfg.kind == "bandit":
        arms, names, _ = bandit_arms(cfg, difficulty, pool, sources, holdout)
        b = cfg.bandit
        policy = (
            Exp3S(
                len(arms), step_size=b.step_size, exploration=b.exploration,
                sharing=1.0 / total_steps if b.sharing is None else b.sharing,
            )
            if b.policy == "exp3s"
            else Thompson(len(arms), discount=1.0 - 1.0 / b.window, exploration=b.exploration)
        )  # fmt: skip
        scaler = RewardScaler(b.window)
        return BanditSampler(arms, policy, scaler, batch_size, names=names, **common)
    if cfg.kind == "mixture":
        assert sources is not None, "mixture needs the data's sources"
        codes, names = sources
        rows = source_arms(pool, codes, len(names))
        schedule = mixture_schedule(cfg, [len(r) for r in rows], names)
        return MixtureSampler(
            rows, schedule, batch_size, total_steps=total_steps, names=list(names), **common
        )
    raise ValueError(f"curriculum.kind {cfg.kind!r} is not known")


def _prune_scores(
    cfg: CurriculumConfig, teacher: TeacherBank, difficulty: np.ndarray
) -> np.ndarray:
    """What ``prune_fraction`` drops the lowest of: the difficulty, the forgetting score, or
    the KNN-Shapley value (the negated ``shapley`` difficulty: the least valuable go)."""
    if cfg.prune_by == "score":
        return difficulty
    if cfg.prune_by not in teacher.scores:
        raise ValueError(
            f"curriculum.prune_by: {cfg.prune_by!r} is not available in this teacher bank; "
            f"available: {', '.join(sorted(teacher.scores))}"
        )
    scores = teacher.scores[cfg.prune_by]
    return -scores if cfg.prune_by == "shapley" else scores


def bandit_arms(
    cfg: CurriculumConfig,
    difficulty: np.ndarray,
    pool: np.ndarray,
    sources: tuple[np.ndarray, tuple[str, ...]] | None,
    holdout: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[str], list[np.ndarray] | None]:
    """The bandit's arms: for each, the rows of the training ``pool`` it draws from, its
    name, and the ``holdout`` rows that belong to it (None without a holdout). Arms are
    ``bandit.buckets`` equal-size difficulty buckets (easiest first, named
    ``<score>:<i>/<n>``) or the data's sources.

    Buckets are cut over the pool and the holdout together, sorted by difficulty with ties
    in row order, so each bucket holds its share of both (its held-out rows measure the
    self prediction gain) however many rows share one score (a ``forgetting`` count, a
    ``column`` of few values)."""
    b = cfg.bandit
    if b.arms_column is None:
        rows = pool if holdout is None else np.union1d(pool, holdout)
        if b.buckets > len(pool):
            raise ValueError(
                f"curriculum.bandit.buckets: {b.buckets} buckets of {len(pool)} training rows; "
                f"use at most {len(pool)}"
            )
        groups = bucket_arms(rows, difficulty, b.buckets)
        names = [f"{cfg.score}:{i + 1}/{b.buckets}" for i in range(b.buckets)]
    else:
        assert sources is not None, "a bandit over sources needs the data's sources"
        codes, source_names = sources
        rows = pool if holdout is None else np.union1d(pool, holdout)
        groups, names = source_arms(rows, codes, len(source_names)), list(source_names)
    arms = [np.intersect1d(group, pool) for group in groups]
    held = None if holdout is None else [np.intersect1d(group, holdout) for group in groups]
    empty = [name for name, rows in zip(names, arms, strict=True) if len(rows) == 0]
    if empty:
        raise ValueError(
            f"curriculum.bandit: arm(s) {', '.join(map(repr, empty))} have no training rows "
            "left (after the holdout and prune_fraction)"
        )
    return arms, names, held


def mixture_schedule(
    cfg: CurriculumConfig, sizes: list[int], names: tuple[str, ...]
) -> MixtureSchedule:
    """``curriculum.mixture``'s schedule over the sources ``names`` of ``sizes`` training
    rows each (unset weights: the natural mix, proportional to size)."""
    m = cfg.mixture

    def vector(weights: dict[str, float] | None, field: str) -> list[float]:
        if weights is None:
            return [float(n) for n in sizes]
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(
                f"curriculum.mixture.{field}: unknown source(s) {', '.join(map(repr, unknown))}; "
                f"the data's sources: {', '.join(names)}"
            )
        vec = [float(weights.get(name, 0.0)) for name in names]
        if not any(w > 0 and n > 0 for w, n in zip(vec, sizes, strict=True)):
            raise ValueError(
                f"curriculum.mixture.{field}: {weights} gives no weight to a source with "
                "training rows"
            )
        return vec

    if m.schedule == "constant":
        return MixtureSchedule.constant(vector(m.weights, "weights"))
    if m.schedule == "linear":
        return MixtureSchedule.linear(
            vector(m.weights, "weights"), vector(m.end_weights, "end_weights")
        )
    if m.schedule == "stages":
        return MixtureSchedule.stages(
            [0.0, *(s.at for s in m.stages)],
            [vector(m.weights, "weights"), *(vector(s.weights, "stages") for s in m.stages)],
        )
    return MixtureSchedule.temperature(sizes, m.tau, m.tau if m.tau_end is None else m.tau_end)


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
    train: SplitData,
    holdout: np.ndarray,
    *,
    steps: int,
    seed: int,
    batch_size: int = 32,
) -> np.ndarray:
    """RHO-LOSS's irreducible loss (Mindermann et al. 2022): per-training-example
    cross-entropy (per sequence: the mean over its counted tokens) of a model of the
    student's shape fit with labels on the training split's ``holdout`` rows alone, a
    holdout the student never trains on (:func:`student_holdout`). Never the validation
    split: that is for selection, and a model fit on it would leak it into every batch the
    student picks. Returns one value per training row (the holdout's own are never read)."""
    torch.manual_seed(seed)
    hold = train.subset(holdout)
    model = make_model().to(train.device)
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
