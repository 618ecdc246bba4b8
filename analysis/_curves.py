"""Learning curves, steps to target and parameter importance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis._best import frame, group_key, resolve_column
from analysis.tables import STUDY_JOURNAL, STUDY_NAME, ResultsError

if TYPE_CHECKING:  # Optuna is imported when a study is loaded
    import optuna

__all__ = ["learning_curves", "load_study", "param_importance", "steps_to_target"]


def learning_curves(
    curves: pa.Table | pd.DataFrame,
    trials: pa.Table | pd.DataFrame,
    *,
    by: str = "curriculum.kind",
    metric: str = "val_accuracy",
    level: float = 0.95,
) -> pd.DataFrame:
    """Per group of ``by`` and ``step``: ``mean`` of ``metric`` over the group's trials, a
    normal-approximation CI (``mean +- z * sd / sqrt(n)``; equal to the mean when ``n == 1``)
    and ``n``."""
    from statistics import NormalDist

    curves = curves.to_pandas() if isinstance(curves, pa.Table) else curves
    trials = frame(trials)
    by = resolve_column(list(trials.columns), by)
    if metric not in curves.columns:
        raise ResultsError(f"metric {metric!r} is not in the curves table")
    keys = trials[["sweep", "trial_id"]].assign(**{by: group_key(trials[by])})
    merged = curves.merge(keys, on=["sweep", "trial_id"])
    grouped = merged.groupby([by, "step"])[metric]
    out = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * out["sd"].fillna(0.0) / np.sqrt(out["n"])
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out.drop(columns="sd")


def steps_to_target(
    curves: pa.Table | pd.DataFrame, target: float, *, metric: str = "val_accuracy"
) -> pd.DataFrame:
    """Per trial: the first reported ``step`` whose ``metric`` reaches ``target`` (NaN if
    never), from the curves, so any target can be asked after the sweep."""
    curves = curves.to_pandas() if isinstance(curves, pa.Table) else curves
    reached = curves[curves[metric] >= target].groupby(["sweep", "trial_id"])["step"].min()
    trials = curves[["sweep", "trial_id"]].drop_duplicates().set_index(["sweep", "trial_id"])
    return trials.join(reached.rename("steps_to_target")).reset_index()


def load_study(results: str | os.PathLike) -> optuna.Study:
    """The sweep's Optuna study (from ``<sweep>/optuna.journal``)."""
    import optuna

    journal = Path(results) / STUDY_JOURNAL
    if not journal.is_file():
        raise ResultsError(f"results: no Optuna study ({journal} is missing); give one sweep")
    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    return optuna.load_study(study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(backend))


def param_importance(results: str | os.PathLike, *, evaluator: str = "fanova") -> pd.DataFrame:
    """Importance of each searched parameter for the (first) objective, from the sweep's study
    through Optuna's evaluators (``fanova``: Hutter et al. 2014; ``ped_anova``; ``mdi``).
    Only parameters every completed trial has are assessed (Optuna's rule for conditional
    spaces). Columns ``parameter``, ``importance`` (summing to 1), largest first."""
    import optuna

    evaluators = {
        "fanova": optuna.importance.FanovaImportanceEvaluator,
        "ped_anova": optuna.importance.PedAnovaImportanceEvaluator,
        "mdi": optuna.importance.MeanDecreaseImpurityImportanceEvaluator,
    }
    if evaluator not in evaluators:
        raise ResultsError(f"evaluator must be one of {', '.join(evaluators)}, got {evaluator!r}")
    study = load_study(results)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        raise ResultsError(f"importance needs at least 2 completed trials, got {len(complete)}")
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    importances = optuna.importance.get_param_importances(
        study, evaluator=evaluators[evaluator](seed=0), target=target
    )
    return pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})
