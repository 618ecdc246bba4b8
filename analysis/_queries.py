"""Ready queries for a user's own script: one trial's curve, per-arm summaries, and curves
joined with the settings of their trials."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis._best import (
    direction,
    frame,
    group_key,
    refuse_pooled_sweeps,
    resolve_column,
    searched_metric,
)
from analysis.tables import CONFIG_PREFIX, ResultsError, load_curves, load_trials

__all__ = ["arm_summary", "curves_with_settings", "trial_curve"]

Source = str | os.PathLike


def trial_curve(results: Source | pa.Table, trial_id: str) -> pd.DataFrame:
    """One trial's rows of the ``curves`` table, by ``step``.

    ``results``: a sweep's directory (or a storage root) or a loaded curves table
    (:func:`analysis.load_curves`). :class:`ResultsError` naming the trial when it has no
    rows."""
    curves = results if isinstance(results, pa.Table) else load_curves(results)
    if "step" not in curves.column_names:
        raise ResultsError(
            "results: this table has no 'step' column (the trials table?); pass a sweep's "
            "directory or analysis.load_curves(...)"
        )
    rows = curves.filter(pc.equal(curves["trial_id"], trial_id))
    if rows.num_rows == 0:
        raise ResultsError(f"trial_id: {trial_id!r} has no rows in the curves table")
    return rows.sort_by([("sweep", "ascending"), ("step", "ascending")]).to_pandas()


def arm_summary(
    results: Source | pa.Table | pd.DataFrame,
    *,
    by: str = "arm",
    metric: str | None = None,
    mode: str | None = None,
) -> pd.DataFrame:
    """Per group of ``by`` (default ``config.arm``: ``search`` and each baseline; a column or a
    setting's dotted path, e.g. ``curriculum.kind``), over its ``TERMINATED`` trials:

    ``trials`` (how many), ``reached`` (how many reached the sweep's target: a non-null
    ``steps_to_target``), ``steps_to_target_median`` (over those that reached it),
    ``<metric>_median``, ``<metric>_mean`` and ``<metric>_best`` (``max`` or ``min`` as the
    sweep searched it: :func:`analysis.direction`), best group first.

    ``results``: a sweep's directory (or a storage root) or a loaded trials table.
    ``metric`` defaults to the one the sweep searched on (``val_accuracy`` without its
    manifest)."""
    trials = results if isinstance(results, (pa.Table, pd.DataFrame)) else load_trials(results)
    df = frame(trials)
    metric = resolve_column(list(df.columns), metric or searched_metric(df))
    mode = direction(df, metric, mode)
    by = resolve_column(list(df.columns), by)
    refuse_pooled_sweeps(df, by, "summarise")
    df = df[df["status"] == "TERMINATED"]
    if df.empty:
        raise ResultsError("results: no TERMINATED trial to summarise")
    values = pd.to_numeric(df[metric], errors="coerce")
    steps = pd.to_numeric(df["steps_to_target"], errors="coerce")
    grouped = df.assign(_value=values, _steps=steps).groupby(
        group_key(df[by]).rename(by), dropna=False, sort=False
    )
    out = pd.DataFrame({
        "trials": grouped.size(),
        "reached": grouped["_steps"].count(),
        "steps_to_target_median": grouped["_steps"].median(),
        f"{metric}_median": grouped["_value"].median(),
        f"{metric}_mean": grouped["_value"].mean(),
        f"{metric}_best": grouped["_value"].max() if mode == "max" else grouped["_value"].min(),
    })  # fmt: skip
    out = out.sort_values(f"{metric}_best", ascending=mode == "min", na_position="last")
    return out.reset_index()


def curves_with_settings(
    results: Source, *, columns: list[str] | str | None = None
) -> pd.DataFrame:
    """Every row of the ``curves`` table with its trial's ``seed``, ``status``,
    ``config.arm`` and settings: every ``config.*`` column, or only ``columns`` (names or
    dotted paths, e.g. ``["curriculum.kind", "distill.temperature"]``; one name alone is
    fine). Curve rows of a trial not yet in the trials table (still running) have null
    settings. List and struct settings are Python lists and dicts.

    A PBT trial's curve holds every step it reported, also those of the trajectory it left
    at an exploit (then continuing from another trial's weights); its settings are its final
    ones (``search.config_of(trial_id, results)`` gives the schedule it followed)."""
    if isinstance(columns, str):
        columns = [columns]
    trials, curves = frame(load_trials(results)), load_curves(results).to_pandas()
    names = list(trials.columns)
    if columns is None:
        wanted = [c for c in names if c.startswith(CONFIG_PREFIX)]
    else:
        wanted = [resolve_column(names, c) for c in columns]
    arm = [resolve_column(names, "arm")] if "config.arm" in names else []
    keep = list(dict.fromkeys(["sweep", "trial_id", "seed", "status", *arm, *wanted]))
    return curves.merge(trials[keep], on=["sweep", "trial_id"], how="left")
