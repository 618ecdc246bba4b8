"""The trials table of a real sweep says what each trial used: a setting its kind does not use
is null, lists are Arrow lists (Ray Tune + Optuna + PyTorch + Parquet, one tiny sweep)."""

import duckdb
import pytest

from analysis import load_trials

KINDS = ["none", "paced", "confidence", "self_paced", "focal", "importance", "rho", "staged"]

# What each pacing kind reads (besides its kind), written out here, not taken from the config.
PACING_USES = {
    "constant": set(),
    "linear": {"start", "full_at", "changes"},
    "quadratic": {"start", "full_at", "changes"},
    "root": {"start", "full_at", "changes"},
    "exp": {"start", "full_at", "changes"},
    "log": {"start", "full_at", "changes"},
    "step": {"start", "full_at", "changes", "num_steps"},
    "competence": {"start", "full_at", "changes", "power"},
    "exp_steps": {"start", "inc", "step_length", "changes"},
}
SCHEDULE_USES = {
    "constant": set(), "linear": {"end"}, "cosine": {"end"}, "ctkd": {"warmup"},
    "step": {"boundaries", "values"}, "stage": {"end", "values"},
}  # fmt: skip


def _pacing(row: dict) -> set[str]:
    kind = row["config.curriculum.pacing.kind"]
    return {"pacing.kind"} | {f"pacing.{name}" for name in PACING_USES[kind]}


def curriculum_uses(row: dict) -> set[str]:
    """The ``curriculum.*`` settings a trial of this row's kind reads."""
    kind = row["config.curriculum.kind"]
    used = {"kind", "prune_fraction"}
    orders = kind in ("paced", "staged")
    if orders:
        used.add("order")
    if kind == "paced":
        used |= _pacing(row)
    elif kind == "confidence":
        used |= {"beta_max", "pool_factor"}
    elif kind == "self_paced":
        growth = row["config.curriculum.self_paced.growth"]
        used |= {"self_paced.regularizer", "self_paced.growth"}
        used |= _pacing(row) if growth == "pacing" else {"self_paced.lambda0", "self_paced.mu"}
        if row["config.curriculum.self_paced.regularizer"] == "mixture":
            used.add("self_paced.mixture_ratio")
    elif kind == "focal":
        used.add("focal_gamma")
    elif kind == "importance":
        used |= {"pool_factor", "importance_smoothing"}
    elif kind == "rho":
        used |= {"pool_factor", "rho_holdout_steps", "rho_holdout_fraction"}
    elif kind == "staged":
        progression = row["config.curriculum.progression"]
        used |= {"stages", "progression"}
        used |= {"threshold": {"gate_threshold"}, "plateau": {"gate_patience"}}.get(
            progression, set()
        )
        if progression != "fixed":  # a gate: measured on training rows held out for it
            used.add("gate_holdout_fraction")
    # the score orders the data (unless the order is random) and picks what pruning drops
    if orders and row["config.curriculum.order"] != "random":
        used.add("score")
    if row["config.curriculum.prune_fraction"] > 0:
        used.add("prune_by")
        if row["config.curriculum.prune_by"] == "score":
            used.add("score")
    return {f"curriculum.{name}" for name in used}


def distill_uses(row: dict) -> set[str]:
    """The ``distill.*`` and ``teacher_schedule.*`` settings the trial reads."""
    if row["config.distill.alpha"] == 1.0:  # labels only: no teacher signal at all
        return {"distill.alpha", "distill.alpha_schedule.kind"}
    schedule = row["config.distill.temperature_schedule.kind"]
    used = {"distill.loss", "distill.temperature", "distill.alpha", "distill.alpha_schedule.kind",
            "distill.temperature_schedule.kind", "teacher_schedule.kind"}  # fmt: skip
    used |= {f"distill.temperature_schedule.{name}" for name in SCHEDULE_USES[schedule]}
    assert row["config.teacher_schedule.kind"] == "final"  # uses nothing else
    return used


@pytest.fixture(scope="module")
def results(example_sweep):
    # all_curricula.yaml's space holds every kind; cover_curricula runs each once first
    return example_sweep(
        "all_curricula.yaml", "used", f"num_samples={len(KINDS)}", "search.cover_curricula=true",
        "student.optim.steps=40", "student.eval_every=20", "student.model.hidden=[16, 8]",
        "teacher.optim.steps=100", "space.alpha=[0.0, 0.9]", "baselines=[labels_only]",
    )  # fmt: skip


def test_the_sweep_covers_every_curriculum_kind(results):
    assert sorted(set(load_trials(results)["config.curriculum.kind"].to_pylist())) == sorted(KINDS)


@pytest.fixture(scope="module")
def rows(results) -> list[dict]:
    return load_trials(results).to_pylist()


@pytest.mark.ray
def test_the_sweep_covers_every_curriculum_kind_and_the_baseline(rows):
    assert all(r["status"] == "TERMINATED" for r in rows), [r["error"] for r in rows]
    searched = [r for r in rows if r["config.arm"] == "search"]
    assert sorted(r["config.curriculum.kind"] for r in searched) == sorted(KINDS)
    assert [r["config.arm"] for r in rows if r not in searched] == ["baseline:labels_only"]


@pytest.mark.ray
@pytest.mark.parametrize("kind", KINDS)
def test_a_kind_has_nulls_exactly_in_the_curriculum_settings_it_does_not_use(rows, kind):
    (row,) = [
        r for r in rows if r["config.arm"] == "search" and r["config.curriculum.kind"] == kind
    ]
    columns = {c.removeprefix("config.") for c in row if c.startswith("config.curriculum.")}
    used = curriculum_uses(row)
    assert used <= columns
    assert {c for c in columns if row[f"config.{c}"] is not None} == used
    teacher = {c.removeprefix("config.") for c in row if c.startswith(("config.distill.",
               "config.teacher_schedule."))}  # fmt: skip
    assert {c for c in teacher if row[f"config.{c}"] is not None} == distill_uses(row)


@pytest.mark.ray
def test_the_labels_only_baseline_has_no_temperature_or_teacher_settings(rows):
    (row,) = [r for r in rows if r["config.arm"] == "baseline:labels_only"]
    assert row["config.distill.alpha"] == 1.0
    assert row["config.distill.temperature"] is None and row["config.distill.loss"] is None
    assert row["config.teacher_schedule.kind"] is None
    assert {c for c in row if c.startswith("config.curriculum.") and row[c] is not None} == {
        "config.curriculum.kind", "config.curriculum.prune_fraction"
    }  # fmt: skip
    assert row["config.curriculum.kind"] == "none"


@pytest.mark.ray
def test_lists_are_arrow_lists_duckdb_can_index(results, rows):
    widths = duckdb.sql(
        f"""select "config.model.hidden"[1] from read_parquet('{results}/trials/*.parquet')"""
    ).fetchall()
    assert widths == [(16,)] * len(rows)
    (staged,) = [r for r in rows if r["config.curriculum.kind"] == "staged"]
    assert [s["band"][0] for s in staged["config.curriculum.stages"]] == [0.0, 0.0, 0.0]
