"""OSLO's crafted queries and every model's answers, through the crafting machinery of `attacks.compute.yoqo`
(two crafting sets, Ray tasks over example chunks, the `crafted/` cache) with the transfer kernel
(`attacks.compute.crafting.OsloSettings`): within the crafting set, each example's OUT shadows alternate between
source and validation models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.compute.crafting import OsloSettings
from attacks.compute.yoqo import audit_crafted, prepare_crafted, prepare_subsets
from attacks.methods.oslo import FOLD, STATISTIC, check_settings
from attacks.methods.yoqo import crafted_part
from attacks.responses import Responses
from farm.plan import Plan


def oslo_settings(settings: dict, *, kind: str) -> OsloSettings:
    """The crafting half of the attack's resolved `settings` (norm "auto": linf on images, l2 otherwise)."""
    check_settings(settings)
    norm = settings["norm"] if settings["norm"] != "auto" else "linf" if kind == "image" else "l2"
    return OsloSettings(levels=tuple(float(t) for t in settings["levels"]), steps=settings["steps"],
                        lr=float(settings["lr"]), momentum=float(settings["momentum"]), norm=norm)


def prepare(plan: Plan, responses: Responses, chosen: dict, *, scored: Sequence[int], everyone: Sequence[int],
            seed: int, progress: bool, local: bool) -> Responses:
    """`prepare_crafted` with OSLO's kernel (`Statistic.prepare`)."""
    return prepare_crafted(plan, responses, oslo_settings(chosen, kind=plan.dataset.info.kind), split=chosen["split"],
                           names=(STATISTIC, FOLD), scored=scored, everyone=everyone, seed=seed, progress=progress,
                           local=local)


def prepare_audit(plan: Plan, responses: Responses, oracle, chosen: dict, *, examples: np.ndarray,
                  pseudo: Sequence[int], shadows: Sequence[int], seed: int, progress: bool) -> Responses:
    """`audit_crafted` with OSLO's kernel (`Statistic.audit`)."""
    return audit_crafted(plan, responses, oracle, oslo_settings(chosen, kind=plan.dataset.info.kind),
                         split=chosen["split"], names=(STATISTIC, FOLD), examples=examples, pseudo=pseudo,
                         shadows=shadows, seed=seed, progress=progress)


def prepare_points(plan: Plan, responses: Responses, points: Sequence[dict], *, scored: Sequence[int],
                   everyone: Sequence[int], seed: int, progress: bool) -> list[Responses]:
    """OSLO's statistic at each of `points` (resolved settings that differ in levels only; `Budgets.prepare`): the
    queries crafted once at the point with the most levels, which hold every other point's levels. A level's
    query does not depend on the other levels (the walk is the same; each level keeps its first input below tau)."""
    largest = crafted_part(max(points, key=lambda p: len(p["levels"])))
    levels = [float(t) for t in largest["levels"]]
    columns = []
    for point in points:
        same = {**crafted_part(point), "levels": largest["levels"]} == largest
        if not same or not {float(t) for t in point["levels"]} <= set(levels):
            raise ValueError(f"oslo point {point} is not a subset of {largest}")
        columns.append([levels.index(float(t)) for t in point["levels"]])
    return prepare_subsets(plan, responses, oslo_settings(largest, kind=plan.dataset.info.kind), columns,
                           split=largest["split"], names=(STATISTIC, FOLD), scored=scored, everyone=everyone,
                           seed=seed, progress=progress)
