"""The transfer attack (Li & Zhang, Label-Leaks §4): transfer models trained on the attacker's data relabelled by
the target's clean labels, scored at the ground-truth label; in_out (default), threshold and calibrated variants."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from attacks.compute.statistics import prepare_statistics
from attacks.compute.transfer import model_groups, transfer_statistic
from attacks.loader import load_responses
from attacks.methods.transfer import SPLIT
from attacks.registry import resolve_settings, run_attack
from farm.errors import ConfigError
from farm.plan import load_plan

# An overfit target: 3 classes of 30 noisy features, ~40 training points each, an MLP that fits them perfectly.
OVERFIT = ["data.name=synthetic", "data.synthetic.n_examples=80", "data.synthetic.n_features=30",
           "data.synthetic.n_classes=3", "data.synthetic.separation=0.25", "membership.n_models=6",
           "model.hidden=[64]", "train.epochs=30", "train.lr=0.02", "train.batch_size=16", "farm.group_size=8",
           "queries=[clean]"]


@pytest.fixture(scope="module")
def overfit(farms):
    plan = load_plan(farms.run(*OVERFIT))
    return plan, load_responses(plan.run)


def _statistic(plan, responses, models, **settings):
    chosen = resolve_settings("transfer", settings)
    return transfer_statistic(responses, cfg=plan.cfg, info=plan.dataset.info, x=plan.dataset.x, models=models,
                              n_models=chosen["n_models"], score=chosen["score"], seed=0,
                              split=chosen["variant"] in SPLIT, local=True)


def _auc(responses, scores, target=0):
    return roc_auc_score(responses.member[target], scores)


def test_overfit_target_transfer_beats_chance_and_the_default_scores_at_least_gap(overfit):
    plan, responses = overfit
    clean = responses.pred[:, :, responses.queries_of("clean")[0]]
    member = responses.member
    train_acc = (clean == responses.labels)[member].mean()
    test_acc = (clean == responses.labels)[~member].mean()
    assert train_acc > 0.97 and test_acc < 0.8, (train_acc, test_acc)  # the target overfits
    shadows = np.arange(1, responses.n_models)
    threshold = _auc(responses, _statistic(plan, responses, [0], variant="threshold")[0])
    assert threshold > 0.6, threshold
    assert resolve_settings("transfer", {})["variant"] == "in_out"
    # The default (IN/OUT transfer models, no shadows read): only the target's transfer models are needed.
    stat = _statistic(plan, responses, [0])
    scores = run_attack("transfer", responses.with_statistic("transfer", stat), target=0, shadows=shadows)
    gap = _auc(responses, run_attack("gap", responses, target=0, shadows=shadows))
    assert _auc(responses, scores) > 0.65 and _auc(responses, scores) >= gap - 0.01, (_auc(responses, scores), gap)


def test_in_out_statistic_is_the_gain_from_training_on_the_example(overfit):
    plan, responses = overfit
    stat = _statistic(plan, responses, [0], n_models=2)[0]
    members, others = responses.member[0], ~responses.member[0]
    clean = responses.pred[0, :, responses.queries_of("clean")[0]]
    wrong = clean != responses.labels  # fitting the target's wrong label lowers the true label's loss
    assert stat[members].mean() > stat[others & ~wrong].mean() > stat[wrong].mean()
    with pytest.raises(ConfigError, match="n_models must be an integer >= 2"):
        _statistic(plan, responses, [0], n_models=1)


def test_scores_read_only_the_targets_clean_labels_and_the_true_labels(overfit):
    plan, responses = overfit
    base = _statistic(plan, responses, [0], n_models=2)[0]
    rng = np.random.default_rng(0)
    other_member = responses.member.copy()
    other_member[0] = ~other_member[0]
    other_logits = None if responses.logits is None else rng.normal(size=responses.logits.shape).astype(np.float32)
    blind = replace(responses, member=other_member, logits=other_logits)
    np.testing.assert_array_equal(_statistic(plan, blind, [0], n_models=2)[0], base)
    relabelled = replace(responses, labels=(responses.labels + 1) % plan.dataset.info.num_classes)
    assert not np.allclose(_statistic(plan, relabelled, [0], n_models=2)[0], base)
    other_pred = responses.pred.copy()
    other_pred[0] = (other_pred[0] + 1) % plan.dataset.info.num_classes
    assert not np.allclose(_statistic(plan, replace(responses, pred=other_pred), [0], n_models=2)[0], base)


def test_grouping_does_not_change_a_models_statistic(overfit):
    plan, responses = overfit
    together = _statistic(plan, responses, [0, 1, 2], n_models=2)
    alone = _statistic(plan, responses, [1], n_models=2)
    np.testing.assert_allclose(together[1], alone[1], rtol=1e-4, atol=1e-5)
    assert np.isnan(together[3:]).all()
    assert model_groups(range(5), n_models=4, group_size=16) == [[0, 1, 2], [3, 4]]


def test_calibrated_variant_runs_on_every_shadows_statistic(overfit):
    plan, responses = overfit
    settings = resolve_settings("transfer", {"variant": "calibrated", "n_models": 1, "score": "confidence"})
    shadows = list(range(1, responses.n_models))
    prepared = prepare_statistics(plan, responses, {"transfer": settings}, scored=[0, 1], everyone=shadows,
                                  seed=0, local=True)
    assert not np.isnan(prepared.statistics["transfer"]).any()
    scores = run_attack("transfer", prepared, target=0, shadows=shadows, settings=settings)
    assert np.isfinite(scores).all() and _auc(prepared, scores) > 0.6
    threshold_only = prepare_statistics(plan, responses, {"transfer": {**settings, "variant": "threshold"}},
                                        scored=[0], everyone=shadows, seed=0, local=True)
    with pytest.raises(ConfigError, match="every shadow"):
        run_attack("transfer", threshold_only, target=0, shadows=shadows, settings=settings)


def test_bad_settings_name_the_field(overfit):
    plan, responses = overfit
    with pytest.raises(ConfigError, match="score"):
        _statistic(plan, responses, [0], score="nope")
    with pytest.raises(ConfigError, match="n_models"):
        _statistic(plan, responses, [0], n_models=0)
    stat = responses.with_statistic("transfer", np.zeros(responses.member.shape))
    with pytest.raises(ConfigError, match="variant"):
        run_attack("transfer", stat, target=0, shadows=[1, 2], settings={"variant": "nope"})
