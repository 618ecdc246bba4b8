import json
import os
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_valid_for_rays_cluster_launcher():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema_path = Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    # the dashboard is bound to localhost: reached through an SSH tunnel, never a public port
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert config["available_node_types"]["gpu_worker"]["resources"] == {"GPU": 1}
    setup = " ".join(config["setup_commands"])
    assert f"=={ray.__version__}" in setup and "kd-schedule-search" in setup  # pinned Ray
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all("RAY_AUTH_MODE=token" in c for c in config[commands] if "ray start" in c)
