"""Tune an attack's hyperparameters with Ray Tune on a shadow-only validation game.

    python -m jobs.tune --run runs/quickstart --attack noise --num-samples 16 --metric auc --fpr 0.01

Shadows play the target (pseudo-targets) and are attacked with the other shadows; the real targets'
membership and responses are never read. Query-set parameters (noise sigma and copies, translation,
rotation, flips) are re-queried through the query engine (cached in the run). Optuna's TPE sampler
proposes the settings on half the pseudo-targets; the default setting is scored too and kept unless a
trial beats it; both are then scored on the other, held-out half (the figure to expect on a target).
Writes tune/<attack>/best.json, with the targets and shadows it was tuned on; `shadowfarm attack RUN
--tuned` (same --targets) and `shadowfarm audit RUN --target ... --tuned` then use it.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

from attacks.registry import TUNE_DEFAULT, tunable
from farm.errors import ConfigError
from jobs.common import add_run_argument, job_main, job_parser, model_ids, writes_run
from jobs.smoke import smoke_farm

HELP = "search an attack's settings with Ray Tune on a shadow-only game"

def add_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    add_run_argument(parser, positional=positional)
    parser.add_argument("--attack", default=TUNE_DEFAULT,
                        help=f"attack to tune: {', '.join(tunable())} (default {TUNE_DEFAULT})")
    parser.add_argument("--num-samples", type=int, default=16, help="Tune trials (default 16)")
    parser.add_argument("--metric", default="auc", help="auc, tpr@1%%fpr or tpr@0.1%%fpr (default auc)")
    parser.add_argument("--fpr", type=float, default=0.01, help="requested FPR for the threshold (default 0.01)")
    parser.add_argument("--targets", type=model_ids, default=None,
                        help="comma-separated models the setting is for, never among its shadows "
                             "(default: the run's membership.target_ids)")
    parser.add_argument("--pseudo-targets", type=int, default=8,
                        help="shadows playing the target, half to choose, half held out to score (default 8)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray resources of one trial (default 1)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="trials at once (default: as many as the cluster's CPUs hold at --cpus-per-trial)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="less Tune output")


@writes_run
def run(args: argparse.Namespace) -> int:
    from attacks.tune.trials import tune_attack

    if not 0 < args.fpr < 1:
        raise ConfigError(f"--fpr: expected a value in (0, 1), got {args.fpr}")
    best = tune_attack(args.run, attack=args.attack, num_samples=args.num_samples, metric=args.metric,
                       fpr=args.fpr, n_pseudo=args.pseudo_targets, seed=args.seed,
                       cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent,
                       verbose=0 if args.quiet else 1, targets=args.targets)
    chosen, default = best["chosen"], best["default"]
    ok = sum(t["error"] is None for t in best["trials"])
    print(f"{args.attack}: {ok} trials ({best['failed_trials']} failed), metric {args.metric} on the shadow game")
    print(f"  {'':<16} {'selection':>18} {'held-out':>18}  (pseudo-targets {best['selection_pseudo_targets']} "
          f"choose, {best['held_out_pseudo_targets']} score)")
    for label, row in (("default", default), (f"chosen ({chosen['source']})", chosen)):
        print(f"  {label:<16} {row['score']:>8.4f} AUC {row['auc']:.3f} {row['held_out']['score']:>8.4f} "
              f"AUC {row['held_out']['auc']:.3f}")
    print(f"  chosen setting: {json.dumps(chosen['config'], sort_keys=True)}")
    print(f"  threshold for FPR {args.fpr:g} on shadows: {best['threshold']:.6g}")
    print(f"wrote {args.run}/tune/{args.attack}/best.json (tuned for targets {best['target_model_ids']}); use it "
          f"with: shadowfarm attack {args.run} --tuned")
    return 0


def smoke(args: argparse.Namespace) -> None:
    """--smoke-test: the smoke farm (`jobs.smoke`) in --run, at most 4 trials and 2 pseudo-targets."""
    args.run = smoke_farm(args.run)
    args.num_samples = min(args.num_samples, 4)
    args.pseudo_targets = min(args.pseudo_targets, 2)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.tune", __doc__, partial(add_arguments, positional=False),
                        smoke_help="tune the noise attack with 4 trials on a fresh smoke farm")
    return job_main(argv, parser, run=run, smoke=smoke, needs_run=True)


if __name__ == "__main__":
    sys.exit(main())
