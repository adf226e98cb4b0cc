"""`attacks.tune.search.InOrder`: the trials TPE proposes depend on the seed, not on the order trials finish."""

import random

import pytest
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from attacks.tune.search import InOrder, concurrent_trials
from farm.errors import ConfigError

SPACE = {"x": tune.uniform(-2.0, 2.0), "k": tune.choice([1, 2, 3])}


def _score(config: dict) -> float:
    return -(config["x"] - 0.7) ** 2 - 0.1 * config["k"]


def _proposals(wrap, finish_order, n: int = 16, c: int = 2) -> list[dict]:
    """Drive a searcher as Tune does: a free slot asks for a trial; when none comes, a running one finishes
    (finish_order picks which of the running trials)."""
    searcher = wrap(OptunaSearch(metric="score", mode="max", seed=3), max_concurrent=c)
    searcher.set_search_properties("score", "max", SPACE)
    proposed, running = [], []
    while len(proposed) < n:
        config = searcher.suggest(f"t{len(proposed)}") if len(running) < c else None
        if config is None:
            done = running.pop(finish_order(running))
            searcher.on_trial_complete(done, {"score": _score(proposed[int(done[1:])])})
            continue
        proposed.append(config)
        running.append(f"t{len(proposed) - 1}")
    return proposed


def test_in_order_proposals_do_not_depend_on_which_trial_finishes_first():
    oldest = lambda running: 0  # noqa: E731
    shuffled = random.Random(4)  # an order under which the plain limit proposes other trials
    any_one = lambda running: shuffled.randrange(len(running))  # noqa: E731
    assert _proposals(InOrder, oldest) == _proposals(InOrder, any_one)
    # TPE's 10 random start-up trials come first; after them a plain concurrency limit follows the finishing order
    shuffled.seed(4)
    plain_oldest, plain_any = _proposals(ConcurrencyLimiter, oldest), _proposals(ConcurrencyLimiter, any_one)
    assert plain_oldest[:10] == plain_any[:10] and plain_oldest != plain_any


def test_in_order_runs_at_most_max_concurrent_trials():
    searcher = InOrder(OptunaSearch(metric="score", mode="max", seed=0), max_concurrent=2)
    searcher.set_search_properties("score", "max", SPACE)
    assert searcher.suggest("a") is not None and searcher.suggest("b") is not None
    assert searcher.suggest("c") is None  # a still running
    searcher.on_trial_complete("b", {"score": 0.0})
    assert searcher.suggest("c") is None  # b finished first: c waits for a
    searcher.on_trial_complete("a", {"score": 1.0})
    assert searcher.suggest("c") is not None and searcher.told == 1  # c knows a only, as if a had finished first


def test_concurrent_trials_fills_the_cluster(ray_local):
    assert concurrent_trials(1.0, None) == 2 and concurrent_trials(0.5, None) == 4 and concurrent_trials(2, 3) == 3
    with pytest.raises(ConfigError, match="--max-concurrent"):
        concurrent_trials(1.0, 0)
    with pytest.raises(ConfigError, match="--cpus-per-trial"):
        concurrent_trials(0, None)
