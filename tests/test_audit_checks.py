"""Thresholds you can trust on a target you did not build: shadow fidelity and known non-members.

A matched target (a model of the run, trained like its shadows) raises no fidelity warning. A deliberately
mismatched one (an oracle that answers the label of the nearest population example: a model far better than
its tiny shadows, the random-forest-on-MLServer case in docs/audit.md) falls outside its shadows' range, its
shadow thresholds realize a false-positive rate several times the requested one on known non-members, and
`--calibrate nonmembers` brings the rate on the challenge set's non-members back within the binomial interval.
"""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from attacks.audit import AuditOptions, audit_run
from attacks.oracles.base import CountingOracle
from attacks.oracles.model import ModelOracle
from attacks.report.audit_table import format_audit
from attacks.stats.fidelity import compare
from attacks.stats.nonmembers import binomial_interval, nonmember_thresholds, realized_fpr
from farm.errors import ConfigError
from farm.plan import load_plan
from farm.shards import MEMBERSHIP, membership_matrix
from farm.storage import RunDir

ATTACKS = ("gap", "noise", "calibrated")
FPR, KNOWN = 0.05, 40  # 120 examples: model 0's 60 non-members are 40 known and 20 challenged


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.LOGITS)


@pytest.fixture(scope="module")
def split(run):
    """(members of model 0, KNOWN of its non-members known to the auditor): the rest are challenged."""
    member, _ = membership_matrix(RunDir(run).read_table(MEMBERSHIP))
    outside = np.flatnonzero(~member[0])
    known = np.random.default_rng(0).choice(outside, KNOWN, replace=False)
    return tuple(np.flatnonzero(member[0]).tolist()), tuple(int(i) for i in known)


class _NearestLabel(CountingOracle):
    """Answers the label of the nearest population example: better than any shadow, of another family."""

    def __init__(self, x, y):
        super().__init__(num_classes=int(y.max()) + 1, input_shape=x.shape[1:])
        self.knn = KNeighborsClassifier(n_neighbors=1).fit(x.reshape(len(x), -1), y)

    def _answer(self, x):
        return self.knn.predict(x.reshape(len(x), -1).numpy())


def _options(members, nonmembers=None, calibrate="shadows"):
    return AuditOptions(attacks=ATTACKS, members=members, nonmembers=nonmembers, calibrate=calibrate, fpr=FPR,
                        n_pseudo=3, bootstrap=0)


def test_binomial_interval_thresholds_and_realized_fpr():
    assert binomial_interval(0, 100)[0] == 0 and 0.03 < binomial_interval(0, 100)[1] < 0.04
    low, high = binomial_interval(5, 100)
    assert low < 0.05 < high
    scores = np.arange(1000, dtype=float)
    chosen = nonmember_thresholds(scores, [0.01, 0.001])
    assert (scores >= chosen["0.01"]).sum() == 10 and (scores >= chosen["0.001"]).sum() == 1
    check = realized_fpr(scores, {"0.01": 900.0}, requested=0.01)
    assert check["at_thresholds"]["0.01"]["false_positives"] == 100 and check["exceeds"]
    assert not realized_fpr(scores, chosen, requested=0.01)["exceeds"]
    matched = compare({"accuracy": np.array([0.9, 0.88, 0.92, 0.91, 0.89])})
    far = compare({"accuracy": np.array([1.0, 0.88, 0.92, 0.91, 0.89])})
    assert matched["outside"] == [] and far["outside"] == ["accuracy"] and far["measures"]["accuracy"]["z"] > 3


def test_a_matched_target_raises_no_warning(run, split):
    members, known = split
    results = audit_run(run, ModelOracle.from_run(run, 0), target="model:0", options=_options(members, known),
                        progress=False)
    assert results[0]["fidelity"]["outside"] == []
    table = format_audit(results, FPR)
    assert "fidelity:" not in table and "--calibrate nonmembers chooses" not in table
    assert "known non-members at the shadow thresholds" in table
    for r in results:
        assert r["known_nonmembers"]["n_nonmembers"] == KNOWN and not r["known_nonmembers"]["exceeds"]
        assert r["n_examples"] == 120 - KNOWN and r["tuned_threshold"] != "known non-members"


def test_a_mismatched_target_warns_and_known_nonmembers_restore_the_fpr(run, split):
    members, known = split
    plan = load_plan(run)
    oracle = _NearestLabel(plan.dataset.x, plan.dataset.y)
    shadow = {r["attack"]: r for r in audit_run(run, oracle, target="nearest", options=_options(members, known),
                                                 progress=False)}
    table = format_audit(list(shadow.values()), FPR)
    assert "fidelity: the target is outside its shadows' range on accuracy" in table
    calibrated = shadow["calibrated"]
    assert calibrated["known_nonmembers"]["exceeds"], calibrated["known_nonmembers"]
    assert calibrated["at_shadow_thresholds"]["0.05"]["fpr"] > 3 * FPR  # on the challenge set's non-members too
    assert f"calibrated: on {KNOWN} known non-members the threshold for FPR {FPR:g} flags" in table
    fixed = {r["attack"]: r for r in audit_run(run, oracle, target="nearest",
                                                options=_options(members, known, "nonmembers"), progress=False)}
    n_nonmembers = fixed["calibrated"]["n_nonmembers"]
    realized = fixed["calibrated"]["at_shadow_thresholds"]["0.05"]["fpr"]
    low, high = binomial_interval(round(realized * n_nonmembers), n_nonmembers)
    assert low <= FPR <= high and fixed["calibrated"]["tuned_threshold"] == "known non-members"
    assert f"chosen on the {KNOWN} known non-members" in format_audit(list(fixed.values()), FPR)


def test_known_nonmembers_are_checked(run, split):
    members, known = split
    oracle = ModelOracle.from_run(run, 0)
    with pytest.raises(ConfigError, match="also in --members"):
        audit_run(run, oracle, target="model:0", options=_options(members, (members[0],)), progress=False)
    with pytest.raises(ConfigError, match="needs known non-members"):
        audit_run(run, oracle, target="model:0", options=_options(members, None, "nonmembers"), progress=False)
    with pytest.raises(ConfigError, match="too few for --fpr 0.05 \\(need at least 20"):
        audit_run(run, oracle, target="model:0", options=_options(members, known[:10], "nonmembers"),
                  progress=False)
    with pytest.raises(ConfigError, match="not in the population"):
        audit_run(run, oracle, target="model:0", options=_options(members, (10**6,)), progress=False)
