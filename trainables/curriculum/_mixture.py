"""Data mixtures: each global batch is split among data *sources* by a schedule of source
probabilities that may change during the run.

- Temperature sampling ``p_s ∝ n_s^(1/tau)`` over source sizes ``n_s`` (Arivazhagan et al.
  2019, "Massively Multilingual Neural Machine Translation in the Wild"; Conneau & Lample 2019,
  XLM, write it with ``alpha = 1 / tau``): ``tau = 1`` samples in proportion to size, larger
  ``tau`` flattens towards uniform.
- Staged and annealed mixes: piecewise-constant stages (e.g. DeepSeek-V3's multi-stage data
  mix) and a linear move from one mix to another (e.g. the annealing phase of Llama 3).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from trainables.curriculum._samplers import Batch, Scorer, _Base

MixtureKind = Literal["constant", "stages", "linear", "temperature"]


def _normalised(name: str, weights: Sequence[float]) -> tuple[float, ...]:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {list(weights)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(
            f"{name} must be finite and non-negative with at least one positive, got {w.tolist()}"
        )
    return tuple((w / w.sum()).tolist())


@dataclass(frozen=True)
class MixtureSchedule:
    """Source probabilities as a function of progress ``p`` in ``[0, 1]`` (clamped), built by
    one of the constructors:

    - :meth:`constant`: ``p -> normalise(weights)``;
    - :meth:`stages`: ``p -> normalise(weights[j])`` for the last stage ``j`` with ``at[j] <= p``
      (``at[0] = 0``, increasing, in ``[0, 1)``);
    - :meth:`linear`: ``p -> normalise((1 - p) start_n + p end_n)``, ``start_n`` and ``end_n`` the
      normalised ``start`` and ``end``;
    - :meth:`temperature`: ``p -> normalise(counts^(1 / tau(p)))`` with ``tau(p) = tau_start + p
      (tau_end - tau_start)``; a source with 0 rows gets probability 0.

    Weights must be finite, non-negative, with at least one positive per stage; they are stored
    normalised. Returns float64 probabilities summing to 1.
    """

    kind: MixtureKind
    weights: tuple[tuple[float, ...], ...] = ()
    at: tuple[float, ...] = (0.0,)
    counts: tuple[float, ...] = ()
    tau: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.kind == "temperature":
            counts = np.asarray(self.counts, dtype=np.float64)
            if counts.ndim != 1 or len(counts) == 0:
                raise ValueError(f"counts must be a non-empty list, got {list(self.counts)}")
            if not np.all(np.isfinite(counts)) or np.any(counts < 0) or not np.any(counts > 0):
                raise ValueError(
                    f"counts must be finite and >= 0 with at least one positive, got "
                    f"{counts.tolist()}"
                )
            for name, tau in zip(("tau_start", "tau_end"), self.tau, strict=True):
                if not (math.isfinite(tau) and tau > 0):
                    raise ValueError(f"{name} must be a finite number > 0, got {tau}")
            object.__setattr__(self, "counts", tuple(counts.tolist()))
            object.__setattr__(self, "tau", (float(self.tau[0]), float(self.tau[1])))
            return
        if self.kind not in ("constant", "stages", "linear"):
            raise ValueError(
                f"kind must be constant, stages, linear or temperature; got {self.kind!r}"
            )
        rows = tuple(_normalised(f"weights[{j}]", w) for j, w in enumerate(self.weights))
        expected = {"constant": 1, "linear": 2}.get(self.kind, len(self.at))
        if len(rows) != expected or not rows:
            raise ValueError(
                f"a {self.kind} schedule needs {expected} weight lists, got {len(rows)}"
            )
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"every weight list needs the same number of sources, got {rows}")
        at = tuple(float(a) for a in self.at)
        if (
            self.kind == "stages"
            and (
                at[0] != 0.0
                or not all(0.0 <= a < 1.0 for a in at)  # also rejects NaN
                or any(b <= a for a, b in zip(at, at[1:], strict=False))
            )
        ):
            raise ValueError(f"at must start at 0 and increase within [0, 1), got {list(at)}")
        object.__setattr__(self, "weights", rows)
        object.__setattr__(self, "at", at)

    @classmethod
    def constant(cls, weights: Sequence[float]) -> MixtureSchedule:
        return cls("constant", weights=(tuple(weights),))

    @classmethod
    def stages(cls, at: Sequence[float], weights: Sequence[Sequence[float]]) -> MixtureSchedule:
        return cls("stages", weights=tuple(tuple(w) for w in weights), at=tuple(at))

    @classmethod
    def linear(cls, start: Sequence[float], end: Sequence[float]) -> MixtureSchedule:
        return cls("linear", weights=(tuple(start), tuple(end)))

    @classmethod
    def temperature(
        cls, counts: Sequence[float], tau_start: float, tau_end: float
    ) -> MixtureSchedule:
        return cls("temperature", counts=tuple(counts), tau=(tau_start, tau_end))

    @property
    def n_sources(self) -> int:
        return len(self.counts) if self.kind == "temperature" else len(self.weights[0])

    def __call__(self, progress: float) -> np.ndarray:
        p = min(1.0, max(0.0, float(progress)))
        if self.kind == "constant":
            out = np.array(self.weights[0])
        elif self.kind == "stages":
            out = np.array(self.weights[bisect.bisect_right(self.at, p) - 1])
        elif self.kind == "linear":
            out = (1.0 - p) * np.array(self.weights[0]) + p * np.array(self.weights[1])
        else:  # temperature, in log-space: counts^(1/tau) overflows for small tau
            tau = self.tau[0] + p * (self.tau[1] - self.tau[0])
            counts = np.array(self.counts)
            logits = np.full(len(counts), -np.inf)
            logits[counts > 0] = np.log(counts[counts > 0]) / tau
            out = np.exp(logits - logits.max())
        return out / out.sum()


class MixtureSampler(_Base):
    """Each global batch is split among ``sources`` (disjoint arrays of training rows; a source
    may be empty) by the probabilities ``p = schedule(step / total_steps)``.

    Per step, from the sampler's generator (the same on every rank): ``p`` with empty sources
    set to 0 and renormalised; ``counts = rng.multinomial(global_batch, p)``; each count capped
    at its source's size, and the shortfall given, deterministically, to the sources with
    ``p > 0`` and rows to spare, in order of decreasing ``p`` (ties: lower index first); then,
    for each source in index order with a non-zero count, that many of its rows without repeats
    (``_draw``); the concatenation is shuffled with ``rng.permutation`` and sharded. A batch is
    short only when the sources with ``p > 0`` hold fewer rows than the global batch, and a
    source with ``p = 0`` never appears.
    """

    def __init__(
        self,
        sources: list[np.ndarray],
        schedule: MixtureSchedule,
        batch_size,
        *,
        total_steps,
        seed,
        rank=0,
        world_size=1,
        names: list[str] | None = None,
    ):
        rows = []
        for s, source in enumerate(sources):
            source = np.asarray(source)
            if len(source) == 0:
                source = source.astype(np.int64)
            if source.ndim != 1 or not np.issubdtype(source.dtype, np.integer):
                raise ValueError(
                    f"source {s} must be a 1-d integer array of rows, got shape {source.shape} "
                    f"and dtype {source.dtype}"
                )
            rows.append(source)
        if schedule.n_sources != len(rows):
            raise ValueError(
                f"the schedule has {schedule.n_sources} sources but {len(rows)} were given"
            )
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        names = [f"source{s}" for s in range(len(rows))] if names is None else list(names)
        if len(names) != len(rows):
            raise ValueError(f"need one name per source ({len(rows)}), got {len(names)}")
        everything = np.concatenate(rows)
        pool = np.unique(everything)
        if len(pool) != len(everything):
            raise ValueError("sources must be disjoint: a row appears in more than one source")
        super().__init__(pool, batch_size, seed=seed, rank=rank, world_size=world_size)
        self.sources, self.schedule, self.names = rows, schedule, names
        self.total_steps = total_steps
        self.sizes = np.array([len(r) for r in rows])
        self._probabilities_at(0)  # fail now if progress 0 leaves only empty sources

    def _probabilities_at(self, step: int) -> np.ndarray:
        p = self.schedule(min(1.0, step / self.total_steps))
        p = np.where(self.sizes > 0, p, 0.0)
        if not p.sum() > 0:
            raise ValueError(
                f"at step {step} the mixture gives all its probability to empty sources "
                f"(sizes {self.sizes.tolist()}, names {self.names})"
            )
        return p / p.sum()

    def probabilities(self) -> np.ndarray:
        """The source probabilities the next batch is drawn with (empty sources at 0)."""
        return self._probabilities_at(self.step)

    def next_batch(self, scorer: Scorer | None = None) -> Batch:
        p = self.probabilities()
        take = np.minimum(self._rng.multinomial(self.global_batch, p), self.sizes)
        shortfall = self.global_batch - int(take.sum())
        for s in np.argsort(-p, kind="stable"):
            if shortfall == 0 or p[s] == 0:
                break
            extra = min(shortfall, int(self.sizes[s] - take[s]))
            take[s] += extra
            shortfall -= extra
        parts = [
            self.sources[s][self._draw(len(self.sources[s]), int(k))]
            for s, k in enumerate(take)
            if k > 0
        ]
        batch = np.concatenate(parts)
        batch = batch[self._rng.permutation(len(batch))]
        self.step += 1
        return Batch(self._shard(batch))
