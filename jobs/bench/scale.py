"""Load test: a farm of 256 quickstart models on the local Ray, memory bounded, every shard valid.

    python -m jobs.bench.scale [--models 256] [--group-size 32] [--subsample 500] [--set KEY=VALUE] [--out RUN]

Trains the farm into a fresh temporary directory (deleted afterwards; --out keeps it), then verifies
every file as `shadowfarm verify` does. Prints the setup, the machine, the wall time and models/min of
the farm (training, queries, shards and the driver's final check), the driver's peak RSS (before the
farm and at the end: the driver holds the data, the membership matrix and a bounded number of groups
in flight, not the models), and the trainer actors' peak RSS (each records its own in its models'
metrics.json, `worker_peak_rss_mb`). Exit code 1 when verification finds a problem.

Then the attack stage (--attacks, default gap, noise, calibrated, lira_confidence; "none" skips it) on the
farm's first target, in a fresh process (spawned: its peak RSS is the attack stage's own, not the farm's):
its wall time, its peak RSS (VmHWM: `process_peak_rss_mb`) at the start, after loading and at the end, the
peak of the memory tracemalloc sees allocated in the stage (numpy arrays included), the responses' size.
The issue-18 figure, 256 models x 10k examples (tabular, as digits has 1,797 rows):

    python -m jobs.bench.scale --config paper_synthetic --models 256 --group-size 32 --subsample 10000 \
        --set data.synthetic.n_examples=10000 --set train.epochs=2 --set model.hidden=[64] \
        --set membership.target_ids=[0]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from farm.cluster import ensure_ray, n_actors
from farm.config import load_config
from farm.driver import train_farm
from farm.plan import load_plan, plan_run
from farm.shards import model_dir
from farm.verify import verify_plan
from farm.worker import peak_rss_mb
from jobs.bench.farm import machine
from jobs.common import job_main, job_parser, resolve_config

SMOKE = dict(models=16, group_size=4, subsample=200, overrides=["train.epochs=2"])
ATTACKS = "gap,noise,calibrated,lira_confidence"


def process_peak_rss_mb() -> float:
    """This process's own peak RSS, MiB: VmHWM of /proc/self/status where there is one (a spawned child's
    getrusage ru_maxrss starts at its parent's, being kept across exec), else ru_maxrss."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return peak_rss_mb()
    line = next((row for row in status.splitlines() if row.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 2**10 if line else peak_rss_mb()


def attack_stage(run: str, attacks: tuple[str, ...]) -> dict:
    """The attack stage on `run` in this process (a fresh one: `measured_attack_stage`), with its memory."""
    from attacks.loader import load_responses
    from attacks.stage import AttackOptions, attack_run

    rss_start = process_peak_rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    responses = load_responses(run)
    arrays = sum(a.nbytes for a in (responses.pred, responses.member, responses.logits) if a is not None) / 2**20
    rss_loaded = process_peak_rss_mb()
    del responses
    results = attack_run(run, AttackOptions(attacks=attacks, bootstrap=0), progress=False)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"seconds": seconds, "rss_start": rss_start, "rss_loaded": rss_loaded, "rss_peak": process_peak_rss_mb(),
            "traced_peak": traced, "arrays": arrays, "attacks": [r["attack"] for r in results if "skipped" not in r]}


def measured_attack_stage(run: str, attacks: tuple[str, ...]) -> dict:
    """`attack_stage` in a spawned process, so that its peak RSS is the stage's alone."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(attack_stage, run, attacks).result()


def bench(args: argparse.Namespace) -> int:
    if args.smoke_test:
        args.models, args.group_size, args.subsample = SMOKE["models"], SMOKE["group_size"], SMOKE["subsample"]
        args.overrides = SMOKE["overrides"] + args.overrides
    overrides = [f"membership.n_models={args.models}", f"farm.group_size={args.group_size}",
                 f"data.subsample={args.subsample}", *args.overrides]
    cfg = load_config(resolve_config(args.config), overrides)
    scratch = None if args.out else tempfile.mkdtemp(prefix="shadowfarm-bench-scale-")
    out = args.out or str(Path(scratch) / "run")
    try:
        plan = plan_run(cfg, out)
        ensure_ray()
        n_groups = -(-cfg.membership.n_models // cfg.farm.group_size)
        print(f"setup: {args.config} | {plan.dataset.info.name} N={len(plan.dataset)} | model {cfg.model.name} "
              f"{cfg.model.hidden} | {cfg.train.epochs} epochs, batch {cfg.train.batch_size} | "
              f"{cfg.membership.n_models} models in {n_groups} groups of {cfg.farm.group_size} | "
              f"{len(plan.queries)} queries | {n_actors(cfg, n_groups)} trainer actors x {cfg.farm.num_cpus:g} CPU "
              f"(torch threads {max(1, int(cfg.farm.num_cpus))} each) | run {out}")
        print(f"machine: {machine()}")
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        trained = train_farm(plan, progress=not args.quiet)
        seconds = time.perf_counter() - start
        rss_after = peak_rss_mb()
        problems = verify_plan(load_plan(out))
        actors = [plan.run.read_json(f"{model_dir(m)}/metrics.json").get("worker_peak_rss_mb")
                  for m in range(cfg.membership.n_models)]
        actors = [a for a in actors if a is not None]
        print(f"farm: {len(trained)} models trained in {seconds:.1f} s wall: "
              f"{len(trained) / seconds * 60:.1f} models/min")
        print(f"driver peak RSS: {rss_after:.0f} MiB (before the farm: {rss_before:.0f} MiB)")
        if actors:
            print(f"trainer actor peak RSS: max {max(actors):.0f} MiB, median {statistics.median(actors):.0f} MiB "
                  f"(over the {len(actors)} models' metrics.json)")
        for problem in problems:
            print(problem)
        print(f"verify: {'ok' if not problems else f'{len(problems)} problem(s)'} "
              f"({cfg.membership.n_models} models)")
        if args.attacks != "none" and not problems:
            stage = measured_attack_stage(out, tuple(args.attacks.split(",")))
            print(f"attack stage: {', '.join(stage['attacks'])} on {cfg.membership.n_models} models x "
                  f"{len(plan.dataset)} examples x {len(plan.queries)} queries in {stage['seconds']:.1f} s (fresh "
                  f"process, bootstrap off); peak RSS {stage['rss_peak']:.0f} MiB (at start {stage['rss_start']:.0f}, "
                  f"responses loaded {stage['rss_loaded']:.0f}); tracemalloc peak {stage['traced_peak']:.0f} MiB; "
                  f"responses arrays {stage['arrays']:.0f} MiB")
        return 1 if problems else 0
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--models", type=int, default=256, help="models in the farm (default 256)")
    parser.add_argument("--group-size", type=int, default=32, help="models per vmapped group (default 32)")
    parser.add_argument("--subsample", type=int, default=500, help="population size (default 500 examples)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="another config override, e.g. --set train.epochs=10 (repeatable)")
    parser.add_argument("--out", help="run directory to keep (default: a temporary one, deleted)")
    parser.add_argument("--attacks", default=ATTACKS,
                        help=f"attacks of the measured attack stage, or none (default {ATTACKS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--smoke-test", action="store_true",
                        help="16 models in groups of 4, 200 examples, 2 epochs: runs in seconds")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.scale", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
