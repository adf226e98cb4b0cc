"""Distributed HopSkipJump distances: chunking does not change them, re-runs compute only what is missing."""

import os

import numpy as np
import pandas as pd
import pytest

from attacks.compute.boundary import HsjaSettings, boundary_distances
from attacks.stage import AttackOptions, attack_run
from farm.plan import load_plan

TINY = ["data.subsample=80", "membership.n_models=6", "train.epochs=3", "farm.group_size=3", "model.hidden=[16]",
        "train.lr=0.01", "queries=[clean]"]
SETTINGS = HsjaSettings(max_iter=3, init_evals=20, max_evals=100, budget=400, seed=3)


@pytest.fixture(scope="module")
def plan(farms):
    return load_plan(farms.run(*TINY))


def _distances(plan, chunk_examples, models=(0, 2)):
    return boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y, bounds=plan.dataset.info.bounds,
                              models=models, n_models=6, settings=SETTINGS, chunk_examples=chunk_examples,
                              progress=False)


def test_one_task_and_four_tasks_give_identical_distances(plan):
    whole = _distances(plan, chunk_examples=80)
    parts = _distances(plan, chunk_examples=20)  # other part files: computed again, in 4 tasks per model
    assert np.array_equal(whole[[0, 2]], parts[[0, 2]])
    assert np.isnan(whole[[1, 3, 4, 5]]).all() and np.isfinite(whole[[0, 2]]).all()


def test_budget_is_respected_and_recorded(plan):
    _distances(plan, chunk_examples=40)
    root = f"{plan.run.root}/boundary/{SETTINGS.key()}"
    table = pd.concat([pd.read_parquet(f"{root}/model_id=00000/{name}")
                       for name in os.listdir(f"{root}/model_id=00000") if name.startswith("part-")])
    assert table["queries"].max() <= SETTINGS.budget and table["queries"].min() >= 1
    assert list(table.columns) == ["example_id", "distance", "queries", "success"]


def test_rerun_computes_only_missing_chunks(plan):
    _distances(plan, chunk_examples=40)
    root = f"{plan.run.root}/boundary/{SETTINGS.key()}/model_id=00002"
    first, second = sorted(n for n in os.listdir(root) if n.startswith("part-000000-000040") or
                           n.startswith("part-000040-000080"))
    before = os.stat(f"{root}/{second}").st_mtime_ns
    os.remove(f"{root}/{first}")
    again = _distances(plan, chunk_examples=40)
    assert os.path.exists(f"{root}/{first}") and os.stat(f"{root}/{second}").st_mtime_ns == before
    assert np.isfinite(again[2]).all()


def test_boundary_attack_through_the_runner(plan):
    settings = {"boundary": {"max_iter": 2, "init_evals": 10, "max_evals": 50}}
    [result] = attack_run(plan.run.uri, AttackOptions(attacks=("boundary",), settings=settings, n_pseudo=2,
                                                     bootstrap=0), progress=False)
    assert result["attack"] == "boundary" and 0 <= result["auc"] <= 1
    skipped = {r["attack"]: r["skipped"] for r in attack_run(plan.run.uri, AttackOptions(
        attacks=None, n_pseudo=2, bootstrap=0), progress=False) if "skipped" in r}
    assert "--attacks boundary" in skipped["boundary"]
