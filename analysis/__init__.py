"""Read a sweep's result tables and answer "which schedule is best?".

Needs pyarrow and pandas only (no Ray, no torch). ``results`` may be one sweep's directory
(``<storage>/<sweep>``) or a storage root holding several sweeps.
"""

from analysis._best import best_schedules, resolve_column
from analysis._pareto import pareto
from analysis._tables import ResultsError, load_curves, load_teacher, load_trials

__all__ = [
    "ResultsError",
    "best_schedules",
    "load_curves",
    "load_teacher",
    "load_trials",
    "pareto",
    "resolve_column",
]
