"""``python -m search submit SPEC --address http://HEAD:8265``: run a sweep as a Ray Job.

The job's working directory is a fresh staging directory holding only the validated spec;
this project's packages (``search``, ``trainables``, ``spaces``, ``analysis``) travel as the
job's ``py_modules``, so the cluster runs the code you submitted from, whether this machine
has a checkout or an installed package (nothing else of the directory you submit from is
uploaded, and no ``.gitignore`` can drop the spec). Needs ``ray[default]`` on this machine
(``pip install 'kd-schedule-search[cluster]'``).

Which Python runs the job: the job's driver is ``python -m search run`` run by the head's
shell, so ``python`` is whatever the head's ``PATH`` names (``--python`` names another
interpreter on the head); its trials run in the cluster's Ray workers, started with the
interpreter that ran ``ray start``. The packages travel with the job, their dependencies
(optuna, torch, pyarrow, ...) cannot: a runtime env's ``pip`` needs the internet on the
cluster, ``conda``/``uv`` likewise, and this machine's ``sys.executable`` exists on the head
only when both share a filesystem. So ``submit`` checks instead of guessing: before the
sweep's job it runs a check job with the same runtime env and interpreter (a few seconds:
the interpreter only looks its dependencies up, importing none) and refuses, in one line
naming what is missing and how to install it, a Python that would fail with
``ModuleNotFoundError`` minutes later. The sweep's job reuses the packages the check
uploaded; the check is deleted afterwards. (The trials' interpreter, the cluster's Ray
Python, is not checked: it ran ``ray start``, so it has Ray; ``cluster.yaml`` installs the
project into it.)

A cluster with token authentication (Ray 2.60's default) needs ``RAY_AUTH_MODE=token`` and
the cluster's token on this machine; a missing or wrong token fails in one line saying so
(:func:`search.errors.ray_auth_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from search._lock import lock_holder, locked_error
from search.errors import ClusterPythonError, RayConnectError, SweepInputError, ray_auth_error
from search.spec import SweepSpec, redact

PACKAGES = ("search", "trainables", "spaces", "analysis")
EXCLUDES = ["**/__pycache__", "*.pyc"]
AGENT_WAIT_S = 60.0  # how long to wait for the job agent of a cluster that is starting
CHECK_WAIT_S = 180.0  # how long the check job may take (a fresh runtime env, a busy head)
POLL_S = 1.0
TAIL_LINES = 20  # log lines shown for a job that failed
# The modules of the project's dependencies (pyproject's ``dependencies``) the job imports.
REQUIRED_MODULES = ("ray", "optuna", "cmaes", "torch", "numpy", "pandas", "pyarrow", "scipy",
                    "pydantic", "yaml", "sklearn", "matplotlib")  # fmt: skip
_CHECK_MARK = "kd-search-python-check"
_CHECK = (
    "import importlib.util, json, sys; "
    f"missing = [m for m in {list(REQUIRED_MODULES)!r} if importlib.util.find_spec(m) is None]; "
    f"print({_CHECK_MARK!r}, json.dumps({{'python': sys.executable, 'missing': missing}}))"
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# The SDK's INFO lines (a package uploaded, a log stream closed): noise around a one-line error
_QUIET_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging",
                  "ray.dashboard.modules.job.sdk")  # fmt: skip


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: its status (``SUCCEEDED``, ``FAILED``, ``STOPPED``), Ray's message
    about it, and the last lines of its logs."""

    status: str
    message: str
    tail: list[str]


def check_paths(spec: SweepSpec) -> None:
    """A job runs in a temporary directory on the head node: a relative ``storage`` would
    resolve there (and its results vanish with it), a relative input file would not be found."""
    paths = {
        "storage": (spec.storage, "that every node of the cluster shares (--storage /shared)"),
        "data.path": (spec.data.path, "that every node of the cluster can read"),
        "teacher.init_from": (spec.teacher.init_from, "that every node of the cluster can read"),
        "teacher.bank.root": (spec.teacher.bank.root, "that every node of the cluster shares"),
        "teacher.model.path": (spec.teacher.model.path, "that every node of the cluster can read"),
        "student.model.path": (spec.student.model.path, "that every node of the cluster can read"),
    }
    for split, file in (spec.data.paths.model_dump() if spec.data.paths else {}).items():
        paths[f"data.paths.{split}"] = (file, "that every node of the cluster can read")
    problems = [
        f"{field}: {value!r} is relative; a submitted sweep needs an absolute path {which}"
        for field, (value, which) in paths.items()
        if value is not None
        and not value.startswith("{stdlib}")  # the cluster's own standard library
        and not PurePosixPath(value).is_absolute()
    ]
    if problems:
        raise SweepInputError("; ".join(problems))


def job_request(spec: SweepSpec, staging: Path, python: str = "python") -> dict[str, Any]:
    """Write the spec into ``staging`` and return ``JobSubmissionClient.submit_job``'s
    arguments; ``python`` runs the job's driver on the head."""
    spec_file = f"{spec.name}.yaml"
    (staging / spec_file).write_text(
        yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    )
    modules = [str(Path(importlib.import_module(name).__file__).parent) for name in PACKAGES]
    return {
        "entrypoint": f"{shlex.quote(python)} -m search run {spec_file}",
        "runtime_env": {"working_dir": str(staging), "py_modules": modules, "excludes": EXCLUDES},
        "metadata": {"sweep": spec.name},
    }


def jobs_client(address: str) -> Any:
    """A ``JobSubmissionClient`` for ``address`` (it asks the server for its version, so a
    refused token or an unreachable server fails here, in one line)."""
    shown = redact(address)
    try:
        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient

        for name in _QUIET_LOGGERS:  # after the import: importing Ray configures its logging
            logging.getLogger(name).setLevel(logging.WARNING)
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise ray_auth_error(f"the Ray Jobs server at {shown!r}") from None
    except RuntimeError as exc:
        if "ray[default]" in str(exc):
            raise SweepInputError(
                "submit needs the Ray Jobs SDK: pip install 'kd-schedule-search[cluster]'"
            ) from None
        raise RayConnectError(
            f"address: cannot reach the Ray Jobs server at {shown!r}: {redact(str(exc))}"
        ) from None
    except (ConnectionError, ValueError) as exc:
        raise RayConnectError(
            f"address: cannot reach the Ray Jobs server at {shown!r}: {redact(str(exc))}"
        ) from None


def submit(spec: SweepSpec, address: str, *, python: str = "python") -> str:
    """Submit the sweep to the Ray Jobs server at ``address``, its driver run by ``python``
    on the head once a check job found the project's dependencies there; return the job id.
    The staged spec keeps its credentials (the job needs them); the messages redact them."""
    check_paths(spec)
    holder = lock_holder(spec.sweep_dir) if spec.sweep_dir.is_dir() else None
    if holder is not None:  # storage this machine shares with the cluster: refuse now
        raise locked_error(spec.sweep_dir, holder)
    client = jobs_client(address)
    with tempfile.TemporaryDirectory(prefix="kd-submit-") as staging:
        request = job_request(spec, Path(staging), python)
        check_python(client, address, {**request, "entrypoint": _check_entrypoint(python)})
        return _submit_job(client, address, request)


def _check_entrypoint(python: str) -> str:
    return f"{shlex.quote(python)} -c {shlex.quote(_CHECK)}"


def check_python(client: Any, address: str, request: dict[str, Any]) -> None:
    """Run the check job ``request`` (its entrypoint: an interpreter looking up
    :data:`REQUIRED_MODULES`) and refuse, in one line, an interpreter that lacks any, or
    that does not run."""
    python = shlex.split(request["entrypoint"])[0]
    job = _submit_job(client, address, {**request, "metadata": {"kd-search": "python check"}})
    try:
        logs, message = _await_check(client, address, job)
    except (RuntimeError, ConnectionError) as exc:
        reason = _last_line(str(exc)) or type(exc).__name__
        raise RayConnectError(
            f"address: lost the Ray Jobs server at {redact(address)!r}: {reason}"
        ) from None
    found = re.search(rf"^{_CHECK_MARK} (\{{.*\}})$", logs, re.MULTILINE)
    fix = (
        "install the project into the cluster's Python (pip install kd-schedule-search "
        "there, as cluster.yaml's setup_commands do), or name an interpreter on the head "
        "that has it with --python /path/to/bin/python"
    )
    if found is None:
        reason = _last_line(logs) or _last_line(message) or "no output"
        raise ClusterPythonError(
            f"python: {python!r} did not run on the cluster's head ({reason}); {fix}"
        )
    report = json.loads(found[1])
    if report["missing"]:
        raise ClusterPythonError(
            f"python: {python!r} on the cluster's head ({report['python']}) lacks "
            f"{', '.join(report['missing'])}; {fix}"
        )


def _await_check(client: Any, address: str, job: str) -> tuple[str, str]:
    """The check job's logs and Ray's message once it ended (then it is deleted)."""
    deadline = time.monotonic() + CHECK_WAIT_S
    while (status := str(client.get_job_status(job))) not in TERMINAL:
        if time.monotonic() > deadline:
            client.stop_job(job)
            raise RayConnectError(
                f"address: the Ray Jobs server at {redact(address)!r} did not finish the "
                f"check of its Python (job {job}) within {CHECK_WAIT_S:.0f} s: it is {status}"
            )
        time.sleep(POLL_S)
    logs = client.get_job_logs(job)
    message = client.get_job_info(job).message or ""
    with contextlib.suppress(RuntimeError):  # only bookkeeping: else it stays listed
        client.delete_job(job)
    return logs, message


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return redact(lines[-1]) if lines else ""


def _submit_job(client: Any, address: str, request: dict[str, Any]) -> str:
    """``client.submit_job(**request)`` (it uploads the packages first), waiting for the job
    agent of a cluster that is starting; a refusal is one line."""
    from ray.exceptions import AuthenticationError

    shown = redact(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(**request)
        except AuthenticationError:
            raise ray_auth_error(f"the Ray Jobs server at {shown!r}") from None
        except RuntimeError as exc:
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(2)
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            if re.search(r"status code 40[13]\b", reason):
                raise ray_auth_error(f"the Ray Jobs server at {shown!r}") from None
            raise RayConnectError(
                f"address: the Ray Jobs server at {shown!r} refused the job: {redact(reason)}"
            ) from None


def follow_job(address: str, job: str, write: Callable[[str], None]) -> JobEnd:
    """Stream job ``job``'s logs to ``write`` until it ends; return how it ended."""
    client = jobs_client(address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job):
            write(chunk)

    with contextlib.suppress(RuntimeError, OSError):  # the stream broke off: poll instead
        asyncio.run(tail())
    try:
        while (info := client.get_job_info(job)).status not in TERMINAL:
            time.sleep(POLL_S)
        logs = client.get_job_logs(job).rstrip().splitlines()
    except (RuntimeError, ConnectionError) as exc:
        reason = _last_line(str(exc)) or type(exc).__name__
        raise RayConnectError(
            f"address: lost the Ray Jobs server at {redact(address)!r}: {reason}"
        ) from None
    # Ray's message of a failed job goes on with the job's logs: keep its first sentence
    message = (info.message or "").strip().split("\n", 1)[0]
    message = re.sub(r",? last available logs.*$", "", message).rstrip(":")
    return JobEnd(str(info.status), message, logs[-TAIL_LINES:])
