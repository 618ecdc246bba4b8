"""The study learns a trial's result only once the trials table holds its row, so a driver
killed between Tune's two completion hooks never leaves a told trial without a row (which a
resumed sweep would run again: one study trial told twice for one searched trial)."""

from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher

from analysis import load_curves, load_trials
from analysis.tables import STUDY_NAME
from search._resume import plan_resume
from search._study import (
    TRIAL_ID_ATTR,
    WithBaselines,
    open_study,
    optuna_searcher,
    study_storage,
)
from search.sink import ParquetSink
from search.spec import validate_spec
from trainables.config import StudentConfig

ROOT = Path(__file__).resolve().parents[2]


class _Trial:  # stand-in for ray.tune.experiment.Trial (only what the sink reads)
    def __init__(self, trial_id, config, last_result):
        self.trial_id, self.config, self.last_result = trial_id, config, last_result
        self.error_file = None


def _sweep(tmp_path, storage=None):
    spec = validate_spec(
        {"name": "told", "storage": str(tmp_path), "num_samples": 2, "baselines": [],
         "search": {"algorithm": "random", "cover_curricula": False}}
    )  # fmt: skip
    storage = storage or study_storage(spec)
    study = open_study(spec, storage)
    searcher = WithBaselines(optuna_searcher(spec, storage), [])
    searcher.set_search_properties(None, None, {})
    sink = ParquetSink(spec.sweep_dir, spec.name, StudentConfig, on_written=searcher.tell)
    sink.setup()
    return spec, study, searcher, sink


def _complete(searcher, sink, trial_id, *, killed_between=False):
    """What Tune's ``stop_trial`` does: the searcher's hook, then the callbacks'."""
    config = {**StudentConfig().model_dump(), **searcher.suggest(trial_id)}
    result = {"step": 100, "val_accuracy": 0.5, "trial_id": trial_id}
    searcher.on_trial_complete(trial_id, result=result)
    if not killed_between:
        sink.on_trial_complete(0, [], _Trial(trial_id, config, result))


def _states(study):
    return sorted(t.state.name for t in study.get_trials(deepcopy=False))


def test_a_trial_is_told_after_its_row_is_written(tmp_path):
    spec, study, searcher, sink = _sweep(tmp_path)
    _complete(searcher, sink, "a")
    assert _states(study) == ["COMPLETE"]
    assert load_trials(spec.sweep_dir).num_rows == 1


def test_a_driver_killed_between_the_hooks_leaves_the_trial_to_run_again_once(tmp_path):
    spec, study, searcher, sink = _sweep(tmp_path)
    _complete(searcher, sink, "a")
    _complete(searcher, sink, "b", killed_between=True)  # the driver dies here
    assert _states(study) == ["COMPLETE", "RUNNING"]  # not told: no row
    plan = plan_resume(spec, study, runs=1)
    assert plan.remaining == 1  # b runs again ...
    assert _states(study) == ["COMPLETE", "FAIL", "WAITING"]  # ... with its own parameters
    resumed = WithBaselines(optuna_searcher(spec, study_storage(spec), 1), [])
    resumed.set_search_properties(None, None, {})
    sink = ParquetSink(spec.sweep_dir, spec.name, StudentConfig, on_written=resumed.tell)
    sink.setup()
    _complete(resumed, sink, "b2")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == spec.num_samples == load_trials(spec.sweep_dir).num_rows


class _CountingBackend(optuna.storages.journal.JournalFileBackend):
    """A journal file counting its writes (each one takes the file lock and fsyncs)."""

    writes = 0

    def append_logs(self, logs):
        type(self).writes += 1
        super().append_logs(logs)


def test_intermediate_values_reach_the_study_in_one_write_when_the_trial_is_told(tmp_path):
    storage = optuna.storages.JournalStorage(_CountingBackend(str(tmp_path / "j.log")))
    spec, study, searcher, sink = _sweep(tmp_path, storage)
    config = {**StudentConfig().model_dump(), **searcher.suggest("a")}
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.user_attrs[TRIAL_ID_ATTR] == "a"  # set when suggested
    before = _CountingBackend.writes
    for step in (10, 20, 30):
        searcher.on_trial_result("a", {"step": step, "val_accuracy": step / 100})
    assert _CountingBackend.writes == before  # buffered, not one write per report
    result = {"step": 30, "val_accuracy": 0.3}
    searcher.on_trial_complete("a", result=result)
    sink.on_trial_complete(0, [], _Trial("a", config, result))
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.intermediate_values == {10: 0.1, 20: 0.2, 30: 0.3}
    assert _CountingBackend.writes == before + 2  # the values in one write, then the result
    assert trial.state == optuna.trial.TrialState.COMPLETE


def test_a_long_trials_values_are_written_every_report_batch(tmp_path):
    spec, study, searcher, sink = _sweep(tmp_path)
    searcher.suggest("a")
    for step in range(1, searcher.report_batch + 2):
        searcher.on_trial_result("a", {"step": step, "val_accuracy": 0.5})
    (trial,) = study.get_trials(deepcopy=False)  # still running: the dashboard shows them
    assert sorted(trial.intermediate_values) == list(range(1, searcher.report_batch + 1))


@pytest.mark.ray
def test_a_sweep_keeps_its_study_in_a_database_given_by_url(ray_session, tmp_path):
    """``search.study_storage``: the study lives in the database, and the URL (which may hold
    a password) is not pickled into Tune's experiment files."""
    from search.spec import load_spec
    from search.sweep import run_sweep

    url = f"sqlite:///{tmp_path}/studies.db"
    spec = load_spec(
        ROOT / "examples" / "quickstart.yaml",
        [f"storage={tmp_path}", "name=db", "num_samples=2", "baselines=[]",
         "teacher.optim.steps=100", "student.optim.steps=60", "student.eval_every=20",
         "search.cover_curricula=false", f"search.study_storage={url}"],
    )  # fmt: skip
    run_sweep(spec)
    study = optuna.load_study(study_name=STUDY_NAME, storage=url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2
    # optuna-dashboard: each study trial names its Parquet row and carries its curve
    rows = load_trials(spec.sweep_dir).to_pandas().set_index("trial_id")
    curves = load_curves(spec.sweep_dir).to_pandas()
    assert sorted(t.user_attrs[TRIAL_ID_ATTR] for t in complete) == sorted(rows.index)
    for trial in complete:
        trial_id = trial.user_attrs[TRIAL_ID_ATTR]
        curve = curves[curves["trial_id"] == trial_id]
        assert sorted(trial.intermediate_values) == sorted(curve["step"]) == [20, 40, 60]
        for step, value in zip(curve["step"], curve["val_accuracy"], strict=True):
            assert trial.intermediate_values[step] == pytest.approx(value)
        assert trial.value == pytest.approx(rows.loc[trial_id, "val_accuracy"])
    assert not (spec.sweep_dir / "optuna.journal").exists()
    for pickled in (spec.sweep_dir / "tune").rglob("*.pkl"):
        assert b"studies.db" not in pickled.read_bytes(), pickled


def test_a_value_the_study_refuses_is_logged_not_the_end_of_the_sweep(tmp_path, caplog):
    spec, study, searcher, sink = _sweep(tmp_path)
    searcher.suggest("a")
    (trial,) = study.get_trials(deepcopy=False)
    study.tell(trial.number, 0.5)  # finished behind the searcher's back: no more writes
    for step in range(1, searcher.report_batch + 1):
        searcher.on_trial_result("a", {"step": step, "val_accuracy": 0.5})
    assert "study: not written for the dashboard" in caplog.text
    assert study.get_trials(deepcopy=False)[0].intermediate_values == {}


def test_a_journal_written_in_batches_replays_the_same_values_in_a_fresh_storage(tmp_path):
    """The batch is raw journal operations (Optuna's internals): a new storage on the same
    file (a resumed sweep, optuna-dashboard) replays them as the values written."""
    spec, study, searcher, sink = _sweep(tmp_path)
    config = {**StudentConfig().model_dump(), **searcher.suggest("a")}
    searcher.suggest("b")  # still running when the journal is read again
    steps = range(1, searcher.report_batch + 4)
    for step in steps:
        for trial_id in ("a", "b"):
            searcher.on_trial_result(trial_id, {"step": step, "val_accuracy": step / 64})
    result = {"step": steps[-1], "val_accuracy": steps[-1] / 64}
    searcher.on_trial_complete("a", result=result)
    sink.on_trial_complete(0, [], _Trial("a", config, result))
    written = {t.user_attrs[TRIAL_ID_ATTR]: t for t in study.get_trials(deepcopy=False)}
    assert written["a"].intermediate_values == {s: s / 64 for s in steps}
    assert sorted(written["b"].intermediate_values) == list(range(1, searcher.report_batch + 1))

    backend = optuna.storages.journal.JournalFileBackend(str(spec.sweep_dir / "optuna.journal"))
    fresh = optuna.load_study(
        study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(backend)
    )
    replayed = {t.user_attrs[TRIAL_ID_ATTR]: t for t in fresh.get_trials(deepcopy=False)}
    for trial_id in ("a", "b"):
        assert replayed[trial_id].intermediate_values == written[trial_id].intermediate_values
        assert replayed[trial_id].state == written[trial_id].state
    assert replayed["a"].value == pytest.approx(result["val_accuracy"])


class _OtherOptunaSearch(Searcher):
    """An OptunaSearch of another Ray version: it keeps its study trials elsewhere."""

    def __init__(self) -> None:
        super().__init__(metric="val_accuracy", mode="max")

    def suggest(self, trial_id):
        return {"distill.temperature": 2.0}

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        pass


def test_a_ray_without_its_study_trials_is_said_once_in_the_log(caplog):
    searcher = WithBaselines(_OtherOptunaSearch(), [])
    assert searcher.suggest("a") == {"distill": {"temperature": 2.0}}
    searcher.suggest("b")
    for step in range(1, searcher.report_batch + 1):
        searcher.on_trial_result("a", {"step": step, "val_accuracy": 0.5})
    said = [r for r in caplog.records if "_ot_trials" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert "no intermediate values for the dashboard" in said[0].getMessage()
