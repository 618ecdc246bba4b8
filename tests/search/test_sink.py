"""ParquetSink: unit tests with stand-in trials, then through a real Tune run."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from ray import tune

from analysis import load_curves, load_trials
from search.sink import ParquetSink
from trainables.config import StudentConfig


class _Model(BaseModel):
    hidden: list[int] = [16]


class _Distill(BaseModel):
    temperature: float = 4.0
    alpha: float = 0.5
    end: float | None = None


class _Config(BaseModel):
    seed: int = 3
    model: _Model = _Model()
    distill: _Distill = _Distill()
    tag: str | None = None


BASE = _Config().model_dump()


class _Trial:  # stand-in for ray.tune.experiment.Trial (only what the sink reads)
    def __init__(self, trial_id, config, last_result=None):
        self.trial_id, self.config, self.last_result = trial_id, config, last_result or {}
        self.error_file = None

    def get_pickled_error(self):
        return RuntimeError("boom\nValueError: bad thing")


def test_curve_rows_are_on_disk_as_soon_as_they_are_flushed(tmp_path):
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=0.0)
    sink.setup()
    trial = _Trial("t1", BASE)
    sink.on_trial_result(0, [], trial, {"step": 10, "val_accuracy": 0.5, "unreported": 1})
    assert load_curves(tmp_path).num_rows == 1  # before the trial ends
    sink.on_trial_result(0, [], trial, {"step": 20, "val_accuracy": 0.7})
    assert load_curves(tmp_path).column("step").to_pylist() == [10, 20]


def test_buffered_rows_are_flushed_when_the_trial_ends(tmp_path):
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600.0)
    sink.setup()
    trial = _Trial(
        "t1",
        {**BASE, "distill": {"temperature": 2, "alpha": 0, "end": 1.5}},
        {"step": 20, "val_accuracy": 0.9},
    )
    for step in (10, 20):
        sink.on_trial_result(0, [], trial, {"step": step})
    assert not list((tmp_path / "curves").glob("*.parquet"))
    sink.on_trial_complete(0, [], trial)
    assert load_curves(tmp_path).num_rows == 2
    row = load_trials(tmp_path).to_pylist()[0]
    assert row["status"] == "TERMINATED" and row["seed"] == 3 and row["steps"] == 20
    # config columns keep the model's types (int 2 -> float 2.0) and lists are Arrow lists
    assert row["config.distill.temperature"] == 2.0 and row["config.model.hidden"] == [16]
    assert row["config.distill.end"] == 1.5  # typed from the model (float | None)
    schema = pq.read_schema(next((tmp_path / "trials").glob("*.parquet")))
    assert str(schema.field("config.distill.alpha").type) == "double"
    assert schema.field("config.model.hidden").type == pa.list_(pa.int64())


def _student_row(tmp_path, config: dict) -> dict:
    sink = ParquetSink(tmp_path, "s", StudentConfig)
    sink.setup()
    sink.on_trial_complete(0, [], _Trial("t1", config, {"step": 10}))
    (row,) = load_trials(tmp_path).to_pylist()
    return row


def test_a_setting_the_trial_does_not_use_is_null_not_its_default(tmp_path):
    config = StudentConfig(distill={"alpha": 1.0}).model_dump()  # labels only, no curriculum
    row = _student_row(tmp_path, config)
    assert row["config.curriculum.kind"] == "none" and row["config.curriculum.prune_fraction"] == 0
    for unused in ("curriculum.order", "curriculum.pacing.start", "curriculum.pacing.kind",
                   "curriculum.stages", "distill.temperature", "distill.loss",
                   "teacher_schedule.kind", "optim.momentum"):  # fmt: skip
        assert row[f"config.{unused}"] is None, unused
    assert row["config.distill.alpha"] == 1.0 and row["config.optim.kind"] == "adam"
    assert row["config.model.hidden"] == [32]


def test_list_and_struct_settings_are_arrow_lists(tmp_path):
    config = StudentConfig(
        curriculum={"kind": "staged", "stages": [{"band": (0.0, 0.5), "length": 0.5}, {}]},
        teacher_schedule={"kind": "two_shot", "checkpoint": 100},
    ).model_dump()
    row = _student_row(tmp_path, config)
    first, second = row["config.curriculum.stages"]
    assert first == {"band": [0.0, 0.5], "temperature": None, "alpha": None, "augment": 0.0,
                     "length": 0.5}  # fmt: skip
    assert second["band"] == [0.0, 1.0]
    assert row["config.teacher_schedule.checkpoint"] == "100"  # int | "transition": text
    assert row["config.curriculum.pacing.kind"] is None  # staged uses no pacing


def test_a_config_the_model_rejects_still_gets_its_row(tmp_path):
    config = StudentConfig().model_dump()
    config["curriculum"]["kind"] = "nonsense"  # the trial fails; its row must still land
    config["distill"]["temperature"] = "hot"  # a value its column cannot hold: null
    row = _student_row(tmp_path, config)
    assert row["config.curriculum.kind"] == "nonsense"
    assert row["config.curriculum.pacing.start"] == 0.2  # flattened as it is, nothing nulled
    assert row["config.distill.temperature"] is None


def test_failed_trial_gets_a_row_with_the_last_error_line(tmp_path):
    sink = ParquetSink(tmp_path, "s", _Config)
    sink.setup()
    sink.on_trial_error(0, [], _Trial("t9", BASE))
    row = load_trials(tmp_path).to_pylist()[0]
    assert (row["status"], row["error"]) == ("ERROR", "ValueError: bad thing")


def _reports_then_fails(config):
    for step in (1, 2, 3):
        tune.report({"step": step, "val_accuracy": step / 10})
    if config["fail"]:
        raise ValueError("diverged on purpose")


@pytest.mark.ray
def test_real_tune_run_keeps_rows_of_a_failed_trial(ray_session, tmp_path):
    class Config(BaseModel):
        seed: int = 0
        fail: bool = False

    tuner = tune.Tuner(
        _reports_then_fails,
        param_space={"seed": 0, "fail": tune.grid_search([False, True])},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"),
            callbacks=[ParquetSink(tmp_path, "s", Config)],
            verbose=0,
        ),
    )
    tuner.fit()
    trials = load_trials(tmp_path).to_pandas().set_index("config.fail")
    assert trials.loc[False, "status"] == "TERMINATED" and trials.loc[True, "status"] == "ERROR"
    assert "diverged on purpose" in trials.loc[True, "error"]
    counts = duckdb.sql(
        f"select trial_id, count(*) as n from read_parquet('{tmp_path}/curves/**/*.parquet') group by 1"
    ).fetchall()
    assert sorted(n for _, n in counts) == [3, 3]  # the failed trial's reports survived


def test_rows_of_a_killed_driver_survive_in_the_log_and_are_recovered_once(tmp_path):
    from search.sink import recover_curves

    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600)
    sink.setup()
    trial = _Trial("t1", BASE)
    for step in (10, 20):
        sink.on_trial_result(0, [], trial, {"step": step, "val_accuracy": step / 100})
    sink.flush()  # rows 10, 20 -> Parquet
    sink.on_trial_result(0, [], trial, {"step": 30, "val_accuracy": 0.3})
    del sink  # the driver is SIGKILLed: no flush, no experiment end
    assert sorted(load_curves(tmp_path)["step"].to_pylist()) == [10, 20, 30]
    assert duckdb.sql(f"select count(*) from '{tmp_path}/curves/*.parquet'").fetchall() == [(2,)]
    assert recover_curves(tmp_path) == 1  # only the row not yet in Parquet
    assert recover_curves(tmp_path) == 0
    assert sorted(load_curves(tmp_path)["step"].to_pylist()) == [10, 20, 30]
    assert duckdb.sql(f"select count(*) from '{tmp_path}/curves/*.parquet'").fetchall() == [(3,)]


def test_a_trial_failing_on_a_full_disk_is_stopped_not_failed(tmp_path):
    """It runs again on resume, and the sweep ends with the storage error (exit 1)."""

    class _FullDisk(_Trial):
        def get_pickled_error(self):
            return RuntimeError("OSError: [Errno 28] No space left on device: '/s/ck.pt'")

    sink = ParquetSink(tmp_path, "s", _Config)
    sink.setup()
    sink.on_trial_error(0, [], _FullDisk("t1", BASE, {"step": 10}))
    sink.on_trial_error(0, [], _Trial("t2", BASE, {"step": 10}))
    rows = {r["trial_id"]: r["status"] for r in load_trials(tmp_path).to_pylist()}
    assert rows == {"t1": "STOPPED", "t2": "ERROR"}
    assert str(sink.storage_error).startswith("storage: no space left writing '/s/ck.pt'")


def _run_trials(sink, trial_ids, steps=(10, 20)):
    for trial_id in trial_ids:
        trial = _Trial(trial_id, BASE, {"step": steps[-1], "val_accuracy": 0.5})
        for step in steps:
            sink.on_trial_result(0, [], trial, {"step": step, "val_accuracy": step / 100})
        sink.on_trial_complete(0, [], trial)


def test_a_running_sweep_is_compacted_every_few_files(tmp_path):
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600, compact_every=4)
    sink.setup()
    _run_trials(sink, [f"t{i:02d}" for i in range(10)])  # the experiment has not ended
    names = sorted(f.name for f in (tmp_path / "trials").glob("*.parquet"))
    assert [n.split("-")[0] for n in names] == ["compact", "compact", "trial", "trial"]
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == [f"t{i:02d}" for i in range(10)]
    assert load_curves(tmp_path).num_rows == 20
    sink.on_experiment_end([])
    assert len(list((tmp_path / "trials").glob("trial-*.parquet"))) == 0
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == [f"t{i:02d}" for i in range(10)]


def test_merged_files_are_merged_again_eight_at_a_time_and_into_one_at_the_end(tmp_path):
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600, compact_every=2)
    sink.setup()
    trial_ids = [f"t{i:02d}" for i in range(41)]  # 20 full segments of 2 trials, and one
    _run_trials(sink, trial_ids)
    names = sorted(f.name for f in (tmp_path / "trials").glob("*.parquet"))
    spans = [n.split(".")[1:3] for n in names if n.startswith("compact-")]
    assert spans == [["000000", "000007"], ["000008", "000015"], ["000016", "000016"],
                     ["000017", "000017"], ["000018", "000018"], ["000019", "000019"]]  # fmt: skip
    assert len([n for n in names if n.startswith("trial-")]) == 1
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids
    sink.on_experiment_end([])
    (only,) = (tmp_path / "trials").glob("*.parquet")
    assert only.name.split(".")[1:3] == ["000000", "000020"]
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids
    assert load_curves(tmp_path).num_rows == 2 * len(trial_ids)


def test_compact_every_below_two_is_refused(tmp_path):
    with pytest.raises(ValueError, match="compact_every must be >= 2, got 1"):
        ParquetSink(tmp_path, "s", _Config, compact_every=1)


@pytest.mark.parametrize("failing", [False, True], ids=["merges", "some_merges_fail"])
def test_a_reader_during_compaction_sees_each_row_exactly_once(tmp_path, monkeypatch, failing):
    """A reader looping while the sink writes and compacts (every 3 files, curve parts at
    every report; ``failing``: every 4th merge fails to read its files while the sweep
    runs): every read holds each trial and each curve row once, every row of the read
    before, and the last read all of them; a glob of the files then reads the same."""
    import threading

    import search.sink

    read, reads_by_merges, ending = search.sink.read_table_file, [0], threading.Event()

    def read_failing_now_and_then(path, columns=None):
        reads_by_merges[0] += 1
        if failing and not ending.is_set() and reads_by_merges[0] % 4 == 0:
            raise OSError(5, "Input/output error", str(path))
        return read(path, columns)

    monkeypatch.setattr(search.sink, "read_table_file", read_failing_now_and_then)
    trial_ids = [f"t{i:03d}" for i in range(150)]
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=0.0, compact_every=3)
    sink.setup()
    _run_trials(sink, trial_ids[:1])
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            _run_trials(sink, trial_ids[1:])
            ending.set()
            sink.on_experiment_end([])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads, seen_trials, seen_keys = 0, set(), set()
    while not done.is_set() or reads == 0:
        trials = load_trials(tmp_path)["trial_id"].to_pylist()
        curves = load_curves(tmp_path).select(["trial_id", "step"]).to_pylist()
        keys = [(r["trial_id"], r["step"]) for r in curves]
        assert len(set(trials)) == len(trials), "a trials row read twice"
        assert len(set(keys)) == len(keys), "a curve row read twice"
        assert seen_trials <= set(trials), "trials rows read before went missing"
        assert seen_keys <= set(keys), "curve rows read before went missing"
        seen_trials, seen_keys, reads = set(trials), set(keys), reads + 1
    writer.join()
    assert not errors, errors
    assert reads >= 5  # the reads overlapped the writes
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids
    assert load_curves(tmp_path).num_rows == 2 * len(trial_ids)
    assert len(list((tmp_path / "trials").glob("*.parquet"))) == 1  # merged into one
    for table in ("trials", "curves"):
        assert _glob(tmp_path, table) == _keys(tmp_path, table)


def test_a_compaction_that_fails_while_running_keeps_the_files_and_the_sweep_going(tmp_path):
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600, compact_every=3)
    sink.setup()
    _run_trials(sink, ["t0", "t1"])
    (damaged,) = [f for f in (tmp_path / "trials").glob("trial-*-t1.parquet")]
    damaged.write_bytes(b"not parquet")  # the third file's compaction cannot read it
    _run_trials(sink, ["t2", "t3"])
    assert damaged.exists() and len(list((tmp_path / "trials").glob("trial-*.parquet"))) == 4
    damaged.unlink()
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == ["t0", "t2", "t3"]


def _glob(tmp_path, table: str) -> list[tuple]:
    """What a user's DuckDB glob reads of a table, as sorted (trial_id, step) keys."""
    columns = "trial_id, step" if table == "curves" else "trial_id, steps"
    query = f"select {columns} from read_parquet('{tmp_path}/{table}/*.parquet') order by 1, 2"
    return duckdb.sql(query).fetchall()


def _keys(tmp_path, table: str) -> list[tuple]:
    loaded = load_curves(tmp_path) if table == "curves" else load_trials(tmp_path)
    columns = ["trial_id", "step" if table == "curves" else "steps"]
    return sorted(tuple(r.values()) for r in loaded.select(columns).to_pylist())


def _spanning_loose_files(directory) -> list[str]:
    """Loose files that a merged file of their run names in its span (readers skip them)."""
    from analysis.tables import coverage, is_compact

    spans = [coverage(f) for f in directory.glob("compact-*.parquet")]
    loose = [(f.name, coverage(f)) for f in directory.glob("*.parquet") if not is_compact(f)]
    return [
        name for name, (run, segment, _) in loose
        if any(r == run and a <= segment <= b for r, a, b in spans)
    ]  # fmt: skip


def test_a_segment_whose_merge_failed_is_never_spanned_by_a_later_merged_file(tmp_path):
    """Segment 3's merge fails (one of its files unreadable for a while): its files stay
    loose and read, the merged files after it do not claim it, the next merge takes it once
    readable, and the end leaves one file that a glob reads as load_trials does."""
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600, compact_every=2)
    sink.setup()
    trial_ids = [f"t{i:02d}" for i in range(18)]
    _run_trials(sink, trial_ids[:7])  # segments 0-2 merged, t06 alone in segment 3
    (damaged,) = (tmp_path / "trials").glob("trial-*-t06.parquet")
    good = damaged.read_bytes()
    damaged.write_bytes(b"not parquet")
    _run_trials(sink, trial_ids[7:8])  # segment 3 is full: its merge fails
    assert damaged.exists()
    damaged.write_bytes(good)
    _run_trials(sink, trial_ids[8:])  # segments 4-8: segment 3 merged again, then 8 into one
    for table in ("trials", "curves"):
        assert _spanning_loose_files(tmp_path / table) == []
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids
    assert load_curves(tmp_path).num_rows == 2 * len(trial_ids)
    sink.on_experiment_end([])
    assert len(list((tmp_path / "trials").glob("*.parquet"))) == 1
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids
    for table in ("trials", "curves"):
        assert _glob(tmp_path, table) == _keys(tmp_path, table)
    assert len(_glob(tmp_path, "curves")) == 2 * len(trial_ids)


def test_a_merge_failing_on_the_disk_for_a_while_loses_no_row(tmp_path, monkeypatch):
    """Every merge of segment 0 fails (a full disk) until the disk has room again: its files
    are read loose meanwhile, though later segments are merged; then merged like the rest."""
    import search.sink

    full = {"disk": True}
    write = search.sink.write_parquet_atomic

    def write_unless_full(table, path):
        if full["disk"] and path.name.startswith("compact-") and ".000000." in path.name:
            raise OSError(28, "No space left on device", str(path))
        write(table, path)

    monkeypatch.setattr(search.sink, "write_parquet_atomic", write_unless_full)
    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600, compact_every=3)
    sink.setup()
    trial_ids = [f"t{i:02d}" for i in range(10)]
    _run_trials(sink, trial_ids[:7])  # segment 0 failed twice, 1 merged, t06 in segment 2
    names = sorted(f.name.split(".")[1:3] for f in (tmp_path / "trials").glob("compact-*"))
    assert names == [["000001", "000001"]]
    assert len(list((tmp_path / "trials").glob("trial-*.000000-*.parquet"))) == 3
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids[:7]
    full["disk"] = False
    _run_trials(sink, trial_ids[7:])
    assert _spanning_loose_files(tmp_path / "trials") == []
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids
    sink.on_experiment_end([])
    (only,) = (tmp_path / "trials").glob("*.parquet")
    assert only.name.split(".")[1:3] == ["000000", "000003"]
    for table in ("trials", "curves"):
        assert _glob(tmp_path, table) == _keys(tmp_path, table)
    assert len(_glob(tmp_path, "curves")) == 2 * len(trial_ids)


def test_a_damaged_file_at_the_end_is_logged_and_the_other_files_stay_readable(tmp_path, caplog):
    from analysis.tables import CorruptResultsError

    sink = ParquetSink(tmp_path, "s", _Config, flush_every_s=3600, compact_every=3)
    sink.setup()
    trial_ids = [f"t{i:02d}" for i in range(5)]
    _run_trials(sink, trial_ids)  # segment 0 merged; t03, t04 loose in segment 1
    (damaged,) = (tmp_path / "trials").glob("trial-*-t04.parquet")
    damaged.write_bytes(b"not parquet")
    sink.on_experiment_end([])  # no exception out of Tune's callback
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "trials" in warnings[0].getMessage()
    assert "not merged" in warnings[0].getMessage()
    with pytest.raises(CorruptResultsError, match="t04"):
        load_trials(tmp_path)
    damaged.unlink()  # what the error says to do
    assert sorted(load_trials(tmp_path)["trial_id"].to_pylist()) == trial_ids[:4]
    assert _glob(tmp_path, "trials") == _keys(tmp_path, "trials")
    assert load_curves(tmp_path).num_rows == 2 * len(trial_ids)  # the curves were merged
    assert len(list((tmp_path / "curves").glob("*.parquet"))) == 1
