"""Tasks: what a batch becomes (inputs and the targets that count), per-token KD against a
hand-computed reference with padding and masks, and per-sequence difficulty scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.config import TaskConfig
from trainables.curriculum import (
    confidence_difficulty,
    entropy_difficulty,
    length_difficulty,
    loss_difficulty,
    rarity_difficulty,
)
from trainables.distill import kd_token_parts, teacher_log_probs
from trainables.tasks import IGNORE, Task, make_task

V, PAD = 8, 8  # vocabulary 0..7, padding the extra id 8, mask id 9


def _tokens(n=2000, length=32, pad_from=28, seed=0):
    x = np.random.default_rng(seed).integers(0, V, (n, length))
    x[:, pad_from:] = PAD
    return x


def test_classify_passes_inputs_and_labels_through():
    x, y = np.ones((3, 4), np.float32), np.array([2, 0, 1])
    inputs, targets = Task("classify").batch(x, y, np.arange(3))
    assert inputs is x and targets.tolist() == [2, 0, 1] and targets.dtype == np.int64


def test_causal_lm_predicts_the_next_token_and_ignores_padding():
    x = np.array([[3, 1, 4, 1, PAD, PAD]])
    inputs, targets = Task("causal_lm", vocab_size=V, pad_id=PAD).batch(x, None, np.arange(1))
    assert inputs.tolist() == [[3, 1, 4, 1, PAD]]
    assert targets.tolist() == [[1, 4, 1, IGNORE, IGNORE]]


def test_masked_lm_follows_berts_rule_on_real_tokens_only():
    task = make_task(TaskConfig(kind="masked_lm", mask_rate=0.3), vocab_size=V, pad_id=PAD)
    x = _tokens()
    inputs, targets = task.batch(x, None, np.arange(len(x)))
    chosen = targets != IGNORE
    assert not chosen[:, 28:].any()  # padding is never a target
    assert (targets[chosen] == x[chosen]).all()  # targets are the original tokens
    assert (inputs[~chosen] == x[~chosen]).all()  # what is not chosen is untouched
    assert abs(chosen[:, :28].mean() - 0.3) < 0.01
    masked = inputs[chosen] == V + 1
    assert abs(masked.mean() - 0.8) < 0.02
    swapped = ~masked & (inputs[chosen] != x[chosen])  # random token, unless it drew the same
    assert abs(swapped.mean() - 0.1 * (1 - 1 / V)) < 0.015
    assert inputs.max() <= V + 1 and (inputs[chosen & (inputs != V + 1)] < V).all()


def test_masking_is_static_per_example_and_split_and_differs_across_them():
    task = Task("masked_lm", vocab_size=V, pad_id=PAD, mask_rate=0.3)
    x = _tokens(n=50)
    whole = task.batch(x, None, np.arange(50))
    some = task.batch(x[[7, 3]], None, np.array([7, 3]))
    assert (some[0] == whole[0][[7, 3]]).all() and (some[1] == whole[1][[7, 3]]).all()
    val = task.batch(x, None, np.arange(50), "val")
    assert (val[1] != whole[1]).any()  # another split, other masks
    other_seed = Task("masked_lm", vocab_size=V, pad_id=PAD, mask_rate=0.3, mask_seed=1)
    assert (other_seed.batch(x, None, np.arange(50))[1] != whole[1]).any()


def test_every_sequence_with_a_real_token_gets_a_target():
    task = Task("masked_lm", vocab_size=V, pad_id=PAD, mask_rate=0.01)
    x = _tokens(n=500, length=6, pad_from=3)
    _, targets = task.batch(x, None, np.arange(500))
    assert ((targets != IGNORE).sum(axis=1) >= 1).all()
    all_pad = np.full((1, 6), PAD)
    assert (task.batch(all_pad, None, np.arange(1))[1] == IGNORE).all()


@pytest.mark.parametrize("form", ["hinton", "progressive"])
def test_per_token_kd_matches_a_hand_computation_with_padding_and_masks(form):
    torch.manual_seed(0)
    student = torch.randn(2, 3, 4, dtype=torch.float64)
    teacher = torch.randn(2, 3, 4, dtype=torch.float64)
    targets = torch.tensor([[1, IGNORE, 2], [IGNORE, IGNORE, 3]])
    t, alpha = 2.0, 0.3
    parts, counts = kd_token_parts(
        student, teacher_log_probs(teacher, t, form), targets, temperature=t, alpha=alpha,
        form=form,
    )  # fmt: skip

    def token(b, pos):  # written out from the formulas, one position at a time
        p_t = [math.exp(v / t) for v in teacher[b, pos].tolist()]
        p_t = [p / sum(p_t) for p in p_t]
        log_z = math.log(sum(math.exp(v) for v in student[b, pos].tolist()))
        ce = log_z - student[b, pos, targets[b, pos]].item()
        if form == "progressive":
            kd = -sum(p * (student[b, pos, j].item() - log_z) for j, p in enumerate(p_t))
        else:
            log_zt = math.log(sum(math.exp(v / t) for v in student[b, pos].tolist()))
            log_q = [v / t - log_zt for v in student[b, pos].tolist()]
            kd = t * t * sum(p * (math.log(p) - q) for p, q in zip(p_t, log_q, strict=True))
        return alpha * ce + (1 - alpha) * kd

    assert counts.tolist() == [2.0, 1.0]
    assert parts.total[0].item() == pytest.approx((token(0, 0) + token(0, 2)) / 2, rel=1e-10)
    assert parts.total[1].item() == pytest.approx(token(1, 2), rel=1e-10)
    # the batch's loss is the mean over its three counted tokens
    batch = (parts.total * counts).sum() / counts.sum()
    assert batch.item() == pytest.approx((token(0, 0) + token(0, 2) + token(1, 2)) / 3, rel=1e-10)


def test_per_token_kd_of_a_sequence_without_counted_tokens_is_zero_not_nan():
    student, teacher = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    parts, counts = kd_token_parts(
        student, teacher_log_probs(teacher, 1.0), torch.full((1, 3), IGNORE),
        temperature=1.0, alpha=0.5,
    )  # fmt: skip
    assert counts.item() == 0 and parts.total.item() == 0.0


def test_sequence_scores_average_the_counted_tokens():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 5))
    targets = np.array([[0, 1, IGNORE, IGNORE], [IGNORE, 2, 3, 4], [IGNORE] * 4])
    for score in (confidence_difficulty, loss_difficulty):
        got = score(logits, targets)
        flat = score(logits.reshape(-1, 5), np.where(targets < 0, 0, targets).reshape(-1))
        flat = flat.reshape(3, 4)
        assert got[0] == pytest.approx(flat[0, :2].mean())
        assert got[1] == pytest.approx(flat[1, 1:].mean())
        assert got[2] == 0.0
    ce = F.cross_entropy(torch.tensor(logits[1, 1:]), torch.tensor([2, 3, 4]))
    assert loss_difficulty(logits, targets)[1] == pytest.approx(ce.item())
    assert entropy_difficulty(logits, targets)[1] == pytest.approx(
        entropy_difficulty(logits[1, 1:]).mean()
    )


def test_length_and_rarity_from_the_data():
    x = np.array([[0, 0, 1, PAD], [2, PAD, PAD, PAD], [0, 1, 1, 2]])
    assert length_difficulty(x, PAD).tolist() == [3, 1, 4]
    # unigram counts over real tokens: 0 x3, 1 x3, 2 x2 of 8
    p = {0: 3 / 8, 1: 3 / 8, 2: 2 / 8}
    want = [
        -(2 * math.log(p[0]) + math.log(p[1])) / 3,
        -math.log(p[2]),
        -(math.log(p[0]) + 2 * math.log(p[1]) + math.log(p[2])) / 4,
    ]
    assert rarity_difficulty(x, PAD, V) == pytest.approx(want)


def test_random_replacements_never_produce_a_padding_id_inside_the_vocabulary():
    task = Task("masked_lm", vocab_size=5, pad_id=0, mask_rate=0.5, mask_prob=0.0,
                random_prob=1.0)  # fmt: skip
    x = np.random.default_rng(0).integers(1, 5, (2000, 10))
    inputs, targets = task.batch(x, None, np.arange(2000))
    replaced = inputs[targets != IGNORE]
    assert (replaced != 0).all() and set(np.unique(replaced)) == {1, 2, 3, 4}


def test_token_counts_and_means_stay_exact_under_bf16_autocast():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 600, 4), torch.randn(2, 600, 4)
    targets = torch.randint(0, 4, (2, 600))
    targets[0, 301:] = IGNORE  # 301 and 600 counted tokens: not representable in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts, counts = kd_token_parts(
            student.bfloat16(), teacher_log_probs(teacher, 2.0), targets,
            temperature=2.0, alpha=0.5,
        )  # fmt: skip
    assert counts.dtype == torch.float32 and counts.tolist() == [301.0, 600.0]
    assert parts.total.dtype == torch.float32
