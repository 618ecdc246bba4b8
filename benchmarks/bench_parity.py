"""Progressive distillation on (50, 4) sparse parity: the qualitative result of Panigrahi et al.
(2024) on this CPU, through the product's own paths.

1. ``python -m search``'s path (``run_sweep``) on ``examples/sparse_parity_progressive.yaml``:
   trains the teacher once into the bank (one hidden layer of 1024, SGD; its accuracy jumps from
   ~0.5 to ~1.0 in a few hundred steps, detected as its phase transition), then 16 Optuna
   trials over checkpoint schedules and temperature (student seed 0).
2. The four arms of the paper, each on five fresh seeds (1-5) from the same bank: labels only,
   one-shot (final teacher), lockstep (every 250th checkpoint, in step with the student) and
   two-shot (the detected transition checkpoint for the first 10% of the run, then final), all
   with the paper's loss at T = 0.01 (near-hard teacher labels), and the sweep's best schedule
   re-run on the same five seeds.

Records the median steps to 95% validation accuracy (budget 20,000; never reached counts as
20,250) of each arm over one-shot's: ``parity_lockstep_over_oneshot_steps``,
``parity_twoshot_over_oneshot_steps`` (targets <= 0.5), ``parity_searched_over_oneshot_steps``
(target <= 0.35), and ``parity_labels_over_oneshot_steps`` for reference.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _record import record  # noqa: E402

from analysis import best_schedules, load_trials  # noqa: E402
from search.spec import load_spec  # noqa: E402
from search.sweep import run_sweep  # noqa: E402
from search.teacher import teacher_key  # noqa: E402
from trainables.config import StudentConfig  # noqa: E402
from trainables.loops import student_loop  # noqa: E402

SEEDS = (1, 2, 3, 4, 5)
SPEC = HERE.parent / "examples" / "sparse_parity_progressive.yaml"
HARD = {"loss": "progressive", "temperature": 0.01, "alpha": 0.0}
ARMS = {
    "labels": {"distill": {"loss": "progressive", "temperature": 1.0, "alpha": 1.0}},
    "oneshot": {"distill": HARD, "teacher_schedule": {"kind": "final"}},
    "lockstep": {"distill": HARD, "teacher_schedule": {"kind": "lockstep"}},
    "twoshot": {
        "distill": HARD,
        "teacher_schedule": {"kind": "two_shot", "checkpoint": "transition", "switch_at": 0.1},
    },
}  # fmt: skip


def steps_to_target(config: dict) -> int:
    *_, (last, _) = student_loop(StudentConfig.model_validate(config))
    return last["steps_to_target_capped"]


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage:
        spec = load_spec(SPEC, [f"storage={storage}", "name=bench"])
        results = run_sweep(spec)
        bank = str(Path(storage).resolve() / "_teachers" / teacher_key(spec))
        best = best_schedules(
            load_trials(results), metric="steps_to_target_capped", mode="min", top=1
        )
        best_id = best.loc[0, "trial_id"]
        trials = load_trials(results).to_pandas().set_index("trial_id")
        base = spec.student_config(bank).model_dump()
        searched = json.loads(
            Path(
                next(Path(results, "tune", "students").glob(f"*{best_id}*/params.json"))
            ).read_text()
        )
        arms = {**ARMS, "searched": searched}
        jobs = {
            (arm, seed): _merge(base, {**override, "seed": seed})
            for arm, override in arms.items()
            for seed in SEEDS
        }
        with ProcessPoolExecutor(max_workers=2) as pool:
            done = dict(zip(jobs, pool.map(steps_to_target, jobs.values()), strict=True))
    medians = {arm: statistics.median(done[(arm, s)] for s in SEEDS) for arm in arms}
    for arm in arms:
        print(f"{arm:>9}: {[done[(arm, s)] for s in SEEDS]} median {medians[arm]}")
    print(
        f"searched schedule ({best_id}, "
        f"{trials.loc[best_id, 'steps_to_target_capped']} steps in the sweep): {searched}"
    )
    wall = time.perf_counter() - started
    print(f"total {wall:.0f} s")
    record("parity_bench_wall_s", wall, "s", "the whole script on 2 cores; target <= 600")
    one = medians["oneshot"]
    for arm, key in [
        ("lockstep", "lockstep"),
        ("twoshot", "twoshot"),
        ("searched", "searched"),
        ("labels", "labels"),
    ]:
        record(
            f"parity_{key}_over_oneshot_steps", medians[arm] / one, "ratio",
            f"median steps to 95%: {medians[arm]:.0f} vs one-shot {one:.0f} (seeds 1-5)",
        )  # fmt: skip


if __name__ == "__main__":
    main()
