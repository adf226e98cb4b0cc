"""How `shadowfarm tune` (`attacks.tune`) schedules its trials: how many at once, and in what order a searcher
learns their results, so that the same seed proposes the same trials however the trials' times fall."""

from __future__ import annotations

import copy

from ray.tune.search import Searcher

from farm.errors import ConfigError


def concurrent_trials(cpus_per_trial: float, max_concurrent: int | None) -> int:
    """Trials at once: `max_concurrent`, or (None) as many as the cluster's CPUs hold at `cpus_per_trial` each."""
    if cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial: expected a number > 0, got {cpus_per_trial}")
    if max_concurrent is None:
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))
    if max_concurrent < 1:
        raise ConfigError(f"--max-concurrent: expected at least 1, got {max_concurrent}")
    return max_concurrent


class InOrder(Searcher):
    """`searcher` with at most `max_concurrent` trials running, where the i-th trial proposed (from 0) is proposed
    having learnt exactly the results of trials 0 .. i - max_concurrent (results are passed on in proposal order).

    A plain concurrency limit tells the searcher of results in the order trials finish, so which trials a model-based
    searcher (TPE) proposes next depends on timing; here it depends on the seed only. Throughput is that of the plain
    limit but when a trial finishes before an earlier one: the next proposal then waits for the earlier one.
    """

    def __init__(self, searcher: Searcher, max_concurrent: int):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.max_concurrent = searcher, max_concurrent
        self.order: list[str] = []  # trial ids in proposal order
        self.finished: dict[str, tuple[dict | None, bool]] = {}  # finished, not yet passed on to the searcher
        self.told = 0  # trials whose results the searcher has (a prefix of `order`)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        known = len(self.order) - self.max_concurrent + 1  # results the searcher must have for this proposal
        if any(t not in self.finished for t in self.order[self.told:known]):
            return None  # Tune asks again once a trial finishes
        for first in self.order[self.told:max(known, self.told)]:
            result, error = self.finished.pop(first)
            self.searcher.on_trial_complete(first, result=result, error=error)
            self.told += 1
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.order.append(trial_id)
        return suggestion

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.finished[trial_id] = (result, error)  # passed on when a proposal needs it (`suggest`)

    def get_state(self) -> dict:  # Tune's experiment checkpoint (the searcher is saved on its own)
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "searcher"})

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
