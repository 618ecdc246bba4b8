"""Automated curricula: a bandit picks, each step, which group of examples (an *arm*: a
difficulty bucket or a data source) the batch comes from, and learns from a reward the caller
feeds back (e.g. the student's loss drop, the "learning progress" of Graves et al. 2017).

- :class:`Exp3S`: the adversarial bandit of Graves, Bellemare, Menick, Munos & Kavukcuoglu
  (2017), "Automated Curriculum Learning for Neural Networks" (ICML), Algorithm 1, which is the
  Exp3.S of Auer, Cesa-Bianchi, Freund & Schapire (2002), "The nonstochastic multiarmed bandit
  problem" (SIAM J. Comput.).
- :class:`Thompson`: Thompson sampling with Beta posteriors (Agrawal & Goyal 2012, "Analysis of
  Thompson Sampling for the Multi-armed Bandit Problem", COLT), discounted so it tracks a
  non-stationary reward (Raj & Kalyani 2017, "Taming Non-stationary Bandits: A Bayesian
  Approach").
- :class:`RewardScaler`: Graves et al.'s quantile rescaling of raw rewards to ``[-1, 1]``.
- :class:`BanditSampler`: the sampler that draws each global batch from the chosen arm.
- :func:`bucket_arms`, :func:`source_arms`: arms from difficulty scores or
  source codes.

Every state is plain Python (lists, floats, ints, str, dicts), so ``torch.load(...,
weights_only=True)`` reads it back.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainables.curriculum._samplers import Batch, Scorer, _Base


def _check_arm(arm: int, arms: int) -> int:
    if not 0 <= int(arm) < arms:
        raise ValueError(f"arm must be in [0, {arms}), got {arm}")
    return int(arm)


def _check_reward(reward: float) -> float:
    reward = float(reward)
    if not -1.0 <= reward <= 1.0:  # also rejects NaN
        raise ValueError(f"reward must be rescaled to [-1, 1] (see RewardScaler), got {reward}")
    return reward


def _check_length(name: str, values: Sequence[Any], arms: int) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (arms,):
        raise ValueError(f"{name} must hold {arms} values, got shape {out.shape}")
    return out


class Exp3S:
    """Exp3.S (Auer et al. 2002) as used by Graves et al. (2017, Algorithm 1) with ``beta = 0``.

    With ``N`` arms, log-weights ``w`` (all 0 at the start), ``eps = exploration`` in ``(0, 1]``,
    ``eta = step_size`` and ``a = sharing``:

    - policy: ``pi(i) = (1 - eps) exp(w_i) / sum_j exp(w_j) + eps / N``;
    - after playing arm ``k`` and receiving ``r`` in ``[-1, 1]``, with ``pi`` the policy *before*
      the update, the importance-weighted reward is ``r~_i = r 1[i = k] / pi(i)`` and

      ``w_i <- log[(1 - a) exp(w_i + eta r~_i) + a / (N - 1) sum_{j != i} exp(w_j + eta r~_j)]``

      (the fixed share ``a`` lets a long-neglected arm recover, which matters because a
      curriculum's rewards drift).

    Everything is computed in log-space (row-wise log-sum-exp), so large rewards cannot
    overflow. After each update ``max(w)`` is subtracted from every ``w_i``: the policy depends
    only on differences of weights, so this changes nothing but keeps ``w`` bounded above by 0.
    With one arm the policy is always ``[1.0]`` and updates leave ``w`` unchanged.
    """

    def __init__(self, arms: int, *, step_size: float, exploration: float, sharing: float):
        if arms < 1:
            raise ValueError(f"arms must be >= 1, got {arms}")
        if not step_size > 0 or not math.isfinite(step_size):
            raise ValueError(f"step_size must be a finite number > 0, got {step_size}")
        if not 0.0 < exploration <= 1.0:  # pi(i) >= eps / N > 0 bounds r~ = r / pi(i)
            raise ValueError(f"exploration must be in (0, 1], got {exploration}")
        if not 0.0 <= sharing <= 1.0:
            raise ValueError(f"sharing must be in [0, 1], got {sharing}")
        self.arms, self.step_size = int(arms), float(step_size)
        self.exploration, self.sharing = float(exploration), float(sharing)
        self.weights = np.zeros(self.arms, dtype=np.float64)

    def probabilities(self) -> np.ndarray:
        """``pi`` (float64, sums to 1), from the max-subtracted softmax of ``w``."""
        e = np.exp(self.weights - self.weights.max())
        return (1.0 - self.exploration) * e / e.sum() + self.exploration / self.arms

    def update(self, arm: int, reward: float) -> None:
        """Update ``w`` after arm ``arm`` earned ``reward`` (already rescaled to ``[-1, 1]``)."""
        arm, reward = _check_arm(arm, self.arms), _check_reward(reward)
        n = self.arms
        if n == 1:
            return
        v = self.weights.copy()
        v[arm] += self.step_size * reward / self.probabilities()[arm]
        # log_mix[i, j]: log of the share of arm j's mass that goes to arm i.
        # (-inf, i.e. a dropped term, where a is 0 or 1)
        log_mix = np.full((n, n), math.log(self.sharing / (n - 1)) if self.sharing else -np.inf)
        np.fill_diagonal(log_mix, math.log1p(-self.sharing) if self.sharing < 1 else -np.inf)
        terms = log_mix + v[None, :]
        top = terms.max(axis=1)  # finite: each row has a finite term when n >= 2
        w = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
        self.weights = w - w.max()

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = _check_length("weights", state["weights"], self.arms)


class Thompson:
    """Discounted Thompson sampling with Beta posteriors (Agrawal & Goyal 2012; discounting as
    in Raj & Kalyani 2017).

    Arm ``i`` has the posterior ``Beta(1 + S_i, 1 + F_i)`` (prior ``Beta(1, 1)``; ``S_i = F_i =
    0`` at the start). An update with reward ``r`` in ``[-1, 1]`` for arm ``k`` maps it to
    ``s = (r + 1) / 2`` in ``[0, 1]``, then

    ``S_i <- discount S_i`` and ``F_i <- discount F_i`` for every arm, then ``S_k += s`` and
    ``F_k += 1 - s``.

    This is the fractional (deterministic) Beta update for a reward in ``[0, 1]``, used instead
    of Agrawal & Goyal's Bernoulli trial with success probability ``s``: same expectation, no
    extra randomness. The discount forgets old evidence (effective memory ``1 / (1 - discount)``
    updates), so the posterior follows a drifting reward.

    :meth:`choose` mixes in uniform exploration with probability ``exploration``.
    """

    def __init__(self, arms: int, *, discount: float, exploration: float):
        if arms < 1:
            raise ValueError(f"arms must be >= 1, got {arms}")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        if not 0.0 <= exploration <= 1.0:
            raise ValueError(f"exploration must be in [0, 1], got {exploration}")
        self.arms, self.discount, self.exploration = int(arms), float(discount), float(exploration)
        self.successes = np.zeros(self.arms, dtype=np.float64)
        self.failures = np.zeros(self.arms, dtype=np.float64)

    def choose(self, rng: np.random.Generator) -> int:
        """One arm. Draw order (fixed, so every rank and a resumed run agree): first ``u =
        rng.random()`` (always drawn, even when ``exploration`` is 0 or 1); if ``u <
        exploration`` the arm is ``rng.integers(N)``; otherwise ``theta = rng.beta(1 + S, 1 +
        F)`` (one vector draw) and the arm is ``argmax(theta)`` (ties: lowest index)."""
        u = rng.random()
        if u < self.exploration:
            return int(rng.integers(self.arms))
        theta = rng.beta(1.0 + self.successes, 1.0 + self.failures)
        return int(np.argmax(theta))

    def update(self, arm: int, reward: float) -> None:
        arm, reward = _check_arm(arm, self.arms), _check_reward(reward)
        s = (reward + 1.0) / 2.0
        self.successes *= self.discount
        self.failures *= self.discount
        self.successes[arm] += s
        self.failures[arm] += 1.0 - s

    def probabilities(self, seed: int | Sequence[int], draws: int = 4096) -> np.ndarray:
        """The probability :meth:`choose` picks each arm: ``exploration / N + (1 - exploration)
        P(theta_i is the largest)``, the latter a Monte Carlo estimate from ``draws`` posterior
        samples made with ``np.random.default_rng(seed)`` (its own generator: the sampler's
        stream is untouched). Sums to 1."""
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        rng = np.random.default_rng(seed)
        theta = rng.beta(1.0 + self.successes, 1.0 + self.failures, size=(draws, self.arms))
        wins = np.bincount(np.argmax(theta, axis=1), minlength=self.arms) / draws
        return self.exploration / self.arms + (1.0 - self.exploration) * wins

    def state_dict(self) -> dict[str, Any]:
        return {"successes": self.successes.tolist(), "failures": self.failures.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.successes = _check_length("successes", state["successes"], self.arms)
        self.failures = _check_length("failures", state["failures"], self.arms)


class RewardScaler:
    """Graves et al.'s (2017, Sec. 3) reward rescaling: raw rewards (e.g. loss drops) have no
    fixed scale, so each is mapped to ``[-1, 1]`` by its place among the last ``window`` raw
    rewards (itself included).

    With ``q_lo`` and ``q_hi`` the ``low`` and ``high`` quantiles of the kept rewards
    (``np.quantile``, linear interpolation):

    ``r = -1`` if ``raw < q_lo``; ``r = +1`` if ``raw > q_hi``; otherwise
    ``r = 2 (raw - q_lo) / (q_hi - q_lo) - 1``; and ``r = 0`` when ``q_hi == q_lo`` (e.g. the very
    first reward).
    """

    def __init__(self, window: int, low: float = 0.2, high: float = 0.8):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"need 0 <= low < high <= 1, got low {low}, high {high}")
        self.window, self.low, self.high = int(window), float(low), float(high)
        self.rewards: deque[float] = deque(maxlen=self.window)

    def __call__(self, raw: float) -> float:
        raw = float(raw)
        if not math.isfinite(raw):
            raise ValueError(f"the raw reward must be finite, got {raw}")
        self.rewards.append(raw)
        q_lo, q_hi = np.quantile(np.asarray(self.rewards), [self.low, self.high])
        if raw < q_lo:
            return -1.0
        if raw > q_hi:
            return 1.0
        if q_hi == q_lo:
            return 0.0
        return min(1.0, max(-1.0, 2.0 * float((raw - q_lo) / (q_hi - q_lo)) - 1.0))

    def state_dict(self) -> dict[str, Any]:
        return {"rewards": [float(r) for r in self.rewards]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rewards = deque((float(r) for r in state["rewards"]), maxlen=self.window)


class BanditSampler(_Base):
    """Automated curriculum (Graves et al. 2017): each step a bandit ``policy`` picks one arm
    and the global batch is drawn uniformly, without repeats, from that arm's rows; the caller
    then reports a raw reward through :meth:`feedback`.

    ``arms[i]`` holds the training rows (indices) of arm ``i`` (non-empty; arms may overlap);
    the base ``pool`` is their sorted union. Arm choice uses the sampler's own generator, which
    is the same on every rank, so all ranks train on the same arm and take disjoint blocks of
    one global batch. Exp3S: ``u = rng.random()`` and the arm is the first ``i`` with
    ``cumsum(pi)_i > u``; Thompson: ``policy.choose(rng)``. Then ``rng`` draws the rows.

    The state adds the policy's, the scaler's and the last arm (``-1`` before the first batch).
    """

    def __init__(
        self,
        arms: list[np.ndarray],
        policy: Exp3S | Thompson,
        scaler: RewardScaler,
        batch_size,
        *,
        seed,
        rank=0,
        world_size=1,
        names: list[str] | None = None,
    ):
        rows = []
        for i, arm in enumerate(arms):
            arm = np.asarray(arm)
            if arm.ndim != 1 or len(arm) == 0 or not np.issubdtype(arm.dtype, np.integer):
                raise ValueError(
                    f"arm {i} must be a non-empty 1-d integer array of rows, got shape "
                    f"{arm.shape} and dtype {arm.dtype}"
                )
            rows.append(arm)
        if not rows:
            raise ValueError("a bandit needs at least one arm")
        if policy.arms != len(rows):
            raise ValueError(f"the policy has {policy.arms} arms but {len(rows)} were given")
        names = [f"arm{i}" for i in range(len(rows))] if names is None else list(names)
        if len(names) != len(rows):
            raise ValueError(f"need one name per arm ({len(rows)}), got {len(names)}")
        super().__init__(
            np.unique(np.concatenate(rows)),
            batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.arms, self.policy, self.scaler, self.names = rows, policy, scaler, names
        self.arm: int | None = None

    def arm_rows(self, arm: int) -> np.ndarray:
        return self.arms[_check_arm(arm, len(self.arms))]

    def probabilities(self) -> np.ndarray:
        """The probability of each arm for the next batch (Thompson: a Monte Carlo estimate
        seeded by ``[seed, step, 0xB4D1]``, so it is the same on every rank and after resume)."""
        if isinstance(self.policy, Thompson):
            return self.policy.probabilities(seed=[self.seed, self.step, 0xB4D1])
        return self.policy.probabilities()

    def _choose(self) -> int:
        if isinstance(self.policy, Thompson):
            return self.policy.choose(self._rng)
        u = self._rng.random()
        cumulative = np.cumsum(self.policy.probabilities())
        return min(int(np.searchsorted(cumulative, u, side="right")), len(self.arms) - 1)

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        self.arm = self._choose()
        rows = self.arms[self.arm]
        picks = self._draw(len(rows), self.global_batch)
        self.step += 1
        return Batch(self._shard(rows[picks]))

    def feedback(self, raw_reward: float) -> float:
        """Rescale ``raw_reward`` (earned by the last batch's arm), update the policy with it and
        return the rescaled reward. Every rank must feed back the same value."""
        if self.arm is None:
            raise RuntimeError("feedback() needs a batch first: call next_batch()")
        reward = self.scaler(raw_reward)
        self.policy.update(self.arm, reward)
        return reward

    def _extra_state(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "scaler": self.scaler.state_dict(),
            "arm": -1 if self.arm is None else int(self.arm),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.scaler.load_state_dict(state["scaler"])
        self.arm = None if int(state["arm"]) < 0 else int(state["arm"])


def bucket_arms(pool: np.ndarray, difficulty: np.ndarray, buckets: int) -> list[np.ndarray]:
    """Split ``pool`` (indices into ``difficulty``) into ``buckets`` arms by difficulty quantile,
    easiest first: the pool is sorted by difficulty (stable: ties keep pool order) and cut with
    ``np.array_split`` into ``buckets`` consecutive parts whose sizes differ by at most one (the
    larger parts first)."""
    pool = np.asarray(pool)
    if not 1 <= buckets <= len(pool):
        raise ValueError(f"buckets must be in [1, {len(pool)}] (the pool size), got {buckets}")
    order = pool[np.argsort(np.asarray(difficulty)[pool], kind="stable")]
    return np.array_split(order, buckets)


def source_arms(pool: np.ndarray, codes: np.ndarray, n_sources: int) -> list[np.ndarray]:
    """For each source ``s`` in ``0..n_sources-1``, the rows of ``pool`` whose ``codes[row] ==
    s`` (in pool order). A source may have no rows: the caller decides what that means."""
    pool = np.asarray(pool)
    pool_codes = np.asarray(codes)[pool]
    bad = (pool_codes < 0) | (pool_codes >= n_sources)
    if bad.any():
        raise ValueError(
            f"source codes must be in [0, {n_sources}), got {pool_codes[bad][0]} for row "
            f"{pool[bad][0]}"
        )
    return [pool[pool_codes == s] for s in range(n_sources)]
