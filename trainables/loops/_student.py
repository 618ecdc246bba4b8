"""The student's training step, its evaluation record and the loop that runs them."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from trainables.config import StudentConfig
from trainables.curriculum import BanditSampler, ConfidenceSampler, MixtureSampler
from trainables.distill import KDLoss, kd_loss_from_log_probs, kd_token_parts
from trainables.distill._topk import sparse_kd_from_log_probs, sparse_kd_token_parts
from trainables.loops._batches import cross_entropy_per_example, evaluate, mean_loss, to_device
from trainables.loops._build import StudentRun, build_student
from trainables.loops._common import should_evaluate
from trainables.tasks import IGNORE


def train_step(run: StudentRun, step: int) -> None:
    """Train step ``step`` (1-based): read every schedule at the progress before it, draw and
    distil a batch, update the model, and add the losses to the running sums."""
    progress = (step - 1) / run.cfg.optim.steps
    stage = run.stage = run.controller.update(progress)
    run.targets.use(run.checkpoint_at(step))  # a new checkpoint: its logits copied to the device
    if run.staged:
        run.sampler.set_stage(stage)
    run.alpha = run.alpha_at(progress, stage)
    run.temperature = (
        run.learned_t(progress) if run.learned_t else run.temperature_at(progress, stage)
    )
    run.fraction = run.sampler.fraction
    # importance / rho score their candidates with a forward pass and a host sync
    batch = run.sampler.next_batch(functools.partial(student_losses, run))
    if run.alpha < 1.0 or run.learned_t is not None:  # the teacher's rows, gathered meanwhile
        run.targets.prefetch(batch.indices)
    x, targets = run.train.gather(batch.indices)  # host rows, copied non-blocking
    if run.staged and run.stages[stage].augment > 0 and x.is_floating_point():
        noise = torch.randn(x.shape, generator=run.noise, device=run.device)
        x = x + run.stages[stage].augment * noise
    with run.autocast:
        per, counts = kd_parts(run, run.forward, x, targets, batch.indices)
    if batch.weights is not None:
        weights = to_device(batch.weights, run.device).to(per.total.dtype)
    elif run.weighting is not None:
        epoch = run.samples // len(run.sampler.pool)
        weights = run.weighting(per.total, per.ce, progress, epoch)
    else:
        weights = None
    loss = mean_loss(per.total * weights if weights is not None else per.total, counts)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _update(run, step, per.ce.detach(), x, targets, batch.indices)
    run.sums += torch.stack(
        [loss.detach(), mean_loss(per.ce.detach(), counts), mean_loss(per.kd.detach(), counts)]
    )
    run.count, run.samples = run.count + 1, run.samples + len(batch.indices) * run.world_size
    run.step = step


def _update(
    run: StudentRun,
    step: int,
    ce: torch.Tensor,
    x: torch.Tensor,
    targets: torch.Tensor,
    rows: np.ndarray,
) -> None:
    """The optimiser's step, and what the samplers that follow the student learn from it: a
    bandit its reward (:func:`_bandit_step`), the confidence sampler the student's mean
    probability of the true label on the batch (``ce`` per example; a host sync a step)."""
    if isinstance(run.sampler, BanditSampler):
        _bandit_step(run, step, x, targets, rows)
    else:
        run.optimizer.step()
    if isinstance(run.sampler, ConfidenceSampler):
        confidence = torch.exp(-ce).mean()
        if run.world_size > 1:  # every rank must draw the same global batch
            torch.distributed.all_reduce(confidence)
            confidence /= run.world_size
        run.sampler.observe(confidence.item())


REWARD_BATCHES = 4  # a held-out reward is measured on up to this many batches' rows


def _bandit_step(
    run: StudentRun,
    step: int,
    x: torch.Tensor,
    targets: torch.Tensor,
    rows: np.ndarray,
) -> None:
    """Update the model and feed the bandit the step's learning progress (Graves et al.
    2017): the loss before minus after the update (both in eval mode, without gradient), on
    the step's own batch (``prediction_gain``: two more forwards of the batch) or on
    held-out rows, up to :data:`REWARD_BATCHES` batches of them, so the gain is measured
    with less noise than one batch gives (``self_prediction_gain``: the chosen arm's;
    ``target_prediction_gain``: all of them; two forwards of up to 4 batches: a step costs
    about three times a plain one for a small model). Several workers each measure the same
    held-out rows. The held-out batch is drawn from ``(seed, step)`` alone, the
    same on every rank and again on a resume; several workers average their gains, so every
    rank updates the bandit alike. One host sync a step."""
    if run.reward_rows is None:
        before = _mean_loss_of(run, x, targets, rows)
        run.optimizer.step()
        after = _mean_loss_of(run, x, targets, rows)
    else:
        arms = run.reward_rows
        pool = arms[0] if len(arms) == 1 else arms[run.sampler.arm]
        draw = np.random.default_rng([run.cfg.seed, step, 0x5E1F])
        size = min(len(pool), REWARD_BATCHES * run.cfg.optim.batch_size)
        held = pool[draw.choice(len(pool), size, replace=False)]
        held_x, held_targets = run.train.gather(held)
        before = _mean_loss_of(run, held_x, held_targets, held)
        run.optimizer.step()
        after = _mean_loss_of(run, held_x, held_targets, held)
    gain = (before - after).float()
    if run.world_size > 1:
        torch.distributed.all_reduce(gain)
        gain /= run.world_size
    run.sampler.feedback(gain.item())


def _mean_loss_of(
    run: StudentRun, x: torch.Tensor, targets: torch.Tensor, rows: np.ndarray
) -> torch.Tensor:
    """The student's mean training loss (per token for the language-model tasks) of the
    inputs ``x`` (training rows ``rows``), without gradient, in eval mode: dropout adds no
    noise to a gain and batch norm's running statistics never see held-out rows."""
    run.model.eval()
    try:
        with torch.no_grad(), run.autocast:
            per, counts = kd_parts(run, run.model, x, targets, rows)
            return mean_loss(per.total, counts).detach()
    finally:
        run.model.train()


def kd_parts(
    run: StudentRun,
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    targets: torch.Tensor,
    rows: np.ndarray,
) -> tuple[KDLoss, torch.Tensor | None]:
    """Per-example loss parts, each ``(batch,)``, of the inputs ``x`` (training rows ``rows``)
    at the run's current temperature, alpha and teacher checkpoint, and for the
    language-model tasks the counted tokens per sequence (None for ``classify``)."""
    logits = forward(x)
    if run.alpha == 1.0 and run.learned_t is None:  # labels only: the teacher is not read
        ce = cross_entropy_per_example(logits, targets)
        counts = (targets != IGNORE).sum(dim=1).float() if run.task.per_token else None
        return KDLoss(total=ce, ce=ce, kd=torch.zeros_like(ce)), counts
    kwargs = {"temperature": run.temperature, "alpha": run.alpha, "form": run.cfg.distill.loss}
    ids, log_p_teacher = run.targets(rows, run.temperature)
    if ids is not None:  # a top-k teacher: KL over the top-k and the tail bucket
        if run.task.per_token:
            return sparse_kd_token_parts(logits, ids, log_p_teacher, targets, **kwargs)
        return sparse_kd_from_log_probs(logits, ids, log_p_teacher, targets, **kwargs), None
    if run.task.per_token:
        return kd_token_parts(logits, log_p_teacher, targets, **kwargs)
    return kd_loss_from_log_probs(logits, log_p_teacher, targets, **kwargs), None


def student_losses(run: StudentRun, indices: np.ndarray) -> np.ndarray:
    """The student's current per-example loss of training rows ``indices``, without gradient
    (the scorer of the samplers that rank candidates: the CE for rho, else the total). One
    host sync."""
    x, targets = run.train.gather(indices)
    with torch.no_grad(), run.autocast:
        per, _ = kd_parts(run, run.model, x, targets, indices)
    return (per.ce if run.cfg.curriculum.kind == "rho" else per.total).float().cpu().numpy()


def evaluate_run(run: StudentRun, step: int, started: float) -> dict[str, Any]:
    """Evaluate on the validation split and summarise since the previous record (one host
    sync); resets the running loss sums. The validation results are reported, never acted
    on: a gated staged curriculum's gate reads the stage's accuracy on its holdout rows of
    the training split (``run.gate``, one more evaluation), and ``steps_to_target`` only
    records when the validation accuracy first reached the target."""
    cfg, model = run.cfg, run.model
    val = evaluate(model, run.val)
    if run.gate is not None:
        low, high = run.stages[run.stage].band
        in_band = (run.gate_rank >= low) & (run.gate_rank <= high)
        gate = evaluate(model, run.gate)
        run.controller.update(step / cfg.optim.steps, gate.correct[in_band].nanmean().item())
    else:
        run.controller.update(step / cfg.optim.steps)
    if run.count == 0:  # resumed after the last step: nothing trained since
        train_loss, ce, kd = math.nan, math.nan, math.nan
    else:
        train_loss, ce, kd = (run.sums / run.count).tolist()
    if run.count and not math.isfinite(train_loss):
        raise FloatingPointError(f"training loss is {train_loss} at step {step}")
    run.sums, run.count = torch.zeros(3, device=run.device), 0
    run.best = max(run.best, val.accuracy)
    if run.steps_to_target is None and val.accuracy >= cfg.target_accuracy:
        run.steps_to_target = step
    t = run.temperature
    lm = {"val_perplexity": val.perplexity} if run.task.per_token else {}
    return {
        "step": step,
        "samples_seen": run.samples,
        "wall_time_s": time.perf_counter() - started,
        "val_accuracy": val.accuracy,
        "val_loss": val.loss,
        "train_loss": train_loss,
        "ce_loss": ce,
        "kd_loss": kd,
        "curriculum_fraction": run.fraction,
        "temperature": float(t.detach() if isinstance(t, torch.Tensor) else t),
        "alpha": run.alpha,
        "teacher_checkpoint": run.targets.checkpoint,
        "stage": run.stage,
        "easy_accuracy": val.correct[run.val_rank <= 0.5].nanmean().item(),
        "hard_accuracy": val.correct[run.val_rank > 0.5].nanmean().item(),
        "teacher_agreement": val.agreement(run.teacher_val_pred),
        **_arm_record(run),
        "best_val_accuracy": run.best,
        "steps_to_target": run.steps_to_target,
        "steps_to_target_capped": run.steps_to_target or cfg.optim.steps + cfg.eval_every,
        **lm,
    }


def _arm_record(run: StudentRun) -> dict[str, Any]:
    """A bandit's or mixture's arms (difficulty buckets or sources) and the probability of
    drawing each at this point: ``arm_names`` and ``arm_probs``; nothing for other kinds."""
    if not isinstance(run.sampler, BanditSampler | MixtureSampler):
        return {}
    probs = run.sampler.probabilities()
    return {"arm_names": list(run.sampler.names), "arm_probs": [float(p) for p in probs]}


def _test_metrics(run: StudentRun) -> dict[str, float]:
    test = evaluate(run.model, run.test)
    lm = {"test_perplexity": test.perplexity} if run.task.per_token else {}
    return {"test_accuracy": test.accuracy, **lm}


def student_loop(
    cfg: StudentConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    resume_from: dict[str, Any] | None = None,
) -> Iterator[tuple[dict[str, Any], StudentRun]]:
    """Distil the stored teacher outputs into a student, yielding ``(record, run)`` after every
    evaluation: the record, and the :class:`StudentRun` itself (for a checkpoint, call
    ``run.state_dict()`` then; the run goes on changing once the loop is resumed).

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

    ``resume_from``: a ``run.state_dict()``; the run continues from it exactly, with ``cfg``'s
    settings (a changed temperature or alpha applies from there on: what PBT's
    exploit-and-explore needs).
    """
    run = build_student(cfg, rank=rank, world_size=world_size, wrap_model=wrap_model)
    if resume_from is not None:
        run.load_state_dict(resume_from)
    steps, started = cfg.optim.steps, time.perf_counter()
    if run.step >= steps:  # a state taken after the last step: report the final record again
        record = evaluate_run(run, steps, started)
        record.update(_test_metrics(run))
        yield record, run
        return
    for step in range(run.step + 1, steps + 1):
        train_step(run, step)
        if not should_evaluate(step, cfg.eval_every, steps):
            continue
        record = evaluate_run(run, step, started)
        last = step == steps or (cfg.stop_at_target and run.steps_to_target is not None)
        if last:
            record.update(_test_metrics(run))
        yield record, run
        if last:
            return
