"""`fixed_direction` (DHAttack): the walk toward a fixed point as a query kind, the first wrong step, its
per-example calibration, the attack stage and an audit over HTTP (v2) with a budget."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.audit import AuditOptions, audit_run, open_target, target_key
from attacks.compute.requery import requery
from attacks.methods.fixed_direction import first_wrong_step
from attacks.oracles.http_client import RECHECK, HttpSettings
from attacks.oracles.model import ModelOracle
from attacks.oracles.server import LabelServer
from attacks.stage import AttackOptions, attack_run
from farm.config import QuerySpec
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.plan import load_plan
from farm.queries import apply_query, expand_queries

NAME = "fixed_direction"
FAST = dict(n_pseudo=2, bootstrap=0)
INFO = DatasetInfo(name="t", kind="tabular", shape=(3,), num_classes=2, bounds=(0.0, 1.0))


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.SMALL)


def test_the_walk_steps_toward_the_point_and_stops_short_of_it():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    queries = expand_queries([QuerySpec("toward", (("point", "mean"), ("steps", 3)))], info=INFO, seed=0)
    assert [q.params["step"] for q in queries] == [1, 2, 3]
    walked = [apply_query(q, x, info=INFO) for q in queries]
    torch.testing.assert_close(walked[1], torch.tensor([[0.25, 0.25, 0.0], [0.75, 0.75, 0.0]]))  # halfway
    gray = expand_queries([QuerySpec("toward", (("point", 1.0), ("steps", 1)))], info=INFO, seed=0)[0]
    torch.testing.assert_close(apply_query(gray, x, info=INFO), torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 0.5]]))
    with pytest.raises(ConfigError, match=r"parameter 'point' must be 'mean' or a number in \[0.0, 1.0\]"):
        expand_queries([QuerySpec("toward", (("point", 2.0), ("steps", 3)))], info=INFO, seed=0)


def test_first_wrong_step_golden():
    pred = np.array([[[1, 1, 0], [2, 2, 2], [0, 2, 2]], [[-1, -1, -1]] * 3])  # 2 models, 3 examples, K = 3
    first = first_wrong_step(pred, np.array([1, 2, 2]))
    np.testing.assert_array_equal(first[0], [3.0, 4.0, 1.0])  # wrong at step 3; never (K + 1); at once
    assert np.isnan(first[1]).all()  # never asked


def test_the_walk_answers_do_not_depend_on_chunking(run):
    plan = load_plan(run)
    data = plan.dataset
    walk = [QuerySpec("toward", (("point", "mean"), ("steps", 5)))]
    answers = [requery(plan.run, specs=walk, info=data.info, x=data.x, labels=data.y, models=[0, 3], n_models=8,
                       seed=0, chunk_examples=chunk, local=True, progress=False)[1] for chunk in (7, 4096)]
    np.testing.assert_array_equal(*answers)
    assert (answers[0][[0, 3]] >= 0).all() and (answers[0][[1, 2]] == -1).all()


def test_the_attack_gives_a_graded_score_and_counts_its_queries(run):
    [result] = attack_run(run, AttackOptions(attacks=(NAME,), settings={NAME: {"steps": 6}}, **FAST), progress=False)
    metrics = json.loads(Path(run, "attacks", NAME, "metrics.json").read_text())
    assert metrics["queries_per_example"] == result["queries_per_example"] == 6
    scores = pd.read_parquet(f"{run}/attacks/{NAME}/scores.parquet")["score"]
    assert scores.nunique() > 2  # a ROC with more than two points: per-example calibration grades the steps
    with pytest.raises(ConfigError, match=r"steps must be an integer in \[5, 30\], got 4"):
        attack_run(run, AttackOptions(attacks=(NAME,), settings={NAME: {"steps": 4}}, **FAST), progress=False)


def test_a_v2_audit_with_a_budget_sends_steps_queries_per_example_and_scores_as_in_process(run):
    """The journal grows by exactly queries_per_example x examples (the run's query set answered before; a reused
    journal's first call re-asks RECHECK journaled rows), the budget, set to exactly that, holds, and the scores
    equal the in-process audit's and `shadowfarm attack`'s for the same model."""
    settings = {NAME: {"steps": 5}}
    server = LabelServer(ModelOracle.from_run(run, 0), model_name="m0").start()
    v2 = HttpSettings(batch_size=100, concurrency=2, backoff=0.0, retries=1, protocol="v2")
    try:
        oracle, name = open_target(run, server.v2_url, http=v2)
        audit_run(run, oracle, target=name, options=AuditOptions(attacks=("gap",), **FAST), progress=False)
        before = oracle.queries_used
        oracle, name = open_target(run, server.v2_url, http=v2, budget=before + RECHECK + 5 * 120)
        [over_http] = audit_run(run, oracle, target=name, options=AuditOptions(attacks=(NAME,), settings=settings,
                                                                              **FAST), progress=False)
    finally:
        server.stop()
    spent = oracle.queries_used - before - oracle.rechecked
    assert oracle.rechecked == RECHECK and spent == over_http["queries_per_example"] * over_http["n_examples"] == 600
    direct, _ = open_target(run, "model:0")
    audit_run(run, direct, target="model:0", options=AuditOptions(attacks=(NAME,), settings=settings, **FAST),
              progress=False)
    a = pd.read_parquet(f"{run}/audit/{target_key(name)}/{NAME}/scores.parquet")
    b = pd.read_parquet(f"{run}/audit/{target_key('model:0')}/{NAME}/scores.parquet")
    np.testing.assert_array_equal(a["score"], b["score"])
    attack_run(run, AttackOptions(attacks=(NAME,), settings=settings, targets=(0,), **FAST), progress=False)
    np.testing.assert_array_equal(a["score"], pd.read_parquet(f"{run}/attacks/{NAME}/scores.parquet")["score"])
