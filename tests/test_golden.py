"""Golden numbers: every registered attack on a seeded synthetic game, against values recorded before the
attack stage was restructured (issue 14). A change of any attack's math, of the shadow game or of the
threshold rules shows here first; a deliberate change of the math updates GOLDEN with a note why.

The game is synthetic (no training: numpy and scikit-learn only), so the figures do not depend on torch's
CPU kernels. `boundary`, `transfer` and the white-box attacks read planted statistics, as their preparation steps
would leave them.
"""

import numpy as np
import pytest

from attacks.registry import ATTACKS, run_attack
from attacks.responses import Responses
from attacks.stats.metrics import evaluate, shadow_thresholds
from attacks.stats.shadow_game import shadow_scores


def synthetic(seed=7, m=10, n=60, c=4):
    rng = np.random.default_rng(seed)
    member = np.zeros((m, n), bool)
    for i in range(n):
        member[rng.permutation(m)[: m // 2], i] = True
    labels = rng.integers(0, c, n)
    kinds = ("clean",) + ("flip",) + ("translate",) * 4 + ("gaussian",) * 6
    params = tuple({} for _ in kinds)
    p_ok = np.where(member, 0.85, 0.6)[..., None]
    ok = rng.random((m, n, len(kinds))) < p_ok
    wrong = (labels[None, :, None] + rng.integers(1, c, (m, n, len(kinds)))) % c
    pred = np.where(ok, labels[None, :, None], wrong).astype(np.int16)
    logits = rng.normal(size=(m, n, c)).astype(np.float32)
    logits[np.arange(m)[:, None], np.arange(n)[None, :], labels[None, :]] += np.where(member, 2.5, 1.0)
    stats = {"boundary": np.abs(rng.normal(np.where(member, 1.5, 1.0), 0.5)),
             "transfer": rng.normal(np.where(member, 0.3, 0.0), 1.0), **whitebox_statistics(member, seed),
             **few_query_statistics(member, seed)}
    return Responses(member=member, pred=pred, labels=labels.astype(np.int64), query_kinds=kinds,
                     query_params=params, logits=logits, model_ids=np.arange(m, dtype=np.int32), statistics=stats)


def whitebox_statistics(member, seed):
    """Planted white-box statistics (issue 16), from their own stream: the other attacks' draws are unchanged."""
    rng = np.random.default_rng([seed, 16])
    shift = np.where(member, 0.5, 0.0)
    layers = np.exp(rng.normal(-shift[..., None], 1.0, (*member.shape, 2)))
    return {"whitebox_loss": np.exp(rng.normal(-1 - shift, 1.0)), "whitebox_margin": rng.normal(shift, 1.0),
            "whitebox_grad_norm": np.sqrt((layers ** 2).sum(-1)), "whitebox_layers": layers,
            "whitebox_activations": np.abs(rng.normal(1.0, 1.0, (*member.shape, 1))),
            "whitebox_top": np.sort(rng.dirichlet(np.ones(4), member.shape), axis=-1)[..., ::-1][..., :3]}


def few_query_statistics(member, seed):
    """Planted statistics of the few-query attacks (issue 26), from their own stream: the walk's first wrong step
    of 15, and the smoothed logit of 4 crafted queries kept, answered by halves (even models one crafting set's
    queries, odd models the other's)."""
    rng = np.random.default_rng([seed, 26])
    first_wrong = np.clip(np.round(rng.normal(np.where(member, 9.0, 7.0), 2.0)), 1, 16)
    kept = rng.binomial(4, np.where(member, 0.8, 0.5), (2, *member.shape))  # yoqo's, then oslo's
    crafted = np.log((kept + 0.5) / (4 - kept + 0.5))
    half = np.repeat((np.arange(len(member)) % 2)[:, None], member.shape[1], axis=1).astype(np.float64)
    return {"fixed_direction": first_wrong, "yoqo": crafted[0], "yoqo_fold": half, "oslo": crafted[1],
            "oslo_fold": half}


GOLDEN = {  # attack: (auc, balanced_accuracy, sum of scores, sum of squared scores)
    "augmentation": (0.7601809954751131, 0.6990950226244343, 29.941963735967875, 19.189553347646974),
    "boundary": (0.7420814479638009, 0.6606334841628959, 72.17470747365446, 107.42300239789286),
    "calibrated": (0.8484162895927603, 0.7126696832579186, 39.732197239570176, 671.4689130457222),
    "confidence_classifier": (0.7160633484162896, 0.6606334841628959, 27.626303177143377, 19.80312952634218),
    "gap": (0.5463800904977375, 0.5463800904977375, 43.0, 43.0),
    "lira_confidence": (0.6493212669683258, 0.6176470588235294, -28.732930657607188, 152.85960552988632),
    "loss": (0.7171945701357466, 0.6278280542986426, -48.954117947803105, 58.53941434704421),
    "noise": (0.829185520361991, 0.7816742081447964, 43.5, 33.75),
    # issue 15: transfer's default is now the in_out variant, which scores the target's own (IN-minus-OUT)
    # statistic as it stands: the planted statistic itself, thresholded on the shadows.
    "transfer": (0.5520361990950226, 0.5158371040723981, -1.927162904698015, 58.5879036792326),
    # issue 16: the white-box attacks, on the planted `whitebox_statistics` (recorded when they were added)
    "gradient_norm": (0.6979638009049773, 0.6617647058823529, -0.016958183512836955, 63.67903938046661),
    "whitebox_classifier": (0.7556561085972852, 0.6832579185520362, 26.817343974852715, 19.65057007043038),
    "stolen_memories": (0.7952488687782807, 0.7432126696832579, 31.159698592288446, 17.015484239257706),
    # issue 26: the few-query attacks, on the planted `few_query_statistics` (recorded when they were added)
    "fixed_direction": (0.7601809954751131, 0.6787330316742082, 22.236002200967555, 121.51251515751338),
    "yoqo": (0.8207013574660634, 0.752262443438914, -2.1041495155564878, 286.58122589895237),
    "oslo": (0.6334841628959276, 0.5463800904977375, -1.1916821735460852, 238.76774956594068),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_attack_matches_its_golden_numbers(name):
    responses, target, shadows = synthetic(), 0, np.arange(1, 10)

    def attack(resp, *, target, shadows):
        return run_attack(name, resp, target=target, shadows=shadows, settings=None)

    scores = attack(responses, target=target, shadows=shadows)
    fprs = [0.001, 0.01, 0.1]
    thresholds = shadow_thresholds(*shadow_scores(attack, responses, target=target, shadows=shadows, n_pseudo=4,
                                                  seed=0), fprs=fprs)
    metrics = evaluate(scores, responses.member[target], thresholds=thresholds, fprs=fprs)
    found = (metrics["auc"], metrics["balanced_accuracy"], float(np.sum(scores)), float(np.sum(scores ** 2)))
    assert found == pytest.approx(GOLDEN[name], rel=1e-9, abs=1e-12)


def test_every_registered_attack_has_golden_numbers():
    assert set(GOLDEN) == set(ATTACKS)
