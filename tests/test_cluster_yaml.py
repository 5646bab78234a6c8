"""cluster.yaml is checked offline: `ray up` has no dry run."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_matches_the_ray_autoscaler_schema():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(config)
    assert config["head_node_type"] in config["available_node_types"]
    workers = sum(t.get("max_workers", 0) for t in config["available_node_types"].values())
    assert workers <= config["max_workers"]


def test_cluster_nodes_install_the_project_like_make_does():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert any("make .venv/.installed" in cmd for cmd in config["setup_commands"])
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
