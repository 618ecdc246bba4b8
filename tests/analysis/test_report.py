"""The HTML report from a real sweep; every plot checked as a picture."""

import io
import re
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from analysis import compare, load_stages, load_trials, param_importance
from analysis._report import figures, png

EXPECTED = {"learning_curves", "temperature_alpha", "stages", "teacher", "pareto", "importance"}


@pytest.fixture(scope="module")
def results(example_sweep):
    return example_sweep(
        "quickstart.yaml", "report", "num_samples=5", "teacher.optim.steps=300",
        "student.optim.steps=200", "student.eval_every=50",
        "space.curricula=[none, paced, staged]", "repeats=2", "search.n_startup_trials=2",
    )  # fmt: skip


@pytest.mark.ray
def test_every_plot_is_a_labelled_non_blank_picture(results):
    figs = figures(results)
    assert set(figs) == EXPECTED
    for name, fig in figs.items():
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_title(), name
            drawn = ax.lines + ax.collections + ax.patches
            assert drawn, f"{name}: an empty panel"
        assert fig.axes[0].get_ylabel(), name
        assert any(ax.get_legend() is not None for ax in fig.axes), f"{name}: no legend"
        pixels = matplotlib.image.imread(io.BytesIO(png(fig)), format="png")[..., :3]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300, name
        ink = (pixels < 0.9).any(axis=2).mean()  # share of non-white pixels
        assert 0.02 < ink < 0.9 and pixels.std() > 0.05, (name, ink)


@pytest.mark.ray
def test_report_cli_writes_one_self_contained_file(results, tmp_path):
    out = tmp_path / "report.html"
    run = subprocess.run(
        [sys.executable, "-m", "analysis", "report", str(results), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == len(EXPECTED)
    assert "<h2>Against baseline:oneshot (the search's own trials" in page
    assert "http" not in page.split("<h2>")[0]
    # what was selected on which split, and out of how many configurations
    assert "best configuration on val_accuracy (max, validation split)" in page
    assert "reported on test_accuracy (max, test split)" in page
    assert re.search(r"By val_accuracy \(max, validation split\), of \d+ finished trials", page)


@pytest.mark.ray
def test_compare_and_importance_on_the_real_sweep(results):
    table = compare(load_trials(results), baseline="baseline:oneshot")
    assert "baseline:labels_only" in set(table["arm"]) and (table["n"] == 2).all()
    assert set(table["verdict"]) <= {"better", "worse", "not distinguishable", "baseline"}
    importance = param_importance(results)
    assert "distill.alpha" in set(importance["parameter"])
    assert importance["importance"].sum() == pytest.approx(1.0)
    assert np.all(np.diff(importance["importance"]) <= 0)


@pytest.mark.ray
def test_stages_table_has_one_row_per_stage_of_each_trial(results):
    trials = load_trials(results).to_pandas()
    stages = load_stages(results).to_pandas()
    assert set(stages["trial_id"]) == set(trials["trial_id"])
    staged = trials.loc[trials["config.curriculum.kind"] == "staged", "trial_id"]
    assert len(staged) >= 1
    for trial_id in staged:
        rows = stages[stages["trial_id"] == trial_id].sort_values("stage")
        assert rows["stage"].tolist() == list(range(len(rows))) and len(rows) >= 2
        assert (rows["first_step"] <= rows["last_step"]).all()
        assert rows["easy_accuracy"].notna().all()


@pytest.mark.ray
def test_every_trial_has_tensorboard_events(results):
    trials = load_trials(results)
    events = list((results / "tune" / "students").glob("*/events.out.tfevents.*"))
    assert len(events) == trials.num_rows and all(e.stat().st_size > 0 for e in events)
    for event_file in events:  # hyperparameters named by config path, not Tune's a/b
        logged = event_file.read_bytes()
        assert b"distill.alpha" in logged and b"distill/alpha" not in logged


@pytest.mark.ray
def test_teacher_table_holds_the_curve_its_transition_is_detected_on(results):
    from analysis import load_teacher

    teacher = load_teacher(results).to_pandas()
    assert teacher["train_accuracy"].notna().all()  # no holdout: its training accuracy
    assert teacher["holdout_accuracy"].isna().all()
    assert teacher["train_accuracy"].iloc[-1] > teacher["train_accuracy"].iloc[0]
