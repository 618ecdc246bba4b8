"""A bandit curriculum over data sources against no curriculum and the best fixed mixture a
small search finds, on a task where half the training data is useless, through the engine's
own loops (no Ray).

Setting: scikit-learn's digits with ``noisy_source: 0.5``: half the training rows form source
``noisy`` with uniformly random labels, the rest source ``clean``; validation and test stay
clean. The teacher (MLP [256, 256], 800 steps, as in ``examples/quickstart.yaml``) trains on
the same data, noise included, and is banked once. Students: MLP [16], Adam 3e-3, batch 32,
600 steps, evaluated every ``EVAL_EVERY`` = 10 steps, KD at the default alpha 0.5 and T 1.

Arms, each on the evaluation seeds ``SEEDS``:

- ``none``: every training row uniformly (half of each batch is noise, on average);
- ``bandit``: ``curriculum.bandit.arms_column: source`` and otherwise the default
  :class:`trainables.config.BanditConfig` (Exp3.S, self prediction gain on 10% held-out rows);
  not tuned here;
- ``mixture``: constant weights ``{clean: 1, noisy: w}``, ``w`` from ``SWEEP_TRIALS`` trials
  of Optuna TPE (``w`` log-uniform in [0.01, 1], minimising the mean steps to target over
  the search seeds ``SEARCH_SEEDS``, which are not evaluation seeds), then the best ``w``
  re-run on ``SEEDS``.
- Readings, not recorded: the bandit with its other policy and rewards (``READING_ARMS``).

Figure: per arm, the median over ``SEEDS`` of ``steps_to_target_capped``: the first evaluated
step whose validation accuracy reaches ``TARGET``, or ``STEPS + EVAL_EVERY`` when never
reached. The median, not the mean, because a capped seed is a censored value (its true
steps are unknown, only > ``STEPS``), which the median tolerates while fewer than half the
seeds are capped; it also keeps one lucky or unlucky seed from moving the figure. Records
``bandit_over_uniform_steps`` (bandit / none; goal <= 0.7) and
``bandit_over_best_mixture_steps`` (bandit / best mixture; goal <= 1.2: learning the mix
online costs little against a searched one).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import optuna  # noqa: E402
import torch  # noqa: E402
from _record import record  # noqa: E402

from trainables.bank import build_bank  # noqa: E402
from trainables.config import StudentConfig, TeacherConfig  # noqa: E402
from trainables.loops import student_loop, teacher_loop  # noqa: E402

SEEDS = tuple(range(100, 110))
SEARCH_SEEDS = (0, 1)
SWEEP_TRIALS = 10
DATA = {"kind": "digits", "noisy_source": 0.5}
TEACHER = {
    "data": DATA, "model": {"hidden": [256, 256]},
    "optim": {"lr": 1e-3, "batch_size": 64, "steps": 800}, "eval_every": 25,
}  # fmt: skip
STEPS, EVAL_EVERY, TARGET = 600, 10, 0.85
STUDENT = {
    "data": DATA, "model": {"hidden": [16]},
    "optim": {"lr": 3e-3, "batch_size": 32, "steps": STEPS},
    "eval_every": EVAL_EVERY, "target_accuracy": TARGET, "device": "cpu",
}  # fmt: skip
ARMS = {
    "none": {"kind": "none"},
    "bandit": {"kind": "bandit", "bandit": {"arms_column": "source"}},
}
READING_ARMS = {
    "thompson": {"kind": "bandit", "bandit": {"arms_column": "source", "policy": "thompson"}},
    "pred_gain": {
        "kind": "bandit", "bandit": {"arms_column": "source", "reward": "prediction_gain"},
    },
    "target_gain": {
        "kind": "bandit", "bandit": {"arms_column": "source", "reward": "target_prediction_gain"},
    },
}  # fmt: skip


def mixture(w: float) -> dict:
    weights = {"clean": 1.0, "noisy": w}
    return {"kind": "mixture", "mixture": {"schedule": "constant", "weights": weights}}


def run(curriculum: dict, bank: str, seed: int) -> dict:
    """One student: its steps to target (capped), final accuracy and mean share of ``clean``."""
    config = {**STUDENT, "curriculum": curriculum, "teacher_bank": bank, "seed": seed}
    records = [rec for rec, _ in student_loop(StudentConfig.model_validate(config))]
    last = records[-1]
    clean = [
        rec["arm_probs"][rec["arm_names"].index("clean")] for rec in records if "arm_probs" in rec
    ]
    return {
        "steps": last["steps_to_target_capped"],
        "final": last["val_accuracy"],
        "clean": statistics.fmean(clean) if clean else None,
        "clean_end": clean[-1] if clean else None,
    }


def main() -> None:
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        bank = str(Path(tmp) / "bank")
        torch.set_num_threads(2)
        cfg = TeacherConfig.model_validate({**TEACHER, "output_dir": f"{bank}/teacher"})
        history = list(teacher_loop(cfg))
        build_bank(cfg, f"{bank}/teacher", bank, use_ray=False, progress=lambda line: None)
        print("teacher val accuracy:", [(r["step"], round(r["val_accuracy"], 3)) for r in history])
        torch.set_num_threads(1)  # students one at a time, one core: the machine is shared

        study = optuna.create_study(
            direction="minimize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4)
        )
        for _ in range(SWEEP_TRIALS):
            trial = study.ask()
            w = trial.suggest_float("w", 0.01, 1.0, log=True)
            steps = [run(mixture(w), bank, s)["steps"] for s in SEARCH_SEEDS]
            study.tell(trial, statistics.fmean(steps))
            print(f"  trial {trial.number}: w = {w:.4f}: steps {steps}")
        best_w = study.best_params["w"]
        print(f"sweep's best: w = {best_w:.4f} ({study.best_value:.0f} steps on seeds "
              f"{SEARCH_SEEDS})")  # fmt: skip

        arms = {**ARMS, "mixture": mixture(best_w), **READING_ARMS}
        runs = {(arm, s): run(cur, bank, s) for arm, cur in arms.items() for s in SEEDS}

    steps = {arm: [runs[(arm, s)]["steps"] for s in SEEDS] for arm in arms}
    medians = {arm: statistics.median(v) for arm, v in steps.items()}
    print(f"steps to val accuracy {TARGET} (capped at {STEPS + EVAL_EVERY}) per seed:")
    print("  seed " + " ".join(f"{arm:>11}" for arm in arms))
    for i, s in enumerate(SEEDS):
        print(f"{s:>6} " + " ".join(f"{steps[arm][i]:>11}" for arm in arms))
    print("median " + " ".join(f"{medians[arm]:>11g}" for arm in arms))
    finals = {arm: statistics.median(runs[(arm, s)]["final"] for s in SEEDS) for arm in arms}
    print(" final " + " ".join(f"{finals[arm]:>11.4f}" for arm in arms))
    for arm in arms:
        if runs[(arm, SEEDS[0])]["clean"] is not None:
            mean = statistics.median(runs[(arm, s)]["clean"] for s in SEEDS)
            end = statistics.median(runs[(arm, s)]["clean_end"] for s in SEEDS)
            print(f"{arm:>11}: P(clean), median over seeds: mean over the run {mean:.3f}, "
                  f"at the end {end:.3f}")  # fmt: skip
    wall = time.perf_counter() - started
    print(f"total {wall:.0f} s")

    bandit, none, best = medians["bandit"], medians["none"], medians["mixture"]
    setting = (
        f"digits, noisy_source 0.5; student MLP [16], {STEPS} steps, eval every {EVAL_EVERY}; "
        f"target val accuracy {TARGET}; median steps_to_target_capped over seeds "
        f"{SEEDS[0]}-{SEEDS[-1]}"
    )
    record(
        "bandit_over_uniform_steps", bandit / none, "ratio",
        f"default bandit (exp3s, self_prediction_gain, arms source) {bandit:g} vs none "
        f"{none:g}; {setting}; goal <= 0.7",
    )  # fmt: skip
    record(
        "bandit_over_best_mixture_steps", bandit / best, "ratio",
        f"default bandit {bandit:g} vs the best constant mixture {{clean: 1, noisy: "
        f"{best_w:.3f}}} {best:g} ({SWEEP_TRIALS} TPE trials over w on seeds "
        f"{SEARCH_SEEDS[0]}-{SEARCH_SEEDS[-1]}); {setting}; goal <= 1.2",
    )  # fmt: skip


if __name__ == "__main__":
    main()
