"""A sweep whose trials no node can hold is refused before anything starts (Tune would wait
for them forever): on embedded Ray, and on a cluster as its autoscaler may grow it."""

import subprocess
import sys
from pathlib import Path

import pytest

import search._capacity
from search._capacity import check_capacity
from search.errors import SweepInputError
from search.spec import validate_spec

ROOT = Path(__file__).resolve().parents[2]


def _spec(**resources):
    return validate_spec({"name": "fits", "resources": resources})


def test_cpus_no_node_has_are_refused_through_the_cli_before_the_teacher(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(ROOT / "examples" / "quickstart.yaml"),
         "--storage", str(tmp_path), "--set", "resources.cpus_per_trial=1000"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in done.stderr and errors == [
        "error: resources.cpus_per_trial: 1000 CPUs per trial, but no node of this cluster "
        f"has that many (the largest has {_local_cpus(done)}); lower it or use a bigger "
        "cluster (--address)"
    ]
    assert "teacher:" not in done.stdout


def _local_cpus(done) -> str:
    """The CPU count the message names: embedded Ray takes this machine's."""
    import os

    return (
        f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count():g}"
    )


@pytest.mark.ray
def test_the_session_cluster_holds_a_default_trial_and_not_a_huge_one(ray_session):
    check_capacity(_spec())
    with pytest.raises(SweepInputError, match=r"^resources.cpus_per_trial: 64 CPUs per trial"):
        check_capacity(_spec(cpus_per_trial=64))


@pytest.mark.parametrize(
    "nodes, autoscaling, resources, message",
    [
        ([({"CPU": 8}, 1)], False, {"gpus_per_trial": 1},
         "resources.gpus_per_trial: 1 GPUs per trial, but no node of this cluster has that "
         "many (the largest has 0)"),
        ([({"CPU": 4}, 1), ({"CPU": 4}, 1)], False, {"workers": 3, "cpus_per_trial": 3},
         "resources.workers: 3 workers of 3 CPUs each, but this cluster holds at most 2 at "
         "once"),
        ([({"CPU": 0}, 1), ({"CPU": 2}, 4)], True, {"cpus_per_trial": 4},
         "resources.cpus_per_trial: 4 CPUs per trial, but no node this cluster has or can "
         "start has that many (the largest has 2)"),
        ([({"CPU": 8, "GPU": 1}, 1)], False, {"workers": 2, "gpus_per_trial": 2},
         "resources.workers: 2 workers of 1 CPUs each, but this cluster holds at most 1 at "
         "once"),
    ],
)  # fmt: skip
def test_refusals_name_the_field_that_cannot_be_met(
    monkeypatch, nodes, autoscaling, resources, message
):
    monkeypatch.setattr(search._capacity, "_node_capacities", lambda: (nodes, autoscaling))
    with pytest.raises(SweepInputError) as info:
        check_capacity(_spec(**resources))
    assert str(info.value) == f"{message}; lower it or use a bigger cluster (--address)"


@pytest.mark.parametrize(
    "nodes, resources",
    [
        ([({"CPU": 0}, 1), ({"CPU": 8}, 4)], {"workers": 4, "cpus_per_trial": 8}),  # autoscaled
        ([({"CPU": 2, "GPU": 4}, 1)], {"gpus_per_trial": 0.25}),
        ([({"CPU": 1}, 1), ({"CPU": 1}, 1)], {"workers": 2}),  # one worker per node
    ],
)
def test_trials_the_cluster_can_hold_are_accepted(monkeypatch, nodes, resources):
    monkeypatch.setattr(search._capacity, "_node_capacities", lambda: (nodes, True))
    check_capacity(_spec(**resources))


def test_a_launcher_cluster_counts_the_node_types_its_autoscaler_may_start(tmp_path):
    """cluster.yaml's head holds no trial (CPU 0) and no worker is up yet: the node types of
    the bootstrap config (resources as the launcher fills them in) hold one."""
    import yaml

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["cpu_worker"]["resources"] = {"CPU": 8}  # as detected
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(yaml.safe_dump(config))
    types = search._capacity._bootstrap_node_types(bootstrap)
    head = [({"CPU": 0.0}, 1)]
    assert ({"CPU": 8.0}, 4) in types and ({"GPU": 1.0}, 2) in types
    check = search._capacity.check_capacity
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search._capacity, "_node_capacities", lambda: (head + types, True))
        check(_spec(cpus_per_trial=8, workers=4))
        with pytest.raises(SweepInputError, match="can start has that many"):
            check(_spec(cpus_per_trial=16))
    # resources the launcher could not detect: capacity unknown, so nothing is refused
    assert search._capacity._bootstrap_node_types(ROOT / "cluster.yaml") is None


def test_an_autoscaling_cluster_of_unknown_capacity_is_not_refused(monkeypatch, capsys):
    monkeypatch.setattr(search._capacity, "_node_capacities", lambda: None)
    check_capacity(_spec(cpus_per_trial=1000))
    assert "not checked" in capsys.readouterr().out


@pytest.mark.ray
def test_on_the_head_of_a_launcher_cluster_the_bootstrap_node_types_count(
    ray_session, tmp_path, monkeypatch
):
    import yaml

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["cpu_worker"]["resources"] = {"CPU": 64}
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(yaml.safe_dump(config))
    with pytest.raises(SweepInputError):  # this machine alone cannot hold it ...
        check_capacity(_spec(cpus_per_trial=64))
    monkeypatch.setattr(search._capacity, "BOOTSTRAP_CONFIG", bootstrap)
    check_capacity(_spec(cpus_per_trial=64))  # ... the node types the launcher may add can
    bootstrap.write_text((ROOT / "cluster.yaml").read_text())  # resources not detected
    assert search._capacity._node_capacities() is None
