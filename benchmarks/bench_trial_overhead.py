"""What running a student inside a Ray Tune trial costs, against the same loop run directly.

Side by side in one run: the student loop alone (no Ray) and the same configuration as Tune
trials (inline single-worker path, reused actors) on embedded local Ray. Prints and records:

- ``student_steps_per_s``: student training throughput of the bare loop.
- ``tune_trial_over_direct_time``: wall time per trial in a sequential Tune sweep / wall time of
  the bare loop (1.0 = no overhead).
- ``final_checkpoint_over_none_trial_time``: wall time per trial saving the student with its
  last report (``checkpoint.final``, the default) / per trial saving nothing; and
  ``every_checkpoint_over_none_trial_time`` saving with every report (``checkpoint.every:
  1``, what PBT needs). Sweeps alternated, the best of two each.
- ``final_checkpoint_kb_per_trial``: what the default checkpoint costs on disk per trial
  (``state.pt`` and ``student.json`` of this digits MLP [32]; the optimiser's state included).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402
from _record import record  # noqa: E402
from ray import tune  # noqa: E402

from trainables.bank import teacher_bank  # noqa: E402
from trainables.config import OptimConfig, StudentConfig, TeacherConfig  # noqa: E402
from trainables.loops import student_loop  # noqa: E402
from trainables.student import train_student  # noqa: E402

TRIALS, STEPS = 6, 600


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "teacher"
        teacher_bank(
            TeacherConfig(optim=OptimConfig(lr=1e-3, batch_size=64, steps=300)), teacher,
            progress=lambda line: None,
        )  # fmt: skip
        cfg = StudentConfig(
            optim=OptimConfig(steps=STEPS), eval_every=100, teacher_bank=str(teacher)
        )
        for _ in student_loop(cfg):  # warm-up: imports, data load, allocator
            pass
        direct = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in student_loop(cfg):
                pass
            direct.append(time.perf_counter() - started)
        direct_s = min(direct)

        ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")
        per_trial = {"final": [], "none": [], "every": []}
        for _ in range(2):
            for kind, checkpoint in [
                ("final", {}), ("none", {"final": False}), ("every", {"every": 1})
            ]:  # fmt: skip
                per_trial[kind].append(_sweep(cfg, checkpoint, Path(tmp) / f"tune-{kind}"))
        ray.shutdown()
        checkpoint_kb = _checkpoint_kb(Path(tmp) / "tune-final")
    per_trial_s = min(per_trial["final"])
    none_s, every_s = min(per_trial["none"]), min(per_trial["every"])

    record(
        "student_steps_per_s",
        STEPS / direct_s,
        "steps/s",
        f"bare loop, {STEPS} steps, digits, MLP [32]",
    )
    record(
        "tune_trial_over_direct_time", per_trial_s / direct_s, "ratio",
        f"{TRIALS} sequential trials, reuse_actors; {per_trial_s:.2f} vs {direct_s:.2f} s per run",
    )  # fmt: skip
    record(
        "final_checkpoint_over_none_trial_time", per_trial_s / none_s, "ratio",
        f"{TRIALS} trials of {STEPS} steps, 6 reports each; {per_trial_s:.3f} vs {none_s:.3f} s",
    )  # fmt: skip
    record(
        "final_checkpoint_kb_per_trial", checkpoint_kb, "KiB",
        "the default checkpoint (last report) of a digits MLP [32] trial on disk",
    )  # fmt: skip
    record(
        "every_checkpoint_over_none_trial_time", every_s / none_s, "ratio",
        f"{TRIALS} trials of {STEPS} steps, 6 reports each; {every_s:.3f} vs {none_s:.3f} s",
    )  # fmt: skip


def _sweep(cfg: StudentConfig, checkpoint: dict, storage: Path) -> float:
    """Seconds per trial of ``TRIALS`` sequential trials of ``cfg`` saving as ``checkpoint``."""
    space = {**cfg.model_dump(), "checkpoint": {**cfg.checkpoint.model_dump(), **checkpoint}}
    tuner = tune.Tuner(
        train_student,
        param_space={**space, "seed": tune.grid_search(list(range(TRIALS)))},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    )
    started = time.perf_counter()
    tuner.fit()
    return (time.perf_counter() - started) / TRIALS


def _checkpoint_kb(storage: Path) -> float:
    """Kilobytes of checkpoint files per trial under a sweep's Tune ``storage``."""
    files = [f for f in storage.rglob("checkpoint_*/*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1024 / (2 * TRIALS)  # two sweeps of TRIALS


if __name__ == "__main__":
    main()
