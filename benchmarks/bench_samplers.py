"""Sampler cost at 10 million training examples (no training, just the index work).

Records:
- ``sampler_build_s_10m``: building the easy-first curriculum sampler from 10M difficulty
  scores through the trainable's own path (``batch_sampler``: pool, ordering) — target <= 2 s.
- ``sampler_batch_us_10m``: drawing one 256-example batch from the paced sampler at half
  the data allowed — target <= 50 us. Also recorded for the other index-only samplers
  (``sampler_batch_us_10m_<kind>``) for comparison in the same run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _record import record  # noqa: E402

from trainables.config import CurriculumConfig, PacingConfig  # noqa: E402
from trainables.distill import TeacherBank  # noqa: E402
from trainables.loops._setup import batch_sampler  # noqa: E402

N, BATCH, DRAWS = 10_000_000, 256, 20_000


def _teacher(scores: np.ndarray) -> TeacherBank:
    return TeacherBank(
        logits={},
        step=0,
        metrics={},
        history=[],
        scores={"confidence": scores, "forgetting": scores},
    )


def _per_batch_us(sampler, draws: int = DRAWS) -> float:
    for _ in range(100):  # warm-up
        sampler.next_batch()
    started = time.perf_counter()
    for _ in range(draws):
        sampler.next_batch()
    return (time.perf_counter() - started) / draws * 1e6


def main() -> None:
    scores = np.random.default_rng(0).random(N)
    teacher = _teacher(scores)
    pacing = PacingConfig(kind="step", start=0.5, full_at=1.0)  # half the data allowed throughout
    builds = []
    for _ in range(3):
        started = time.perf_counter()
        paced = batch_sampler(
            CurriculumConfig(kind="paced", pacing=pacing),
            teacher,
            batch_size=BATCH,
            total_steps=10**9,
            seed=0,
        )
        builds.append(time.perf_counter() - started)
    record(
        "sampler_build_s_10m",
        min(builds),
        "s",
        "easy-first paced sampler from 10M scores (best of 3)",
    )
    record("sampler_batch_us_10m", _per_batch_us(paced), "us", "paced, 256 of the 5M easiest")
    for kind in ("none", "staged", "confidence"):
        sampler = batch_sampler(
            CurriculumConfig(kind=kind), teacher, batch_size=BATCH, total_steps=10**9, seed=0
        )
        record(
            f"sampler_batch_us_10m_{kind}",
            _per_batch_us(sampler),
            "us",
            f"{kind} sampler, batch 256",
        )


if __name__ == "__main__":
    main()
