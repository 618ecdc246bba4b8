import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import ResultsError, best_schedules, compare, load_trials, pareto
from analysis._best import _varies
from analysis.cli import format_table


def _trials():
    return pa.table(
        {
            "sweep": ["s"] * 5,
            "trial_id": ["a", "b", "c", "d", "e"],
            "status": ["TERMINATED", "TERMINATED", "ERROR", "TERMINATED", "TERMINATED"],
            "error": [None, None, "boom", None, None],
            "config.curriculum.kind": ["none", "linear", "linear", "none", "linear"],
            "config.model.hidden": pa.array([[16]] * 5, pa.list_(pa.int64())),
            "config.curriculum.stages": pa.array(
                [[{"band": [0.0, 0.5]}], [{"band": [0.0, 1.0]}], None, None, None],
                pa.list_(pa.struct([("band", pa.list_(pa.float64()))])),
            ),
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


def test_list_cells_vary_by_value_and_come_back_as_python_lists():
    trials = _trials()
    assert not _varies(trials, "config.model.hidden")
    assert not _varies(trials.to_pandas(), "config.model.hidden")  # numpy-array cells
    assert _varies(trials, "config.curriculum.stages")  # a null differs from a value
    best = best_schedules(trials, top=2).set_index("trial_id")
    assert best.loc["b", "config.curriculum.stages"] == [{"band": [0.0, 1.0]}]
    assert best.loc["d", "config.curriculum.stages"] is None
    front = pareto(trials, {"val_accuracy": "max", "config.distill.alpha": "min"})
    assert "config.curriculum.stages" in front.columns


def test_grouping_by_a_list_setting_works():
    trials = _trials().to_pandas()
    trials["config.model.hidden"] = [[16], [32, 32], [16], [32, 32], [16]]
    best = best_schedules(trials, by="model.hidden", top=1)
    assert best["trial_id"].tolist() == ["b", "e"]  # c (failed) would win [16]
    trials["test_accuracy"] = trials["val_accuracy"]
    table = compare(trials, baseline="[16]", by="model.hidden", metric="test_accuracy")
    assert set(table["model.hidden"]) == {"[16]", "[32, 32]"}


def test_list_cells_are_json_text_in_csv_and_tables_and_nested_in_json():
    best = best_schedules(_trials(), top=2)
    csv = format_table(best, "csv").splitlines()
    assert ',"[{""band"": [0.0, 1.0]}]",' in csv[1]  # one CSV cell of JSON text
    records = json.loads(format_table(best, "json"))
    assert records[0]["config.curriculum.stages"] == [{"band": [0.0, 1.0]}]
    assert records[1]["config.curriculum.stages"] is None
    assert '[{"band": [0.0, 1.0]}]' in format_table(best, "table")


def test_best_per_group_and_minimising():
    best = best_schedules(_trials(), by="curriculum.kind", top=1)
    assert dict(zip(best["config.curriculum.kind"], best["trial_id"], strict=True)) == {
        "linear": "b",
        "none": "d",
    }
    fastest = best_schedules(_trials(), metric="steps_to_target", mode="min", top=2)
    assert fastest["trial_id"].tolist() == ["b", "d"]
    per_sweep = best_schedules(_trials(), by="sweep", top=1)  # the sweep column once
    assert list(per_sweep.columns).count("sweep") == 1
    format_table(per_sweep, "table")


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
