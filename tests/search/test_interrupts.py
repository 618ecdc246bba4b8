"""Ctrl-C in any phase of a sweep: one line saying how to resume, exit 130, and the same
command then completes the sweep with every trial once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis import load_trials

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
RESUME = "run the same command to resume"


def _start(storage: Path, *overrides: str, name: str = "intr") -> tuple[subprocess.Popen, Path]:
    log = storage / f"driver-{time.monotonic_ns()}.log"
    sets = [a for o in overrides for a in ("--set", o)]
    args = [sys.executable, "-u", "-m", "search", "run", str(QUICKSTART), "--storage",
            str(storage), "--name", name, *sets]  # fmt: skip
    with log.open("w") as out:  # a file, not a pipe: nothing blocks on a full pipe
        # its own process group, signalled as a terminal's Ctrl-C signals one: every process
        driver = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return driver, log


def _wait_for(driver: subprocess.Popen, log: Path, ready, what: str) -> None:
    deadline = time.monotonic() + 600  # a loaded machine starts Ray slowly; never a speed test
    while not ready():
        assert driver.poll() is None, f"the sweep ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def _interrupt(driver: subprocess.Popen, log: Path) -> str:
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=300) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in _driver_lines(text), text[-3000:]
    return text


def _driver_lines(text: str) -> str:
    """The driver's own output, without the lines Ray forwards from trial processes."""
    return "\n".join(line for line in text.splitlines() if "pid=" not in line)


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_in_each_phase_exits_130_and_the_same_command_resumes(tmp_path):
    sweep = tmp_path / "intr"
    spec = ("teacher.optim.steps=200", "student.optim.steps=2000", "student.eval_every=100",
            "num_samples=3", "baselines=[labels_only]", "search.cover_curricula=false")  # fmt: skip

    # while a teacher trains (one too long to finish first, in a sweep of its own)
    driver, log = _start(tmp_path, *spec, "teacher.optim.steps=100000", name="teacher")
    _wait_for(driver, log, lambda: "teacher: training" in log.read_text(), "the teacher phase")
    assert f"interrupted; {RESUME} (stopped in the teacher phase)" in _interrupt(driver, log)
    teachers = tmp_path / "_teachers"  # no teacher kept: neither a bank nor a teacher's run
    assert not list(teachers.glob("*/bank-*/manifest.json"))
    assert not list(teachers.glob("*/teacher/run.json"))

    # the moment the student phase starts
    driver, log = _start(tmp_path, *spec)
    _wait_for(driver, log, lambda: "students: ->" in log.read_text(), "the student phase")
    assert f"interrupted; {RESUME} (stopped in the student phase)" in _interrupt(driver, log)

    # while trials run and report
    driver, log = _start(tmp_path, *spec)
    curves = sweep / "curves"
    _wait_for(driver, log, lambda: curves.is_dir() and any(curves.glob("*")), "a report")
    assert f"interrupted; {RESUME} (stopped in the student phase)" in _interrupt(driver, log)

    # the same command completes the sweep, every trial once
    driver, log = _start(tmp_path, *spec)
    assert driver.wait(timeout=900) == 0, log.read_text()[-3000:]
    trials = load_trials(sweep).to_pandas()
    done = trials[trials["status"] == "TERMINATED"]
    assert len(done) == 4 and (done["steps"] == 2000).all()  # 3 searched + 1 baseline
    assert done["trial_id"].is_unique and set(trials["status"]) <= {"TERMINATED", "STOPPED"}
