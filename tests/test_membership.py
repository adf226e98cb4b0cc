import numpy as np
import pytest

from farm.config import MembershipConfig
from farm.membership import disjoint_membership, lira_membership, make_membership


@pytest.mark.parametrize("n_models, n_examples, p_in", [(64, 300, 0.5), (10, 57, 0.3), (2, 9, 0.5), (7, 100, 0.8)])
def test_lira_every_example_in_exactly_round_p_in_m_models(n_models, n_examples, p_in):
    member = lira_membership(n_models=n_models, n_examples=n_examples, p_in=p_in, seed=3)
    assert member.shape == (n_models, n_examples) and member.dtype == bool
    assert (member.sum(0) == round(p_in * n_models)).all()
    # rows are balanced in expectation
    assert abs(member.mean() - round(p_in * n_models) / n_models) < 1e-12


def test_lira_is_a_pure_function_of_the_seed():
    a = lira_membership(n_models=8, n_examples=50, p_in=0.5, seed=1)
    assert np.array_equal(a, lira_membership(n_models=8, n_examples=50, p_in=0.5, seed=1))
    assert not np.array_equal(a, lira_membership(n_models=8, n_examples=50, p_in=0.5, seed=2))


def test_disjoint_pools_do_not_mix_and_rows_are_balanced():
    member, pool = disjoint_membership(n_models=6, n_examples=200, p_in=0.5, target_ids=(0, 1),
                                       target_fraction=0.4, seed=0)
    assert pool.sum() == 80
    assert not member[:2, ~pool].any() and not member[2:, pool].any()
    assert (member[:2].sum(1) == 40).all() and (member[2:].sum(1) == 60).all()
    again, pool2 = disjoint_membership(n_models=6, n_examples=200, p_in=0.5, target_ids=(0, 1),
                                       target_fraction=0.4, seed=0)
    assert np.array_equal(member, again) and np.array_equal(pool, pool2)


def test_make_membership_dispatches_on_mode():
    lira = make_membership(MembershipConfig(n_models=4), n_examples=20, seed=0)
    assert (lira.sum(0) == 2).all()
    disjoint = make_membership(MembershipConfig(mode="disjoint", n_models=4), n_examples=20, seed=0)
    assert (disjoint.sum(1) == 5).all()
