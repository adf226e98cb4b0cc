"""`python -m jobs.bench.farm --smoke-test`: the loop, vmap and the kernel, with ratios, GFLOP/s and a profile."""

import re

from jobs.bench import farm as bench_farm


def test_bench_farm_smoke_prints_every_method_and_equal_accuracy(capsys):
    assert bench_farm.main(["--smoke-test", "--profile"]) == 0
    out = capsys.readouterr().out
    for part in ("setup: quickstart", "machine: ", "load average", "sgemm peak: ", "per-model loop: ", "vmap: ",
                 "kernel: ", "ratio: kernel ", "profile of one kernel group", "aten::baddbmm"):
        assert part in out, part
    accuracy = re.findall(r"mean test accuracy (\d\.\d+)", out)
    assert len(accuracy) == 3 and len(set(accuracy)) == 1  # the same models, trained three ways
    assert "kernel - vmap +0.00 points" in out
    assert float(re.search(r"sgemm peak: ([\d.]+)", out).group(1)) > 0


def test_flops_count_linear_layers_only():
    from farm.config import load_config
    from farm.data import load_dataset
    from jobs.common import resolve_config

    cfg = load_config(resolve_config("quickstart"), ["data.subsample=50"])
    info = load_dataset(cfg.data, seed=0).info
    assert bench_farm.flops_per_model(cfg, info, 10) == 6.0 * 32 * (64 * 64 + 64 * 10) * 10
    cnn = load_config(resolve_config("quickstart"), ["model.name=cnn", "model.width=4"])
    assert bench_farm.flops_per_model(cnn, info, 10) is None
