"""compare(): the bootstrap helpers against normal theory, verdicts, selection on validation."""

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from analysis import ResultsError, bootstrap_effect_ci, bootstrap_mean_ci, compare


def test_bootstrap_mean_ci_matches_normal_theory_for_many_seeds():
    values = np.random.default_rng(1).normal(0.9, 0.02, 400)
    low, high = bootstrap_mean_ci(values, resamples=20_000)
    z = NormalDist().inv_cdf(0.975)
    half = z * values.std(ddof=1) / np.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_bootstrap_of_constant_values_has_zero_width_and_one_seed_has_none():
    assert bootstrap_mean_ci(np.full(5, 0.7)) == pytest.approx((0.7, 0.7))
    assert all(np.isnan(bootstrap_mean_ci(np.array([0.7]))))
    assert all(np.isnan(bootstrap_effect_ci(np.array([0.7, 0.8]), np.array([0.5]))))


def test_effect_ci_of_shifted_samples_brackets_the_shift():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.95, 0.01, 300), rng.normal(0.90, 0.01, 300)
    low, high = bootstrap_effect_ci(a, b)
    assert low < a.mean() - b.mean() < high and low > 0.045 and high < 0.055


def _trials(arms: dict[str, list[list[float]]]) -> pd.DataFrame:
    rows = []
    for arm, trials in arms.items():
        for i, seeds in enumerate(trials):
            rows.append({
                "sweep": "s", "trial_id": f"{arm}-{i}", "status": "TERMINATED",
                "config.arm": arm, "val_accuracy": float(np.mean(seeds)) + 0.001 * i,
                "test_accuracy": float(np.mean(seeds)), "test_accuracy_seeds": seeds,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_same_distribution_is_not_distinguishable_and_a_better_arm_is_better():
    rng = np.random.default_rng(3)  # a fixed draw; the rate test below covers the chance
    draw = lambda mean: list(rng.normal(mean, 0.01, 8))  # noqa: E731 - eight seeds per arm
    trials = _trials({
        "baseline:oneshot": [draw(0.90)], "same": [draw(0.90)], "better": [draw(0.93)],
        "worse": [draw(0.86)],
    })  # fmt: skip
    table = compare(trials, baseline="baseline:oneshot").set_index("arm")
    assert table.loc["same", "verdict"] == "not distinguishable"
    assert table.loc["better", "verdict"] == "better"
    assert table.loc["worse", "verdict"] == "worse"
    assert table.loc["baseline:oneshot", "verdict"] == "baseline"
    assert table.index[0] == "better" and (table["n"] == 8).all()
    assert table.loc["better", "effect_ci_low"] > 0 > table.loc["worse", "effect_ci_high"]
    lower_is_better = compare(trials, baseline="baseline:oneshot", mode="min").set_index("arm")
    assert lower_is_better.loc["better", "verdict"] == "worse"


def test_each_arm_is_chosen_on_validation_and_reported_on_test():
    trials = _trials({"baseline:oneshot": [[0.9, 0.9]], "paced": [[0.80, 0.82], [0.95, 0.97]]})
    trials.loc[trials["trial_id"] == "paced-0", "val_accuracy"] = 0.99  # best on validation
    table = compare(trials, baseline="baseline:oneshot").set_index("arm")
    assert table.loc["paced", "selected_trial"] == "paced-0"  # not the one best on test
    assert table.loc["paced", "mean"] == pytest.approx(0.81)
    pooled = compare(trials, baseline="baseline:oneshot", select=None).set_index("arm")
    assert pooled.loc["paced", "n"] == 4


def test_unknown_baseline_names_the_arms():
    with pytest.raises(ResultsError, match="baseline 'x' is not a value of 'config.arm'"):
        compare(_trials({"a": [[0.9, 0.8]]}), baseline="x")


def test_same_distribution_arms_are_called_different_about_5_percent_of_the_time():
    rng, n, calls = np.random.default_rng(5), 300, 0
    for i in range(n):
        a, b = rng.normal(0.9, 0.01, 8), rng.normal(0.9, 0.01, 8)
        low, high = bootstrap_effect_ci(a, b, resamples=2000, seed=i)
        calls += low > 0 or high < 0
    assert 0.01 <= calls / n <= 0.09  # nominal 0.05; the uncorrected bootstrap gives ~0.10
