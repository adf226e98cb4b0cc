"""The reference pool (`membership.reference`): examples no target trains on, reserved by the config.

They are known non-members of every target: never challenged, scored like the other examples, they give the FPR
the shadow thresholds realize on the target itself and, with `--calibrate nonmembers`, its thresholds, in
`shadowfarm attack` and in the audit of a run's own target (`model:K`).
"""

import math

import numpy as np
import pytest

from attacks.audit import AuditOptions, audit_run
from attacks.audit_checks import split_reference, with_nonmembers
from attacks.oracles.model import ModelOracle
from attacks.report.core import format_table, summary_rows
from attacks.stage import AttackOptions, attack_run
from attacks.stats.shadow_game import GameResult
from farm.config import config_hash, load_config
from farm.errors import ConfigError
from farm.plan import load_plan, plan_run
from farm.storage import RunDir

REFERENCE = "membership.reference=0.25"
ATTACKS = ("gap", "calibrated")
FPR = 0.05


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.LOGITS, REFERENCE)


def test_the_pool_leaves_the_membership_and_old_hashes_unchanged(tmp_path):
    base = load_config(None, ["data.subsample=120", "membership.n_models=8"])
    pooled = load_config(None, ["data.subsample=120", "membership.n_models=8", REFERENCE])
    explicit_zero = load_config(None, ["data.subsample=120", "membership.n_models=8", "membership.reference=0"])
    assert config_hash(explicit_zero) == config_hash(base) != config_hash(pooled)  # runs made before keep their hash
    plain, plan = plan_run(base, str(tmp_path / "a")), plan_run(pooled, str(tmp_path / "b"))
    assert not plain.reference.any() and plan.reference.sum() == 30
    assert np.array_equal(plain.member, plan.member)  # the same matrix: the pool is drawn among the target's OUTs
    assert not plan.member[0, plan.reference].any() and plan.member[1:, plan.reference].any()
    with pytest.raises(ConfigError, match="membership.reference: 0.9 of 120 examples is 108, but only"):
        plan_run(load_config(None, ["data.subsample=120", "membership.n_models=8", "membership.reference=0.9"]),
                 str(tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"membership.reference: expected a value in \[0, 1\)"):
        load_config(None, ["membership.reference=1.5"])


def _attack(run, calibrate):
    options = AttackOptions(attacks=ATTACKS, fpr=FPR, n_pseudo=3, bootstrap=0, calibrate=calibrate)
    return {m["attack"]: m for m in attack_run(run, options, progress=False)}


def test_the_attack_stage_checks_its_thresholds_on_the_pool_and_can_calibrate_on_it(run):
    plan = load_plan(run)
    reference = np.flatnonzero(plan.reference)
    shadow = _attack(run, "shadows")
    scores = RunDir(run).read_table("attacks/gap/scores.parquet").to_pandas()
    assert not np.isin(scores["example_id"], reference).any() and len(scores) == 120 - len(reference)
    for m in shadow.values():
        assert m["known_nonmembers"]["n_nonmembers"] == len(reference) and m["n_challenge_examples"] == 90
        assert m["tuned_threshold"] != "known non-members"
    assert f"FPR realized on {len(reference)} known non-members at the shadow thresholds" in format_table(
        summary_rows(RunDir(run)))
    fixed = _attack(run, "nonmembers")
    for name, m in fixed.items():
        assert m["tuned_threshold"] == "known non-members" and m["settings_hash"] != shadow[name]["settings_hash"]
        assert m["known_nonmembers"] == shadow[name]["known_nonmembers"]  # the check is of the shadow thresholds
        assert m["auc"] == shadow[name]["auc"]  # the scores do not change, only the thresholds
    assert f"chosen on the {len(reference)} known non-members" in format_table(summary_rows(RunDir(run)))


def test_split_reference_keeps_the_challenge_and_calibrates_on_the_pool():
    rng = np.random.default_rng(0)
    reference = np.zeros(50, bool)
    reference[rng.choice(50, 20, replace=False)] = True
    scores, member = rng.random(100), rng.random(100) < 0.5  # two targets, 50 examples each
    game = GameResult(scores=scores, member=member, thresholds={"0.05": 0.0, "balanced_accuracy": 0.5})
    kept, known = split_reference(game, reference, 2)
    assert np.array_equal(kept.examples, np.flatnonzero(~reference)) and len(kept.scores) == 60
    assert np.array_equal(known, np.concatenate([scores[:50][reference], scores[50:][reference]]))
    thresholds, check = with_nonmembers(game.thresholds, known, requested=0.05, fprs=[0.05], calibrate="nonmembers")
    assert check["at_thresholds"]["0.05"]["false_positives"] == 40 and check["exceeds"]  # threshold 0 flags all
    assert (known >= thresholds["0.05"]).sum() == math.floor(0.05 * 40) and thresholds["balanced_accuracy"] == 0.5


def test_an_audit_of_the_runs_own_target_uses_the_pool(run):
    plan = load_plan(run)
    members = tuple(np.flatnonzero(plan.member[0]).tolist())
    options = AuditOptions(attacks=ATTACKS, members=members, fpr=FPR, n_pseudo=3, bootstrap=0)
    oracle = ModelOracle.from_run(run, 0)
    results = audit_run(run, oracle, target="model:0", options=options, progress=False)
    assert all(r["known_nonmembers"]["n_nonmembers"] == 30 and r["n_examples"] == 90 for r in results)
    other = audit_run(run, ModelOracle.from_run(run, 1), target="model:1", options=options, progress=False)
    assert all(r["known_nonmembers"] is None for r in other)  # model 1 is a shadow: it trains on the pool


def test_a_pool_is_needed_where_it_is_asked_for(farms):
    bare = farms.shared(*farms.LOGITS)
    with pytest.raises(ConfigError, match="--nonmembers reference: this run reserves no reference pool"):
        audit_run(bare, ModelOracle.from_run(bare, 0), target="model:0",
                  options=AuditOptions(attacks=("gap",), nonmembers="reference"), progress=False)
    with pytest.raises(ConfigError, match="--calibrate nonmembers: 0 known non-members"):
        attack_run(bare, AttackOptions(attacks=("gap",), calibrate="nonmembers"), progress=False)
