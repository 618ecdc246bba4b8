"""Whole sweeps through the real path: Ray Tune + Optuna + PyTorch training + Parquet."""

import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from analysis import best_schedules, load_curves, load_teacher, load_trials
from search.spec import load_spec
from search.sweep import SweepExistsError, run_sweep

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SMALL = [
    "num_samples=4", "teacher.optim.steps=300", "student.optim.steps=200", "student.eval_every=50",
    "search.n_startup_trials=2",
]  # fmt: skip

TRIAL_COLUMNS = {
    "sweep", "trial_id", "status", "error", "seed", "val_accuracy", "best_val_accuracy",
    "steps_to_target", "steps", "samples_seen", "wall_time_s",
    "config.curriculum.kind", "config.distill.temperature", "config.distill.alpha",
}  # fmt: skip
CURVE_COLUMNS = {
    "sweep", "trial_id", "step", "samples_seen", "wall_time_s", "val_accuracy", "val_loss",
    "train_loss", "ce_loss", "kd_loss", "curriculum_fraction", "temperature", "alpha",
    "teacher_checkpoint", "stage", "easy_accuracy", "hard_accuracy", "teacher_agreement",
}  # fmt: skip


@pytest.fixture(scope="module")
def sweep(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    spec = load_spec(QUICKSTART, [*SMALL, f"storage={storage}", "name=first"])
    return spec, run_sweep(spec)


@pytest.mark.ray
def test_sweep_writes_every_contract_column_and_a_good_student(sweep):
    spec, results = sweep
    trials = load_trials(results)
    assert trials.num_rows == 4 + 2  # searched + the baselines oneshot and labels_only
    assert set(trials.column_names) >= TRIAL_COLUMNS
    assert set(trials.column("status").to_pylist()) == {"TERMINATED"}
    arms = trials.column("config.arm").to_pylist()
    assert sorted(set(arms)) == ["baseline:labels_only", "baseline:oneshot", "search"]
    assert arms.count("search") == 4
    labels_only = trials.filter(pc.equal(trials["config.arm"], "baseline:labels_only"))
    assert labels_only["config.distill.alpha"].to_pylist() == [1.0]
    assert labels_only["config.curriculum.kind"].to_pylist() == ["none"]
    searched = trials.filter(pc.equal(trials["config.arm"], "search"))
    # cover_curricula: both arms were tried
    assert set(searched.column("config.curriculum.kind").to_pylist()) == {"none", "paced"}
    curves = load_curves(results)
    assert set(curves.column_names) >= CURVE_COLUMNS
    per_trial = curves.group_by("trial_id").aggregate([("step", "count")])
    assert sorted(per_trial.column("step_count").to_pylist()) == [4] * 6
    best = best_schedules(trials, top=1)
    assert best.loc[0, "val_accuracy"] > 0.9
    assert load_teacher(results).column("is_kept").to_pylist()[-1] is True


@pytest.mark.ray
def test_duckdb_polars_pandas_and_pyarrow_dataset_read_the_tables_unchanged(sweep):
    _, results = sweep
    n_trials, best = duckdb.sql(
        f"select count(*), max(val_accuracy) from read_parquet('{results}/trials/**/*.parquet')"
    ).fetchall()[0]
    assert n_trials == 6 and best > 0.9
    per_trial = duckdb.sql(
        f"select trial_id, count(*) from read_parquet('{results}/curves/**/*.parquet') group by 1"
    ).fetchall()
    assert len(per_trial) == 6 and all(n >= 3 for _, n in per_trial)
    # a finished sweep's tables are compacted: each a few plain Parquet files
    polars_trials = pl.read_parquet(f"{results}/trials/*.parquet")
    assert polars_trials.height == 6 and polars_trials["val_accuracy"].max() > 0.9
    assert pl.scan_parquet(f"{results}/curves/*.parquet").select(pl.len()).collect().item() >= 18
    assert len(pd.read_parquet(results / "trials")) == 6
    assert ds.dataset(results / "stages", format="parquet").count_rows() >= 6


@pytest.mark.ray
def test_second_sweep_reuses_the_teacher_a_rerun_resumes_and_a_changed_spec_is_refused(
    sweep, capsys
):
    spec, _ = sweep
    teachers = Path(spec.storage) / "_teachers"
    (bank_dir,) = teachers.glob("*/bank-*")
    run_json = bank_dir.parent / "teacher" / "run.json"
    built_at = (bank_dir / "manifest.json").stat().st_mtime_ns
    trained_at = run_json.stat().st_mtime_ns
    second = load_spec(
        QUICKSTART,
        [*SMALL, f"storage={spec.storage}", "name=second", "num_samples=2", "baselines=[]"],
    )
    results = run_sweep(second)
    assert "teacher: reusing" in capsys.readouterr().out
    assert not (results / "tune" / "teacher").exists()  # no teacher trial ran
    assert (bank_dir / "manifest.json").stat().st_mtime_ns == built_at  # nor a bank build
    assert run_json.stat().st_mtime_ns == trained_at
    assert load_trials(results).num_rows == 2 and load_teacher(results).num_rows == 12
    both = load_trials(spec.storage)  # the storage root: both sweeps together
    assert sorted(set(both["sweep"].to_pylist())) == ["first", "second"]
    assert both.num_rows == load_trials(spec.sweep_dir).num_rows + 2
    assert set(load_curves(spec.storage)["sweep"].to_pylist()) == {"first", "second"}
    run_sweep(second)  # the same spec again: nothing left to do
    assert "is complete" in capsys.readouterr().out
    assert load_trials(results).num_rows == 2
    bigger = second.model_copy(update={"num_samples": 3})  # a bigger budget continues it
    run_sweep(bigger)
    trials = load_trials(results)
    assert trials.num_rows == 3 and len(set(trials["trial_id"].to_pylist())) == 3
    changed = load_spec(
        QUICKSTART,
        [*SMALL, f"storage={spec.storage}", "name=second", "num_samples=2", "seed=7"],
    )
    with pytest.raises(SweepExistsError, match=r"another spec \(differs in: baselines, seed\)"):
        run_sweep(changed)


@pytest.mark.ray
@pytest.mark.slow
def test_cli_run_then_analysis_best(tmp_path):
    """What a user types, each in its own process with its own embedded Ray."""
    run = subprocess.run(
        [sys.executable, "-m", "search", "run", str(QUICKSTART), "--storage", str(tmp_path),
         "--name", "cli", "--top", "3", *[a for s in SMALL for a in ("--set", s)]],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "best schedules by val_accuracy" in run.stdout
    best = subprocess.run(
        [sys.executable, "-m", "analysis", "best", str(tmp_path / "cli"), "--by", "curriculum.kind", "--format", "csv"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert best.returncode == 0, best.stderr
    assert best.stdout.splitlines()[0].startswith(
        "sweep,trial_id,config.curriculum.kind,val_accuracy"
    )
    again = subprocess.run(
        [sys.executable, "-m", "search", "run", str(QUICKSTART), "--storage", str(tmp_path), "--name", "cli"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        again.returncode == 2
        and "was started from another spec" in again.stderr
        and "Traceback" not in again.stderr
    )


@pytest.mark.ray
@pytest.mark.slow
def test_cli_run_on_an_existing_cluster_by_address(external_cluster, tmp_path):
    address = external_cluster(head_cpus=2)
    run = subprocess.run(
        [sys.executable, "-m", "search", "run", str(QUICKSTART), "--storage", str(tmp_path),
         "--name", "remote", "--address", address, "--set", "num_samples=2",
         "--set", "student.optim.steps=100", "--set", "teacher.optim.steps=100",
         "--set", "baselines=[]"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert load_trials(tmp_path / "remote").num_rows == 2


@pytest.mark.slow
def test_cli_run_with_an_unreachable_address_exits_2(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "search", "run", str(QUICKSTART), "--storage", str(tmp_path),
         "--address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    assert (
        run.stderr.strip().splitlines()[-1].startswith("error: address: cannot connect to Ray at")
    )
    assert "Traceback" not in run.stderr


@pytest.mark.ray
def test_every_curriculum_kind_trains_a_good_student_in_a_real_sweep(ray_session, tmp_path):
    """examples/all_curricula.yaml, shortened: cover_curricula gives each kind one trial
    (digits have no sources: the mixture is left out)."""
    spec = load_spec(
        ROOT / "examples" / "all_curricula.yaml",
        [f"storage={tmp_path}", "num_samples=9", "student.optim.steps=200", "student.eval_every=100",
         "teacher.optim.steps=300", "space.alpha=[0.0, 0.9]", "baselines=[]"],
    )  # fmt: skip
    trials = load_trials(run_sweep(spec)).to_pandas()
    assert (trials["status"] == "TERMINATED").all(), trials["error"].dropna().tolist()
    by_kind = trials.set_index("config.curriculum.kind")["val_accuracy"]
    assert sorted(by_kind.index) == sorted(
        ["none", "paced", "confidence", "self_paced", "focal", "importance", "rho", "staged",
         "bandit"]
    )  # fmt: skip
    # 200 steps of drawn settings: self_paced draws the mixture regularizer with a root pacing
    # reaching all examples at 0.89 of the run (0.82 at the end: it weights the harder
    # examples down for most of it); the others reach 0.91-0.96
    assert (by_kind > 0.8).all(), by_kind.to_dict()
    assert (by_kind > 0.85).sum() >= 8, by_kind.to_dict()


@pytest.mark.slow
def test_cli_submit_runs_the_sweep_as_a_ray_job(jobs_server, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    here = tmp_path / "here"  # where submit runs: it must leave nothing there
    here.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "search", "submit", str(QUICKSTART), "--storage", str(tmp_path),
         "--name", "remote", "--address", jobs_server, "--set", "num_samples=2",
         "--set", "student.optim.steps=100", "--set", "teacher.optim.steps=100",
         "--set", "baselines=[]"],
        capture_output=True, text=True, timeout=120, cwd=here,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    job = re.search(r"as job (\S+);", run.stdout)[1]
    client = JobSubmissionClient(jobs_server)
    deadline = time.monotonic() + 300
    while not (status := client.get_job_status(job)).is_terminal():
        assert time.monotonic() < deadline, f"job {job} still {status} after 300 s"
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "students: 2 finished, 0 failed" in logs
    assert load_trials(tmp_path / "remote").num_rows == 2
    assert list(here.iterdir()) == []


@pytest.mark.slow
def test_cli_run_whose_budget_ends_before_any_trial_exits_1_in_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "search", "run", str(QUICKSTART), "--storage", str(tmp_path),
         "--name", "short", "--set", "num_samples=2", "--set", "baselines=[]",
         "--set", "teacher.optim.steps=100", "--set", "student.optim.steps=60000",
         "--set", "student.eval_every=1000", "--set", "time_budget_s=4"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    (error,) = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert "no best schedules" in error and "run the same command again" in error
