"""`python -m jobs.bench.cluster --smoke-test`: the farm and the boundary tasks on 1 and 2 nodes, and the table."""

import pytest

from jobs.bench import cluster as bench_cluster


@pytest.mark.system  # clusters of several raylets, in child processes
def test_smoke_test_prints_every_node_count(capsys):
    assert bench_cluster.main(["--smoke-test"]) == 0
    printed = capsys.readouterr().out
    for part in ("setup:", "machine:", "models/min", "overhead/group s", "chunks/min", "efficiency: rate at N"):
        assert part in printed, part
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"] and rows[0][4] == "1.00"
