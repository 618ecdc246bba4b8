"""Build a student run once: from a validated :class:`StudentConfig` to a :class:`StudentRun`
holding every engine object and the running state that :func:`train_step` advances."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.config import CurriculumConfig, StageConfig, StudentConfig, TeacherConfig
from trainables.curriculum import (
    Sampler,
    StageController,
    confidence_difficulty,
    to_ranks,
)
from trainables.data import Splits
from trainables.distill import SplitOutputs, TeacherBank, open_bank, teacher_log_probs
from trainables.distill._checkpoints import CheckpointSchedule
from trainables.distill._schedules import CTKDTemperature
from trainables.distill._topk import (
    sparse_teacher_log_probs,
    topk_of_logits,
    truncate_topk,
)
from trainables.loops._batches import (
    SplitData,
    output_shape,
    split_data,
)
from trainables.loops._common import load_data, make_optimizer
from trainables.loops._setup import (
    Weighting,
    band_ranks,
    bandit_arms,
    batch_sampler,
    fit_irreducible_loss,
    make_checkpoint_schedule,
    make_temperature,
    make_value_schedule,
    make_weighting,
    resolve_device,
    student_holdout,
    train_difficulty,
)
from trainables.models import build_model
from trainables.tasks import IGNORE, Task, make_task


class TeacherTargets:
    """The teacher's log-probabilities for training batches at the current checkpoint: the
    batch's rows of the memory-mapped bank gathered on the host (from whichever shards hold
    them) and copied to the device with the batch (the bank need not fit on the device),
    softened at the step's T.

    A call returns ``(ids, log_p)``: ``ids`` None and ``log_p`` over every class for a dense
    bank; for a top-k bank, the top-k ids ``(..., k)`` and ``log_p`` over the k + 1 buckets
    (top-k and tail, :func:`~trainables.distill._topk.sparse_teacher_log_probs`). ``top_k``
    (the student's ``distill.top_k``) keeps only that many of them, the rest merged into the
    tail; on a dense bank it takes the top-k of the dense outputs on the device."""

    def __init__(
        self, teacher: TeacherBank, form: str, *, device: torch.device, top_k: int | None = None
    ) -> None:
        self.teacher, self.form, self.device, self.top_k = teacher, form, device, top_k
        self.layout = teacher.layout
        self.checkpoint: int | None = None
        self._ahead: tuple[np.ndarray, Future] | None = None

    def prefetch(self, rows: np.ndarray) -> None:
        """On a GPU, start gathering ``rows`` (this step's batch) into pinned memory on a
        helper thread: NumPy's ``take`` releases the GIL, so the host copy overlaps the main
        thread's kernel launches for the student's forward (a small model on a fast GPU is
        launch-bound). A no-op on the CPU, where the two would share the same cores."""
        if self.device.type == "cuda":
            self._ahead = (rows, _gatherer().submit(self._host, self.outputs, rows, True))

    def use(self, checkpoint: int) -> None:
        if checkpoint != self.checkpoint:  # the memory-mapped outputs of another checkpoint
            self.checkpoint = checkpoint
            self.outputs = self.teacher.outputs("train", checkpoint)

    def _host(self, outputs: SplitOutputs, rows: np.ndarray, pin: bool) -> dict[str, torch.Tensor]:
        columns = outputs.gather(rows)
        out = {}
        for name, array in columns.items():
            if array.dtype == np.uint16:  # torch has few uint16 kernels
                array = array.astype(np.int32)
            tensor = torch.from_numpy(array)
            out[name] = tensor.pin_memory() if pin else tensor
        return out

    def __call__(
        self, rows: np.ndarray, temperature: float | torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] is rows:  # gathered by prefetch, same checkpoint
            host = ahead[1].result()
        else:
            host = self._host(self.outputs, rows, False)
        cols = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
        n, shape, k = len(rows), self.layout.shape, self.layout.top_k
        if k is None:
            logits = cols["logits"].reshape(n, *shape)
            if self.top_k is None:
                return None, teacher_log_probs(logits, temperature, self.form)
            ids, log_p = topk_of_logits(logits, self.top_k)
        else:
            ids, log_p = self.layout.decode(cols)
            if self.top_k is not None and self.top_k < k:
                ids, log_p = truncate_topk(ids, log_p, self.top_k)
        return ids, sparse_teacher_log_probs(log_p, temperature, self.form)


@functools.cache
def _gatherer() -> ThreadPoolExecutor:
    """One helper thread per process for :meth:`TeacherTargets.prefetch`."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher-rows")


@dataclass(eq=False)
class StudentRun:
    """Everything one student run needs, built once by :func:`build_student`: the engine
    objects (model, optimiser, sampler, schedules) and the running state that
    :func:`~trainables.loops.train_step` and :func:`~trainables.loops.evaluate_run` update."""

    cfg: StudentConfig
    device: torch.device
    world_size: int
    task: Task
    train: SplitData  # host rows, gathered by index each step
    val: SplitData
    test: SplitData
    val_rank: torch.Tensor  # (n_val,) the teacher's difficulty rank in [0, 1]
    teacher_val_pred: torch.Tensor  # (n_val,) or (n_val, positions): the teacher's argmax
    targets: TeacherTargets
    model: nn.Module
    forward: nn.Module  # the model for the training forward (DDP-wrapped on several workers)
    optimizer: torch.optim.Optimizer
    learned_t: CTKDTemperature | None  # CTKD's learned temperature, else None
    sampler: Sampler
    weighting: Weighting | None
    controller: StageController
    stages: list[StageConfig]  # the curriculum's stages (one unless ``staged``)
    staged: bool
    temperature_at: Callable[[float, int], float]  # (progress, stage) -> T
    alpha_at: Callable[[float, int], float]  # (progress, stage) -> alpha
    checkpoint_at: CheckpointSchedule  # step -> teacher checkpoint
    noise: torch.Generator  # the staged curriculum's input noise
    autocast: contextlib.AbstractContextManager
    step: int = 0  # the last step trained
    stage: int = 0
    alpha: float = 0.0
    temperature: float | torch.Tensor = 0.0
    fraction: float = 0.0
    samples: int = 0  # examples seen, over all workers
    best: float = -math.inf
    steps_to_target: int | None = None
    sums: torch.Tensor | None = None  # (total, ce, kd) loss sums since the last evaluation
    count: int = 0  # steps in ``sums``
    holdout: np.ndarray | None = None  # training rows held out, never trained on (rho, gate)
    gate: SplitData | None = None  # a gated staged curriculum's holdout rows, evaluated
    gate_rank: torch.Tensor | None = None  # (n_gate,) their rank in the curriculum's order
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)  # build_model's, bar cfg
    reward_rows: list[np.ndarray] | None = None  # a bandit's held-out rows (per arm, or all)

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything needed to continue after ``step`` exactly as if never stopped:
        model, optimiser, learned temperature, sampler (its generator and position), stage
        controller, noise and torch generators (the CPU's and, on a GPU, the device's, which
        its dropout draws from), and the running summary."""
        return copy.deepcopy({
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "learned_t": self.learned_t.state_dict() if self.learned_t else None,
            "sampler": self.sampler.state_dict(),
            "controller": self.controller.state_dict(),
            "noise": self.noise.get_state(),
            "torch_rng": torch.get_rng_state(),
            # dropout on a GPU draws from the device's generator, not the CPU's
            "cuda_rng": (
                torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            ),
            "running": (self.samples, self.best, self.steps_to_target, self.sums, self.count),
        })  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the settings stay ``cfg``'s)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.learned_t and state["learned_t"] is not None:
            self.learned_t.load_state_dict(state["learned_t"])
        self.sampler.load_state_dict(state["sampler"])
        self.controller.load_state_dict(state["controller"])
        self.noise.set_state(state["noise"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.samples, self.best, self.steps_to_target, sums, self.count = state["running"]
        self.sums, self.step = sums.to(self.device), int(state["step"])


def build_student(
    cfg: StudentConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
) -> StudentRun:
    """Load the data and the teacher bank and build the run's engine objects (seeded by
    ``cfg.seed``; RHO fits its irreducible-loss model here, on the training rows held out by
    :func:`~trainables.loops._setup.student_holdout`, which also hold a gated staged
    curriculum's gate rows). ``rank`` / ``world_size`` shard the sampler's global batches
    (every rank holds out the same rows); ``wrap_model`` (e.g. DDP) wraps the training
    forward."""
    if cfg.teacher_bank is None:
        raise ValueError("teacher_bank is required: a directory written by the teacher")
    data, teacher = load_data(cfg.data), open_bank(cfg.teacher_bank)
    task = make_task(cfg.task, vocab_size=data.vocab_size, pad_id=data.pad_id, tokens=data.tokens)
    expected = (len(data.x_train), *output_shape(task, data.example_shape, data.num_classes))
    found = (len(teacher.outputs("train")), *teacher.shape)
    if found != expected:
        raise ValueError(
            f"teacher_bank {cfg.teacher_bank!r} does not match the data: the teacher's "
            f"outputs have shape {found} on the train split, the student's would have "
            f"{expected}"
        )
    top_k = cfg.distill.top_k
    if top_k is not None and top_k > teacher.num_classes:
        raise ValueError(
            f"distill.top_k: {top_k} is more than the teacher's {teacher.num_classes} classes "
            f"or tokens; use at most {teacher.num_classes}"
        )
    if top_k is not None and teacher.top_k is not None and top_k > teacher.top_k:
        raise ValueError(
            f"distill.top_k: {top_k} is more than the teacher bank keeps ({teacher.top_k}); "
            f"use at most {teacher.top_k} or rebuild the bank with teacher.bank.top_k {top_k}"
        )
    device = resolve_device(cfg.device)
    cur, steps, staged = cfg.curriculum, cfg.optim.steps, cfg.curriculum.kind == "staged"
    torch.manual_seed(cfg.seed)
    splits = split_data(data, task, device)
    val_targets = splits["val"].targets()
    val_confidence, val_pred = _val_summary(teacher.outputs("val"), val_targets)
    val_rank = torch.from_numpy(to_ranks(val_confidence))
    teacher_val_pred = torch.from_numpy(val_pred).to(device)
    model = make_model(cfg, data, task).to(device)
    learned_t = make_temperature(cfg.distill)  # CTKD, or None
    if learned_t:
        learned_t.to(device)
    params = list(model.parameters()) + (list(learned_t.parameters()) if learned_t else [])
    optimizer = make_optimizer(params, cfg.optim)
    forward = wrap_model(model) if wrap_model else model
    targets = TeacherTargets(teacher, cfg.distill.loss, device=device, top_k=top_k)
    targets.use(teacher.step)
    holdout = student_holdout(
        cur, len(splits["train"]), seed=cfg.seed, given=getattr(data, "holdout", None)
    )
    irreducible = gate = gate_rank = None
    if cur.kind == "rho":
        irreducible = fit_irreducible_loss(
            lambda: make_model(cfg, data, task), splits["train"], holdout,
            steps=cur.rho_holdout_steps, seed=cfg.seed, batch_size=cfg.optim.batch_size,
        )  # fmt: skip
    elif holdout is not None and staged:  # a staged curriculum's gate
        gate = splits["train"].subset(holdout)
        ranks = band_ranks(cur, train_difficulty(cur, teacher), holdout, seed=cfg.seed)
        gate_rank = torch.from_numpy(ranks).to(device)
    sources = None if data.source_train is None else (data.source_train, tuple(data.source_names))
    sampler = batch_sampler(
        cur, teacher, batch_size=cfg.optim.batch_size, total_steps=steps, seed=cfg.seed,
        irreducible_loss=irreducible, holdout=holdout, sources=sources, rank=rank,
        world_size=world_size,
    )  # fmt: skip
    reward_rows = (
        bandit_reward_rows(cur, teacher, sampler.pool, holdout, sources)
        if cur.kind == "bandit"
        else None
    )
    stages = cur.stages if staged else cur.stages[:1]
    controller = StageController(
        [s.length for s in stages], progression=cur.progression,
        threshold=cur.gate_threshold, patience=cur.gate_patience,
    )  # fmt: skip
    temperature_at = make_value_schedule(
        cfg.distill.temperature_schedule, cfg.distill.temperature,
        [s.temperature if staged else None for s in stages],
    )  # fmt: skip
    alpha_at = make_value_schedule(
        cfg.distill.alpha_schedule, cfg.distill.alpha, [s.alpha if staged else None for s in stages]
    )
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16"
        else contextlib.nullcontext()
    )
    return StudentRun(
        cfg=cfg, device=device, world_size=world_size, task=task, train=splits["train"],
        val=splits["val"], test=splits["test"], val_rank=val_rank.to(device),
        teacher_val_pred=teacher_val_pred, targets=targets, model=model,
        forward=forward, optimizer=optimizer, learned_t=learned_t, sampler=sampler,
        weighting=make_weighting(cur, data.num_classes), controller=controller, stages=stages,
        staged=staged, temperature_at=temperature_at, alpha_at=alpha_at,
        checkpoint_at=make_checkpoint_schedule(cfg.teacher_schedule, teacher, steps),
        noise=torch.Generator(device=device).manual_seed(cfg.seed + 1), autocast=autocast,
        alpha=cfg.distill.alpha, temperature=cfg.distill.temperature,
        sums=torch.zeros(3, device=device), holdout=holdout, gate=gate, gate_rank=gate_rank,
        model_args=model_arguments(data, task), reward_rows=reward_rows,
    )  # fmt: skip


def bandit_reward_rows(
    cfg: CurriculumConfig,
    teacher: TeacherBank,
    pool: np.ndarray,
    holdout: np.ndarray | None,
    sources: tuple[np.ndarray, tuple[str, ...]] | None,
) -> list[np.ndarray] | None:
    """The held-out rows a bandit's reward is measured on: per arm for
    ``self_prediction_gain`` (the held-out rows of its bucket or source,
    :func:`~trainables.loops._setup.bandit_arms`), all of them for
    ``target_prediction_gain``; None for ``prediction_gain`` (the step's own batch)."""
    reward = cfg.bandit.reward
    if reward == "prediction_gain":
        return None
    assert holdout is not None, "the bandit's reward needs held-out rows"
    if reward == "target_prediction_gain":
        return [holdout]
    _, names, held = bandit_arms(cfg, train_difficulty(cfg, teacher), pool, sources, holdout)
    empty = [name for name, rows in zip(names, held, strict=True) if len(rows) == 0]
    if empty:
        raise ValueError(
            f"curriculum.bandit.holdout_fraction: no held-out rows fall in arm(s) "
            f"{', '.join(map(repr, empty))}, so self_prediction_gain cannot be measured "
            f"there ({len(holdout)} rows held out); raise it, or use another reward"
        )
    return held


def make_model(cfg: StudentConfig | TeacherConfig, data: Splits, task: Task) -> nn.Module:
    """``cfg.model`` built for this data and task (on the CPU)."""
    return build_model(cfg.model, **model_arguments(data, task))


def model_arguments(data: Splits, task: Task) -> dict[str, Any]:
    """:func:`~trainables.models.build_model`'s keyword arguments for this data and task:
    plain values, kept with a checkpoint so the model is built again without the data."""
    return {
        "task": task.kind, "example_shape": [int(d) for d in data.example_shape],
        "num_classes": int(data.num_classes),
        "vocab_size": None if data.vocab_size is None else int(data.vocab_size),
        "pad_id": None if data.pad_id is None else int(data.pad_id),
    }  # fmt: skip


def _val_summary(outputs: SplitOutputs, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's difficulty (``1 - p(y)``, per sequence the mean over counted tokens) and
    argmax of every validation example, a shard at a time. On a top-k bank ``p(y)`` is 0 for
    a target outside the top-k and the argmax is the first of the top-k."""
    difficulty, argmax = [], []
    layout, k = outputs.layout, outputs.layout.top_k
    for start, cols in outputs.blocks():
        n = len(next(iter(cols.values())))
        y = targets[start : start + n]
        if k is None:
            logits = cols["logits"].reshape(n, *layout.shape)
            difficulty.append(confidence_difficulty(logits, y))
            argmax.append(logits.argmax(axis=-1))
            continue
        ids, log_p = layout.decode(cols)  # copies the shard's NumPy views
        ids, log_p = ids.numpy(), log_p.numpy()
        p_y = (np.exp(log_p[..., :k]) * (ids == y[..., None])).sum(axis=-1)
        if p_y.ndim > 1:  # per token: the mean over the counted ones
            counted = y != IGNORE
            p_y = (p_y * counted).sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
        difficulty.append(1.0 - p_y)
        argmax.append(ids[..., 0])
    if not difficulty:
        return np.zeros(0), np.zeros((0, *layout.shape[:-1]), np.int64)
    return np.concatenate(difficulty), np.concatenate(argmax)
