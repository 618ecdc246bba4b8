"""The report's plot of bandit arm probabilities and mixture weights, on a synthetic sweep
written with the real trials and curves schemas; the plotted means checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from analysis import load_curves, load_trials
from analysis._best import frame
from analysis._report import fig_arms, figures, render_report
from analysis.tables import (
    CURVE_SCHEMA,
    CURVES,
    TRIALS,
    config_row,
    part_file,
    read_table_file,
    trial_file,
    trials_schema,
    write_parquet_atomic,
)
from trainables.config import StudentConfig, settings

RUN = "a1b2c3d4"
STEPS = (10, 20)
# trial_id: (curriculum kind, {step: {arm: probability}}); the bandits' arm sets differ
ARMS = {
    "b1": ("bandit", {10: {"easy": 0.5, "hard": 0.5}, 20: {"easy": 0.2, "hard": 0.8}}),
    "b2": ("bandit", {10: {"easy": 0.7, "hard": 0.3}, 20: {"easy": 0.4, "hard": 0.6}}),
    "b3": ("bandit", {10: {"clean": 1.0}, 20: {"clean": 0.9, "noisy": 0.1}}),
    "m1": ("mixture", {10: {"clean": 0.9, "noisy": 0.1}, 20: {"clean": 0.6, "noisy": 0.4}}),
    "n1": ("none", {}),
}
# by hand: per kind, arm and step, the mean over the trials that had the arm
EXPECTED = {
    "bandit": {"easy": [0.6, 0.3], "hard": [0.4, 0.7], "clean": [1.0, 0.9], "noisy": [0.1]},
    "mixture": {"clean": [0.9, 0.6], "noisy": [0.1, 0.4]},
}


def _sweep(root: Path, arms: dict = ARMS) -> Path:
    """One trials file per trial (every setting at its default but the curriculum kind) and
    one curves part, as the sink writes them."""
    sweep = root / "s"
    schema = trials_schema(StudentConfig)
    base = config_row(settings(StudentConfig()), schema)
    for directory in (TRIALS, CURVES):
        (sweep / directory).mkdir(parents=True)
    curves = []
    for i, (trial_id, (kind, by_step)) in enumerate(arms.items()):
        row = dict.fromkeys(schema.names) | base
        row |= {"sweep": "s", "trial_id": trial_id, "status": "TERMINATED", "seed": i,
                "config.arm": "search", "config.curriculum.kind": kind,
                "val_accuracy": 0.5 + i / 20}  # fmt: skip
        table = pa.Table.from_pylist([row], schema=schema)
        write_parquet_atomic(table, sweep / TRIALS / trial_file(RUN, trial_id))
        for step in STEPS:
            probs = by_step.get(step)
            curves.append({
                "sweep": "s", "trial_id": trial_id, "step": step, "val_accuracy": step / 40,
                "arm_names": None if probs is None else list(probs),
                "arm_probs": None if probs is None else list(probs.values()),
            })  # fmt: skip
    table = pa.Table.from_pylist(curves, schema=CURVE_SCHEMA)
    write_parquet_atomic(table, sweep / CURVES / part_file(RUN, 0))
    return sweep


def _tables(sweep: Path):
    return load_curves(sweep).to_pandas(), frame(load_trials(sweep))


def test_each_kind_has_a_panel_with_the_mean_probability_of_each_arm(tmp_path):
    fig = fig_arms(*_tables(_sweep(tmp_path)))
    assert fig is not None and len(fig.axes) == 2
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Bandit arm probabilities", "Mixture weights over the run"]
    for ax, kind in zip(fig.axes, EXPECTED, strict=True):
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == set(EXPECTED[kind])
        for arm, means in EXPECTED[kind].items():
            steps = list(STEPS) if len(means) == 2 else [20]
            np.testing.assert_allclose(lines[arm].get_xdata(), steps)
            np.testing.assert_allclose(lines[arm].get_ydata(), means)
        assert ax.get_ylim() == (0, 1) and ax.get_xlabel() == "student step"
        assert ax.get_legend() is not None
    assert fig.axes[0].get_ylabel() == "probability of drawing the arm"


def test_a_band_from_the_quartiles_only_with_three_trials(tmp_path):
    three = {f"m{i}": ("mixture", {10: {"clean": p, "noisy": 1 - p}}) for i, p in
             enumerate([0.3, 0.5, 0.9])}  # fmt: skip
    fig = fig_arms(*_tables(_sweep(tmp_path, three)))
    (ax,) = fig.axes
    assert len(ax.collections) == 2  # one band per arm
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    # the linear quartiles of 0.3, 0.5, 0.9 (clean, the most drawn arm)
    assert band.min() == pytest.approx(0.4) and band.max() == pytest.approx(0.7)
    fig = fig_arms(*_tables(_sweep(tmp_path / "few")))
    assert all(not ax.collections for ax in fig.axes)  # at most two trials per arm


def test_at_most_ten_arms_the_most_drawn_and_the_title_says_so(tmp_path):
    probs = {f"arm{i:02d}": (i + 1) / 78 for i in range(12)}  # sums to 1
    fig = fig_arms(*_tables(_sweep(tmp_path, {"b1": ("bandit", {10: probs, 20: probs})})))
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == [f"arm{i:02d}" for i in range(11, 1, -1)]
    assert ax.get_title() == "Bandit arm probabilities\n(10 most drawn of 12 arms)"


def test_no_figure_without_bandit_or_mixture_trials(tmp_path):
    sweep = _sweep(tmp_path, {"n1": ("none", {}), "p1": ("paced", {})})
    assert fig_arms(*_tables(sweep)) is None


def test_no_figure_for_curves_from_before_the_arm_columns(tmp_path):
    sweep = _sweep(tmp_path)
    part = sweep / CURVES / part_file(RUN, 0)
    write_parquet_atomic(read_table_file(part).drop_columns(["arm_names", "arm_probs"]), part)
    curves, trials = _tables(sweep)
    assert "arm_names" not in curves.columns
    assert fig_arms(curves, trials) is None
    assert "arms" not in figures(sweep)


def test_the_report_holds_the_arms_plot(tmp_path):
    page = render_report(_sweep(tmp_path), tmp_path / "report.html").read_text()
    assert 'alt="arms"' in page
    page = render_report(_sweep(tmp_path / "plain", {"n1": ("none", {})}), tmp_path / "r.html")
    assert 'alt="arms"' not in page.read_text()
