"""Analysis at scale: a sweep of 10,000 trials and 1,000,000 curve rows, written by the sweep's
own writer (:class:`search.sink.ParquetSink`, driven with stand-in trials: 100 reports each,
then the trial's end), so the directory holds what a real sweep's does: while it runs, per table
the merged files of its full segments of 64 files (merged again 8 at a time) and the latest
segment's loose files; once it ends, one file per table.

- ``best_schedules_10k_trials_s``: seconds to load both tables of the finished sweep from
  disk and answer ``best_schedules`` (top 5 per curriculum kind). Target <= 2.
- ``best_schedules_10k_trials_running_s``: the same while the sweep still runs (every trial
  ended, the experiment not: the sink's last segment of each table not yet compacted).
  Target <= 2.
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
from search.sink import ParquetSink  # noqa: E402
from trainables.config import StudentConfig  # noqa: E402

TRIALS, CURVE_ROWS = 10_000, 1_000_000
KINDS = ["none", "paced", "confidence", "self_paced", "focal", "importance", "rho", "staged"]


class _Trial:  # stand-in for ray.tune.experiment.Trial: what the sink reads
    def __init__(self, trial_id: str, config: dict, last_result: dict) -> None:
        self.trial_id, self.config, self.last_result = trial_id, config, last_result
        self.error_file = None


def write_sweep(root: Path) -> ParquetSink:
    """Every trial reported and ended through the sink; the experiment not yet ended."""
    rng = np.random.default_rng(0)
    configs = {k: StudentConfig(curriculum={"kind": k}).model_dump() for k in KINDS}
    sink = ParquetSink(root, "big", StudentConfig)
    sink.setup()
    per_trial = CURVE_ROWS // TRIALS
    for i in range(TRIALS):
        acc = rng.normal(0.9, 0.03, 3).clip(0, 1)
        config = configs[KINDS[i % len(KINDS)]]
        config = {**config, "distill": {**config["distill"], "temperature": rng.uniform(1, 8)}}
        last = {
            "step": per_trial * 10, "val_accuracy": float(acc.mean()),
            "test_accuracy": float(acc.mean() - 0.01),
            "test_accuracy_seeds": [float(a - 0.01) for a in acc], "repeats": 3,
        }  # fmt: skip
        trial = _Trial(f"t{i:05d}", config, last)
        for value, step in zip(rng.uniform(0.5, 1.0, per_trial), range(per_trial), strict=True):
            sink.on_trial_result(0, [], trial, {"step": (step + 1) * 10, "val_accuracy": value})
        sink.on_trial_complete(0, [], trial)
    return sink


def _files(root: Path) -> str:
    return ", ".join(f"{t} {len(list((root / t).glob('*.parquet')))}" for t in ("trials", "curves"))


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
        sink = write_sweep(root)
        written_s = time.perf_counter() - started
        print(f"the sink wrote {TRIALS} trials and {CURVE_ROWS} curve rows in {written_s:.0f} s")
        print(f"running sweep's files: {_files(root)}")
        running, _ = _query(root)
        sink.on_experiment_end([])
        print(f"finished sweep's files: {_files(root)}")
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
        "the same while the sweep runs (the sink merging every 64 files, then 8 merged files "
        "into one; its latest segments loose); target <= 2",
    )  # fmt: skip
    record("compare_10k_trials_s", compare_s, "s", "8 arms, 30k seeds, 10k bootstrap resamples")


if __name__ == "__main__":
    main()
