from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the whole test session (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


_CLUSTER_SCRIPT = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": int(sys.argv[1])})
for _ in range(int(sys.argv[2])):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes stdin
cluster.shutdown()
"""


@pytest.fixture
def external_cluster():
    """A separate Ray cluster (head + optional worker nodes) in its own process; yields its
    address. Shut down on exit without touching any other Ray on the machine."""
    import subprocess
    import sys

    def start(head_cpus: int = 2, workers: int = 0) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLUSTER_SCRIPT, str(head_cpus), str(workers)],
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
