"""MemGuard: the defender's own classifier falls to a coin flip, labels and label-only scores are untouched,
the expected distortion stays within the budget, and everything is seeded."""

import numpy as np
import pytest
import torch
from scipy.special import expit, log_softmax, logsumexp, softmax

from attacks.oracles.memguard import fit_defender, memguard
from attacks.oracles.model import ModelOracle
from attacks.oracles.output_defenses import DefendedModel, defended_responses, mask_logits
from attacks.registry import run_attack
from attacks.responses import Responses
from attacks.stats.metrics import auc
from farm.errors import ConfigError

SHADOWS = np.arange(1, 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def overfit() -> Responses:
    """8 models that are more confident on their members (true-label logit +4), 600 examples, 10 classes;
    a clean query and 10 Gaussian ones (the label-only attacks' inputs)."""
    rng = np.random.default_rng(0)
    n_models, n_examples, n_classes = 8, 600, 10
    member = rng.random((n_models, n_examples)).argsort(0) < n_models // 2
    labels = rng.integers(0, n_classes, n_examples)
    logits = rng.normal(0, 1, (n_models, n_examples, n_classes))
    logits[:, np.arange(n_examples), labels] += 6 + 4 * member + rng.normal(0, 2, (n_models, n_examples))
    noisy = logits[..., None, :] + rng.normal(0, 4, (n_models, n_examples, 10, n_classes))
    pred = np.concatenate([logits.argmax(-1)[..., None], noisy.argmax(-1)], axis=-1).astype(np.int16)
    kinds = ("clean",) + ("gaussian",) * 10
    return Responses(member=member, pred=pred, labels=labels.astype(np.int64), query_kinds=kinds,
                     query_params=tuple({} for _ in kinds), logits=logits.astype(np.float32),
                     model_ids=np.arange(n_models, dtype=np.int32))


@pytest.fixture(scope="module")
def defender(overfit):
    return fit_defender(logits=overfit.logits, member=overfit.member)


def test_arg_max_kept_and_outputs_are_log_probabilities(overfit, defender):
    masked = mask_logits("memguard", overfit.logits, defender=defender)
    assert masked.dtype == np.float32 and masked.shape == overfit.logits.shape and np.isfinite(masked).all()
    assert np.array_equal(masked.argmax(-1), overfit.logits.argmax(-1))
    np.testing.assert_allclose(logsumexp(masked.astype(np.float64), axis=-1), 0.0, atol=1e-5)
    assert not np.allclose(masked, log_softmax(overfit.logits.astype(np.float64), axis=-1), atol=1e-3)


def test_the_defenders_classifier_is_pushed_just_past_one_half(overfit, defender):
    masked = mask_logits("memguard", overfit.logits, defender=defender)
    before, after = defender.decision(overfit.logits), defender.decision(masked)
    assert ((before > 0) == overfit.member).mean() > 0.75  # g's membership guesses, undefended
    crossed = np.sign(after) != np.sign(before)
    assert crossed.mean() > 0.95
    assert np.abs(expit(after[crossed]) - 0.5).max() < 0.05
    assert ((after > 0) == overfit.member).mean() < 0.5  # no better than a coin flip at its threshold


@pytest.mark.parametrize("attack", ["loss", "lira_confidence"])
def test_confidence_attacks_fall_toward_chance(overfit, attack):
    """Their AUC moves toward 1/2 (past it: MemGuard's inversion, module docstring)."""
    masked = defended_responses(overfit, "memguard")
    before = auc(run_attack(attack, overfit, target=0, shadows=SHADOWS), overfit.member[0])
    after = auc(run_attack(attack, masked, target=0, shadows=SHADOWS), overfit.member[0])
    assert before > 0.85 and abs(after - 0.5) < abs(before - 0.5) - 0.15, (before, after)


def test_label_only_scores_are_identical(overfit):
    masked = defended_responses(overfit, "memguard")
    assert masked.pred is overfit.pred and not np.array_equal(masked.logits, overfit.logits)
    for attack in ("gap", "noise"):
        assert np.array_equal(run_attack(attack, masked, target=0, shadows=SHADOWS),
                              run_attack(attack, overfit, target=0, shadows=SHADOWS)), attack


@pytest.mark.parametrize("epsilon", [0.0, 0.02, 0.1])
def test_expected_distortion_stays_within_epsilon(overfit, defender, epsilon):
    masked = memguard(overfit.logits.astype(np.float64), defender=defender, epsilon=epsilon)
    clean = softmax(overfit.logits.astype(np.float64), axis=-1)
    distortion = np.abs(np.exp(masked) - clean).sum(-1)
    if epsilon == 0:
        assert distortion.max() < 1e-6
    else:
        assert 0 < distortion.mean() <= epsilon * 1.1  # expectation <= epsilon per query; 4,800 draws


def test_seeded_and_deterministic(overfit, defender):
    again = fit_defender(logits=overfit.logits, member=overfit.member)
    assert np.array_equal(again.decision(overfit.logits), defender.decision(overfit.logits))
    a = mask_logits("memguard", overfit.logits, defender=defender)
    assert np.array_equal(a, mask_logits("memguard", overfit.logits, defender=again))
    assert not np.array_equal(a, mask_logits("memguard", overfit.logits, defender=defender, epsilon=0.05, seed=1))


def test_needs_a_defender_fit_on_the_models_own_members():
    with pytest.raises(ConfigError, match="needs defender"):
        mask_logits("memguard", np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="needs defender"):
        DefendedModel(torch.nn.Identity(), "memguard")
    defender = fit_defender(logits=np.zeros((2, 5, 3)), member=np.ones((2, 5), dtype=bool))
    with pytest.raises(ConfigError, match="fit for 2 models"):
        mask_logits("memguard", np.zeros((3, 5, 3)), defender=defender)


def test_a_defended_model_answers_an_oracle_with_the_same_labels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x = torch.rand(300, 1, 8, 8)
    with torch.no_grad():
        logits = model(x).numpy()
    member = np.arange(300) < 150
    defended = DefendedModel(model, "memguard", defender=fit_defender(logits=logits, member=member))
    assert np.array_equal(ModelOracle(model).predict_labels(x), ModelOracle(defended).predict_labels(x))
