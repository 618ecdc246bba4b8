"""Bandit and mixture samplers: the Exp3.S and discounted-Thompson updates, reward rescaling,
difficulty buckets and mixture schedules against hand computations; then the samplers: batches
from the chosen arm or the scheduled sources, ranks that agree and are disjoint, exact resume."""

import io
import math

import numpy as np
import pytest

from trainables.curriculum import (
    BanditSampler,
    Exp3S,
    MixtureSampler,
    MixtureSchedule,
    RewardScaler,
    Thompson,
    bucket_arms,
    source_arms,
)

# ---------------------------------------------------------------------------------------------
# Exp3S


def test_exp3s_two_updates_by_hand():
    policy = Exp3S(3, step_size=0.5, exploration=0.1, sharing=0.2)
    np.testing.assert_allclose(policy.probabilities(), [1 / 3] * 3, rtol=0, atol=1e-15)

    # Update 1: arm 0, reward 1. pi = 1/3 each, so r~ = (3, 0, 0) and eta r~ = (1.5, 0, 0).
    # In exp-space (W_i = exp(w_i)): W'_i = 0.8 X_i + 0.1 * (sum of the other two X_j).
    policy.update(0, 1.0)
    x0, x1, x2 = math.exp(1.5), 1.0, 1.0
    e0 = 0.8 * x0 + 0.1 * (x1 + x2)
    e1 = 0.8 * x1 + 0.1 * (x0 + x2)
    e2 = 0.8 * x2 + 0.1 * (x0 + x1)
    total = e0 + e1 + e2
    pi = [0.9 * e / total + 0.1 / 3 for e in (e0, e1, e2)]
    np.testing.assert_allclose(policy.probabilities(), pi, rtol=0, atol=1e-12)
    # the max is subtracted: weights are log(W_i / max W)
    np.testing.assert_allclose(
        policy.weights, [0.0, math.log(e1 / e0), math.log(e2 / e0)], rtol=0, atol=1e-12
    )

    # Update 2: arm 2, reward -0.5, importance-weighted by pi(2) from before the update.
    policy.update(2, -0.5)
    x0, x1, x2 = e0, e1, e2 * math.exp(0.5 * (-0.5 / pi[2]))
    f0 = 0.8 * x0 + 0.1 * (x1 + x2)
    f1 = 0.8 * x1 + 0.1 * (x0 + x2)
    f2 = 0.8 * x2 + 0.1 * (x0 + x1)
    total = f0 + f1 + f2
    expected = [0.9 * f / total + 0.1 / 3 for f in (f0, f1, f2)]
    np.testing.assert_allclose(policy.probabilities(), expected, rtol=0, atol=1e-12)
    assert policy.weights.max() == 0.0


def test_exp3s_without_sharing_is_exp3():
    policy = Exp3S(3, step_size=0.5, exploration=0.1, sharing=0.0)
    policy.update(1, 0.6)  # w_1 += 0.5 * 0.6 / (1/3) = 0.9
    np.testing.assert_allclose(policy.weights, [-0.9, 0.0, -0.9], rtol=0, atol=1e-12)
    pi0 = 0.9 * math.exp(-0.9) / (2 * math.exp(-0.9) + 1) + 0.1 / 3
    policy.update(0, -1.0)  # w_0 -= 0.5 / pi(0)
    np.testing.assert_allclose(policy.weights, [-0.9 - 0.5 / pi0, 0.0, -0.9], rtol=0, atol=1e-12)


def test_exp3s_one_arm_and_bad_arguments():
    policy = Exp3S(1, step_size=1.0, exploration=0.1, sharing=0.1)
    policy.update(0, 1.0)
    np.testing.assert_array_equal(policy.probabilities(), [1.0])
    np.testing.assert_array_equal(policy.weights, [0.0])
    with pytest.raises(ValueError, match="exploration"):
        Exp3S(3, step_size=1.0, exploration=0.0, sharing=0.1)
    with pytest.raises(ValueError, match="sharing"):
        Exp3S(3, step_size=1.0, exploration=0.1, sharing=1.5)
    with pytest.raises(ValueError, match="reward"):
        Exp3S(3, step_size=1.0, exploration=0.1, sharing=0.1).update(0, 2.0)
    with pytest.raises(ValueError, match="arm"):
        Exp3S(3, step_size=1.0, exploration=0.1, sharing=0.1).update(3, 0.0)


def test_exp3s_stays_finite_under_huge_rewards():
    policy = Exp3S(4, step_size=50.0, exploration=0.01, sharing=0.0)
    for i in range(50):
        policy.update(i % 4, 1.0 if i % 4 == 0 else -1.0)
    assert np.all(np.isfinite(policy.weights)) and np.all(np.isfinite(policy.probabilities()))
    assert policy.probabilities()[0] == pytest.approx(0.99 + 0.01 / 4)


# ---------------------------------------------------------------------------------------------
# RewardScaler


def test_reward_scaler_on_a_hand_sequence():
    scaler = RewardScaler(window=5, low=0.2, high=0.8)
    assert scaler(1.0) == 0.0  # one reward: q_lo = q_hi
    assert scaler(2.0) == 1.0  # kept [1, 2]: q_lo 1.2, q_hi 1.8
    assert scaler(0.0) == -1.0  # kept [0, 1, 2]: q_lo 0.4, q_hi 1.6
    # kept [0, 1, 1.2, 2]: q_lo at position 0.6 -> 0.6, q_hi at 2.4 -> 1.2 + 0.4 * 0.8 = 1.52
    assert scaler(1.2) == pytest.approx(2 * (1.2 - 0.6) / (1.52 - 0.6) - 1, abs=1e-12)
    scaler(5.0)
    scaler(5.0)  # the window keeps the last five: the first 1.0 is gone
    assert scaler.state_dict() == {"rewards": [2.0, 0.0, 1.2, 5.0, 5.0]}
    with pytest.raises(ValueError, match="finite"):
        scaler(float("nan"))


def test_reward_scaler_state_round_trip():
    scaler = RewardScaler(window=3)
    for raw in (0.3, -1.0, 2.0, 0.5):
        scaler(raw)
    copy = RewardScaler(window=3)
    copy.load_state_dict(scaler.state_dict())
    assert [copy(r) for r in (0.1, 4.0, -2.0)] == [scaler(r) for r in (0.1, 4.0, -2.0)]


# ---------------------------------------------------------------------------------------------
# Thompson


def test_thompson_discounted_posterior_by_hand():
    policy = Thompson(2, discount=0.9, exploration=0.0)
    policy.update(0, 1.0)  # s = 1
    policy.update(1, -0.5)  # decay, then s = 0.25 on arm 1
    policy.update(0, 0.0)  # decay, then s = 0.5 on arm 0
    np.testing.assert_allclose(policy.successes, [0.81 + 0.5, 0.9 * 0.25], rtol=0, atol=1e-15)
    np.testing.assert_allclose(policy.failures, [0.5, 0.9 * 0.75], rtol=0, atol=1e-15)
    state = policy.state_dict()
    assert all(type(v) is float for v in state["successes"] + state["failures"])
    copy = Thompson(2, discount=0.9, exploration=0.0)
    copy.load_state_dict(state)
    np.testing.assert_array_equal(copy.successes, policy.successes)


def test_thompson_probabilities():
    policy = Thompson(3, discount=1.0, exploration=0.01)
    for _ in range(50):
        policy.update(0, 1.0)
        policy.update(1, -1.0)
        policy.update(2, -1.0)
    p = policy.probabilities(seed=[3, 1])
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p[0] > 0.95
    np.testing.assert_array_equal(p, policy.probabilities(seed=[3, 1]))  # its own generator
    fresh = Thompson(4, discount=0.5, exploration=0.2).probabilities(seed=0, draws=20000)
    np.testing.assert_allclose(fresh, [0.25] * 4, atol=0.02)


def test_thompson_choose_uses_the_documented_draw_order():
    policy = Thompson(3, discount=0.8, exploration=0.3)
    policy.update(0, 0.5)
    policy.update(2, -0.2)
    rng, by_hand = np.random.default_rng(7), np.random.default_rng(7)
    branches = set()
    for _ in range(40):
        u = by_hand.random()
        if u < 0.3:
            expected, branch = int(by_hand.integers(3)), "explore"
        else:
            theta = by_hand.beta(1 + policy.successes, 1 + policy.failures)
            expected, branch = int(np.argmax(theta)), "posterior"
        branches.add(branch)
        assert policy.choose(rng) == expected
    assert branches == {"explore", "posterior"}


# ---------------------------------------------------------------------------------------------
# BanditSampler

ARMS = [np.arange(0, 20), np.arange(20, 50), np.arange(50, 60)]


def _policy(kind, arms=3):
    if kind == "exp3s":
        return Exp3S(arms, step_size=0.2, exploration=0.1, sharing=0.05)
    return Thompson(arms, discount=0.95, exploration=0.1)


def _bandit(kind, *, seed=5, rank=0, world_size=1, batch=4):
    return BanditSampler(
        ARMS, _policy(kind), RewardScaler(window=10), batch, seed=seed, rank=rank,
        world_size=world_size,
    )  # fmt: skip


def _raw_reward(step, arm):  # a fixed stand-in for the student's learning progress
    return math.sin(3.0 * step + arm) + 0.5 * arm


@pytest.mark.parametrize("kind", ["exp3s", "thompson"])
def test_bandit_batches_come_from_the_chosen_arm(kind):
    sampler = _bandit(kind)
    np.testing.assert_array_equal(sampler.pool, np.arange(60))
    seen = set()
    for step in range(30):
        batch = sampler.next_batch()
        rows = sampler.arm_rows(sampler.arm)
        assert len(batch.indices) == 4 and len(set(batch.indices.tolist())) == 4
        assert set(batch.indices.tolist()) <= set(rows.tolist())
        assert batch.weights is None
        seen.add(sampler.arm)
        sampler.feedback(_raw_reward(step, sampler.arm))
    assert seen == {0, 1, 2}
    assert sampler.names == ["arm0", "arm1", "arm2"] and sampler.fraction == 1.0


@pytest.mark.parametrize("kind", ["exp3s", "thompson"])
def test_bandit_ranks_pick_the_same_arm_and_disjoint_halves(kind):
    ranks = [_bandit(kind, rank=r, world_size=2) for r in range(2)]
    whole = _bandit(kind, batch=8)  # one worker with the global batch sees the same rows
    for step in range(20):
        halves = [s.next_batch().indices for s in ranks]
        full = whole.next_batch().indices
        assert ranks[0].arm == ranks[1].arm == whole.arm
        assert not set(halves[0].tolist()) & set(halves[1].tolist())
        np.testing.assert_array_equal(np.concatenate(halves), full)
        for s in (*ranks, whole):
            s.feedback(_raw_reward(step, s.arm))
        np.testing.assert_array_equal(ranks[0].probabilities(), ranks[1].probabilities())


@pytest.mark.parametrize("kind", ["exp3s", "thompson"])
def test_bandit_state_round_trip(kind):
    sampler = _bandit(kind)
    for step in range(7):
        sampler.next_batch()
        sampler.feedback(_raw_reward(step, sampler.arm))
    sampler.next_batch()  # saved between a batch and its feedback: the arm must survive
    state = sampler.state_dict()
    resumed = _bandit(kind)  # same config (seed included); position and policy from state
    resumed.load_state_dict(state)
    assert resumed.arm == sampler.arm and resumed.step == sampler.step
    for step in range(8, 20):
        assert resumed.feedback(_raw_reward(step, resumed.arm)) == sampler.feedback(
            _raw_reward(step, sampler.arm)
        )
        np.testing.assert_array_equal(resumed.probabilities(), sampler.probabilities())
        np.testing.assert_array_equal(resumed.next_batch().indices, sampler.next_batch().indices)
        assert resumed.arm == sampler.arm


@pytest.mark.parametrize("kind", ["exp3s", "thompson"])
def test_bandit_state_loads_with_torch_weights_only(kind):
    torch = pytest.importorskip("torch")
    sampler = _bandit(kind)
    for step in range(3):
        sampler.next_batch()
        sampler.feedback(_raw_reward(step, sampler.arm))
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = _bandit(kind)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.next_batch().indices, sampler.next_batch().indices)


def test_bandit_feedback_before_a_batch_and_bad_arms():
    with pytest.raises(RuntimeError, match="next_batch"):
        _bandit("exp3s").feedback(1.0)
    scaler = RewardScaler(window=4)
    with pytest.raises(ValueError, match="arm 1"):
        BanditSampler(
            [np.arange(3), np.array([], dtype=int)], _policy("exp3s", 2), scaler, 2, seed=0
        )
    with pytest.raises(ValueError, match="arm 0"):
        BanditSampler([np.array([0.5, 1.0])], _policy("exp3s", 1), scaler, 2, seed=0)
    with pytest.raises(ValueError, match="policy has 3 arms"):
        BanditSampler([np.arange(3)], _policy("exp3s", 3), scaler, 2, seed=0)


@pytest.mark.parametrize("kind", ["exp3s", "thompson"])
def test_bandit_concentrates_on_the_rewarding_arm(kind):
    policy = (
        Exp3S(3, step_size=0.1, exploration=0.05, sharing=0.001)
        if kind == "exp3s"
        else Thompson(3, discount=0.99, exploration=0.05)
    )
    sampler = BanditSampler(ARMS, policy, RewardScaler(window=20), 4, seed=11)
    arms = []
    for _ in range(300):
        sampler.next_batch()
        arms.append(sampler.arm)
        sampler.feedback(1.0 if sampler.arm == 0 else -1.0)
    assert sampler.probabilities()[0] > 0.8  # seeded; 0.87 to 0.96 over seeds 0-19
    assert np.mean(np.array(arms[-100:]) == 0) > 0.8


# ---------------------------------------------------------------------------------------------
# Arms from difficulty and source codes


def test_bucket_arms_by_hand():
    difficulty = np.array([0.5, 9.0, 0.1, 0.7, 9.0, 0.3, 0.7])
    pool = np.array([0, 2, 3, 5, 6])  # difficulties 0.5, 0.1, 0.7, 0.3, 0.7
    # sorted (stable): rows 2 (0.1), 5 (0.3), 0 (0.5), 3 (0.7), 6 (0.7)
    assert [a.tolist() for a in bucket_arms(pool, difficulty, 2)] == [[2, 5, 0], [3, 6]]
    assert [a.tolist() for a in bucket_arms(pool, difficulty, 3)] == [[2, 5], [0, 3], [6]]
    assert [a.tolist() for a in bucket_arms(pool, difficulty, 1)] == [[2, 5, 0, 3, 6]]
    with pytest.raises(ValueError, match="buckets"):
        bucket_arms(pool, difficulty, 6)


def test_source_arms():
    codes = np.array([1, 0, 1, 2, 0, 1])
    arms = source_arms(np.array([0, 1, 2, 4, 5]), codes, 3)
    assert [a.tolist() for a in arms] == [[1, 4], [0, 2, 5], []]
    with pytest.raises(ValueError, match="source codes"):
        source_arms(np.array([0, 3]), codes, 2)


# ---------------------------------------------------------------------------------------------
# MixtureSchedule


def test_constant_and_stages_schedules_by_hand():
    constant = MixtureSchedule.constant([2, 1, 1])
    for progress in (0.0, 0.4, 1.0):
        np.testing.assert_array_equal(constant(progress), [0.5, 0.25, 0.25])
    stages = MixtureSchedule.stages([0.0, 0.5], [[1, 0], [1, 3]])
    np.testing.assert_array_equal(stages(0.0), [1.0, 0.0])
    np.testing.assert_array_equal(stages(0.49), [1.0, 0.0])
    np.testing.assert_array_equal(stages(0.5), [0.25, 0.75])
    np.testing.assert_array_equal(stages(1.0), [0.25, 0.75])
    assert stages(0.7).dtype == np.float64


def test_linear_schedule_by_hand():
    linear = MixtureSchedule.linear([2, 0], [1, 3])  # normalised: [1, 0] -> [0.25, 0.75]
    np.testing.assert_allclose(linear(0.0), [1.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        linear(0.25), [0.75 * 1 + 0.25 * 0.25, 0.25 * 0.75], rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(linear(1.0), [0.25, 0.75], rtol=0, atol=1e-15)
    np.testing.assert_allclose(linear(2.0), linear(1.0))  # progress is clamped


def test_temperature_schedule_by_hand():
    schedule = MixtureSchedule.temperature([100, 10], tau_start=1.0, tau_end=3.0)
    np.testing.assert_allclose(schedule(0.0), [100 / 110, 10 / 110], rtol=0, atol=1e-15)
    r = math.sqrt(10)  # tau 2: [100^(1/2), 10^(1/2)] = [10, sqrt(10)]
    np.testing.assert_allclose(schedule(0.5), [10 / (10 + r), r / (10 + r)], rtol=0, atol=1e-15)
    a, b = 100 ** (1 / 3), 10 ** (1 / 3)
    np.testing.assert_allclose(schedule(1.0), [a / (a + b), b / (a + b)], rtol=0, atol=1e-15)
    with_empty = MixtureSchedule.temperature([100, 0, 10], tau_start=1.0, tau_end=1.0)
    np.testing.assert_allclose(with_empty(0.3), [100 / 110, 0.0, 10 / 110], rtol=0, atol=1e-15)
    tiny_tau = MixtureSchedule.temperature([100, 10], tau_start=1e-3, tau_end=1e-3)
    np.testing.assert_allclose(tiny_tau(0.0), [1.0, 0.0], atol=1e-15)  # no overflow


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MixtureSchedule.constant([1, -1]), "non-negative"),
        (lambda: MixtureSchedule.constant([0, 0]), "at least one positive"),
        (lambda: MixtureSchedule.constant([]), "non-empty"),
        (lambda: MixtureSchedule.stages([0.1, 0.5], [[1], [1]]), "start at 0"),
        (lambda: MixtureSchedule.stages([0.0, 0.5, 0.5], [[1], [1], [1]]), "increase"),
        (lambda: MixtureSchedule.stages([0.0, 1.0], [[1], [1]]), r"\[0, 1\)"),
        (lambda: MixtureSchedule.stages([0.0, 0.5], [[1]]), "needs 2 weight lists"),
        (lambda: MixtureSchedule.stages([0.0, 0.5], [[1], [1, 2]]), "same number"),
        (lambda: MixtureSchedule.linear([1, 0], [float("nan"), 1]), "finite"),
        (lambda: MixtureSchedule.temperature([10, 5], 0.0, 1.0), "tau_start"),
        (lambda: MixtureSchedule.temperature([10, 5], 1.0, -1.0), "tau_end"),
        (lambda: MixtureSchedule.temperature([0, 0], 1.0, 1.0), "counts"),
        (lambda: MixtureSchedule("cosine"), "kind"),
    ],
)
def test_schedule_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# ---------------------------------------------------------------------------------------------
# MixtureSampler

SOURCES = [np.arange(0, 300), np.arange(300, 500), np.arange(500, 600)]


def _source_of(indices):
    return np.searchsorted([300, 500], indices, side="right")


def _mixture(weights=(0.5, 0.3, 0.2), *, seed=3, rank=0, world_size=1, batch=20, sources=SOURCES):
    return MixtureSampler(
        sources, MixtureSchedule.constant(weights), batch, total_steps=500, seed=seed,
        rank=rank, world_size=world_size,
    )  # fmt: skip


def test_mixture_fractions_match_the_schedule():
    sampler = _mixture()
    np.testing.assert_allclose(sampler.probabilities(), [0.5, 0.3, 0.2])
    drawn = []
    for _ in range(500):
        batch = sampler.next_batch().indices
        assert len(batch) == 20 and len(np.unique(batch)) == 20
        drawn.append(batch)
    fractions = np.bincount(_source_of(np.concatenate(drawn)), minlength=3) / (500 * 20)
    np.testing.assert_allclose(fractions, [0.5, 0.3, 0.2], atol=0.015)
    assert sampler.fraction == 1.0


def test_mixture_zero_weight_and_empty_sources_never_appear():
    sampler = _mixture((0.7, 0.0, 0.3))
    for _ in range(100):
        assert not np.any(_source_of(sampler.next_batch().indices) == 1)
    with_empty = _mixture((1, 1, 2), sources=[np.arange(10), np.array([]), np.arange(10, 30)])
    np.testing.assert_allclose(with_empty.probabilities(), [1 / 3, 0.0, 2 / 3])


def test_mixture_gives_a_short_sources_share_to_the_others():
    sampler = _mixture((0.9, 0.1), sources=[np.arange(2), np.arange(2, 52)], batch=10)
    for _ in range(50):
        batch = sampler.next_batch().indices
        assert len(np.unique(batch)) == 10 and {0, 1} <= set(batch.tolist())
    short = _mixture((1, 0), sources=[np.arange(3), np.arange(3, 50)], batch=10)
    assert sorted(short.next_batch().indices.tolist()) == [0, 1, 2]  # p = 0: never used


def test_mixture_follows_a_staged_schedule_and_fails_on_an_all_empty_stage():
    schedule = MixtureSchedule.stages([0.0, 0.5], [[1, 0], [0, 1]])
    sampler = MixtureSampler(
        [np.arange(10), np.arange(10, 20)], schedule, 4, total_steps=10, seed=0
    )
    for step in range(10):
        from_second = sampler.next_batch().indices >= 10
        assert set(from_second.tolist()) == {step >= 5}  # the stage changes at progress 0.5
    late_empty = MixtureSampler([np.arange(10), np.array([])], schedule, 4, total_steps=10, seed=0)
    for _ in range(5):
        late_empty.next_batch()
    with pytest.raises(ValueError, match="empty sources"):
        late_empty.next_batch()
    with pytest.raises(ValueError, match="empty sources"):
        MixtureSampler([np.array([]), np.arange(10)], schedule, 4, total_steps=10, seed=0)


def test_mixture_rejects_bad_sources():
    with pytest.raises(ValueError, match="disjoint"):
        _mixture((1, 1), sources=[np.arange(5), np.arange(4, 8)])
    with pytest.raises(ValueError, match="2 sources but 3"):
        _mixture((1, 1))
    with pytest.raises(ValueError, match="total_steps"):
        MixtureSampler(SOURCES, MixtureSchedule.constant([1, 1, 1]), 4, total_steps=0, seed=0)


def test_mixture_state_round_trip():
    sampler = _mixture()
    for _ in range(9):
        sampler.next_batch()
    resumed = _mixture(seed=1234)
    resumed.load_state_dict(sampler.state_dict())
    for _ in range(10):
        np.testing.assert_array_equal(resumed.probabilities(), sampler.probabilities())
        np.testing.assert_array_equal(resumed.next_batch().indices, sampler.next_batch().indices)


def test_mixture_ranks_are_disjoint_blocks_of_one_global_batch():
    ranks = [_mixture(rank=r, world_size=2, batch=6) for r in range(2)]
    whole = _mixture(batch=12)
    for _ in range(20):
        halves = [s.next_batch().indices for s in ranks]
        assert not set(halves[0].tolist()) & set(halves[1].tolist())
        np.testing.assert_array_equal(np.concatenate(halves), whole.next_batch().indices)
