"""Attack math on synthetic responses: planted signal is recovered, no signal gives chance, and the
target's own membership is never read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from attacks.methods.confidence import logit_scaled_confidence, true_label_log_prob
from attacks.registry import ATTACKS, get_attack, resolve_settings, run_attack
from attacks.responses import Responses
from attacks.stats import correctness
from attacks.stats.lira import lira_scores, smoothed_logit_fraction
from attacks.stats.metrics import auc
from attacks.stats.shadow_game import shadow_scores
from farm.errors import ConfigError

N_MODELS = 16
TARGET = 0
SHADOWS = tuple(range(1, N_MODELS))
ALL_KINDS = {"clean": 1, "flip": 1, "translate": 5, "rotate": 5, "gaussian": 20, "bitflip": 20}


def make_responses(*, n_examples: int = 400, strength: float = 6.0, kinds: dict[str, int] | None = None,
                   with_logits: bool = False, n_models: int = N_MODELS, n_classes: int = 10,
                   difficulty_sd: float = 0.8, seed: int = 0) -> Responses:
    """lira-style game: every example IN for exactly half the models.

    P(query answered correctly) = sigmoid(difficulty[n] + query_effect[q] + strength * member[m, n]);
    with logits, the true-label logit gets difficulty + strength * member on top of N(0, 1) noise.
    strength = 0 makes every response independent of membership.
    """
    rng = np.random.default_rng(seed)
    member = rng.random((n_models, n_examples)).argsort(0) < n_models // 2
    query_kinds = tuple(kind for kind, count in (kinds or ALL_KINDS).items() for _ in range(count))
    labels = rng.integers(0, n_classes, n_examples).astype(np.int64)
    difficulty = rng.normal(-2.5, difficulty_sd, n_examples)
    query_effect = rng.normal(0.0, 0.3, len(query_kinds))
    p_correct = expit(difficulty[None, :, None] + query_effect + strength * member[:, :, None])
    is_correct = rng.random(p_correct.shape) < p_correct
    wrong = (labels[None, :, None] + rng.integers(1, n_classes, p_correct.shape)) % n_classes
    pred = np.where(is_correct, labels[None, :, None], wrong).astype(np.int16)
    logits = None
    if with_logits:
        logits = rng.normal(0.0, 1.0, (n_models, n_examples, n_classes))
        boost = difficulty + 2.5 + 0.7 * strength * member
        logits[:, np.arange(n_examples), labels] += boost
        logits = logits.astype(np.float32)
    # the transfer attack's per-(model, example) statistic (minus the transfer models' loss) is
    # computed by training models (tested end to end in test_attack_run.py); here it is planted
    transfer = rng.normal(0.0, 1.0, (n_models, n_examples)) + 0.5 * strength * member
    # likewise HopSkipJump distances (tests/test_boundary.py computes real ones): members farther away,
    # with per-example difficulty so that calibration matters
    boundary = np.exp(rng.normal(0.0, 0.3, (n_models, n_examples)) - difficulty / 4 + 0.15 * strength * member)
    # the few-query attacks' statistics: the walk's first wrong step (members later), and the smoothed logit of the
    # fraction of 8 crafted queries kept (members keep more), answered by halves: rows of even models one crafting
    # set's queries, odd models the other's
    first_wrong = np.clip(np.round(rng.normal(6 - (difficulty + 2.5) + 0.5 * strength * member, 1.0)), 1, 16)
    kept = rng.binomial(8, expit(difficulty + 2.5 + strength * (member - 0.5)))
    crafted = smoothed_logit_fraction(kept, 8)
    half = np.repeat((np.arange(n_models) % 2)[:, None], n_examples, axis=1).astype(np.float64)
    return Responses(member=member, pred=pred, labels=labels, query_kinds=query_kinds,
                     query_params=tuple({} for _ in query_kinds), logits=logits,
                     model_ids=np.arange(n_models, dtype=np.int32),
                     statistics={"transfer": transfer, "boundary": boundary, "fixed_direction": first_wrong,
                                 "yoqo": crafted, "yoqo_fold": half, "oslo": crafted, "oslo_fold": half})


CASES = [
    ("gap", {}),
    ("augmentation", {"variant": "classifier"}),
    ("augmentation", {"variant": "count"}),
    ("noise", {"variant": "threshold"}),
    ("noise", {"variant": "classifier"}),
    ("calibrated", {"variant": "online", "global_variance": True}),
    ("calibrated", {"variant": "online", "global_variance": False}),
    ("calibrated", {"variant": "offline", "global_variance": "auto"}),
    ("calibrated", {"variant": "offline", "global_variance": False, "kinds": ("gaussian",)}),
    ("transfer", {}),
    ("boundary", {"variant": "threshold"}),
    ("boundary", {"variant": "calibrated"}),
    ("fixed_direction", {"variant": "online"}),
    ("fixed_direction", {"variant": "offline"}),
    ("yoqo", {"variant": "online"}),
    ("oslo", {"variant": "offline"}),
    ("loss", {}),
    ("confidence_classifier", {"max_iter": 30}),
    ("lira_confidence", {"variant": "online"}),
    ("lira_confidence", {"variant": "offline", "global_variance": False}),
]
IDS = [name + "".join(f"-{v}" for v in settings.values()) for name, settings in CASES]


def _responses_for(name: str, **kwargs) -> Responses:
    return make_responses(with_logits=not get_attack(name).label_only, **kwargs)


@pytest.fixture(autouse=True)
def one_thread():
    # The fits here are tiny: OpenMP/BLAS threads only add start-up and contention (seconds on a busy CI box).
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def planted():
    return {False: make_responses(), True: make_responses(with_logits=True)}


@pytest.fixture(scope="module")
def null():
    return {flag: make_responses(n_examples=2000, strength=0.0, with_logits=flag, seed=1)
            for flag in (False, True)}


@pytest.mark.parametrize(("name", "settings"), CASES, ids=IDS)
def test_planted_signal_is_recovered(planted, name, settings):
    responses = planted[not get_attack(name).label_only]
    if get_attack(name).label_only:
        assert responses.logits is None
    scores = run_attack(name, responses, target=TARGET, shadows=SHADOWS, settings=settings)
    assert scores.shape == (responses.n_examples,) and scores.dtype == np.float64
    assert auc(scores, responses.member[TARGET]) > 0.9


@pytest.mark.parametrize(("name", "settings"), CASES, ids=IDS)
def test_no_signal_gives_chance(null, name, settings):
    responses = null[not get_attack(name).label_only]
    scores = run_attack(name, responses, target=TARGET, shadows=SHADOWS, settings=settings)
    assert abs(auc(scores, responses.member[TARGET]) - 0.5) < 0.05


@pytest.mark.parametrize(("name", "settings"), CASES, ids=IDS)
def test_target_membership_is_never_read(planted, name, settings):
    responses = planted[not get_attack(name).label_only]
    permuted = responses.member.copy()
    permuted[TARGET] = np.random.default_rng(7).permutation(permuted[TARGET])
    assert not np.array_equal(permuted[TARGET], responses.member[TARGET])
    other = dataclasses.replace(responses, member=permuted)
    before = run_attack(name, responses, target=TARGET, shadows=SHADOWS, settings=settings)
    after = run_attack(name, other, target=TARGET, shadows=SHADOWS, settings=settings)
    assert np.array_equal(before, after)
    before_shadow = shadow_scores(get_attack(name).fn, responses, target=TARGET, shadows=SHADOWS,
                                  n_pseudo=3, **resolve_settings(name, settings))
    after_shadow = shadow_scores(get_attack(name).fn, other, target=TARGET, shadows=SHADOWS,
                                 n_pseudo=3, **resolve_settings(name, settings))
    assert np.array_equal(before_shadow[0], after_shadow[0])
    assert np.array_equal(before_shadow[1], after_shadow[1])


@pytest.mark.parametrize("name", [name for name, spec in ATTACKS.items() if spec.label_only])
def test_label_only_attacks_never_read_logits(planted, name):
    plain = planted[False]
    poisoned = Responses(plain.member, plain.pred, plain.labels, plain.query_kinds, plain.query_params,
                         np.full((N_MODELS, plain.n_examples, 10), np.nan, dtype=np.float32),
                         statistics=plain.statistics)
    fn = get_attack(name).fn
    expected = fn(plain, target=TARGET, shadows=SHADOWS)
    assert np.array_equal(expected, fn(poisoned, target=TARGET, shadows=SHADOWS))


@pytest.mark.parametrize("name", [name for name, spec in ATTACKS.items() if spec.kind == "confidence"])
def test_baselines_need_logits(planted, name):
    with pytest.raises(ConfigError, match="needs logits"):
        run_attack(name, planted[False], target=TARGET, shadows=SHADOWS)


@pytest.mark.parametrize(("name", "kind"), [("augmentation", "translate"), ("noise", "gaussian"),
                                            ("calibrated", "bitflip")])
def test_missing_query_kinds_say_what_to_add(name, kind):
    responses = make_responses(kinds={"clean": 1})
    with pytest.raises(ConfigError, match=f"kind: {kind}"):
        run_attack(name, responses, target=TARGET, shadows=SHADOWS)


def test_gap_needs_clean():
    with pytest.raises(ConfigError, match="kind: clean"):
        run_attack("gap", make_responses(kinds={"flip": 1}), target=TARGET, shadows=SHADOWS)


def test_calibrated_rejects_absent_explicit_kind(planted):
    with pytest.raises(ConfigError, match="rotate"):
        run_attack("calibrated", make_responses(kinds={"clean": 1, "flip": 1}), target=TARGET,
                   shadows=SHADOWS, settings={"kinds": ("flip", "rotate")})


def test_registry_errors(planted):
    with pytest.raises(ConfigError, match="valid: augmentation, boundary, calibrated"):
        get_attack("nope")
    with pytest.raises(ConfigError, match="unknown setting.*valid: c, max_fit_rows, seed, variant"):
        run_attack("augmentation", planted[False], target=TARGET, shadows=SHADOWS, settings={"sigma": 1})
    with pytest.raises(ConfigError, match="unknown variant"):
        run_attack("noise", planted[False], target=TARGET, shadows=SHADOWS, settings={"variant": "x"})
    with pytest.raises(ConfigError, match="among its own shadows"):
        run_attack("noise", planted[False], target=TARGET, shadows=(0, 1, 2))
    for spec in ATTACKS.values():
        assert spec.label_only == bool(spec.needs or spec.queries)  # it reads the run's queries, or sends its own
        assert {"target", "shadows"}.isdisjoint(spec.defaults)


def test_online_needs_in_and_out_shadows(planted):
    responses = planted[False]
    always_out = responses.member.copy()
    always_out[1:3, :] = False  # shadows 1 and 2 never trained on anything
    with pytest.raises(ConfigError, match="no IN shadow"):
        lira_scores(target_statistic=np.zeros(responses.n_examples), shadow_statistic=np.zeros((2, 400)),
                    shadow_member=always_out[1:3], variant="online")
    offline = lira_scores(target_statistic=np.zeros(400), shadow_statistic=np.zeros((2, 400)),
                          shadow_member=always_out[1:3], variant="offline")
    assert np.isfinite(offline).all()


def test_classifier_is_seeded_and_subsamples(planted):
    settings = {"variant": "classifier", "max_fit_rows": 500, "seed": 3}
    first = run_attack("augmentation", planted[False], target=TARGET, shadows=SHADOWS, settings=settings)
    again = run_attack("augmentation", planted[False], target=TARGET, shadows=SHADOWS, settings=settings)
    other = run_attack("augmentation", planted[False], target=TARGET, shadows=SHADOWS,
                       settings={**settings, "seed": 4})
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_lira_scores_golden():
    stat = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 9.0]])
    member = np.array([[True, False], [True, True], [False, False], [False, True]])
    target = np.array([1.0, 4.0])
    # Example 0: IN {0, 2}, OUT {4, 6}; example 1: IN {3, 9}, OUT {1, 5}. Per-example unbiased stds.
    online = lira_scores(target_statistic=target, shadow_statistic=stat, shadow_member=member,
                         variant="online", global_variance=False, min_std=1e-6)
    expected = [norm.logpdf(1, 1, np.sqrt(2)) - norm.logpdf(1, 5, np.sqrt(2)),
                norm.logpdf(4, 6, np.sqrt(18)) - norm.logpdf(4, 3, np.sqrt(8))]
    np.testing.assert_allclose(online, expected)
    offline = lira_scores(target_statistic=target, shadow_statistic=stat, shadow_member=member,
                          variant="offline", global_variance=True, min_std=1e-6)
    # Pooled within-example OUT variance: (2 + 8) / 2 = 5.
    np.testing.assert_allclose(offline, norm.logcdf((target - np.array([5.0, 3.0])) / np.sqrt(5)))


def test_confidence_statistics_are_stable():
    logits = np.array([[[2.0, 0.5, -1.0], [0.0, 800.0, 0.0]]])
    labels = np.array([0, 1])
    p = np.exp(logits[0, 0]) / np.exp(logits[0, 0]).sum()
    phi = logit_scaled_confidence(logits, labels)
    np.testing.assert_allclose(phi[0, 0], np.log(p[0] / (1 - p[0])))
    np.testing.assert_allclose(phi[0, 1], 800.0 - np.log(2.0))  # naive p/(1-p) would be inf
    np.testing.assert_allclose(true_label_log_prob(logits, labels)[0, 0], np.log(p[0]))


def test_features_by_hand():
    pred = np.array([[[1, 1, 0], [2, 0, 2]]], dtype=np.int16)  # 1 model, 2 examples, 3 queries
    responses = Responses(np.array([[True, False]]), pred, np.array([1, 2]), ("clean", "flip", "flip"),
                          ({},) * 3)
    np.testing.assert_array_equal(correctness.correct(pred, responses.labels, queries=0), [[True, True]])
    np.testing.assert_allclose(correctness.fraction_correct(responses, kinds=("flip",)), [[0.5, 0.5]])
    both = correctness.fraction_correct(responses, kinds=("clean", "flip"))
    np.testing.assert_allclose(both, [[2 / 3, 2 / 3]])
    np.testing.assert_array_equal(correctness.correctness_vector(responses, kinds=("flip",)), [[[1, 0], [0, 1]]])
    with pytest.raises(ConfigError, match="kind: rotate"):
        correctness.fraction_correct(responses, kinds=("rotate",))


def test_shadow_scores_pool_pseudo_targets(planted):
    responses = planted[False]
    scores, member = shadow_scores(get_attack("noise").fn, responses, target=TARGET, shadows=SHADOWS,
                                   n_pseudo=4, seed=0)
    assert scores.shape == member.shape == (4 * responses.n_examples,)
    assert auc(scores, member) > 0.9
    with pytest.raises(ConfigError, match="among its own shadows"):
        shadow_scores(get_attack("noise").fn, responses, target=TARGET, shadows=(0, 1, 2, 3))


def test_calibration_beats_a_global_threshold_when_difficulty_varies():
    # Weak signal, very uneven examples: a global threshold on the fraction correct mostly measures
    # difficulty; per-example IN/OUT calibration (LiRA) removes it.
    responses = make_responses(n_examples=1000, strength=0.7, difficulty_sd=2.0)
    member = responses.member[TARGET]
    threshold = auc(run_attack("noise", responses, target=TARGET, shadows=SHADOWS), member)
    for variant in ("online", "offline"):
        scores = run_attack("calibrated", responses, target=TARGET, shadows=SHADOWS,
                            settings={"variant": variant})
        assert auc(scores, member) > threshold + 0.1
