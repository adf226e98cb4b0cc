"""`python -m jobs.bench.tune --smoke-test`: tune's trials per minute on the smoke farm, with the report lines."""

import pytest

from jobs.bench import tune as bench_tune


@pytest.mark.system  # a job's --smoke-test end to end (trains the smoke farm)
def test_bench_tune_smoke(ray_local, tmp_path, capsys):
    run = tmp_path / "run"
    bench_tune._trained(run, smoke=True)
    assert bench_tune.main(["--smoke-test", "--run", str(run), "--profile"]) == 0
    printed = capsys.readouterr().out
    for part in ("setup:", "machine:", "run 1: load average", "trials/min", "median trials/min:",
                 "profile: one trial"):
        assert part in printed, part
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == sorted(
        ["membership.parquet", "models", "queries.parquet", "run.json"])  # --run is never modified (locks aside)
