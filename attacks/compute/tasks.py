"""The one Ray task map of the attack stage: bounded submission, results taken in completion order.

Every Ray fan-out of `attacks.compute` and the studies' model access (`requery`, `boundary_distances`,
`transfer_statistic`, `attacks.studies.ood.query`) goes through `map_tasks`: at most `limit` tasks are in
flight (by default twice the cluster's CPUs, so the object store never holds every task's inputs and
results at once), each result is fetched as soon as its task finishes (a failing task raises at once,
not after the ones before it), and a tqdm bar counts finished tasks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import ray
from tqdm.auto import tqdm

from farm.cluster import ensure_ray

Item = TypeVar("Item")
RETRIES = 3  # runs of a task after the first one when its worker or node was lost
LOST = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.LocalRayletDiedError,
        ray.exceptions.ObjectLostError)


def task(fn: Callable) -> Any:
    """`fn` as a Ray task of `map_tasks`: Ray's own retries off (max_retries=0), `map_tasks` runs lost ones again."""
    return ray.remote(max_retries=0)(fn)


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
    ensure_ray()  # whoever calls: a study, tune or the attack stage (the cluster of RAY_ADDRESS, else a local Ray)
    limit = default_limit() if limit is None else limit
    if limit < 1:
        raise ValueError(f"limit: expected at least 1 task in flight, got {limit}")
    results: list[Any] = [None] * len(items)
    pending: dict[ray.ObjectRef, tuple[int, int]] = {}  # ref -> (item index, runs so far)
    again = lambda i, runs: pending.__setitem__(submit(items[i]), (i, runs))  # noqa: E731
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        for i in range(len(items)):
            if len(pending) >= limit:
                _take_one(pending, results, bar, again, desc=desc, unit=unit)
            again(i, 1)
        while pending:
            _take_one(pending, results, bar, again, desc=desc, unit=unit)
    return results


def _take_one(pending: dict, results: list[Any], bar: tqdm, again: Callable[[int, int], None], *, desc: str,
              unit: str) -> None:
    """Wait for the first of `pending` to finish and store its result at its item's index; submit it `again` when
    its worker or node was lost (at most RETRIES times)."""
    [done], _ = ray.wait(list(pending), num_returns=1)
    i, runs = pending.pop(done)
    try:
        results[i] = ray.get(done)
    except LOST as exc:
        if runs > RETRIES:
            raise
        print(f"{desc}: {unit} {i} runs again: its worker or node was lost ({type(exc).__name__})", file=sys.stderr)
        again(i, runs + 1)
        return
    bar.update(1)
