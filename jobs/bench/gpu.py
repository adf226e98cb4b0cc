"""Benchmark on a GPU (issue 19): the farm's vmapped groups vs a per-model loop, achieved FLOP/s against the
device's peak, peak memory per group size, fractional GPU packing, batched HopSkipJump; one run, one printout.

    python -m jobs.bench.gpu [--resnet] [--repeats 3] [--smoke-test] [--packing-on-cpu]

Device: cuda when torch sees one, else the CPU. Sections, each headed `== ...`:
- device: name, torch / CUDA versions, TF32 settings, the datasheet peak (jobs.bench.gpu_parts.DATASHEET_TFLOPS,
  dense) and the measured torch.matmul peak (fp32, tf32, bf16), timed after a synchronize.
- farm: the quickstart MLP (digits), a CIFAR-size CNN (`model.name: cnn`, synthetic 3x32x32 images made here:
  `data.synthetic` is tabular only) and with --resnet ResNet-18/GN, each trained as a per-model loop and as
  vmapped groups (farm.train.train_group, as jobs.bench.farm does): median models/hour over --repeats, the
  vmap/loop ratio, achieved FLOP/s (torch.utils.flop_counter on one forward+backward step x steps x models)
  against the peaks, and how far the same model's weights and labels differ between the two ways.
- memory: torch.cuda.max_memory_allocated of one group of 1, 4, 16, 64 models training, to choose
  farm.group_size (on the CPU: the process's peak RSS instead).
- packing: a small CNN farm through farm.plan.plan_run + farm.driver.train_farm with farm.num_gpus 0.25
  (four actors on the GPU, farm.device cuda) and with one actor at num_gpus 1; concurrency from the groups'
  recorded seconds in metrics.json. Skipped on the CPU unless --packing-on-cpu (a logical Ray GPU).
- hsja: attacks.compute.hsja.hopskipjump through attacks.oracles.model.ModelOracle on the device against a
  trained CNN: examples/s, queries/example and the share of the time spent in the oracle.
A section that fails prints its traceback and the job exits 1 after the others ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np
import torch

from attacks.compute.hsja import hopskipjump
from attacks.oracles.model import ModelOracle
from farm.config import load_config
from farm.data import DatasetInfo, load_dataset
from farm.membership import make_membership
from farm.models import build_model
from farm.train import predict_in_chunks
from jobs.bench.farm import machine
from jobs.bench.gpu_parts import (
    TimedOracle,
    Workload,
    cifar_like,
    datasheet_peak,
    group_memory,
    matmul_peak,
    section_packing,
    step_flops,
    test_accuracy,
    train_models,
)
from jobs.common import job_main, job_parser, resolve_config

FULL = dict(matmul_n=8192, matmul_repeats=5, mlp_models=16, mlp_group=16, images=10000, cnn_models=16,
            cnn_group=16, cnn_epochs=5, image_batch=128, resnet_models=4, resnet_group=4, resnet_images=5000,
            memory_sizes=(1, 4, 16, 64), memory_steps=3, pack_models=16, pack_group=2, pack_images=5000,
            pack_epochs=3, hsja_examples=100, hsja_iter=10, hsja_init=100, hsja_max=1000)
SMOKE = dict(matmul_n=256, matmul_repeats=2, mlp_models=2, mlp_group=2, images=40, cnn_models=2, cnn_group=2,
             cnn_epochs=1, image_batch=16, resnet_models=2, resnet_group=2, resnet_images=16, memory_sizes=(1, 2),
             memory_steps=1, pack_models=4, pack_group=2, pack_images=32, pack_epochs=1, hsja_examples=4,
             hsja_iter=1, hsja_init=10, hsja_max=20)
IMAGE_INFO = DatasetInfo(name="cifar-like", kind="image", shape=(3, 32, 32), num_classes=10)


def image_config(model: str, epochs: int, sizes: dict, extra: tuple[str, ...] = ()):
    """SGD with momentum, the CIFAR settings of jobs/configs/cifar10.yaml, on the synthetic images."""
    return load_config(None, [f"model.name={model}", f"train.epochs={epochs}", "train.optimizer=sgd", "train.lr=0.05",
                              "train.momentum=0.9", f"train.batch_size={sizes['image_batch']}", *extra])


def _device(args) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def section_device(device, sizes, args, state) -> None:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"device: cuda {torch.cuda.get_device_name(device)}, {props.total_memory / 2**30:.1f} GiB, "
              f"{props.multi_processor_count} SMs | torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
              f"{torch.backends.cudnn.version()} | TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN "
              f"convolutions {torch.backends.cudnn.allow_tf32} (torch's defaults: the CNNs' convolutions use TF32)")
        sheet = datasheet_peak(torch.cuda.get_device_name(device))
    else:
        print(f"device: cpu (torch sees no CUDA device) | torch {torch.__version__}")
        sheet = None
    state["datasheet"] = sheet
    print("datasheet peak (dense, TFLOP/s): " + (", ".join(f"{k} {v:g}" for k, v in sheet.items()) if sheet
                                                   else "not in the table for this device"))
    measured = {p: matmul_peak(device, p, n=sizes["matmul_n"], repeats=sizes["matmul_repeats"])
                for p in ("fp32", "tf32", "bf16")}
    state["measured"] = measured
    print(f"measured matmul peak ({sizes['matmul_n']}x{sizes['matmul_n']}, median of {sizes['matmul_repeats']}, "
          "TFLOP/s): " + ", ".join(f"{p} {v / 1e12:.2f}" for p, v in measured.items()))


def _workloads(device, sizes, args) -> list[tuple[Workload, int, int]]:
    """(workload, models, group size) for the quickstart MLP, the CNN and with --resnet ResNet-18/GN."""
    most = max(sizes["memory_sizes"])
    smoke = ["data.subsample=200", "train.epochs=2"] if args.smoke_test else []
    cfg = load_config(resolve_config("quickstart"), smoke)
    data = load_dataset(cfg.data, seed=cfg.seed)
    out = [(_workload("quickstart mlp", cfg, data.info, data.x, data.y, max(most, sizes["mlp_models"]), device),
            sizes["mlp_models"], sizes["mlp_group"])]
    x, y = cifar_like(sizes["images"], seed=0)
    cnn = image_config("cnn", sizes["cnn_epochs"], sizes)
    out.append((_workload("cnn 3x32x32", cnn, IMAGE_INFO, x, y, max(most, sizes["cnn_models"]), device),
                sizes["cnn_models"], sizes["cnn_group"]))
    if args.resnet:
        n = sizes["resnet_images"]
        resnet = image_config("resnet18", 1, sizes)
        work = _workload("resnet18/gn 3x32x32", resnet, IMAGE_INFO, x[:n], y[:n], max(most, sizes["resnet_models"]),
                         device)
        out.append((work, sizes["resnet_models"], sizes["resnet_group"]))
    return out


def _workload(name, cfg, info, x, y, n_models: int, device) -> Workload:
    membership = dataclasses.replace(cfg.membership, n_models=n_models, target_ids=(0,))
    member = make_membership(membership, n_examples=len(y), seed=cfg.seed)
    return Workload(name, cfg, info, torch.tensor(x, device=device), torch.tensor(y, device=device), member)


def _versus_peak(flops_per_second: float, state) -> str:
    parts = [f"{flops_per_second / 1e12:.3f} TFLOP/s"]
    if state.get("datasheet"):
        parts.append(f"{100 * flops_per_second / (1e12 * state['datasheet']['fp32']):.1f}% of the fp32 datasheet")
    for p in ("fp32", "tf32"):
        if state.get("measured"):
            parts.append(f"{100 * flops_per_second / state['measured'][p]:.1f}% of measured {p}")
    return ", ".join(parts)


def _compare(work: Workload, loop, vmapped) -> str:
    """How far the last model trained both ways differs: weights and labels on the population."""
    a, b = loop.state_dicts[-1], vmapped.state_dicts[-1]
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    labels = [predict_in_chunks(group.predict, work.x)[-1].argmax(-1) for group in (loop, vmapped)]
    agree = float((labels[0] == labels[1]).float().mean())
    return f"same model both ways: max |weight difference| {diff:.2e}, labels agree on {100 * agree:.2f}% of N"


def section_farm(device, sizes, args, state) -> None:
    for work, n_models, group_size in _workloads(device, sizes, args):
        ids = list(range(n_models))
        train_models(work, [0, 1], 2, n_steps_per_epoch=1)  # warm-up (kernels, allocator), not timed
        train_models(work, [0], 1, n_steps_per_epoch=1)
        flops = step_flops(work) * work.n_steps
        print(f"{work.name}: N={len(work.y)}, {work.cfg.train.epochs} epochs x batch {work.cfg.train.batch_size} = "
              f"{work.n_steps} steps/model, {flops / 1e9:.2f} GFLOP/model (forward+backward), {n_models} models, "
              f"{args.repeats} repeats")
        rates, groups = {1: [], group_size: []}, {}
        for _ in range(args.repeats):
            for size in rates:
                seconds, groups[size] = train_models(work, ids, size)
                rates[size].append(n_models / seconds * 3600)
        for size, runs in rates.items():
            name = "per-model loop" if size == 1 else f"vmapped groups of {size}"
            median = statistics.median(runs)
            accuracy = test_accuracy(work, groups[size], ids[-len(groups[size].state_dicts):])
            print(f"  {name:>22}: {median:12,.0f} models/hour (runs: {', '.join(f'{r:,.0f}' for r in runs)}) | "
                  f"{_versus_peak(median / 3600 * flops, state)} | test accuracy {accuracy:.4f}")
        ratio = statistics.median(rates[group_size]) / statistics.median(rates[1])
        print(f"  ratio vmap/loop: {ratio:.2f}x models/hour; {_compare(work, groups[1], groups[group_size])}")
        state.setdefault("workloads", {})[work.name] = work


def section_memory(device, sizes, args, state) -> None:
    works = list(state.get("workloads", {}).values()) or [w for w, _, _ in _workloads(device, sizes, args)]
    if device.type != "cuda":
        print("peak GPU memory needs CUDA: on the CPU the same groups train and the process's peak RSS is shown")
    print(f"{'group_size':>10} | " + " | ".join(f"{w.name:>22}" for w in works)
          + f"   (MiB, one group training {sizes['memory_steps']} steps; 1: the plain loop)")
    out_of_memory = set()
    for size in sizes["memory_sizes"]:
        cells = []
        for w in works:
            if w.name in out_of_memory:
                cells.append(f"{'-':>22}")
                continue
            try:
                if device.type == "cuda":
                    peak, before = group_memory(w, size, steps=sizes["memory_steps"])
                    cells.append(f"{peak:>9.0f} ({peak - before:>7.0f} own)")
                else:
                    from farm.worker import peak_rss_mb  # imports Ray: only here, on the CPU

                    train_models(w, list(range(size)), size, n_steps_per_epoch=sizes["memory_steps"])
                    cells.append(f"{peak_rss_mb():>13.0f} RSS max")
            except torch.cuda.OutOfMemoryError:
                out_of_memory.add(w.name)
                torch.cuda.empty_cache()
                cells.append(f"{'out of memory':>22}")
        print(f"{size:>10} | " + " | ".join(cells))


def section_hsja(device, sizes, args, state) -> None:
    work = state.get("workloads", {}).get("cnn 3x32x32")
    if work is None:
        x, y = cifar_like(sizes["images"], seed=0)
        work = _workload("cnn 3x32x32", image_config("cnn", sizes["cnn_epochs"], sizes), IMAGE_INFO, x, y, 2, device)
    _, group = train_models(work, [0], 1)
    model = build_model(work.cfg.model, info=work.info)
    model.load_state_dict(group.state_dicts[0])
    n = sizes["hsja_examples"]
    # correctly classified examples first: a misclassified one costs 1 query, no attack
    correct = (predict_in_chunks(group.predict, work.x)[0].argmax(-1) == work.y).cpu().numpy()
    pick = np.concatenate([np.flatnonzero(correct), np.flatnonzero(~correct)])[:n]
    x, y = work.x.cpu().numpy()[pick], work.y.cpu().numpy()[pick]
    oracle = TimedOracle(ModelOracle(model, device=device, input_shape=work.info.shape).predict_labels)
    print(f"target: a CNN trained as above (cnn 3x32x32) on {device.type} | {n} examples ({int(correct[pick].sum())} "
          f"correctly classified) | max_iter {sizes['hsja_iter']}, "
          f"init_evals {sizes['hsja_init']}, max_evals {sizes['hsja_max']} | torch threads {torch.get_num_threads()}")
    walls = []
    for _ in range(args.repeats):
        oracle.seconds = oracle.rows = 0
        start = time.perf_counter()
        result = hopskipjump(oracle.predict_labels, x, y, bounds=(0.0, 1.0), max_iter=sizes["hsja_iter"],
                             init_evals=sizes["hsja_init"], max_evals=sizes["hsja_max"], seed=0)
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    runs = ", ".join(f"{w:.2f}" for w in walls)
    print(f"  hopskipjump: {n / wall:.2f} examples/s (median of {len(walls)}: {runs} s) "
          f"| {result.queries.mean():.0f} queries/example | {oracle.rows / oracle.seconds:,.0f} rows/s in the oracle, "
          f"{100 * oracle.seconds / walls[-1]:.0f}% of the time (the rest: probes on the host) | "
          f"{int((~result.success).sum())} failures")


SECTIONS = (("device", section_device), ("farm: vmapped groups vs per-model loop", section_farm),
            ("peak memory per group size", section_memory), ("fractional GPU packing", section_packing),
            ("batched HopSkipJump", section_hsja))


def bench(args: argparse.Namespace) -> int:
    sizes = SMOKE if args.smoke_test else FULL
    if args.smoke_test:
        args.repeats = 1
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or os.cpu_count())
    try:
        return _run_sections(args, sizes)
    finally:
        torch.set_num_threads(threads)  # in-process callers (the tests) keep theirs


def _run_sections(args: argparse.Namespace, sizes: dict) -> int:
    device, state, failed = _device(args), {}, []
    print(f"setup: jobs.bench.gpu {'--smoke-test ' if args.smoke_test else ''}| repeats {args.repeats} | "
          f"resnet {'yes' if args.resnet else 'no'} | sizes {sizes}")
    print(f"machine: {machine()} | {platform.node()}")
    begin = time.perf_counter()
    for title, run_section in SECTIONS:
        print(f"== {title}", flush=True)
        start = time.perf_counter()
        try:
            run_section(device, sizes, args, state)
        except Exception:  # a benchmark of one-off device time: report, go on with the other sections, exit 1
            traceback.print_exc(file=sys.stdout)
            failed.append(title)
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"total {time.perf_counter() - begin:.1f} s; " + (f"FAILED sections: {', '.join(failed)}" if failed
                                                          else "all sections ran"))
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each training and attack (default 3)")
    parser.add_argument("--resnet", action="store_true", help="also ResNet-18/GN (farm and memory sections)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of this process (default: all cores)")
    parser.add_argument("--packing-on-cpu", action="store_true",
                        help="run the packing section without CUDA, on a logical Ray GPU (checks its code)")
    parser.add_argument("--smoke-test", action="store_true", help="the same sections with tiny sizes, seconds")


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, job_parser("python -m jobs.bench.gpu", __doc__, add_arguments), run=bench)


if __name__ == "__main__":
    sys.exit(main())
