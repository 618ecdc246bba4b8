"""Difficulty scores against hand-computed values and toy trajectories."""

import math

import numpy as np
import pytest

from trainables.curriculum import (
    confidence_difficulty,
    easy_first_order,
    el2n_difficulty,
    entropy_difficulty,
    forgetting_difficulty,
    loss_difficulty,
    margin_difficulty,
    to_ranks,
)

# p = [3/4, 1/4] for row 0; [1/2, 1/2] for row 1; [1/10, 9/10] for row 2
LOGITS = np.array([[math.log(3.0), 0.0], [0.0, 0.0], [0.0, math.log(9.0)]])
LABELS = np.array([0, 1, 0])


def test_single_checkpoint_scores_by_hand():
    np.testing.assert_allclose(confidence_difficulty(LOGITS, LABELS), [0.25, 0.5, 0.9])
    np.testing.assert_allclose(margin_difficulty(LOGITS, LABELS), [0.25 - 0.75, 0.0, 0.9 - 0.1])
    np.testing.assert_allclose(
        loss_difficulty(LOGITS, LABELS), [-math.log(0.75), -math.log(0.5), -math.log(0.1)]
    )
    h = lambda *p: -sum(q * math.log(q) for q in p)  # noqa: E731
    np.testing.assert_allclose(
        entropy_difficulty(LOGITS), [h(0.75, 0.25), h(0.5, 0.5), h(0.1, 0.9)]
    )


def test_loss_is_stable_for_huge_logits():
    assert loss_difficulty(np.array([[1000.0, 0.0]]), np.array([1]))[0] == pytest.approx(1000.0)


def test_el2n_on_a_toy_trajectory():
    # two checkpoints, one example with label 0: p = [3/4, 1/4] then [1/2, 1/2]
    logits = np.array([[[math.log(3.0), 0.0]], [[0.0, 0.0]]])
    first = math.hypot(0.25, 0.25)  # ||[3/4 - 1, 1/4]||
    second = math.hypot(0.5, 0.5)
    np.testing.assert_allclose(el2n_difficulty(logits, np.array([0])), [(first + second) / 2])


def test_forgetting_counts_on_a_toy_trajectory():
    correct = np.array(
        [
            # ex0 learned and kept; ex1 forgotten twice; ex2 never learned; ex3 forgotten once
            [1, 1, 0, 1],
            [1, 0, 0, 0],
            [1, 1, 0, 1],
            [1, 0, 0, 1],
            [1, 1, 0, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(forgetting_difficulty(correct), [0, 2, 5, 1])


def test_ranks_and_order():
    scores = np.array([0.3, 0.1, 0.9, 0.5])
    np.testing.assert_allclose(to_ranks(scores), [1 / 3, 0.0, 1.0, 2 / 3])
    np.testing.assert_array_equal(easy_first_order(scores), [1, 0, 3, 2])
    ties = to_ranks(np.zeros(5))
    assert sorted(ties) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])  # distinct ranks for ties
    assert to_ranks(np.array([7.0]))[0] == 0.0
