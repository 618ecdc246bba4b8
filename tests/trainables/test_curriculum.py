import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.curriculum import (
    ConstantPacing,
    LinearPacing,
    PacedSampler,
    ShuffleSampler,
    confidence_difficulty,
    easy_first_order,
)


def test_linear_pacing_by_hand():
    pacing = LinearPacing(start=0.2, full_at=0.5)
    # c(p) = min(1, 0.2 + 0.8 * p / 0.5)
    assert pacing(0.0) == pytest.approx(0.2)
    assert pacing(0.25) == pytest.approx(0.6)
    assert pacing(0.5) == pytest.approx(1.0)
    assert pacing(0.9) == 1.0
    assert ConstantPacing()(0.0) == 1.0


@pytest.mark.parametrize(("start", "full_at"), [(0.0, 0.5), (1.2, 0.5), (0.2, 0.0), (0.2, 1.5)])
def test_linear_pacing_rejects_out_of_range(start, full_at):
    with pytest.raises(ValueError, match="start|full_at"):
        LinearPacing(start=start, full_at=full_at)


def test_confidence_difficulty_by_hand():
    logits = np.array([[np.log(3.0), 0.0], [0.0, 0.0], [0.0, np.log(9.0)]])
    labels = np.array([0, 1, 0])
    # p(y): 3/4, 1/2, 1/10 -> difficulty 1/4, 1/2, 9/10
    np.testing.assert_allclose(confidence_difficulty(logits, labels), [0.25, 0.5, 0.9])
    np.testing.assert_array_equal(easy_first_order(np.array([0.5, 0.1, 0.5, 0.0])), [3, 1, 0, 2])


def test_shuffle_sampler_visits_every_example_once_per_epoch():
    sampler = ShuffleSampler(10, 4, seed=3)
    first_epochs = np.concatenate([sampler.next_batch() for _ in range(5)])  # 20 = 2 epochs
    assert sorted(first_epochs[:10]) == list(range(10))
    assert sorted(first_epochs[10:]) == list(range(10))
    assert not np.array_equal(first_epochs[:10], first_epochs[10:])  # reshuffled


def test_paced_sampler_draws_only_from_the_allowed_easiest_fraction():
    order = np.arange(100)[::-1]  # example 99 is the easiest
    sampler = PacedSampler(order, LinearPacing(start=0.1, full_at=0.5), 8, total_steps=100, seed=0)
    for step in range(100):
        allowed = math.ceil(LinearPacing(start=0.1, full_at=0.5)(step / 100) * 100 - 1e-9)
        assert sampler.fraction == pytest.approx(allowed / 100, abs=0.01)
        batch = sampler.next_batch()
        assert len(set(batch.tolist())) == len(batch) == 8
        assert set(batch.tolist()) <= set(order[:allowed].tolist()), step


def _samplers(seed):
    yield ShuffleSampler(37, 5, seed=seed)
    order = np.random.default_rng(seed).permutation(37)
    yield PacedSampler(order, LinearPacing(start=0.2, full_at=0.6), 5, total_steps=80, seed=seed)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), stop=st.integers(0, 60))
def test_resume_from_state_dict_repeats_the_next_100_batches(seed, stop):
    for original, fresh in zip(_samplers(seed), _samplers(seed), strict=True):
        for _ in range(stop):
            original.next_batch()
        state = original.state_dict()
        np.random.seed(seed % 1000)  # global RNG state must not matter
        fresh.load_state_dict(state)
        for _ in range(100):
            np.testing.assert_array_equal(original.next_batch(), fresh.next_batch())
