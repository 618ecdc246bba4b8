"""The ready queries (trial_curve, arm_summary, curves_with_settings) on tables the real sink
wrote from stand-in trials, checked against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel

import analysis
from analysis import ResultsError, arm_summary, curves_with_settings, trial_curve
from search.sink import ParquetSink


class _Curriculum(BaseModel):
    kind: str = "none"


class _Config(BaseModel):
    seed: int = 0
    arm: str = "search"
    curriculum: _Curriculum = _Curriculum()
    temperature: float = 2.0


class _Trial:  # stand-in for ray.tune.experiment.Trial (only what the sink reads)
    def __init__(self, trial_id: str, config: dict, last_result: dict) -> None:
        self.trial_id, self.config, self.last_result = trial_id, config, last_result
        self.error_file = None

    def get_pickled_error(self) -> Exception:
        return RuntimeError("ValueError: diverged")


# trial_id: (arm, kind, temperature, final val_accuracy, steps_to_target)
TRIALS = {
    "a1": ("search", "paced", 1.0, 0.5, None),
    "a2": ("search", "paced", 2.0, 0.7, 30),
    "a3": ("search", "none", 4.0, 0.9, 50),
    "b1": ("baseline:oneshot", "none", 2.0, 0.6, 20),
}


def _sweep(directory: Path, *, running: str | None = None, name: str = "q") -> Path:
    """Each trial reports steps 10, 20, 30 (val_accuracy = final * step / 30), then ends;
    ``failed`` ends with an error; ``running`` only reports."""
    sink = ParquetSink(directory, name, _Config, flush_every_s=3600)
    sink.setup()
    for trial_id, (arm, kind, temperature, final, steps) in TRIALS.items():
        config = {"seed": 1, "arm": arm, "curriculum": {"kind": kind}, "temperature": temperature}
        last = {"step": 30, "val_accuracy": final, "steps_to_target": steps}
        trial = _Trial(trial_id, config, last)
        for step in (10, 20, 30):
            sink.on_trial_result(0, [], trial, {"step": step, "val_accuracy": final * step / 30})
        sink.on_trial_complete(0, [], trial)
    sink.on_trial_error(0, [], _Trial("failed", {"arm": "search"}, {"step": 10}))
    if running:
        sink.on_trial_result(0, [], _Trial(running, {}, {}), {"step": 10, "val_accuracy": 0.1})
        sink.flush()
    else:
        sink.on_experiment_end([])
    return directory


def test_trial_curve_is_one_trials_rows_by_step(tmp_path):
    results = _sweep(tmp_path)
    curve = trial_curve(results, "a2")
    assert isinstance(curve, pd.DataFrame)
    assert curve["step"].tolist() == [10, 20, 30]
    assert curve["val_accuracy"].tolist() == pytest.approx([0.7 / 3, 0.7 * 2 / 3, 0.7])
    assert set(curve["trial_id"]) == {"a2"}
    with pytest.raises(ResultsError, match="trial_id: 'nope' has no rows"):
        trial_curve(results, "nope")


def test_arm_summary_counts_reached_and_summarises_the_metric_per_arm(tmp_path):
    out = arm_summary(_sweep(tmp_path))  # the failed trial is not TERMINATED: left out
    assert isinstance(out, pd.DataFrame)
    assert out["config.arm"].tolist() == ["search", "baseline:oneshot"]  # best first
    search, baseline = out.to_dict("records")
    assert (search["trials"], search["reached"]) == (3, 2)
    assert search["steps_to_target_median"] == 40  # over a2 and a3 only
    assert search["val_accuracy_median"] == pytest.approx(0.7)
    assert search["val_accuracy_mean"] == pytest.approx(0.7)
    assert search["val_accuracy_best"] == pytest.approx(0.9)
    assert (baseline["trials"], baseline["reached"], baseline["val_accuracy_best"]) == (1, 1, 0.6)


def test_arm_summary_by_a_setting_and_in_the_direction_asked(tmp_path):
    results = _sweep(tmp_path)
    out = arm_summary(analysis.load_trials(results), by="curriculum.kind", mode="min")
    assert out["config.curriculum.kind"].tolist() == ["paced", "none"]  # lowest first
    paced = out.set_index("config.curriculum.kind").loc["paced"]
    assert paced["val_accuracy_best"] == pytest.approx(0.5) and paced["reached"] == 1
    with pytest.raises(ResultsError, match="column 'nope' is not in the trials table"):
        arm_summary(results, by="nope")


def test_curves_with_settings_joins_each_row_to_its_trial(tmp_path):
    results = _sweep(tmp_path, running="r1")
    out = curves_with_settings(results)
    assert isinstance(out, pd.DataFrame)
    assert len(out) == len(analysis.load_curves(results)) == 3 * len(TRIALS) + 1
    assert {"seed", "status", "config.arm", "config.curriculum.kind"} <= set(out.columns)
    for row in out[out["trial_id"] != "r1"].to_dict("records"):
        arm, kind, temperature, _, _ = TRIALS[row["trial_id"]]
        assert (row["config.arm"], row["config.curriculum.kind"]) == (arm, kind)
        assert row["config.temperature"] == temperature and row["status"] == "TERMINATED"
    (running,) = out[out["trial_id"] == "r1"].to_dict("records")  # no trials row yet
    assert running["status"] is None or math.isnan(running["status"])
    some = curves_with_settings(results, columns=["temperature"])
    assert [c for c in some.columns if c.startswith("config.")] == [
        "config.arm",
        "config.temperature",
    ]


def test_misused_queries_say_what_to_pass_in_one_line(tmp_path):
    sweep = _sweep(tmp_path / "q")
    with pytest.raises(ResultsError, match="no 'step' column"):
        trial_curve(analysis.load_trials(sweep), "a1")  # the trials table, not the curves
    one = curves_with_settings(sweep, columns="curriculum.kind")  # a name alone, not its letters
    assert "config.curriculum.kind" in one.columns
    with pytest.raises(ResultsError, match="did you mean curriculum.kind"):
        arm_summary(sweep, by="curriculum.knd")


def test_arm_summary_refuses_to_pool_the_arms_of_several_sweeps(tmp_path):
    _sweep(tmp_path / "one", name="one")
    _sweep(tmp_path / "two", name="two")
    with pytest.raises(ResultsError, match="2 sweeps.*summarise one sweep's directory"):
        arm_summary(tmp_path)
    per_sweep = arm_summary(tmp_path, by="sweep")
    assert sorted(per_sweep["sweep"]) == ["one", "two"] and set(per_sweep["trials"]) == {4}
