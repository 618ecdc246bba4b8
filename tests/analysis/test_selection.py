"""Selection that honours each metric's direction, arms that are always named, Welch tests
with Holm's correction, confirmation rows, and what a comparison says it selected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis import (
    best_schedules,
    compare,
    compare_results,
    direction,
    holm,
    load_trials,
    mean_ci,
    pareto,
    welch,
)
from analysis.cli import main
from analysis.tables import (
    CONFIRM,
    SWEEP_MANIFEST,
    TRIALS,
    config_row,
    trial_file,
    trials_schema,
    write_parquet_atomic,
)
from trainables.config import StudentConfig, settings


def _write_sweep(
    root: Path, rows: list[dict], *, metric: str = "val_accuracy", mode: str = "max", name="s"
) -> Path:
    """A sweep directory as the sink writes it: one trials file per row, and a manifest
    holding the spec's metric and mode."""
    sweep = root / name
    (sweep / TRIALS).mkdir(parents=True, exist_ok=True)
    manifest = {"sweep": name, "spec": {"name": name, "metric": metric, "mode": mode}}
    (sweep / SWEEP_MANIFEST).write_text(json.dumps(manifest))
    _write_rows(sweep / TRIALS, rows, name)
    return sweep


def _write_rows(directory: Path, rows: list[dict], sweep: str) -> None:
    schema = trials_schema(StudentConfig)
    base = config_row(settings(StudentConfig()), schema)
    directory.mkdir(parents=True, exist_ok=True)
    for row in rows:
        full = dict.fromkeys(schema.names)
        full.update(base)
        full.update({"sweep": sweep, "status": "TERMINATED", "seed": 0, "config.arm": "search"})
        full.update(row)
        table = pa.Table.from_pylist([full], schema=schema)
        write_parquet_atomic(table, directory / trial_file("t", full["trial_id"]))


# The progressive-distillation sweep of the report: searched on steps to target (min).
_STEPS = [
    {"trial_id": "lockstep", "config.teacher_schedule.kind": "lockstep",
     "steps_to_target_capped": 4700, "val_accuracy": 0.99, "test_accuracy": 0.97},
    {"trial_id": "two_shot", "config.teacher_schedule.kind": "two_shot",
     "steps_to_target_capped": 1550, "val_accuracy": 0.98, "test_accuracy": 0.96},
    {"trial_id": "final", "config.arm": "baseline:oneshot",
     "config.teacher_schedule.kind": "final", "steps_to_target_capped": 6000,
     "val_accuracy": 0.97, "test_accuracy": 0.95},
]  # fmt: skip


def test_a_minimised_metric_selects_its_smallest_trial_everywhere(tmp_path):
    sweep = _write_sweep(tmp_path, _STEPS, metric="steps_to_target_capped", mode="min")
    trials = load_trials(sweep)
    assert direction(trials, "steps_to_target_capped") == "min"
    # compare: the search arm's trial is the fastest, chosen on the sweep's metric and mode
    table = compare(trials, baseline="baseline:oneshot", metric="steps_to_target_capped")
    table = table.set_index("arm")
    assert table.loc["search", "selected_trial"] == "two_shot"
    assert table.loc["search", "mean"] == 1550
    # an explicit selection column takes the sweep's direction for it too
    chosen = compare(trials, baseline="baseline:oneshot", select="steps_to_target_capped")
    assert chosen.set_index("arm").loc["search", "selected_trial"] == "two_shot"
    # and an explicit --select-mode wins
    slow = compare(
        trials, baseline="baseline:oneshot", select="steps_to_target_capped", select_mode="max"
    )
    assert slow.set_index("arm").loc["search", "selected_trial"] == "lockstep"
    # best: the sweep's metric, smallest first
    assert best_schedules(trials)["trial_id"].tolist() == ["two_shot", "lockstep", "final"]
    # pareto: a column without a mode goes the sweep's way (min steps), accuracy max
    front = pareto(trials, ["steps_to_target_capped", "val_accuracy"])
    assert set(front["trial_id"]) == {"two_shot", "lockstep"}


def test_a_minimised_select_column_without_a_manifest_uses_its_usual_direction(tmp_path):
    df = pd.DataFrame(_STEPS).assign(sweep="s", status="TERMINATED")
    df["config.arm"] = df["config.arm"].fillna("search")
    chosen = compare(df, baseline="baseline:oneshot", select="steps_to_target_capped")
    assert chosen.set_index("arm").loc["search", "selected_trial"] == "two_shot"
    assert best_schedules(df, metric="steps_to_target_capped")["trial_id"][0] == "two_shot"


def test_cli_selection_honours_the_sweep_mode(tmp_path, capsys):
    sweep = _write_sweep(tmp_path, _STEPS, metric="steps_to_target_capped", mode="min")
    args = ["compare", str(sweep), "--metric", "steps_to_target_capped", "--format", "json"]
    assert main(args) == 0
    rows = {r["arm"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["search"]["selected_trial"] == "two_shot"
    assert main([*args, "--select", "steps_to_target_capped"]) == 0
    rows = {r["arm"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["search"]["selected_trial"] == "two_shot"
    assert main(["best", str(sweep), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["trial_id"] == "two_shot"
    assert main(["pareto", str(sweep), "--objective", "steps_to_target_capped",
                 "--objective", "val_accuracy", "--format", "json"]) == 0  # fmt: skip
    assert {r["trial_id"] for r in json.loads(capsys.readouterr().out)} == {
        "two_shot", "lockstep"
    }  # fmt: skip


def test_sweeps_that_disagree_on_a_direction_fall_back_to_its_usual_one(tmp_path):
    _write_sweep(tmp_path, _STEPS, metric="val_loss", mode="min", name="a")
    _write_sweep(tmp_path, _STEPS, metric="val_loss", mode="max", name="b")
    trials = load_trials(tmp_path)
    assert direction(trials, "val_loss") == "min"  # the usual direction of a loss
    assert direction(load_trials(tmp_path / "b"), "val_loss") == "max"  # as b searched it


def test_arms_are_named_whatever_by_is(tmp_path, capsys):
    sweep = _write_sweep(tmp_path, _STEPS)
    out = compare(load_trials(sweep), baseline="final", by="trial_id")
    assert out["trial_id"].tolist() == ["lockstep", "two_shot", "final"]  # named, best first
    assert out["selected_trial"].tolist() == out["trial_id"].tolist()
    unset = compare(load_trials(sweep), baseline="null", by="curriculum.order", select=None)
    assert unset["curriculum.order"].notna().all()  # an unset setting is the arm "null"
    best = best_schedules(load_trials(sweep), by="trial_id", top=1)
    assert not best.columns.duplicated().any()
    assert main(["compare", str(sweep), "--by", "trial_id", "--baseline", "final"]) == 0
    printed = capsys.readouterr().out
    assert "None" not in printed and all(t in printed for t in ("lockstep", "two_shot", "final"))


def test_welch_matches_a_hand_computed_case_and_scipy():
    # a - b = 0.1; each variance 0.01 over 3 seeds: se = sqrt(2 * 0.01 / 3), t = 1.2247,
    # Welch-Satterthwaite df = 4; two-sided p = 2 * P(T_4 > 1.2247) = 0.28786
    p, low, high = welch(np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.1, 0.2]))
    assert p == pytest.approx(0.287864, abs=1e-5)
    half = 2.776445 * np.sqrt(2 * 0.01 / 3)  # t_{0.975, 4}
    assert (low, high) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-6)
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 0.1, 5), rng.normal(0.2, 0.3, 9)
    assert welch(a, b)[0] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch(np.array([0.5, 0.5]), np.array([0.4, 0.4]))[0] == 0.0
    assert welch(np.array([0.5, 0.5]), np.array([0.5, 0.5]))[0] == 1.0
    assert np.isnan(welch(np.array([0.5]), np.array([0.4, 0.3]))[0])
    low, high = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert (low, high) == pytest.approx((2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)))


def test_holm_adjusts_step_down_and_skips_missing_tests():
    # sorted 0.01, 0.03, 0.04, 0.5 over m = 4: 0.04, 0.09, max(0.09, 0.08), 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    adjusted = holm([0.02, float("nan"), 0.03])
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.04)
    assert np.isnan(adjusted[1])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_verdicts_are_holm_corrected_over_the_arms():
    # one arm with p ~0.02: "better" alone, "not distinguishable" among ten null arms
    rng = np.random.default_rng(0)
    base = [0.90, 0.91, 0.89, 0.90, 0.90]
    lucky = [0.915, 0.925, 0.905, 0.915, 0.91]
    arms = {"baseline:oneshot": base, "lucky": lucky}
    alone = compare(_pooled(arms), baseline="baseline:oneshot", select=None)
    alone = alone.set_index("arm")
    assert alone.loc["lucky", "p_value"] < 0.05 and alone.loc["lucky", "verdict"] == "better"
    arms.update({f"null{i}": list(rng.normal(0.90, 0.04, 5)) for i in range(10)})
    crowded = compare(_pooled(arms), baseline="baseline:oneshot", select=None)
    crowded = crowded.set_index("arm")
    assert crowded.loc["lucky", "p_holm"] > 0.05
    assert crowded.loc["lucky", "verdict"] == "not distinguishable"
    assert "Holm-corrected over 11" in crowded.attrs["summary"]


def _pooled(arms: dict[str, list[float]], prefix: str = "") -> pd.DataFrame:
    """One row per (arm, seed), as confirmation runs write them."""
    return pd.DataFrame(
        [
            {"sweep": "s", "trial_id": f"{arm}-{i}", "status": "TERMINATED",
             "config.arm": prefix + arm, "seed": 100 + i, "test_accuracy": value}
            for arm, values in arms.items()
            for i, value in enumerate(values)
        ]
    )  # fmt: skip


def _confirmed_sweep(root: Path, rng: np.random.Generator, *, margin: float, seeds: int = 5):
    """A sweep whose search tried 12 configurations, and its confirmation rows: the top
    three (``a`` truly better than the baseline by ``margin``, ``b`` and ``c`` truly equal to
    it) and the baseline re-run on ``seeds`` fresh seeds, each seed's accuracy N(mean, 0.01)."""
    searched = [
        {"trial_id": f"t{i}", "val_accuracy": 0.9 + 0.001 * i, "test_accuracy": 0.9}
        for i in range(12)
    ]
    baseline = {"trial_id": "base", "config.arm": "baseline:oneshot", "val_accuracy": 0.9,
                "test_accuracy": 0.9}  # fmt: skip
    sweep = _write_sweep(root, [*searched, baseline])
    truth = {"t11": 0.90 + margin, "t10": 0.90, "t9": 0.90, "baseline:oneshot": 0.90}
    rows = []
    for arm, mean in truth.items():
        for seed in range(seeds):
            rows.append({
                "trial_id": f"{arm}-{seed}", "seed": 1000 + seed, "repeats": 1,
                "config.arm": f"confirm:{arm}", "test_accuracy": float(rng.normal(mean, 0.01)),
            })  # fmt: skip
    _write_rows(sweep / CONFIRM / TRIALS, rows, "s")
    return sweep


def test_confirmation_finds_a_known_effect_and_not_a_null_one_in_most_repetitions(tmp_path):
    """20 seeded repetitions of a confirmation with 5 fresh seeds per arm (seed noise 0.01):
    ``t11`` truly better by 0.03, ``t10`` and ``t9`` truly equal to the baseline. Measured
    (this seed): t11 ``better`` 18 of 20; t10 and t9 ``not distinguishable`` 39 of 40."""
    rng = np.random.default_rng(2026)
    better = same = 0
    for rep in range(20):
        sweep = _confirmed_sweep(tmp_path / f"rep{rep}", rng, margin=0.03)
        table = compare_results(sweep).set_index("arm")
        assert table.attrs["source"] == "confirm"
        better += table.loc["confirm:t11", "verdict"] == "better"
        same += sum(table.loc[f"confirm:{t}", "verdict"] == "not distinguishable"
                    for t in ("t10", "t9"))  # fmt: skip
    assert better >= 16, better  # most of 20
    assert same >= 36, same  # most of 40 (Holm keeps any false call under 5% per repetition)


def test_compare_uses_confirmation_rows_and_says_so(tmp_path, capsys):
    sweep = _confirmed_sweep(tmp_path, np.random.default_rng(0), margin=0.05)
    assert main(["compare", str(sweep)]) == 0
    out = capsys.readouterr().out
    summary = out.splitlines()[0]
    assert summary.startswith(f"confirmation runs in {sweep / CONFIRM} on 5 fresh seeds: 3 ")
    assert (
        "3 searched configurations (#1, #2, #3 of 12 on val_accuracy, max, validation split)"
        in summary
    )
    assert "Holm-corrected over 3" in summary
    assert "confirm:t11" in out and "confirm:baseline:oneshot" in out
    assert main(["compare", str(sweep), "--rows", "search", "--format", "json"]) == 0
    rows = {r["arm"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"search", "baseline:oneshot"}
    assert rows["search"]["selected_by"] == "best of 12 on val_accuracy"
    assert rows["search"]["configs"] == 12
    table = compare_results(sweep).set_index("arm")
    assert table.loc["confirm:t11", "configs"] == 12
    assert table.loc["confirm:t11", "selected_by"] == "#1 of 12 on val_accuracy (max, validation)"
    assert table.loc["confirm:t9", "selected_by"] == "#3 of 12 on val_accuracy (max, validation)"
    # the sweep's own tables never include the confirmation rows
    assert "confirm:t11" not in set(load_trials(sweep)["config.arm"].to_pylist())


def test_rows_confirm_without_confirmation_is_one_line_exit_2(tmp_path):
    sweep = _write_sweep(tmp_path, _STEPS)
    run = subprocess.run(
        [sys.executable, "-m", "analysis", "compare", str(sweep), "--rows", "confirm"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "python -m search confirm" in run.stderr


def test_a_sweep_directory_never_reads_its_confirmation_tables(tmp_path):
    """Confirmation rows (parquet or still in a write-ahead log) stay out of the sweep's own
    trials and curves, whichever files the sweep itself has yet."""
    from analysis import load_curves
    from analysis.tables import CURVES, WriteAheadLog

    sweep = _write_sweep(tmp_path, _STEPS)
    _write_rows(sweep / CONFIRM / TRIALS, [{"trial_id": "c0", "config.arm": "confirm:x"}], "s")
    (sweep / CONFIRM / CURVES).mkdir(parents=True)
    (sweep / CURVES).mkdir()
    wal = WriteAheadLog(sweep / CONFIRM / CURVES, "abcd")
    wal.append({"sweep": "s", "trial_id": "c0", "step": 1, "val_accuracy": 0.5})
    ours = WriteAheadLog(sweep / CURVES, "ef01")
    ours.append({"sweep": "s", "trial_id": "two_shot", "step": 1, "val_accuracy": 0.7})
    assert load_curves(sweep)["trial_id"].to_pylist() == ["two_shot"]
    assert "c0" not in load_trials(sweep)["trial_id"].to_pylist()
    assert load_curves(tmp_path)["trial_id"].to_pylist() == ["two_shot"]  # a storage root
    assert load_trials(sweep / CONFIRM)["trial_id"].to_pylist() == ["c0"]


def test_effect_intervals_are_simultaneous_over_the_arms():
    rng = np.random.default_rng(4)
    arms = {"baseline:oneshot": list(rng.normal(0.9, 0.01, 5))}
    arms.update({f"a{i}": list(rng.normal(0.9, 0.01, 5)) for i in range(4)})
    table = compare(_pooled(arms), baseline="baseline:oneshot", select=None).set_index("arm")
    base = np.array(arms["baseline:oneshot"])
    for arm in ("a0", "a3"):
        _, low, high = welch(np.array(arms[arm]), base, level=1 - 0.05 / 4)
        assert (table.loc[arm, "effect_ci_low"], table.loc[arm, "effect_ci_high"]) == (
            pytest.approx((low, high))
        )
        assert table.loc[arm, "p_value"] == pytest.approx(welch(np.array(arms[arm]), base)[0])


def test_a_confirmation_without_its_baseline_yet_falls_back_to_the_search(tmp_path):
    sweep = _confirmed_sweep(tmp_path, np.random.default_rng(0), margin=0.05)
    for path in (sweep / CONFIRM / TRIALS).glob("*baseline*"):
        path.unlink()  # killed before its baseline ran
    table = compare_results(sweep)
    assert table.attrs["source"] == "search"
    assert table.attrs["summary"].startswith("confirmation incomplete")
    with pytest.raises(Exception, match="no finished run of confirm:baseline:oneshot yet"):
        compare_results(sweep, rows="confirm")


def test_a_confirmation_with_only_its_baseline_run_falls_back_too(tmp_path):
    sweep = _confirmed_sweep(tmp_path, np.random.default_rng(0), margin=0.05)
    for path in (sweep / CONFIRM / TRIALS).glob("*"):
        if "baseline" not in path.name:
            path.unlink()  # killed after the baselines (they run first in each seed)
    table = compare_results(sweep)
    assert table.attrs["source"] == "search"
    assert "no finished run of any confirmed configuration yet" in table.attrs["summary"]
    with pytest.raises(Exception, match="any confirmed configuration"):
        compare_results(sweep, rows="confirm")


def test_rows_confirm_refuses_search_questions_and_unknown_baselines(tmp_path):
    sweep = _confirmed_sweep(tmp_path, np.random.default_rng(0), margin=0.05)
    with pytest.raises(Exception, match="ask about the search's rows"):
        compare_results(sweep, rows="confirm", by="trial_id")
    with pytest.raises(Exception, match="'confirm:t3' is not a confirmed arm; values: "):
        compare_results(sweep, rows="confirm", baseline="t3")


def test_a_renamed_copy_of_a_sweep_is_still_one_sweep(tmp_path):
    sweep = _write_sweep(tmp_path, _STEPS)
    _write_rows(sweep / TRIALS, [{"trial_id": "later", "sweep": "renamed", "val_accuracy": 0.5,
                                 "test_accuracy": 0.5}], "renamed")  # fmt: skip
    table = compare_results(sweep, rows="search")  # resumed under another --name
    assert set(table["arm"]) == {"search", "baseline:oneshot"}


def test_a_question_about_the_search_uses_its_rows(tmp_path):
    sweep = _confirmed_sweep(tmp_path, np.random.default_rng(0), margin=0.05)
    assert compare_results(sweep).attrs["source"] == "confirm"
    pooled = compare_results(sweep, select=None, baseline="baseline:oneshot")
    assert pooled.attrs["source"] == "search"
    assert compare_results(sweep, by="trial_id", baseline="base").attrs["source"] == "search"


def test_several_confirmed_sweeps_are_not_pooled(tmp_path):
    _confirmed_sweep(tmp_path / "root", np.random.default_rng(0), margin=0.05)
    other = _confirmed_sweep(tmp_path / "other", np.random.default_rng(1), margin=0.05)
    other.rename(tmp_path / "root" / "s2")
    with pytest.raises(Exception, match="holds several sweeps; compare one sweep's directory"):
        compare_results(tmp_path / "root")


def test_confirmation_rows_follow_their_record(tmp_path):
    """The arms and seeds the record lists, labelled by their rank at selection."""
    sweep = _confirmed_sweep(tmp_path, np.random.default_rng(0), margin=0.05)
    record = {
        "sweep": "s", "metric": "val_accuracy", "mode": "max", "split": "validation",
        "report_metric": "test_accuracy", "report_mode": "max", "searched": 12,
        "selected": [{"trial_id": "t11", "arm": "confirm:t11", "value": 0.911, "rank": 1,
                      "of": 12}],
        "baselines": ["confirm:baseline:oneshot"], "seeds": [1000, 1001, 1002],
    }  # fmt: skip
    (sweep / CONFIRM / "confirm.json").write_text(json.dumps(record))
    table = compare_results(sweep).set_index("arm")
    assert set(table.index) == {"confirm:t11", "confirm:baseline:oneshot"}  # t10, t9 not listed
    assert (table["n"] == 3).all()  # seeds 1003, 1004 not listed
    assert table.loc["confirm:t11", "selected_by"] == "#1 of 12 on val_accuracy (max, validation)"
    assert "on 3 fresh seeds: 1 searched configuration (#1 of 12 on" in table.attrs["summary"]
    assert table.loc["confirm:t11", "selected_trial"] == "t11"
    record["selected"][0]["rank"] = None  # no longer a finished searched trial
    (sweep / CONFIRM / "confirm.json").write_text(json.dumps(record))
    table = compare_results(sweep).set_index("arm")
    assert table.loc["confirm:t11", "selected_by"] == "no longer ranked among the 12 searched"


def test_analysis_and_confirm_rank_the_same_trials_in_the_same_order():
    """Ties, NaN and infinite values included: ``best`` and ``search confirm`` agree."""
    from search.confirm import select_trials

    rng = np.random.default_rng(0)
    specials = [float("nan"), float("inf"), -float("inf")]
    for _ in range(200):
        rows = []
        for i in range(8):
            value = float(rng.choice([0.5, 0.6, 0.7]))
            if rng.random() < 0.2:
                value = float(rng.choice(specials))
            tie = float(rng.choice([0.8, 0.9])) if rng.random() > 0.3 else rng.choice(specials)
            rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "config.arm": "search",
                         "sweep": "s", "val_loss": value, "val_accuracy": float(tie)})  # fmt: skip
        picked = [r["trial_id"] for r in select_trials(rows, metric="val_loss", mode="min", top=8)]
        best = best_schedules(pd.DataFrame(rows), metric="val_loss", mode="min", top=8)
        assert best["trial_id"].tolist() == picked


def test_ties_on_a_coarse_metric_are_broken_by_validation_accuracy(tmp_path):
    rows = [
        {"trial_id": "a", "steps_to_target_capped": 40, "val_accuracy": 0.79},
        {"trial_id": "b", "steps_to_target_capped": 40, "val_accuracy": 0.93},
        {"trial_id": "c", "steps_to_target_capped": 60, "val_accuracy": 0.99},
        {"trial_id": "base", "config.arm": "baseline:oneshot", "steps_to_target_capped": 80,
         "val_accuracy": 0.9},
    ]  # fmt: skip
    trials = load_trials(_write_sweep(tmp_path, rows, metric="steps_to_target_capped", mode="min"))
    assert best_schedules(trials)["trial_id"].tolist()[:3] == ["b", "a", "c"]
    table = compare(trials, baseline="baseline:oneshot", metric="steps_to_target_capped")
    assert table.set_index("arm").loc["search", "selected_trial"] == "b"


def test_a_baseline_that_never_finished_is_named_as_such(tmp_path):
    rows = [
        {"trial_id": "a", "val_accuracy": 0.9, "test_accuracy": 0.9},
        {"trial_id": "o", "config.arm": "baseline:oneshot", "status": "ERROR"},
        {"trial_id": "l", "config.arm": "baseline:labels_only", "val_accuracy": 0.8,
         "test_accuracy": 0.8},
    ]  # fmt: skip
    sweep = _write_sweep(tmp_path, rows)
    with pytest.raises(Exception, match=r"'baseline:oneshot' has no finished trial \(1 ERROR\)"):
        compare(load_trials(sweep), baseline="baseline:oneshot")
    table = compare_results(sweep)  # the default (the report's too): a baseline that finished
    assert table.loc[table["verdict"] == "baseline", "arm"].tolist() == ["baseline:labels_only"]


def test_several_sweeps_are_compared_one_at_a_time(tmp_path):
    _write_sweep(tmp_path, _STEPS, name="a")
    _write_sweep(tmp_path, _STEPS, name="b")
    with pytest.raises(Exception, match="come from 2 sweeps .a, b."):
        compare(load_trials(tmp_path), baseline="baseline:oneshot")
    by_sweep = compare(load_trials(tmp_path), baseline="a", by="sweep")
    assert set(by_sweep["sweep"]) == {"a", "b"}


def test_a_broken_pipe_ends_the_output_quietly(tmp_path):
    """More output than a pipe holds (64 KiB), read only in part."""
    schema = trials_schema(StudentConfig)
    base = config_row(settings(StudentConfig()), schema)
    rows = [
        {**dict.fromkeys(schema.names), **base, "sweep": "s", "trial_id": f"t{i:04d}",
         "status": "TERMINATED", "config.arm": "search", "val_accuracy": i / 3000}
        for i in range(3000)
    ]  # fmt: skip
    sweep = _write_sweep(tmp_path, [])
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), sweep / TRIALS / "all.parquet")
    run = subprocess.run(
        f"{sys.executable} -m analysis best {sweep} --top 3000 --format json | head -c 10",
        shell=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.stdout.startswith("[\n  {") and len(run.stdout) == 10
    assert run.stderr == "", run.stderr[-500:]
