"""`python -m jobs.bench.pergrad --smoke-test`: both sides run on a group of 16 models and agree."""

import re

from jobs.bench import pergrad as bench_pergrad


def test_bench_pergrad_smoke(capsys):
    assert bench_pergrad.main(["--smoke-test"]) == 0
    out = capsys.readouterr().out
    assert "setup: 16 models mlp" in out and "machine: " in out and "load average" in out
    assert re.search(r"^vmap \(torch\.func, one group\): median \d+\.\d{3} s", out, re.M)
    assert re.search(r"^loop \(per model, per example backward\): median \d+\.\d{3} s", out, re.M)
    ratio, difference = re.search(r"^ratio loop / vmap: ([\d.]+)x; largest relative difference (\S+)$", out,
                                  re.M).groups()
    assert float(ratio) > 0 and float(difference) < 1e-3  # the two sides compute the same statistics


def test_bench_pergrad_bad_config_is_one_line(capsys):
    assert bench_pergrad.main(["--smoke-test", "--config", "nope"]) == 2
    assert capsys.readouterr().err.startswith("shadowfarm: error: ")
