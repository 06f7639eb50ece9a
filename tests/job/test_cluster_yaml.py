"""ray_cluster.yaml is a real cluster-launcher config: it passes Ray's own schema and validator."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg():
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def _schema():
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_matches_rays_schema(cfg):
    jsonschema.validate(cfg, _schema())
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))       # merges AWS defaults; no cloud calls
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))
    assert any("pip install" in c for c in cfg["setup_commands"])
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_schema_check_can_fail(cfg):
    bad = copy.deepcopy(cfg)
    bad["not_a_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _schema())
    bad = copy.deepcopy(cfg)
    del bad["available_node_types"]["gpu_worker"]["resources"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _schema())
