"""Re-querying saved models reproduces the farm's responses, whatever the chunking, and resumes."""

import os

import numpy as np
import pytest

from attacks.compute.requery import query_set_key, requery, with_queries
from attacks.loader import load_responses
from attacks.registry import run_attack
from farm.config import QuerySpec
from farm.plan import load_plan
from farm.queries import expand_queries

QUERIES = "queries=[clean, {kind: translate, d: 1}, {kind: gaussian, sigma: 0.2, n: 4}]"
TINY = ["data.subsample=90", "membership.n_models=5", "train.epochs=2", "farm.group_size=5", "model.hidden=[16]",
        QUERIES]


@pytest.fixture(scope="module")
def plan(farms):
    return load_plan(farms.run(*TINY))


def _requery(plan, specs, chunk_examples, models=range(5)):
    return requery(plan.run, specs=specs, info=plan.dataset.info, x=plan.dataset.x, labels=plan.dataset.y,
                   models=list(models), n_models=5, seed=plan.cfg.seed, chunk_examples=chunk_examples,
                   progress=False)


def test_requery_reproduces_the_farms_pred(plan):
    queries, pred = _requery(plan, plan.cfg.queries, chunk_examples=40)
    assert [q.kind for q in queries] == [q.kind for q in plan.queries]
    assert np.array_equal(pred, load_responses(plan.run).pred)


def test_other_query_sets_are_cached_apart_and_resume(plan):
    specs = (QuerySpec("clean"), QuerySpec("gaussian", (("n", 3), ("sigma", 0.5))))
    queries, whole = _requery(plan, specs, chunk_examples=90, models=[0, 3])
    _, split = _requery(plan, specs, chunk_examples=30, models=[0, 3])
    assert np.array_equal(whole, split) and (whole[[1, 2, 4]] == -1).all()
    key = query_set_key(queries)
    assert key != query_set_key(expand_queries(plan.cfg.queries, info=plan.dataset.info, seed=plan.cfg.seed))
    folder = f"{plan.run.root}/requery/{key}/model_id=00003"
    os.remove(f"{folder}/part-000030-000060.parquet")
    kept = os.stat(f"{folder}/part-000000-000030.parquet").st_mtime_ns
    _, again = _requery(plan, specs, chunk_examples=30, models=[0, 3])
    assert np.array_equal(again, whole) and os.stat(f"{folder}/part-000000-000030.parquet").st_mtime_ns == kept


def test_attacks_run_on_a_requeried_set(plan):
    specs = (QuerySpec("clean"), QuerySpec("gaussian", (("n", 5), ("sigma", 0.3))))
    queries, pred = _requery(plan, specs, chunk_examples=90)
    responses = with_queries(load_responses(plan.run), queries, pred)
    scores = run_attack("noise", responses, target=0, shadows=[1, 2, 3, 4])
    assert scores.shape == (90,) and np.isfinite(scores).all()
