"""What an audit (and the attack stage) checks of its own thresholds (docs/audit.md, "Thresholds you can trust"):
shadow fidelity (does the target look like its shadows, `attacks.stats.fidelity`) and known non-members
(`attacks.stats.nonmembers`).

Known non-members are example ids of the run's population that the target never trained on. They are queried
like the challenge examples and scored by every attack, but they are never challenged: they stay out of the
challenge set, out of the scores file and out of every member/non-member figure. Their scores give the FPR the
thresholds realize on the target; with `calibrate="nonmembers"` they give the thresholds.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from attacks.responses import Responses
from attacks.stats.fidelity import compare, per_model_measures
from attacks.stats.nonmembers import nonmember_thresholds, realized_fpr
from farm.errors import ConfigError

CALIBRATE = ("shadows", "nonmembers")


def known_nonmembers(ids: tuple[int, ...] | None, *, n: int, pool: np.ndarray, member: np.ndarray | None,
                     calibrate: str, fpr: float) -> np.ndarray:
    """Sorted example ids int64[K] of the known non-members (empty: none given), checked against the population
    (a disjoint run: its target pool) and the ground truth; ConfigError (one line) otherwise."""
    if calibrate not in CALIBRATE:
        raise ConfigError(f"--calibrate: expected one of {', '.join(CALIBRATE)}, got {calibrate!r}")
    if ids is None:
        if calibrate == "nonmembers":
            raise ConfigError("--calibrate nonmembers needs known non-members (--nonmembers FILE)")
        return np.empty(0, dtype=np.int64)
    known = np.unique(np.asarray(ids, dtype=np.int64))
    bad = known[(known < 0) | (known >= n)]
    if len(bad):
        raise ConfigError(f"--nonmembers: example id {int(bad[0])} is not in the population [0, {n})")
    if not pool[known].all():
        raise ConfigError(f"--nonmembers: example {int(known[~pool[known]][0])} is in the shadow pool of this "
                          "disjoint run; known non-members must be target-pool examples")
    if member is not None and member[known].any():
        raise ConfigError(f"--nonmembers: example {int(known[member[known]][0])} is also in --members")
    if calibrate == "nonmembers" and len(known) * fpr < 1:
        raise ConfigError(f"--calibrate nonmembers: {len(known)} known non-members are too few for --fpr {fpr:g} "
                          f"(need at least {math.ceil(1 / fpr - 1e-9)}, so that one false positive is allowed)")
    return known


def audit_fidelity(responses: Responses, *, shadows: np.ndarray, n_scored: int) -> dict:
    """The audited target (the last row of `responses`) against `shadows` on the first `n_scored` columns (the
    examples the target answered): `attacks.stats.fidelity.compare`'s dict."""
    columns = slice(0, n_scored)
    statistics = {name: values[:, columns] for name, values in responses.statistics.items()
                  if np.ndim(values) == 2}
    return compare(per_model_measures(pred=responses.pred[:, columns], labels=responses.labels[columns],
                                      query_kinds=responses.query_kinds, shadows=shadows,
                                      target=responses.n_models - 1, statistics=statistics))


def run_fidelity(responses: Responses, *, targets: list[int], shadows: np.ndarray, pool: np.ndarray | None) -> dict:
    """{target id (str): `compare`'s dict} of each of a run's targets against its shadows on the challenge set
    (`pool`: a disjoint run's target pool; None: every example), for `shadowfarm attack`."""
    columns = np.arange(responses.n_examples) if pool is None else np.flatnonzero(pool)
    statistics = {name: values[:, columns] for name, values in responses.statistics.items() if np.ndim(values) == 2}
    return {str(t): compare(per_model_measures(pred=responses.pred[:, columns], labels=responses.labels[columns],
                                               query_kinds=responses.query_kinds, shadows=shadows, target=t,
                                               statistics=statistics))
            for t in targets}


def with_nonmembers(thresholds: dict, scores: np.ndarray, *, requested: float, fprs, calibrate: str
                    ) -> tuple[dict, dict | None]:
    """(the thresholds to use, the known non-members' check) for one attack: the check of `thresholds` (shadow or
    tuned) on the known non-members' scores float[K] (None when K = 0); with calibrate="nonmembers" their FPR
    levels are replaced by thresholds chosen on those scores (the balanced-accuracy one stays)."""
    if not len(scores):
        return thresholds, None
    check = realized_fpr(scores, thresholds, requested=requested)
    if calibrate == "nonmembers":
        thresholds = {**thresholds, **nonmember_thresholds(scores, fprs)}
    return thresholds, check


def split_reference(game, reference: np.ndarray | None, n_targets: int):
    """(the game on the challenge examples only, the known non-members' scores float[T*R]) of a run's targets
    (`shadowfarm attack`): the reference pool's columns (`farm.membership.reference_pool`) leave the challenge
    set and their scores, pooled over the targets, check or give the thresholds (`with_nonmembers`)."""
    if reference is None:
        return game, np.empty(0)
    examples = np.arange(len(reference)) if game.examples is None else np.asarray(game.examples)
    known = reference[examples]
    if not known.any():
        return game, np.empty(0)
    scores, member = game.scores.reshape(n_targets, -1), game.member.reshape(n_targets, -1)
    kept = replace(game, scores=scores[:, ~known].ravel(), member=member[:, ~known].ravel(),
                   examples=examples[~known])
    return kept, scores[:, known].ravel()


def reference_of(plan, targets: list[int], *, calibrate: str, fpr: float) -> np.ndarray | None:
    """bool[N]: the run's reference pool when every one of `targets` is out on all of it (None: no pool, or a
    target trained on it); ConfigError for --calibrate nonmembers without enough known non-members."""
    reference = plan.reference
    if reference is not None and (not reference.any() or plan.member[np.ix_(targets, reference)].any()):
        reference = None
    n = 0 if reference is None else int(reference.sum()) * len(targets)
    if calibrate not in CALIBRATE:
        raise ConfigError(f"--calibrate: expected one of {', '.join(CALIBRATE)}, got {calibrate!r}")
    if calibrate == "nonmembers" and n * fpr < 1:
        raise ConfigError(f"--calibrate nonmembers: {n} known non-members (the run's reference pool, "
                          f"membership.reference, over the targets) are too few for --fpr {fpr:g} "
                          f"(need at least {math.ceil(1 / fpr - 1e-9)})")
    return reference


def nonmember_ids(given, plan, target: str) -> tuple[int, ...] | None:
    """The known non-members' ids of an audit: `given` (ids, or "reference": the run's reference pool), else the
    reference pool when the target is `model:K` of one of the run's targets (no target trains on it)."""
    pool = () if plan.reference is None else tuple(np.flatnonzero(plan.reference).tolist())
    if given == "reference":
        if not pool:
            raise ConfigError("--nonmembers reference: this run reserves no reference pool (membership.reference)")
        return pool
    own_target = target.startswith("model:") and target[6:].isdigit() and (
        int(target[6:]) in plan.cfg.membership.target_ids)
    return given if given is not None or not (own_target and pool) else pool
