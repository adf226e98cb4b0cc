"""Same seed => identical results: two farms trained apart, with other group sizes, give bit-identical
membership, weights, responses, boundary distances and attack scores for every attack.

Also pinned here, where it does NOT hold bit for bit (docs/reliability.md, "Determinism"):
dropout masks come from torch's global RNG seeded by the group, so with `model.dropout > 0` a model's
weights depend on the group it was trained in (still reproducible for the same grouping). DP-SGD
draws its Poisson batches and noise from generators seeded per model, so it does not depend on the group.
Elsewhere (tests/test_defenses_train.py, tests/test_hsja.py, tests/test_boundary.py): a model trained alone
(a group of one runs the per-model loop) matches its vmapped twin to float rounding only; HopSkipJump does not
depend on batching or chunking.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.compute.boundary import HsjaSettings, boundary_distances
from attacks.registry import ATTACKS
from attacks.stage import AttackOptions, attack_run
from farm.config import load_config, model_seed
from farm.data import load_dataset
from farm.driver import train_farm
from farm.membership import lira_membership
from farm.plan import load_plan, plan_run
from farm.shards import load_weights, model_dir
from farm.train import steps_per_epoch, train_group

N_MODELS, N_EXAMPLES = 8, 120  # the session's canonical farm with logits (tests/conftest.py Farms.LOGITS)
HSJA = {"max_iter": 2, "init_evals": 10, "max_evals": 40, "budget": 300}
OPTIONS = AttackOptions(attacks=tuple(ATTACKS), targets=(0, 1), n_pseudo=2, bootstrap=5,
                        settings={"boundary": HSJA, "transfer": {"n_models": 2}})


@pytest.fixture(scope="module")
def two_farms(farms, tmp_path_factory):
    """The same config trained twice, into two directories: the session's LOGITS farm (groups of 4), and the
    same trained again in groups of 2."""
    again = plan_run(load_config(None, [*farms.LOGITS, "farm.group_size=2"]),
                     str(tmp_path_factory.mktemp("determinism") / "groups-of-2"))
    train_farm(again, progress=False)
    return [load_plan(farms.run(*farms.LOGITS)), again]


def test_two_farms_same_seed_identical_membership_weights_and_responses(two_farms):
    a, b = (plan.run for plan in two_farms)
    for rel in ("membership.parquet", "queries.parquet"):
        assert a.read_bytes(rel) == b.read_bytes(rel), rel
    for m in range(N_MODELS):
        wa, wb = load_weights(a, m), load_weights(b, m)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), m
        rel = f"{model_dir(m)}/responses.parquet"
        assert a.read_table(rel).equals(b.read_table(rel)), rel  # labels, pred and logits, bit for bit


def test_boundary_distances_identical_across_two_farms(two_farms):
    settings = HsjaSettings(**HSJA, seed=5)
    got = [boundary_distances(plan.run, x=plan.dataset.x, labels=plan.dataset.y, bounds=plan.dataset.info.bounds,
                              models=[0, 3], n_models=N_MODELS, settings=settings, chunk_examples=50, progress=False)
           for plan in two_farms]
    assert np.isfinite(got[0][[0, 3]]).all()
    assert np.array_equal(got[0], got[1], equal_nan=True)


def _metrics_without_timing(run, name: str) -> dict:
    metrics = run.read_json(f"attacks/{name}/metrics.json")
    metrics.pop("seconds")
    return metrics


def test_every_attack_writes_scores_and_metrics_identically_on_two_farms(two_farms):
    """Label-only attacks (incl. transfer's relabelled models and boundary's HopSkipJump) and the baselines."""
    for plan in two_farms:
        results = attack_run(plan.run.uri, OPTIONS, progress=False)
        assert [r["attack"] for r in results if "skipped" not in r] == list(ATTACKS)
    a, b = (plan.run for plan in two_farms)
    n_queries = len(pd.read_parquet(a.path("queries.parquet")))
    for name in ATTACKS:
        rel = f"attacks/{name}/scores.parquet"
        scores_a, scores_b = pd.read_parquet(a.path(rel)), pd.read_parquet(b.path(rel))
        assert list(scores_a.columns) == ["target_model_id", "example_id", "member", "score"], name
        assert len(scores_a) == 2 * N_EXAMPLES and scores_a["score"].notna().all(), name
        metrics = a.read_json(f"attacks/{name}/metrics.json")
        assert 0 <= metrics["auc"] <= 1 and metrics["n_members"] + metrics["n_nonmembers"] == 2 * N_EXAMPLES
        assert 0 <= metrics["auc_ci"][0] <= metrics["auc_ci"][1] <= 1, name  # a percentile interval (bootstrap)
        assert set(metrics["tpr_at_fpr"]) == {"0.001", "0.01"}, name
        if not ATTACKS[name].explicit_only:  # the run's query set as expanded, asked once for all attacks
            assert metrics["run_queries_per_example"] == n_queries, name
        pd.testing.assert_frame_equal(scores_a, scores_b, check_exact=True, obj=name)
        assert json.dumps(_metrics_without_timing(a, name), sort_keys=True) == \
            json.dumps(_metrics_without_timing(b, name), sort_keys=True), name


# ---------------------------------------------------------------- where the group matters, and where it does not


@pytest.fixture(scope="module")
def digits():
    data = load_dataset(load_config(None, ["data.subsample=120"]).data, seed=0)
    return data, torch.tensor(data.x), torch.tensor(data.y)


def _group(digits, overrides, ids):
    """Train models `ids` of a 4-model run as one group; the steps per epoch come from the whole run."""
    data, x, y = digits
    cfg = load_config(None, ["train.epochs=2", "train.batch_size=32", "model.hidden=[16]", "train.lr=0.01",
                             *overrides])
    member = lira_membership(n_models=4, n_examples=len(data), p_in=0.5, seed=0)
    group = train_group(model_cfg=cfg.model, train_cfg=cfg.train, info=data.info, x=x, y=y, member=member[ids],
                        seeds=[model_seed(0, m) for m in ids],
                        n_steps_per_epoch=steps_per_epoch(member, cfg.train.batch_size))
    return dict(zip(ids, group.state_dicts, strict=True))


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_without_dropout_a_model_does_not_depend_on_its_group(digits):
    whole, half = _group(digits, [], [0, 1, 2, 3]), _group(digits, [], [2, 3])
    assert _same(whole[2], half[2]) and _same(whole[3], half[3])


def test_with_dropout_a_model_depends_on_its_group_but_a_rerun_does_not(digits):
    whole, again, half = (_group(digits, ["model.dropout=0.5"], ids) for ids in ([0, 1, 2, 3], [0, 1, 2, 3], [2, 3]))
    assert all(_same(whole[m], again[m]) for m in range(4))
    assert not _same(whole[2], half[2])


def test_dp_sgd_does_not_depend_on_the_group(digits):
    overrides = ["train.dp_sgd={epsilon: 8, accountant: rdp}", "train.epochs=1"]
    pair, alone = _group(digits, overrides, [1, 2]), _group(digits, overrides, [2])
    assert _same(pair[2], alone[2])
