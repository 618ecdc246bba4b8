"""``python -m search confirm``: the best searched configurations and the baselines re-run on
fresh seeds, beside (never inside) the sweep's own tables and study."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import load_trials
from analysis.tables import CONFIRM, CONFIRM_RECORD, STUDY_JOURNAL, STUDY_NAME, load_confirm
from search.cli import main
from search.confirm import (
    RebuildError,
    comparison,
    fresh_seeds,
    rebuild_config,
    select_trials,
    sweep_spec,
)
from search.sink import trial_settings
from search.spec import load_spec
from search.sweep import run_sweep
from trainables.config import CurriculumKind, StudentConfig, kinds, settings

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SMALL = [
    "num_samples=3", "baselines=[oneshot]", "teacher.optim.steps=100",
    "student.optim.steps=100", "student.eval_every=50", "search.n_startup_trials=2",
    "space.curricula=[none, paced, staged]",  # cover_curricula: one trial of each kind
]  # fmt: skip
_SET_HERE = ("seed", "repeats", "arm", "teacher_bank")


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _journal(sweep: Path) -> tuple[str, int]:
    """The study's journal: its bytes' hash and its number of trials."""
    path = sweep / STUDY_JOURNAL
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    return hashlib.sha256(path.read_bytes()).hexdigest(), len(study.trials)


def _sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["trial_id"])


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("storage")
    return run_sweep(load_spec(QUICKSTART, [*SMALL, f"storage={storage}", "name=tiny"]))


@pytest.fixture(scope="module")
def confirmed(swept):
    """The sweep confirmed once (--top 2 --seeds 2), with what it looked like before and
    what the first confirmation wrote and printed (later tests extend the confirmation)."""
    before = _sorted_rows(load_trials(swept)), _journal(swept)
    code, out, err = _run("confirm", str(swept), "--top", "2", "--seeds", "2")
    assert code == 0, err
    rows = load_confirm(swept).to_pylist()
    record = json.loads((swept / CONFIRM / CONFIRM_RECORD).read_text())
    return {"sweep": swept, "before": before, "out": out, "rows": rows, "record": record}


def _comparison(out: str) -> str:
    """The printed comparison: from its header line to the end."""
    return out[out.index("confirmation runs in ") :]


# --- through the real path --------------------------------------------------------------------


@pytest.mark.ray
def test_confirm_reruns_the_best_searched_configs_and_baselines_on_fresh_seeds(confirmed):
    sweep, rows = confirmed["sweep"], confirmed["rows"]
    trials = confirmed["before"][0]
    searched = [r for r in trials if r["config.arm"] == "search" and r["status"] == "TERMINATED"]
    best = sorted(searched, key=lambda r: (-r["val_accuracy"], r["trial_id"]))[:2]
    arms = {f"confirm:{r['trial_id']}" for r in best} | {"confirm:baseline:oneshot"}
    used = {s for r in trials for s in range(r["seed"], r["seed"] + r["repeats"])}
    fresh = [max(used) + 1, max(used) + 2]
    assert sorted((r["config.arm"], r["seed"]) for r in rows) == sorted(
        (arm, seed) for arm in arms for seed in fresh
    )
    assert {r["status"] for r in rows} == {"TERMINATED"}
    assert {r["repeats"] for r in rows} == {1} and {r["config.repeats"] for r in rows} == {1}
    assert not used & {r["seed"] for r in rows}
    assert all(r["test_accuracy"] is not None for r in rows)
    # the confirmed config is the searched trial's, but for seed, repeats and arm
    by_id = {r["trial_id"]: r for r in trials}
    for row in rows:
        source = row["config.arm"].removeprefix("confirm:")
        if source in by_id:
            differ = [
                c for c in row if c.startswith("config.") and c.removeprefix("config.")
                not in _SET_HERE and row[c] != by_id[source][c]
            ]  # fmt: skip
            assert differ == []
    # the sweep's own tables and study are untouched; its loaders leave the confirmation out
    assert _sorted_rows(load_trials(sweep)) == trials
    assert _sorted_rows(load_trials(sweep.parent)) == trials
    assert _journal(sweep) == confirmed["before"][1]
    assert load_trials(sweep / CONFIRM).num_rows == len(rows)


@pytest.mark.ray
def test_confirm_records_what_it_selected_and_how(confirmed):
    record, trials = confirmed["record"], confirmed["before"][0]
    searched = [r for r in trials if r["config.arm"] == "search" and r["status"] == "TERMINATED"]
    best = sorted(searched, key=lambda r: (-r["val_accuracy"], r["trial_id"]))[:2]
    assert record["metric"] == "val_accuracy" and record["mode"] == "max"
    assert record["split"] == "validation" and record["report_metric"] == "test_accuracy"
    assert record["searched"] == len(searched)
    assert record["selected"] == [
        {"trial_id": r["trial_id"], "arm": f"confirm:{r['trial_id']}", "value": r["val_accuracy"],
         "rank": rank, "of": len(searched)}
        for rank, r in enumerate(best, 1)
    ]  # fmt: skip
    assert record["baselines"] == ["confirm:baseline:oneshot"]
    assert record["seeds"] == sorted({r["seed"] for r in confirmed["rows"]})
    assert record["created"] and record["runs"][0]["ended"]


@pytest.mark.ray
def test_confirm_prints_a_progress_line_per_run_then_the_comparison(confirmed):
    out, record = confirmed["out"], confirmed["record"]
    assert out.count("] ") >= len(confirmed["rows"])  # one progress line per run
    header = (
        f"on 2 fresh seeds: 2 searched configurations (#1, #2 of {record['searched']} "
        "on val_accuracy, max, validation split) and the baselines, re-run, reported on "
        "test_accuracy (max, test split)"
    )
    assert header in out and "Holm-corrected over 2" in out
    assert f"#1 of {record['searched']} on val_accuracy (max, validation)" in out
    table = _comparison(out)
    for arm in [s["arm"] for s in record["selected"]] + record["baselines"]:
        assert arm in table
    _, compared = comparison(confirmed["sweep"])
    assert len(compared) == 3
    intervals = compared[compared["verdict"] != "baseline"][["ci_low", "ci_high", "effect_ci_low"]]
    assert intervals.notna().all().all()  # intervals, not NaN


@pytest.mark.ray
def test_rebuilt_configs_equal_the_configs_the_searched_trials_ran(confirmed):
    sweep = confirmed["sweep"]
    spec = sweep_spec(sweep)
    rows = [r for r in confirmed["before"][0] if r["config.arm"] == "search"]
    assert len({r["config.curriculum.kind"] for r in rows}) == 3
    for row in rows:
        (params,) = (sweep / "tune").glob(f"*/*{row['trial_id']}*/params.json")
        original = StudentConfig.model_validate(json.loads(params.read_text()))
        rebuilt = rebuild_config(row, spec.student_config(original.teacher_bank).model_dump())
        assert rebuilt == original


@pytest.mark.ray
def test_a_driver_holding_the_sweep_refuses_confirm_in_one_line(confirmed):
    from search._lock import SweepLock

    with SweepLock(confirmed["sweep"]):
        code, _, err = _run("confirm", str(confirmed["sweep"]), "--top", "1", "--seeds", "2")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: name: sweep 'tiny'") and "is being run by pid" in line


@pytest.mark.ray
def test_ctrl_c_stops_confirm_with_130_and_keeps_what_was_written(confirmed, monkeypatch):
    import search.confirm

    copy = confirmed["sweep"].parent / "interrupted"
    shutil.copytree(confirmed["sweep"], copy, ignore=shutil.ignore_patterns(".lock*"))
    rows = load_confirm(copy).num_rows

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(search.confirm, "_run_configs", interrupted)
    code, _, err = _run("confirm", str(copy), "--top", "1", "--seeds", "9")
    assert code == 130
    assert (
        err.strip() == "interrupted; run the same command to resume (stopped in the confirm phase)"
    )
    assert load_confirm(copy).num_rows == rows  # nothing lost
    assert len(json.loads((copy / CONFIRM / CONFIRM_RECORD).read_text())["seeds"]) == 9
    assert not (copy / ".lock").exists()


@pytest.mark.ray
def test_confirm_again_runs_nothing_then_a_new_seed_runs_alone(confirmed):
    """Last in the module: it extends the confirmation."""
    sweep, rows = confirmed["sweep"], confirmed["rows"]
    code, out, err = _run("confirm", str(sweep), "--top", "2", "--seeds", "2")
    assert code == 0, err
    assert "every run done" in out and "] confirm:" not in out
    assert _comparison(out) == _comparison(confirmed["out"])
    assert load_confirm(sweep).num_rows == len(rows)
    code, out, err = _run("confirm", str(sweep), "--top", "2", "--seeds", "3")
    assert code == 0, err
    after = load_confirm(sweep).to_pylist()
    new_seed = max(r["seed"] for r in rows) + 1
    assert len(after) == len(rows) + 3
    assert sorted(r["seed"] for r in after if r not in rows) == [new_seed] * 3
    assert "on 3 fresh seeds: 2 searched configurations" in out
    assert json.loads((sweep / CONFIRM / CONFIRM_RECORD).read_text())["seeds"][-1] == new_seed


# --- the parts, without Ray -------------------------------------------------------------------


def _written(config: dict, trial_id: str) -> dict:
    """A trials row as the sink writes it and Parquet gives it back."""
    from analysis.tables import config_row, trials_schema

    schema = trials_schema(StudentConfig)
    row = {"sweep": "s", "trial_id": trial_id, "status": "TERMINATED", "seed": 0}
    row.update(config_row(trial_settings(config, StudentConfig), schema))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row], schema=schema), buffer)
    return pq.read_table(io.BytesIO(buffer.getvalue())).to_pylist()[0]


@pytest.mark.parametrize(
    "base",
    [
        {},
        # a base whose values differ from a trial's None (top_k) and text-or-int (checkpoint)
        {"distill": {"top_k": 8}, "teacher_schedule": {"kind": "two_shot", "checkpoint": 100}},
    ],
)
def test_rebuilt_configs_equal_the_originals_for_every_curriculum_kind(base):
    from spaces import SpaceBounds, suggest_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # data with sources, so the space also draws mixtures and their per-source weights
    base = {**base, "teacher_bank": "/bank", "data": {"kind": "digits", "noisy_source": 0.5}}
    base = StudentConfig.model_validate(base).model_dump()
    bounds = SpaceBounds(
        top_ks=[None, 4, 8], mixture_sources=["clean", "noisy"],
        mixture_schedules=["constant", "temperature"],
    )  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for i in range(160):
        trial = study.ask()
        config = suggest_config(trial, bounds, base)
        study.tell(trial, 0.0)
        original = StudentConfig.model_validate(config)
        rebuilt = rebuild_config(_written(config, f"t{i}"), base)
        assert rebuilt == original and settings(rebuilt) == settings(original)
        seen.add(original.curriculum.kind)
    assert seen == set(kinds(CurriculumKind))


def test_a_row_that_cannot_be_rebuilt_is_named():
    base = StudentConfig(teacher_bank="/bank").model_dump()
    row = _written(base, "abc_00001")
    row["config.distill.alpha"] = 5.0
    with pytest.raises(RebuildError, match="trial abc_00001's config cannot be rebuilt"):
        rebuild_config(row, base)


def test_fresh_seeds_follow_every_seed_a_trial_used():
    rows = [{"seed": 0, "repeats": 3}, {"seed": 5, "repeats": 1}, {"seed": 2, "repeats": 2}]
    assert fresh_seeds(rows, 3) == [6, 7, 8]
    assert fresh_seeds([{"seed": 4, "repeats": None}], 2) == [5, 6]


def test_select_trials_takes_finished_searched_trials_by_the_sweeps_metric_and_mode():
    def row(trial_id, value, arm="search", status="TERMINATED"):
        return {"trial_id": trial_id, "config.arm": arm, "status": status, "loss": value}

    rows = [
        row("d", 0.1, arm="baseline:oneshot"), row("e", 0.0, status="ERROR"), row("f", None),
        row("c", 0.5), row("b", 0.3), row("a", 0.3), {**row("g", 0.9), "config.arm": None},
    ]  # fmt: skip
    ids = [r["trial_id"] for r in select_trials(rows, metric="loss", mode="min", top=3)]
    assert ids == ["a", "b", "c"]
    ids = [r["trial_id"] for r in select_trials(rows, metric="loss", mode="max", top=2)]
    assert ids == ["g", "c"]


# --- bad input: exit 2, one line, nothing started ---------------------------------------------


def _fake_sweep(tmp_path: Path, *overrides: str, spec: dict | None = None) -> Path:
    """A sweep directory holding only a manifest (no trial has run)."""
    sweep = tmp_path / "fake"
    sweep.mkdir()
    if spec is None:
        spec = load_spec(QUICKSTART, [f"storage={tmp_path}", "name=fake", *overrides]).public_json()
    (sweep / "manifest.json").write_text(json.dumps({"sweep": "fake", "spec": spec}))
    return sweep


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("{missing}",), "error: sweep: '{missing}' is not a directory"),
        (("{tmp}",), "error: sweep: '{tmp}' holds no manifest.json"),
        (("{sweep}", "--seeds", "1"), "error: --seeds: 1; allowed: 2 to 64"),
        (("{sweep}", "--top", "0"), "error: --top: 0; allowed: 1 to 64"),
        (("{sweep}", "--seeds", "65"), "error: --seeds: 65; allowed: 2 to 64"),
        (("{sweep}",), "error: sweep: 'fake' has no finished searched trial with 'val_accuracy'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, expected):
    sweep = _fake_sweep(tmp_path)
    names = {"missing": tmp_path / "nope", "tmp": tmp_path, "sweep": sweep}
    code, out, err = _run("confirm", *(a.format(**names) for a in args))
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(expected.format(**names))
    assert not (sweep / CONFIRM).exists() and not (sweep / ".lock").exists()


def test_a_sweep_without_baselines_or_with_pbt_or_a_stale_spec_is_refused(tmp_path):
    for overrides, expected in [
        (["baselines=[]"], "error: baselines: sweep 'fake' has no baseline arm"),
        (["scheduler.kind=pbt"], "error: scheduler.kind: sweep 'fake' is 'pbt'"),
    ]:
        sweep = _fake_sweep(tmp_path, *overrides)
        code, _, err = _run("confirm", str(sweep))
        (line,) = err.strip().splitlines()
        assert code == 2 and line.startswith(expected)
        shutil.rmtree(sweep)
    sweep = _fake_sweep(tmp_path, spec={"name": "fake", "bogus": 1})
    code, _, err = _run("confirm", str(sweep))
    (line,) = err.strip().splitlines()
    assert code == 2 and line.startswith("error: sweep: the spec in ") and "bogus" in line


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_the_spec_a_manifest_holds_is_the_spec_the_sweep_ran(tmp_path, example):
    spec = load_spec(ROOT / "examples" / example, [f"storage={tmp_path}"])
    spec.sweep_dir.mkdir(parents=True)
    (spec.sweep_dir / "manifest.json").write_text(json.dumps({"spec": spec.public_json()}))
    assert sweep_spec(spec.sweep_dir) == spec
    pbt = spec.model_copy(update={"scheduler": spec.scheduler.model_copy(update={"kind": "pbt"})})
    (spec.sweep_dir / "manifest.json").write_text(json.dumps({"spec": pbt.public_json()}))
    assert sweep_spec(spec.sweep_dir).scheduler.kind == "pbt"


def test_a_diverged_trial_is_never_selected():
    rows = [
        {"trial_id": t, "status": "TERMINATED", "config.arm": "search", "val_loss": v}
        for t, v in [("a", 0.5), ("b", float("nan")), ("c", 0.3), ("d", float("inf"))]
    ]
    for order in (rows, rows[::-1]):
        picked = select_trials(order, metric="val_loss", mode="min", top=2)
        assert [r["trial_id"] for r in picked] == ["c", "a"]


def test_trials_whose_teacher_is_gone_and_differs_are_refused(tmp_path):
    from search.confirm import _teacher_bank
    from search.errors import SweepInputError

    current = tmp_path / "now"
    assert _teacher_bank([{"config.teacher_bank": str(current)}], current) == current
    assert _teacher_bank([{}], current) == current
    gone = tmp_path / "before"
    with pytest.raises(SweepInputError, match="gone or incomplete") as refused:
        _teacher_bank([{"config.teacher_bank": str(gone)}], current)
    assert len(str(refused.value).splitlines()) == 1
    with pytest.raises(SweepInputError, match="2 different teacher banks"):
        _teacher_bank(
            [{"config.teacher_bank": str(gone)}, {"config.teacher_bank": str(current)}], current
        )
