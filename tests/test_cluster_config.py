"""cluster.yaml starts as written: valid for Ray's cluster launcher, one token on every node
at the path `ray start` reads, only the project's files travel, and the README's cluster
section says what the file holds. Read through the launcher's own functions where it has them;
no cloud is touched."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray._private.authentication.authentication_token_setup import _get_default_token_path
from ray.autoscaler._private.command_runner import SSHCommandRunner
from ray.autoscaler._private.commands import _set_up_config_for_head_node
from ray.autoscaler._private.util import prepare_config

ROOT = Path(__file__).resolve().parents[1]
START_COMMANDS = ("head_start_ray_commands", "worker_start_ray_commands")


def _config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _readme_cluster_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("\n## On a cluster\n", 1)[1].split("\n## ", 1)[0]


def test_cluster_yaml_is_valid_for_rays_cluster_launcher():
    config = _config()
    schema_path = Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    # the dashboard is bound to localhost: reached through an SSH tunnel, never a public port
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert config["available_node_types"]["gpu_worker"]["resources"] == {"GPU": 1}
    setup = " ".join(config["setup_commands"])
    assert f"=={ray.__version__}" in setup and "kd-schedule-search" in setup  # pinned Ray
    for commands in START_COMMANDS:
        assert all("RAY_AUTH_MODE=token" in c for c in config[commands] if "ray start" in c)


def _launch(config: dict) -> tuple[dict, dict]:
    """What `ray up` syncs to the head (file_mounts: remote -> local path on this machine),
    and the config the head's autoscaler sets up each worker with (remote -> head path)."""

    class Provider:  # no cloud: only the hook the function calls
        def prepare_for_head_node(self, config):
            return config

    head, bootstrap = _set_up_config_for_head_node(prepare_config(config), Provider(), False)
    with open(bootstrap.name) as f:
        return head, json.load(f)


def _token_path(command: str) -> str:
    """The token file a `ray start` command reads (Ray 2.60: RAY_AUTH_TOKEN_PATH, else
    ~/.ray/auth_token; a RAY_AUTH_TOKEN value would put the secret in the file)."""
    assert "RAY_AUTH_TOKEN=" not in command, "the token itself must not be in cluster.yaml"
    found = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", command)
    default = "~" / _get_default_token_path().relative_to(Path.home())  # ~/.ray/auth_token
    return found.group(1) if found else str(default)


def test_the_head_makes_the_token_and_every_worker_gets_it_where_ray_start_reads_it():
    config = _config()
    head, workers = _launch(config)
    starts = {key: [c for c in config[key] if "ray start" in c] for key in START_COMMANDS}
    assert all(starts.values())
    # nothing is needed on this machine: `ray up` mounts no token from it
    assert not any("auth_token" in str(local) for local in head["file_mounts"].values())
    # the head: its setup (run before its start commands) creates the token where `ray
    # start` reads it, once (kept on a restart), and only its owner may read it
    (path,) = {_token_path(c) for c in starts["head_start_ray_commands"]}
    setup = config["head_setup_commands"]
    made = next(i for i, c in enumerate(setup) if "ray get-auth-token --generate" in c)
    assert f"test -s {path} ||" in setup[made]  # an existing token is kept
    assert any(c == f"chmod 600 {path}" for c in setup[made:])
    assert Path(os.path.expanduser(path)) == _get_default_token_path()  # what it writes
    # each worker: the head's autoscaler syncs the head's file to the same path before the
    # worker's setup and start commands
    for command in starts["worker_start_ray_commands"]:
        assert _token_path(command) in workers["cluster_synced_files"]
    assert f"chmod 600 {path}" in config["worker_setup_commands"]


def _patterns(config: dict) -> list[str]:
    return [p.rstrip("/") for p in config.get("rsync_exclude") or []]


def test_rsync_excludes_what_must_not_travel_to_the_head_and_to_the_workers():
    config = _config()
    head, workers = _launch(config)
    for each in (head, workers):  # the head's autoscaler syncs workers with the same rules
        assert {".git", ".venv", "results", "__pycache__", "*.egg-info"} <= set(_patterns(each))
        assert each.get("rsync_filter") == [".gitignore"]


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_a_dry_run_of_the_launchers_rsync_ships_the_project_and_nothing_else(tmp_path):
    config = _config()
    (mount,) = [local for local in config["file_mounts"].values() if local == "."]
    args = SSHCommandRunner._create_rsync_filter_args(None, config)  # what `ray up` passes
    done = subprocess.run(
        ["rsync", "-avzn", *args, f"{ROOT / mount}/", f"{tmp_path}/"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    shipped = {line.strip() for line in done.stdout.splitlines()}
    assert {"pyproject.toml", "README.md", "search/sink.py", "analysis/tables.py"} <= shipped
    for path in shipped:
        parts = Path(path).parts
        assert not {".git", ".venv", "results", "__pycache__"} & set(parts), path
        assert not any(p.endswith(".egg-info") for p in parts), path


def test_the_readme_names_the_placeholders_the_file_has_and_the_token_step():
    text = (ROOT / "cluster.yaml").read_text()
    config = _config()
    section = _readme_cluster_section()
    in_file = set(re.findall(r"[\w-]*REPLACE-ME[\w-]*", text))
    named = set(re.findall(r"`([^`]*REPLACE-ME[^`]*)`", section))
    assert in_file and named == in_file
    sentence = next(s for s in re.split(r"(?<=\.)\s", section) if "placeholder" in s)
    # the sentence about placeholders mentions a key only if the file has one to replace
    assert ("key" in sentence) == ("ssh_private_key" in config["auth"])
    # how the token comes to exist, and how this machine gets and uses it
    assert "ray get-auth-token --generate" in section and "~/.ray/auth_token" in section
    assert "ray rsync-down cluster.yaml ~/.ray/auth_token" in section
    assert "RAY_AUTH_MODE=token" in section  # the Jobs SDK sends the token only in token mode
