"""The teacher bank built on Ray Data: the same bank as a local build, a killed build resumed,
two drivers sharing one build, and a build on two nodes whose students read it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from trainables.bank import build_bank
from trainables.config import BankConfig, OptimConfig, TeacherConfig
from trainables.distill import open_bank

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SPLITS = ("train", "val", "test")


def _same_outputs(a, b):
    a, b = open_bank(a), open_bank(b)
    assert a.checkpoints == b.checkpoints and a.layout == b.layout
    for step in a.checkpoints:
        for split in SPLITS:
            rows = np.arange(len(a.outputs(split, step)))
            got, want = a.outputs(split, step).gather(rows), b.outputs(split, step).gather(rows)
            assert got.keys() == want.keys()
            for name in got:
                np.testing.assert_array_equal(got[name], want[name])


def _records(bank):
    return [json.loads(p.read_bytes()) for p in sorted((bank / "shards").rglob("*.arrow.json"))]


@pytest.mark.ray
def test_a_ray_data_build_equals_the_local_build(ray_session, tmp_path):
    from trainables.loops import teacher_loop

    cfg = TeacherConfig(
        optim=OptimConfig(steps=40), eval_every=20, checkpoint_every=20,
        output_dir=str(tmp_path / "run"),
        bank=BankConfig(top_k=4, shard_mb=0.01, workers=2, batch_size=100),
    )  # fmt: skip
    for _ in teacher_loop(cfg):
        pass
    lines = []
    on_ray = build_bank(cfg, tmp_path / "run", tmp_path / "ray", progress=lines.append)
    here = build_bank(cfg, tmp_path / "run", tmp_path / "here", use_ray=False, progress=print)
    _same_outputs(on_ray, here)
    actors = {r["built_by"]["pid"] for r in _records(on_ray)}  # built in Ray actors
    assert os.getpid() not in actors and all(r["built_by"]["node"] for r in _records(on_ray))
    assert {r["built_by"]["pid"] for r in _records(here)} == {os.getpid()}
    assert lines[-1].startswith(f"bank: {len(_records(on_ray))}/{len(_records(on_ray))} shards")


def _teacher_cli(storage, name, *overrides, **popen):
    return subprocess.Popen(
        [sys.executable, "-m", "search", "teacher", str(QUICKSTART), "--storage", str(storage),
         "--name", name, "--set", "teacher.optim.steps=100", *overrides],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
    )  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_build_resumes_keeping_its_finished_shards(tmp_path):
    """SIGKILL the driver (and its Ray) mid-build, then Ctrl-C the next one mid-build; the
    run after keeps every shard that was finished, builds the rest, does not train again,
    and the bank equals a fresh build."""
    many = ["--set", "teacher.checkpoint_every=10", "--set", "teacher.bank.shard_mb=0.002",
            "--set", "teacher.bank.workers=1"]  # fmt: skip
    proc = _teacher_cli(tmp_path, "first", *many, start_new_session=True)
    try:
        deadline, seen = time.monotonic() + 300, []
        while time.monotonic() < deadline and proc.poll() is None:
            seen = list(tmp_path.glob("_teachers/*/bank-*/shards/*/*.arrow.json"))
            if len(seen) >= 20:
                break
            time.sleep(0.02)
        assert len(seen) >= 20 and proc.poll() is None, proc.communicate()[0][-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    (bank,) = tmp_path.glob("_teachers/*/bank-*")
    assert not (bank / "manifest.json").exists()
    finished = {p.with_suffix(""): p.with_suffix("").stat() for p in seen}
    run_json = (bank.parent / "teacher" / "run.json").read_bytes()

    # Ctrl-C mid-build stops it at once (not after the whole build), resumable
    stopped = _teacher_cli(tmp_path, "stopped", *many)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and stopped.poll() is None:
        if len(list(bank.glob("shards/*/*.arrow.json"))) >= len(seen) + 10:
            break
        time.sleep(0.02)
    stopped.send_signal(signal.SIGINT)
    out = stopped.communicate(timeout=120)[0]
    assert stopped.returncode == 130, out[-3000:]
    assert "interrupted; run the same command to resume (stopped in the teacher phase)" in out
    assert not (bank / "manifest.json").exists()

    again = _teacher_cli(tmp_path, "second", *many)
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out[-3000:]
    assert "training" not in out and f"teacher bank: {bank}" in out
    (line,) = [x for x in out.splitlines() if x.startswith("bank: ") and "kept" in x]
    assert int(line.rsplit(", ", 1)[1].split()[0]) >= len(finished)
    for path, stat in finished.items():  # kept, not rewritten
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert (bank.parent / "teacher" / "run.json").read_bytes() == run_json
    open_bank(bank).verify()
    cfg = TeacherConfig(
        checkpoint_every=10, optim=OptimConfig(steps=100),
        bank=BankConfig(shard_mb=0.002), **_quickstart_teacher(),
    )  # fmt: skip
    _same_outputs(bank, build_bank(cfg, bank.parent / "teacher", tmp_path / "fresh",
                                   use_ray=False, progress=print))  # fmt: skip


def _quickstart_teacher():
    from search.spec import load_spec

    spec = load_spec(QUICKSTART)
    return {"data": spec.data, "task": spec.task, "model": spec.teacher.model,
            "seed": spec.teacher.seed}  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_two_sweeps_needing_one_bank_at_once_build_it_once(tmp_path):
    """Two sweeps started together with the same teacher: one trains and builds, the other
    waits for it and reuses the bank; both finish their students."""
    tiny = ["num_samples=1", "baselines=[]", "search.n_startup_trials=1",
            "teacher.optim.steps=100", "student.optim.steps=30", "student.eval_every=30"]  # fmt: skip
    sweeps = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "search",
                "run",
                str(QUICKSTART),
                "--storage",
                str(tmp_path),
                "--name",
                name,
                *(x for o in tiny for x in ("--set", o)),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for name in ("a", "b")
    ]
    outs = [p.communicate(timeout=600)[0] for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], [out[-3000:] for out in outs]
    trained = [out for out in outs if "teacher: training" in out]
    assert len(trained) == 1, outs
    (other,) = [out for out in outs if out is not trained[0]]
    assert "waiting for it" in other or "teacher: reusing" in other
    assert not any(x.startswith("bank: ") for x in other.splitlines())  # it built no shard
    (bank,) = tmp_path.glob("_teachers/*/bank-*")
    open_bank(bank).verify()
    assert all("students: 1 finished, 0 failed" in out for out in outs)


_TWO_NODES = textwrap.dedent("""
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    import pyarrow.parquet as pq
    from search.spec import load_spec
    from search.sweep import run_sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        spec = load_spec(sys.argv[1], [
            f"storage={sys.argv[2]}", "name=nodes", "num_samples=2", "baselines=[]",
            "search.n_startup_trials=2", "teacher.optim.steps=100", "student.optim.steps=60",
            "student.eval_every=30", "teacher.bank.workers=2", "teacher.bank.shard_mb=0.002",
        ])
        sweep = run_sweep(spec)
        trials = pq.read_table(sweep / "trials").to_pylist()
        print("RESULT", json.dumps({
            "workers": sorted(n["NodeID"] for n in ray.nodes() if n["Resources"].get("CPU")),
            "statuses": [t["status"] for t in trials],
            "student_nodes": sorted({t["node_id"] for t in trials}),
        }), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
""")


@pytest.mark.ray
@pytest.mark.slow
def test_a_two_node_build_runs_actors_on_both_nodes_and_students_read_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_NODES, str(QUICKSTART), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    (bank,) = tmp_path.glob("_teachers/*/bank-*")
    nodes = {r["built_by"]["node"] for r in _records(bank)}
    assert nodes == set(result["workers"])  # both worker nodes ran bank actors
    assert result["statuses"] == ["TERMINATED", "TERMINATED"]  # the students read the bank
    assert set(result["student_nodes"]) <= set(result["workers"])


def test_banks_that_store_the_same_share_a_directory_and_others_do_not(tmp_path):
    from search.spec import load_spec
    from search.teacher import teacher_dir

    def bank(*overrides):
        return teacher_dir(load_spec(QUICKSTART, [f"storage={tmp_path}", *overrides]))

    dense = bank()  # digits: 10 classes, dense by default
    assert bank("teacher.bank.top_k=dense") == dense == bank("teacher.bank.top_k=64")
    assert bank("teacher.bank.precision=int8") == dense  # no precision for dense outputs
    assert bank("teacher.bank.workers=3", "teacher.bank.batch_size=7") == dense
    assert bank("teacher.bank.top_k=4") != dense
    assert bank("teacher.bank.top_k=4", "teacher.bank.precision=int8") != bank(
        "teacher.bank.top_k=4"
    )
    assert bank("teacher.score_folds=3").parent == dense.parent != bank("teacher.seed=1").parent
    assert bank(f"teacher.bank.root={tmp_path / 'banks'}").parent.parent == tmp_path / "banks"


def test_a_student_top_k_above_what_the_bank_will_keep_is_refused_before_anything_starts(
    tmp_path,
):
    def validate(*overrides):
        return subprocess.run(
            [sys.executable, "-m", "search", "validate", str(ROOT / "examples" / "text_lm.yaml"),
             "--storage", str(tmp_path), *(x for o in overrides for x in ("--set", o))],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    # bytes: 256 tokens, dense by default: a top-k of at most 256 from the dense outputs
    too_many = validate("student.distill.top_k=300")
    assert too_many.returncode == 2, too_many.stderr
    (line,) = too_many.stderr.strip().splitlines()
    assert line == (
        "error: student.distill.top_k / space.top_ks: 300 is more than the 256 classes or "
        "tokens; use at most 256"
    )
    stored = validate("teacher.bank.top_k=16", "space.top_ks=[null,8,32]")
    assert (
        stored.returncode == 2
        and "32 is more than the teacher bank keeps (teacher.bank" in stored.stderr
    )
    assert validate("teacher.bank.top_k=16", "space.top_ks=[null,8,16]").returncode == 0


def test_a_failed_bank_build_is_one_line_with_the_whole_error_kept(tmp_path, monkeypatch):
    import search.teacher as teacher
    from search.spec import load_spec

    spec = load_spec(QUICKSTART, [f"storage={tmp_path}"])
    bank = teacher.teacher_dir(spec)
    bank.mkdir(parents=True)
    monkeypatch.setattr(teacher, "_run_ready", lambda run_dir: True)
    monkeypatch.setattr(teacher, "_fold_ready", lambda fold_dir: True)

    def fail(*args, **kwargs):
        raise ValueError("teacher checkpoint 800, train rows 0-255: NaN\nsecond line")

    monkeypatch.setattr(teacher, "build_bank", fail)
    with pytest.raises(teacher.TeacherError) as info:
        teacher._build(spec, bank, 0, tmp_path / "tune")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("building the teacher bank failed: ValueError: teacher checkpoint")
    assert str(bank / "build-error.txt") in message
    assert "second line" in (bank / "build-error.txt").read_text()


def test_trials_that_failed_on_a_damaged_bank_run_again_when_the_sweep_resumes(
    tmp_path, monkeypatch
):
    import optuna

    import search._resume as resume
    from search.spec import load_spec

    spec = load_spec(QUICKSTART, [f"storage={tmp_path}", "num_samples=3"])
    damaged = ("ray.exceptions.RayTaskError(BankCorruptError): teacher bank file "
               "/s/shards/step-000000800/train-00000.arrow is corrupt (checksum mismatch)")  # fmt: skip
    rows = [
        {"status": "TERMINATED", "error": None, "config.arm": "search"},
        {"status": "ERROR", "error": damaged, "config.arm": "search"},
        {"status": "ERROR", "error": "FloatingPointError: training loss is nan", "config.arm": "search"},
        {"status": "ERROR", "error": damaged, "config.arm": "baseline:labels_only"},
    ]  # fmt: skip
    monkeypatch.setattr(resume, "trial_rows", lambda sweep_dir: rows)
    plan = resume.plan_resume(spec, optuna.create_study(), runs=1)
    assert plan.done == 2  # the finished trial and the one that failed on its own
    assert plan.remaining == 1  # the searched trial of the damaged bank runs again
    assert "labels_only" not in plan.done_arms


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("teacher.bank.top_k=abc", "teacher.bank.top_k: must be 'dense' or an integer in [1, 65536], got 'abc'"),
        ("teacher.bank.top_k=true", "teacher.bank.top_k: must be 'dense' or an integer in [1, 65536], got True"),
        ("teacher.bank.top_k=70000", "teacher.bank.top_k: must be 'dense' or an integer in [1, 65536], got 70000"),
        ("teacher.bank.precision=int4", "teacher.bank.precision: Input should be 'fp16' or 'int8'"),
        ("teacher.bank.shard_mb=nan", "teacher.bank.shard_mb: Input should be a finite number"),
        ("teacher.bank.workers=0", "teacher.bank.workers: Input should be greater than or equal to 1"),
        ("teacher.score_folds=1", "score_folds must be 0 (off) or at least 2, got 1"),
        ("space.scores=[oof_loss]", "'oof_loss' is a cross-fitted score; set teacher.score_folds"),
    ],
)  # fmt: skip
def test_bad_bank_settings_are_one_line_naming_the_field(tmp_path, override, problem):
    from search.spec import SpecError, load_spec

    with pytest.raises(SpecError) as info:
        load_spec(QUICKSTART, [f"storage={tmp_path}", override])
    assert len(info.value.problems) == 1 and problem in info.value.problems[0]
    assert not (tmp_path / "_teachers").exists()


def test_a_bank_root_that_is_a_file_is_refused(tmp_path):
    from search.spec import SpecError, load_spec

    (tmp_path / "afile").write_text("")
    with pytest.raises(SpecError, match=r"teacher.bank.root: '.*afile' is a file, not a directory"):
        load_spec(QUICKSTART, [f"storage={tmp_path}", f"teacher.bank.root={tmp_path / 'afile'}"])
