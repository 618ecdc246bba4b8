from __future__ import annotations

import contextlib
import copy
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
from trainables.distill import (
    TeacherBank,
    kd_loss_from_log_probs,
    open_bank,
    teacher_log_probs,
)
from trainables.distill._checkpoints import CheckpointSchedule, transition_checkpoint
from trainables.loops._common import (
    as_tensors,
    evaluate,
    load_data,
    make_optimizer,
    should_evaluate,
)
from trainables.loops._setup import (
    batch_sampler,
    fit_irreducible_loss,
    make_temperature,
    make_value_schedule,
    make_weighting,
)
from trainables.models import mlp


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


class _TeacherTargets:
    """The teacher's log-probabilities for training batches at the current checkpoint.

    While the temperature is piecewise constant they are computed once per (checkpoint, T) for
    the whole training set and gathered per batch (no softmax of the teacher in the step);
    otherwise per batch."""

    def __init__(
        self, teacher: TeacherBank, form: str, *, whole_set: bool, device: torch.device
    ) -> None:
        self.teacher, self.form, self.whole_set, self.device = teacher, form, whole_set, device
        self.checkpoint: int | None = None
        self._cached_t: float | None = None

    def use(self, checkpoint: int) -> None:
        if checkpoint != self.checkpoint:  # memory-mapped logits of another checkpoint
            self.checkpoint, self._cached_t = checkpoint, None
            logits = self.teacher.checkpoint_logits(checkpoint)["train"]
            self.logits = torch.from_numpy(np.array(logits)).to(self.device)

    def __call__(self, idx: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
        if not self.whole_set or isinstance(temperature, torch.Tensor):
            return teacher_log_probs(self.logits[idx], temperature, self.form)
        if self._cached_t != temperature:
            self._cached = teacher_log_probs(self.logits, temperature, self.form)
            self._cached_t = temperature
        return self._cached[idx]


class _Run:
    """One student run: everything :func:`student_loop` sets up, its training step and its
    evaluation record."""

    def __init__(self, cfg: StudentConfig, rank: int, world_size: int, wrap_model) -> None:
        if cfg.teacher_bank is None:
            raise ValueError("teacher_bank is required: a directory written by the teacher")
        data, teacher = load_data(cfg.data), open_bank(cfg.teacher_bank)
        if teacher.logits["train"].shape != (len(data.y_train), data.num_classes):
            raise ValueError(
                f"teacher_bank {cfg.teacher_bank!r} does not match the data: logits of "
                f"shape {teacher.logits['train'].shape}, train split of {len(data.y_train)} "
                f"rows and {data.num_classes} classes"
            )
        self.cfg, self.world_size = cfg, world_size
        self.device = device = resolve_device(cfg.device)
        cur, steps = cfg.curriculum, cfg.optim.steps
        torch.manual_seed(cfg.seed)
        self.x_train, self.y_train, self.x_val, self.y_val, t_val, self.x_test, self.y_test = (
            t.to(device) for t in as_tensors(
                data.x_train, data.y_train, data.x_val, data.y_val, teacher.logits["val"],
                data.x_test, data.y_test,
            )
        )  # fmt: skip
        self.val_rank = torch.from_numpy(
            to_ranks(confidence_difficulty(teacher.logits["val"], data.y_val))
        ).to(device)
        self.teacher_val_pred = t_val.argmax(dim=1)

        self.model = mlp(data.num_features, cfg.model.hidden, data.num_classes).to(device)
        self.learned_t = make_temperature(cfg.distill)  # CTKD, or None
        if self.learned_t:
            self.learned_t.to(device)
        params = list(self.model.parameters())
        params += list(self.learned_t.parameters()) if self.learned_t else []
        self.optimizer = make_optimizer(params, cfg.optim)
        self.forward = wrap_model(self.model) if wrap_model else self.model
        self.checkpoint_at = make_checkpoint_schedule(cfg.teacher_schedule, teacher, steps)
        staged = cur.kind == "staged"
        self.targets = _TeacherTargets(
            teacher, cfg.distill.loss, device=device,
            whole_set=cfg.distill.temperature_schedule.kind in ("constant", "step", "stage"),
        )  # fmt: skip
        self.targets.use(teacher.step)
        irreducible = None
        if cur.kind == "rho":
            irreducible = fit_irreducible_loss(
                data, cfg.model.hidden, steps=cur.rho_holdout_steps, seed=cfg.seed
            )
        self.sampler = batch_sampler(
            cur, teacher, batch_size=cfg.optim.batch_size, total_steps=steps, seed=cfg.seed,
            irreducible_loss=irreducible, rank=rank, world_size=world_size,
        )  # fmt: skip
        self.weighting = make_weighting(cur, data.num_classes)
        self.staged = staged
        self.stages = cur.stages if staged else cur.stages[:1]
        self.controller = StageController(
            [s.length for s in self.stages], progression=cur.progression,
            threshold=cur.gate_threshold, patience=cur.gate_patience,
        )  # fmt: skip
        self.temperature_at = make_value_schedule(
            cfg.distill.temperature_schedule, cfg.distill.temperature,
            [s.temperature if staged else None for s in self.stages],
        )  # fmt: skip
        self.alpha_at = make_value_schedule(
            cfg.distill.alpha_schedule, cfg.distill.alpha,
            [s.alpha if staged else None for s in self.stages],
        )  # fmt: skip
        self.noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if cfg.precision == "bf16"
            else contextlib.nullcontext()
        )
        self.stage, self.alpha, self.temperature = 0, cfg.distill.alpha, cfg.distill.temperature
        self.fraction, self.samples = 0.0, 0
        self.best, self.steps_to_target = -math.inf, None
        self.sums, self.count = torch.zeros(3, device=device), 0  # (total, ce, kd) since eval

    def state_dict(self, step: int) -> dict[str, Any]:
        """Everything needed to continue after ``step`` exactly as if never stopped: model,
        optimiser, learned temperature, sampler (its generator and position), stage
        controller, noise and torch generators, and the running summary."""
        return copy.deepcopy({
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "learned_t": self.learned_t.state_dict() if self.learned_t else None,
            "sampler": self.sampler.state_dict(),
            "controller": self.controller.state_dict(),
            "noise": self.noise.get_state(),
            "torch_rng": torch.get_rng_state(),
            "running": (self.samples, self.best, self.steps_to_target, self.sums, self.count),
        })  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Restore :meth:`state_dict`; return the step it was taken after."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.learned_t and state["learned_t"] is not None:
            self.learned_t.load_state_dict(state["learned_t"])
        self.sampler.load_state_dict(state["sampler"])
        self.controller.load_state_dict(state["controller"])
        self.noise.set_state(state["noise"])
        torch.set_rng_state(state["torch_rng"])
        self.samples, self.best, self.steps_to_target, sums, self.count = state["running"]
        self.sums = sums.to(self.device)
        return int(state["step"])

    def distill(self, x: torch.Tensor, idx: torch.Tensor, forward=None):
        """Per-example loss parts of the batch ``x`` (training-set rows ``idx``)."""
        return kd_loss_from_log_probs(
            (forward or self.forward)(x), self.targets(idx, self.temperature), self.y_train[idx],
            temperature=self.temperature, alpha=self.alpha, form=self.cfg.distill.loss,
        )  # fmt: skip

    def scorer(self, indices: np.ndarray) -> np.ndarray:
        """The student's current per-example loss (for samplers that score candidates)."""
        idx = torch.from_numpy(indices).to(self.device)
        with torch.no_grad(), self.autocast:
            per = self.distill(self.x_train[idx], idx, forward=self.model)
        return (per.ce if self.cfg.curriculum.kind == "rho" else per.total).float().cpu().numpy()

    def train_step(self, step: int) -> None:
        progress = (step - 1) / self.cfg.optim.steps
        stage = self.stage = self.controller.update(progress)
        self.targets.use(self.checkpoint_at(step))
        if self.staged:
            self.sampler.set_stage(stage)
        self.alpha = self.alpha_at(progress, stage)
        self.temperature = (
            self.learned_t(progress) if self.learned_t else self.temperature_at(progress, stage)
        )
        self.fraction = self.sampler.fraction
        batch = self.sampler.next_batch(self.scorer)
        idx = torch.from_numpy(batch.indices).to(self.device, non_blocking=True)
        x = self.x_train[idx]
        if self.staged and self.stages[stage].augment > 0:
            noise = torch.randn(x.shape, generator=self.noise, device=self.device)
            x = x + self.stages[stage].augment * noise
        with self.autocast:
            per = self.distill(x, idx)
        if batch.weights is not None:
            weights = torch.from_numpy(batch.weights).to(self.device, per.total.dtype)
        elif self.weighting is not None:
            epoch = self.samples // len(self.sampler.pool)
            weights = self.weighting(per.total, per.ce, progress, epoch)
        else:
            weights = None
        loss = (per.total * weights).mean() if weights is not None else per.total.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if isinstance(self.sampler, ConfidenceSampler):
            confidence = torch.exp(-per.ce.detach()).mean()
            if self.world_size > 1:  # every rank must draw the same global batch
                torch.distributed.all_reduce(confidence)
                confidence /= self.world_size
            self.sampler.observe(confidence.item())
        self.sums += torch.stack([loss.detach(), per.ce.detach().mean(), per.kd.detach().mean()])
        self.count, self.samples = self.count + 1, self.samples + len(idx) * self.world_size

    def record(self, step: int, started: float) -> dict[str, Any]:
        """Evaluate and summarise since the previous record (one host sync)."""
        cfg, model = self.cfg, self.model
        val = evaluate(model, self.x_val, self.y_val)
        low, high = self.stages[self.stage].band if self.staged else (0.0, 1.0)
        in_band = (self.val_rank >= low) & (self.val_rank <= high)
        self.controller.update(step / cfg.optim.steps, val.correct[in_band].float().mean().item())
        if self.count == 0:  # resumed after the last step: nothing trained since
            train_loss, ce, kd = math.nan, math.nan, math.nan
        else:
            train_loss, ce, kd = (self.sums / self.count).tolist()
        if self.count and not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at step {step}")
        self.sums, self.count = torch.zeros(3, device=self.device), 0
        self.best = max(self.best, val.accuracy)
        if self.steps_to_target is None and val.accuracy >= cfg.target_accuracy:
            self.steps_to_target = step
        t = self.temperature
        return {
            "step": step,
            "samples_seen": self.samples,
            "wall_time_s": time.perf_counter() - started,
            "val_accuracy": val.accuracy,
            "val_loss": val.loss,
            "train_loss": train_loss,
            "ce_loss": ce,
            "kd_loss": kd,
            "curriculum_fraction": self.fraction,
            "temperature": float(t.detach() if isinstance(t, torch.Tensor) else t),
            "alpha": self.alpha,
            "teacher_checkpoint": self.targets.checkpoint,
            "stage": self.stage,
            "easy_accuracy": val.correct[self.val_rank <= 0.5].float().mean().item(),
            "hard_accuracy": val.correct[self.val_rank > 0.5].float().mean().item(),
            "teacher_agreement": _agreement(val.logits, self.teacher_val_pred),
            "best_val_accuracy": self.best,
            "steps_to_target": self.steps_to_target,
            "steps_to_target_capped": self.steps_to_target or cfg.optim.steps + cfg.eval_every,
        }


def resolve_device(name: str) -> torch.device:
    """``auto``: the (first) GPU this process may use, else the CPU. Ray hides the GPUs a trial
    was not given (``CUDA_VISIBLE_DEVICES``), so a CPU trial on a GPU node stays on the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA GPU is visible to this process")
    return torch.device(name)


def _agreement(logits: torch.Tensor, teacher_pred: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == teacher_pred).float().mean().item()


def student_loop(
    cfg: StudentConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    wrap_model=None,
    resume_from: dict[str, Any] | None = None,
    states: list | None = None,
) -> Iterator[dict[str, Any]]:
    """Distil the stored teacher outputs into a student, yielding a record per evaluation.

    Every record holds the curve metrics (``val_accuracy``, ``val_loss``, ``train_loss``,
    ``ce_loss``, ``kd_loss`` averaged since the previous evaluation, ``curriculum_fraction``,
    ``temperature``, ``alpha``, ``teacher_checkpoint``, ``stage``, ``easy_accuracy`` and
    ``hard_accuracy`` on the validation examples the teacher finds easier / harder than the
    median, ``teacher_agreement``) and the running summary (``best_val_accuracy``,
    ``steps_to_target``, ``step``, ``samples_seen``, ``wall_time_s``). The last record also
    holds ``test_accuracy`` of the final student.

    Data-parallel use (one call per worker): ``rank`` / ``world_size`` shard every global batch
    of ``optim.batch_size * world_size`` examples, and ``wrap_model`` (e.g.
    ``torch.nn.parallel.DistributedDataParallel``) wraps the model for the training forward.

    Checkpoints: with ``states`` (a list), the run's state after each record is put in
    ``states[0]`` (replacing the previous one) before the record is yielded; passing such a
    state as ``resume_from`` continues from it, with ``cfg``'s settings (a changed temperature
    or alpha applies from there on: what PBT's exploit-and-explore needs).
    """
    run = _Run(cfg, rank, world_size, wrap_model)
    first = run.load_state_dict(resume_from) + 1 if resume_from else 1
    steps, started = cfg.optim.steps, time.perf_counter()
    if first > steps:  # a state taken after the last step: report the final record again
        record = run.record(steps, started)
        record["test_accuracy"] = evaluate(run.model, run.x_test, run.y_test).accuracy
        if states is not None:
            states[:] = [run.state_dict(steps)]
        yield record
        return
    for step in range(first, steps + 1):
        run.train_step(step)
        if not should_evaluate(step, cfg.eval_every, steps):
            continue
        record = run.record(step, started)
        last = step == steps or (cfg.stop_at_target and run.steps_to_target is not None)
        if last:
            record["test_accuracy"] = evaluate(run.model, run.x_test, run.y_test).accuracy
        if states is not None:
            states[:] = [run.state_dict(step)]
        yield record
        if last:
            return
