"""The GPU benchmark (jobs/bench/gpu.py): its smoke test on the CPU prints every section and the ratio lines;
the helpers that read the peaks and the packed farm's concurrency."""

import json
import os
import re

import numpy as np
import torch

from jobs.bench import gpu as bench_gpu
from jobs.bench.gpu_parts import cifar_like, datasheet_peak, group_intervals, most_at_once


def test_smoke_test_prints_every_section_and_ratio(capsys):
    assert bench_gpu.main(["--smoke-test"]) == 0
    out = capsys.readouterr().out
    for title, _ in bench_gpu.SECTIONS:
        assert f"== {title}\n" in out
    assert out.startswith("setup: jobs.bench.gpu --smoke-test") and "\nmachine: " in out
    assert re.search(r"measured matmul peak .*fp32 [\d.]+, tf32 [\d.]+, bf16 [\d.]+", out)
    for name in ("quickstart mlp", "cnn 3x32x32"):
        assert f"\n{name}: N=" in out
    assert len(re.findall(r"per-model loop: +[\d,]+ models/hour", out)) == 2
    assert len(re.findall(r"vmapped groups of 2: +[\d,]+ models/hour", out)) == 2
    assert len(re.findall(r"ratio vmap/loop: \d+\.\d\dx models/hour; same model both ways: max \|weight", out)) == 2
    assert re.search(r"\n +2 \| +\d+ RSS max \| +\d+ RSS max", out)  # one memory row per group size
    if not torch.cuda.is_available():
        assert "packing: skipped on the CPU" in out
    assert re.search(r"hopskipjump: [\d.]+ examples/s .* queries/example .* rows/s in the oracle", out)
    assert "all sections ran" in out and "Traceback" not in out


def test_a_failing_section_is_reported_and_the_job_fails(monkeypatch, capsys):
    def broken(device, sizes, args, state):
        raise RuntimeError("planted failure")

    sections = list(bench_gpu.SECTIONS)
    sections[0] = (sections[0][0], broken)
    monkeypatch.setattr(bench_gpu, "SECTIONS", tuple(sections[:1]))
    assert bench_gpu.main(["--smoke-test"]) == 1
    out = capsys.readouterr().out
    assert "RuntimeError: planted failure" in out and "FAILED sections: device" in out


def test_datasheet_peaks_pick_the_specific_name_first():
    assert datasheet_peak("NVIDIA H200")["bf16"] == 989.5
    assert datasheet_peak("NVIDIA H200 NVL")["fp32"] == 60.0
    assert datasheet_peak("NVIDIA H100 PCIe")["fp32"] == 51.0
    assert datasheet_peak("NVIDIA GeForce RTX 4090") is None


def test_cifar_like_is_seeded_bounded_and_balanced():
    x, y = cifar_like(50, seed=3)
    assert x.shape == (50, 3, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert np.bincount(y).tolist() == [5] * 10
    assert np.array_equal(x, cifar_like(50, seed=3)[0]) and not np.array_equal(x, cifar_like(50, seed=4)[0])


def test_group_intervals_from_metrics_and_overlap(tmp_path):
    # two groups of two models; group A busy 10 s ending at t=100, group B busy 4 s ending at t=95: overlap
    for m, (seconds, end) in enumerate([(4.0, 100), (4.0, 100), (1.5, 95), (1.5, 95)]):
        folder = tmp_path / "models" / f"model_id={m:05d}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"seconds": seconds, "query_seconds": 1.0 if m < 2 else 0.5,
                                                         "group_size": 2}))
        os.utime(folder / "metrics.json", (end, end))
    assert group_intervals(tmp_path, 4) == [(90.0, 100.0, 2), (91.0, 95.0, 2)]
    assert most_at_once(group_intervals(tmp_path, 4)) == 2
    assert most_at_once([(0, 1, 1), (1.5, 2, 1), (3, 4, 1)]) == 1
    assert most_at_once([(0, 10, 1), (1, 2, 1), (3, 4, 1), (3.5, 9, 1)]) == 3
