"""``python -m search submit SPEC --address http://HEAD:8265``: run a sweep as a Ray Job.

The project directory is uploaded as the job's working directory (results, virtual
environments and git data excluded) with the validated spec beside it, and the job runs
``python -m search run`` on the cluster's head node. Needs ``ray[default]`` on this machine
(``pip install 'kd-schedule-search[cluster]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search.errors import RayConnectError, SweepInputError
from search.spec import SweepSpec

ROOT = Path(__file__).resolve().parents[1]
SUBMIT_DIR = ".kd-submit"
EXCLUDES = [".venv", ".git", "results", "**/__pycache__", ".pytest_cache", ".ruff_cache"]


def job_request(spec: SweepSpec, root: Path = ROOT) -> dict[str, Any]:
    """Write the spec into ``root/.kd-submit/`` and return ``submit_job``'s arguments."""
    spec_path = root / SUBMIT_DIR / f"{spec.name}.yaml"
    spec_path.parent.mkdir(exist_ok=True)
    spec_path.write_text(
        yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    )
    return {
        "entrypoint": f"python -m search run {SUBMIT_DIR}/{spec.name}.yaml",
        "runtime_env": {"working_dir": str(root), "excludes": EXCLUDES},
        "submission_id": None,
        "metadata": {"sweep": spec.name},
    }


def submit(spec: SweepSpec, address: str) -> str:
    """Submit the sweep to the Ray Jobs server at ``address``; return the job id."""
    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address)
    except RuntimeError as exc:
        if "ray[default]" in str(exc):
            raise SweepInputError(
                "submit needs the Ray Jobs SDK: pip install 'kd-schedule-search[cluster]'"
            ) from None
        raise RayConnectError(
            f"address: cannot reach the Ray Jobs server at {address!r}: {exc}"
        ) from None
    except (ConnectionError, ValueError) as exc:
        raise RayConnectError(
            f"address: cannot reach the Ray Jobs server at {address!r}: {exc}"
        ) from None
    return client.submit_job(**job_request(spec))
