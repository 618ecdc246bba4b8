"""Batch samplers: which examples each step trains on.

Every sampler draws a *global* batch (``batch_size * world_size`` examples, no repeats) from
its own generator, seeded identically on every rank, and hands rank ``r`` the ``r``-th block:
ranks are disjoint and together see exactly what one worker with the global batch would. The
generator state and position live in ``state_dict()`` (never the global NumPy RNG), so a
resumed or PBT-copied trial continues the same sequence.

Samplers that look at the student (importance, RHO) take a ``scorer``: a function from example
indices to the student's current per-example loss (computed by the caller, without gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from trainables.curriculum._pacing import Pacing

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Batch:
    """This rank's example indices and optional per-example loss weights (``None``: all 1)."""

    indices: np.ndarray
    weights: np.ndarray | None = None


class Sampler(Protocol):
    step: int

    def next_batch(self, scorer: Scorer | None = None) -> Batch: ...

    @property
    def fraction(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class _Base:
    """Shared machinery: generator, position, rank sharding, state."""

    fraction = 1.0

    def __init__(self, pool: np.ndarray, batch_size: int, *, seed: int, rank: int, world_size: int):
        pool = np.asarray(pool)
        if pool.ndim != 1 or len(pool) == 0:
            raise ValueError("the example pool must be a non-empty 1-d array of indices")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}"
            )
        self.pool, self.batch_size, self.seed = pool, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.step = 0
        # Same stream on every rank (no rank in the seed): ranks slice one global draw.
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xC0DE])))

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def _shard(self, items: np.ndarray) -> np.ndarray:
        """This rank's block of a global array (blocks may be shorter when items run short)."""
        per_rank = math.ceil(len(items) / self.world_size)
        return items[self.rank * per_rank : (self.rank + 1) * per_rank]

    def _draw(self, population: int, size: int) -> np.ndarray:
        """``size`` distinct positions in ``[0, population)``, in the generator's order."""
        return self._rng.choice(population, size=min(size, population), replace=False)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rng": self._rng.bit_generator.state, **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self._rng.bit_generator.state = state["rng"]
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass


class ShuffleSampler(_Base):
    """No curriculum: a fresh seeded permutation of the pool every epoch, consumed in whole
    global batches (the last ``n mod global_batch`` examples of each permutation are left for
    that epoch, like ``DistributedSampler(drop_last=True)``; a pool smaller than one global
    batch is used whole every step).

    Within an epoch the ranks together visit distinct examples. The permutation is a function
    of (seed, epoch) alone.
    """

    def __init__(self, pool, batch_size, *, seed, rank=0, world_size=1):
        super().__init__(pool, batch_size, seed=seed, rank=rank, world_size=world_size)
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:  # one O(n) shuffle per epoch, cached
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._perm = epoch, self.pool[rng.permutation(len(self.pool))]
        return self._perm

    @property
    def batches_per_epoch(self) -> int:
        return max(1, len(self.pool) // self.global_batch)

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        epoch, position = divmod(self.step, self.batches_per_epoch)
        start = position * self.global_batch
        self.step += 1
        return Batch(self._shard(self._permutation(epoch)[start : start + self.global_batch]))


class PacedSampler(_Base):
    """Curriculum by pacing (Wu et al. 2021; Hacohen & Weinshall 2019): each step draws the
    global batch uniformly, without repeats, from the first ``ceil(c(p) * n)`` examples of
    ``order``, where ``c`` is the pacing function and ``p = step / total_steps``.

    ``order`` decides the curriculum: easiest first (curriculum), hardest first
    (anti-curriculum) or a random permutation (the control arm with the same pacing).
    """

    def __init__(
        self, order, pacing: Pacing, batch_size, *, total_steps, seed, rank=0, world_size=1
    ):
        super().__init__(order, batch_size, seed=seed, rank=rank, world_size=world_size)
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.pacing, self.total_steps = pacing, total_steps

    @property
    def fraction(self) -> float:
        return self.pacing(min(1.0, self.step / self.total_steps))

    def allowed(self) -> int:
        """How many of the first examples of the order are available now."""
        # The epsilon keeps float noise (0.3 * 10 = 3.0000000000000004) from adding one.
        return max(1, math.ceil(self.fraction * len(self.pool) - 1e-9))

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        picks = self._draw(self.allowed(), self.global_batch)
        self.step += 1
        return Batch(self._shard(self.pool[picks]))


class ConfidenceSampler(_Base):
    """Confidence-based sampling, adapted to the student.

    A candidate pool of ``pool_factor * batch`` examples is drawn uniformly; the batch is drawn
    from it without repeats with probability proportional to ``c_i^beta``, ``c_i`` the teacher's
    probability of the true label. The tempering exponent ``beta = beta_max * (1 - s)`` follows
    the student: ``s`` is an exponential moving average of the student's own confidence on its
    training batches (fed back through :meth:`observe`). A student that is unsure (``s`` near
    0) gets mostly easy, confidently-taught examples; as it grows confident, sampling tends to
    uniform. This implements the "confidence-based sampling: dynamic, based on the student's
    prediction confidence" strategy of the distillation-curriculum guide in ``references/``.
    Selection uses the Gumbel-top-k trick (sampling without replacement, Kool et al. 2019).
    """

    def __init__(
        self, pool, teacher_confidence: np.ndarray, batch_size, *, seed, beta_max: float = 4.0,
        pool_factor: int = 4, ema: float = 0.9, rank=0, world_size=1,
    ):  # fmt: skip
        super().__init__(pool, batch_size, seed=seed, rank=rank, world_size=world_size)
        if beta_max < 0 or pool_factor < 1 or not 0.0 <= ema < 1.0:
            raise ValueError("need beta_max >= 0, pool_factor >= 1 and 0 <= ema < 1")
        self.log_conf = np.log(
            np.clip(np.asarray(teacher_confidence, dtype=np.float64), 1e-12, 1.0)
        )
        self.beta_max, self.pool_factor, self.ema = beta_max, pool_factor, ema
        self.student_confidence = 0.0

    @property
    def beta(self) -> float:
        return self.beta_max * (1.0 - self.student_confidence)

    def observe(self, student_confidence: float) -> None:
        """Feed back the student's mean probability of the true label on its last batch."""
        self.student_confidence = (
            self.ema * self.student_confidence + (1 - self.ema) * student_confidence
        )

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        candidates = self.pool[self._draw(len(self.pool), self.pool_factor * self.global_batch)]
        gumbel = self._rng.gumbel(size=len(candidates))  # drawn for all ranks: same stream
        mine, noise = self._shard(candidates), self._shard(gumbel)
        keys = self.beta * self.log_conf[mine] + noise
        take = min(self.batch_size, len(mine))
        self.step += 1
        return Batch(mine[np.argsort(-keys, kind="stable")[:take]])

    def _extra_state(self) -> dict[str, Any]:
        return {"student_confidence": self.student_confidence}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.student_confidence = float(state["student_confidence"])


class ImportanceSampler(_Base):
    """Loss-proportional importance sampling with presampling (Katharopoulos & Fleuret 2018).

    A candidate pool of ``pool_factor * batch`` examples is drawn uniformly and scored by the
    student; the batch is drawn from it with replacement with probability ``q_i`` proportional
    to ``loss_i + smoothing * mean(loss)``, and each example carries the weight
    ``1 / (K q_i)`` (``K`` the pool size) so the weighted loss is an unbiased estimate of the
    pool's mean loss.
    """

    def __init__(
        self,
        pool,
        batch_size,
        *,
        seed,
        pool_factor: int = 4,
        smoothing: float = 0.1,
        rank=0,
        world_size=1,
    ):
        super().__init__(pool, batch_size, seed=seed, rank=rank, world_size=world_size)
        if pool_factor < 1 or smoothing < 0:
            raise ValueError("need pool_factor >= 1 and smoothing >= 0")
        self.pool_factor, self.smoothing = pool_factor, smoothing

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        if scorer is None:
            raise ValueError("ImportanceSampler needs a scorer (the student's per-example loss)")
        candidates = self.pool[self._draw(len(self.pool), self.pool_factor * self.global_batch)]
        uniforms = self._rng.random(self.global_batch)  # drawn for all ranks: same stream
        mine, u = self._shard(candidates), self._shard(uniforms)
        losses = np.asarray(scorer(mine), dtype=np.float64)
        q = importance_probabilities(losses, self.smoothing)
        picks = np.minimum(np.searchsorted(np.cumsum(q), u, side="right"), len(mine) - 1)
        self.step += 1
        return Batch(mine[picks], weights=1.0 / (len(mine) * q[picks]))


def importance_probabilities(losses: np.ndarray, smoothing: float) -> np.ndarray:
    """``q_i = (l_i + smoothing * mean(l)) / sum_j (l_j + smoothing * mean(l))``; uniform when all
    losses are zero."""
    scores = np.maximum(losses, 0.0) + smoothing * max(float(np.mean(losses)), 0.0)
    total = scores.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(len(losses), 1.0 / len(losses))
    return scores / total


class RhoSampler(_Base):
    """RHO-LOSS selection (Mindermann et al. 2022): from ``pool_factor * batch`` uniformly drawn
    candidates, train on the ``batch`` with the highest reducible loss, i.e. the student's
    current loss minus an *irreducible* loss from a model fit on held-out data."""

    def __init__(
        self,
        pool,
        irreducible_loss: np.ndarray,
        batch_size,
        *,
        seed,
        pool_factor: int = 10,
        rank=0,
        world_size=1,
    ):
        super().__init__(pool, batch_size, seed=seed, rank=rank, world_size=world_size)
        if pool_factor < 1:
            raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
        self.irreducible = np.asarray(irreducible_loss, dtype=np.float64)
        self.pool_factor = pool_factor

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        if scorer is None:
            raise ValueError("RhoSampler needs a scorer (the student's per-example loss)")
        candidates = self.pool[self._draw(len(self.pool), self.pool_factor * self.global_batch)]
        mine = self._shard(candidates)
        picks = rho_select(np.asarray(scorer(mine)), self.irreducible[mine], self.batch_size)
        self.step += 1
        return Batch(mine[picks])


def rho_select(train_loss: np.ndarray, irreducible_loss: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest reducible losses ``train_loss - irreducible_loss``, largest
    first (ties: lower position first)."""
    reducible = np.asarray(train_loss, dtype=np.float64) - np.asarray(
        irreducible_loss, dtype=np.float64
    )
    return np.argsort(-reducible, kind="stable")[:k]


class BandSampler(_Base):
    """Multi-stage distillation: uniform draws (no repeats) from the examples whose difficulty
    rank lies in the current stage's band ``[low, high]``; the stage is set by the caller."""

    def __init__(
        self, order, bands: list[tuple[float, float]], batch_size, *, seed, rank=0, world_size=1
    ):
        super().__init__(order, batch_size, seed=seed, rank=rank, world_size=world_size)
        n = len(self.pool)
        self.slices = []
        for low, high in bands:
            if not 0.0 <= low < high <= 1.0:
                raise ValueError(f"a band must satisfy 0 <= low < high <= 1, got [{low}, {high}]")
            lo = min(math.floor(low * n), n - 1)
            self.slices.append((lo, max(lo + 1, math.ceil(high * n - 1e-9))))
        self.stage = 0

    @property
    def fraction(self) -> float:
        lo, hi = self.slices[self.stage]
        return (hi - lo) / len(self.pool)

    def set_stage(self, stage: int) -> None:
        if not 0 <= stage < len(self.slices):
            raise ValueError(f"stage must be in [0, {len(self.slices)}), got {stage}")
        self.stage = stage

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        lo, hi = self.slices[self.stage]
        picks = lo + self._draw(hi - lo, self.global_batch)
        self.step += 1
        return Batch(self._shard(self.pool[picks]))

    def _extra_state(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])


def prune(pool_scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices kept after dropping the ``fraction`` of examples with the lowest scores (the
    easiest, or the least forgotten), in increasing index order (Paul et al. 2021; Toneva et al.
    2019)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(pool_scores)
    drop = math.floor(fraction * n)
    if drop == 0:
        return np.arange(n)
    order = np.argsort(np.asarray(pool_scores), kind="stable")
    return np.sort(order[drop:])
