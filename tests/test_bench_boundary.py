"""The HopSkipJump benchmark job: smoke test end to end on a tiny run, with and without IBM ART, and its errors."""

import importlib.util
import re
import sys

import numpy as np
import pytest
import torch

from jobs.bench import boundary as bench_boundary

TINY = ["data.subsample=120", "membership.n_models=4", "train.epochs=3", "farm.group_size=4", "farm.num_actors=1",
        "model.hidden=[16]", "queries=[clean]"]
OURS_LINE = re.compile(r"^\s+ours: .* examples/s \| .* queries/example \| \d+ failures \| AUC \d\.\d{3}$", re.M)
HAS_ART = importlib.util.find_spec("art") is not None


@pytest.fixture(scope="module")
def tiny_run(farms):
    return farms.run(*TINY)


@pytest.fixture
def no_art(monkeypatch):
    """Imports of `art` fail as if it were not installed."""
    for name in [m for m in sys.modules if m == "art" or m.startswith("art.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "art", None)


def test_smoke_test_prints_setup_and_ours(tiny_run, capsys):
    assert bench_boundary.main(["--smoke-test", "--run", tiny_run]) == 0
    out = capsys.readouterr().out
    assert "20 examples (10 members, 10 non-members, seed 0;" in out and "machine: " in out
    assert OURS_LINE.search(out), out
    if HAS_ART:  # both ART estimators ran on the same examples and were compared
        assert out.count(" examples/s (ours / ART; ") == 2 and "BlackBoxClassifier" in out


def test_smoke_test_without_art_runs_ours_only(tiny_run, no_art, capsys):
    assert bench_boundary.main(["--smoke-test", "--run", tiny_run]) == 0
    out = capsys.readouterr().out
    assert OURS_LINE.search(out) and "ART: skipped (IBM ART is not installed" in out


def test_full_benchmark_without_art_is_one_clear_error(no_art, capsys):
    assert bench_boundary.main(["--run", "does/not/matter"]) == 2
    assert capsys.readouterr().err == ("shadowfarm: error: the benchmark needs IBM ART: "
                                       "pip install 'shadowfarm[bench]'\n")


def test_missing_run_says_how_to_make_it(tmp_path, capsys):
    assert bench_boundary.main(["--smoke-test", "--run", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shadowfarm: error: ") and "python -m jobs.train --config quickstart" in err


def test_examples_are_balanced_seeded_and_from_the_pool():
    rng = np.random.default_rng(3)
    member, pool = rng.random(500) < 0.5, rng.random(500) < 0.8
    ids = bench_boundary.pick_examples(member, pool, 60, seed=1)
    assert len(np.unique(ids)) == 60 and pool[ids].all() and member[ids].sum() == 30
    assert np.array_equal(ids, bench_boundary.pick_examples(member, pool, 60, seed=1))
    assert not np.array_equal(ids, bench_boundary.pick_examples(member, pool, 60, seed=2))


def test_counting_module_counts_rows_and_accepts_float64():
    counting = bench_boundary.CountingModule(torch.nn.Linear(3, 2))
    counting(torch.zeros(5, 3, dtype=torch.float64))
    counting(torch.zeros(2, 3))
    assert counting.rows == 7
