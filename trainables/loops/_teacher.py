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
    accuracy_per_example,
    confidence_difficulty,
    el2n_difficulty,
    entropy_difficulty,
    forgetting_difficulty,
    length_difficulty,
    loss_difficulty,
    margin_difficulty,
    rarity_difficulty,
    shapley_values,
)
from trainables.distill._checkpoints import (
    detect_transition,
    required_rise,
    steepest_rise,
    transition_checkpoint,
)
from trainables.distill._run import RunWriter, fold_of, write_fold
from trainables.loops._batches import SplitData, evaluate, output_shape, split_data
from trainables.loops._build import make_model
from trainables.loops._common import load_data, make_optimizer, should_evaluate
from trainables.loops._setup import carve_holdout, resolve_device
from trainables.tasks import IGNORE, make_task


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
    """Train the teacher with cross-entropy (over the counted tokens for the language-model
    tasks), yielding metrics every ``eval_every`` steps and at every kept checkpoint.

    If ``cfg.output_dir`` is set, the teacher's run is written there (atomically, see
    :class:`RunWriter`): its weights at each kept checkpoint (the bank's builder,
    :func:`trainables.bank.build_bank`, runs them over the data), the detected phase
    transition, and per-training-example difficulty scores from the final teacher
    (confidence, margin, loss, entropy; per sequence the mean over its counted tokens), from
    its trajectory of evaluations (EL2N, forgetting events), for the ``classify`` task the
    negated cross-fitted KNN-Shapley value of each row on the final teacher's penultimate
    features (``shapley``, :func:`penultimate_features`, :func:`shapley_values`: low-value
    rows, e.g. mislabelled ones, are hard; features wider than 256 are randomly projected to
    256 dimensions first, and the values are exact for the K-NN on that projection) and, for
    token data, from the data (length, rarity).

    The phase transition (:func:`find_transition`) is detected on the teacher's mean
    per-example accuracy over training rows at each evaluation, recorded as
    ``holdout_accuracy`` (the rows of :func:`teacher_holdout`, which it never trains on) or
    else ``train_accuracy`` (its training split); never on the validation split, which is
    for selection only (its ``val_accuracy`` is reported, nothing reads it). The steepest
    rise measured and the rise it needed are in the run's metrics (``transition_rise``,
    ``transition_required_rise``), found or not.

    With ``cfg.fold`` set (a cross-fitting run), the teacher trains on the training examples
    outside fold ``fold`` of ``score_folds`` (:func:`fold_of`) and writes its final scores of
    the held-out ones (:func:`write_fold`) instead.
    """
    data = load_data(cfg.data)
    task = make_task(cfg.task, vocab_size=data.vocab_size, pad_id=data.pad_id, tokens=data.tokens)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    splits = split_data(data, task, device)
    model = make_model(cfg, data, task)
    if cfg.init_from is not None:
        model.load_state_dict(torch.load(cfg.init_from, map_location="cpu", weights_only=True))
    model.to(device)
    steps = cfg.optim.steps if cfg.train else 0
    kept = checkpoint_steps(steps, every=cfg.checkpoint_every, log_spaced=cfg.log_checkpoints)
    cross_fit = cfg.fold is not None
    writer = RunWriter(cfg.output_dir) if cfg.output_dir is not None and not cross_fit else None
    train_targets = splits["train"].targets()
    pool = np.arange(len(splits["train"]))
    holdout = None if cross_fit else teacher_holdout(cfg, data)
    if cross_fit:
        held_out = fold_of(len(pool), cfg.score_folds, cfg.seed) == cfg.fold
        pool, held_out = pool[~held_out], pool[held_out]
    elif holdout is not None:  # rows for the transition's curve: never trained on
        pool = np.setdiff1d(pool, holdout)
    curve = "train_accuracy" if holdout is None else "holdout_accuracy"

    optimizer = make_optimizer(model.parameters(), cfg.optim)
    sampler = ShuffleSampler(pool, cfg.optim.batch_size, seed=cfg.seed)
    started, loss_sum, losses, samples = time.perf_counter(), torch.zeros((), device=device), 0, 0
    history = []
    trajectory = _Trajectory(train_targets, early_until=cfg.el2n_fraction * steps)
    try:
        for step in range(1, steps + 1):
            rows = sampler.next_batch().indices
            inputs, targets = splits["train"].gather(rows)
            loss = cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            losses, samples = losses + 1, samples + len(rows)
            evaluating = should_evaluate(step, cfg.eval_every, steps)
            if not (evaluating or step in kept):
                continue
            measured = {}
            if writer is not None:
                if step in kept:
                    writer.add_checkpoint(step, model.state_dict())
                stats = per_example(model, splits["train"], train_targets)
                trajectory.record(step, stats)
                accuracy = stats["accuracy"] if holdout is None else stats["accuracy"][holdout]
                measured[curve] = float(np.nanmean(accuracy))
            val = evaluate(model, splits["val"])  # reported only: no decision reads it
            record = {
                "step": step,
                "samples_seen": samples,
                "wall_time_s": time.perf_counter() - started,
                "train_loss": loss_sum.item() / losses,  # host sync, once per evaluation
                "val_accuracy": val.accuracy,
                "val_loss": val.loss,
                **({"val_perplexity": val.perplexity} if task.per_token else {}),
                **measured,
                "is_kept": step in kept,
            }
            history.append(record)
            yield record
            loss_sum, losses = torch.zeros((), device=device), 0
        if cross_fit and cfg.output_dir is not None:
            stats = per_example(
                model, splits["train"].subset(held_out), train_targets[held_out], final=True
            )
            write_fold(
                cfg.output_dir, fold=cfg.fold, folds=cfg.score_folds, rows=held_out,
                scores={name: stats[name] for name in FINAL_SCORES},
                metrics={
                    "val_accuracy": evaluate(model, splits["val"]).accuracy, "steps": steps,
                    "wall_time_s": time.perf_counter() - started,
                },
            )  # fmt: skip
        if writer is None:
            return
        train = evaluate(model, splits["train"])
        final = per_example(model, splits["train"], train_targets, final=True)
        if steps == 0:  # a loaded teacher, banked as it is
            writer.add_checkpoint(0, model.state_dict())
            trajectory.record(0, final)
        val, test = evaluate(model, splits["val"]), evaluate(model, splits["test"])
        rows = len(splits["train"]) if holdout is None else len(holdout)
        transition, measured = find_transition(cfg, history, curve, rows)
        if transition is not None:
            transition["checkpoint"] = transition_checkpoint(transition, writer.checkpoints)
        scores = trajectory.scores(final, data.difficulty_train)
        if task.kind == "classify":  # KNN-Shapley values a classifier's utility: not for LMs
            features = penultimate_features(model, splits["train"], data.num_classes)
            scores["shapley"] = -shapley_values(features, train_targets, seed=cfg.seed)
        if data.tokens:
            scores["length"] = length_difficulty(data.x_train, data.pad_id)
            scores["rarity"] = rarity_difficulty(data.x_train, data.pad_id, data.vocab_size)
        writer.commit(
            shape=list(output_shape(task, data.example_shape, data.num_classes)),
            sizes={name: len(split) for name, split in splits.items()},
            metrics={
                "train_accuracy": train.accuracy,
                "val_accuracy": val.accuracy,
                "test_accuracy": test.accuracy,
                **measured,
            },
            history=history,
            scores=scores,
            transition=transition,
        )
    finally:
        if writer is not None:
            writer.close()  # removes the hidden build unless it was committed


FINAL_SCORES = ("confidence", "margin", "loss", "entropy")


def teacher_holdout(cfg: TeacherConfig, data) -> np.ndarray | None:
    """The training rows the teacher's phase-transition curve is measured on and the teacher
    never trains on: the data's own ``holdout`` rows, else ``transition_holdout_fraction`` of
    the training split drawn with the teacher's ``seed``; None (the curve is the teacher's
    training accuracy) when neither is set."""
    given = getattr(data, "holdout", None)
    if given is None and cfg.transition_holdout_fraction == 0:
        return None
    return carve_holdout(
        len(data.x_train), cfg.transition_holdout_fraction, seed=cfg.seed, given=given,
        field="teacher.transition_holdout_fraction",
    )  # fmt: skip


def find_transition(
    cfg: TeacherConfig, history: list[dict[str, Any]], curve: str, rows: int
) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """The phase transition on the ``curve`` accuracy of ``history`` (measured on ``rows``
    examples), or None, and what was measured: ``transition_rise`` (the steepest rise over
    ``transition_window`` evaluations, found or not) and ``transition_required_rise`` (the
    rise it needed, :func:`required_rise`); empty with fewer than two evaluations."""
    steps = [r["step"] for r in history]
    accuracies = [r[curve] for r in history]
    window = cfg.transition_window
    steepest = steepest_rise(steps, accuracies, window=window)
    if steepest is None:
        return None, {}
    low, high = accuracies[steps.index(steepest["start"])], accuracies[steps.index(steepest["end"])]
    measured = {
        "transition_rise": steepest["rise"],
        "transition_required_rise": required_rise(
            low, high, min_rise=cfg.transition_min_rise, rows=rows
        ),
    }
    transition = detect_transition(
        steps, accuracies, window=window, min_rise=cfg.transition_min_rise, rows=rows
    )
    return transition, measured


@torch.no_grad()
def per_example(
    model: torch.nn.Module, split: SplitData, targets: np.ndarray, *, final: bool = False
) -> dict[str, np.ndarray]:
    """The teacher's per-example statistics on ``split`` (targets ``targets``): ``accuracy``
    (per sequence, the fraction of counted tokens right), ``correct`` (most counted tokens
    right, for forgetting events) and ``el2n``; with ``final`` the final
    teacher's difficulty scores too (confidence, margin, loss, entropy; higher = harder). The
    outputs are reduced a chunk at a time, so memory stays bounded whatever the vocabulary."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for rows in split.chunks():
        inputs, _ = split.gather(rows)
        logits, y = model(inputs).float().cpu().numpy(), targets[rows]
        accuracy = accuracy_per_example(logits, y)
        stats = {
            "accuracy": accuracy,
            "correct": accuracy > 0.5,
            "el2n": el2n_difficulty(logits[None], y),
        }
        if final:
            stats |= {
                "confidence": confidence_difficulty(logits, y),
                "margin": margin_difficulty(logits, y),
                "loss": loss_difficulty(logits, y),
                "entropy": entropy_difficulty(logits, y),
            }
        for name, values in stats.items():
            parts.setdefault(name, []).append(values)
    model.train(was_training)
    return {name: np.concatenate(values) for name, values in parts.items()}


@torch.no_grad()
def penultimate_features(model: torch.nn.Module, split: SplitData, classes: int) -> np.ndarray:
    """``(n, width)`` float32: what the classifier's head reads for every row of ``split``,
    for a ``classify`` model. The head is the last ``torch.nn.Linear`` (in ``model.modules()``
    order) with ``out_features == classes``; a forward hook keeps its input (its last call of
    each forward, flattened per row). A model with no such layer (or whose head input is not
    one row per example) gives its logits instead. Computed a chunk at a time (eval mode)."""
    was_training = model.training
    model.eval()
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    heads = [m for m in heads if m.out_features == classes]
    seen: list[torch.Tensor] = []
    hook = None
    if heads:
        hook = heads[-1].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    parts = []
    try:
        for rows in split.chunks():
            inputs, _ = split.gather(rows)
            seen.clear()
            logits = model(inputs)
            head_input = seen[-1] if seen else None
            if head_input is None or head_input.dim() < 2 or len(head_input) != len(rows):
                head_input = logits  # no head found, or not one row per example: the logits
            parts.append(head_input.flatten(1).float().cpu().numpy())
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return np.concatenate(parts)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The batch's mean cross-entropy: over its examples, or over its counted tokens."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, targets)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


class _Trajectory:
    """Training-set statistics at each evaluation (:func:`per_example`), reduced as they
    arrive: O(n) memory per evaluation for correctness, O(n) in all for EL2N."""

    def __init__(self, targets: np.ndarray, *, early_until: float) -> None:
        self.early_until = early_until
        self.correct: list[np.ndarray] = []
        self.el2n_sum, self.el2n_count = np.zeros(len(targets)), 0

    def record(self, step: int, stats: dict[str, np.ndarray]) -> None:
        self.correct.append(stats["correct"])
        if step <= self.early_until or self.el2n_count == 0:
            self.el2n_sum += stats["el2n"]
            self.el2n_count += 1

    def scores(
        self, final: dict[str, np.ndarray], column: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        scores = {
            **{name: final[name] for name in FINAL_SCORES},
            "el2n": self.el2n_sum / self.el2n_count,
            "forgetting": forgetting_difficulty(np.stack(self.correct)),
        }
        if column is not None:
            scores["column"] = column
        return scores
