"""The fixed-direction walk of every (model, example), through the query engine.

The walk is a query set of its own, one "toward" query per step (`farm.queries`), so the shadows answer it
through `attacks.compute.requery` (Ray tasks over (model, example chunk), cached under `requery/<key>/` by a
hash of the expanded queries) and an audited target through its oracle (journaled and budgeted like every
query): K queries per example. The first wrong step of each (model, example) becomes the statistic that
`attacks.methods.fixed_direction` calibrates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.compute.requery import audit_columns, requery, target_pred
from attacks.methods.fixed_direction import PER_EXAMPLE, STATISTIC, check_settings, first_wrong_step
from attacks.responses import Responses
from farm.cluster import ensure_ray
from farm.config import QuerySpec
from farm.plan import Plan


def walk(settings: dict) -> list[QuerySpec]:
    """The query set of the walk asked for by the attack's resolved `settings` (steps, point)."""
    check_settings(steps=settings["steps"], point=settings["point"])
    return [QuerySpec("toward", (("point", settings["point"]), ("steps", settings["steps"])))]


def _models(chosen: dict, scored: Sequence[int], everyone: Sequence[int]) -> list[int]:
    return sorted(set(scored) | (set(everyone) if chosen["variant"] in PER_EXAMPLE else set()))


def prepare(plan: Plan, responses: Responses, chosen: dict, *, scored: Sequence[int], everyone: Sequence[int],
            seed: int, progress: bool, local: bool) -> Responses:
    """`responses` with the first wrong steps of the `scored` models (and of `everyone`, the shadows, for the
    calibrated variants); chosen: the attack's resolved settings (`Statistic.prepare`). The walk has no
    randomness: every seed gives the same queries."""
    data = plan.dataset
    _, pred = requery(plan.run, specs=walk(chosen), info=data.info, x=data.x, labels=data.y,
                      models=_models(chosen, scored, everyone), n_models=responses.n_models, seed=plan.cfg.seed,
                      progress=progress, local=local)
    return responses.with_statistic(STATISTIC, first_wrong_step(pred, data.y))


def prepare_audit(plan: Plan, responses: Responses, oracle, chosen: dict, *, examples: np.ndarray,
                  pseudo: Sequence[int], shadows: Sequence[int], seed: int, progress: bool) -> Responses:
    """`prepare` for an audit: the shadows' first wrong steps on the challenge `examples` (from the query engine)
    and the target's, the last row of `responses`, from its answers through `oracle` (`Statistic.audit`).

    A disjoint run's audit `responses` hold the shadow pool after the challenge examples (`attacks.audit`): the
    shadows' steps cover it too, the target's are NaN there (never asked, never scored)."""
    ensure_ray()
    data = plan.dataset
    target = responses.n_models - 1
    columns = audit_columns(plan, responses, examples)
    queries, pred = requery(plan.run, specs=walk(chosen), info=data.info, x=data.x, labels=data.y,
                            models=_models(chosen, pseudo, shadows), n_models=target, seed=plan.cfg.seed,
                            progress=progress)
    stat = np.full(responses.member.shape, np.nan)
    stat[:target] = first_wrong_step(pred, data.y)[:, columns]
    answers = target_pred(oracle, queries=queries, info=data.info, x=data.x, examples=examples, progress=progress)
    stat[target, :len(examples)] = first_wrong_step(answers[None], data.y[examples])[0]
    return responses.with_statistic(STATISTIC, stat)
