"""Scaling across nodes: the same farm, then HopSkipJump distances, on 1, 2 and 4 Ray nodes of this machine.

    python -m jobs.bench.cluster [--nodes 1,2,4] [--models 32] [--group-size 4] [--subsample 600] [--epochs 10]

Each node count runs in a child process of its own: a `ray.cluster_utils.Cluster` whose head holds no CPU and N
worker nodes of one logical CPU each (one trainer actor or task per node, one torch thread each: each node its own
CPU share), the farm trained from scratch (`farm.num_actors` = N) into a temporary directory, then the boundary
distances of 4 models as Ray tasks. Prints the setup and the machine, then per node count: wall seconds and
models/min of the farm; its scheduling overhead per group (wall x actors minus the groups' own training and query
seconds, from metrics.json, per group: what Ray, the driver and the shards cost beyond the work); its efficiency
against linear (models/min at N / (N x models/min at 1)); and the same for the boundary tasks (chunks/min).
On a machine with fewer cores than nodes the efficiency is bounded by the cores: read the overhead there, not the
speed-up that more machines would give.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from jobs.bench.farm import load, machine
from jobs.common import csv_list, job_main, job_parser

SMOKE = ["--nodes", "1,2", "--models", "4", "--group-size", "2", "--subsample", "100", "--epochs", "1",
         "--boundary-examples", "20"]


@contextmanager
def local_cluster(workers: int, temp: str, *, head_args: dict | None = None, node_args: list[dict] | None = None):
    """A Ray cluster of this process, connected: a head with no CPU (all work lands on the workers) and `workers`
    worker nodes of one CPU each (`ray.cluster_utils.Cluster`), its files under `temp`; never written to
    /tmp/ray/ray_current_cluster (no `ray.init()` elsewhere joins it); shut down, node by node, on exit.
    head_args: more arguments of the head (its dashboard); node_args: more arguments of each worker node, in order
    (custom resources)."""
    import ray
    import ray._private.utils
    from ray.cluster_utils import Cluster

    ray._private.utils.write_ray_address = lambda *a, **k: None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp,
                                                            "include_dashboard": False, **(head_args or {})})
    try:
        for i in range(workers):
            cluster.add_node(num_cpus=1, **(node_args[i] if node_args else {}))
        cluster.wait_for_nodes()
        cluster.connect()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def child(args: argparse.Namespace) -> dict:
    """One node count (args.child): the farm and the boundary tasks on a fresh cluster; their timings."""
    temp = tempfile.mkdtemp(prefix="sfbc")
    with local_cluster(args.child, temp):
        return {"nodes": args.child, **_farm(args, str(Path(temp, "run"))),
                **_boundary(args, str(Path(temp, "run")))}


def _farm(args: argparse.Namespace, out: str) -> dict:
    from farm.config import load_config
    from farm.driver import train_farm
    from farm.plan import plan_run
    from farm.shards import model_dir

    cfg = load_config(args.config, [f"membership.n_models={args.models}", f"farm.group_size={args.group_size}",
                                    f"data.subsample={args.subsample}", f"train.epochs={args.epochs}",
                                    f"farm.num_actors={args.child}", "farm.num_cpus=1"])
    plan = plan_run(cfg, out)
    start = time.perf_counter()
    trained = train_farm(plan, progress=False)
    wall = time.perf_counter() - start
    work = 0.0
    for m in trained:
        metrics = plan.run.read_json(f"{model_dir(m)}/metrics.json")
        work += metrics["seconds"] + metrics["query_seconds"]
    groups = -(-len(trained) // args.group_size)
    return {"farm_seconds": wall, "models": len(trained), "groups": groups,
            "overhead_per_group": (wall * args.child - work) / groups}


def _boundary(args: argparse.Namespace, out: str) -> dict:
    from attacks.compute.boundary import HsjaSettings, boundary_distances
    from farm.plan import load_plan

    plan = load_plan(out)
    chunk = max(1, args.boundary_examples // 4)
    start = time.perf_counter()
    boundary_distances(plan.run, x=plan.dataset.x[: args.boundary_examples],
                       labels=plan.dataset.y[: args.boundary_examples], bounds=plan.dataset.info.bounds,
                       models=[0, 1, 2, 3][: args.models], n_models=args.models, chunk_examples=chunk,
                       settings=HsjaSettings(max_iter=5, init_evals=20, max_evals=100, budget=1000, seed=0),
                       progress=False)
    return {"boundary_seconds": time.perf_counter() - start,
            "boundary_chunks": min(4, args.models) * -(-args.boundary_examples // chunk)}


def bench(args: argparse.Namespace) -> int:
    if args.child:
        print(json.dumps(child(args)))
        return 0
    nodes = [int(n) for n in args.nodes]
    print(f"setup: {args.config or 'defaults'}, {args.models} models in groups of {args.group_size}, "
          f"{args.subsample} examples, {args.epochs} epochs; boundary: 4 models x {args.boundary_examples} examples; "
          f"nodes {', '.join(map(str, nodes))} (a head with no CPU plus N workers of 1 CPU), one child process each")
    print(f"machine: {machine()}; {load()}")
    rows = [_run_child(args, n) for n in nodes]
    base = rows[0]
    farm_rate = {r["nodes"]: 60 * r["models"] / r["farm_seconds"] for r in rows}
    chunk_rate = {r["nodes"]: 60 * r["boundary_chunks"] / r["boundary_seconds"] for r in rows}
    print(f"{'nodes':>5}  {'farm s':>7}  {'models/min':>10}  {'overhead/group s':>16}  {'efficiency':>10}  "
          f"{'boundary s':>10}  {'chunks/min':>10}  {'efficiency':>10}")
    for r in rows:
        n = r["nodes"]
        farm_eff = farm_rate[n] / (n / base["nodes"] * farm_rate[base["nodes"]])
        chunk_eff = chunk_rate[n] / (n / base["nodes"] * chunk_rate[base["nodes"]])
        print(f"{n:>5}  {r['farm_seconds']:>7.1f}  {farm_rate[n]:>10.1f}  {r['overhead_per_group']:>16.2f}  "
              f"{farm_eff:>10.2f}  {r['boundary_seconds']:>10.1f}  {chunk_rate[n]:>10.1f}  {chunk_eff:>10.2f}")
    print("efficiency: rate at N nodes / (N x the rate at the first node count); overhead: wall x actors minus "
          "the groups' training and query seconds, per group")
    return 0


def _run_child(args: argparse.Namespace, nodes: int) -> dict:
    command = [sys.executable, "-m", "jobs.bench.cluster", "--child", str(nodes), "--models", str(args.models),
               "--group-size", str(args.group_size), "--subsample", str(args.subsample), "--epochs", str(args.epochs),
               "--boundary-examples", str(args.boundary_examples), *(["--config", args.config] if args.config else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
    if done.returncode:
        raise RuntimeError(f"{nodes} node(s): the child failed:\n{done.stderr[-2000:]}")
    [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(line)


def _child_env() -> dict:
    import os

    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # the child makes its own cluster
    return env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=csv_list, default=["1", "2", "4"], help="node counts (default 1,2,4)")
    parser.add_argument("--config", default=None, help="a config name or YAML file (default: the defaults)")
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--subsample", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--boundary-examples", type=int, default=80)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--smoke-test", action="store_true", help="two tiny node counts, for CI")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--smoke-test" in argv:
        argv = [a for a in argv if a != "--smoke-test"] + SMOKE
    return job_main(argv, job_parser("python -m jobs.bench.cluster", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
