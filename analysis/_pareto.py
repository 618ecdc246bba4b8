from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis._best import _SUMMARY, _varies, direction, frame, resolve_column
from analysis.tables import ResultsError, config_path


def pareto(
    trials: pa.Table | pd.DataFrame, objectives: dict[str, str | None] | list[str]
) -> pd.DataFrame:
    """The finished trials no other finished trial dominates on ``objectives``
    (column -> ``"max"`` or ``"min"``, e.g. ``{"val_accuracy": "max",
    "steps_to_target_capped": "min"}``), sorted by the first objective, best first. A mode
    left out (None, or a list of columns) is the direction the sweep searched that column in,
    else its usual one (:func:`analysis._best.direction`).

    Trial ``a`` dominates ``b`` when it is at least as good on every objective and strictly
    better on one; ties (equal on all) are all kept. Columns as :func:`best_schedules`.
    """
    if len(objectives) < 2:
        raise ResultsError(f"pareto needs at least two objectives, got {list(objectives)}")
    if not isinstance(objectives, dict):
        objectives = dict.fromkeys(objectives)
    df = frame(trials)
    names = {}
    for metric, mode in objectives.items():
        name = resolve_column(list(df.columns), metric)
        if mode is not None and mode not in ("max", "min"):
            raise ResultsError(f"objective {name!r}: mode must be 'max' or 'min', got {mode!r}")
        names[name] = direction(df, name, mode)
    df = df[(df["status"] == "TERMINATED") & df[list(names)].notna().all(axis=1)]
    if df.empty:
        raise ResultsError(f"no finished trial reports all of {list(names)}")
    # As "larger is better" for every objective.
    score = np.column_stack(
        [df[n].to_numpy(float) * (1.0 if m == "max" else -1.0) for n, m in names.items()]
    )
    at_least = (score[:, None, :] >= score[None, :, :]).all(axis=2)  # [i, j]: i >= j everywhere
    better = (score[:, None, :] > score[None, :, :]).any(axis=2)
    dominated = (at_least & better).any(axis=0)
    front = df[~dominated]
    first, first_mode = next(iter(names.items()))
    front = front.sort_values([first, "trial_id"], ascending=[first_mode == "min", True])
    config = [c for c in front.columns if config_path(c)]
    varying = [c for c in config if _varies(df, c)]
    summary = [
        c for c in _SUMMARY if c in front.columns and c not in names and front[c].notna().any()
    ]
    return front[["sweep", "trial_id", *names, *summary, *varying]].reset_index(drop=True)
