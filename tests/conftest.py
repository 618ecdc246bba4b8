from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# The user factories of the tests (``usermodels:tiny_lm``, ``userdata:...``) are imported on the
# worker that runs a trial, like a user's installed package: Ray's workers and the CLI's
# subprocesses inherit this PYTHONPATH.
_FACTORIES = str(ROOT / "tests" / "trainables")
if _FACTORIES not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_FACTORIES, os.environ.get("PYTHONPATH")) if p
    )
if _FACTORIES not in sys.path:
    sys.path.insert(0, _FACTORIES)


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the whole test session (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        # address="local": a new Ray of its own, even where another cluster runs on the machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def example_sweep(ray_session, tmp_path_factory):
    """A function running a sweep of ``examples/<example>`` on the session's Ray, with
    ``--set`` style overrides, in a fresh storage root; returns the sweep directory."""
    from search.spec import load_spec
    from search.sweep import run_sweep

    def run(example: str, name: str, *overrides: str) -> Path:
        storage = tmp_path_factory.mktemp("storage")
        overrides = (f"storage={storage}", f"name={name}", *overrides)
        return run_sweep(load_spec(ROOT / "examples" / example, list(overrides)))

    return run


_OURS = ("search", "trainables", "spaces", "analysis")


def private_imports(source: str) -> list[str]:
    """The modules of this project with a ``_private`` part that Python ``source`` imports
    (the user-flow tests use public names only)."""
    import ast

    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return [
        name
        for name in names
        if name.split(".")[0] in _OURS and any(p.startswith("_") for p in name.split(".")[1:])
    ]


@pytest.fixture
def public_only():
    """A check that code imports only public names: ``public_only(__file__)`` for a test
    module, ``public_only(code=...)`` for source text."""

    def check(path: str | Path | None = None, *, code: str | None = None) -> None:
        source = Path(path).read_text() if path is not None else code
        found = private_imports(source)
        assert found == [], f"{path or 'the code'} imports private modules: {found}"

    return check


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


_CLUSTER_SCRIPT = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args=json.loads(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes stdin
cluster.shutdown()
"""


@pytest.fixture
def external_cluster():
    """A separate Ray cluster (head + optional worker nodes) in its own process; yields a
    function starting one and returning its address (``head_args``: more of the head's
    ``ray.init`` arguments). Shut down on exit without touching any other Ray on the
    machine."""
    import json
    import subprocess
    import sys

    def start(head_cpus: int = 2, workers: int = 0, **head_args) -> str:
        head = json.dumps({"num_cpus": head_cpus, **head_args})
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLUSTER_SCRIPT, head, str(workers)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        address = proc.stdout.readline().strip()
        if not address:
            raise RuntimeError("the test cluster did not start")
        return address

    procs: list = []
    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.fixture
def jobs_server(external_cluster, monkeypatch):
    """A separate one-node Ray cluster with its dashboard, so its Jobs server, on a free local
    port; yields the Jobs address (``http://127.0.0.1:PORT``). Its jobs run ``python`` from
    this interpreter's directory, as on a node set up by ``cluster.yaml``. Skips without
    ``ray[default]`` (the ``cluster`` extra)."""
    import socket
    import sys
    import time

    pytest.importorskip("aiohttp", reason="the Jobs server needs ray[default]")
    pytest.importorskip("requests", reason="the Jobs SDK needs ray[default]")
    from ray.job_submission import JobSubmissionClient

    # Both ports free: another Ray on this machine (the test session's) holds the defaults.
    with socket.socket() as one, socket.socket() as two:
        one.bind(("127.0.0.1", 0))
        two.bind(("127.0.0.1", 0))
        port, agent_port = one.getsockname()[1], two.getsockname()[1]
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    external_cluster(
        include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
        dashboard_agent_listen_port=agent_port,
    )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # the SDK's own probe: it sends the cluster's token where auth is on
        try:
            JobSubmissionClient(address)
            break
        except ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Jobs server at {address} after 60 s") from None
            time.sleep(1)
    return address
