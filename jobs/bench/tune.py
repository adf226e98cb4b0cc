"""Benchmark: `shadowfarm tune`'s trials per minute.

    python -m jobs.bench.tune [--run RUN] [--attack calibrated] [--num-samples 16] [--repeats 1] [--profile]

Each repeat tunes the attack on a fresh copy of RUN (default: the quickstart, trained into a temporary directory),
so none finds another's re-queries in the run's cache: reused trial workers, perturbations drawn once per trial
for all shadows, TPE told of results in the order it proposed the trials (same seed, same trials), as many trials
at once as the cluster's CPUs hold. Prints the setup, the machine, the load, each run's wall time and trials/min,
their median, and the chosen settings. --profile: cProfile of one trial (the chosen setting of the first run, in
this process), top functions by own time.

The search as it ran before issue 18 (a fresh Ray worker per trial, perturbations per shadow, TPE told of results
as trials finish), which this benchmark compared against, is gone from the code (issue 24); its recorded figures
stay in the benchmarks' README.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from farm.errors import ConfigError
from jobs.bench.farm import load, machine
from jobs.common import job_main, job_parser

SMOKE = dict(num_samples=2, pseudo_targets=2, repeats=1)


def fresh_copy(run: str, into: Path) -> str:
    """A copy of the run `run` in `into` without its re-query cache and tune results."""
    shutil.copytree(run, into, ignore=lambda d, names: [n for n in names if Path(d) == Path(run) and
                                                         n in ("requery", "tune")])
    return str(into)


def timed_tune(run: str, *, args: argparse.Namespace) -> dict:
    from attacks.tune.trials import tune_attack

    start = time.perf_counter()
    best = tune_attack(run, attack=args.attack, num_samples=args.num_samples, n_pseudo=args.pseudo_targets,
                       seed=args.seed, verbose=0)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "trials_per_min": args.num_samples / seconds * 60, "best": best}


def profile_trial(run: str, config: dict, *, args: argparse.Namespace, top: int = 8) -> str:
    """cProfile of one trial's game evaluation (re-query included) on `run`, top functions by own time."""
    from attacks.loader import load_responses
    from attacks.modes import split_targets
    from attacks.tune.trials import make_games
    from farm.plan import load_plan

    plan = load_plan(run)
    _, shadows = split_targets(plan.cfg.membership)
    game, _ = make_games(plan, load_responses(plan.run), shadows=shadows, n_pseudo=args.pseudo_targets,
                         seed=args.seed)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(game.evaluate, args.attack, config, local=True)
    seconds = time.perf_counter() - start
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    rows = [line for line in out.getvalue().splitlines() if line.strip()][-top - 1:]
    return f"one trial, {seconds:.2f} s:\n" + "\n".join(rows)


def bench(args: argparse.Namespace) -> int:
    if args.smoke_test:
        args.num_samples, args.pseudo_targets, args.repeats = (SMOKE["num_samples"], SMOKE["pseudo_targets"],
                                                               SMOKE["repeats"])
    if args.repeats < 1 or args.num_samples < 1:
        raise ConfigError(f"--repeats/--num-samples: expected at least 1, got {args.repeats}/{args.num_samples}")
    from farm.cluster import ensure_ray

    scratch = Path(tempfile.mkdtemp(prefix="shadowfarm-bench-tune-"))
    try:
        run = args.run or _trained(scratch / "run", smoke=args.smoke_test)
        ensure_ray()
        import ray

        print(f"setup: {run} | attack {args.attack} | {args.num_samples} trials, {args.pseudo_targets} pseudo-targets, "
              f"seed {args.seed} | {args.repeats} repeat(s) | cluster CPUs {ray.cluster_resources().get('CPU', 0):g}")
        print(f"machine: {machine()}")
        rows = []
        for i in range(args.repeats):
            print(f"run {i + 1}: {load()}", flush=True)
            row = timed_tune(fresh_copy(run, scratch / f"run-{i}"), args=args)
            rows.append(row)
            print(f"  {row['seconds']:.1f} s wall, {row['trials_per_min']:.2f} trials/min, chosen "
                  f"{json.dumps(row['best']['chosen']['config'], sort_keys=True)} "
                  f"(selection {row['best']['chosen']['score']:.4f})", flush=True)
        print(f"after: {load()}")
        print(f"median trials/min: {statistics.median(r['trials_per_min'] for r in rows):.2f}")
        if args.profile:
            config = rows[0]["best"]["chosen"]["config"] or None
            print("profile: " + profile_trial(fresh_copy(run, scratch / "profile"), config, args=args))
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _trained(out: Path, *, smoke: bool) -> str:
    """The quickstart (smoke: the smoke farm) trained into `out`."""
    from farm.config import load_config
    from farm.driver import train_farm
    from farm.plan import plan_run
    from jobs.common import resolve_config
    from jobs.smoke import SMOKE_OVERRIDES

    plan = plan_run(load_config(resolve_config("quickstart"), SMOKE_OVERRIDES if smoke else []), str(out))
    train_farm(plan, progress=False)
    return str(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="a trained run to tune on, never modified (default: the quickstart, trained "
                                      "into a temporary directory)")
    parser.add_argument("--attack", default="calibrated", help="attack to tune (default calibrated)")
    parser.add_argument("--num-samples", type=int, default=16, help="trials per tune (default 16)")
    parser.add_argument("--pseudo-targets", type=int, default=8, help="as shadowfarm tune (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="tunes (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="also cProfile one trial")
    parser.add_argument("--smoke-test", action="store_true",
                        help="the smoke farm, 2 trials, 2 pseudo-targets: runs in a minute")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.tune", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
