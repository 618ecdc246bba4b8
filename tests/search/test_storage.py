"""Storage that cannot take the sweep: refused before anything starts (exit 2), or, when the
disk fills up or turns read-only during the run, one line naming it (exit 1) with what was
saved intact, and the same command resumes once there is room."""

import errno
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis import load_curves, load_trials
from search.errors import SweepStorageError, storage_problem

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SMALL = ["teacher.optim.steps=200", "student.optim.steps=3000", "student.eval_every=50",
         "num_samples=3", "baselines=[]", "search.cover_curricula=false"]  # fmt: skip


def _run_args(storage, *overrides):
    sets = [a for o in (*SMALL, *overrides) for a in ("--set", o)]
    return [sys.executable, "-u", "-m", "search", "run", str(QUICKSTART), "--storage",
            str(storage), "--name", "disk", *sets]  # fmt: skip


def _run(storage, *overrides, timeout=600):
    return subprocess.run(
        _run_args(storage, *overrides), capture_output=True, text=True, timeout=timeout
    )


def _own_lines(text: str) -> list[str]:
    """The driver's lines, without those Ray forwards from trial processes."""
    return [line for line in text.splitlines() if "pid=" not in line]


@pytest.fixture
def tmpfs(tmp_path):
    """A function mounting a tmpfs of ``size`` (read-only with ``ro``); skips the test where
    this machine does not allow mounting (not root, no tmpfs)."""
    mounts = []

    def mount(size: str = "64m", ro: bool = False) -> Path:
        where = tmp_path / f"mnt{len(mounts)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if ro else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_storage_that_is_a_file_is_refused_before_anything_starts(tmp_path):
    storage = tmp_path / "results"
    storage.write_text("not a directory")
    done = _run(storage, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: storage: {str(storage)!r} is a file, not a directory"
    assert "teacher:" not in done.stdout  # refused before Ray or the teacher started
    assert storage.read_text() == "not a directory"


def test_read_only_storage_is_refused_before_anything_starts(tmpfs):
    storage = tmpfs(ro=True)
    done = _run(storage, timeout=120)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: storage: cannot write '{storage}/disk'")
    assert "Read-only file system" in line and "teacher:" not in done.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_a_disk_that_fills_up_mid_sweep_ends_in_one_line_and_the_same_command_resumes(tmpfs):
    storage = tmpfs("64m")
    with (storage.parent / "driver.log").open("w") as log:
        driver = subprocess.Popen(_run_args(storage), stdout=log, stderr=subprocess.STDOUT)
    curves = storage / "disk" / "curves"
    deadline = time.monotonic() + 600
    while not (curves.is_dir() and any(curves.iterdir())):  # trials are reporting
        assert driver.poll() is None, (storage.parent / "driver.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    filler = storage / "filler"
    with filler.open("wb") as out, pytest.raises(OSError) as full:
        while True:
            out.write(b"\0" * 2**20)
            out.flush()
    assert full.value.errno == errno.ENOSPC
    assert driver.wait(timeout=600) == 1
    lines = _own_lines((storage.parent / "driver.log").read_text())
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines[-30:]
    assert errors[0].startswith("error: storage: no space left")
    assert "run the same command again to resume" in errors[0]
    filler.unlink()

    again = _run(storage)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials = load_trials(storage / "disk").to_pandas()
    assert (trials["status"] == "TERMINATED").sum() == 3 and trials["trial_id"].is_unique
    curves = load_curves(storage / "disk").to_pandas()
    assert not curves.duplicated(["trial_id", "step"]).any()


@pytest.mark.ray
def test_a_full_disk_in_the_driver_ends_the_sweep_with_a_storage_error(
    ray_session, tmp_path, monkeypatch
):
    """The same through the real sweep on any machine: the sink's writes fail with ENOSPC."""
    import search.sink
    from search.spec import load_spec
    from search.sweep import run_sweep

    def full(table, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(search.sink, "write_parquet_atomic", full)
    spec = load_spec(
        QUICKSTART, [*SMALL, "student.optim.steps=100", f"storage={tmp_path}", "name=disk"]
    )
    with pytest.raises(SweepStorageError) as info:
        run_sweep(spec)
    message = str(info.value)
    assert message.startswith(f"storage: no space left writing '{tmp_path}/disk/")
    assert "\n" not in message


def test_storage_problems_are_found_in_exception_chains_and_in_trial_error_text(tmp_path):
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/s/x.parquet")
        except OSError as exc:
            raise RuntimeError("callback failed") from exc
    except RuntimeError as exc:
        chained = storage_problem(exc, tmp_path)
    assert str(chained).startswith("storage: read-only file system writing '/s/x.parquet'")
    remote = RuntimeError(
        "teacher training failed: ray::train_teacher() (pid=1)\n  File ...\n"
        "OSError: [Errno 28] No space left on device: '/s/_teachers/ab/teacher/run.json'"
    )
    assert str(storage_problem(remote, tmp_path)).startswith(
        "storage: no space left writing '/s/_teachers/ab/teacher/run.json'"
    )
    assert storage_problem(RuntimeError("[Errno 2] No such file"), tmp_path) is None
    assert storage_problem(ValueError("bad"), tmp_path) is None


def test_a_lock_that_cannot_be_removed_on_a_read_only_disk_does_not_hide_the_error(
    tmp_path, monkeypatch
):
    """The sweep ends with the storage error, not with the lock's release failing on the same
    disk (a tmpfs cannot turn read-only under open files, so the disk is a fake here)."""
    import os

    import search._lock
    from search._lock import SweepLock

    def read_only(*args):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

    with pytest.raises(SweepStorageError), SweepLock(tmp_path / "s"):
        monkeypatch.setattr(search._lock.os, "rename", read_only)  # the disk turns read-only
        raise SweepStorageError("storage: read-only file system")
    monkeypatch.setattr(search._lock.os, "rename", os.rename)
    assert (tmp_path / "s" / ".lock").exists()  # left for the next run to take over
