"""Issue 30: a config that sets memory is checked against an estimate before anything is allocated or written
(`farm.resources`), here against small bounds (SHADOWFARM_MEMORY_BYTES), never by exhausting the machine."""

import dataclasses
from pathlib import Path

import pytest

from farm import queries as query_module
from farm.config import load_config
from farm.errors import ConfigError
from farm.plan import plan_run
from farm.queries import MAX_QUERIES
from farm.resources import MEMORY_ENV, batch_note, estimates, size_text
from jobs.common import resolve_config

MiB = 2**20


def _plan(tmp_path: Path, *overrides: str):
    return plan_run(load_config(resolve_config("quickstart"), list(overrides)), str(tmp_path / "out"))


@pytest.mark.parametrize("overrides, bound, field", [
    (("membership.n_models=5000",), 64 * MiB, "membership.n_models: the membership matrix and table of 5,000 models"),
    (("queries=[clean, {kind: gaussian, sigma: 0.1, n: 2000}]",), 256 * MiB,
     "queries: the responses of 64 models x 1,797 examples x 2,001 queries"),
    (("train.batch_size=100000",), 1024 * MiB, "train.batch_size: a trainer actor's index streams"),
    (("train.epochs=100000",), 1024 * MiB, "train.epochs: a trainer actor's index streams"),
    (("model.hidden=[100000]",), 1024 * MiB, "farm.group_size: the weights, gradients and optimizer state of 16"),
])
def test_memory_estimates_refuse_before_the_run_exists(tmp_path, monkeypatch, overrides, bound, field):
    monkeypatch.setenv(MEMORY_ENV, str(bound))
    with pytest.raises(ConfigError, match="more than this machine's memory can hold") as info:
        _plan(tmp_path, *overrides)
    assert str(info.value).startswith(field) and f"({size_text(bound)}, of which" in str(info.value)
    assert not (tmp_path / "out").exists()
    _plan(tmp_path)  # the quickstart itself fits the same bound
    assert not (tmp_path / "out").exists()


def test_group_size_beyond_the_models_costs_nothing_more():
    cfg = load_config(resolve_config("quickstart"), [])
    wide = load_config(resolve_config("quickstart"), ["farm.group_size=100000"])
    sizes = dict(n_examples=1797, n_features=64, n_classes=10, n_queries=59, n_params=4810)
    by_field = lambda c: {field: need for field, need, _ in estimates(c, **sizes)}  # noqa: E731
    assert by_field(wide)["farm.group_size"] == 4 * by_field(cfg)["farm.group_size"]  # 64 models, not 100,000


def test_queries_are_counted_before_they_are_expanded(tmp_path, monkeypatch):
    """n: 10^9 copies would be 10^9 dicts in memory: the count refuses them without expanding any."""
    gaussian = query_module.QUERY_KINDS["gaussian"]
    expanded = []
    monkeypatch.setitem(query_module.QUERY_KINDS, "gaussian",
                        dataclasses.replace(gaussian, expand=lambda p: expanded.append(p["n"]) or gaussian.expand(p)))
    with pytest.raises(ConfigError, match=f"1,000,000,001 queries in total .* at most {MAX_QUERIES:,}"):
        _plan(tmp_path, "queries=[clean, {kind: gaussian, sigma: 0.1, n: 1000000000}]")
    assert expanded == []


def test_a_batch_larger_than_a_training_set_is_named_in_a_note(tmp_path):
    """Such a batch repeats examples (kept: the default 128 exceeds small runs' training sets); the train job says
    so in one line naming the field, its value and the largest training set."""
    plan = _plan(tmp_path, "data.subsample=120", "train.batch_size=1000")
    largest = int(plan.member.sum(1).max())
    assert 60 <= largest < 120  # about half the population: p_in 0.5, the largest of 64 models
    assert batch_note(plan.cfg, plan.member) == (
        f"train.batch_size: 1,000 is larger than a model's training set (at most {largest} examples): each batch "
        f"repeats examples, one step per epoch (close to full-batch training); set train.batch_size: {largest} or "
        "less for batches of distinct examples")
    assert batch_note(_plan(tmp_path, "data.subsample=120", f"train.batch_size={largest}").cfg, plan.member) is None
    assert not (tmp_path / "out").exists()
