import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import ResultsError, best_schedules, load_trials


def _trials():
    return pa.table(
        {
            "sweep": ["s"] * 5,
            "trial_id": ["a", "b", "c", "d", "e"],
            "status": ["TERMINATED", "TERMINATED", "ERROR", "TERMINATED", "TERMINATED"],
            "error": [None, None, "boom", None, None],
            "config.curriculum.kind": ["none", "linear", "linear", "none", "linear"],
            "config.model.hidden": ["[16]"] * 5,
            "config.distill.alpha": [0.1, 0.2, 0.3, 0.4, 0.5],
            "val_accuracy": [0.90, 0.95, 0.99, 0.93, 0.91],
            "steps_to_target": [100, 50, None, 80, None],
        }
    )


def test_best_ranks_finished_trials_and_shows_only_varying_config():
    best = best_schedules(_trials(), top=3)
    assert best["trial_id"].tolist() == ["b", "d", "e"]  # c failed, so it is not a candidate
    assert "config.model.hidden" not in best.columns  # same for every trial
    assert {"config.curriculum.kind", "config.distill.alpha"} <= set(best.columns)


def test_best_per_group_and_minimising():
    best = best_schedules(_trials(), by="curriculum.kind", top=1)
    assert dict(zip(best["config.curriculum.kind"], best["trial_id"], strict=True)) == {
        "linear": "b",
        "none": "d",
    }
    fastest = best_schedules(_trials(), metric="steps_to_target", mode="min", top=2)
    assert fastest["trial_id"].tolist() == ["b", "d"]


def test_unknown_column_lists_the_columns():
    with pytest.raises(
        ResultsError, match="column 'accuracy' is not in the trials table; columns: status"
    ):
        best_schedules(_trials(), metric="accuracy")


def test_tables_of_several_sweeps_are_read_together(tmp_path):
    for sweep, extra in [("one", {}), ("two", {"config.curriculum.start": [0.2] * 5})]:
        (tmp_path / sweep / "trials").mkdir(parents=True)
        table = _trials().set_column(0, "sweep", pa.array([sweep] * 5))
        for name, values in extra.items():
            table = table.append_column(name, pa.array(values))
        pq.write_table(table, tmp_path / sweep / "trials" / "part.parquet")
    both = load_trials(tmp_path)
    assert both.num_rows == 10 and both.column("config.curriculum.start").null_count == 5
    assert load_trials(tmp_path / "one").num_rows == 5


def test_cli_prints_a_table_and_exits_2_on_a_missing_directory(tmp_path):
    (tmp_path / "trials").mkdir()
    pq.write_table(_trials(), tmp_path / "trials" / "part.parquet")
    run = [sys.executable, "-m", "analysis", "best"]
    ok = subprocess.run(
        [*run, str(tmp_path), "--top", "2", "--by", "curriculum.kind"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].split()[:4] == [
        "sweep",
        "trial_id",
        "curriculum.kind",
        "val_accuracy",
    ]
    assert len(ok.stdout.splitlines()) == 5  # header + 2 per group
    missing = subprocess.run([*run, str(tmp_path / "nope")], capture_output=True, text=True)
    assert (
        missing.returncode == 2
        and missing.stderr.startswith("error: results:")
        and "Traceback" not in missing.stderr
    )
