"""Benchmark: our batched HopSkipJump (attacks/compute/hsja.py) vs IBM ART's HopSkipJump, same model, examples, budget.

    python -m jobs.bench.boundary [--run runs/quickstart] [--model-id 0] [--examples 200] [--max-iter 10]
        [--init-evals 100] [--max-evals 1000] [--repeats 3] [--art-repeats 1] [--art-estimator both] [--smoke-test]

Both tools attack model `--model-id` of a trained run (untargeted, L2, labels only) on the same examples: half
members, half non-members of that model, drawn with `--seed`. Both get the same iterations (max_iter), gradient
probes (init_evals, max_evals: n_t = min(init_evals * sqrt(t), max_evals)), binary-search tolerance (theta =
0.01 / sqrt(d), ART's; ours takes it as gamma = 0.01 * d) and 100 random starts at most; both see the same torch
module, whose forward counts the rows it evaluates: that count is each tool's queries. ART runs one example at a
time (its design) with batch_size = max_evals, so each gradient estimate is one forward call. ART sees the module
through its PyTorchClassifier, through its BlackBoxClassifier (a label function: less overhead per call), or both.

Comparable outcomes: an example the model already misclassifies has distance 0 for both (ART attacks the
predicted label instead, so it only gets the correctly classified ones; one counted clean prediction each
decides). An example with no adversarial random start is a failure for both (ART returns the input unchanged);
it scores the domain's diameter, as ours does. Attack AUC: score = distance (members lie farther from the
boundary), with a paired bootstrap interval of the difference. ART returns its last stepped point, not a point
on the boundary; the distances are also compared after a binary search from it (uncounted queries).

Prints the setup, the machine, seconds (median of the repeats; wall clock and the process's CPU time),
examples/s, queries/example, failures and AUC of each tool, the examples/s ratio, the AUC difference, and how
the distances compare. Run it on an otherwise idle machine (the load average is printed). ART's random starts
are unseeded (np.random.RandomState()), so its distances and AUC vary from run to run; its gradient probes are
seeded with --seed.

Needs IBM ART (pip install 'shadowfarm[bench]'); `--smoke-test` runs ours alone when ART is missing. ART's side
and the meters both tools run under (query counts, timings) are in jobs/bench/art.py. Make the
quickstart run first: python -m jobs.train --config quickstart --out runs/quickstart (about 30 s).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import numpy as np
import torch
from torch import nn

from attacks.compute.hsja import HsjaResult, hopskipjump
from attacks.oracles.model import ModelOracle
from attacks.stats.metrics import auc
from farm.errors import ConfigError, RunError
from farm.models import build_model
from farm.plan import Plan, load_plan
from farm.shards import MEMBERSHIP, RUN_JSON, is_done, load_weights, membership_matrix, model_dir
from farm.storage import RunDir
from jobs.bench.art import INIT_SIZE, ArtMissing, CountingModule, Stopwatch, back_to_boundary, import_art, run_art
from jobs.bench.farm import machine
from jobs.common import job_main, job_parser

MAKE_QUICKSTART = "python -m jobs.train --config quickstart --out runs/quickstart"
ESTIMATORS = {"pytorch": ("pytorch",), "blackbox": ("blackbox",), "both": ("pytorch", "blackbox")}
SMOKE = dict(examples=20, max_iter=2, init_evals=10, max_evals=20, repeats=1, art_repeats=1)


def load_target(run_uri: str, model_id: int) -> tuple[Plan, nn.Module, np.ndarray, np.ndarray]:
    """(plan, the model in eval mode, member bool[N] of that model, target_pool bool[N]) from the run's files."""
    run = RunDir(run_uri)
    if not run.is_file(RUN_JSON):
        raise RunError(f"{run.path(RUN_JSON)}: not found; make the quickstart run with: {MAKE_QUICKSTART} "
                       f"(about 30 s), or pass --run")
    plan = load_plan(run_uri)
    n_models = plan.cfg.membership.n_models
    if not 0 <= model_id < n_models:
        raise ConfigError(f"--model-id: expected 0..{n_models - 1} for {run_uri}, got {model_id}")
    if not is_done(run, model_id, plan.config_hash):
        raise RunError(f"{run.path(model_dir(model_id))}: not trained yet; re-run the training command that "
                       f"made {run_uri} (it resumes)")
    model = build_model(plan.cfg.model, info=plan.dataset.info)
    model.load_state_dict(load_weights(run, model_id))
    member, pool = membership_matrix(run.read_table(MEMBERSHIP))
    return plan, model.eval(), member[model_id], pool


def pick_examples(member: np.ndarray, pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """int64[n] sorted example ids: n // 2 members and n - n // 2 non-members from the target pool, seeded."""
    rng = np.random.default_rng(seed)
    groups = {"members": np.flatnonzero(member & pool), "non-members": np.flatnonzero(~member & pool)}
    picked = []
    for (what, ids), k in zip(groups.items(), (n // 2, n - n // 2), strict=True):
        if k > len(ids):
            raise ConfigError(f"--examples {n}: needs {k} {what} of the target model, the run has {len(ids)}")
        picked.append(rng.choice(ids, size=k, replace=False))
    return np.sort(np.concatenate(picked))


def run_ours(module: nn.Module, x: np.ndarray, y: np.ndarray, ids: np.ndarray, *, bounds, gamma: float,
             args) -> tuple[Stopwatch, HsjaResult, int]:
    """(times of each repeat, the result, rows evaluated by the module in one repeat)."""
    counting = CountingModule(module)
    oracle = ModelOracle(counting, input_shape=x.shape[1:])
    watch, result = Stopwatch(), None
    for _ in range(args.repeats):
        counting.rows = 0
        with watch.run():
            result = hopskipjump(oracle.predict_labels, x, y, bounds=bounds, max_iter=args.max_iter,
                                 init_evals=args.init_evals, max_evals=args.max_evals, gamma=gamma, seed=args.seed,
                                 example_ids=ids)
    return watch, result, counting.rows


def auc_difference_ci(a: np.ndarray, b: np.ndarray, member: np.ndarray, *, seed: int,
                      n: int = 1000) -> tuple[float, float]:
    """95% paired bootstrap interval of auc(a) - auc(b): the same resampled examples for both scores."""
    rng, diffs = np.random.default_rng(seed), []
    for _ in range(n):
        i = rng.integers(0, len(member), len(member))
        if member[i].all() or not member[i].any():
            continue
        diffs.append(auc(a[i], member[i]) - auc(b[i], member[i]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _tool_line(name: str, watch: Stopwatch, n: int, queries: float, failures: int, score_auc: float) -> str:
    median = statistics.median(watch.wall)
    runs = ", ".join(f"{s:.2f}" for s in watch.wall)
    return (f"{name:>30}: {median:7.2f} s (runs: {runs}; CPU {statistics.median(watch.cpu):.2f} s) | "
            f"{1000 * median / n:7.2f} ms/example | {n / median:7.1f} examples/s | {queries:6.1f} queries/example | "
            f"{failures} failures | AUC {score_auc:.3f}")


def _compare_art(estimator: str, module: nn.Module, x: np.ndarray, y: np.ndarray, is_member: np.ndarray,
                 result: HsjaResult, watch: Stopwatch, *, bounds, steps: int, diameter: float, num_classes: int,
                 art, args) -> None:
    """Run ART through `estimator` and print its line and how it compares with ours (`result`, `watch`)."""
    art_watch, x_adv, correct, art_rows = run_art(module, x, y, estimator=estimator, bounds=bounds,
                                                   num_classes=num_classes, art=art, args=args)
    art_distance = np.linalg.norm((x_adv - x).reshape(len(x), -1).astype(np.float64), axis=1)
    failed = correct & (art_distance == 0)  # ART's failure: the input returned unchanged
    with torch.no_grad():
        adversarial = module(torch.from_numpy(x_adv)).argmax(1).numpy() != y
    if (correct & ~failed & ~adversarial).any():
        raise RuntimeError(f"ART returned {(correct & ~failed & ~adversarial).sum()} non-adversarial points")
    art_score = np.where(failed, diameter, art_distance)
    art_auc, ours_auc = auc(art_score, is_member), auc(result.distance, is_member)
    name = f"ART {art[2]} {art[1][estimator].__name__}"
    print(_tool_line(name, art_watch, len(x), art_rows / len(x), int(failed.sum()), art_auc))
    ratio = statistics.median(art_watch.wall) / statistics.median(watch.wall)
    cpu_ratio = statistics.median(art_watch.cpu) / statistics.median(watch.cpu)
    low, high = auc_difference_ci(result.distance, art_score, is_member, seed=args.seed)
    print(f"{'':>32}ratio {ratio:.1f}x examples/s (ours / ART; {cpu_ratio:.1f}x in CPU time); "
          f"AUC difference {ours_auc - art_auc:+.3f} (ours - ART; 95% paired bootstrap {low:+.3f} to {high:+.3f})")
    both = correct & ~failed & result.success & (result.distance > 0)
    if both.any():
        searched = back_to_boundary(module, x, x_adv, y, steps)
        for label, theirs in (("as returned", art_distance), (f"+ {steps}-step binary search", searched)):
            quotient = result.distance[both] / theirs[both]
            q25, q50, q75 = np.percentile(quotient, [25, 50, 75])
            print(f"{'':>32}distance ours/ART ({label}), {int(both.sum())} examples both attacked: median "
                  f"{q50:.3f} (quartiles {q25:.3f}, {q75:.3f}), ours shorter on {int((quotient < 1).sum())}")
        searched_auc = auc(np.where(failed, diameter, searched), is_member)
        print(f"{'':>32}ART AUC after that search (uncounted queries): {searched_auc:.3f}")


def bench(args: argparse.Namespace) -> int:
    if args.smoke_test:
        for key, value in SMOKE.items():
            setattr(args, key, min(getattr(args, key), value))
    for name in ("examples", "max_iter", "init_evals", "max_evals", "repeats", "art_repeats"):
        if getattr(args, name) < (2 if name == "examples" else 0 if name == "max_iter" else 1):
            raise ConfigError(f"--{name.replace('_', '-')}: too small ({getattr(args, name)})")
    if args.init_evals > args.max_evals:
        raise ConfigError(f"--init-evals {args.init_evals} > --max-evals {args.max_evals} (ART refuses it)")
    try:
        art = import_art()
    except ArtMissing:
        if not args.smoke_test:
            raise
        art = None
    torch.set_num_threads(args.threads)

    plan, module, member, pool = load_target(args.run, args.model_id)
    info = plan.dataset.info
    ids = pick_examples(member, pool, args.examples, args.seed)
    x, y, is_member = plan.dataset.x[ids], plan.dataset.y[ids], member[ids]
    bounds = tuple(float(b) for b in info.bounds)
    d = math.prod(info.shape)
    steps = math.ceil(math.log2(math.sqrt(d) / 0.01))  # binary-search queries at theta = 0.01 / sqrt(d)
    gamma = 0.01 * d  # ours: theta = gamma / d^1.5 = 0.01 / sqrt(d), ART's theta for norm 2
    diameter = math.sqrt(d) * (bounds[1] - bounds[0])
    with torch.no_grad():
        misclassified = int((module(torch.from_numpy(x)).argmax(1).numpy() != y).sum())

    print(f"setup: run {args.run} ({info.name} {list(info.shape)}, {plan.cfg.model.name} {plan.cfg.model.hidden}) | "
          f"target model {args.model_id} | {len(ids)} examples ({int(is_member.sum())} members, "
          f"{int((~is_member).sum())} non-members, seed {args.seed}; {misclassified} misclassified) | "
          f"max_iter {args.max_iter}, init_evals {args.init_evals}, max_evals {args.max_evals}, "
          f"theta {0.01 / math.sqrt(d):.5f}, {INIT_SIZE} random starts at most, bounds {bounds} | "
          f"{args.repeats} repeats (ours), {args.art_repeats} (ART)")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start (timings need an idle machine)")
    print(f"scores: distance to the boundary (misclassified 0, failure {diameter:.2f} = the domain's diameter); "
          f"AUC with members as positives")

    watch, result, rows = run_ours(module, x, y, ids, bounds=bounds, gamma=gamma, args=args)
    if rows != int(result.queries.sum()):  # two counts of the same queries: a mismatch is a bug, not input
        raise RuntimeError(f"ours: the module evaluated {rows} rows but hopskipjump counted {result.queries.sum()}")
    ours_auc = auc(result.distance, is_member)
    print(_tool_line("ours", watch, len(ids), rows / len(ids), int((~result.success).sum()), ours_auc))
    if art is None:
        print(f"{'ART':>30}: skipped (IBM ART is not installed: pip install 'shadowfarm[bench]')")
        return 0

    for estimator in ESTIMATORS[args.art_estimator]:
        _compare_art(estimator, module, x, y, is_member, result, watch, bounds=bounds, steps=steps,
                     diameter=diameter, num_classes=info.num_classes, art=art, args=args)
    print("ART's queries include 3 per correctly classified example outside its attack proper (generate's clean "
          "prediction, two in its success-rate log); ART returns its last stepped point, ours the last boundary point")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default="runs/quickstart", help="a trained run (default runs/quickstart)")
    parser.add_argument("--model-id", type=int, default=0, help="the model attacked (default 0, the target)")
    parser.add_argument("--examples", type=int, default=200,
                        help="examples attacked, half members, half non-members (default 200)")
    parser.add_argument("--max-iter", type=int, default=10, help="HopSkipJump iterations (default 10)")
    parser.add_argument("--init-evals", type=int, default=100, help="gradient probes at iteration 1 (default 100)")
    parser.add_argument("--max-evals", type=int, default=1000, help="gradient probes at most (default 1000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="picks the examples, seeds ours and ART's gradient probes (default 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours; the median is shown (default 3)")
    parser.add_argument("--art-repeats", type=int, default=1, help="timed runs of ART (default 1: it is slow)")
    parser.add_argument("--art-estimator", choices=sorted(ESTIMATORS), default="both",
                        help="ART's view of the model: pytorch (PyTorchClassifier), blackbox (BlackBoxClassifier on "
                             "a label function: less overhead per call) or both (default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both (default 1: what a boundary attack task uses)")
    parser.add_argument("--smoke-test", action="store_true",
                        help=f"tiny: {SMOKE['examples']} examples, max_iter {SMOKE['max_iter']}; ours only "
                             f"if ART is missing")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.boundary", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
