"""Search at scale: samplers, baselines, schedulers, repeats, multi-worker trials, resume."""

import functools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest

from analysis import load_curves, load_trials, pareto
from analysis.tables import STUDY_NAME
from search._resume import _settle_interrupted
from search._study import baseline_configs, optuna_sampler
from search.configs import config_of
from search.spec import SpecError, load_spec, validate_spec
from search.sweep import run_sweep
from spaces import distillation_space

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
TINY = [
    "teacher.optim.steps=200", "student.optim.steps=100", "student.eval_every=50",
    "search.n_startup_trials=2", "baselines=[]",
]  # fmt: skip


def _spec(**fields):
    return validate_spec({"name": "t", **fields})


@pytest.mark.parametrize(
    "algorithm, cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
        ("random", optuna.samplers.RandomSampler),
        ("grid", optuna.samplers.GridSampler),
    ],
)
def test_every_algorithm_drives_the_conditional_space(algorithm, cls):
    search = {"algorithm": algorithm, "n_startup_trials": 2}
    if algorithm == "grid":
        search["grid"] = {"curriculum.kind": ["none", "paced", "focal"]}
    spec = _spec(search=search, space={"curricula": ["none", "paced", "focal"]})
    sampler = optuna_sampler(spec)
    assert isinstance(sampler, cls)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    space = functools.partial(distillation_space, bounds=spec.space)

    def objective(trial):
        space(trial)  # returns the settings it fixed; the drawn ones are in trial.params
        return trial.params["distill.alpha"]

    study.optimize(objective, n_trials=6)
    assert len(study.trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if algorithm == "grid":  # the grid is walked first, the other parameters drawn at random
        kinds = [t.params["curriculum.kind"] for t in study.trials[:3]]
        assert sorted(kinds) == ["focal", "none", "paced"]
        assert len({t.params["distill.alpha"] for t in study.trials}) == 6


def test_baselines_are_fixed_configs_and_duplicates_are_dropped():
    arms = baseline_configs(_spec(student={"distill": {"temperature": 2.0, "alpha": 0.3}}))
    assert list(arms) == ["oneshot", "labels_only"]  # no_curriculum == oneshot here
    assert arms["labels_only"]["distill"]["alpha"] == 1.0
    assert arms["oneshot"]["distill"] == {
        "loss": "hinton", "temperature": 2.0, "alpha": 0.3,
        "temperature_schedule": {"kind": "constant"},
    }  # fmt: skip
    assert arms["oneshot"]["curriculum"] == {"kind": "none"}
    assert arms["oneshot"]["arm"] == "baseline:oneshot"
    lockstep = _spec(student={"teacher_schedule": {"kind": "lockstep"}})
    arms = baseline_configs(lockstep)
    assert list(arms) == ["oneshot", "labels_only", "no_curriculum"]
    assert arms["no_curriculum"]["teacher_schedule"]["kind"] == "lockstep"
    assert arms["oneshot"]["teacher_schedule"]["kind"] == "final"
    assert baseline_configs(_spec(baselines=[])) == {}


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"objectives": [{"metric": "val_accuracy", "mode": "max"},
                            {"metric": "wall_time_s", "mode": "min"}],
             "scheduler": {"kind": "asha"}},
            "scheduler.kind 'asha' stops trials on one metric",
        ),
        (
            {"objectives": [{"metric": "val_accuracy", "mode": "max"},
                            {"metric": "wall_time_s", "mode": "min"}],
             "search": {"algorithm": "cmaes"}},
            "'cmaes' is single-objective",
        ),
        ({"search": {"algorithm": "grid"}}, "search: algorithm 'grid' needs grid"),
        ({"resources": {"workers": 2, "gpus_per_trial": 0.5}},
         "resources.gpus_per_trial: a 2-worker trial takes one GPU per worker"),
        ({"resources": {"workers": 2, "checkpoint": True}},
         "resources.checkpoint: only single-worker trials (workers: 1) checkpoint so far"),
        ({"student": {"repeats": 3}}, "student.repeats: set by the sweep"),
        ({"baselines": ["oneshot", "teacher_only"]}, "baselines.1: Input should be"),
        ({"scheduler": {"kind": "hyperband"}}, "scheduler.kind: Input should be 'fifo', 'asha'"),
    ],
)  # fmt: skip
def test_spec_refuses_combinations_that_cannot_work(fields, message):
    with pytest.raises(SpecError) as info:
        _spec(**fields)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_interrupted_study_trials_are_settled_from_the_trials_table():
    study = optuna.create_study(direction="maximize", study_name=STUDY_NAME)
    finished, lost = study.ask(), study.ask()  # both RUNNING, as a killed driver leaves them
    for trial, alpha in ((finished, 0.25), (lost, 0.75)):
        trial.suggest_float("distill.alpha", 0.0, 1.0)
        study._storage.set_trial_param(
            trial._trial_id, "distill.alpha", alpha, optuna.distributions.FloatDistribution(0, 1)
        )
    rows = [{"config.distill.alpha": 0.25, "status": "TERMINATED", "val_accuracy": 0.9}]
    _settle_interrupted(study, rows, ["val_accuracy"])
    states = {t.number: (t.state, t.value) for t in study.trials}
    assert states[0] == (optuna.trial.TrialState.COMPLETE, 0.9)  # its result is kept
    assert states[1][0] == optuna.trial.TrialState.FAIL  # never finished: run again
    (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {"distill.alpha": 0.75}


def test_pareto_keeps_exactly_the_non_dominated_trials():
    import pandas as pd

    trials = pd.DataFrame(
        {
            "sweep": "s", "trial_id": list("abcde"), "status": "TERMINATED",
            "val_accuracy": [0.90, 0.95, 0.85, 0.95, 0.80],
            "steps_to_target_capped": [100, 300, 50, 400, 50],
            "config.distill.alpha": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )  # fmt: skip
    # d is dominated by b (same accuracy, more steps), e by c (same steps, lower accuracy).
    front = pareto(trials, {"val_accuracy": "max", "steps_to_target_capped": "min"})
    assert front["trial_id"].tolist() == ["b", "a", "c"]


@pytest.mark.ray
def test_multi_objective_sweep_lists_its_pareto_set(ray_session, tmp_path):
    spec = load_spec(
        QUICKSTART,
        [*TINY, f"storage={tmp_path}", "name=mo", "num_samples=5", "search.algorithm=nsga2",
         "search.population_size=4",
         "objectives=[{metric: val_accuracy, mode: max}, {metric: wall_time_s, mode: min}]"],
    )  # fmt: skip
    results = run_sweep(spec)
    trials = load_trials(results)
    assert trials.num_rows == 5
    study = optuna.load_study(
        study_name=STUDY_NAME,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(results / "optuna.journal"))
        ),
    )
    assert len(study.directions) == 2 and len(study.best_trials) >= 1
    front = pareto(trials, {"val_accuracy": "max", "wall_time_s": "min"})
    assert 1 <= len(front) <= 5
    run = subprocess.run(
        [sys.executable, "-m", "analysis", "pareto", str(results), "--objective",
         "val_accuracy:max", "--objective", "wall_time_s:min", "--format", "csv"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.strip().splitlines()) == len(front) + 1


@pytest.mark.ray
def test_asha_stops_trials_early_on_the_students_step_and_repeats_are_recorded(
    ray_session, tmp_path
):
    spec = load_spec(
        QUICKSTART,
        [*TINY, f"storage={tmp_path}", "name=asha", "num_samples=6", "student.optim.steps=200",
         "scheduler.kind=asha", "scheduler.grace_period=0.25", "scheduler.reduction_factor=2",
         "repeats=2", "baselines=[labels_only]"],
    )  # fmt: skip
    trials = load_trials(run_sweep(spec)).to_pandas()
    assert len(trials) == 7 and (trials["status"] == "TERMINATED").all()
    assert (trials["steps"] < 200).any() and (trials["steps"] == 200).any()
    assert (trials["repeats"] == 2).all()
    baseline = trials[trials["config.arm"] == "baseline:labels_only"]
    assert baseline["steps"].tolist() == [200]  # baselines are never stopped early
    for _, row in trials.iterrows():
        assert len(row["val_accuracy_seeds"]) == 2
        assert row["val_accuracy"] == pytest.approx(sum(row["val_accuracy_seeds"]) / 2)


@pytest.mark.ray
def test_a_two_worker_trial_runs_under_torchtrainer(ray_session, tmp_path):
    spec = load_spec(
        QUICKSTART,
        [*TINY, f"storage={tmp_path}", "name=ddp", "num_samples=1", "resources.workers=2",
         "search.cover_curricula=false"],
    )  # fmt: skip
    results = run_sweep(spec)
    trials = load_trials(results)
    assert trials["status"].to_pylist() == ["TERMINATED"], trials["error"].to_pylist()
    assert trials["val_accuracy"][0].as_py() > 0.8
    curves = load_curves(results)
    # each step consumed a global batch: batch_size examples on each of the 2 workers
    batch = spec.student.optim.batch_size
    assert curves["samples_seen"].to_pylist() == [50 * batch * 2, 100 * batch * 2]
    assert list((results / "tune").glob("students/*/student-*"))  # the TorchTrainer run dir


@pytest.mark.ray
def test_a_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(ray_session, tmp_path):
    spec = load_spec(
        QUICKSTART,
        [*TINY, f"storage={tmp_path}", "name=nan", "num_samples=3", "student.optim.lr=1.0",
         "student.optim.kind=sgd", "student.optim.momentum=0.99", "space.temperature=[50, 100]",
         "space.alpha=[0.0, 0.01]", "resources.max_failures=0", "baselines=[labels_only]"],
    )  # fmt: skip
    trials = load_trials(run_sweep(spec)).to_pandas()
    assert len(trials) == 4 and trials["trial_id"].is_unique  # every trial ran and has a row
    failed = trials[trials["status"] == "ERROR"]
    assert len(failed) >= 3  # the searched ones: KD gradients scaled by T ~ 50-100 at lr 1
    assert failed["error"].str.contains("FloatingPointError: training loss is nan").all()


def test_each_run_of_a_sweep_seeds_its_sampler_anew():
    from search._study import run_seed

    assert run_seed(7, 0) == 7  # the first run: the spec's seed
    assert len({run_seed(7, 0), run_seed(7, 1), run_seed(7, 2), run_seed(8, 1)}) == 4
    assert run_seed(7, 1) == run_seed(7, 1)  # reproducible


@pytest.mark.ray
def test_time_budget_stops_the_sweep_and_run_again_finishes_it(ray_session, tmp_path):
    """A budget hit while the first trials run: they are recorded STOPPED; run again (no
    budget), they run once more and the sweep completes with fresh proposals, no config
    evaluated twice."""
    args = [
        *TINY, f"storage={tmp_path}", "name=budget", "num_samples=4", "search.algorithm=random",
        "search.cover_curricula=false", "student.optim.steps=30000", "student.eval_every=500",
    ]  # fmt: skip
    # too short for 30000 steps; on a loaded machine a trial may be stopped before its first
    # report (a row without steps) or while still starting (no row): both run again
    run_sweep(load_spec(QUICKSTART, [*args, "time_budget_s=15"]))
    first = load_trials(tmp_path / "budget").to_pandas()
    stopped = first[first["status"] == "STOPPED"]
    assert (stopped["steps"].isna() | (stopped["steps"] < 30000)).all()
    run_sweep(load_spec(QUICKSTART, args))  # the budget may change between runs
    trials = load_trials(tmp_path / "budget").to_pandas()
    done = trials[trials["status"] == "TERMINATED"]
    assert len(done) == 4 and (done["steps"] == 30000).all()
    params = ["config.distill.temperature", "config.distill.alpha"]
    assert not done.duplicated(params).any()  # the resumed sampler did not replay run 1
    rerun = done.merge(stopped[params], on=params)  # each stopped config ran once more
    assert len(rerun) == len(stopped)


def _kill_trial_actors() -> int:
    """SIGKILL every Tune function-trial actor process on this machine; how many."""
    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ray::ImplicitFunc" in cmdline:
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    return killed


@pytest.mark.ray
@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_trial_whose_process_dies_is_retried_from_its_checkpoint(
    ray_session, tmp_path, checkpoint
):
    """A trial's process killed mid-run: with ``resources.checkpoint`` the retry resumes from
    its last report (no step reported twice); without, it starts over, and the curves table
    still holds one row per step."""
    import threading

    steps, every = 3000, 100
    spec = load_spec(
        QUICKSTART,
        [*TINY, f"storage={tmp_path}", "name=retried", "num_samples=1",
         f"student.optim.steps={steps}", f"student.eval_every={every}",
         "search.cover_curricula=false", f"resources.checkpoint={str(checkpoint).lower()}"],
    )  # fmt: skip
    sweep = threading.Thread(target=run_sweep, args=(spec,))
    sweep.start()
    deadline = time.monotonic() + 120
    while True:  # kill the trial once it has reported a few evaluations
        assert time.monotonic() < deadline, "the trial never reported"
        wal = list((tmp_path / "retried" / "curves").glob("_wal-*.jsonl"))
        if wal and len(wal[0].read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    assert _kill_trial_actors() >= 1
    sweep.join(timeout=300)
    trials = load_trials(tmp_path / "retried").to_pandas()
    assert trials["status"].tolist() == ["TERMINATED"] and trials["steps"].tolist() == [steps]
    curves = load_curves(tmp_path / "retried").to_pandas()
    assert sorted(curves["step"]) == list(range(every, steps + 1, every))  # once each
    (results,) = (tmp_path / "retried" / "tune").glob("students*/*/result.json")
    reported = len(results.read_text().splitlines())  # what the trial reported, replays too
    if checkpoint:
        assert reported < steps // every + 5  # resumed: fewer reports than starting over
    else:
        assert reported >= steps // every + 5  # started over: the first reports came twice


def _kill_and_reap(pid: int) -> None:
    """SIGKILL ``pid`` and return once it is gone (or a zombie: it runs no more code)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} survived SIGKILL")


@pytest.mark.ray
def test_a_finished_trials_process_dying_does_not_fail_the_next_trial(
    ray_session, tmp_path, monkeypatch
):
    """Every trial's process killed right after its trial finished, as a lost node's idle
    processes die: every trial still runs to its end. Were a finished trial's process kept
    for the next trial (Tune's ``reuse_actors``), the next trial would land on the dead one
    and fail without a retry, whatever ``max_failures`` allows (Ray 2.60 counts a failure
    while resetting a reused process twice, the second time with the trial PENDING, which
    is never retried)."""
    import search.sweep

    class KillingPrinter(search.sweep.ProgressPrinter):
        def on_trial_complete(self, iteration, trials, trial, **info):
            super().on_trial_complete(iteration, trials, trial, **info)
            # the driver calls this before Tune decides what to do with the trial's process
            _kill_and_reap(trial.last_result["pid"])

    monkeypatch.setattr(search.sweep, "ProgressPrinter", KillingPrinter)
    spec = load_spec(
        QUICKSTART,
        [*TINY, f"storage={tmp_path}", "name=dying", "num_samples=3", "student.optim.steps=50",
         "resources.max_concurrent=1", "resources.max_failures=3",
         "resources.reuse_processes=false", "search.cover_curricula=false"],
    )  # fmt: skip
    trials = load_trials(run_sweep(spec)).to_pandas()
    assert len(trials) == 3 and trials["trial_id"].is_unique
    assert (trials["status"] == "TERMINATED").all(), trials["error"].dropna().tolist()


@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_mid_sweep_then_run_again_completes_without_rerunning(
    external_cluster, tmp_path
):
    address = external_cluster(head_cpus=2)
    args = [
        sys.executable, "-m", "search", "run", str(QUICKSTART), "--storage", str(tmp_path),
        "--name", "killed", "--address", address, "--set", "num_samples=8",
        *[a for s in TINY for a in ("--set", s)], "--set", "student.optim.steps=300",
        "--set", "baselines=[labels_only]",
    ]  # fmt: skip
    log = tmp_path / "driver.log"  # a file, not a pipe nobody reads: a full pipe blocks it
    with log.open("w") as out:
        driver = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    trials_dir = tmp_path / "killed" / "trials"
    deadline = time.monotonic() + 900  # a loaded machine starts Ray and trains slowly
    while not (trials_dir.is_dir() and len(list(trials_dir.glob("*.parquet"))) >= 3):
        assert driver.poll() is None, log.read_text()[-3000:]  # kill it mid-sweep
        assert time.monotonic() < deadline, "three trials never finished"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    before = load_trials(tmp_path / "killed").to_pandas()
    assert 3 <= len(before) < 9
    # Every row reported before the kill is readable: finished trials' curves are complete,
    # and running trials' rows are there too (the sink's write-ahead log).
    curves = load_curves(tmp_path / "killed").to_pandas()
    per_trial = curves.groupby("trial_id")["step"].apply(sorted)
    for trial_id in before["trial_id"]:
        assert per_trial[trial_id] == [50 * k for k in range(1, 7)]
    rows_at_kill = len(curves)
    assert len(per_trial) > len(before) or rows_at_kill == 6 * len(before)
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "students: resuming" in again.stdout
    curves = load_curves(tmp_path / "killed").to_pandas()  # recovered into Parquet: no dupes
    assert not curves.duplicated(["trial_id", "step"]).any() and len(curves) >= rows_at_kill
    assert not list((tmp_path / "killed" / "curves").glob("_wal-*"))
    after = load_trials(tmp_path / "killed").to_pandas()
    assert len(after) == 9 and after["trial_id"].is_unique
    assert set(before["trial_id"]) <= set(after["trial_id"])  # finished trials kept, not re-run
    kept = after.set_index("trial_id").loc[before["trial_id"], "wall_time_s"]
    assert kept.tolist() == before["wall_time_s"].tolist()
    assert (after["config.arm"] == "baseline:labels_only").sum() == 1
    study = optuna.load_study(
        study_name=STUDY_NAME,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "killed" / "optuna.journal"))
        ),
    )
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 8  # every searched trial told exactly once


@pytest.mark.ray
@pytest.mark.slow
def test_three_node_sweep_survives_losing_a_worker_node(tmp_path):
    """Real multi-node Ray on one machine: trials land on several nodes; a worker node removed
    mid-sweep -> the sweep completes and every trial has exactly one row."""
    import threading

    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # this test owns its cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        spec = load_spec(
            QUICKSTART,
            [*TINY, f"storage={tmp_path}", "name=nodes", "num_samples=8",
             "student.optim.steps=400", "resources.max_failures=3"],
        )  # fmt: skip
        trials_dir = spec.sweep_dir / "trials"
        finished_at_removal: list[int] = []
        swept = threading.Event()

        def remove_one_node() -> None:  # once trials have finished on both worker nodes
            while not swept.is_set():  # no deadline: the teacher phase alone may take minutes
                files = list(trials_dir.glob("*.parquet")) if trials_dir.is_dir() else []
                nodes = set()
                for f in files:
                    try:
                        nodes.update(pq.read_table(f, columns=["node_id"])[0].to_pylist())
                    except OSError:  # compacted away meanwhile: read again next round
                        continue
                if len(nodes) >= 2:
                    cluster.remove_node(workers[1], allow_graceful=False)
                    finished_at_removal.append(len(files))
                    return
                swept.wait(0.2)

        remover = threading.Thread(target=remove_one_node)
        remover.start()
        try:
            results = run_sweep(spec)
        finally:
            swept.set()
            remover.join()
        trials = load_trials(results).to_pandas()
        assert len(trials) == 8 and trials["trial_id"].is_unique
        assert (trials["status"] == "TERMINATED").all(), trials["error"].dropna().tolist()
        assert trials["node_id"].nunique() >= 2  # trials ran on both worker nodes
        # removed while the sweep ran, after trials had finished on both nodes, before the last
        assert finished_at_removal and finished_at_removal[0] < 8, finished_at_removal
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_exported_pbt_schedule_replays_the_lineages_settings(tmp_path):
    """A lineage: T 3.0 from the start, 1.5 from step 100 (an exploit), 6.0 from step 200."""
    import json

    import yaml

    from search.schedulers import export_schedule
    from trainables.config import StudentConfig
    from trainables.loops import student_loop

    spec = _spec(storage=str(tmp_path), student={"optim": {"steps": 400}, "eval_every": 50})
    conf = lambda t, a: {"distill": {"temperature": t, "alpha": a}}  # noqa: E731
    lines = [["2", "1", 1, 2, conf(3.0, 0.5), conf(1.5, 0.4)],
             ["2", "0", 3, 4, conf(1.5, 0.4), conf(6.0, 0.3)]]  # fmt: skip
    (tmp_path / "pbt_policy_x.txt").write_text("".join(json.dumps(x) + "\n" for x in lines))
    final = StudentConfig().model_dump() | conf(6.0, 0.3)
    final["distill"] = StudentConfig().model_dump()["distill"] | final["distill"]
    out = export_schedule(spec, tmp_path, "x", final)
    replay = yaml.safe_load(out.read_text())
    assert replay["distill"]["temperature"] == 3.0
    assert replay["distill"]["temperature_schedule"] == {
        "kind": "step", "boundaries": [0.25, 0.5], "values": [1.5, 6.0]
    }  # fmt: skip
    assert replay["distill"]["alpha_schedule"]["values"] == [0.4, 0.3]
    # Replaying it: the loop's temperature at each evaluation follows the lineage.
    teacher = tmp_path / "teacher"
    from trainables.bank import teacher_bank
    from trainables.config import OptimConfig, TeacherConfig

    teacher_bank(TeacherConfig(optim=OptimConfig(steps=50)), teacher)
    cfg = StudentConfig.model_validate(
        {**replay, "optim": {"steps": 400}, "eval_every": 50, "teacher_bank": str(teacher)}
    )
    temps = [r["temperature"] for r, _ in student_loop(cfg)]
    assert temps == [3.0, 3.0, 1.5, 1.5, 6.0, 6.0, 6.0, 6.0]


def test_exported_pbt_schedule_replays_the_lineages_pacing(tmp_path):
    """Pacing start 0.2 / full_at 0.5 from the start; an exploit at step 100 moves only the
    temperature (no pacing change); one at step 200 moves the pacing to 0.5 / 0.9."""
    import json

    import yaml

    from search.schedulers import export_schedule
    from trainables.config import StudentConfig
    from trainables.loops._setup import pacing_of

    spec = _spec(storage=str(tmp_path), student={"optim": {"steps": 400}, "eval_every": 50})

    def conf(t, start, full_at):
        config = StudentConfig().model_dump()
        config["distill"]["temperature"] = t
        config["curriculum"] |= {"kind": "paced"}
        config["curriculum"]["pacing"] |= {"kind": "linear", "start": start, "full_at": full_at}
        return config

    lines = [["2", "1", 1, 2, conf(3.0, 0.2, 0.5), conf(1.5, 0.2, 0.5)],
             ["2", "0", 3, 4, conf(1.5, 0.2, 0.5), conf(1.5, 0.5, 0.9)]]  # fmt: skip
    (tmp_path / "pbt_policy_x.txt").write_text("".join(json.dumps(x) + "\n" for x in lines))
    replay = yaml.safe_load(export_schedule(spec, tmp_path, "x", conf(1.5, 0.5, 0.9)).read_text())
    pacing = replay["curriculum"]["pacing"]
    assert (pacing["start"], pacing["full_at"]) == (0.2, 0.5)  # the lineage's first
    assert pacing["changes"] == [{"at": 0.5, "start": 0.5, "full_at": 0.9}]
    replayed = pacing_of(StudentConfig.model_validate(replay).curriculum)
    # linear: start + (1 - start) p / full_at, clipped at 1; hand-computed
    assert replayed(0.25) == pytest.approx(0.6)  # 0.2 + 0.8 * 0.25 / 0.5
    assert replayed(0.45) == pytest.approx(0.92)  # 0.2 + 0.8 * 0.45 / 0.5: still the first
    assert replayed(0.5) == pytest.approx(0.5 + 0.5 * 0.5 / 0.9)  # 0.778 (the first: 1.0)
    assert replayed(0.95) == 1.0


@pytest.mark.parametrize("kind", ["pbt", "pb2"])
def test_population_based_training_needs_a_random_population(kind):
    # pb2 with tpe once passed validation and then silently ran without Optuna
    with pytest.raises(SpecError, match="search.algorithm 'tpe'.*random"):
        _spec(scheduler={"kind": kind}, search={"algorithm": "tpe"})
    with pytest.raises(SpecError, match="resources.workers 2"):
        _spec(scheduler={"kind": kind}, resources={"workers": 2})
    assert _spec(scheduler={"kind": kind}).scheduler.population_based
    assert _spec(scheduler={"kind": kind}, search={"algorithm": "random"}).scheduler.kind == kind


@pytest.mark.ray
@pytest.mark.parametrize("kind", ["pbt", "pb2"])
def test_pbt_sweep_exploits_carries_state_and_exports_its_schedule(ray_session, tmp_path, kind):
    spec = load_spec(
        QUICKSTART,
        [*TINY, f"storage={tmp_path}", "name=pbt", "num_samples=6", "student.optim.steps=400",
         f"scheduler.kind={kind}", "scheduler.perturbation_interval=0.125",
         "baselines=[labels_only]", "space.curricula=[none]"],
    )  # fmt: skip
    results = run_sweep(spec)
    trials = load_trials(results).to_pandas()
    assert len(trials) == 7 and (trials["status"] == "TERMINATED").all(), trials["error"].tolist()
    assert (trials["steps"] == 400).all()
    exploits = (results / "tune" / "students" / "pbt_global.txt").read_text().splitlines()
    assert exploits  # bottom trials continued from top ones' checkpoints
    import json

    moves = [json.loads(line)[-2:] for line in exploits]  # [donor's config, explored config]
    for name, (low, high) in [("start", (0.05, 0.6)), ("full_at", (0.1, 0.9))]:
        explored = [new["curriculum"]["pacing"][name] for _, new in moves]
        assert all(low <= v <= high for v in explored)  # the space's bounds
        assert any(new["curriculum"]["pacing"][name] != old["curriculum"]["pacing"][name]
                   for old, new in moves)  # fmt: skip
    baseline = trials[trials["config.arm"] == "baseline:labels_only"]
    assert baseline["config.distill.alpha"].tolist() == [1.0]  # never perturbed
    import yaml

    from trainables.config import StudentConfig

    text = (results / "pbt_schedule.yaml").read_text()
    replay = yaml.safe_load(text)
    StudentConfig.model_validate(replay)
    # the best trial's config from its results is the schedule the export replays
    best = re.search(r"best trial \((\S+)\)", text)[1]
    followed = config_of(best, results)
    assert StudentConfig.model_validate({**followed.model_dump(), **replay}) == followed
    assert (
        followed.distill.temperature_schedule.kind
        == replay["distill"]["temperature_schedule"]["kind"]
    )


def test_settling_never_tells_a_trial_without_parameters_another_trials_result():
    """A study trial asked but killed before its space ran has no parameters: it matches
    every row, and was told some other trial's result (9 complete trials for 8 rows)."""
    study = optuna.create_study(direction="maximize", study_name=STUDY_NAME)
    done = study.ask({"distill.alpha": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(done, 0.9)
    study.ask()  # the killed one
    rows = [{"status": "TERMINATED", "config.distill.alpha": done.params["distill.alpha"],
             "val_accuracy": 0.9}]  # fmt: skip
    _settle_interrupted(study, rows, ["val_accuracy"])
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
