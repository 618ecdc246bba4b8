"""Best schedules, and the column helpers every query shares."""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.tables import ResultsError, config_column, config_path, table_objectives

_SUMMARY = [
    "val_accuracy", "best_val_accuracy", "test_accuracy", "val_perplexity", "test_perplexity",
    "steps_to_target", "steps",
]  # fmt: skip
# Metrics where smaller is better: the default mode for ranking by them is "min".
_SMALLER_IS_BETTER = ("loss", "perplexity", "steps", "wall_time", "samples_seen")


def default_mode(metric: str) -> str:
    """``min`` for losses, perplexities, step counts and times; ``max`` otherwise."""
    return "min" if any(word in metric for word in _SMALLER_IS_BETTER) else "max"


def direction(table: pa.Table | pd.DataFrame, column: str, mode: str | None = None) -> str:
    """Which way ``column`` ranks: ``mode`` when given; else the direction the sweep searched
    it (its ``mode``, or its objective's, from the manifest a loaded table carries: see
    :func:`analysis.tables.table_objectives`); else :func:`default_mode` of its name.

    The objectives travel in the pyarrow Table :func:`~analysis.tables.load_trials` returns;
    ``table.to_pandas()`` drops them, so pass the Table itself (the queries accept both), or
    carry them over: ``df.attrs["objectives"] = table_objectives(table)``."""
    if mode is None:
        modes = table_objectives(table)["modes"]
        mode = modes.get(column.removeprefix("config.")) or default_mode(column)
    if mode not in ("max", "min"):
        raise ResultsError(f"mode must be 'max' or 'min', got {mode!r}")
    return mode


def searched_metric(table: pa.Table | pd.DataFrame, default: str = "val_accuracy") -> str:
    """The metric the sweep searched on (its first objective), else ``default``."""
    return table_objectives(table)["metric"] or default


def ranked(df: pd.DataFrame, column: str, mode: str) -> pd.DataFrame:
    """``df`` best first by ``column`` in ``mode``; ties (a coarse metric such as steps to
    target) broken by validation accuracy (or, ranking by it, validation loss; a NaN or
    infinite one last), then by ``trial_id``, so the order never depends on how the rows
    were read. Rows whose ``column`` is NaN or infinite (a diverged trial) are left out."""
    keys, ascending = [column], [mode == "min"]
    tie = "val_loss" if column == "val_accuracy" else "val_accuracy"
    order = df
    if tie in df.columns and tie != column:
        # a NaN or infinite tie value (a diverged evaluation) ranks last, as in search.confirm
        values = pd.to_numeric(df[tie], errors="coerce")
        order = df.assign(_tie=values.where(np.isfinite(values)))
        keys.append("_tie")
        ascending.append(tie == "val_loss")
    if column != "trial_id":
        keys.append("trial_id")
        ascending.append(True)
    order = order.sort_values(keys, ascending=ascending, kind="stable", na_position="last")
    order = order.drop(columns="_tie", errors="ignore")
    if not pd.api.types.is_numeric_dtype(order[column]):
        return order
    return order[np.isfinite(order[column].astype(float))]


def resolve_column(columns: list[str], name: str) -> str:
    """Accept a column by its full name or, for config columns, by the setting's dotted path
    (``curriculum.kind`` for ``config.curriculum.kind``)."""
    if name in columns:
        return name
    if config_column(name) in columns:
        return config_column(name)
    options = [c for c in columns if c not in ("sweep", "trial_id", "error")]
    if len(options) <= 12:
        raise ResultsError(
            f"column {name!r} is not in the trials table; columns: {', '.join(options)}"
        )
    paths = [config_path(c) or c for c in options]  # a setting by its dotted path
    close = difflib.get_close_matches(name, paths, n=4, cutoff=0.6)
    raise ResultsError(
        f"column {name!r} is not in the trials table"
        + (f"; did you mean {', '.join(close)}?" if close else "")
        + f" ({len(options)} columns, e.g. {', '.join(options[:4])}: "
        "analysis.load_trials(...).column_names lists them)"
    )


def frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """A table as pandas, with list and struct cells as Python lists and dicts (pandas would
    make them numpy arrays); a DataFrame is copied."""
    if isinstance(table, pd.DataFrame):
        return table.copy()
    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    df = table.drop_columns(nested).to_pandas()
    for name in nested:
        df[name] = pd.Series(table[name].to_pylist(), index=df.index, dtype=object)
    df = df[table.column_names]
    df.attrs["objectives"] = table_objectives(table)
    return df


def plain(cell: Any) -> Any:
    """A cell as plain Python: numpy arrays and scalars as lists and numbers, NaN as None."""
    if isinstance(cell, np.ndarray):
        cell = cell.tolist()
    if isinstance(cell, (list, tuple)):
        return [plain(v) for v in cell]
    if isinstance(cell, dict):
        return {k: plain(v) for k, v in cell.items()}
    if isinstance(cell, np.generic):
        cell = cell.item()
    if cell is pd.NA or cell is pd.NaT or (isinstance(cell, float) and math.isnan(cell)):
        return None
    return cell


def is_nested(cell: Any) -> bool:
    return isinstance(cell, (list, tuple, dict, np.ndarray))


def cell_text(cell: Any) -> Any:
    """A list or struct cell as compact JSON text (for tables, CSV and group labels); any
    other cell as it is."""
    return json.dumps(plain(cell), default=str) if is_nested(cell) else cell


def group_key(values: pd.Series) -> pd.Series:
    """``values`` as something pandas can group by: list and struct cells as JSON text."""
    if values.dtype == object and values.map(is_nested).any():
        return values.map(cell_text)
    return values


def displayable(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with list and struct cells as JSON text."""
    out = df.copy()
    for name in out.columns:
        out[name] = group_key(out[name])
    return out


def best_schedules(
    trials: pa.Table | pd.DataFrame,
    *,
    metric: str | None = None,
    mode: str | None = None,
    by: str | None = None,
    top: int = 5,
) -> pd.DataFrame:
    """The ``top`` finished trials by ``metric`` (per group of ``by``, if given).

    Columns: ``sweep``, ``trial_id``, the group column, the summary metrics and every config
    column whose value differs between trials (the schedule), best first. List and struct
    settings are Python lists and dicts; a setting the trial did not use is null.
    ``metric`` defaults to the one the sweep searched on (``val_accuracy`` for a table
    without its sweep's manifest), ``mode`` to the direction it was searched in, else
    :func:`default_mode` of the metric (``min`` for ``val_loss``): see :func:`direction`.
    """
    if top < 1:
        raise ResultsError(f"top must be >= 1, got {top}")
    df = frame(trials)
    metric = resolve_column(list(df.columns), metric or searched_metric(df))
    mode = direction(df, metric, mode)
    by = resolve_column(list(df.columns), by) if by else None
    df = df[(df["status"] == "TERMINATED") & df[metric].notna()]
    if df.empty:
        raise ResultsError(f"no finished trial reports {metric!r}")
    df = ranked(df, metric, mode)
    df = (df.groupby(group_key(df[by]), sort=False, dropna=False) if by else df).head(top)
    config = [c for c in df.columns if config_path(c) and c != by]
    varying = [c for c in config if _varies(trials, c)]
    summary = [c for c in _SUMMARY if c in df.columns and c != metric and df[c].notna().any()]
    columns = (
        ["sweep", "trial_id"]
        + ([by] if by and by not in ("sweep", "trial_id") else [])
        + [metric]
        + summary
        + varying
    )
    return df[columns].reset_index(drop=True)


def _varies(trials: pa.Table | pd.DataFrame, column: str) -> bool:
    """Whether ``column`` takes more than one value (null counting as one) over ``trials``;
    list and struct cells compare by value."""
    values = trials[column]
    if isinstance(values, pa.ChunkedArray):
        if pa.types.is_nested(values.type):
            first, *rest = values.to_pylist() or [None]
            return any(v != first for v in rest)
        return pc.count_distinct(values, mode="all").as_py() > 1
    return group_key(values).nunique(dropna=False) > 1


def refuse_pooled_sweeps(df: pd.DataFrame, by: str, what: str) -> None:
    """:class:`ResultsError` (one line) when ``df`` holds several sweeps' trials and grouping
    ``by`` would pool their arms (a storage root: other budgets, other spaces, other data)."""
    sweeps = sorted(set(df["sweep"].dropna())) if "sweep" in df.columns else []
    if len(sweeps) > 1 and by != "sweep":
        raise ResultsError(
            f"results: the trials come from {len(sweeps)} sweeps "
            f"({', '.join(map(str, sweeps[:4]))}"
            f"{', ...' if len(sweeps) > 4 else ''}), whose arms would pool; {what} one sweep's "
            f"directory at a time (or {what} the sweeps: by 'sweep')"
        )
