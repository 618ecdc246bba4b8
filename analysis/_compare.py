"""Arms against a baseline, with bootstrap confidence intervals over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis._best import frame, group_key, resolve_column
from analysis.tables import ResultsError, config_path

VERDICTS = ("better", "worse", "not distinguishable")


def _resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means, their spread about the sample mean widened by ``sqrt(n / (n - 1))``:
    the plain bootstrap uses the biased plug-in variance and undercovers with the handful of
    seeds a sweep has (at n = 8, about 10% false "differences" at the 95% level instead of
    5%; with the correction, close to 5%)."""
    n = len(values)
    means = values[rng.integers(0, n, (resamples, n))].mean(axis=1)
    return values.mean() + (means - values.mean()) * np.sqrt(n / (n - 1))


def bootstrap_mean_ci(
    values: np.ndarray, *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (Efron 1979), with
    the small-sample variance correction of :func:`_resampled_means`."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    means = _resampled_means(values, resamples, np.random.default_rng(seed))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_effect_ci(
    arm: np.ndarray,
    baseline: np.ndarray,
    *,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(arm) - mean(baseline)``, each resampled on its own
    (the seeds of two arms are independent runs), corrected as :func:`bootstrap_mean_ci`."""
    arm, baseline = np.asarray(arm, float), np.asarray(baseline, float)
    if len(arm) < 2 or len(baseline) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    a, b = _resampled_means(arm, resamples, rng), _resampled_means(baseline, resamples, rng)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(a - b, [tail, 1.0 - tail])
    return float(low), float(high)


def verdict(effect_ci: tuple[float, float], mode: str) -> str:
    """``better`` / ``worse`` when the effect's CI excludes 0 (in the direction ``mode`` calls
    good), else ``not distinguishable`` (also when there are too few seeds for a CI)."""
    low, high = effect_ci
    if np.isnan(low) or np.isnan(high):
        return "not distinguishable"
    if low > 0:
        return "better" if mode == "max" else "worse"
    if high < 0:
        return "worse" if mode == "max" else "better"
    return "not distinguishable"


def arm_values(
    trials: pd.DataFrame, *, by: str, metric: str, select: str | None, select_mode: str
) -> dict[str, tuple[str | None, np.ndarray]]:
    """Per arm (value of ``by``): the seeds' values of ``metric``.

    With ``select`` (e.g. ``val_accuracy``), each arm is its best trial by ``select`` and the
    values are that trial's seeds (``<metric>_seeds``), so the choice made on validation is
    reported on ``metric`` (e.g. the test split) without selection bias in the number.
    Without it, every trial of the arm contributes all its seeds.
    """
    if select is not None:
        order = trials.sort_values([select, "trial_id"], ascending=[select_mode == "min", True])
        trials = order.groupby(group_key(order[by]), sort=False, dropna=False).head(1)
    seeds = f"{metric}_seeds"
    if seeds in trials.columns:  # each trial's seeds, or its one value when it has none
        per_seed = trials[seeds].where(trials[seeds].map(_has_values), trials[metric].map(_one))
    else:
        per_seed = trials[metric].map(_one)
    arms = group_key(trials[by]).astype(str)  # a list or struct arm as its JSON text
    values = pd.DataFrame({"arm": arms, "v": per_seed}).explode("v")
    values = values[values["v"].notna()]
    chosen = dict(zip(arms, trials["trial_id"], strict=True))
    out = {}
    for arm, group in values.groupby("arm", sort=True):
        trial = chosen[arm] if select is not None else None
        out[arm] = (trial, group["v"].to_numpy(dtype=float))
    return out


def _has_values(cell) -> bool:
    return cell is not None and not (isinstance(cell, float) and np.isnan(cell)) and len(cell) > 0


def _one(value) -> list:
    return [] if pd.isna(value) else [value]


def compare(
    trials: pa.Table | pd.DataFrame,
    *,
    baseline: str,
    by: str = "arm",
    metric: str = "test_accuracy",
    mode: str = "max",
    select: str | None = "val_accuracy",
    select_mode: str = "max",
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every arm (a value of ``by``, e.g. ``arm`` or ``curriculum.kind``) against the
    ``baseline`` arm: one row per arm (first column: ``by`` without ``config.``) with ``n``
    seeds, ``mean`` and its bootstrap CI (``ci_low``, ``ci_high``), ``effect`` (mean minus the
    baseline's mean) with its CI, and a ``verdict``: ``better`` / ``worse`` when the effect's
    CI excludes zero, else ``not distinguishable``. Sorted best first; ``trial_id`` names the
    selected trial.

    Arms are chosen on ``select`` (validation) and reported on ``metric`` (default the held-out
    test split); see :func:`arm_values`. Seeds come from ``repeats`` (``<metric>_seeds``).
    """
    if mode not in ("max", "min") or select_mode not in ("max", "min"):
        raise ResultsError(f"mode must be 'max' or 'min', got {mode!r} / {select_mode!r}")
    if not 0.5 <= level < 1.0:
        raise ResultsError(f"level must be in [0.5, 1), got {level}")
    df = frame(trials)
    columns = list(df.columns)
    by, metric = resolve_column(columns, by), resolve_column(columns, metric)
    select = resolve_column(columns, select) if select else None
    df = df[df["status"] == "TERMINATED"]
    arms = arm_values(df, by=by, metric=metric, select=select, select_mode=select_mode)
    if baseline not in arms:
        raise ResultsError(
            f"baseline {baseline!r} is not a value of {by!r}; values: {', '.join(arms)}"
        )
    base = arms[baseline][1]
    if not len(base):
        raise ResultsError(
            f"baseline {baseline!r} has no {metric!r} (a trial stopped early reports none)"
        )
    rows = []
    for arm, (trial, values) in arms.items():
        if not len(values):
            continue
        low, high = bootstrap_mean_ci(values, level=level, resamples=resamples, seed=seed)
        effect_ci = bootstrap_effect_ci(values, base, level=level, resamples=resamples, seed=seed)
        rows.append(
            {
                (config_path(by) or by): arm, "trial_id": trial, "n": len(values),
                "mean": values.mean(),
                "ci_low": low, "ci_high": high, "effect": values.mean() - base.mean(),
                "effect_ci_low": effect_ci[0], "effect_ci_high": effect_ci[1],
                "verdict": "baseline" if arm == baseline else verdict(effect_ci, mode),
            }
        )  # fmt: skip
    out = pd.DataFrame(rows).sort_values("mean", ascending=mode == "min", kind="stable")
    return out.reset_index(drop=True)
