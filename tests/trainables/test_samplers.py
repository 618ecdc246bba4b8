"""Samplers: hand-made batches for the selection rules, then properties of every sampler:
exact resume from state_dict, disjoint ranks, and easy-first pacing that never shrinks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.curriculum import (
    BandSampler,
    ConfidenceSampler,
    ImportanceSampler,
    PacedSampler,
    RhoSampler,
    ShuffleSampler,
    WuPacing,
    importance_probabilities,
    prune,
    rho_select,
)

N = 97


def _loss_of(indices):  # a fixed stand-in for the student's per-example loss
    return (np.asarray(indices) * 37 % 11) / 10.0 + 0.05


def _scores():
    return np.random.default_rng(0).random(N)


def make_samplers(seed, *, rank=0, world_size=1, batch=6):
    """One of every sampler over the same data (name -> sampler)."""
    order = np.argsort(_scores())
    common = {"seed": seed, "rank": rank, "world_size": world_size}
    return {
        "shuffle": ShuffleSampler(np.arange(N), batch, **common),
        "paced": PacedSampler(
            order, WuPacing("linear", start=0.1, full_at=0.6), batch, total_steps=120, **common
        ),
        "confidence": ConfidenceSampler(
            np.arange(N), 1 - _scores(), batch, pool_factor=3, **common
        ),
        "importance": ImportanceSampler(np.arange(N), batch, pool_factor=3, **common),
        "rho": RhoSampler(np.arange(N), _scores(), batch, pool_factor=3, **common),
        "band": BandSampler(order, [(0.0, 0.3), (0.0, 0.7), (0.0, 1.0)], batch, **common),
    }


def _advance(name, sampler, steps):
    out = []
    for i in range(steps):
        if name == "band":
            sampler.set_stage(min(i // 40, 2))
        batch = sampler.next_batch(_loss_of)
        if name == "confidence":
            sampler.observe(float(np.mean(_loss_of(batch.indices))) % 1)
        out.append(batch)
    return out


def test_rho_selects_the_highest_reducible_loss_on_a_hand_made_batch():
    train = np.array([2.0, 0.5, 3.0, 1.0, 2.5])
    irreducible = np.array([1.9, 0.1, 0.5, 0.2, 2.4])
    # reducible: 0.1, 0.4, 2.5, 0.8, 0.1 -> top 2: positions 2, 3; ties keep position order
    np.testing.assert_array_equal(rho_select(train, irreducible, 2), [2, 3])
    np.testing.assert_array_equal(rho_select(train, irreducible, 5), [2, 3, 1, 0, 4])


def test_importance_probabilities_and_weights_by_hand():
    q = importance_probabilities(np.array([1.0, 3.0]), smoothing=0.0)
    np.testing.assert_allclose(q, [0.25, 0.75])
    q = importance_probabilities(np.array([1.0, 3.0]), smoothing=1.0)  # + mean 2
    np.testing.assert_allclose(q, [3 / 8, 5 / 8])
    np.testing.assert_allclose(importance_probabilities(np.zeros(4), 0.0), [0.25] * 4)
    # the weighted mean of the sampled losses estimates the pool's plain mean (unbiased)
    sampler = ImportanceSampler(np.arange(N), 64, seed=1, pool_factor=1, smoothing=0.0)
    sampler.pool_factor = 1
    estimates = []
    for _ in range(400):
        batch = sampler.next_batch(_loss_of)
        estimates.append(np.mean(batch.weights * _loss_of(batch.indices)))
    pool_mean = np.mean(_loss_of(np.arange(N)))
    assert np.mean(estimates) == pytest.approx(pool_mean, rel=0.03)


def test_prune_drops_the_lowest_scores():
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    np.testing.assert_array_equal(prune(scores, 0.4), [0, 2, 4])  # drops 0.1 and 0.3
    np.testing.assert_array_equal(prune(scores, 0.0), np.arange(5))


def test_paced_sampler_draws_only_from_the_allowed_easiest_fraction():
    order = np.arange(100)[::-1]  # example 99 is the easiest
    pacing = WuPacing("linear", start=0.1, full_at=0.5)
    sampler = PacedSampler(order, pacing, 8, total_steps=100, seed=0)
    for step in range(100):
        allowed = math.ceil(pacing(step / 100) * 100 - 1e-9)
        batch = sampler.next_batch().indices
        assert len(set(batch.tolist())) == len(batch) == 8
        assert set(batch.tolist()) <= set(order[:allowed].tolist()), step


def test_confidence_sampler_prefers_confident_examples_until_the_student_is_confident():
    confidence = np.where(np.arange(N) < N // 2, 0.99, 0.05)  # first half: easy
    sampler = ConfidenceSampler(np.arange(N), confidence, 8, seed=0, beta_max=8.0, pool_factor=4)
    early = np.concatenate([sampler.next_batch().indices for _ in range(50)])
    assert np.mean(early < N // 2) > 0.9
    sampler.student_confidence = 1.0  # beta = 0: uniform over the candidates
    late = np.concatenate([sampler.next_batch().indices for _ in range(200)])
    assert 0.4 < np.mean(late < N // 2) < 0.6


def test_band_sampler_stays_in_the_stage_band():
    order = np.arange(N)
    sampler = BandSampler(order, [(0.0, 0.25), (0.5, 1.0)], 5, seed=0)
    assert set(np.concatenate([sampler.next_batch().indices for _ in range(30)])) <= set(range(25))
    sampler.set_stage(1)
    assert all(i >= 48 for _ in range(30) for i in sampler.next_batch().indices)


@pytest.mark.parametrize("name", list(make_samplers(0)))
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), stop=st.integers(0, 80))
def test_resume_from_state_dict_repeats_the_next_100_batches(name, seed, stop):
    original = make_samplers(seed)[name]
    _advance(name, original, stop)
    state = original.state_dict()
    expected = _advance(name, original, 100)
    fresh = make_samplers(seed + 1)[name]  # a different seed: everything must come from state
    fresh.seed = seed
    fresh.load_state_dict(state)
    np.random.seed(seed % 1000)  # the global RNG must not matter
    for step, (want, got) in enumerate(zip(expected, _advance(name, fresh, 100), strict=True)):
        np.testing.assert_array_equal(want.indices, got.indices, err_msg=f"{name} step {step}")
        if want.weights is not None:
            np.testing.assert_array_equal(want.weights, got.weights)


@pytest.mark.parametrize("name", list(make_samplers(0)))
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_two_ranks_are_disjoint_and_together_equal_one_global_batch(name, seed):
    single = _advance(name, make_samplers(seed, batch=12)[name], 60)
    ranks = [_advance(name, make_samplers(seed, rank=r, world_size=2)[name], 60) for r in (0, 1)]
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert not set(a.indices.tolist()) & set(b.indices.tolist()), f"{name} step {step}"
        if name in ("shuffle", "paced", "band"):  # no per-rank scoring: exactly the global draw
            np.testing.assert_array_equal(
                np.concatenate([a.indices, b.indices]), single[step].indices
            )


def test_two_ranks_cover_the_data_in_an_epoch_and_the_allowed_subset_over_time():
    ranks = [ShuffleSampler(np.arange(N), 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    seen = [np.concatenate([s.next_batch().indices for _ in range(6)]) for s in ranks]  # 96 of 97
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == 96
    order = np.argsort(_scores())
    pacing = WuPacing("step", start=0.3, full_at=1.0)  # 30% allowed all along
    paced = [
        PacedSampler(order, pacing, 4, total_steps=10**6, seed=5, rank=r, world_size=2)
        for r in (0, 1)
    ]
    union = set()
    for _ in range(200):
        union |= set(paced[0].next_batch().indices) | set(paced[1].next_batch().indices)
    assert union == set(order[: math.ceil(0.3 * N)].tolist())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), start=st.floats(0.01, 1.0), full_at=st.floats(0.01, 1.0))
def test_easy_first_pacing_never_shrinks_the_allowed_subset(seed, start, full_at):
    for shape in ("linear", "quadratic", "root", "exp", "log", "step"):
        sampler = PacedSampler(
            np.arange(N),
            WuPacing(shape, start=start, full_at=full_at),
            4,
            total_steps=50,
            seed=seed,
        )
        allowed = []
        for _ in range(50):
            allowed.append(sampler.allowed())
            sampler.next_batch()
        assert allowed == sorted(allowed)
