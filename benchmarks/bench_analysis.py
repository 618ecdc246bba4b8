"""Analysis at scale: a sweep of 10,000 trials and 1,000,000 curve rows, laid out on disk as
the sink writes it (one trials file per trial, curve parts of 2,000 rows), then compacted as
the sink does when the sweep ends.

- ``best_schedules_10k_trials_s``: seconds to load both tables of the finished (compacted)
  sweep from disk and answer ``best_schedules`` (top 5 per curriculum kind). Target <= 2.
- ``best_schedules_10k_trials_running_s``: the same while the sweep still runs (one file per
  trial, not yet compacted).
- ``compare_10k_trials_s``: seconds for ``compare`` over the loaded trials (per-kind arms,
  Welch tests, Holm).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from _record import record  # noqa: E402

from analysis import best_schedules, compare, load_curves, load_trials  # noqa: E402
from analysis.tables import (  # noqa: E402
    CURVE_SCHEMA,
    config_row,
    part_file,
    trial_file,
    trials_schema,
    write_parquet_atomic,
)
from search.sink import compact  # noqa: E402
from trainables.config import StudentConfig, settings  # noqa: E402

TRIALS, CURVE_ROWS, PART_ROWS = 10_000, 1_000_000, 2_000
KINDS = ["none", "paced", "confidence", "self_paced", "focal", "importance", "rho", "staged"]


def write_sweep(root: Path) -> None:
    rng = np.random.default_rng(0)
    schema = trials_schema(StudentConfig)
    base = config_row(settings(StudentConfig()), schema)
    (root / "trials").mkdir(parents=True)
    (root / "curves").mkdir()
    for i in range(TRIALS):
        acc = rng.normal(0.9, 0.03, 3).clip(0, 1)
        row = {name: None for name in schema.names}
        row.update(base)
        row.update({
            "sweep": "big", "trial_id": f"t{i:05d}", "status": "TERMINATED", "seed": 0,
            "config.curriculum.kind": KINDS[i % len(KINDS)], "config.arm": "search",
            "config.distill.temperature": float(rng.uniform(1, 8)),
            "val_accuracy": float(acc.mean()), "test_accuracy": float(acc.mean() - 0.01),
            "test_accuracy_seeds": [float(a - 0.01) for a in acc], "repeats": 3, "steps": 1000,
        })  # fmt: skip
        table = pa.Table.from_pylist([row], schema=schema)
        write_parquet_atomic(table, root / "trials" / trial_file("bench", f"t{i:05d}"))
    per_trial = CURVE_ROWS // TRIALS
    for part in range(CURVE_ROWS // PART_ROWS):
        index = np.arange(part * PART_ROWS, (part + 1) * PART_ROWS)
        columns = {
            "sweep": ["big"] * PART_ROWS,
            "trial_id": [f"t{i // per_trial:05d}" for i in index],
            "step": (index % per_trial + 1) * 10,
            "val_accuracy": rng.uniform(0.5, 1.0, PART_ROWS),
        }
        table = pa.table(
            {f.name: columns.get(f.name, pa.nulls(PART_ROWS, f.type)) for f in CURVE_SCHEMA},
            schema=CURVE_SCHEMA,
        )
        write_parquet_atomic(table, root / "curves" / part_file("bench", part))


def _query(root: Path) -> tuple[float, pa.Table]:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        trials, curves = load_trials(root), load_curves(root)
        best = best_schedules(trials, by="curriculum.kind", top=5)
        timings.append(time.perf_counter() - started)
    assert trials.num_rows == TRIALS and curves.num_rows == CURVE_ROWS and len(best) == 40
    return min(timings), trials


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "big"
        started = time.perf_counter()
        write_sweep(root)
        print(f"wrote {TRIALS} trial files and {CURVE_ROWS} curve rows in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        running, _ = _query(root)
        for table in ("trials", "curves"):
            compact(root / table, "bench")
        finished, trials = _query(root)
        started = time.perf_counter()
        table = compare(trials, baseline="none", by="curriculum.kind", select=None)
        compare_s = time.perf_counter() - started
        assert len(table) == len(KINDS)
    print(f"load + best_schedules: finished {finished:.2f} s, running {running:.2f} s; "
          f"compare {compare_s:.2f} s")  # fmt: skip
    record(
        "best_schedules_10k_trials_s", finished, "s",
        f"finished sweep: load {TRIALS} trials + {CURVE_ROWS} curve rows, top 5 per kind "
        "(best of 3); target <= 2",
    )  # fmt: skip
    record(
        "best_schedules_10k_trials_running_s", running, "s",
        f"the same before compaction ({TRIALS} trial files, {CURVE_ROWS // PART_ROWS} parts)",
    )  # fmt: skip
    record("compare_10k_trials_s", compare_s, "s", "8 arms, 30k seeds, 10k bootstrap resamples")


if __name__ == "__main__":
    main()
