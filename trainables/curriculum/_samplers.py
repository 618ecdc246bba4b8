"""Batch samplers. Each batch is a pure function of (seed, step), so a sampler's whole state is
its position: ``load_state_dict(state_dict())`` on a fresh sampler continues the same sequence,
whatever the global RNGs do."""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from trainables.curriculum._pacing import Pacing


class Sampler(Protocol):
    def next_batch(self) -> np.ndarray: ...

    @property
    def fraction(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ShuffleSampler:
    """Uniform shuffling without a curriculum: a fresh seeded permutation every epoch."""

    fraction = 1.0

    def __init__(self, num_examples: int, batch_size: int, *, seed: int) -> None:
        if num_examples < 1 or batch_size < 1:
            raise ValueError(
                f"need num_examples >= 1 and batch_size >= 1, got {num_examples}, {batch_size}"
            )
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.step = 0

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def next_batch(self) -> np.ndarray:
        start = self.step * self.batch_size
        stop = start + self.batch_size
        first, last = start // self.num_examples, (stop - 1) // self.num_examples
        # A batch may straddle epochs (or several, when batch_size > num_examples).
        perms = np.concatenate([self._permutation(e) for e in range(first, last + 1)])
        offset = first * self.num_examples
        self.step += 1
        return perms[start - offset : stop - offset]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


class PacedSampler:
    """Curriculum sampling: each batch is drawn uniformly, without replacement, from the
    ``ceil(c(p) * n)`` easiest examples, where ``c`` is the pacing function and ``p`` the
    fraction of ``total_steps`` done (Wu et al. 2021; Hacohen & Weinshall 2019).

    Args:
        order: example indices from easiest to hardest.
        pacing: ``c(progress) -> fraction`` of the ordered data allowed.
        total_steps: the run's step budget (progress = step / total_steps).
    """

    def __init__(
        self, order: np.ndarray, pacing: Pacing, batch_size: int, *, total_steps: int, seed: int
    ) -> None:
        if batch_size < 1 or total_steps < 1 or len(order) < 1:
            raise ValueError("need a non-empty order, batch_size >= 1 and total_steps >= 1")
        self.order = np.asarray(order)
        self.pacing, self.batch_size = pacing, batch_size
        self.total_steps, self.seed = total_steps, seed
        self.step = 0

    @property
    def fraction(self) -> float:
        return self.pacing(min(1.0, self.step / self.total_steps))

    def next_batch(self) -> np.ndarray:
        # The epsilon keeps float noise (0.3 * 10 = 3.0000000000000004) from adding an example.
        allowed = max(1, math.ceil(self.fraction * len(self.order) - 1e-9))
        rng = np.random.default_rng([self.seed, self.step])
        picks = rng.choice(allowed, size=min(self.batch_size, allowed), replace=False)
        self.step += 1
        return self.order[picks]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
