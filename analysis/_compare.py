"""Arms against a baseline over seeds: intervals, Welch t-tests, Holm-corrected verdicts,
and what was selected on which split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from analysis._best import (
    direction,
    frame,
    group_key,
    ranked,
    refuse_pooled_sweeps,
    resolve_column,
    searched_metric,
)
from analysis.tables import (
    CONFIRM_ARM,
    ResultsError,
    config_column,
    config_path,
    confirm_dirs,
    is_sweep_dir,
    load_confirm,
    load_trials,
    read_confirm_record,
    table_objectives,
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
        order = ranked(trials[trials[select].notna()], select, select_mode)
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
    refuse_pooled_sweeps(df, by, "compare")
    statuses = pd.Series(df["status"].to_numpy(), index=_labels(df[by]).to_numpy())
    df = df[df["status"] == "TERMINATED"]
    arms = arm_values(df, by=by, metric=metric, select=select, select_mode=select_mode)
    if baseline not in arms:
        if baseline in statuses.index:
            counts = statuses[[baseline]].value_counts()
            finished = counts.get("TERMINATED", 0)
            why = (
                f"no finished trial reporting {select or metric!r}" if finished
                else "no finished trial (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
            )  # fmt: skip
            raise ResultsError(f"baseline {baseline!r} has {why}; choose another (--baseline)")
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
    reported = f"reported on {metric} ({mode}, {split_of(metric)} split) over its seeds"
    tests = (
        f"{len(others)} arm{'s' if len(others) != 1 else ''} against {baseline}: Welch t-tests, "
        "verdicts Holm-corrected over "
        f"{m} at {level:.0%}, effect intervals simultaneous (Bonferroni)"
    )
    out.attrs["summary"] = f"{chosen}, {reported}; {tests}"
    out.attrs["parts"] = {"reported": reported, "tests": tests}
    return out


def compare_results(
    results: str | os.PathLike,
    *,
    baseline: str | None = None,
    rows: str = "auto",
    by: str = "arm",
    metric: str | None = None,
    mode: str | None = None,
    select: str | None = "searched",
    select_mode: str | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """:func:`compare` of the sweep under ``results``, on its confirmation rows when it has
    some (``rows="auto"``; ``"confirm"`` requires them, ``"search"`` ignores them).

    Confirmation rows (``python -m search confirm``) are each selected configuration and each
    baseline re-run on fresh seeds, so their comparison carries no selection bias: the arms
    are ``confirm:<trial_id>`` and ``confirm:baseline:<name>``, each pooling its seeds, on the
    arms and seeds the confirmation's record lists (:data:`~analysis.tables.CONFIRM_RECORD`).
    ``metric`` defaults to the record's (``test_accuracy``, or ``test_perplexity`` for a
    language model), else ``test_accuracy``. ``auto`` uses the search's rows instead when the
    question is about them (``by`` other than ``arm``, a ``select`` other than the default) or
    when the confirmation has no finished run of its baseline or of any configuration yet (it
    says so); ``"confirm"`` refuses both.

    ``baseline`` defaults to ``baseline:oneshot`` where it finished, else the first baseline
    arm that did.
    ``attrs["summary"]`` says which rows were used and how the arms were selected;
    ``attrs["source"]`` is ``confirm`` or ``search``. One sweep's confirmation at a time: a
    storage root with several confirmed sweeps is refused (their arms would pool).
    """
    if rows not in ("auto", "confirm", "search"):
        raise ResultsError(f"rows must be 'auto', 'confirm' or 'search', got {rows!r}")
    trials = load_trials(results)
    if is_sweep_dir(results):  # one sweep, whatever names its rows carry (a renamed copy)
        trials = _one_sweep(trials, Path(results).resolve().name)
    dirs = confirm_dirs(results) if rows != "search" else []
    asked_search = by != "arm" or select != "searched" or select_mode is not None
    if rows == "confirm" and not dirs:
        load_confirm(results)  # raises: no confirmation runs, with what to do
    if rows == "confirm" and asked_search:
        raise ResultsError(
            "rows 'confirm': the confirmation compares its own arms (by arm, every seed "
            "pooled); --by, --select and --select-mode ask about the search's rows (--rows search)"
        )
    note = (
        "the search's rows (--by / --select ask about them; the confirmation's: --rows confirm): "
        if dirs and rows == "auto" and asked_search
        else ""
    )
    if dirs and not (rows == "auto" and asked_search):
        if len(dirs) > 1 or not is_sweep_dir(results):
            raise ResultsError(
                f"results: {str(results)!r} holds several sweeps; compare one sweep's directory "
                f"at a time (e.g. {str(dirs[0].parent)!r})"
            )
        confirmed, missing = _confirmed(dirs[0], trials, baseline, metric, mode, level)
        if confirmed is not None:
            confirmed.attrs["source"] = "confirm"
            return confirmed
        if rows == "confirm":
            raise ResultsError(
                f"results: the confirmation in {str(dirs[0])!r} has no finished run of {missing} "
                "yet; run `python -m search confirm` again to finish it"
            )
        note = f"confirmation incomplete (no finished run of {missing} yet), so the search's rows: "
    names = _arms(trials)
    reported = table_objectives(trials).get("report") or "test_accuracy"
    out = compare(
        trials, baseline=_baseline(baseline, names, False), by=by,
        metric=metric or reported, mode=mode, select=select, select_mode=select_mode,
        level=level,
    )  # fmt: skip
    out.attrs["summary"] = note + out.attrs["summary"]
    out.attrs["source"] = "search"
    return out


def _one_sweep(table: pa.Table, name: str) -> pa.Table:
    """``table`` with every row's ``sweep`` set to ``name``: the rows of one sweep directory,
    some perhaps written under another ``--name`` (a copy resumed under a new one)."""
    index = table.column_names.index("sweep")
    return table.set_column(index, "sweep", pa.array([name] * table.num_rows, pa.string()))


def _arms(table: pa.Table) -> list[str]:
    """The arms with a finished trial (the ones a default baseline may be)."""
    arm = config_column("arm")
    if arm not in table.column_names:
        return []
    done = table.filter(pc.equal(table["status"], "TERMINATED"))
    return sorted({a for a in done[arm].to_pylist() if a})


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


def _confirmed(
    confirm_dir: Path,
    trials: pa.Table,
    baseline: str | None,
    metric: str | None,
    mode: str | None,
    level: float,
) -> tuple[pd.DataFrame | None, str]:
    """The comparison of one sweep's confirmation rows, labelled from its record (or, rows
    copied without it, from the sweep's ``trials``), or None and what has not finished yet
    (its baseline, or every confirmed configuration). A baseline that is no confirmed arm is
    refused."""
    table = _one_sweep(load_trials(confirm_dir), confirm_dir.parent.name)
    record = read_confirm_record(confirm_dir) or {}
    arm = config_column("arm")
    if record:  # the arms and seeds the record lists (a run killed mid-write may add others)
        arms = [s.get("arm") for s in record["selected"]] + list(record.get("baselines") or [])
        keep = pc.and_(
            pc.is_in(table[arm], pa.array(arms, pa.string())),
            pc.is_in(table["seed"], pa.array(record.get("seeds") or [], pa.int64())),
        )
        table = table.filter(keep)
    listed = set(arms) if record else {a for a in table[arm].to_pylist() if a}
    baseline = _baseline(baseline, _arms(table), True)
    if baseline not in listed and baseline.removeprefix(CONFIRM_ARM).startswith("baseline:"):
        pass  # a baseline arm the confirmation has not reached: "not finished" below
    elif baseline not in listed:
        raise ResultsError(
            f"baseline {baseline!r} is not a confirmed arm; values: {', '.join(sorted(listed))}"
        )
    done = set(_arms(table))
    if baseline not in done:
        return None, baseline
    if not done - {a for a in listed if a.startswith(f"{CONFIRM_ARM}baseline:")}:
        return None, "any confirmed configuration"
    metric = metric or record.get("report_metric") or table_objectives(trials).get("report")
    metric = metric or "test_accuracy"
    mode = mode or (record.get("report_mode") if metric == record.get("report_metric") else None)
    out = compare(table, baseline=baseline, by="arm", metric=metric, mode=mode, select=None,
                  level=level)  # fmt: skip
    return _label_confirmed(out, record or _record_from(table, trials), confirm_dir), ""


def _record_from(rows: pa.Table, trials: pa.Table) -> dict:
    """What a confirmation's record would say, from its rows and the sweep's trials: each
    confirmed trial's rank among the finished searched ones by the sweep's metric."""
    df = frame(trials)
    metric = searched_metric(df)
    if metric not in df.columns:
        return {}
    mode = direction(df, metric)
    arm = df.get(config_column("arm"), pd.Series("search", index=df.index)).fillna("search")
    searched = ranked(df[(arm == "search") & (df["status"] == "TERMINATED")], metric, mode)
    rank = {t: i for i, t in enumerate(searched["trial_id"], 1)}
    arms = {a for a in rows[config_column("arm")].to_pylist() if a}
    return {
        "metric": metric, "mode": mode, "searched": len(searched),
        "selected": [
            {"arm": a, "rank": rank[a.removeprefix(CONFIRM_ARM)], "of": len(searched)}
            for a in sorted(arms) if a.removeprefix(CONFIRM_ARM) in rank
        ],
        "seeds": sorted({s for s in rows["seed"].to_pylist() if s is not None}),
    }  # fmt: skip


def _label_confirmed(out: pd.DataFrame, record: dict, confirm_dir: Path) -> pd.DataFrame:
    """Confirmation rows labelled with how each configuration was chosen: ``configs`` (the
    searched configurations it was selected from; 1 for a baseline), ``selected_by`` (``#r of
    K on <metric> (<mode>, <split>)``), and the summary sentence."""
    out = out.copy()
    if not record:  # neither a record nor the sweep's metric: say only what is known
        record = {"metric": "?", "mode": "?", "selected": [], "seeds": []}
    metric, mode = record.get("metric", "?"), record.get("mode", "?")
    split = split_of(metric) if metric != "?" else "?"
    ranks = {s.get("arm"): s for s in record["selected"]}
    labels, configs, trials = [], [], []
    for arm in out["arm"]:
        chosen = ranks.get(arm)
        if chosen is None:
            labels.append("baseline" if arm.startswith(f"{CONFIRM_ARM}baseline:") else "?")
            configs.append(1)
            trials.append(None)
        else:
            of, rank = chosen.get("of", record.get("searched")), chosen.get("rank")
            labels.append(
                f"#{rank} of {of} on {metric} ({mode}, {split})"
                if rank is not None
                else f"no longer ranked among the {of} searched"
            )
            configs.append(of)
            trials.append(arm.removeprefix(CONFIRM_ARM))
    out["selected_trial"], out["configs"], out["selected_by"] = trials, configs, labels
    seeds = max(out["n"], default=0)  # the seeds that ran (a confirmation may be partial)
    recorded = len(record.get("seeds") or [])
    shown = sorted(
        (s.get("rank") for s in record["selected"] if s.get("arm") in set(out["arm"])),
        key=lambda rank: (rank is None, rank or 0),
    )
    tried = record.get("searched", "?")
    n = len(shown)
    out.attrs["summary"] = (
        f"confirmation runs in {confirm_dir} on {seeds}"
        + (f" of {recorded}" if recorded > seeds else "")
        + f" fresh seed{'s' if seeds != 1 else ''}: {n} searched "
        f"configuration{'s' if n != 1 else ''} (#{', #'.join(str(r or '?') for r in shown)} of "
        f"{tried} on "
        f"{metric}, {mode}, {split} split) and the baselines, re-run, "
        f"{out.attrs['parts']['reported']}; {out.attrs['parts']['tests']}"
    )
    return out
