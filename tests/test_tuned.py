"""`--tuned` end to end and the leaks around it: best.json's targets/shadows, threshold, held-out figures,
audits with tuned query sets, a model:K target among its shadows, the "auto" variance rule, the FPR in the hash."""

import json

import numpy as np
import pytest

from attacks.audit import AuditOptions, audit_run, open_target
from attacks.registry import attack_with, resolve_settings
from attacks.settings import game_settings
from attacks.stage import AttackOptions, attack_run
from attacks.stats.metrics import fpr_key
from attacks.stats.shadow_game import play
from attacks.tune.trials import tune_attack
from farm.config import from_dict
from farm.content import write_recorded
from farm.errors import ConfigError
from farm.plan import load_plan
from farm.queries import expand_queries
from farm.storage import RunDir, json_bytes
from tests.test_golden import synthetic

FPR = 0.2
TUNED_QUERIES = [{"kind": "clean"}, {"kind": "gaussian", "sigma": 0.1, "n": 3}]


@pytest.fixture(scope="module")
def plan(farms):
    return load_plan(farms.run(*farms.SMALL))


@pytest.fixture(scope="module")
def best(plan):
    return tune_attack(plan.run.uri, attack="noise", num_samples=2, metric="auc", fpr=FPR, n_pseudo=4,
                       max_concurrent=1, verbose=0)


def _best_file(plan):
    return json.loads(plan.run.read_text("tune/noise/best.json"))


def test_best_json_records_its_game_and_held_out_figures(plan, best):
    assert best["target_model_ids"] == [0] and best["shadows"] == list(range(1, 8))
    selection, held_out = best["selection_pseudo_targets"], best["held_out_pseudo_targets"]
    assert len(selection) == len(held_out) == 2 and not set(selection) & set(held_out)
    assert set(selection) | set(held_out) == set(best["pseudo_targets"]) <= set(best["shadows"])
    for row in (best["default"], best["chosen"]):
        assert 0 <= row["held_out"]["auc"] <= 1 and row["held_out"]["score"] == row["held_out"]["auc"]
    assert best["chosen"]["score"] >= best["default"]["score"]  # chosen on the selection half


def test_tuned_refuses_targets_that_were_tuning_shadows(plan, best):
    with pytest.raises(ConfigError, match=r"tuned with model 3 among its shadows.*re-tune with the same --targets"):
        attack_run(plan.run.uri, AttackOptions(attacks=("noise",), targets=(3,), tuned=True, n_pseudo=2,
                                               bootstrap=0), progress=False)
    oracle, _ = open_target(plan.run.uri, "model:3")
    with pytest.raises(ConfigError, match="tuned with model 3 among its shadows"):
        audit_run(plan.run.uri, oracle, target="model:3", options=AuditOptions(attacks=("noise",), tuned=True,
                                                                               n_pseudo=2, bootstrap=0),
                  progress=False)


def test_tuned_attack_applies_the_tuned_threshold_for_its_fpr(plan, best):
    options = dict(attacks=("noise",), tuned=True, n_pseudo=2, bootstrap=0)
    [result] = attack_run(plan.run.uri, AttackOptions(fpr=FPR, **options), progress=False)
    assert result["at_shadow_thresholds"][fpr_key(FPR)]["threshold"] == _best_file(plan)["threshold"]
    assert result["tuned_threshold"].startswith("tuned") and np.isfinite(_best_file(plan)["threshold"])
    [other] = attack_run(plan.run.uri, AttackOptions(fpr=0.05, **options), progress=False)
    assert other["tuned_threshold"].startswith("recomputed") and other["requested_fpr"] == 0.05


def test_settings_hash_includes_the_requested_fpr(plan):
    options = dict(attacks=("gap",), n_pseudo=2, bootstrap=0)
    attack_run(plan.run.uri, AttackOptions(fpr=0.01, **options), progress=False)
    [again] = attack_run(plan.run.uri, AttackOptions(fpr=0.001, **options), progress=False)  # same reported FPRs
    assert again["requested_fpr"] == 0.001


def test_tuned_audit_uses_the_tuned_query_set_and_threshold(plan, best):
    saved = _best_file(plan)
    saved["chosen"]["queries"] = TUNED_QUERIES  # a tuned query set whatever the short search chose
    write_recorded(plan.run, "tune/noise/best.json", json_bytes(saved))  # with its record, as tune writes it
    options = dict(attacks=("noise",), n_pseudo=2, bootstrap=0, fpr=FPR, examples=60)
    plain, _ = open_target(plan.run.uri, "model:0")
    audit_run(plan.run.uri, plain, target="model:0", options=AuditOptions(**options), progress=False)
    tuned, _ = open_target(plan.run.uri, "model:0")
    [result] = audit_run(plan.run.uri, tuned, target="model:0", options=AuditOptions(tuned=True, **options),
                         progress=False)
    assert result["shadow_thresholds"][fpr_key(FPR)] == saved["threshold"]
    assert result["queries"] == TUNED_QUERIES and result["settings"] == saved["chosen"]["settings"]
    n_tuned = len(expand_queries(from_dict({"queries": TUNED_QUERIES}).queries, info=plan.dataset.info,
                                 seed=plan.cfg.seed))
    assert tuned.queries_used == plain.queries_used + 60 * n_tuned  # the target answered the tuned queries


def test_audit_drops_a_model_target_from_its_shadows(plan, capsys):
    oracle, _ = open_target(plan.run.uri, "model:3")
    [result] = audit_run(plan.run.uri, oracle, target="model:3",
                         options=AuditOptions(attacks=("gap",), n_pseudo=2, bootstrap=0), progress=False)
    assert "model 3 is dropped from them" in capsys.readouterr().err
    saved = json.loads(RunDir(plan.run.uri).read_text(f"audit/{__import__('attacks.audit').audit.target_key('model:3')}"
                                                      "/target.json"))
    assert 3 not in saved["shadows"] and result["n_shadows"] == 6


def test_auto_variance_is_one_rule_for_the_target_and_its_pseudo_targets():
    responses = synthetic(m=65, n=40)  # model 0 the target, 64 shadows: its pseudo-targets see 63
    shadows = np.arange(1, 65)
    settings = resolve_settings("calibrated")
    assert settings["global_variance"] == "auto"
    resolved = game_settings(settings, n_shadows=len(shadows))
    assert resolved["global_variance"] is False

    def game(chosen):
        return play(attack_with("calibrated", chosen), responses, targets=[0], shadows=shadows, n_pseudo=4, seed=0,
                    fprs=[0.01])

    per_example = game({**settings, "global_variance": False})
    assert game(resolved).thresholds == per_example.thresholds
    assert game(settings).thresholds != per_example.thresholds  # unresolved: pseudo-targets used the global rule
    np.testing.assert_array_equal(game(resolved).scores, game(settings).scores)  # the target's own rule unchanged


def test_attack_records_the_resolved_variance_rule(plan):
    [result] = attack_run(plan.run.uri, AttackOptions(attacks=("calibrated",), n_pseudo=2, bootstrap=0),
                          progress=False)
    assert result["settings"]["global_variance"] is True  # 7 shadows: global
