"""Read a sweep's result tables and answer "which schedule is best, by how much, and is it
more than seed noise?".

``results`` may be one sweep's directory (``<storage>/<sweep>``) or a storage root holding
several sweeps. The tables' layout, schemas and file naming are :mod:`analysis.tables` (the
results contract the writer in ``search`` imports too). Tables and queries need pyarrow and
pandas only (no Ray, no torch); the report adds matplotlib, importance adds Optuna.
"""

from analysis import tables
from analysis._best import best_schedules, resolve_column
from analysis._compare import bootstrap_effect_ci, bootstrap_mean_ci, compare
from analysis._curves import learning_curves, load_study, param_importance, steps_to_target
from analysis._pareto import pareto
from analysis.tables import (
    CorruptResultsError,
    ResultsError,
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
    "learning_curves",
    "load_curves",
    "load_stages",
    "load_study",
    "load_teacher",
    "load_trials",
    "param_importance",
    "pareto",
    "resolve_column",
    "steps_to_target",
    "tables",
]
