"""`oslo`: the transfer kernel batched = the per-example loop, its tau levels, the attack end to end."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from attacks.compute.crafting import OsloSettings, craft, loop_craft
from attacks.stage import AttackOptions, attack_run
from farm.errors import ConfigError
from farm.plan import load_plan

NAME = "oslo"
FAST = dict(n_pseudo=2, bootstrap=0)


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.OVERFIT)


def test_the_transfer_kernel_batched_is_the_loop_and_pushes_further_at_lower_levels(run, farms):
    bounds = load_plan(run).dataset.info.bounds
    (base, params, buffers), models, x, y, member = farms.crafting_group(run, [2, 3, 4, 5, 6, 7], 12)
    settings = OsloSettings(levels=(0.5, 0.1), steps=15, lr=0.02)
    batched = craft(base, params, buffers, x, y, member, settings=settings, bounds=bounds)
    looped = loop_craft(models, x, y, member, settings=settings, bounds=bounds)
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)
    distance = (batched - x[:, None]).flatten(2).abs().amax(-1)  # L-infinity steps on images
    assert (distance[:, 1] >= distance[:, 0]).all() and (distance[:, 1] > 0).any()


def test_the_attack_counts_one_query_per_level_and_grades(run):
    settings = {NAME: {"levels": [0.5, 0.25, 0.1], "steps": 10}}
    [result] = attack_run(run, AttackOptions(attacks=(NAME,), settings=settings, **FAST), progress=False)
    metrics = json.loads(Path(run, "attacks", NAME, "metrics.json").read_text())
    assert metrics["queries_per_example"] == result["queries_per_example"] == 3
    assert pd.read_parquet(f"{run}/attacks/{NAME}/scores.parquet")["score"].nunique() > 2
    with pytest.raises(ConfigError, match=r"levels must be 1 to 8 numbers in \(0, 1\), got \[2\]"):
        attack_run(run, AttackOptions(attacks=(NAME,), settings={NAME: {"levels": [2]}}, **FAST), progress=False)
