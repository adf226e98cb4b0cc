"""The frontier benchmark on more targets: its smoke test end to end, the target sets it accepts, and its errors."""

import re

import pytest

from farm.errors import ConfigError
from jobs.bench import frontier


@pytest.mark.system  # a job's --smoke-test end to end (trains the smoke farm)
def test_smoke_test_prints_every_point_per_set_and_pooled(ray_local, tmp_path, capsys):
    assert frontier.main(["--smoke-test", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "machine: " in out and "target sets 0,1; 2,3, every other model a shadow" in out
    assert re.search(r"pooled: (\d+) members / (\d+) non-members over 2 sets; 1% FPR allows \d+ false positives", out)
    rows = re.findall(r"^\| ([^|]+?) \| (\d+) \| (\d+\.\d% / \d+\.\d%) \| (0\.\d{3}) \(", out, re.M)
    assert [(r[0], int(r[1])) for r in rows] == [("gap", 1), ("yoqo (8)", 8), ("yoqo (8) + 2 copies", 10),
                                                 ("oslo (8 levels)", 8), ("oslo (8 levels) + 2 copies", 10),
                                                 ("calibrated (4 copies)", 4)]
    assert re.search(r"^\| calibrated \(4 copies\) .* \| - \|$", out, re.M)  # the baseline has no difference
    assert len(re.findall(r"[+-]\d+\.\d to [+-]\d+\.\d points, \d+%", out)) == 5


def test_target_sets_are_parsed_and_checked():
    assert frontier.target_sets("0-3,4-7", 16) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert frontier.target_sets("0,1;5", 16) == [(0, 1), (5,)]
    for text, message in [("0-3,x", "expected sets like 0-3,4-7"), ("0-3,2-5", "must be disjoint"),
                          ("14-16", r"'14-16' must name model ids in \[0, 15\]"), ("0-12", "at least 4 of the 16")]:
        with pytest.raises(ConfigError, match=message):
            frontier.target_sets(text, 16)


def test_bad_target_sets_fail_before_any_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert frontier.main(["--config", "paper_digits", "--out", str(out), "--target-sets", "0-3,2-5"]) == 2
    assert capsys.readouterr().err.strip().endswith("the sets must be disjoint (pooled, a target would count twice): "
                                                    "'0-3,2-5'")
    assert not out.exists()
