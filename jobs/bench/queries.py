"""Benchmark: YOQO's and OSLO's crafted queries, batched through stacked shadows against a per-example loop.

`python -m jobs.bench.queries [--config quickstart] [--models 16] [--examples 256] [--steps 40] [--smoke-test]`

For each kernel (`attacks.compute.crafting`: YOQO online, one query per example; OSLO, four tau levels that no
model reaches, so that every example runs every step: OSLO's worst case), both sides craft the same queries for
the same examples of the config's dataset through the same models: "batched" is `craft` over blocks of 64 (the
blocks `attacks.compute.yoqo` crafts in), every model stacked under `torch.func.vmap`; "loop" is `loop_craft`,
one example at a time through one model at a time, as the public implementations do. The loop crafts the first
`--loop-examples` examples only (it is slow); examples/s are compared. Models are freshly initialized from the
config, membership drawn at random (the cost depends on neither). Prints the setup, the machine and its load,
the median seconds of each side (after an untimed warm-up), examples/s, the ratio, and the largest difference
between the two sides' crafted inputs on the examples both crafted.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from attacks.compute.crafting import CraftSettings, OsloSettings, craft, loop_craft
from attacks.compute.yoqo import BLOCK
from jobs.bench.farm import machine
from jobs.bench.pergrad import add_model_arguments, median_seconds, random_models
from jobs.common import job_main, job_parser


def bench(args: argparse.Namespace) -> int:
    if args.smoke_test:
        args.examples, args.loop_examples, args.repeats, args.steps = 64, 4, 1, 5
    cfg, data, x, y, models, (base, params, buffers) = random_models(args)
    n = len(y)
    member = torch.tensor(np.random.default_rng(cfg.seed).random((args.models, n)) < 0.5)
    bounds, k = data.info.bounds, min(args.loop_examples, n)
    print(f"setup: YOQO (online, 1 query per example) and OSLO (4 levels), {args.steps} steps, through "
          f"{args.models} models {cfg.model.name} on {n} examples of {data.info.name} {data.info.shape} (the loop: "
          f"the first {k}); {args.repeats} repeats; {args.threads} torch thread(s)")
    print(f"machine: {machine()}; load average {tuple(round(v, 2) for v in os.getloadavg())}")
    kernels = (("YOQO", CraftSettings(steps=args.steps)), ("OSLO", OsloSettings(levels=(1e-12,) * 4, steps=args.steps)))
    for name, settings in kernels:
        # the first vmapped call of a process pays a one-off setup (seconds): warm both sides up, untimed
        craft(base, params, buffers, x[:2], y[:2], member[:, :2], settings=settings, bounds=bounds)
        loop_craft(models, x[:1], y[:1], member[:, :1], settings=settings, bounds=bounds)

        def batched_side(settings=settings) -> torch.Tensor:
            return torch.cat([craft(base, params, buffers, x[b:b + BLOCK], y[b:b + BLOCK], member[:, b:b + BLOCK],
                                    settings=settings, bounds=bounds) for b in range(0, n, BLOCK)])

        fast_s, fast = median_seconds(batched_side, args.repeats)
        slow_s, slow = median_seconds(lambda settings=settings: loop_craft(
            models, x[:k], y[:k], member[:, :k], settings=settings, bounds=bounds), args.repeats)
        fast_rate, slow_rate = n / fast_s, k / slow_s
        print(f"{name} batched (vmap over stacked models, blocks of {BLOCK}): median {fast_s:.3f} s = "
              f"{fast_rate:,.1f} examples/s")
        print(f"{name} loop (per example, per model): median {slow_s:.3f} s = {slow_rate:,.2f} examples/s")
        print(f"{name} ratio batched / loop: {fast_rate / slow_rate:.1f}x; largest difference "
              f"{float((fast[:k] - slow).abs().max()):.1e}")
    print(f"load average after: {tuple(round(v, 2) for v in os.getloadavg())}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, models_help="crafting models", examples=256, repeats=3)
    parser.add_argument("--loop-examples", type=int, default=16, help="examples the loop crafts (default 16)")
    parser.add_argument("--steps", type=int, default=40, help="descent steps (default 40, the attack's default)")
    parser.add_argument("--smoke-test", action="store_true", help="64 examples, 4 in the loop, 5 steps: seconds")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.queries", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
