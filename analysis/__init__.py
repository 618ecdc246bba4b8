"""Read a sweep's result tables and answer "which schedule is best, by how much, and is it
more than seed noise?".

``results`` may be one sweep's directory (``<storage>/<sweep>``) or a storage root holding
several sweeps. The tables' layout, schemas and file naming are :mod:`analysis.tables` (the
results contract the writer in ``search`` imports too). Tables and queries need pyarrow and
pandas (and SciPy's t distribution for the comparisons) only (no Ray, no torch); the report
adds matplotlib, importance adds Optuna.

Return types, one rule: a loader (``load_trials``, ``load_curves``, ``load_stages``,
``load_teacher``, ``load_confirm``) returns the table as it is on disk, a
``pyarrow.Table`` (``.to_pandas()``, ``polars.from_arrow``, or DuckDB queries it by name);
every query over the tables (``best_schedules``, ``compare``, ``compare_results``,
``pareto``, ``learning_curves``, ``steps_to_target``, ``param_importance``, ``trial_curve``,
``arm_summary``, ``curves_with_settings``) returns a ``pandas.DataFrame``. ``load_study``
returns the Optuna study. Most queries take a loaded table (a pyarrow Table keeps the sweep's
objectives: pass it rather than its ``to_pandas()``); ``compare_results``,
``param_importance`` and ``curves_with_settings`` take a results path, ``trial_curve`` and
``arm_summary`` either.

Ready queries for a script::

    analysis.trial_curve("results/qs", "3f2a1_00004")           # one trial's curve, by step
    analysis.arm_summary("results/qs", by="curriculum.kind")    # per arm: trials, reached,
                                                                # medians, mean, best
    analysis.curves_with_settings("results/qs", columns=["distill.temperature"])

Your own DuckDB or polars query reads the Parquet files directly: the glob patterns, and
what to pass instead on a running sweep, are in :mod:`analysis.tables`.
"""

from analysis import tables
from analysis._best import best_schedules, default_mode, direction, resolve_column
from analysis._compare import (
    bootstrap_effect_ci,
    bootstrap_mean_ci,
    compare,
    compare_results,
    holm,
    mean_ci,
    split_of,
    welch,
)
from analysis._curves import learning_curves, load_study, param_importance, steps_to_target
from analysis._pareto import pareto
from analysis._queries import arm_summary, curves_with_settings, trial_curve
from analysis.tables import (
    CorruptResultsError,
    ResultsError,
    load_confirm,
    load_curves,
    load_stages,
    load_teacher,
    load_trials,
)

__all__ = [
    "CorruptResultsError",
    "ResultsError",
    "arm_summary",
    "best_schedules",
    "bootstrap_effect_ci",
    "bootstrap_mean_ci",
    "compare",
    "compare_results",
    "curves_with_settings",
    "default_mode",
    "direction",
    "holm",
    "learning_curves",
    "load_confirm",
    "load_curves",
    "load_stages",
    "load_study",
    "load_teacher",
    "load_trials",
    "mean_ci",
    "param_importance",
    "pareto",
    "resolve_column",
    "steps_to_target",
    "split_of",
    "tables",
    "trial_curve",
    "welch",
]
