"""The membership matrix (DESIGN §3): which model trains on which example. A pure function of the seed."""

from __future__ import annotations

import numpy as np

from farm.config import MembershipConfig
from farm.errors import ConfigError


def lira_membership(*, n_models: int, n_examples: int, p_in: float, seed: int) -> np.ndarray:
    """bool[M, N]: every example is IN for exactly round(p_in * M) models (LiRA's balanced design).

    Each column is an independent random ranking of the models; the models ranked below
    round(p_in * M) train on the example.
    """
    rng = np.random.default_rng(seed)
    order = rng.random((n_models, n_examples)).argsort(0)
    return order < round(p_in * n_models)


def disjoint_membership(
    *, n_models: int, n_examples: int, p_in: float, target_ids: tuple[int, ...], target_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shokri-style split: (member bool[M, N], in_target_pool bool[N]).

    The population is split at random into a target pool (round(target_fraction * N) examples)
    and a shadow pool. Target models train on round(p_in * |target pool|) examples of the target
    pool, shadows on round(p_in * |shadow pool|) examples of the shadow pool: every row has an
    exact count, and no shadow ever sees a target-pool example. The challenge set is the target pool.
    """
    rng = np.random.default_rng(seed)
    n_target = round(target_fraction * n_examples)
    in_target_pool = np.zeros(n_examples, dtype=bool)
    in_target_pool[rng.permutation(n_examples)[:n_target]] = True
    pools = {True: np.flatnonzero(in_target_pool), False: np.flatnonzero(~in_target_pool)}
    member = np.zeros((n_models, n_examples), dtype=bool)
    targets = set(target_ids)
    for m in range(n_models):
        pool = pools[m in targets]
        member[m, rng.permutation(pool)[: round(p_in * len(pool))]] = True
    return member, in_target_pool


def make_membership(cfg: MembershipConfig, *, n_examples: int, seed: int) -> np.ndarray:
    """bool[n_models, n_examples] for the configured mode."""
    if cfg.mode == "lira":
        return lira_membership(n_models=cfg.n_models, n_examples=n_examples, p_in=cfg.p_in, seed=seed)
    member, _ = disjoint_membership(
        n_models=cfg.n_models, n_examples=n_examples, p_in=cfg.p_in,
        target_ids=cfg.target_ids, target_fraction=cfg.target_fraction, seed=seed,
    )
    return member


def reference_pool(member: np.ndarray, target_pool: np.ndarray, *, cfg: MembershipConfig, seed: int) -> np.ndarray:
    """bool[N]: the reference pool, round(cfg.reference * N) examples that no target trains on (docs/design.md §3).

    Drawn at random (its own seeded stream) among the target-pool examples that none of `cfg.target_ids` has IN,
    so the membership matrix is the same with or without it: in lira mode the shadows train on these examples as on
    any other, so every attack scores them exactly as it scores the targets' other non-members; in disjoint mode
    no model at all trains on them. They are known non-members of every target and are never challenged.
    """
    n = len(target_pool)
    reference = np.zeros(n, dtype=bool)
    size = round(cfg.reference * n)
    if size == 0:
        return reference
    candidates = np.flatnonzero(target_pool & ~member[list(cfg.target_ids)].any(0))
    if size > len(candidates):
        raise ConfigError(f"membership.reference: {cfg.reference:g} of {n:,} examples is {size:,}, but only "
                          f"{len(candidates):,} examples are out of every target; lower it or use fewer target_ids")
    reference[np.random.default_rng([seed, 0x5EF]).choice(candidates, size, replace=False)] = True
    return reference
