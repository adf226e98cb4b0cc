"""Benchmark: vmapped model groups vs a plain per-model loop, same models, same data, one process.

    python -m jobs.bench_farm [--config quickstart] [--models 32] [--group-size 16] [--repeats 3]

The baseline trains each model on its own with an ordinary PyTorch loop (the way other tools
train shadows); the grouped run trains `group_size` models at once as one torch.func vmapped
ensemble. Both use the same seeds, batches, epochs and optimizer. Prints the setup, the
machine, median models/minute of each, their ratio and the mean test accuracy of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from farm.config import load_config, model_seed
from farm.data import load_dataset
from farm.membership import make_membership
from farm.train import steps_per_epoch, train_group
from jobs.common import job_main, job_parser, resolve_config


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"cuda={'yes' if torch.cuda.is_available() else 'no'}")


def _run(cfg, data, member, model_ids, group_size: int) -> tuple[float, float]:
    """Train `model_ids` in groups; returns (seconds, mean test accuracy)."""
    x, y = torch.tensor(data.x), torch.tensor(data.y)
    start = time.perf_counter()
    accuracy = []
    for i in range(0, len(model_ids), group_size):
        ids = model_ids[i : i + group_size]
        group = train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=data.info, x=x, y=y,
                            member=member[ids], seeds=[model_seed(cfg.seed, m) for m in ids],
                            n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size),
                            vectorize=group_size > 1)
        correct = (group.predict(x).argmax(-1) == y).numpy()
        accuracy += [correct[g][~member[m]].mean() for g, m in enumerate(ids)]
    return time.perf_counter() - start, float(np.mean(accuracy))


def bench(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.smoke_test:
        overrides += ["data.subsample=200", "train.epochs=2"]
        args.models, args.repeats = min(args.models, 4), 1
    cfg = load_config(resolve_config(args.config), overrides)
    torch.set_num_threads(args.threads)
    data = load_dataset(cfg.data, seed=cfg.seed)
    member = make_membership(cfg.membership, n_examples=len(data), seed=cfg.seed)
    model_ids = list(range(min(args.models, cfg.membership.n_models)))
    print(f"setup: {args.config} | {data.info.name} N={len(data)} | model {cfg.model.name} {cfg.model.hidden} | "
          f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, {cfg.train.optimizer} | "
          f"{len(model_ids)} models | group_size {args.group_size} | {args.repeats} repeats")
    print(f"machine: {machine()}")
    results = {"per-model loop": [], f"vmapped groups of {args.group_size}": []}
    accuracy = {}
    for _ in range(args.repeats):
        for name, size in zip(results, (1, args.group_size), strict=True):
            seconds, accuracy[name] = _run(cfg, data, member, model_ids, size)
            results[name].append(len(model_ids) / seconds * 60)
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, rate in medians.items():
        runs = ", ".join(f"{r:.0f}" for r in results[name])
        print(f"{name:>24}: {rate:8.1f} models/min (runs: {runs}); mean test accuracy {accuracy[name]:.4f}")
    base, grouped = medians.values()
    acc_base, acc_grouped = accuracy.values()
    diff = 100 * (acc_grouped - acc_base)
    print(f"ratio: {grouped / base:.1f}x models/min; test accuracy difference {diff:+.2f} points")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--models", type=int, default=32, help="models trained each way (default 32)")
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: what a trainer actor with num_cpus=1 uses)")
    parser.add_argument("--smoke-test", action="store_true")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench_farm", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
