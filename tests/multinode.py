"""A Ray cluster of several nodes on this machine (`ray.cluster_utils.Cluster`: a head and worker raylets), for
tests/test_multinode.py, which runs this file in a subprocess (one process can hold only one Ray connection,
and the test session's is its one-node Ray).

`python tests/multinode.py OUT WORKERS [--gpus N] [--set K=V ...] [--lose-node TAG] [--boundary] [--attack NAME]`: a
head with no CPU (so that all work lands on the workers) and WORKERS worker nodes of one CPU (and N logical GPUs)
each; trains CONFIG (then the --set overrides) into OUT/run, then with
--boundary computes HopSkipJump distances (BOUNDARY, as Ray tasks) into OUT/boundary.npy, with --attack runs the
attack stage's NAME (`attack_options`: a white-box attack's statistics or yoqo's crafted queries, as Ray tasks)
into OUT/run/attacks/NAME. With --lose-node, when a process reaches a hold point whose tag starts with TAG
(`farm.worker.hold_point`: `train-00002`, `boundary-`, `whitebox-`, `crafting-`) it is held there, the worker node
it runs on is removed (all its processes killed, as a spot preemption does), and then everyone is released.
Prints one JSON line: the node ids of the workers, the one removed, the models trained.

The cluster is this process's own (`jobs.bench.cluster.local_cluster`): its own temp dir, never advertised in
/tmp/ray/ray_current_cluster, shut down node by node before this process exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from polling import wait_for  # noqa: E402

from jobs.bench.cluster import local_cluster  # noqa: E402

BOUNDARY = dict(models=[0, 1, 2, 3], chunk_examples=30, settings=dict(max_iter=2, init_evals=10, max_evals=40,
                                                                      budget=300, seed=5))
ATTACKS = {"gradient_norm": {}, "yoqo": {"steps": 6, "n_queries": 2}}  # the shadow-weight-based attacks run here
CONFIG = ["data.subsample=120", "membership.n_models=8", "train.epochs=2", "farm.group_size=2", "farm.num_actors=2",
          "model.hidden=[16]", "train.lr=0.01", "queries=[clean, {kind: translate, d: 1}]"]


def attack_options(name: str):
    """The attack stage's options for --attack NAME (the one-node run of the test uses the same)."""
    from attacks.stage import AttackOptions

    return AttackOptions(attacks=(name,), settings={name: ATTACKS[name]}, n_pseudo=2, bootstrap=0)


def _lose_node(cluster: Cluster, hold: Path, tag: str, lost: dict) -> None:
    """Wait for a process at a hold point starting with `tag`, remove the worker node it runs on, kill every held
    process of that node (a lost node takes them all at once; an orphaned worker would otherwise finish its task
    before it notices that its raylet is gone), then release everyone."""
    try:
        marker = wait_for(lambda: sorted(hold.glob(f"{tag}*.*")), f"a process at {tag}", limit=300)[0]
        node_id = marker.read_text().split()[-1]
        [node] = [n for n in cluster.worker_nodes if n.node_id == node_id]
        cluster.remove_node(node, allow_graceful=False)
        for held in hold.glob(f"{tag}*.*"):
            if held.read_text().split()[-1:] == [node_id]:
                try:
                    os.kill(int(held.name.rsplit(".", 1)[1]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        lost["node_id"] = node_id
    finally:
        (hold / "go").touch()


def _work(cluster: Cluster, hold: Path, args: argparse.Namespace) -> dict:
    """Train (then with --boundary compute distances, with --attack run an attack), losing a node where --lose-node
    says; what main prints."""
    from attacks.compute.boundary import HsjaSettings, boundary_distances
    from farm.config import load_config
    from farm.driver import train_farm
    from farm.plan import plan_run

    lost: dict = {}
    killer = threading.Thread(target=_lose_node, args=(cluster, hold, args.lose_node, lost), daemon=True)
    losing_in_farm = args.lose_node and args.lose_node.startswith("train-")
    if losing_in_farm:
        killer.start()
    else:
        (hold / "go").touch()  # the farm's hold points pass
    plan = plan_run(load_config(None, CONFIG + args.set), str(Path(args.out, "run")))
    trained = train_farm(plan, progress=False)
    if args.lose_node and not losing_in_farm:
        (hold / "go").unlink()
        killer.start()
    if args.boundary:
        settings = {**BOUNDARY, "settings": HsjaSettings(**BOUNDARY["settings"])}
        distances = boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y,
                                       bounds=plan.dataset.info.bounds, n_models=8, progress=False, **settings)
        np.save(Path(args.out, "boundary.npy"), distances)
    if args.attack:
        from attacks.stage import attack_run

        attack_run(str(Path(args.out, "run")), attack_options(args.attack), progress=False)
    if killer.ident is not None:
        killer.join()
    return {"lost": lost.get("node_id"), "trained": trained}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("workers", type=int)
    parser.add_argument("--gpus", type=int, default=0, help="logical GPUs of each worker node")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    parser.add_argument("--lose-node", metavar="TAG")
    parser.add_argument("--boundary", action="store_true")
    parser.add_argument("--attack", choices=sorted(ATTACKS))
    args = parser.parse_args()
    temp = tempfile.mkdtemp(prefix="sfmn")
    hold = Path(temp, "hold")
    hold.mkdir()
    if args.lose_node:  # inherited by every node started below, so by every actor and task
        os.environ["SHADOWFARM_TEST_HOLD_DIR"] = str(hold)
    with local_cluster(args.workers, temp, node_args=[{"num_gpus": args.gpus}] * args.workers) as cluster:
        workers = sorted(n.node_id for n in cluster.worker_nodes)
        start = time.perf_counter()
        result = _work(cluster, hold, args)
        print(json.dumps({"workers": workers, **result, "seconds": round(time.perf_counter() - start, 1)}))
    shutil.rmtree(temp, ignore_errors=True)  # the nodes' logs and sockets, once they are stopped
    return 0


if __name__ == "__main__":
    sys.exit(main())
