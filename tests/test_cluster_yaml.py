"""cluster.yaml is checked offline: `ray up` has no dry run.

Two layers of Ray's own checking run here without cloud access: the JSON schema
(ray/autoscaler/ray-schema.json), and the preparation `ray up` applies before it
touches the cloud: `prepare_config` (for the aws provider: merge aws/defaults.yaml,
append setup_commands to head/worker_setup_commands, check docker, fill min/max
workers) and `validate_config` (schema again, head type, worker counts). Neither
imports boto3 (not installed here). What `ray up` does next needs AWS: IAM role,
security groups, subnets and the AMI (`bootstrap_aws`) and the instance types'
CPU/GPU/memory (`fillout_available_node_types_resources`, EC2 DescribeInstanceTypes);
node_config itself is free-form, so the instance fields are checked by AWS only.
"""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from tests.helpers import ROOT

# Instance families with NVIDIA GPUs (g: graphics/inference, p: training).
GPU_FAMILIES = re.compile(r"(g4dn|g5|g5g|g6|g6e|gr6|p3|p3dn|p4d|p4de|p5|p5e|p5en)\.")


def _config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def prepared():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_config())
    validate_config(config)
    return config


def test_cluster_yaml_matches_the_ray_autoscaler_schema():
    config = _config()
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(config)
    assert config["head_node_type"] in config["available_node_types"]
    workers = sum(t.get("max_workers", 0) for t in config["available_node_types"].values())
    assert workers <= config["max_workers"]


def test_ray_prepares_and_validates_the_config_offline(prepared):
    import sys

    assert prepared["provider"]["type"] == "aws" and "boto3" not in sys.modules
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def test_the_gpu_worker_type_autoscales_and_has_gpus(prepared):
    types = prepared["available_node_types"]
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    gpu = [t for t in workers.values()
           if t.get("resources", {}).get("GPU", 0) >= 1 or GPU_FAMILIES.match(t["node_config"]["InstanceType"])]
    assert gpu, "no worker type has a GPU"
    for t in gpu:
        assert 0 <= t["min_workers"] < t["max_workers"] <= prepared["max_workers"]  # it can scale up
        # Declared GPUs agree with the instance family (the autoscaler plans with the declared ones).
        assert GPU_FAMILIES.match(t["node_config"]["InstanceType"]) and t["resources"]["GPU"] >= 1
    head = types[prepared["head_node_type"]]
    assert not head.get("resources", {}).get("GPU") and not GPU_FAMILIES.match(head["node_config"]["InstanceType"])
    for t in types.values():
        assert 0 <= t.get("min_workers", 0) <= t["max_workers"]


def test_cluster_nodes_install_the_project_like_make_does(prepared):
    config = _config()
    assert any("make .venv/.installed" in cmd for cmd in config["setup_commands"])
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    # After preparation every node runs the common setup (Python 3.11, then the project).
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = " ".join(prepared[key])
        assert "python3.11" in commands and "make .venv/.installed" in commands
    # The autoscaler runs in the project's virtualenv: boto3 must go there, not to a bare `pip`.
    pips = [c for c in prepared["head_setup_commands"] if re.search(r"(^|\s|/)pip3? install", c)]
    assert any("boto3" in c for c in pips) and all("~/raysearch/.venv/bin/pip" in c for c in pips)


def test_nodes_start_ray_from_the_project_and_join_the_head(prepared):
    head = " ".join(prepared["head_start_ray_commands"])
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "~/raysearch/.venv/bin/ray start --head" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    port = re.search(r"--port=(\d+)", head).group(1)
    assert f"~/raysearch/.venv/bin/ray start --address=$RAY_HEAD_IP:{port}" in worker
    assert "0.0.0.0" not in head  # nothing the head starts listens on every interface


def test_every_node_starts_ray_with_token_authentication(prepared):
    """No start command turns Ray's token authentication off; each turns it on, with the token that
    file_mounts copies from the user's machine (not from the repository: it is never committed)."""
    commands = [c for key, value in prepared.items() if key.endswith("_commands") for c in value]
    assert not any(re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?disabled", c, re.IGNORECASE) for c in commands)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in prepared[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert not any(Path(p).name == "auth_token" for p in ROOT.rglob("*") if ".venv" not in p.parts)
