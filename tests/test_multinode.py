"""Several Ray nodes on this machine (tests/multinode.py, in a subprocess): the farm spreads over the worker nodes,
records which node trained which model, and survives the loss of a whole worker node mid-farm (its raylet and
every process on it killed, as a spot preemption does): Ray restarts the node's trainer actor on another node and
retries its groups, the output says which models were trained again, and every shard equals the one-node run's.
The same loss while the attack stage's Ray tasks run (HopSkipJump distances, white-box statistics, yoqo's crafted
queries): the lost task runs again (`attacks.compute.tasks.map_tasks`), the output names it, and the distances or
the attack's scores equal the one-node run's. A train job submitted with `ray job submit` whose driver Ray places on
a worker node (tests/jobnode.py), and fractional GPU shares packing two trainer actors per logical GPU on each node.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attacks.compute.boundary import HsjaSettings, boundary_distances
from attacks.stage import attack_run
from farm.cluster import nodes_line
from farm.plan import load_plan
from farm.shards import model_dir
from farm.storage import RunDir
from farm.verify import verify_plan

pytestmark = pytest.mark.system  # a Ray cluster of several raylets, in a subprocess

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from multinode import BOUNDARY, CONFIG, attack_options  # noqa: E402


def _multinode(out: Path, *args: str, script: str = "multinode.py") -> tuple[dict, str]:
    """Run tests/`script` OUT ARGS in a subprocess: (its JSON line, its stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / script), str(out), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(line), done.stderr


def _digest(run: RunDir, rel: str) -> str:
    return hashlib.sha256(run.read_bytes(rel)).hexdigest()


def _assert_same_shards(run: RunDir, one_node: RunDir) -> None:
    """Every shard, membership.parquet and queries.parquet of `run` bit for bit those of `one_node`."""
    for rel in ["membership.parquet", "queries.parquet"] + [f"{model_dir(m)}/{name}" for m in range(8)
                                                            for name in ("responses.parquet", "weights.pt")]:
        assert _digest(run, rel) == _digest(one_node, rel), rel


def test_a_worker_node_lost_mid_farm(farms, tmp_path):
    one_node = RunDir(farms.shared(*CONFIG))
    result, err = _multinode(tmp_path, "3", "--lose-node", "train-00002")
    assert result["lost"] in result["workers"] and result["trained"] == list(range(8))
    assert "models 2-3 were trained again: their trainer actor died" in err  # the group held on the lost node
    plan = load_plan(str(tmp_path / "run"))
    assert verify_plan(plan) == []  # no shard half-written
    nodes = {plan.run.read_json(f"{model_dir(m)}/metrics.json")["node"]["node_id"] for m in range(8)}
    assert len(nodes) >= 2 and nodes <= set(result["workers"]) and result["lost"] not in nodes
    assert nodes_line(plan.run, 8).startswith(f"trained on {len(nodes)} nodes: ")
    _assert_same_shards(plan.run, one_node)


def test_a_worker_node_lost_while_boundary_tasks_run(farms, tmp_path):
    plan = load_plan(farms.run(*CONFIG))
    settings = {**BOUNDARY, "settings": HsjaSettings(**BOUNDARY["settings"])}
    one_node = boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y, bounds=plan.dataset.info.bounds,
                                  n_models=8, progress=False, **settings)
    result, err = _multinode(tmp_path, "3", "--boundary", "--lose-node", "boundary-")
    assert result["lost"] in result["workers"]
    assert "boundary: chunk " in err and " runs again: its worker or node was lost" in err
    got = np.load(tmp_path / "boundary.npy")
    assert np.isfinite(got[:4]).all() and np.array_equal(got, one_node, equal_nan=True)


@pytest.mark.parametrize("attack, tag, unit", [("gradient_norm", "whitebox-", "white-box: chunk"),
                                               ("yoqo", "crafting-", "crafting: chunk")])
def test_a_worker_node_lost_while_a_shadow_weight_attack_runs(farms, tmp_path, attack, tag, unit):
    one_node = farms.run(*CONFIG)
    attack_run(one_node, attack_options(attack), progress=False)
    result, err = _multinode(tmp_path, "3", "--attack", attack, "--lose-node", tag)
    assert result["lost"] in result["workers"]
    assert f"{unit} " in err and " runs again: its worker or node was lost" in err  # the task held on the lost node
    scores = f"attacks/{attack}/scores.parquet"
    assert _digest(RunDir(str(tmp_path / "run")), scores) == _digest(RunDir(one_node), scores)


def test_a_job_whose_driver_runs_on_a_worker_node_matches_the_one_node_run(farms, tmp_path):
    one_node = RunDir(farms.shared(*CONFIG, config="quickstart"))
    result, err = _multinode(tmp_path, script="jobnode.py")
    assert result["status"] == "SUCCEEDED" and result["submit_rc"] == 0, err[-3000:]
    assert result["driver_node"] == result["holder"] != result["head"]  # the driver ran on the worker node
    plan = load_plan(str(tmp_path / "run"))
    assert verify_plan(plan) == []
    _assert_same_shards(plan.run, one_node)


def test_fractional_gpus_pack_two_trainer_actors_on_the_logical_gpu_of_each_node(farms, tmp_path):
    one_node = RunDir(farms.shared(*CONFIG))
    result, _ = _multinode(tmp_path, "2", "--gpus", "1", "--set", "farm.num_gpus=0.5", "--set", "farm.num_cpus=0.5",
                           "--set", "farm.num_actors=4")
    plan = load_plan(str(tmp_path / "run"))
    assert verify_plan(plan) == [] and result["trained"] == list(range(8))
    actors: dict[tuple, set] = {}  # (node, its GPUs) -> the trainer actors that trained there
    for m in range(8):
        node = plan.run.read_json(f"{model_dir(m)}/metrics.json")["node"]
        actors.setdefault((node["node_id"], tuple(node["gpus"])), set()).add(node["actor_id"])
    assert {node for node, _ in actors} == set(result["workers"])  # both nodes trained
    assert all(len(gpus) == 1 for _, gpus in actors) and len(actors) == 2  # each actor on its node's one GPU
    assert all(len(on_gpu) == 2 for on_gpu in actors.values())  # 4 groups: two actors of 0.5 GPU per GPU
    _assert_same_shards(plan.run, one_node)  # farm.* is not part of the run: the one-node CPU run's shards
