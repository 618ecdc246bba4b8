"""One driver per sweep: the lock in the sweep directory (search/_lock.py)."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis import load_trials
from search._lock import LOCK_NAME, SweepLock, SweepLockedError, lock_holder
from search.errors import SweepInputError

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def real_info(tmp_path):
    """What a live driver in this process writes in its lock."""
    with SweepLock(tmp_path / "model"):
        return lock_holder(tmp_path / "model")


def _forge(sweep_dir: Path, info: dict, age_s: float = 0.0) -> Path:
    """A lock file as another driver left it, last touched ``age_s`` ago."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / LOCK_NAME
    path.write_text(json.dumps(info))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_acquire_creates_the_sweep_dir_and_release_removes_the_lock(tmp_path):
    sweep = tmp_path / "storage" / "s"
    lock = SweepLock(sweep)
    lock.acquire()
    holder = lock_holder(sweep)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", holder["started"])
    lock.release()
    assert lock_holder(sweep) is None
    assert list(sweep.iterdir()) == []  # no temporary file left behind


def test_release_is_idempotent_and_the_lock_can_be_taken_again(tmp_path):
    lock = SweepLock(tmp_path)
    lock.acquire()
    lock.release()
    lock.release()
    with SweepLock(tmp_path):
        assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert lock_holder(tmp_path) is None


def test_a_second_driver_is_refused_in_one_line_naming_the_holder(tmp_path):
    with SweepLock(tmp_path / "s"):
        holder = lock_holder(tmp_path / "s")
        with pytest.raises(SweepLockedError) as caught:
            SweepLock(tmp_path / "s").acquire()
    assert isinstance(caught.value, SweepInputError)
    assert str(caught.value) == (
        f"name: sweep 's' in {tmp_path / 's'} is being run by pid {os.getpid()} on host "
        f"{socket.gethostname()} since {holder['started']} (lock {tmp_path / 's' / LOCK_NAME}); "
        "wait for it, or stop that run"
    )
    assert caught.value.holder["token"] == holder["token"]


def test_a_lock_left_by_a_killed_driver_is_taken_over(tmp_path):
    left = subprocess.run(
        [sys.executable, "-c",
         "import os, sys; from search._lock import SweepLock; SweepLock(sys.argv[1]).acquire(); "
         "print(os.getpid(), flush=True); os._exit(0)",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert left.returncode == 0, left.stderr
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == int(left.stdout)
    with SweepLock(tmp_path):
        assert lock_holder(tmp_path)["pid"] == os.getpid()


def test_a_lock_whose_pid_was_reused_by_another_process_is_taken_over(tmp_path, real_info):
    _forge(tmp_path, {**real_info, "token": "old", "process_start": "proc:1"})  # pid alive: ours
    with SweepLock(tmp_path):
        assert lock_holder(tmp_path)["token"] != "old"


@pytest.mark.parametrize(
    "other",
    [{"host": "elsewhere"}, {"machine": "another-container/pid:[1]"}],
    ids=["another host", "same host name, another machine"],
)
def test_a_lock_we_cannot_check_is_taken_over_only_once_not_touched_for_stale_after_s(
    tmp_path, real_info, other
):
    info = {**real_info, **other, "pid": _dead_pid(), "token": "theirs"}
    _forge(tmp_path / "fresh", info, age_s=5)
    with pytest.raises(SweepLockedError, match=f"pid {info['pid']} on host {info['host']} since"):
        SweepLock(tmp_path / "fresh", stale_after_s=60).acquire()
    assert lock_holder(tmp_path / "fresh", stale_after_s=60)["token"] == "theirs"

    _forge(tmp_path / "old", info, age_s=120)
    assert lock_holder(tmp_path / "old", stale_after_s=60) is None
    with SweepLock(tmp_path / "old", stale_after_s=60):
        assert lock_holder(tmp_path / "old")["pid"] == os.getpid()


def test_a_breaker_left_by_a_killed_driver_does_not_block_the_takeover(tmp_path, real_info):
    dead, sweep = _dead_pid(), tmp_path / "s"
    _forge(sweep, {**real_info, "pid": dead, "token": "stale"})
    breaker = sweep / f"{LOCK_NAME}.break"
    breaker.write_text(json.dumps({**real_info, "pid": dead, "token": "breaker"}))
    with SweepLock(sweep):
        assert lock_holder(sweep)["pid"] == os.getpid()
    assert list(sweep.iterdir()) == []


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path, real_info):
    lock = SweepLock(tmp_path)
    lock.acquire()
    _forge(tmp_path, {**real_info, "host": "elsewhere", "token": "theirs"})  # taken over
    assert lock._beat() is False  # the heartbeat does not refresh it either
    lock.release()
    assert lock_holder(tmp_path)["token"] == "theirs"


def test_a_heartbeat_refreshes_the_lock(tmp_path):
    with SweepLock(tmp_path) as lock:
        path = tmp_path / LOCK_NAME
        then = time.time() - 100
        os.utime(path, (then, then))
        assert lock._beat() is True
        assert path.stat().st_mtime > then + 50


def test_the_heartbeat_thread_beats_until_release(tmp_path):
    path = tmp_path / LOCK_NAME
    with SweepLock(tmp_path, heartbeat_s=0.05, stale_after_s=1.0) as lock:
        then = time.time() - 100
        os.utime(path, (then, then))
        deadline = time.monotonic() + 60
        while path.stat().st_mtime < then + 50:
            assert time.monotonic() < deadline, "no heartbeat in 60 s"
            time.sleep(0.05)
    assert lock._thread is None and not path.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heartbeat_s": 0}, "heartbeat_s must be > 0, got 0"),
        ({"heartbeat_s": 10, "stale_after_s": 10}, r"stale_after_s must exceed heartbeat_s \(10\), got 10"),
    ],
)  # fmt: skip
def test_bad_timings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SweepLock(tmp_path, **kwargs)


_RACER = """
import json, os, sys
from pathlib import Path
from search._lock import SweepLock, SweepLockedError
while name := sys.stdin.readline().strip():  # a round: every racer reads its line at once
    lock = SweepLock(Path(sys.argv[1]) / name)
    try:
        lock.acquire()
        print(json.dumps({"won": True, "pid": os.getpid()}), flush=True)
    except SweepLockedError as exc:
        print(json.dumps({"won": False, "pid": os.getpid(), "message": str(exc)}), flush=True)
    sys.stdin.readline()  # every racer has tried
    lock.release()
    print("{}", flush=True)
"""


def test_drivers_racing_to_take_over_one_stale_lock_leave_exactly_one_holder(tmp_path, real_info):
    dead = _dead_pid()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for r in range(10):
            # even rounds: a killed driver of this machine; odd: an old one of another host
            stale = {**real_info, "pid": dead, "token": f"stale{r}"}
            if r % 2:
                stale["host"] = "elsewhere"
            _forge(tmp_path / f"r{r}", stale, age_s=0 if r % 2 == 0 else 1000)
            for racer in racers:
                racer.stdin.write(f"r{r}\n")
            for racer in racers:
                racer.stdin.flush()
            results = [json.loads(racer.stdout.readline()) for racer in racers]
            (winner,) = [res["pid"] for res in results if res["won"]]
            assert lock_holder(tmp_path / f"r{r}")["pid"] == winner, f"round {r}"
            for res in results:
                if not res["won"]:
                    assert f"is being run by pid {winner} on host" in res["message"], res
            for racer in racers:
                racer.stdin.write("\n")
                racer.stdin.flush()
            assert [racer.stdout.readline() for racer in racers] == ["{}\n"] * len(racers)
            assert list((tmp_path / f"r{r}").iterdir()) == [], f"round {r}"
    finally:
        for racer in racers:
            racer.stdin.close()
        for racer in racers:
            racer.wait(timeout=60)


def test_submit_refuses_a_sweep_a_driver_runs_before_contacting_the_cluster(tmp_path):
    from search.spec import validate_spec
    from search.submit import submit

    spec = validate_spec({"name": "held", "storage": str(tmp_path)})
    with SweepLock(spec.sweep_dir), pytest.raises(SweepLockedError) as info:
        submit(spec, "http://127.0.0.1:9")  # nothing listens: reached only if not refused
    assert f"is being run by pid {os.getpid()}" in str(info.value)


def _take_over(sweep_dir: Path) -> None:
    """What another driver that judged this run's lock stale leaves: its own lock."""
    other = {"host": "elsewhere", "pid": 4242, "started": "2026-01-01T00:00:00+00:00",
             "token": "theirs"}  # fmt: skip
    tmp = sweep_dir / ".lock.forged"
    tmp.write_text(json.dumps(other))
    os.replace(tmp, sweep_dir / LOCK_NAME)


def test_a_driver_whose_lock_was_taken_over_is_interrupted_and_says_by_whom(tmp_path):
    from search._signals import interruptible

    with (
        interruptible() as interrupts,
        SweepLock(tmp_path / "s", on_lost=interrupts.interrupt) as lock,
    ):
        _take_over(tmp_path / "s")
        with pytest.raises(KeyboardInterrupt):  # as Ctrl-C: the sweep stops cleanly
            lock._beat()
            time.sleep(5)  # the interrupt arrives at the next bytecode; never reached
        assert lock.lost["pid"] == 4242
    message = str(lock.lost_error())
    assert "was taken over by pid 4242 on host elsewhere" in message and "\n" not in message
    assert json.loads((tmp_path / "s" / LOCK_NAME).read_text())["token"] == "theirs"  # kept


@pytest.mark.ray
def test_a_sweep_whose_lock_is_taken_over_stops_with_one_line(ray_session, tmp_path):
    """The real path: the heartbeat finds another driver's lock while trials run; the run
    stops as Ctrl-C would stop it, and ends with SweepLockLost (exit 1 from the CLI)."""
    import threading

    from search._lock import SweepLockLost
    from search.spec import load_spec
    from search.sweep import run_sweep

    spec = load_spec(
        ROOT / "examples" / "quickstart.yaml",
        [f"storage={tmp_path}", "name=taken", "num_samples=2", "baselines=[]",
         "teacher.optim.steps=100", "student.optim.steps=100000", "student.eval_every=100"],
    )  # fmt: skip
    curves = spec.sweep_dir / "curves"

    def take_over_once_trials_report() -> None:
        deadline = time.monotonic() + 600
        while not (curves.is_dir() and any(curves.iterdir())):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        _take_over(spec.sweep_dir)

    threading.Thread(target=take_over_once_trials_report, daemon=True).start()
    with pytest.raises(SweepLockLost, match="taken over by pid 4242 on host elsewhere"):
        run_sweep(spec)
    trials = load_trials(spec.sweep_dir).to_pandas()
    assert (trials["status"] == "STOPPED").all()  # stopped, and run again by a resume
