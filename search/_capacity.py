"""Whether the cluster can ever hold one trial: checked before a sweep starts, since Tune
waits forever for resources no node has."""

from __future__ import annotations

import math
from typing import Any

import ray

from search.errors import SweepInputError
from search.spec import SweepSpec


def _node_capacities() -> tuple[list[tuple[dict[str, float], int]], bool]:
    """``(resources, how many)`` of the nodes the cluster has or may add, and whether it
    autoscales.

    On an autoscaling cluster (the launcher's ``cluster.yaml``) the node types the autoscaler
    may start (up to their ``max_workers``) count beside the nodes that are up; elsewhere
    (embedded Ray, a fixed cluster) the live nodes only."""
    nodes = [(dict(n["Resources"]), 1) for n in ray.nodes() if n["Alive"]]
    try:
        config = ray._private.state.state.get_cluster_config()  # as Ray Train V2 does
    except Exception:  # an older GCS, or no access: judge by the live nodes
        config = None
    if config is None:
        return nodes, False
    types = [
        (dict(group.resources), group.max_count if group.max_count > 0 else 1024)
        for group in config.node_group_configs if group.max_count != 0
    ]  # fmt: skip
    return nodes + types, True


def _fits(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many ``bundle``\\ s one node of ``node``'s resources holds."""
    counts = [node.get(k, 0.0) / v for k, v in bundle.items() if v > 0]
    return math.floor(min(counts) + 1e-9) if counts else 1


def check_capacity(spec: SweepSpec) -> None:
    """:class:`SweepInputError` naming the resource field when no node (of the cluster as it
    is, or as its autoscaler may grow it) can hold one trial of the sweep, teacher or
    student; Tune would otherwise wait for it forever."""
    res = spec.resources
    nodes, autoscaling = _node_capacities()
    worker = {"CPU": res.cpus_per_trial}
    if res.workers == 1:
        worker["GPU"] = res.gpus_per_trial
    elif res.gpus_per_trial:
        worker["GPU"] = 1.0
    held = sum(_fits(node, worker) * count for node, count in nodes)
    if held >= res.workers:
        return
    which = "no node this cluster has or can start" if autoscaling else "no node of this cluster"
    if held == 0:
        field = "gpus_per_trial" if _fits_cpu_only(nodes, worker) else "cpus_per_trial"
        unit = "GPU" if field == "gpus_per_trial" else "CPU"
        largest = max((node.get(unit, 0.0) for node, _ in nodes), default=0.0)
        amount = worker[unit] if res.workers > 1 else getattr(res, field)
        each = " per worker" if res.workers > 1 else " per trial"
        problem = (
            f"resources.{field}: {amount:g} {unit}s{each}, but {which} has that many "
            f"(the largest has {largest:g})"
        )
    else:
        problem = (
            f"resources.workers: {res.workers} workers of {worker['CPU']:g} CPUs each, but "
            f"this cluster holds at most {held} at once"
        )
    raise SweepInputError(f"{problem}; lower it or use a bigger cluster (--address)")


def _fits_cpu_only(nodes: list[tuple[dict[str, Any], int]], worker: dict[str, float]) -> bool:
    cpus = {"CPU": worker["CPU"]}
    return worker.get("GPU", 0) > 0 and any(_fits(node, cpus) for node, _ in nodes)
