"""`python -m jobs.bench.scale --smoke-test`: a 16-model farm, verified, with its report lines."""

import pytest

from farm.plan import load_plan
from farm.verify import verify_plan
from jobs.bench import scale as bench_scale


@pytest.mark.system  # a job's --smoke-test end to end (trains a 16-model farm)
def test_bench_scale_smoke(ray_local, tmp_path, capsys):
    out = tmp_path / "run"
    assert bench_scale.main(["--smoke-test", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for part in ("setup:", "16 models in 4 groups of 4", "machine:", "models/min", "driver peak RSS:",
                 "trainer actor peak RSS:", "verify: ok (16 models)",
                 "attack stage: gap, noise, calibrated, lira_confidence on 16 models x 200 examples", "peak RSS",
                 "tracemalloc peak"):
        assert part in printed, part
    assert verify_plan(load_plan(str(out))) == []
