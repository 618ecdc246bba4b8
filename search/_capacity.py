"""Whether the cluster can ever hold one trial: checked before a sweep starts, since Tune
waits forever for resources no node has."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ray
import yaml

from search.errors import SweepInputError
from search.spec import SweepSpec

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` puts it on the head
_UNBOUNDED = 1024  # node count standing for "no limit"


def _node_capacities() -> tuple[list[tuple[dict[str, float], int]], bool] | None:
    """``(resources, how many)`` of the nodes the cluster has or may add, and whether it
    autoscales (None: it autoscales to node types whose resources the launcher could not
    tell).

    On an autoscaling cluster the node types the autoscaler may start (up to their
    ``max_workers``) count beside the nodes that are up. They come from the cluster config
    the autoscaler publishes (as Ray Train V2 reads it), else from the launcher's bootstrap
    config on the head (``cluster.yaml`` as ``ray up`` installed it: the driver of ``run
    --address auto`` and of ``submit`` runs there). Elsewhere (embedded Ray, a fixed
    cluster) the live nodes only. (An autoscaling cluster that neither publishes its config
    nor has the launcher's file where the driver runs looks fixed: its trials must fit the
    nodes that are up when the sweep starts.)"""
    nodes = [(dict(n["Resources"]), 1) for n in ray.nodes() if n["Alive"]]
    types = _published_node_types()
    if types is None:
        bootstrap = BOOTSTRAP_CONFIG.expanduser()
        if bootstrap.is_file():
            types = _bootstrap_node_types(bootstrap)
            if types is None:
                return None
    if types is not None:
        return nodes + types, True
    return nodes, False


def _published_node_types() -> list[tuple[dict[str, float], int]] | None:
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # an older GCS, or no access
        return None
    if config is None:
        return None
    return [
        (dict(g.resources), g.max_count if g.max_count > 0 else _UNBOUNDED)
        for g in config.node_group_configs if g.max_count != 0
    ]  # fmt: skip


def _bootstrap_node_types(path: Path) -> list[tuple[dict[str, float], int]] | None:
    """The worker node types of a cluster-launcher config (``available_node_types``)."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    types = config.get("available_node_types") if isinstance(config, dict) else None
    if not isinstance(types, dict):
        return None
    out = []
    for node in types.values():
        count = node.get("max_workers", config.get("max_workers", _UNBOUNDED))
        resources = node.get("resources") or {}
        if count and not resources:  # the launcher could not detect them: unknown
            return None
        if count:
            out.append(({k: float(v) for k, v in resources.items()}, count))
    return out


def _fits(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many ``bundle``\\ s one node of ``node``'s resources holds."""
    counts = [node.get(k, 0.0) / v for k, v in bundle.items() if v > 0]
    return math.floor(min(counts) + 1e-9) if counts else 1


def check_capacity(spec: SweepSpec) -> None:
    """:class:`SweepInputError` naming the resource field when no node (of the cluster as it
    is, or as its autoscaler may grow it) can hold one trial of the sweep, teacher or
    student; Tune would otherwise wait for it forever."""
    res = spec.resources
    capacities = _node_capacities()
    if capacities is None:
        print("resources: this cluster autoscales and does not say to what; not checked "
              "whether a node can hold a trial")  # fmt: skip
        return
    nodes, autoscaling = capacities
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
