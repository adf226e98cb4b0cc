"""The one Ray task map of the attack stage: bounded submission, results taken in completion order.

Every Ray fan-out of `attacks.compute` and the studies' model access (`requery`, `boundary_distances`,
`transfer_statistic`, `attacks.studies.ood.query`) goes through `map_tasks`: at most `limit` tasks are in
flight (by default twice the cluster's CPUs, so the object store never holds every task's inputs and
results at once), each result is fetched as soon as its task finishes (a failing task raises at once,
not after the ones before it), and a tqdm bar counts finished tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import ray
from tqdm.auto import tqdm

Item = TypeVar("Item")


def default_limit() -> int:
    """Tasks in flight by default: twice the cluster's CPUs (at least 2), so no CPU waits for a submission."""
    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def map_tasks(submit: Callable[[Item], ray.ObjectRef], items: Iterable[Item], *, desc: str, unit: str = "task",
              limit: int | None = None, progress: bool = True) -> list[Any]:
    """[ray.get(submit(item)) for item in items], with at most `limit` tasks in flight (None: `default_limit()`).

    `submit` starts one task and returns its ref; results are fetched in completion order and returned in the
    order of `items`.
    """
    items = list(items)
    if not items:
        return []
    limit = default_limit() if limit is None else limit
    if limit < 1:
        raise ValueError(f"limit: expected at least 1 task in flight, got {limit}")
    results: list[Any] = [None] * len(items)
    pending: dict[ray.ObjectRef, int] = {}
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        for i, item in enumerate(items):
            if len(pending) >= limit:
                _take_one(pending, results, bar)
            pending[submit(item)] = i
        while pending:
            _take_one(pending, results, bar)
    return results


def _take_one(pending: dict[ray.ObjectRef, int], results: list[Any], bar: tqdm) -> None:
    """Wait for the first of `pending` to finish and store its result at its item's index."""
    [done], _ = ray.wait(list(pending), num_returns=1)
    results[pending.pop(done)] = ray.get(done)
    bar.update(1)
