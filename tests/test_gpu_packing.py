"""GPU packing (issue 7): on a local Ray with one logical GPU, four trainer actors at `farm.num_gpus: 0.25`
(jobs/configs/cifar10.yaml's setting) train at the same time.

Simultaneity without timing: the driver's real dispatch (farm.driver.train_farm) runs with trainer actors
that, on entering `train`, report to a barrier actor and block until all four have arrived (bounded wait):
the farm can only finish if four actors were inside `train` at once, on the one GPU. The barrier also
records what Ray assigned each actor (GPU ids, resources), its torch threads and its device.

The session's in-process Ray (tests/conftest.py) has 2 CPUs and no GPU, so this runs in a subprocess with
its own `ray.init(address="local", num_cpus=8, num_gpus=1)`. No CUDA here: Ray's GPU is logical, so the
actors train on the CPU (device `auto` finds no usable CUDA) while holding their GPU share. The data is a
small fake CIFAR-shaped .npz made here (CIFAR-10 is not on this machine).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import ray

from farm.cluster import actor_config, actor_options, check_farm_resources, n_actors
from farm.config import config_hash, load_config
from farm.errors import ConfigError, RunError

ROOT = Path(__file__).resolve().parents[1]
BARRIER_SECONDS = 300  # bound of the barrier's wait; the test fails instead of hanging

SCRIPT = r'''
import asyncio, json, os, sys

import ray
import torch

import farm.driver as driver
from farm.config import load_config
from farm.plan import plan_run
from farm.verify import verify_plan
from farm.worker import TrainerActor

npz, out, n_actors, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])


@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self, n):
        self.n, self.arrivals, self.free_gpu, self.event = n, [], None, asyncio.Event()

    async def arrive(self, info):
        self.arrivals.append(info)
        if len(self.arrivals) == self.n:
            self.free_gpu = ray.available_resources().get("GPU", 0.0)  # all four hold their share now
            self.event.set()
        await asyncio.wait_for(self.event.wait(), timeout)

    def report(self):
        return {"arrivals": self.arrivals, "free_gpu_when_all_in": self.free_gpu}


class BarrierTrainer(TrainerActor.__ray_metadata__.modified_class.__ray_actor_class__):
    def train(self, model_ids, arrays):
        context = ray.get_runtime_context()
        info = {"actor": context.get_actor_id(), "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "assigned": context.get_assigned_resources(), "threads": torch.get_num_threads(),
                "device": str(getattr(self, "device", "?")), "models": list(model_ids)}
        ray.get(ray.get_actor("barrier").arrive.remote(info))
        return super().train(model_ids, arrays)


ray.init(address="local", num_cpus=8, num_gpus=1, include_dashboard=False, configure_logging=False,
         log_to_driver=False)
barrier = Barrier.options(name="barrier").remote(n_actors)
driver.TrainerActor = ray.remote(BarrierTrainer)  # the driver's own dispatch, with the barrier in `train`
cfg = load_config("jobs/configs/cifar10.yaml", [
    f"data.name=npz", f"data.path={npz}", "membership.n_models=8", "membership.target_ids=[0]",
    "train.epochs=1", "train.batch_size=8", "queries=[clean]", "model.name=cnn", "model.width=4",  # small: packing only
    "farm.group_size=2", "farm.num_actors=null",  # auto: min(8 CPUs / 2, 1 GPU / 0.25) = 4 actors
])
plan = plan_run(cfg, out)
trained = driver.train_farm(plan, progress=False)
report = ray.get(barrier.report.remote())
report.update(trained=trained, farm={"num_gpus": cfg.farm.num_gpus, "num_cpus": cfg.farm.num_cpus},
              problems=verify_plan(plan))
print("RESULT " + json.dumps(report))
'''


@pytest.mark.system
def test_four_actors_share_one_gpu_and_train_at_once(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "fake-cifar10.npz"
    np.savez(npz, x=rng.random((16, 3, 32, 32), dtype=np.float32), y=rng.integers(0, 10, 16))
    ray_tmp = Path(tempfile.mkdtemp(prefix="sfgpu-", dir="/tmp"))  # short: Ray's sockets live under it
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(ROOT), RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU="1")
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(npz), str(tmp_path / "run"), "4",
                               str(BARRIER_SECONDS)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=BARRIER_SECONDS + 600, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])

    assert report["farm"] == {"num_gpus": 0.25, "num_cpus": 2.0}  # the cifar10 config's own packing
    assert report["trained"] == list(range(8)) and report["problems"] == []
    first = report["arrivals"][:4]
    assert len(report["arrivals"]) == 4  # four groups, four actors: each trained one group
    assert len({a["actor"] for a in first}) == 4 and len({a["pid"] for a in first}) == 4
    assert sorted(m for a in first for m in a["models"]) == list(range(8))
    for arrival in first:
        assert arrival["gpu_ids"] == ["0"]  # all four on the one GPU Ray has
        assert arrival["assigned"] == {"GPU": 0.25, "CPU": 2.0}
        assert arrival["threads"] == 2  # torch threads = the actor's CPUs
        assert arrival["device"] == "cpu"  # a logical GPU: no CUDA device to use here
    assert report["free_gpu_when_all_in"] == 0.0  # the four shares filled the GPU while all four were in
    for m in range(8):
        metrics = json.loads((tmp_path / "run" / "models" / f"model_id={m:05d}" / "metrics.json").read_text())
        assert metrics["device"] == "cpu" and metrics["group_size"] == 2


def test_actor_resources_and_device_follow_the_config():
    cfg = load_config("jobs/configs/cifar10.yaml")
    assert actor_options(cfg) == {"num_cpus": 2.0, "num_gpus": 0.25, "max_restarts": 3, "max_task_retries": 3}
    assert actor_config(cfg).farm.device == "auto"  # a GPU share: the actor uses the GPU Ray assigned it
    cpu_only = load_config(None, ["farm.num_gpus=0"])
    # no GPU asked for: cpu, even on a GPU node (Ray hides no GPU from such an actor); the hash is unchanged
    assert actor_config(cpu_only).farm.device == "cpu"
    assert config_hash(actor_config(cpu_only)) == config_hash(cpu_only)
    with pytest.raises(ConfigError, match="farm.device: cuda needs farm.num_gpus"):
        check_farm_resources(load_config(None, ["farm.device=cuda"]))


def test_actor_count_packs_fractional_gpus(monkeypatch):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    assert n_actors(load_config(None, ["farm.num_gpus=0.25", "farm.num_cpus=1"]), 100) == 4
    assert n_actors(load_config(None, ["farm.num_gpus=0.1", "farm.num_cpus=0.5"]), 100) == 10  # 1 // 0.1 is 9.0
    assert n_actors(load_config(None, ["farm.num_gpus=0.25", "farm.num_cpus=4"]), 100) == 2  # CPU-bound
    assert n_actors(load_config(None, ["farm.num_gpus=0.25", "farm.num_cpus=1"]), 3) == 3  # no idle actors
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})  # e.g. autoscaling, no GPU node yet
    with pytest.raises(RunError, match="farm.num_actors"):
        n_actors(load_config(None, ["farm.num_gpus=0.25"]), 100)
    assert n_actors(load_config(None, ["farm.num_gpus=0.25", "farm.num_actors=16"]), 100) == 16
