"""Benchmark: the ensemble kernel vs vmapped groups vs a plain per-model loop, same models, one process.

    python -m jobs.bench.farm [--config quickstart] [--models 32] [--group-size 16] [--repeats 3]
                              [--threads 1] [--profile]

Three ways to train the same models (same seeds, batches, epochs and optimizer steps):
- per-model loop: each model on its own with an ordinary PyTorch loop (the way other tools train shadows);
- vmap: `group_size` models at once as one torch.func vmapped ensemble (`train_group(kernel=False)`);
- kernel: the ensemble kernel (`farm.ensemble`: one baddbmm per layer, hand-written backward, one flat
  optimizer), what `train_group` selects for MLP and logistic groups.
Prints the setup, the machine and its load, median models/minute of each, ratios against the loop, the
mean test accuracy of each, and the achieved GFLOP/s (forward + backward of the MLP: 6 * batch *
sum(in * out) per model per step) against the sgemm peak measured in the same run (a large torch.mm).
`--profile` adds torch.profiler's top ops of one kernel group: what bounds the kernel.
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
from torch import nn

from farm.config import load_config, model_seed
from farm.data import load_dataset
from farm.membership import make_membership
from farm.models import build_model
from farm.train import steps_per_epoch, train_group
from jobs.common import job_main, job_parser, resolve_config

METHODS = {"per-model loop": {"vectorize": False}, "vmap": {"kernel": False}, "kernel": {}}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"cuda={'yes' if torch.cuda.is_available() else 'no'}")


def load() -> str:
    return "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"


def sgemm_peak(n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` float32 n x n matrix products (torch.mm, current threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_model(cfg, info, n_steps: int) -> float | None:
    """Forward + backward FLOPs of one model's training, 6 * batch * sum(in * out) a step; None if not an MLP."""
    model = build_model(cfg.model, info=info)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if any(isinstance(m, nn.Conv2d) for m in model.modules()) or not linears:
        return None
    return 6.0 * cfg.train.batch_size * sum(m.in_features * m.out_features for m in linears) * n_steps


def _groups(cfg, data, member, model_ids, group_size: int, how: dict):
    x, y = torch.tensor(data.x), torch.tensor(data.y)
    for i in range(0, len(model_ids), group_size):
        ids = model_ids[i : i + group_size]
        yield ids, x, y, train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=data.info, x=x, y=y,
                                     member=member[ids], seeds=[model_seed(cfg.seed, m) for m in ids],
                                     n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size), **how)


def _run(cfg, data, member, model_ids, group_size: int, how: dict) -> tuple[float, float]:
    """Train `model_ids` in groups; returns (seconds, mean test accuracy)."""
    start = time.perf_counter()
    accuracy = []
    for ids, x, y, group in _groups(cfg, data, member, model_ids, group_size, how):
        correct = (group.predict(x).argmax(-1) == y).numpy()
        accuracy += [correct[g][~member[m]].mean() for g, m in enumerate(ids)]
    return time.perf_counter() - start, float(np.mean(accuracy))


def _profile(cfg, data, member, model_ids, group_size: int, rows: int = 12) -> None:
    from torch.profiler import profile

    with profile() as prof:
        start = time.perf_counter()
        list(_groups(cfg, data, member, model_ids[:group_size], group_size, METHODS["kernel"]))
        wall = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"profile of one kernel group ({len(model_ids[:group_size])} models): {wall * 1e3:.0f} ms wall (profiled), "
          f"{total / 1e3:.0f} ms in torch ops, the rest Python; top ops by self CPU time:")
    for e in events[:rows]:
        print(f"  {e.key:>32}: {e.self_cpu_time_total / 1e3:8.1f} ms ({100 * e.self_cpu_time_total / total:4.1f}%)"
              f" in {e.count} calls, {e.self_cpu_time_total / max(e.count, 1):6.1f} us each")


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
    group_size = min(args.group_size, len(model_ids))
    n_steps = steps_per_epoch(member, cfg.train.batch_size) * cfg.train.epochs
    print(f"setup: {args.config} | {data.info.name} N={len(data)} | model {cfg.model.name} {cfg.model.hidden} | "
          f"{cfg.train.epochs} epochs ({n_steps} steps), batch {cfg.train.batch_size}, {cfg.train.optimizer} | "
          f"{len(model_ids)} models | groups of {group_size} | {args.repeats} repeats")
    print(f"machine: {machine()}")
    print(f"before: {load()}")
    peaks, rates = [], {name: [] for name in METHODS}
    accuracy = {}
    for _ in range(args.repeats):
        peaks.append(sgemm_peak())
        for name, how in METHODS.items():
            seconds, accuracy[name] = _run(cfg, data, member, model_ids, 1 if name == "per-model loop" else group_size,
                                           how)
            rates[name].append(len(model_ids) / seconds * 60)
    peak = statistics.median(peaks)
    flops = flops_per_model(cfg, data.info, n_steps)
    print(f"sgemm peak: {peak:.1f} GFLOP/s (torch.mm 1024x1024 float32, best of 5, median over repeats)")
    base = statistics.median(rates["per-model loop"])
    for name, runs in rates.items():
        rate = statistics.median(runs)
        gflops = None if flops is None else flops * rate / 60 / 1e9
        achieved = "" if gflops is None else f"; {gflops:.2f} GFLOP/s ({100 * gflops / peak:.1f}% of peak)"
        print(f"{name:>16}: {rate:8.1f} models/min (runs: {', '.join(f'{r:.0f}' for r in runs)}), "
              f"{rate / base:5.1f}x the loop; mean test accuracy {accuracy[name]:.4f}{achieved}")
    vmap, kernel = statistics.median(rates["vmap"]), statistics.median(rates["kernel"])
    print(f"ratio: kernel {kernel / base:.1f}x the loop, {kernel / vmap:.1f}x vmap; vmap {vmap / base:.1f}x the loop; "
          f"test accuracy kernel - loop {100 * (accuracy['kernel'] - accuracy['per-model loop']):+.2f} points, "
          f"kernel - vmap {100 * (accuracy['kernel'] - accuracy['vmap']):+.2f} points")
    print(f"after: {load()}")
    if args.profile:
        _profile(cfg, data, member, model_ids, group_size)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--models", type=int, default=32, help="models trained each way (default 32)")
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: what a trainer actor with num_cpus=1 uses)")
    parser.add_argument("--profile", action="store_true", help="also print the top ops of one kernel group")
    parser.add_argument("--smoke-test", action="store_true")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.farm", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
