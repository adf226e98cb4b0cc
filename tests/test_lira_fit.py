"""LiRA's Gaussian fits with few shadows: the pooled (global) std is the within-example std of the data."""

import numpy as np
import pytest

from attacks.stats.lira import _gaussian_fit

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
    _, std = _gaussian_fit(stat, mask, use_global=True, min_std=0.01, side=side, empty="global")
    assert np.all(std == std[0])
    assert std[0] == pytest.approx(TRUE_STD, rel=0.05)


def test_one_shadow_has_no_within_example_spread_so_the_std_is_min_std():
    stat, member = _shadow_game(1)
    for mask, side in ((member, "IN"), (~member, "OUT")):
        for use_global in (True, False):
            _, std = _gaussian_fit(stat, mask, use_global=use_global, min_std=0.25, side=side, empty="global")
            assert np.all(std == 0.25)


def test_empty_error_path_pools_sum_of_squares_over_sum_of_count_minus_one():
    """Every example has a row on each side: the pooled variance is exactly the textbook formula."""
    rng = np.random.default_rng(1)
    stat = rng.normal(0, 1, (8, 500))
    member = rng.random((8, 500)).argsort(0) < 4
    count = member.sum(0)
    mean = np.where(member, stat, 0.0).sum(axis=0) / count
    squares = np.where(member, (stat - mean) ** 2, 0.0).sum(axis=0)
    mu, std = _gaussian_fit(stat, member, use_global=True, min_std=1e-9, side="IN")
    assert np.array_equal(mu, mean)
    assert np.array_equal(std, np.full(500, np.sqrt(squares.sum() / (count - 1).sum())))
    _, local = _gaussian_fit(stat, member, use_global=False, min_std=1e-9, side="IN")
    assert np.array_equal(local, np.sqrt(squares / (count - 1)))

