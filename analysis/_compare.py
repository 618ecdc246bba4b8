"""Arms against a baseline over seeds: intervals, Welch t-tests, Holm-corrected verdicts,
and what was selected on which split."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from analysis._best import (
    default_mode,
    direction,
    frame,
    group_key,
    resolve_column,
    searched_metric,
)
from analysis.tables import (
    CONFIRM_ARM,
    ResultsError,
    config_column,
    config_path,
    confirm_dirs,
    load_confirm,
    load_trials,
)

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


def welch(
    arm: np.ndarray, baseline: np.ndarray, *, level: float = 0.95
) -> tuple[float, float, float]:
    """Welch's t-test of ``mean(arm) - mean(baseline)`` (Welch 1947; unequal variances, the
    Welch-Satterthwaite degrees of freedom): ``(p_value, ci_low, ci_high)``, the two-sided p
    and the ``level`` interval of the difference. NaNs with fewer than two values on a side.
    Two constant samples: p 0 and a zero-width interval when they differ, p 1 when equal.

    The t-test, not the bootstrap, because a comparison of seeds has a handful of values per
    arm (3 to 10): there the percentile bootstrap's intervals are too narrow, and Welch's test
    is what studies of seed variance recommend (Colas et al. 2018, "How many random seeds?").
    """
    arm, baseline = np.asarray(arm, float), np.asarray(baseline, float)
    if len(arm) < 2 or len(baseline) < 2:
        return (float("nan"),) * 3
    diff = arm.mean() - baseline.mean()
    va, vb = arm.var(ddof=1) / len(arm), baseline.var(ddof=1) / len(baseline)
    se = np.sqrt(va + vb)
    if se == 0:
        return (1.0 if diff == 0 else 0.0, float(diff), float(diff))
    dof = (va + vb) ** 2 / (va**2 / (len(arm) - 1) + vb**2 / (len(baseline) - 1))
    p = 2.0 * stats.t.sf(abs(diff) / se, dof)
    half = stats.t.ppf(0.5 + level / 2.0, dof) * se
    return (float(p), float(diff - half), float(diff + half))


def mean_ci(values: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """Student-t ``level`` interval of the mean of ``values`` (NaNs with fewer than two)."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    half = stats.t.ppf(0.5 + level / 2.0, len(values) - 1) * values.std(ddof=1)
    half /= np.sqrt(len(values))
    return (float(values.mean() - half), float(values.mean() + half))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): sorted ascending, the i-th of m (from
    1) is ``max over j <= i of min(1, (m - j + 1) * p_j)``. Rejecting where the adjusted value
    is below alpha keeps the chance of any false "better"/"worse" among the m comparisons at
    most alpha, whatever their dependence; it never calls less than Bonferroni. NaNs (no
    test) are left out of m and stay NaN."""
    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m, running = len(order), 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        out[index] = running
    return out.tolist()


def verdict(effect: float, p_adjusted: float, mode: str, *, level: float = 0.95) -> str:
    """``better`` / ``worse`` (in the direction ``mode`` calls good) when the corrected p is
    below ``1 - level``, else ``not distinguishable`` (also without a test: too few seeds)."""
    if np.isnan(p_adjusted) or p_adjusted >= 1.0 - level:
        return "not distinguishable"
    return "better" if (effect > 0) == (mode == "max") else "worse"


def split_of(column: str) -> str:
    """The split a metric is measured on: ``test``, ``validation`` (``val_*``, ``best_val_*``
    and ``steps_to_target*``, the first evaluation reaching the target), else ``training``
    (wall time, samples seen, a config column)."""
    name = column.removeprefix("config.")
    if name.startswith("test_"):
        return "test"
    if name.startswith(("val_", "best_val_", "steps_to_target")):
        return "validation"
    return "training"


def arm_values(
    trials: pd.DataFrame, *, by: str, metric: str, select: str | None, select_mode: str
) -> dict[str, tuple[str | None, np.ndarray, int]]:
    """Per arm (value of ``by``; a null value is the arm ``null``): the selected trial, the
    seeds' values of ``metric`` and how many configurations (trials) the arm holds.

    With ``select`` (e.g. ``val_accuracy``), each arm is its best trial by ``select`` in
    ``select_mode`` and the values are that trial's seeds (``<metric>_seeds``), so the choice
    made on validation is reported on ``metric`` (e.g. the test split). Without it, every
    trial of the arm contributes all its seeds (the selected trial is None).
    """
    labels = _labels(trials[by])
    configs = labels.value_counts().to_dict()
    if select is not None:
        ranked = trials[trials[select].notna()]
        order = ranked.sort_values([select, "trial_id"], ascending=[select_mode == "min", True])
        trials = order.groupby(_labels(order[by]), sort=False).head(1)
        labels = _labels(trials[by])
    seeds = f"{metric}_seeds"
    if seeds in trials.columns:  # each trial's seeds, or its one value when it has none
        per_seed = trials[seeds].where(trials[seeds].map(_has_values), trials[metric].map(_one))
    else:
        per_seed = trials[metric].map(_one)
    values = pd.DataFrame({"arm": labels, "v": per_seed}).explode("v")
    values = values[values["v"].notna()]
    chosen = dict(zip(labels, trials["trial_id"], strict=True))
    out = {}
    for arm, group in values.groupby("arm", sort=True):
        trial = chosen[arm] if select is not None else None
        out[arm] = (trial, group["v"].to_numpy(dtype=float), int(configs[arm]))
    return out


def _labels(values: pd.Series) -> pd.Series:
    """Arm names: list and struct values as JSON text, a missing value as ``null``."""
    keys = group_key(values)
    return keys.astype(object).where(keys.notna(), "null").astype(str)


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
    mode: str | None = None,
    select: str | None = "searched",
    select_mode: str | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """Every arm (a value of ``by``, e.g. ``arm`` or ``curriculum.kind``) against the
    ``baseline`` arm, one row per arm, best first. Columns: the arm (named ``by`` without
    ``config.``), ``selected_trial`` (the arm's trial the values come from; None when pooled),
    ``configs`` (configurations the arm tried), ``n`` seeds, ``mean`` with its t interval
    (``ci_low``, ``ci_high``), ``effect`` (mean minus the baseline's) with its interval,
    ``p_value`` (Welch's t-test, :func:`welch`), ``p_holm`` (:func:`holm` over the arms
    compared), ``verdict`` and ``selected_by`` (how the arm's trial was chosen).

    Selection: each arm's best trial by ``select`` in ``select_mode``, reported on ``metric``
    (default the test split) over that trial's seeds (``<metric>_seeds``, from ``repeats``);
    ``select=None`` pools every trial's seeds instead. ``select="searched"`` (the default)
    is the metric the sweep searched on (``val_accuracy`` for a table without its sweep's
    manifest). ``select_mode`` and ``mode`` default to the direction the sweep searched each
    column in, else its usual one (``min`` for losses, steps, times: :func:`direction`).

    Verdicts: ``better`` / ``worse`` when the Holm-corrected p is below ``1 - level``, so the
    chance of any false verdict among the arms stays below it. The effect intervals are
    simultaneous over the m arms (Bonferroni, level ``1 - (1 - level) / m``): one that excludes
    zero always comes with a verdict (Holm calls at least what Bonferroni does). The best of
    many trials on validation is still optimistic on test (the winner's curse): confirm it on
    fresh seeds (``python -m search confirm``; :func:`compare_results` then uses those rows).
    ``attrs["summary"]`` of the result says all this in one sentence.
    """
    if not 0.5 <= level < 1.0:
        raise ResultsError(f"level must be in [0.5, 1), got {level}")
    df = frame(trials)
    columns = list(df.columns)
    by, metric = resolve_column(columns, by), resolve_column(columns, metric)
    if select == "searched":
        select = searched_metric(df)
    select = resolve_column(columns, select) if select else None
    mode = direction(df, metric, mode)
    select_mode = direction(df, select, select_mode) if select else "max"
    df = df[df["status"] == "TERMINATED"]
    arms = arm_values(df, by=by, metric=metric, select=select, select_mode=select_mode)
    if baseline not in arms:
        raise ResultsError(
            f"baseline {baseline!r} is not a value of {by!r}; values: {', '.join(arms) or 'none'}"
        )
    base = arms[baseline][1]
    if not len(base):
        raise ResultsError(
            f"baseline {baseline!r} has no {metric!r} (a trial stopped early reports none)"
        )
    others = [a for a, (_, values, _) in arms.items() if a != baseline and len(values)]
    tests = {a: welch(arms[a][1], base, level=level) for a in others}
    m = sum(not np.isnan(t[0]) for t in tests.values())
    wide = 1.0 - (1.0 - level) / max(m, 1)  # the simultaneous (Bonferroni) level
    adjusted = dict(zip(others, holm([tests[a][0] for a in others]), strict=True))
    rows = []
    for arm, (trial, values, configs) in arms.items():
        if not len(values):
            continue
        low, high = mean_ci(values, level=level)
        effect = values.mean() - base.mean()
        p, effect_low, effect_high = tests.get(arm) or (np.nan, np.nan, np.nan)
        if arm in tests:
            _, effect_low, effect_high = welch(values, base, level=wide)
        how = f"best of {configs} on {select}" if select else f"all {configs} pooled"
        rows.append(
            {
                (config_path(by) or by): arm, "selected_trial": trial, "configs": configs,
                "n": len(values), "mean": values.mean(), "ci_low": low, "ci_high": high,
                "effect": effect, "effect_ci_low": effect_low, "effect_ci_high": effect_high,
                "p_value": p, "p_holm": adjusted.get(arm, np.nan),
                "verdict": "baseline" if arm == baseline else verdict(
                    effect, adjusted.get(arm, np.nan), mode, level=level
                ),
                "selected_by": how,
            }
        )  # fmt: skip
    out = pd.DataFrame(rows).sort_values("mean", ascending=mode == "min", kind="stable")
    out = out.reset_index(drop=True)
    chosen = (
        f"each arm's best configuration on {select} ({select_mode}, {split_of(select)} split)"
        if select
        else "every configuration of each arm, pooled"
    )
    out.attrs["summary"] = (
        f"{chosen}, reported on {metric} ({mode}, {split_of(metric)} split) over its seeds; "
        f"{len(others)} arms against {baseline}: Welch t-tests, verdicts Holm-corrected over "
        f"{m} at {level:.0%}, effect intervals simultaneous (Bonferroni)"
    )
    return out


def compare_results(
    results: str | os.PathLike,
    *,
    baseline: str | None = None,
    rows: str = "auto",
    by: str = "arm",
    metric: str = "test_accuracy",
    mode: str | None = None,
    select: str | None = "searched",
    select_mode: str | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """:func:`compare` of the sweep(s) under ``results``, on the confirmation rows when there
    are some (``rows="auto"``; ``"confirm"`` requires them, ``"search"`` ignores them).

    Confirmation rows (``python -m search confirm``) are each selected configuration and each
    baseline re-run on fresh seeds, so their comparison carries no selection bias: the arms
    are ``confirm:<trial_id>`` and ``confirm:baseline:<name>``, every row's seed pooled (no
    selection among them). ``baseline`` defaults to ``baseline:oneshot`` where it was run, else
    the first baseline arm. ``attrs["summary"]`` says which rows were used and how the arms
    were selected; ``attrs["source"]`` is ``confirm`` or ``search``.
    """
    if rows not in ("auto", "confirm", "search"):
        raise ResultsError(f"rows must be 'auto', 'confirm' or 'search', got {rows!r}")
    trials = load_trials(results)
    confirmed = rows != "search" and bool(confirm_dirs(results))
    if rows == "confirm" and not confirmed:
        load_confirm(results)  # raises: no confirmation runs, with what to do
    table = load_confirm(results) if confirmed else trials
    arm = config_column("arm")
    names = sorted({a for a in table[arm].to_pylist() if a}) if arm in table.column_names else []
    baseline = _baseline(baseline, names, confirmed)
    if confirmed:
        out = compare(table, baseline=baseline, by="arm", metric=metric, mode=mode, select=None,
                      level=level)  # fmt: skip
        out = _describe_confirmed(out, results, trials)
    else:
        out = compare(trials, baseline=baseline, by=by, metric=metric, mode=mode, select=select,
                      select_mode=select_mode, level=level)  # fmt: skip
    out.attrs["source"] = "confirm" if confirmed else "search"
    return out


def _baseline(baseline: str | None, arms: list[str], confirmed: bool) -> str:
    prefix = CONFIRM_ARM if confirmed else ""
    if baseline is None:
        candidates = [a for a in arms if a.startswith(f"{prefix}baseline:")]
        preferred = f"{prefix}baseline:oneshot"
        if preferred in candidates or not candidates:
            return preferred
        return candidates[0]
    if confirmed and not baseline.startswith(CONFIRM_ARM):
        return CONFIRM_ARM + baseline
    return baseline


def _describe_confirmed(out: pd.DataFrame, results, trials: pa.Table) -> pd.DataFrame:
    """:func:`label_confirmed` with the selection read from the sweep's trials table."""
    df = frame(trials)
    arm = df.get(config_column("arm"), pd.Series("search", index=df.index)).fillna("search")
    searched = df[(arm == "search") & (df["status"] == "TERMINATED")]
    metric = searched_metric(df)
    mode = direction(df, metric) if metric in df.columns else default_mode(metric)
    return label_confirmed(out, tried=len(searched), metric=metric, mode=mode)


def label_confirmed(out: pd.DataFrame, *, tried: int, metric: str, mode: str) -> pd.DataFrame:
    """A :func:`compare` table of confirmation rows (``arm`` = ``confirm:...``, pooled),
    labelled with how its configurations were chosen: ``configs`` (the ``tried`` searched
    configurations a confirmed one was selected from; 1 for a baseline), ``selected_by``
    (``top N of K on <metric> (<mode>, validation)``) and the summary sentence."""
    out = out.copy()
    confirmed = out["arm"].str.removeprefix(CONFIRM_ARM)
    is_search = ~confirmed.str.startswith("baseline:")
    top = int(is_search.sum())
    out["configs"] = np.where(is_search, tried, 1)
    out["selected_by"] = np.where(
        is_search, f"top {top} of {tried} on {metric} ({mode}, validation)", "baseline"
    )
    seeds = int(out["n"].max()) if len(out) else 0
    rest = out.attrs.get("summary", "").split("; ", 1)[-1]
    out.attrs["summary"] = (
        f"confirmation runs: the top {top} of {tried} searched configurations, selected on "
        f"{metric} ({mode}, {split_of(metric)} split), and the baselines, re-run on fresh seeds "
        f"(up to {seeds} each); {rest}"
    )
    return out
