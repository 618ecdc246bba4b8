"""A user's own script over a real sweep's tables: DuckDB and polars read the Parquet files
directly and agree with ``analysis``; the ready queries join curves with settings.

Public names only: :func:`test_this_script_imports_public_names_only` fails if it imports a
``_private`` module or name of ours (what a user's script could not rely on)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

import analysis
from analysis.tables import table_files

OVERRIDES = [
    "num_samples=3", "teacher.optim.steps=100", "student.optim.steps=100",
    "student.eval_every=25", "search.n_startup_trials=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(example_sweep) -> Path:
    """One tiny real sweep (Ray, Optuna, PyTorch, Parquet): 3 searched trials and the two
    default baselines, 4 reports each."""
    return example_sweep("quickstart.yaml", "queries", *OVERRIDES)


def test_this_script_imports_public_names_only(public_only):
    public_only(__file__)


def _glob(sweep: Path, table: str) -> str:
    return str(sweep / table / "*.parquet")


@pytest.mark.ray
@pytest.mark.slow  # the module's sweep: about a minute
def test_duckdb_reads_the_same_trials_and_metrics_as_load_trials(sweep):
    expected = analysis.load_trials(sweep).to_pandas().set_index("trial_id")
    rows = duckdb.sql(
        'select trial_id, val_accuracy, "config.arm" from '
        f"read_parquet('{_glob(sweep, 'trials')}', hive_partitioning = false)"
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(expected.index)
    for trial_id, value, arm in rows:
        assert value == pytest.approx(expected.loc[trial_id, "val_accuracy"])
        assert arm == expected.loc[trial_id, "config.arm"]
    # the file list analysis reads, as a running sweep's readers should pass it
    files = [str(f) for f in table_files(sweep, "trials")]
    ((count,),) = duckdb.sql(f"select count(*) from read_parquet({files})").fetchall()
    assert count == len(expected) == 5


@pytest.mark.ray
@pytest.mark.slow  # the module's sweep: about a minute
def test_polars_reads_the_same_trials_and_curves_as_analysis(sweep):
    expected = analysis.load_trials(sweep).to_pandas().set_index("trial_id")
    trials = pl.scan_parquet(_glob(sweep, "trials"), hive_partitioning=False).collect()
    assert sorted(trials["trial_id"].to_list()) == sorted(expected.index)
    for trial_id, value in zip(trials["trial_id"], trials["val_accuracy"], strict=True):
        assert value == pytest.approx(expected.loc[trial_id, "val_accuracy"])
    curves = pl.scan_parquet(table_files(sweep, "curves")).collect()
    assert curves.height == analysis.load_curves(sweep).num_rows == 5 * 4
    per_trial = curves.group_by("trial_id").agg(pl.len().alias("n"))
    assert sorted(per_trial["n"].to_list()) == [4] * 5


@pytest.mark.ray
@pytest.mark.slow  # the module's sweep: about a minute
def test_duckdb_joins_curves_with_settings_as_curves_with_settings_does(sweep):
    joined = duckdb.sql(
        'select c.trial_id, c.step, c.val_accuracy, t."config.arm", t.seed from '
        f"read_parquet('{_glob(sweep, 'curves')}') c join "
        f"read_parquet('{_glob(sweep, 'trials')}') t using (sweep, trial_id) "
        "order by 1, 2"
    ).df()
    ours = analysis.curves_with_settings(sweep).sort_values(["trial_id", "step"])
    assert len(joined) == len(ours) == 20
    assert joined["trial_id"].tolist() == ours["trial_id"].tolist()
    assert joined["config.arm"].tolist() == ours["config.arm"].tolist()
    assert joined["val_accuracy"].tolist() == pytest.approx(ours["val_accuracy"].tolist())
    assert ours["status"].eq("TERMINATED").all() and ours["seed"].notna().all()


@pytest.mark.ray
@pytest.mark.slow  # the module's sweep: about a minute
def test_ready_queries_summarise_each_arm_and_one_trials_curve(sweep):
    trials = analysis.load_trials(sweep).to_pandas()
    summary = analysis.arm_summary(sweep).set_index("config.arm")
    assert sorted(summary.index) == ["baseline:labels_only", "baseline:oneshot", "search"]
    assert summary.loc["search", "trials"] == 3
    reached = trials.groupby("config.arm")["steps_to_target"].count()
    assert summary["reached"].to_dict() == reached.to_dict()
    searched = trials[trials["config.arm"] == "search"]["val_accuracy"]
    assert summary.loc["search", "val_accuracy_best"] == pytest.approx(searched.max())
    assert summary.loc["search", "val_accuracy_median"] == pytest.approx(searched.median())
    first = trials["trial_id"].iloc[0]
    curve = analysis.trial_curve(sweep, first)
    assert curve["step"].tolist() == [25, 50, 75, 100]
    final = trials.set_index("trial_id").loc[first, "val_accuracy"]
    assert curve["val_accuracy"].iloc[-1] == pytest.approx(final)
