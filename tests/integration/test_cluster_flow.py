"""The cluster flow as a user meets it: a Ray head started with ``ray start --head`` and token
authentication on, then ``python -m search run --address`` and ``python -m search submit``
in subprocesses, with and without the cluster's token.

The head is this module's own (its own ``--temp-dir``, free ports, its own session of
processes), so the test session's embedded Ray is untouched; it is torn down by signalling
the processes of its session only (``ray stop`` would stop every Ray on the machine)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
# The smallest real sweep: one trial, a short teacher and student, one bank actor.
TINY = ["--set", "num_samples=1", "--set", "baselines=[]", "--set", "teacher.optim.steps=50",
        "--set", "student.optim.steps=50", "--set", "teacher.bank.workers=1"]  # fmt: skip
START_S = 120.0


@dataclass(frozen=True)
class Head:
    gcs: str  # host:port, for run --address
    jobs: str  # http://host:port, for submit --address
    token: str
    storage: Path  # shared by the sweeps, so the teacher is trained once

    def env(self, *, token: str | None = None) -> dict[str, str]:
        """The CLI's environment: no token at all, or ``token`` in token mode."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        if token is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        return env


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _session(sid: int) -> list[int]:
    """The live processes of session ``sid`` (the head and everything it started)."""
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if entry.isdigit() and state != "Z" and os.getsid(int(entry)) == sid:
                found.append(int(entry))
    return found


def _stop_session(sid: int) -> None:
    """``ray stop`` for this head only: SIGTERM its session, SIGKILL what outlives 3 s."""
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        for pid in _session(sid):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _session(sid) and time.monotonic() < deadline:
            time.sleep(0.2)


def _serving(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answers (e.g. 401 without a token)
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    """A one-node Ray cluster, token authentication on, with its Jobs server; its ``python``
    on PATH is this interpreter, as on a node set up by ``cluster.yaml``."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the head's teardown reads /proc")
    pytest.importorskip("aiohttp", reason="the Jobs server needs ray[default]")
    gcs, dashboard, agent, client = _free_ports(4)
    token = secrets.token_hex(32)
    temp = Path(tempfile.mkdtemp(prefix="kdhead-", dir="/tmp"))  # Ray's socket paths are short
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")  # fmt: skip
    log = (temp / "head.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=true"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=temp,
    )  # fmt: skip
    jobs = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + START_S
        while not _serving(f"{jobs}/api/version"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the test head did not start: {(temp / 'head.log').read_text()}")
            time.sleep(1)
        yield Head(f"127.0.0.1:{gcs}", jobs, token, temp / "storage")
    finally:
        _stop_session(proc.pid)
        proc.wait(timeout=30)
        log.close()


def _cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 400):
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _one_error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: address: ")
    return line


@pytest.mark.parametrize("token", [None, "not-the-clusters-token"])
def test_run_without_the_clusters_token_exits_2_in_one_line_saying_how_to_give_it(
    head, tmp_path, token
):
    run = _cli("run", str(QUICKSTART), "--storage", str(tmp_path), "--address", head.gcs,
               *TINY, env=head.env(token=token), cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2
    line = _one_error_line(run)
    assert f"'{head.gcs}'" in line
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line
    assert "`ray get-auth-token` on the head node" in line
    if token is None:
        assert "sent no token" in line
    else:
        assert "refused the token in RAY_AUTH_TOKEN" in line and token not in line


def test_run_with_the_clusters_token_runs_the_sweep_on_it(head, tmp_path):
    run = _cli("run", str(QUICKSTART), "--storage", str(head.storage), "--name", "viarun",
               "--address", head.gcs, *TINY, env=head.env(token=head.token), cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "students: 1 finished, 0 failed" in run.stdout + run.stderr
    assert (head.storage / "viarun" / "trials").is_dir()


def test_submit_without_the_clusters_token_exits_2_in_one_line(head, tmp_path):
    submit = _cli("submit", str(QUICKSTART), "--storage", str(head.storage), "--address",
                  head.jobs, *TINY, env=head.env(), cwd=tmp_path)  # fmt: skip
    assert submit.returncode == 2
    line = _one_error_line(submit)
    assert f"the Ray Jobs server at '{head.jobs}'" in line and "sent no token" in line
    assert "RAY_AUTH_MODE=token" in line and "`ray get-auth-token`" in line


def test_submit_refuses_a_python_without_the_projects_dependencies_in_one_line(head, tmp_path):
    """A Python on the head without optuna, torch, ... (a bare venv): refused before the
    sweep's job, naming what is missing and how to fix it."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    submit = _cli("submit", str(QUICKSTART), "--storage", str(head.storage), "--name", "bare",
                  "--address", head.jobs, "--python", str(bare / "bin" / "python"), *TINY,
                  env=head.env(token=head.token), cwd=tmp_path)  # fmt: skip
    assert submit.returncode == 2 and "Traceback" not in submit.stderr
    (line,) = submit.stderr.strip().splitlines()
    assert line.startswith(f"error: python: '{bare / 'bin' / 'python'}' on the cluster's head")
    assert "lacks ray, optuna" in line and "torch" in line and "--python" in line
    assert "submitted" not in submit.stdout  # the sweep's job never started
    assert not (head.storage / "bare").exists()


def test_submit_wait_follows_a_sweep_that_succeeds_and_exits_0(head, tmp_path):
    submit = _cli("submit", str(QUICKSTART), "--storage", str(head.storage), "--name",
                  "viajob", "--address", head.jobs, "--wait", *TINY,
                  env=head.env(token=head.token), cwd=tmp_path)  # fmt: skip
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    lines = submit.stdout.splitlines()
    job = lines[0].split(" as job ")[1].rstrip(";").split(";")[0]
    assert lines[1].strip() == f"ray job logs --follow {job} --address {head.jobs}"
    assert lines[2].strip() == f"ray job status {job} --address {head.jobs}"
    assert "students: 1 finished, 0 failed" in submit.stdout  # the job's logs, streamed
    assert lines[-1] == f"job {job} succeeded"
    assert (head.storage / "viajob" / "trials").is_dir()
    assert list(tmp_path.iterdir()) == []  # submit leaves nothing where it ran


def test_submit_wait_of_a_job_that_fails_exits_1_with_its_last_log_lines(head, tmp_path):
    """The job's interpreter (``--python``, a wrapper around this one) passes submit's check
    of the dependencies and then fails the sweep's run: deterministically, at any speed."""
    wrapper = tmp_path / "python-that-fails-runs"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"-m search run"*) echo "wrapper: this job fails on purpose" >&2; '
        "exit 3;; esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    submit = _cli(
        "submit", str(QUICKSTART), "--storage", str(head.storage), "--name", "fails",
        "--address", head.jobs, "--wait", "--python", str(wrapper), *TINY,
        env=head.env(token=head.token), cwd=tmp_path,
    )  # fmt: skip
    assert submit.stdout.startswith("submitted sweep 'fails' as job "), submit.stderr
    assert submit.returncode == 1, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "Traceback" not in submit.stderr
    lines = submit.stderr.strip().splitlines()
    assert lines[0].startswith("error: job ") and " FAILED: " in lines[0]
    assert lines[0].endswith("its last log lines:")
    assert any("wrapper: this job fails on purpose" in line for line in lines[1:]), submit.stderr
