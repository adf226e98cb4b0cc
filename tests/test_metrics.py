"""Metrics: golden values against scikit-learn and hand-made examples; shadow-chosen thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as sk

from attacks.stats import metrics


def _random_set(n: int, *, seed: int, ties: bool = False, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    member = rng.random(n) < 0.5
    scores = rng.normal(size=n) + shift * member
    return (np.round(scores, 1) if ties else scores), member


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_roc_match_sklearn(seed, ties):
    scores, member = _random_set(500, seed=seed, ties=ties)
    assert metrics.auc(scores, member) == pytest.approx(sk.roc_auc_score(member, scores), abs=1e-12)
    fpr, tpr, thresholds = metrics.roc_curve(scores, member)
    sk_fpr, sk_tpr, _ = sk.roc_curve(member, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert thresholds[0] == np.inf and np.all(np.diff(thresholds) < 0)


def test_tpr_at_fpr_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    member = np.array([True, False, True, True, False, False, True, False])
    exact = metrics.tpr_at_fpr(scores, member, fpr=0.0)
    assert (exact.tpr, exact.fpr, exact.threshold) == (0.25, 0.0, 0.9)
    quarter = metrics.tpr_at_fpr(scores, member, fpr=0.25)
    assert (quarter.tpr, quarter.fpr, quarter.threshold) == (0.75, 0.25, 0.6)
    assert quarter.n_nonmembers == 4 and quarter.false_positives_allowed == 1
    low = metrics.tpr_at_fpr(scores, member, fpr=0.1)  # 0.1 * 4 < 1: rests on zero false positives
    assert (low.tpr, low.false_positives_allowed) == (0.25, 0)
    assert metrics.tpr_at_fpr(scores, member, fpr=1.0).tpr == 1.0


def test_tied_scores_are_never_split():
    scores, member = np.array([1.0, 1.0, 0.0]), np.array([True, False, False])
    point = metrics.tpr_at_fpr(scores, member, fpr=0.0)
    assert (point.tpr, point.threshold) == (0.0, np.inf)
    assert metrics.threshold_at_fpr(scores, member, fpr=0.0) == np.inf


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.1])
def test_threshold_at_fpr_realizes_at_most_the_requested_fpr_on_shadows(fpr):
    shadow_scores, shadow_member = _random_set(20_000, seed=3)
    threshold = metrics.threshold_at_fpr(shadow_scores, shadow_member, fpr=fpr)
    realized, _ = metrics.rates_at_threshold(shadow_scores, shadow_member, threshold=threshold)
    assert realized <= fpr
    # ... and it is the loosest such threshold: admitting the next lower score would exceed fpr.
    next_lower = shadow_scores[shadow_scores < threshold].max()
    assert metrics.rates_at_threshold(shadow_scores, shadow_member, threshold=next_lower)[0] > fpr
    # Transferred to a fresh target from the same distribution, it lands near the request.
    target_scores, target_member = _random_set(20_000, seed=4)
    transferred, _ = metrics.rates_at_threshold(target_scores, target_member, threshold=threshold)
    assert transferred <= 2 * fpr + 0.002


def test_balanced_accuracy_threshold_from_shadows():
    scores, member = _random_set(2000, seed=5, ties=True)
    threshold = metrics.threshold_at_best_balanced_accuracy(scores, member)
    best = metrics.balanced_accuracy(scores, member, threshold=threshold)
    assert best == pytest.approx(metrics.oracle_balanced_accuracy(scores, member))
    fpr, tpr = metrics.rates_at_threshold(scores, member, threshold=threshold)
    assert best == pytest.approx(0.5 * (tpr + 1 - fpr))
    for other in np.quantile(scores, [0.1, 0.3, 0.5, 0.7, 0.9]):
        assert metrics.balanced_accuracy(scores, member, threshold=other) <= best + 1e-12


def test_evaluate_uses_shadow_thresholds():
    shadow = _random_set(4000, seed=6)
    scores, member = _random_set(1000, seed=7)
    thresholds = metrics.shadow_thresholds(*shadow)
    assert set(thresholds) == {"balanced_accuracy", "0.001", "0.01"}
    result = metrics.evaluate(scores, member, thresholds=thresholds)
    json.dumps(result, allow_nan=False)
    chosen = result["at_shadow_thresholds"]["balanced_accuracy"]
    assert chosen["threshold"] == thresholds["balanced_accuracy"]
    assert result["balanced_accuracy"] == pytest.approx(
        metrics.balanced_accuracy(scores, member, threshold=thresholds["balanced_accuracy"]))
    assert result["advantage"] == pytest.approx(2 * result["balanced_accuracy"] - 1)
    assert result["balanced_accuracy"] <= result["oracle_balanced_accuracy"]
    assert result["auc"] == pytest.approx(sk.roc_auc_score(member, scores))
    assert result["n_members"] + result["n_nonmembers"] == 1000 and result["n_members"] == member.sum()
    assert result["tpr_at_fpr"]["0.01"] == metrics.tpr_at_fpr(scores, member, fpr=0.01).tpr
    assert result["false_positives_allowed"] == {"0.001": 0, "0.01": int(0.01 * result["n_nonmembers"])}
    bare = metrics.evaluate(scores, member, thresholds=None)
    assert bare["balanced_accuracy"] is None and bare["advantage"] is None
    assert bare["at_shadow_thresholds"] == {}


def test_bootstrap_interval_contains_the_point_estimate():
    scores, member = _random_set(600, seed=8)
    low, high = metrics.bootstrap_ci(scores, member, metric_fn=metrics.auc, n=200, seed=0)
    assert low < metrics.auc(scores, member) < high
    assert high - low < 0.15
    assert (low, high) == metrics.bootstrap_ci(scores, member, metric_fn=metrics.auc, n=200, seed=0)
    tpr = lambda s, m: metrics.tpr_at_fpr(s, m, fpr=0.1).tpr
    low, high = metrics.bootstrap_ci(scores, member, metric_fn=tpr, n=200, seed=1)
    assert low <= tpr(scores, member) <= high


def test_pool_concatenates_targets():
    first, second = _random_set(10, seed=9), _random_set(20, seed=10)
    scores, member = metrics.pool([first, second])
    np.testing.assert_array_equal(scores, np.r_[first[0], second[0]])
    np.testing.assert_array_equal(member, np.r_[first[1], second[1]])
    assert member.dtype == bool


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="both members and non-members"):
        metrics.auc(np.ones(3), np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc(np.array([0.0, np.nan]), np.array([True, False]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.auc(np.zeros(3), np.array([True, False]))
    with pytest.raises(ValueError, match="must be bool"):
        metrics.auc(np.zeros(2), np.array([1, 0]))
