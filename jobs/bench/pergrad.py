"""Benchmark: per-example gradients of a group of models with torch.func against a plain loop, in one process.

`python -m jobs.bench.pergrad [--config quickstart] [--models 16] [--examples 512] [--repeats 5] [--smoke-test]`

Both sides compute every white-box statistic of `attacks.compute.whitebox` (loss, margin, gradient norms overall
and per layer, activation norms, top probabilities) for the same models on the same examples of the config's
dataset: "vmap" is `group_statistics` (vmap(grad) over examples and vmap over the stacked models: one batched
call per batch of examples), "loop" is `loop_statistics` per model (model.zero_grad(); loss.backward() per
example). Models are freshly initialized from the config (the cost does not depend on the weights' values).
Prints the setup, the machine and its load, the median seconds of each side over the repeats, the ratio, and
the largest relative difference between the two sides' statistics.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from attacks.compute.whitebox import group_statistics, loop_statistics, stacked
from farm.data import load_dataset
from farm.models import build_model
from jobs.bench.farm import machine
from jobs.common import job_main, job_parser, resolve_config


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    """(median wall seconds of `repeats` calls of fn(), the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def random_models(args: argparse.Namespace) -> tuple:
    """(cfg, data, x, y, models, stacked (base, params, buffers)): `args.models` freshly initialized models of the
    benchmark's config (seeded by it) on its first `args.examples` examples, torch on `args.threads` threads."""
    from farm.config import load_config

    torch.set_num_threads(args.threads)
    cfg = load_config(resolve_config(args.config), args.overrides)
    data = load_dataset(cfg.data, seed=cfg.seed)
    n = min(args.examples, len(data.y))
    x, y = torch.tensor(data.x[:n]), torch.tensor(np.asarray(data.y[:n], dtype=np.int64))
    torch.manual_seed(cfg.seed)
    models = [build_model(cfg.model, info=data.info) for _ in range(args.models)]
    return cfg, data, x, y, models, stacked(cfg.model, data.info, [m.state_dict() for m in models])


def bench(args: argparse.Namespace) -> int:

    if args.smoke_test:
        args.examples, args.repeats = 24, 1
    cfg, data, x, y, models, (base, params, buffers) = random_models(args)
    n = len(y)
    n_params = sum(v[0].numel() for v in params.values())
    print(f"setup: {args.models} models {cfg.model.name} ({n_params:,} parameters each) on {n} examples of "
          f"{data.info.name} {data.info.shape}; {args.repeats} repeats; all white-box statistics per example")
    print(f"machine: {machine()}; load average {tuple(round(v, 2) for v in os.getloadavg())}")
    vmapped, fast = median_seconds(lambda: group_statistics(base, params, buffers, x, y), args.repeats)
    looped, slow = median_seconds(lambda: [loop_statistics(m, x, y) for m in models], args.repeats)
    worst = max(float(np.max(np.abs(fast[k][g] - slow[g][k]) / (np.abs(slow[g][k]) + 1e-6)))
                for g in range(args.models) for k in slow[0])
    per = args.models * n
    print(f"vmap (torch.func, one group): median {vmapped:.3f} s = {per / vmapped:,.0f} (model, example)/s")
    print(f"loop (per model, per example backward): median {looped:.3f} s = {per / looped:,.0f} (model, example)/s")
    print(f"ratio loop / vmap: {looped / vmapped:.1f}x; largest relative difference {worst:.1e}")
    print(f"load average after: {tuple(round(v, 2) for v in os.getloadavg())}")
    return 0


def add_model_arguments(parser: argparse.ArgumentParser, *, models_help: str, examples: int, repeats: int) -> None:
    """The options of a benchmark that times stacked models against a loop: --config, --models, --examples,
    --repeats, --threads, --set (this one and `jobs.bench.queries`)."""
    parser.add_argument("--config", default="quickstart", help="config whose model and data are used")
    parser.add_argument("--models", type=int, default=16, help=f"{models_help} (default 16)")
    parser.add_argument("--examples", type=int, default=examples, help=f"examples (default {examples})")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed repeats per side (default {repeats})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override, e.g. --set model.hidden=[256] (repeatable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, models_help="models in the group", examples=512, repeats=5)
    parser.add_argument("--smoke-test", action="store_true", help="24 examples, 1 repeat: runs in seconds")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.pergrad", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
