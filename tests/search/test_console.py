"""What a sweep shows: progress lines and run names that say what differs between trials,
Tune's console without config dumps or Ray's temporary paths, a Ctrl-C that says to run the
same command again, TensorBoard scalars against the student's step."""

from __future__ import annotations

import copy
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.progress import (
    NAME_LIMIT,
    TrialDirname,
    TuneConsole,
    describe_schedule,
    run_name,
    varying,
)
from search.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SAFE = re.compile(r"[A-Za-z0-9._=+-]+")


def _student(example: str) -> tuple[dict, tuple[str, ...]]:
    """The example's student config (nested, as Tune passes it) and its searched paths."""
    spec = load_spec(EXAMPLES / example, [])
    return spec.student_config("bank").model_dump(), varying(spec.space)


def _progressive(**schedule) -> tuple[dict, tuple[str, ...]]:
    config, searched = _student("sparse_parity_progressive.yaml")
    config = copy.deepcopy(config)
    config["teacher_schedule"].update(schedule)
    config["distill"]["temperature"] = 0.000275
    return config, searched


def _paced(start: float = 0.4012) -> tuple[dict, tuple[str, ...]]:
    config, searched = _student("quickstart.yaml")
    config = copy.deepcopy(config)
    config["curriculum"].update(kind="paced", order="easy_first", score="confidence")
    config["curriculum"]["pacing"].update(kind="linear", start=start, full_at=0.536)
    return config, searched


def test_varying_is_what_the_space_draws():
    _, quickstart = _student("quickstart.yaml")
    _, progressive = _student("sparse_parity_progressive.yaml")
    assert {"curriculum.kind", "distill.temperature", "distill.alpha"} <= set(quickstart)
    assert "teacher_schedule.kind" not in quickstart  # [final]: one choice
    assert "curriculum.order" not in quickstart
    assert "teacher_schedule.kind" in progressive
    assert "distill.alpha" not in progressive and "curriculum.kind" not in progressive


def test_progress_line_names_the_teacher_schedule_of_a_progressive_sweep():
    final_config, searched = _progressive(kind="final")
    final = describe_schedule(final_config, searched=searched)
    two_shot = describe_schedule(
        _progressive(kind="two_shot", switch_at=0.21)[0], searched=searched
    )
    uniform = describe_schedule(_progressive(kind="uniform_k", k=5)[0], searched=searched)
    assert "teacher_schedule=final " in final
    assert "teacher_schedule=two_shot(switch_at=0.21) " in two_shot
    assert "teacher_schedule=uniform_k(k=5) " in uniform
    # a setting the kind does not use is not shown
    assert "k=" not in two_shot and "switch_at" not in uniform and "switch_at" not in final


def test_a_tiny_temperature_reads_in_scientific_notation():
    config, searched = _progressive(kind="final")
    assert "distill.temperature=2.75e-4 " in describe_schedule(config, searched=searched)
    config["distill"]["temperature"] = 1e-20
    assert "distill.temperature=1e-20 " in describe_schedule(config, searched=searched)
    config["distill"]["temperature"] = 2.4137
    assert "distill.temperature=2.41 " in describe_schedule(config, searched=searched)


def test_a_baseline_arm_leads_its_description():
    config, searched = _student("quickstart.yaml")
    labels_only = {**config, "arm": "baseline:labels_only"}
    labels_only["distill"] = {**config["distill"], "alpha": 1.0}
    text = describe_schedule(labels_only, searched=searched)
    assert text.startswith("baseline:labels_only none ")
    assert "temperature" not in text  # alpha = 1: the temperature is not used


def test_run_name_is_the_trial_id_and_what_differs_filesystem_safe_and_short():
    config, searched = _paced()
    name = run_name("1b642e87", config, searched=searched)
    assert name == "1b642e87_paced_temperature=4_alpha=0.5_start=0.401_full_at=0.536"
    # fixed by the space (one choice): left out of the name
    assert "easy_first" not in name and "confidence" not in name
    assert run_name("1b642e87", _paced(start=0.2)[0], searched=searched) != name
    two_shot, progressive = _progressive(kind="two_shot", switch_at=0.21)
    assert run_name("a", two_shot, searched=progressive) == (
        "a_none_teacher_schedule=two_shot_temperature=2.75e-4_alpha=0_switch_at=0.21"
    )


def test_run_name_stays_short_cut_at_a_whole_setting():
    config, _ = _paced()
    config["curriculum"]["pacing"]["kind"] = "exponential"
    everything = varying(load_spec(EXAMPLES / "all_curricula.yaml", []).space)
    name = run_name("0123456789abcdef", config, searched=everything)
    assert len(name) <= NAME_LIMIT and SAFE.fullmatch(name)
    assert name.startswith("0123456789abcdef_paced_")
    assert all("=" in part and not part.endswith("=") for part in name.split("_paced_")[1:])


def test_trial_dirname_is_the_run_name_and_the_same_every_time():
    config, searched = _paced()

    class Trial:  # what Tune's trial_dirname_creator reads of a trial
        trial_id = "c448d4a7"

    trial = Trial()
    trial.config = config
    creator = TrialDirname(searched)
    assert creator(trial) == creator(trial) == run_name("c448d4a7", config, searched=searched)
    assert os.sep not in creator(trial)


def test_tune_console_is_silent_at_verbose_0_and_names_the_real_tensorboard_path(capsys):
    started = {
        "experiment_name": "students", "experiment_path": "/data/sweep/tune/students",
        "searcher_str": "SearchGenerator", "scheduler_str": "FIFOScheduler",
        "total_num_samples": 5,
        "tensorboard_path": "/tmp/ray/session_x/artifacts/y/students/driver_artifacts",
    }  # fmt: skip
    TuneConsole(0).experiment_started(**started)
    assert capsys.readouterr().out == ""
    TuneConsole(1).experiment_started(**started)
    out = capsys.readouterr().out
    assert "tensorboard --logdir /data/sweep/tune/students`" in out
    assert "/tmp/ray" not in out


# --- a real sweep, run as a user runs it -------------------------------------------------

TINY = ("teacher.optim.steps=200", "student.eval_every=50", "search.cover_curricula=false")


def _run(storage: Path, name: str, *sets: str) -> tuple[subprocess.Popen, Path]:
    log = storage / f"{name}.log"
    args = [sys.executable, "-u", "-m", "search", "run", str(EXAMPLES / "quickstart.yaml"),
            "--storage", str(storage), "--name", name, "--verbose",
            *(a for s in (*TINY, *sets) for a in ("--set", s))]  # fmt: skip
    with log.open("w") as out:  # a file, not a pipe: nothing blocks on a full pipe
        driver = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return driver, log


def _driver_lines(text: str) -> str:
    """The driver's own output, without the lines Ray forwards from trial processes."""
    return "\n".join(line for line in text.splitlines() if "pid=" not in line)


def _assert_clean_console(text: str, storage: Path) -> None:
    assert "started with configuration" not in text  # Tune's whole-config table per trial
    assert "params={" not in text and "curriculum/pacing/inc" not in text
    assert "Tuner.restore" not in text
    driver = _driver_lines(text)
    assert "SystemExit" not in driver, driver[max(0, driver.find("SystemExit") - 3000) :]
    assert "Traceback" not in driver, driver[max(0, driver.find("Traceback") - 3000) :]
    hints = re.findall(r"tensorboard --logdir (\S+?)`", text)
    assert hints and all(h.startswith(str(storage)) for h in hints), hints


def _scalars(event_file: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value)]}`` of a TensorBoard event file (TFRecord framing: length,
    its CRC, the event, its CRC), decoded with tensorboardX's protobuf."""
    from tensorboardX.proto.event_pb2 import Event

    data, at, out = event_file.read_bytes(), 0, {}
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = Event.FromString(data[at + 12 : at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_shows_what_differs_against_the_step_and_stops_cleanly(tmp_path):
    # a whole sweep, with Tune's tables (--verbose)
    driver, log = _run(tmp_path, "console", "student.optim.steps=200", "num_samples=2")
    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    _assert_clean_console(text, tmp_path)
    assert re.search(r"Current best trial: \w+ with val_accuracy=[\d.]+: \S", text)
    lines = re.findall(r"^  \[\d/\d\] \w+ (.*): val_accuracy", text, re.MULTILINE)
    assert len(lines) == 4 and any(line.startswith("baseline:oneshot none") for line in lines)

    trial_dirs = [d for d in (tmp_path / "console" / "tune" / "students").iterdir() if d.is_dir()]
    assert len(trial_dirs) == 4
    for trial_dir in trial_dirs:
        assert SAFE.fullmatch(trial_dir.name) and len(trial_dir.name) <= NAME_LIMIT
        trial_id, kind = trial_dir.name.split("_")[:2]
        assert re.fullmatch(r"[0-9a-f]{8}", trial_id), trial_dir.name
        assert "baseline-" in trial_dir.name or kind in ("none", "paced"), trial_dir.name
        assert "_alpha=" in trial_dir.name and not re.search(r"\d{4}-\d\d-\d\d", trial_dir.name)
        (events,) = trial_dir.glob("events.out.tfevents.*")
        scalars = _scalars(events)
        # every report at its student step (eval_every 50 of 200), not Tune's 1, 2, 3, 4
        assert [step for step, _ in scalars["ray/tune/val_accuracy"]] == [50, 100, 150, 200]
        assert [v for _, v in scalars["ray/tune/step"]] == [50, 100, 150, 200]

    # Ctrl-C while trials run: the hint is the same command, no traceback, no restore advice
    driver, log = _run(tmp_path, "stopped", "student.optim.steps=20000", "num_samples=2")
    curves = tmp_path / "stopped" / "curves"
    deadline = time.monotonic() + 600
    while not (curves.is_dir() and any(curves.glob("*"))):
        assert driver.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no report in 600 s"
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=300) == 130, log.read_text()[-3000:]
    text = log.read_text()
    _assert_clean_console(text, tmp_path)
    assert "interrupted; run the same command to resume (stopped in the student phase)" in text


def test_tunes_own_reporter_beside_the_console_survives_a_failed_trial(capsys):
    """Tune appends its own reporter to the callbacks and sets up only the first: without a
    start time its on_trial_error raised and failed the whole sweep at the first bad trial."""
    from ray.tune.experimental.output import AirVerbosity, TuneTerminalReporter

    for verbose in (0, 1):
        callbacks = TuneConsole(verbose).alongside([])
        tunes_own = TuneTerminalReporter(AirVerbosity(0))
        callbacks.append(tunes_own)  # what Tune does to the list it is given
        for reporter in callbacks:
            reporter.setup(total_samples=1)  # Tune's first round: no start time
        callbacks[0].setup(start_time=123.0, total_samples=1)  # the reporter it found
        assert tunes_own._start_time == 123.0

        class _Trial:
            last_result, error_file, trial_id, config = {}, "/error.txt", "t1", {}

            def __str__(self):
                return "t1"

        tunes_own.on_trial_error(0, [], _Trial())  # raised TypeError before
        assert "errored" in capsys.readouterr().out
