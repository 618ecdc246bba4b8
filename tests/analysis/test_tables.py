"""The results contract: schema derivation, file naming, the write-ahead log, schema growth."""

from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from analysis import tables
from analysis.tables import (
    CURVE_REPORTED,
    CURVE_SCHEMA,
    STAGE_SCHEMA,
    STAGE_VALUES,
    TEACHER_RECORD,
    TEACHER_SCHEMA,
    ResultsError,
    WriteAheadLog,
    config_column,
    config_fields,
    config_path,
    config_row,
    load_curves,
    load_trials,
    read_wal,
    run_token,
    table_files,
    trials_schema,
    write_parquet_atomic,
)


class _Stage(BaseModel):
    band: tuple[float, float] = (0.0, 1.0)
    weight: float | None = None


class _Inner(BaseModel):
    on: bool = True
    widths: list[int] = [4]


class _Config(BaseModel):
    seed: int = 0
    kind: Literal["a", "b"] = "a"
    level: Literal[1, 2] = 1
    end: float | None = None
    checkpoint: int | Literal["transition"] = "transition"
    inner: _Inner = _Inner()
    maybe: _Inner | None = None
    stages: list[_Stage] = []
    pair: tuple[int, int] = (1, 2)
    mixed: tuple[int, str] = (1, "x")
    extra: dict[str, float] = {}


def test_config_columns_are_named_by_the_dotted_path():
    assert config_column("distill.temperature") == "config.distill.temperature"
    assert config_path("config.distill.temperature") == "distill.temperature"
    assert config_path("val_accuracy") is None


def test_schema_is_derived_from_the_model_lists_and_structs_included():
    types = {f.name: f.type for f in config_fields(_Config)}
    assert types == {
        "config.seed": pa.int64(),
        "config.kind": pa.string(),
        "config.level": pa.int64(),
        "config.end": pa.float64(),  # X | None is X, nullable
        "config.checkpoint": pa.string(),  # a union of two kinds: text
        "config.inner.on": pa.bool_(),
        "config.inner.widths": pa.list_(pa.int64()),
        "config.maybe.on": pa.bool_(),
        "config.maybe.widths": pa.list_(pa.int64()),
        "config.stages": pa.list_(
            pa.struct([("band", pa.list_(pa.float64())), ("weight", pa.float64())])
        ),
        "config.pair": pa.list_(pa.int64()),
        "config.mixed": pa.string(),
        "config.extra": pa.string(),
    }
    assert all(f.nullable for f in config_fields(_Config))


def test_student_schema_types_every_list_setting():
    from trainables.config import StudentConfig

    schema = trials_schema(StudentConfig)
    assert schema.names[:5] == ["sweep", "trial_id", "status", "error", "seed"]
    assert schema.names[-1] == "node_id"
    stage = pa.struct(
        [("band", pa.list_(pa.float64())), ("temperature", pa.float64()),
         ("alpha", pa.float64()), ("augment", pa.float64()), ("length", pa.float64())]
    )  # fmt: skip
    change = pa.struct([("at", pa.float64()), ("start", pa.float64()), ("full_at", pa.float64())])
    expected = {
        "model.hidden": pa.list_(pa.int64()),
        "teacher_schedule.steps": pa.list_(pa.int64()),
        "teacher_schedule.switches": pa.list_(pa.float64()),
        "teacher_schedule.checkpoint": pa.string(),
        "distill.temperature_schedule.boundaries": pa.list_(pa.float64()),
        "distill.alpha_schedule.values": pa.list_(pa.float64()),
        "curriculum.stages": pa.list_(stage),
        "curriculum.pacing.changes": pa.list_(change),
        "curriculum.kind": pa.string(),
        "distill.temperature": pa.float64(),
    }
    for path, type_ in expected.items():
        assert schema.field(config_column(path)).type == type_, path


def test_config_row_types_cells_for_their_columns():
    schema = trials_schema(_Config)
    row = config_row(
        {"seed": 3, "checkpoint": 100, "stages": [{"band": (0.0, 0.5), "weight": None}],
         "pair": (3, 4), "inner.widths": None, "end": "not a number", "unknown": 1},
        schema,
    )  # fmt: skip
    assert row == {
        "config.seed": 3, "config.checkpoint": "100",
        "config.stages": [{"band": [0.0, 0.5], "weight": None}], "config.pair": [3, 4],
        "config.inner.widths": None, "config.end": None,
    }  # fmt: skip
    table = pa.Table.from_pylist([row], schema=schema)  # the cells fit their columns
    assert table["config.stages"].to_pylist() == [[{"band": [0.0, 0.5], "weight": None}]]


def test_named_columns_are_the_schemas_parts():
    assert CURVE_SCHEMA.names == ["sweep", "trial_id", *CURVE_REPORTED]
    assert set(STAGE_VALUES) <= set(CURVE_REPORTED) and set(STAGE_VALUES) <= set(STAGE_SCHEMA.names)
    assert TEACHER_SCHEMA.names[1 : 1 + len(TEACHER_RECORD)] == list(TEACHER_RECORD)


def test_file_names_round_trip_their_run_token(tmp_path):
    token = tables.new_token()
    names = [
        tables.part_file(token, 7), tables.trial_file(token, "abc_00001"),
        tables.stage_file(token, "abc_00001"), tables.compact_file(token),
    ]  # fmt: skip
    assert [run_token(n) for n in names] == [token] * 4
    assert run_token("teacher.parquet") is None and run_token(f".{names[0]}.1234.tmp") is None
    assert run_token(f"_wal-{token}.jsonl") is None
    other = tables.new_token()
    for name in [*names, tables.part_file(other, 0), "teacher.parquet"]:
        pq.write_table(pa.table({"x": [1]}), tmp_path / name)
    assert [f.name for f in tables.run_files(tmp_path, token)] == sorted(names[:3])


def test_table_files_skip_temporaries_and_a_compacted_runs_files(tmp_path):
    directory = tmp_path / "trials"
    directory.mkdir()
    done, running = "aaaa", "bbbb"
    for name in [tables.trial_file(done, "t1"), tables.compact_file(done),
                 tables.trial_file(running, "t2"), ".trial-x-t3.parquet.ab12.tmp",
                 "_hidden.parquet"]:  # fmt: skip
        (directory / name).write_bytes(b"")
    assert [f.name for f in table_files(tmp_path, "trials")] == [
        tables.compact_file(done), tables.trial_file(running, "t2"),
    ]  # fmt: skip
    with pytest.raises(ResultsError, match="is not a directory"):
        table_files(tmp_path / "nope", "trials")


def test_write_parquet_atomic_leaves_no_temporary(tmp_path):
    write_parquet_atomic(pa.table({"x": [1, 2]}), tmp_path / "t.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
    assert pq.read_table(tmp_path / "t.parquet")["x"].to_pylist() == [1, 2]


def test_write_ahead_log_round_trips_rows_and_skips_a_cut_line(tmp_path):
    log = WriteAheadLog(tmp_path, "abcd")
    rows = [{"sweep": "s", "trial_id": "t", "step": i, "val_accuracy": i / 10} for i in (1, 2)]
    for row in rows:
        log.append(row)
    assert log.path.name == "_wal-abcd.jsonl" and tables.is_hidden(log.path.name)
    assert read_wal(tmp_path) == rows
    with open(log.path, "a") as f:
        f.write('{"sweep": "s", "tri')  # the writer was killed mid-line
    assert read_wal(tmp_path) == rows
    log.clear()
    assert read_wal(tmp_path) == []
    log.append(rows[0])
    assert read_wal(tmp_path) == [rows[0]]
    log.remove()
    assert not log.path.exists()


def test_curves_of_a_sweep_with_only_a_log_are_read_on_the_curve_schema(tmp_path):
    (tmp_path / "curves").mkdir()
    WriteAheadLog(tmp_path / "curves", "abcd").append({"sweep": "s", "trial_id": "t", "step": 5})
    curves = load_curves(tmp_path)
    assert curves.schema == CURVE_SCHEMA and curves["step"].to_pylist() == [5]


def _write_trials(directory, columns: dict, name="trial-run1-t1.parquet"):
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), directory / name)


def test_an_older_sweep_without_some_columns_and_with_json_text_lists_reads_with_a_newer(
    tmp_path,
):
    # An older version: no config.model.stages column, lists written as JSON text.
    _write_trials(tmp_path / "old" / "trials", {
        "sweep": ["old"], "trial_id": ["t1"], "config.model.hidden": ["[16, 8]"],
    })  # fmt: skip
    _write_trials(tmp_path / "new" / "trials", {
        "sweep": ["new"], "trial_id": ["t1"],
        "config.model.hidden": pa.array([[32]], pa.list_(pa.int64())),
        "config.curriculum.pacing.start": pa.array([None], pa.float64()),
    })  # fmt: skip
    both = load_trials(tmp_path).sort_by("sweep")
    assert both["config.model.hidden"].type == pa.list_(pa.int64())
    assert both["config.model.hidden"].to_pylist() == [[32], [16, 8]]
    assert both["config.curriculum.pacing.start"].to_pylist() == [None, None]


def test_text_that_is_not_a_list_keeps_the_column_as_text(tmp_path):
    _write_trials(tmp_path / "old" / "trials", {"sweep": ["old"], "x": ["sixteen"]})
    _write_trials(tmp_path / "new" / "trials", {"sweep": ["new"], "x": pa.array([[1]])})
    both = load_trials(tmp_path).sort_by("sweep")
    assert both["x"].type == pa.string() and both["x"].to_pylist() == ["[1]", "sixteen"]


def test_a_sweep_resumed_by_a_newer_version_reads_its_old_and_new_files(tmp_path):
    trials = tmp_path / "trials"
    _write_trials(trials, {"trial_id": ["t1"], "config.model.hidden": ["[16]"]},
                  "trial-old-t1.parquet")  # fmt: skip
    _write_trials(trials, {"trial_id": ["t2"], "config.model.hidden": pa.array([[8, 8]]),
                           "config.seed": [1]}, "trial-new-t2.parquet")  # fmt: skip
    table = load_trials(tmp_path).sort_by("trial_id")
    assert table["config.model.hidden"].to_pylist() == [[16], [8, 8]]
    assert table["config.seed"].to_pylist() == [None, 1]
