"""The new curriculum kinds through a real sweep (Ray Tune, Optuna, Parquet): a searched data
mix finds the source that matches the test distribution, and bandit trials write their arm
probabilities to the curves table and the report."""

import json
from pathlib import Path

import pytest

from analysis import load_curves, load_trials
from analysis._report import render_report
from search.spec import load_spec
from search.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[2]

SHORT = ["student.optim.steps=300", "student.eval_every=50", "teacher.optim.steps=300",
         "search.n_startup_trials=4", "baselines=[]"]  # fmt: skip


@pytest.mark.ray
def test_a_searched_mixture_puts_the_most_weight_on_the_clean_source(ray_session, tmp_path):
    """Half the training rows are random labels (source noisy); validation and test are clean,
    so clean is the one source that matches them: the best constant mix weights it most."""
    spec = load_spec(
        ROOT / "examples" / "data_mix.yaml",
        [f"storage={tmp_path}", "num_samples=10", "space.mixture_schedules=[constant]", *SHORT],
    )
    trials = load_trials(run_sweep(spec)).to_pandas()
    assert (trials["status"] == "TERMINATED").all(), trials["error"].dropna().tolist()
    weights = [json.loads(w) for w in trials["config.curriculum.mixture.weights"]]
    assert all(set(w) == {"clean", "noisy"} for w in weights)
    best = trials["val_accuracy"].idxmax()
    share = weights[best]["clean"] / sum(weights[best].values())
    assert share > 0.5, (share, trials["val_accuracy"].tolist())
    curves = load_curves(tmp_path / "data-mix").to_pandas()
    for names, probs in zip(curves["arm_names"], curves["arm_probs"], strict=True):
        assert list(names) == ["clean", "noisy"] and sum(probs) == pytest.approx(1.0)


@pytest.mark.ray
def test_bandit_trials_write_arm_probabilities_and_the_report_plots_them(ray_session, tmp_path):
    spec = load_spec(
        ROOT / "examples" / "bandit_curriculum.yaml",
        [f"storage={tmp_path}", "num_samples=4", *SHORT],
    )
    sweep = run_sweep(spec)
    trials = load_trials(sweep).to_pandas()
    assert (trials["status"] == "TERMINATED").all(), trials["error"].dropna().tolist()
    assert set(trials["config.curriculum.kind"]) == {"none", "bandit"}  # cover_curricula
    curves = (
        load_curves(sweep)
        .to_pandas()
        .merge(trials[["trial_id", "config.curriculum.kind"]], on="trial_id")
    )
    bandit = curves[curves["config.curriculum.kind"] == "bandit"]
    assert len(bandit) and all(list(n) == ["clean", "noisy"] for n in bandit["arm_names"])
    assert curves.loc[curves["config.curriculum.kind"] == "none", "arm_probs"].isna().all()
    page = render_report(sweep, tmp_path / "report.html").read_text()
    assert 'alt="arms"' in page


def test_a_teacher_bank_from_before_shapley_is_refused_in_one_line(monkeypatch, tmp_path):
    """Teacher runs are keyed by their settings: one trained before KNN-Shapley scores
    existed is reused without them; a sweep that uses the score refuses it up front."""
    import types

    import search.sweep as sweep
    from search.errors import SweepInputError

    old = types.SimpleNamespace(scores={"confidence": None, "loss": None})
    monkeypatch.setattr(sweep, "open_bank", lambda bank: old)
    spec = load_spec(
        ROOT / "examples" / "quickstart.yaml",
        [
            f"storage={tmp_path}",
            "student.curriculum.kind=paced",
            "student.curriculum.score=shapley",
        ],
    )
    bank = tmp_path / "_teachers" / "key" / "bank-x"
    with pytest.raises(SweepInputError, match=r"'shapley' is not in the teacher bank .*remove"):
        sweep._check_scores(spec, bank)
    no_shapley = load_spec(ROOT / "examples" / "quickstart.yaml", [f"storage={tmp_path}"])
    assert sweep._check_scores(no_shapley, bank) is no_shapley  # it lists confidence only
    every = load_spec(ROOT / "examples" / "all_curricula.yaml", [f"storage={tmp_path}"])
    assert "shapley" in every.space.scores  # the all preset's default list
    kept = sweep._check_scores(every, bank)
    assert kept.space.scores == [s for s in every.space.scores if s != "shapley"]
    listed = load_spec(
        ROOT / "examples" / "all_curricula.yaml",
        [f"storage={tmp_path}", "space.scores=[confidence, shapley]"],
    )
    with pytest.raises(SweepInputError, match="leave shapley out"):
        sweep._check_scores(listed, bank)
