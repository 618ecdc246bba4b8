"""One driver per sweep, as users meet it: several ``python -m search run`` of one sweep."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis import ResultsError, load_trials
from search._lock import LOCK_NAME, lock_holder

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SMALL = [
    "num_samples=4", "teacher.optim.steps=300", "student.optim.steps=300", "student.eval_every=50",
    "search.n_startup_trials=2", "resources.max_concurrent=1",
]  # fmt: skip
BASELINES = 2  # oneshot and labels_only
WAIT_S = 900  # generous: the machine may be loaded


def _command(storage: Path) -> list[str]:
    return [
        sys.executable, "-m", "search", "run", str(QUICKSTART), "--storage", str(storage),
        "--name", "locked", *[a for s in SMALL for a in ("--set", s)],
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)  # each driver starts its own embedded Ray
    return env


def _start(storage: Path, log: Path) -> subprocess.Popen:
    """A driver in its own process group (so SIGKILL reaches the Ray processes it starts),
    its output in files (a pipe nobody reads would block it)."""
    return subprocess.Popen(
        _command(storage), cwd=ROOT, env=_env(), start_new_session=True,
        stdout=log.with_suffix(".out").open("w"), stderr=log.with_suffix(".err").open("w"),
    )  # fmt: skip


def _wait_until(condition, what: str, runner: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        err = log.with_suffix(".err").read_text()[-3000:]
        assert runner.poll() is None, (
            f"the runner exited ({runner.returncode}) before {what}: {err}"
        )
        assert time.monotonic() < deadline, f"no {what} after {WAIT_S} s"
        time.sleep(0.5)


def _trial_rows(sweep: Path) -> int:
    try:
        return load_trials(sweep).num_rows
    except ResultsError:
        return 0


@pytest.mark.ray
@pytest.mark.slow
def test_one_driver_runs_a_sweep_the_others_exit_2_and_a_killed_drivers_lock_is_taken_over(
    tmp_path,
):
    storage, sweep = tmp_path / "storage", tmp_path / "storage" / "locked"
    logs = [tmp_path / f"driver{i}" for i in range(3)]
    drivers = [_start(storage, log) for log in logs]
    try:
        deadline = time.monotonic() + WAIT_S
        while sum(d.poll() is not None for d in drivers) < 2:
            assert time.monotonic() < deadline, f"fewer than 2 drivers refused after {WAIT_S} s"
            time.sleep(0.2)
        (runner,) = [d for d in drivers if d.poll() is None]
        runner_log = logs[drivers.index(runner)]
        for driver, log in zip(drivers, logs, strict=True):
            if driver is runner:
                continue
            err = log.with_suffix(".err").read_text()
            assert driver.returncode == 2, err[-3000:]
            assert "Traceback" not in err
            (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
            assert line.startswith("error: name: sweep 'locked' in ")
            assert f"is being run by pid {runner.pid} on host " in line
        holder = lock_holder(sweep)
        assert holder is not None and holder["pid"] == runner.pid  # the refused left it alone

        # the runner dies (no clean-up at all) once trials have begun
        _wait_until(lambda: _trial_rows(sweep) > 0, "trial row", runner, runner_log)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=60)
        assert json.loads((sweep / LOCK_NAME).read_text())["pid"] == runner.pid
        assert lock_holder(sweep) is None  # its driver is dead: free to take over
        done_before = _trial_rows(sweep)
    finally:
        for driver in drivers:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(timeout=60)

    again = subprocess.run(
        _command(storage), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=WAIT_S
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert lock_holder(sweep) is None and not (sweep / LOCK_NAME).exists()
    trials = load_trials(sweep)
    assert trials.num_rows == 4 + BASELINES, f"{done_before} rows before the kill"
    ids = trials.column("trial_id").to_pylist()
    assert len(set(ids)) == len(ids)
    config = sorted(c for c in trials.column_names if c.startswith("config."))
    rows = [json.dumps(row, sort_keys=True) for row in trials.select(config).to_pylist()]
    assert len(set(rows)) == len(rows), "a configuration ran twice"
    assert trials.column("config.arm").to_pylist().count("search") == 4
    runs = json.loads((sweep / "manifest.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["ended"] is None and runs[1]["ended"] is not None
