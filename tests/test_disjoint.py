"""Classic disjoint runs (Shokri et al.) end to end: attack -> report, audit, and what the shadow game may read.

A tiny disjoint farm: target 0 trains on 30% of the target pool, the 9 shadows on 30% of the shadow pool each
(p_in 0.3: with few shadows, every shadow-pool example keeps an OUT shadow for the offline test).
"""

import json

import numpy as np
import pandas as pd
import pytest

from attacks.audit import AuditOptions, audit_run, open_target
from attacks.modes import split_targets
from attacks.registry import attack_with
from attacks.report.core import format_table, summary_rows
from attacks.report.page import write_report
from attacks.responses import Responses
from attacks.settings import mode_settings
from attacks.stage import AttackOptions, attack_run
from attacks.stats.lira import collect_fallbacks
from attacks.stats.shadow_game import play
from farm.config import MembershipConfig
from farm.errors import ConfigError
from farm.plan import load_plan
from farm.shards import MEMBERSHIP, membership_matrix, membership_table
from farm.storage import RunDir

FAST = dict(n_pseudo=3, bootstrap=0)
FITTED = ("gap", "augmentation", "noise", "calibrated", "confidence_classifier", "lira_confidence")


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.DISJOINT)


@pytest.fixture(scope="module")
def attacked(run):
    return {r["attack"]: r for r in attack_run(run, AttackOptions(**FAST), progress=False)}


def test_attack_then_report_on_a_disjoint_run(run, attacked):
    pool = load_plan(run).target_pool
    assert {"gap", "noise", "calibrated", "augmentation", "confidence_classifier"} <= set(attacked)
    assert attacked["calibrated"]["settings"]["variant"] == "offline"
    assert attacked["calibrated"]["auto_settings"]["variant"] == "offline"
    assert attacked["lira_confidence"]["settings"]["variant"] == "offline"
    for name, metrics in attacked.items():
        if "skipped" in metrics:
            continue
        assert metrics["membership_mode"] == "disjoint" and metrics["challenge_set"] == "target pool"
        assert metrics["n_members"] + metrics["n_nonmembers"] == pool.sum()
        scores = pd.read_parquet(f"{run}/attacks/{name}/scores.parquet")
        assert sorted(scores["example_id"]) == np.flatnonzero(pool).tolist()  # every target-pool example, only
        assert scores["score"].notna().all()
        saved = json.loads(RunDir(run).read_text(f"attacks/{name}/metrics.json"))
        assert saved["membership_mode"] == "disjoint"
    html = open(write_report(RunDir(run))).read()
    assert "Membership mode: <b>disjoint</b>" in html and "target pool" in html
    assert "offline variant of calibrated" in html


def test_the_overfit_signal_is_recovered(attacked):
    assert attacked["gap"]["auc"] > 0.6, attacked["gap"]["auc"]
    assert attacked["calibrated"]["auc"] > 0.6, attacked["calibrated"]["auc"]


def test_a_change_of_the_targets_membership_changes_no_threshold(run, attacked):
    run_dir = RunDir(run)
    original = run_dir.read_bytes(MEMBERSHIP)
    member, pool = membership_matrix(run_dir.read_table(MEMBERSHIP))
    inside = np.flatnonzero(pool)
    member[0, inside] = np.random.default_rng(3).permutation(member[0, inside])
    run_dir.write_table(MEMBERSHIP, membership_table(member, pool))
    try:
        after = {r["attack"]: r for r in attack_run(run, AttackOptions(attacks=FITTED, **FAST), progress=False)}
    finally:
        run_dir.write_bytes(MEMBERSHIP, original)
    for name in FITTED:
        assert _thresholds(after[name]) == _thresholds(attacked[name]), name


def _thresholds(metrics):
    """The thresholds an attack applied to its targets (None: +-inf), as metrics.json records them."""
    return {key: point["threshold"] for key, point in metrics["at_shadow_thresholds"].items()}


def _synthetic(seed=0, m=8, n=80, c=3):
    """A disjoint game: model 0 is the target on the first half (its pool), models 1.. shadows on the second."""
    rng = np.random.default_rng(seed)
    pool = np.arange(n) < n // 2
    member = np.zeros((m, n), bool)
    for k in range(m):
        side = np.flatnonzero(pool if k == 0 else ~pool)
        member[k, rng.permutation(side)[: len(side) // 2]] = True
    labels = rng.integers(0, c, n)
    kinds = ("clean",) + ("translate",) * 3 + ("gaussian",) * 6
    ok = rng.random((m, n, len(kinds))) < np.where(member, 0.9, 0.55)[..., None]
    pred = np.where(ok, labels[None, :, None], (labels[None, :, None] + 1) % c).astype(np.int16)
    logits = rng.normal(size=(m, n, c)).astype(np.float32)
    logits[np.arange(m)[:, None], np.arange(n)[None, :], labels[None, :]] += np.where(member, 2.5, 0.5)
    return Responses(member=member, pred=pred, labels=labels.astype(np.int64), query_kinds=kinds,
                     query_params=tuple({} for _ in kinds), logits=logits), pool


@pytest.mark.parametrize("name,settings", [("gap", None), ("noise", None), ("augmentation", None),
                                           ("calibrated", {"variant": "offline"}),
                                           ("confidence_classifier", {"variant": "per_class"})])
def test_thresholds_read_only_shadow_pool_rows(name, settings):
    responses, pool = _synthetic()
    game = play(attack_with(name, settings), responses, targets=[0], shadows=np.arange(1, 8), n_pseudo=3, seed=0,
                fprs=[0.01, 0.1], target_pool=pool)
    assert len(game.scores) == pool.sum() and game.examples.tolist() == np.flatnonzero(pool).tolist()
    assert game.member.tolist() == responses.member[0, pool].tolist()
    assert game.scores[game.member].mean() > game.scores[~game.member].mean()
    # Every target-pool row of every model replaced, the target's membership flipped: no threshold moves.
    changed_pred, changed_logits = responses.pred.copy(), responses.logits.copy()
    changed_pred[:, pool] = np.random.default_rng(9).integers(0, 3, changed_pred[:, pool].shape)
    changed_logits[:, pool] = np.random.default_rng(9).normal(size=changed_logits[:, pool].shape)
    member = responses.member.copy()
    member[0, pool] = ~member[0, pool]
    other = Responses(member=member, pred=changed_pred, labels=responses.labels, query_kinds=responses.query_kinds,
                      query_params=responses.query_params, logits=changed_logits)
    again = play(attack_with(name, settings), other, targets=[0], shadows=np.arange(1, 8), n_pseudo=3, seed=0,
                 fprs=[0.01, 0.1], target_pool=pool)
    assert again.thresholds == game.thresholds


def test_per_class_attack_models_fit_one_classifier_per_class():
    responses, pool = _synthetic(seed=1)
    pooled = attack_with("confidence_classifier", None)(responses.fitting_on(np.flatnonzero(~pool)), target=0,
                                                        shadows=np.arange(1, 8))
    per_class = attack_with("confidence_classifier", {"variant": "per_class"})(
        responses.fitting_on(np.flatnonzero(~pool)), target=0, shadows=np.arange(1, 8))
    assert not np.allclose(pooled, per_class)
    member = responses.member[0, pool]
    assert per_class[pool][member].mean() > per_class[pool][~member].mean()


def test_asked_for_online_calibration_is_a_one_line_error(run):
    for name, variant in (("calibrated", "online"), ("lira_confidence", "online"), ("boundary", "calibrated")):
        with pytest.raises(ConfigError, match=f"attack '{name}': variant '{variant}' needs IN shadows") as error:
            attack_run(run, AttackOptions(attacks=(name,), settings={name: {"variant": variant}}, **FAST),
                       progress=False)
        assert "\n" not in str(error.value)
    assert mode_settings("calibrated", {"variant": "online"}, "lira") == ({"variant": "online"}, None)


def test_targets_and_shadows_of_a_disjoint_run():
    membership = MembershipConfig(mode="disjoint", n_models=8, target_ids=(0, 1))
    assert split_targets(membership, (1,), modes=("lira", "disjoint"))[1].tolist() == [2, 3, 4, 5, 6, 7]
    with pytest.raises(ConfigError, match="model 3 is a shadow"):
        split_targets(membership, (3,), modes=("lira", "disjoint"))
    with pytest.raises(ConfigError, match="supports lira runs, not 'disjoint'"):
        split_targets(membership)  # tuning and the studies: lira runs only


def test_audit_of_a_disjoint_run_scores_the_target_pool_as_the_attack_stage(run, attacked):
    plan = load_plan(run)
    member, _ = membership_matrix(RunDir(run).read_table(MEMBERSHIP))
    oracle, _ = open_target(run, "model:0")
    results = {r["attack"]: r for r in audit_run(
        run, oracle, target="model:0", options=AuditOptions(attacks=("gap", "noise", "calibrated"), members=tuple(
            np.flatnonzero(member[0]).tolist()), **FAST), progress=False)}
    for name in ("gap", "noise", "calibrated"):
        assert results[name]["membership_mode"] == "disjoint"
        assert results[name]["n_examples"] == plan.target_pool.sum()
        audited = {k: v if np.isfinite(v) else None for k, v in results[name]["shadow_thresholds"].items()}
        assert audited == _thresholds(attacked[name])
        assert results[name]["auc"] == pytest.approx(attacked[name]["auc"])
    shadow_oracle, _ = open_target(run, "model:1")
    with pytest.raises(ConfigError, match="model 0 is a target model of this disjoint run"):
        audit_run(run, shadow_oracle, target="model:1", options=AuditOptions(shadows=(0, 2, 3, 4), **FAST),
                  progress=False)
    with pytest.raises(ConfigError, match="attack 'transfer' cannot run in an audit of a disjoint run"):
        audit_run(run, oracle, target="model:0", options=AuditOptions(attacks=("transfer",), **FAST), progress=False)


def test_an_example_with_no_out_shadow_is_scored_against_the_pooled_fit_and_counted():
    """A disjoint run's shadow game can hold a shadow-pool example on which every other shadow trained (16 models:
    `1 examples have no OUT shadow` sank calibrated, lira_confidence, gradient_norm and stolen_memories)."""
    responses, pool = _synthetic(seed=2)
    member = responses.member.copy()
    lonely = np.flatnonzero(~pool)[0]
    member[1:, lonely] = True
    responses = Responses(member=member, pred=responses.pred, labels=responses.labels, logits=responses.logits,
                          query_kinds=responses.query_kinds, query_params=responses.query_params)
    for name in ("calibrated", "lira_confidence"):
        with collect_fallbacks() as found:
            game = play(attack_with(name, {"variant": "offline"}), responses, targets=[0], shadows=np.arange(1, 8),
                        n_pseudo=3, seed=0, fprs=[0.01], target_pool=pool)
        assert np.isfinite(game.scores).all() and len(game.scores) == pool.sum()
        assert found and {f.side for f in found} == {"OUT"}  # counted in each scoring that fell back
        with pytest.raises(ConfigError, match="1 examples have no OUT shadow"):
            play(attack_with(name, {"variant": "offline", "empty": "error"}), responses, targets=[0],
                 shadows=np.arange(1, 8), n_pseudo=3, seed=0, fprs=[0.01], target_pool=pool)


def test_the_attack_stage_reports_the_examples_it_scored_against_the_pooled_fit(farms):
    run = farms.run(*farms.DISJOINT)
    member, target_pool = membership_matrix(RunDir(run).read_table(MEMBERSHIP))
    member[1:, np.flatnonzero(~target_pool)[0]] = True  # one shadow-pool example that every shadow trained on
    RunDir(run).write_table(MEMBERSHIP, membership_table(member, target_pool))
    names = ("calibrated", "lira_confidence", "gradient_norm", "stolen_memories")
    results = {r["attack"]: r for r in attack_run(run, AttackOptions(attacks=names, **FAST), progress=False)}
    for name in names:
        assert results[name]["calibration_fallback"]["OUT"]["examples"] == 1, name
    lines = [line for line in format_table(summary_rows(RunDir(run))).splitlines() if "no OUT shadow" in line]
    assert len(lines) == len(names) and all("scored against the pooled distribution" in line for line in lines)
