"""Read a sweep's result tables and answer "which schedule is best, by how much, and is it
more than seed noise?".

``results`` may be one sweep's directory (``<storage>/<sweep>``) or a storage root holding
several sweeps. The tables' layout, schemas and file naming are :mod:`analysis.tables` (the
results contract the writer in ``search`` imports too). Tables and queries need pyarrow and
pandas (and SciPy's t distribution for the comparisons) only (no Ray, no torch); the report
adds matplotlib, importance adds Optuna.
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
    "best_schedules",
    "bootstrap_effect_ci",
    "bootstrap_mean_ci",
    "compare",
    "compare_results",
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
    "welch",
]
