"""LiRA's Gaussian fits with few shadows: the pooled (global) std is the within-example std of the data."""

import numpy as np
import pytest

from attacks.stats.lira import ANSWER_FLOOR, answer_scores, gaussian_fit

TRUE_STD = 1.0


def _shadow_game(n_shadows: int, *, n_examples: int = 20_000, seed: int = 0):
    """stat[S, N] = per-example mean + N(0, TRUE_STD); member[S, N] ~ Bernoulli(1/2), as the first k
    shadows of a LiRA farm (some examples then have no IN or no OUT shadow)."""
    rng = np.random.default_rng(seed)
    member = rng.random((n_shadows, n_examples)) < 0.5
    stat = rng.normal(0, 3, n_examples) + 2.0 * member + rng.normal(0, TRUE_STD, (n_shadows, n_examples))
    return stat, member


@pytest.mark.parametrize("n_shadows", [2, 4])
@pytest.mark.parametrize("side", ["IN", "OUT"])
def test_global_std_with_few_shadows_is_the_true_std(n_shadows, side):
    stat, member = _shadow_game(n_shadows)
    mask = member if side == "IN" else ~member
    assert (mask.sum(0) == 0).any()  # the case of the bug: examples with no row on this side
    _, std = gaussian_fit(stat, mask, use_global=True, min_std=0.01, side=side, empty="global")
    assert np.all(std == std[0])
    assert std[0] == pytest.approx(TRUE_STD, rel=0.05)


def test_one_shadow_has_no_within_example_spread_so_the_std_is_min_std():
    stat, member = _shadow_game(1)
    for mask, side in ((member, "IN"), (~member, "OUT")):
        for use_global in (True, False):
            _, std = gaussian_fit(stat, mask, use_global=use_global, min_std=0.25, side=side, empty="global")
            assert np.all(std == 0.25)


def test_empty_error_path_pools_sum_of_squares_over_sum_of_count_minus_one():
    """Every example has a row on each side: the pooled variance is exactly the textbook formula."""
    rng = np.random.default_rng(1)
    stat = rng.normal(0, 1, (8, 500))
    member = rng.random((8, 500)).argsort(0) < 4
    count = member.sum(0)
    mean = np.where(member, stat, 0.0).sum(axis=0) / count
    squares = np.where(member, (stat - mean) ** 2, 0.0).sum(axis=0)
    mu, std = gaussian_fit(stat, member, use_global=True, min_std=1e-9, side="IN")
    assert np.array_equal(mu, mean)
    assert np.array_equal(std, np.full(500, np.sqrt(squares.sum() / (count - 1).sum())))
    _, local = gaussian_fit(stat, member, use_global=False, min_std=1e-9, side="IN")
    assert np.array_equal(local, np.sqrt(squares / (count - 1)))



def test_answer_scores_weigh_each_answer_by_the_shadows_margins():
    """`answer_scores`: a right answer where IN shadows' margins sit above OUT shadows' raises the online score,
    offline a right answer never scores below a wrong one, the scores are graded by the margins (one query: nearly
    as many values as examples, where right/wrong alone gives two), and a certain query is worth at most
    log((1 - floor) / floor)."""
    rng = np.random.default_rng(0)
    member = rng.random((16, 50)) < 0.5
    gap = rng.uniform(0.2, 0.6, 50)  # how far IN margins sit above OUT margins, per example
    margins = rng.normal(np.where(member, gap, -gap), 0.2)[..., None]
    right, wrong = np.ones((50, 1)), np.zeros((50, 1))
    for variant in ("online", "offline"):
        up = answer_scores(target_answers=right, shadow_margins=margins, shadow_member=member, variant=variant)
        down = answer_scores(target_answers=wrong, shadow_margins=margins, shadow_member=member, variant=variant)
        assert (up > down).all() and len(np.unique(up)) > 40
    certain = np.where(member, 50.0, -50.0)[..., None]
    top = answer_scores(target_answers=right, shadow_margins=certain, shadow_member=member, min_std=1.0)
    np.testing.assert_allclose(top, np.log((1 - ANSWER_FLOOR) / ANSWER_FLOOR))
