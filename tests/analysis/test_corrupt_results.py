"""A damaged result file (truncated, empty, not Parquet) is named with what to do, by the
loaders, the analysis CLI and the resume path; the table's other files and the write-ahead
log stay readable."""

import pickle
import shutil
import subprocess
import sys

import pyarrow as pa
import pytest

from analysis import (
    CorruptResultsError,
    ResultsError,
    load_curves,
    load_stages,
    load_teacher,
    load_trials,
)
from analysis.tables import (
    CURVE_SCHEMA,
    STAGE_SCHEMA,
    TEACHER_FILE,
    TEACHER_SCHEMA,
    TRIAL_HEAD,
    TRIAL_METRICS,
    WriteAheadLog,
    config_column,
    part_file,
    read_table_file,
    read_wal,
    stage_file,
    trial_file,
    write_parquet_atomic,
)

RUN = "a1b2c3d4"
TRIALS_SCHEMA = pa.schema(
    list(TRIAL_HEAD) + [pa.field(config_column("curriculum.kind"), pa.string())]
    + list(TRIAL_METRICS)
)  # fmt: skip


def _sweep(root):
    """A sweep directory as a running sweep leaves it: one trials file per trial, two curves
    parts and a curve row still only in the write-ahead log."""
    sweep = root / "s"
    for table in ("trials", "curves"):
        (sweep / table).mkdir(parents=True)
    for i, kind in enumerate(["none", "linear", "competence"]):
        row = {"sweep": "s", "trial_id": f"t{i}", "status": "TERMINATED", "seed": i,
               config_column("curriculum.kind"): kind, "val_accuracy": 0.5 + i / 10}  # fmt: skip
        table = pa.Table.from_pylist([row], schema=TRIALS_SCHEMA)
        write_parquet_atomic(table, sweep / "trials" / trial_file(RUN, f"t{i}"))
    for part, steps in enumerate([(10, 20), (30, 40)]):
        rows = [{"sweep": "s", "trial_id": "t0", "step": s, "val_accuracy": s / 100} for s in steps]
        table = pa.Table.from_pylist(rows, schema=CURVE_SCHEMA)
        write_parquet_atomic(table, sweep / "curves" / part_file(RUN, part))
    WriteAheadLog(sweep / "curves", RUN).append({"sweep": "s", "trial_id": "t0", "step": 50})
    return sweep


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated": _truncated,
    "empty": lambda path: path.write_bytes(b""),
    "not parquet": lambda path: path.write_text("sweep,trial_id\ns,t1\n"),
}
# the middle trials file (found by the dataset scan) and the last curves part (whose schema
# is read first)
DAMAGED = {"trials": trial_file(RUN, "t1"), "curves": part_file(RUN, 1)}
LOADERS = {"trials": load_trials, "curves": load_curves}


@pytest.fixture
def sweep(tmp_path):
    return _sweep(tmp_path)


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("table", DAMAGED)
def test_the_loader_names_the_damaged_file_in_one_line(sweep, table, damage):
    bad = sweep / table / DAMAGED[table]
    DAMAGE[damage](bad)
    with pytest.raises(CorruptResultsError) as info:
        LOADERS[table](sweep)
    assert info.value.path == bad and info.value.table == table
    message = str(info.value)
    assert message.startswith(f"results: {bad} is not a readable Parquet file (")
    assert f"move it out of {bad.parent}" in message and "\n" not in message
    assert isinstance(info.value, ResultsError)  # callers catching ResultsError still do


def test_a_damaged_file_of_a_storage_root_is_named_too(sweep):
    DAMAGE["truncated"](sweep / "trials" / DAMAGED["trials"])
    with pytest.raises(CorruptResultsError) as info:
        load_trials(sweep.parent)
    assert info.value.path == sweep / "trials" / DAMAGED["trials"]


def test_the_message_says_what_moving_the_file_out_costs(sweep):
    for table in DAMAGED:
        DAMAGE["truncated"](sweep / table / DAMAGED[table])
    with pytest.raises(CorruptResultsError, match=r"`python -m search run` with its spec\) "
                       "runs new trials in place of the ones it recorded"):  # fmt: skip
        load_trials(sweep)
    with pytest.raises(CorruptResultsError, match="its learning-curve rows are lost"):
        load_curves(sweep)


@pytest.mark.parametrize(
    ("table", "name", "schema", "load", "cost"),
    [
        ("stages", stage_file(RUN, "t0"), STAGE_SCHEMA, load_stages, "its stage rows are lost"),
        ("teacher", TEACHER_FILE, TEACHER_SCHEMA, load_teacher,
         r"with its spec\) writes it again from the teacher's saved outputs"),
    ],
)  # fmt: skip
def test_stages_and_teacher_files_are_named_too(sweep, table, name, schema, load, cost):
    bad = sweep / table / name
    bad.parent.mkdir()
    write_parquet_atomic(pa.Table.from_pylist([{"sweep": "s"}], schema=schema), bad)
    DAMAGE["truncated"](bad)
    with pytest.raises(CorruptResultsError, match=cost) as info:
        load(sweep)
    assert info.value.path == bad and info.value.table == table


def test_the_other_files_and_the_log_stay_readable(sweep, tmp_path):
    for table in DAMAGED:
        DAMAGE["truncated"](sweep / table / DAMAGED[table])
    rows = {"trials": [1, 1], "curves": [2]}  # of each file but the damaged one
    for table, name in DAMAGED.items():
        others = sorted(f for f in (sweep / table).glob("*.parquet") if f.name != name)
        assert [read_table_file(f).num_rows for f in others] == rows[table]
    assert [row["step"] for row in read_wal(sweep / "curves")] == [50]
    # what the message says to do: move the file out, and everything else reads
    aside = tmp_path / "aside"
    aside.mkdir()
    for table, name in DAMAGED.items():
        shutil.move(sweep / table / name, aside / f"{table}-{name}")
    assert sorted(load_trials(sweep)["trial_id"].to_pylist()) == ["t0", "t2"]
    assert sorted(load_curves(sweep)["step"].to_pylist()) == [10, 20, 50]


def _analysis(*args):
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "command",
    [["best"], ["compare"], ["pareto", "--objective", "val_accuracy:max",
                             "--objective", "wall_time_s:min"]],
)  # fmt: skip
def test_the_cli_exits_2_with_one_line_naming_a_damaged_trials_file(sweep, command):
    bad = sweep / "trials" / DAMAGED["trials"]
    DAMAGE["truncated"](bad)
    done = _analysis(command[0], sweep, *command[1:])
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: results: {bad} is not a readable Parquet file")


def test_the_report_exits_2_with_one_line_naming_a_damaged_curves_part(sweep, tmp_path):
    bad = sweep / "curves" / DAMAGED["curves"]
    DAMAGE["truncated"](bad)
    done = _analysis("report", sweep, "-o", tmp_path / "report.html")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: results: {bad} is not a readable Parquet file")
    assert not (tmp_path / "report.html").exists()


def test_resume_names_a_damaged_curves_part_and_keeps_the_log(sweep):
    from search.sink import recover_curves  # the resume path: before the sweep goes on

    bad = sweep / "curves" / DAMAGED["curves"]
    DAMAGE["truncated"](bad)
    with pytest.raises(CorruptResultsError) as info:
        recover_curves(sweep)
    assert info.value.path == bad
    assert [row["step"] for row in read_wal(sweep / "curves")] == [50]  # nothing lost
    bad.unlink()
    assert recover_curves(sweep) == 1


def test_the_error_survives_pickling(sweep):
    error = CorruptResultsError(sweep / "trials" / DAMAGED["trials"], "truncated")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.path == error.path
