"""Ray's real autoscaler with the worker node types of the project's cluster.yaml (tests/autoscaling.py, in a
subprocess): a head with no CPU and no GPU, a farm that asks for GPUs, a GPU node launched from zero by the
autoscaler (Ray's fake multi-node provider) that trains every model, and terminated once idle."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from autoscaling import CONFIG, fake_config, scaled  # noqa: E402


def test_the_node_types_of_cluster_yaml_scaled_to_this_machine():
    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    small = scaled(types)
    assert set(small) == set(types) - {"head"} and {"gpu_1x", "gpu_4x", "cpu_workers"} <= set(small)
    for name, spec in small.items():
        assert spec["min_workers"] == 0 and spec["max_workers"] == 1 and spec["resources"]["CPU"] == 1
        assert spec["resources"].get("GPU") == types[name]["resources"].get("GPU")  # logical GPUs kept
    config = fake_config(ROOT / "cluster.yaml", "127.0.0.1:1")
    assert config["provider"]["type"] == "fake_multinode" and config["head_node_type"] == "ray.head.default"
    assert config["provider"]["use_node_id_as_ip"]  # the fake nodes share one IP: idle time is tracked by node id
    assert "farm.num_gpus=0.5" in CONFIG  # the farm needs a GPU node: the head has none


@pytest.mark.system  # a Ray head with the autoscaler, and the nodes it launches, in a subprocess
def test_a_gpu_node_is_launched_from_zero_trains_the_farm_and_is_terminated_when_idle(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "autoscaling.py"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(line)
    [head] = result["before"].values()  # at the start: the head alone, with no CPU and no GPU
    assert head["resources"].get("CPU", 0) == 0 and head["resources"].get("GPU", 0) == 0
    gpu_nodes = {k for k, v in result["launched"].items() if v["resources"].get("GPU", 0) > 0}
    assert gpu_nodes and result["trained"] == [0, 1, 2, 3]
    assert set(result["trained_on"]) <= gpu_nodes  # every model trained on a node the autoscaler launched
    assert not any(result["after"][k]["alive"] for k in result["launched"])  # then scaled down to the head
    assert any(line.startswith("Removing 1 nodes of type gpu_1x (idle)") for line in result["removed"])
