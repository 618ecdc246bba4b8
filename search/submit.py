"""``python -m search submit SPEC --address http://HEAD:8265``: run a sweep as a Ray Job.

The job's working directory is a fresh staging directory holding only the validated spec;
this project's packages (``search``, ``trainables``, ``spaces``, ``analysis``) travel as the
job's ``py_modules``, so the cluster runs the code you submitted from, whether this machine
has a checkout or an installed package (nothing else of the directory you submit from is
uploaded, and no ``.gitignore`` can drop the spec). The job runs ``python -m search run`` on
the head node with the cluster's Python, which must have the project's dependencies (the
``setup_commands`` of ``cluster.yaml`` install them). Needs ``ray[default]`` on this machine
(``pip install 'kd-schedule-search[cluster]'``).
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from search._lock import lock_holder, locked_error
from search.errors import RayConnectError, SweepInputError
from search.spec import SweepSpec, redact

PACKAGES = ("search", "trainables", "spaces", "analysis")
EXCLUDES = ["**/__pycache__", "*.pyc"]
AGENT_WAIT_S = 60.0  # how long to wait for the job agent of a cluster that is starting


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


def job_request(spec: SweepSpec, staging: Path) -> dict[str, Any]:
    """Write the spec into ``staging`` and return ``JobSubmissionClient.submit_job``'s
    arguments."""
    spec_file = f"{spec.name}.yaml"
    (staging / spec_file).write_text(
        yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    )
    modules = [str(Path(importlib.import_module(name).__file__).parent) for name in PACKAGES]
    return {
        "entrypoint": f"python -m search run {spec_file}",
        "runtime_env": {"working_dir": str(staging), "py_modules": modules, "excludes": EXCLUDES},
        "metadata": {"sweep": spec.name},
    }


def submit(spec: SweepSpec, address: str) -> str:
    """Submit the sweep to the Ray Jobs server at ``address``; return the job id. The staged
    spec keeps its credentials (the job needs them); the messages here redact them."""
    check_paths(spec)
    holder = lock_holder(spec.sweep_dir) if spec.sweep_dir.is_dir() else None
    if holder is not None:  # storage this machine shares with the cluster: refuse now
        raise locked_error(spec.sweep_dir, holder)
    shown = redact(address)
    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address)
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
    with tempfile.TemporaryDirectory(prefix="kd-submit-") as staging:
        request = job_request(spec, Path(staging))
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return client.submit_job(**request)  # uploads the packages before returning
            except RuntimeError as exc:
                # A cluster that just started may not have its job agent yet: wait a little.
                if "No available agent" in str(exc) and time.monotonic() < deadline:
                    time.sleep(2)
                    continue
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise RayConnectError(
                    f"address: the Ray Jobs server at {shown!r} refused the job: {redact(reason)}"
                ) from None
