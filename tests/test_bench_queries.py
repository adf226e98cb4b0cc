"""`python -m jobs.bench.queries --smoke-test`: YOQO crafting, batched and looped, craft the same queries."""

import re

from jobs.bench import queries as bench_queries


def test_bench_queries_smoke(capsys):
    assert bench_queries.main(["--smoke-test"]) == 0
    out = capsys.readouterr().out
    assert "setup: YOQO (online, 1 query per example) and OSLO (4 levels), 5 steps" in out and "machine: " in out
    for kernel in ("YOQO", "OSLO"):
        assert re.search(rf"^{kernel} batched \(vmap over stacked models, blocks of 64\): median \d+\.\d{{3}} s", out,
                         re.M)
        assert re.search(rf"^{kernel} loop \(per example, per model\): median \d+\.\d{{3}} s", out, re.M)
        ratio, difference = re.search(rf"^{kernel} ratio batched / loop: ([\d.]+)x; largest difference (\S+)$", out,
                                      re.M).groups()
        assert float(ratio) > 0 and float(difference) < 1e-4  # the two sides craft the same inputs
