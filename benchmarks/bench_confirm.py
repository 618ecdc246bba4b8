"""The winner's curse, measured: how optimistic the best searched trial's own test score is
against the same configuration re-run on fresh seeds (``python -m search confirm``).

Each of ``REPS`` repetitions runs the quickstart sweep (digits, 16 searched trials of one seed,
the oneshot baseline) with its own sampler and student seed, then confirms its best trial on
validation on 5 fresh seeds. The repetitions share one teacher (built once).

- ``winners_curse_optimism``: mean over the repetitions of (the selected trial's test
  accuracy - the mean test accuracy of its confirmation seeds). Positive: the uncorrected
  best-of-many number overstates what the configuration delivers.
- ``winners_curse_val_optimism``: the same on validation, where the selection happened.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402
from _record import record  # noqa: E402

from analysis import load_confirm, load_trials  # noqa: E402
from analysis.tables import CONFIRM, read_confirm_record  # noqa: E402
from search.confirm import confirm_sweep  # noqa: E402
from search.spec import load_spec  # noqa: E402
from search.sweep import run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
REPS, TRIALS, SEEDS = 8, 16, 5


def one_repetition(storage: str, rep: int) -> tuple[float, float]:
    spec = load_spec(QUICKSTART, [
        f"storage={storage}", f"name=curse{rep}", f"seed={rep}", f"student.seed={1000 * rep}",
        f"num_samples={TRIALS}", "baselines=[oneshot]", "search.n_startup_trials=6",
    ])  # fmt: skip
    sweep = run_sweep(spec)
    confirm_sweep(sweep, top=1, seeds=SEEDS)
    (chosen,) = read_confirm_record(sweep / CONFIRM)["selected"]  # the best on validation
    trials = load_trials(sweep).to_pandas()
    searched = trials[(trials["config.arm"] == "search") & (trials["status"] == "TERMINATED")]
    best = trials.set_index("trial_id").loc[chosen["trial_id"]]
    best["trial_id"] = chosen["trial_id"]
    rows = load_confirm(sweep).to_pandas()
    mine = rows[rows["config.arm"] == f"confirm:{best['trial_id']}"]
    assert len(mine) == SEEDS, len(mine)
    test = best["test_accuracy"] - mine["test_accuracy"].mean()
    val = best["val_accuracy"] - mine["val_accuracy"].mean()
    print(
        f"rep {rep}: best of {len(searched)} on val {best['val_accuracy']:.4f}, test "
        f"{best['test_accuracy']:.4f}; confirmed on {SEEDS} fresh seeds: val "
        f"{mine['val_accuracy'].mean():.4f}, test {mine['test_accuracy'].mean():.4f}"
    )
    return float(test), float(val)


def main() -> None:
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory() as storage:
            pairs = [one_repetition(storage, rep) for rep in range(REPS)]
    finally:
        ray.shutdown()
    tests, vals = [p[0] for p in pairs], [p[1] for p in pairs]
    shown = ", ".join(f"{t:+.4f}" for t in tests)
    spread = statistics.stdev(tests) / len(tests) ** 0.5
    record(
        "winners_curse_optimism", statistics.mean(tests), "accuracy",
        f"selected trial's test accuracy minus its {SEEDS}-fresh-seed confirmation, mean of "
        f"{REPS} quickstart sweeps of {TRIALS} trials ({shown}; standard error {spread:.4f}); "
        f"{time.perf_counter() - started:.0f} s in all",
    )  # fmt: skip
    record(
        "winners_curse_val_optimism", statistics.mean(vals), "accuracy",
        "the same on validation, where the trial was selected ("
        + ", ".join(f"{v:+.4f}" for v in vals) + ")",
    )  # fmt: skip


if __name__ == "__main__":
    main()
