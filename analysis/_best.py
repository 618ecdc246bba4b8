from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis._tables import ResultsError

_SUMMARY = ["val_accuracy", "best_val_accuracy", "test_accuracy", "steps_to_target", "steps"]


def resolve_column(columns: list[str], name: str) -> str:
    """Accept a column by its full name or, for config columns, without the ``config.`` prefix."""
    if name in columns:
        return name
    if f"config.{name}" in columns:
        return f"config.{name}"
    options = ", ".join(c for c in columns if c not in ("sweep", "trial_id", "error"))
    raise ResultsError(f"column {name!r} is not in the trials table; columns: {options}")


def best_schedules(
    trials: pa.Table | pd.DataFrame,
    *,
    metric: str = "val_accuracy",
    mode: str = "max",
    by: str | None = None,
    top: int = 5,
) -> pd.DataFrame:
    """The ``top`` finished trials by ``metric`` (per group of ``by``, if given).

    Columns: ``sweep``, ``trial_id``, the group column, the summary metrics and every config
    column whose value differs between trials (the schedule), best first.
    """
    if mode not in ("max", "min"):
        raise ResultsError(f"mode must be 'max' or 'min', got {mode!r}")
    if top < 1:
        raise ResultsError(f"top must be >= 1, got {top}")
    df = trials.to_pandas() if isinstance(trials, pa.Table) else trials.copy()
    metric = resolve_column(list(df.columns), metric)
    by = resolve_column(list(df.columns), by) if by else None
    df = df[(df["status"] == "TERMINATED") & df[metric].notna()]
    if df.empty:
        raise ResultsError(f"no finished trial reports {metric!r}")
    df = df.sort_values([metric, "trial_id"], ascending=[mode == "min", True], kind="stable")
    df = df.groupby(by, sort=False, dropna=False).head(top) if by else df.head(top)
    config = [c for c in df.columns if c.startswith("config.") and c != by]
    varying = [c for c in config if _varies(trials, c)]
    summary = [c for c in _SUMMARY if c in df.columns and c != metric]
    columns = ["sweep", "trial_id"] + ([by] if by else []) + [metric] + summary + varying
    return df[columns].reset_index(drop=True)


def _varies(trials: pa.Table | pd.DataFrame, column: str) -> bool:
    values = trials[column]
    if isinstance(values, pa.ChunkedArray):
        if pa.types.is_nested(values.type):
            values = values.to_pylist()
            return len({json.dumps(v, default=str) for v in values}) > 1
        return pc.count_distinct(values, mode="all").as_py() > 1
    try:
        return values.nunique(dropna=False) > 1
    except TypeError:  # unhashable cells (lists)
        return len({json.dumps(v, default=str) for v in values.tolist()}) > 1
