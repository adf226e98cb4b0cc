"""Pieces of the GPU benchmark (jobs/bench/gpu.py): the device's peak (datasheet and measured), CIFAR-size
synthetic images, FLOPs of a training step, timed training of a workload, peak memory of a group, the packed
farm (`section_packing`: plan_run + train_farm, group intervals from metrics.json) and a timed label oracle."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from farm.config import RunConfig, load_config, model_seed
from farm.data import DatasetInfo
from farm.models import build_model
from farm.train import predict_in_chunks, steps_per_epoch, train_group

# Dense (no sparsity) datasheet peaks, TFLOP/s: fp32 (CUDA cores), tf32 and bf16 (tensor cores). The first key
# found in torch.cuda.get_device_name() wins, so the more specific names come first.
DATASHEET_TFLOPS = (
    ("H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    ("H200", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}),  # H200 SXM
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    ("H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0}),
    ("H100", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}),  # H100 SXM
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
)
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


def datasheet_peak(device_name: str) -> dict[str, float] | None:
    """TFLOP/s per precision from DATASHEET_TFLOPS for this device name, None when it is not in the table."""
    return next((peaks for key, peaks in DATASHEET_TFLOPS if key in device_name), None)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA kernels run asynchronously, so every timing ends here."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str, *, n: int, repeats: int) -> float:
    """Measured FLOP/s of torch.matmul on n x n matrices (2 n^3 FLOPs each), median of `repeats` timed calls.
    tf32: fp32 inputs with torch.backends.cuda.matmul.allow_tf32 on (tensor cores), restored afterwards."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen).to(DTYPES[precision])
    b = torch.randn(n, n, device=device, generator=gen).to(DTYPES[precision])
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        torch.matmul(a, b)  # warm-up: cuBLAS handle and kernel choice
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            for _ in range(4):
                torch.matmul(a, b)
            sync(device)
            times.append((time.perf_counter() - start) / 4)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * n**3 / float(np.median(times))


def cifar_like(n: int, *, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(x float32[n, 3, 32, 32] in [0, 1], y int64[n]): per class a smooth random pattern plus pixel noise, so a
    CNN has something to learn; seeded, balanced classes."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((num_classes, 3, 8, 8), dtype=np.float32)
    patterns = coarse.repeat(4, axis=2).repeat(4, axis=3)  # [C, 3, 32, 32]
    y = np.arange(n, dtype=np.int64) % num_classes
    rng.shuffle(y)
    x = 0.6 * patterns[y] + 0.4 * rng.random((n, 3, 32, 32), dtype=np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32), y


@dataclass
class Workload:
    """One model's benchmark: its config, the population on the device and the membership of `member`'s models."""

    name: str
    cfg: RunConfig
    info: DatasetInfo
    x: torch.Tensor  # float32[N, *info.shape] on the device
    y: torch.Tensor  # int64[N] on the device
    member: np.ndarray  # bool[M, N]

    @property
    def n_steps(self) -> int:
        """Optimizer steps of each model: steps per epoch (fixed by all of `member`) times epochs."""
        return steps_per_epoch(self.member, self.cfg.train.batch_size) * self.cfg.train.epochs


def step_flops(work: Workload) -> int:
    """FLOPs of one training step of ONE model (forward and backward of a batch; the optimizer's elementwise
    update is not counted), by torch.utils.flop_counter on the device."""
    model = build_model(work.cfg.model, info=work.info).to(work.x.device).train()
    batch = work.x[: work.cfg.train.batch_size]
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(batch), work.y[: len(batch)]).backward()
    return int(counter.get_total_flops()) * work.cfg.train.batch_size // len(batch)


def train_models(work: Workload, model_ids: list[int], group_size: int, *, n_steps_per_epoch: int | None = None):
    """Train `model_ids` in groups of `group_size` (1: the plain per-model loop; more: vmapped groups).
    Returns (seconds until the device finished, the last group's TrainedGroup)."""
    device, group = work.x.device, None
    n_steps = n_steps_per_epoch or steps_per_epoch(work.member, work.cfg.train.batch_size)
    sync(device)
    start = time.perf_counter()
    for i in range(0, len(model_ids), group_size):
        ids = model_ids[i : i + group_size]
        group = train_group(model_cfg=work.cfg.model, train_cfg=work.cfg.train, info=work.info, x=work.x, y=work.y,
                            member=work.member[ids], seeds=[model_seed(work.cfg.seed, m) for m in ids],
                            n_steps_per_epoch=n_steps, vectorize=group_size > 1)
    sync(device)
    return time.perf_counter() - start, group


def test_accuracy(work: Workload, group, model_ids: list[int]) -> float:
    """Mean accuracy of the group's models on their non-members."""
    correct = (predict_in_chunks(group.predict, work.x).argmax(-1) == work.y).cpu().numpy()
    return float(np.mean([correct[g][~work.member[m]].mean() for g, m in enumerate(model_ids)]))


def group_memory(work: Workload, group_size: int, *, steps: int) -> tuple[float, float]:
    """(peak MiB allocated by torch on the CUDA device while one group of `group_size` models trains `steps`
    steps, MiB allocated before it: the population and whatever else lives there)."""
    device = work.x.device
    sync(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    train_models(work, list(range(group_size)), group_size, n_steps_per_epoch=steps)
    return torch.cuda.max_memory_allocated(device) / 2**20, before / 2**20


def group_intervals(run_dir: Path, n_models: int) -> list[tuple[float, float, int]]:
    """(start, end, group size) per group of a finished run, from its models' metrics.json: end = the file's
    modification time, start = end - the group's recorded training and query seconds (metrics.json shares them
    out per model). The shard writing is not in those seconds, so a start is late: overlaps are lower bounds."""
    groups: dict[float, tuple[float, float, int]] = {}
    for m in range(n_models):
        path = run_dir / "models" / f"model_id={m:05d}" / "metrics.json"
        metrics, end = json.loads(path.read_text()), path.stat().st_mtime
        busy = (metrics["seconds"] + metrics["query_seconds"]) * metrics["group_size"]
        key = round(busy, 9)  # the models of one group share these seconds exactly
        first, last, size = groups.get(key, (math.inf, -math.inf, 0))
        groups[key] = (min(first, end - busy), max(last, end), size + 1)
    return sorted(groups.values())


def most_at_once(intervals: list[tuple[float, float, int]]) -> int:
    """The largest number of intervals (start, end, _) open at one instant."""
    events = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    best = now = 0
    for _, change in events:
        now += change
        best = max(best, now)
    return best


class TimedOracle:
    """Wraps a label function: `predict_labels` is timed (seconds, rows), up to the device's answer on the host."""

    def __init__(self, predict_labels):
        self._predict, self.seconds, self.rows = predict_labels, 0.0, 0

    def predict_labels(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        labels = self._predict(x)  # labels come back as numpy: the device has finished
        self.seconds += time.perf_counter() - start
        self.rows += len(x)
        return labels


def _start_ray(device, args, ray) -> bool:
    """Start a local Ray for the packing farms (True when this job started it)."""
    if ray.is_initialized():
        return False
    if device.type == "cuda":
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    else:  # --packing-on-cpu: one logical GPU; the actors hold their share and train on the CPU
        os.environ.setdefault("RAY_ACCEPT_CLUSTER_WITHOUT_LOCAL_GPU", "1")
        ray.init(num_cpus=8, num_gpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    return True


def section_packing(device, sizes, args, state) -> None:
    if device.type != "cuda" and not args.packing_on_cpu:
        print("packing: skipped on the CPU (needs a CUDA device; --packing-on-cpu runs it with a logical Ray GPU)")
        return
    if importlib.util.find_spec("ray") is None:  # the other sections need no Ray: they run where it is missing
        print("packing: skipped: Ray is not installed in this Python (pip install 'ray[default]==2.60.0')")
        return
    import ray

    from farm.driver import train_farm
    from farm.plan import plan_run
    folder = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    x, y = cifar_like(sizes["pack_images"], seed=1)
    np.savez(folder / "cifar-like.npz", x=x, y=y)
    base = ["data.name=npz", f"data.path={folder / 'cifar-like.npz'}", "model.name=cnn",
            f"membership.n_models={sizes['pack_models']}", "membership.target_ids=[0]",
            f"train.epochs={sizes['pack_epochs']}", "train.optimizer=sgd", "train.lr=0.05",
            f"train.batch_size={sizes['image_batch']}", "queries=[clean]",
            f"farm.group_size={sizes['pack_group']}", "farm.num_cpus=2",
            f"farm.device={'cuda' if device.type == 'cuda' else 'auto'}"]
    started = _start_ray(device, args, ray)
    print(f"ray: {ray.cluster_resources().get('GPU', 0):g} GPU(s), {ray.cluster_resources().get('CPU', 0):g} CPUs | "
          f"{sizes['pack_models']} CNNs in groups of {sizes['pack_group']}, {sizes['pack_images']} images, "
          f"{sizes['pack_epochs']} epochs, clean queries")
    rates = []
    try:
        for name, extra in (("4 actors, num_gpus 0.25", ["farm.num_gpus=0.25", "farm.num_actors=4"]),
                            ("1 actor, num_gpus 1", ["farm.num_gpus=1", "farm.num_actors=1"])):
            plan = plan_run(load_config(None, base + extra), str(folder / name.split(",")[0].replace(" ", "-")))
            start = time.perf_counter()
            trained = train_farm(plan, progress=False)
            wall = time.perf_counter() - start
            intervals = group_intervals(Path(plan.run.uri), sizes["pack_models"])
            span = max(e for _, e, _ in intervals) - min(s for s, _, _ in intervals)
            busy = sum(e - s for s, e, _ in intervals)
            devices = sorted({load_metrics_device(plan, m) for m in trained})
            rates.append(len(trained) / wall * 3600)
            print(f"  {name:>24}: {len(trained)} models in {wall:.1f} s wall ({rates[-1]:,.0f} models/hour, actor "
                  f"start included) | {len(intervals)} groups, at most {most_at_once(intervals)} training at once, "
                  f"mean {busy / span:.2f} at once over the {span:.1f} s span | device {', '.join(devices)}")
    finally:
        if started:
            ray.shutdown()
    print(f"  ratio packed/single: {rates[0] / rates[1]:.2f}x models/hour (wall clock)")


def load_metrics_device(plan, model_id: int) -> str:
    return plan.run.read_json(f"models/model_id={model_id:05d}/metrics.json")["device"]
