"""`yoqo`: crafting through stacked shadows (batched = the per-example loop, chunking-free), crafting never reads a
target, leave-one-out for pseudo-targets, the split that keeps calibration honest, a graded score, and its queries."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.audit import AuditOptions, audit_run, open_target, target_key
from attacks.compute import yoqo as compute
from attacks.compute.crafting import CraftSettings, craft, loop_craft
from attacks.loader import load_responses
from attacks.registry import run_attack
from attacks.stage import AttackOptions, attack_run
from attacks.stats.metrics import auc
from attacks.stats.shadow_game import pseudo_targets, shadow_scores
from farm.content import SUCCESS, parse_success, success_text
from farm.errors import ConfigError
from farm.plan import load_plan

NAME = "yoqo"
FAST = dict(n_pseudo=2, bootstrap=0)
CHEAP = {"steps": 6, "n_queries": 2}
TARGETS, SHADOWS = [0, 1], list(range(2, 8))


@pytest.fixture(scope="module")
def run(farms):
    return farms.run(*farms.OVERFIT)


def _settings(**extra):
    from attacks.registry import resolve_settings
    return resolve_settings(NAME, {**CHEAP, **extra})


def test_batched_crafting_is_the_per_example_loop_and_does_not_depend_on_chunking(run, farms):
    plan = load_plan(run)
    crafters = [2, 4, 6]
    (base, params, buffers), models, x, y, member = farms.crafting_group(run, crafters, 10)
    settings, data = CraftSettings(steps=5, n_queries=2), plan.dataset
    batched = craft(base, params, buffers, x, y, member, settings=settings, bounds=data.info.bounds)
    looped = loop_craft(models, x, y, member, settings=settings, bounds=data.info.bounds)
    assert batched.shape == (10, 2, *data.info.shape)
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)
    assert not torch.equal(batched[:, 1], x)  # it moved
    chunks = [compute.crafted_inputs(plan, plan.member, crafters, settings, chunk_examples=size, local=True,
                                     progress=False) for size in (7, 256)]
    assert plan.run.listdir("crafted")  # cached under the run, keyed by settings and crafters
    np.testing.assert_array_equal(chunks[0], chunks[1])


def test_crafting_sets_leave_every_answering_model_out():
    sets = compute.crafting_sets(SHADOWS, split=True, seed=0)
    assert sorted(sets[0] + sets[1]) == SHADOWS and abs(len(sets[0]) - len(sets[1])) <= 1
    for model in SHADOWS + TARGETS:  # a pseudo-target (a shadow) or a target never labels queries it crafted
        assert model not in sets[compute.answering_set(model, sets)]
    assert compute.answering_set(TARGETS[0], sets) == 0
    assert compute.crafting_sets(SHADOWS, split=True, seed=1) != sets  # seeded


def test_crafting_never_reads_the_targets_weights_or_membership(run, tmp_path):
    """A planted target: its weights replaced by another model's and its membership flipped. Were either read,
    the crafted queries (and so every shadow's statistic) would change; they do not, and the target's own
    statistic follows its new weights."""
    planted = str(tmp_path / "planted")
    shutil.copytree(run, planted)
    donor = compute.crafting_sets(SHADOWS, split=True, seed=0)[1][0]  # labels set 0's queries, as a target does
    target = Path(planted, "models", "model_id=00000")
    shutil.copy(Path(run, "models", f"model_id={donor:05d}", "weights.pt"), target / "weights.pt")
    digest, records = parse_success((target / SUCCESS).read_text())  # the planted weights, recorded as the shard's
    (target / SUCCESS).write_text(success_text(digest, {name: (target / name).read_bytes() for name in records}))
    rows = []
    for where, flip in ((run, False), (planted, True)):
        plan, responses = load_plan(where), load_responses(load_plan(where).run)
        member = responses.member.copy()
        if flip:
            member[TARGETS] = ~member[TARGETS]
        rows.append(compute._statistics(plan, member, compute.craft_settings(_settings()), split=True,
                                        names=("yoqo", "yoqo_fold"), models=TARGETS + SHADOWS, shadows=SHADOWS,
                                        seed=0, progress=False, local=True))
    (stats, fold, inputs), (stats2, fold2, inputs2) = rows
    for a, b in zip(inputs, inputs2, strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("yoqo", "yoqo_answers", "yoqo_margins"):
        np.testing.assert_array_equal(stats[name][SHADOWS], stats2[name][SHADOWS])
    np.testing.assert_array_equal(fold, fold2)
    np.testing.assert_array_equal(stats2["yoqo"][0], stats["yoqo"][donor])
    assert np.isnan(stats2["yoqo_margins"][TARGETS]).all()  # a target gives labels only: no margins are taken


def test_calibrating_on_the_crafting_shadows_overstates_the_shadow_game(run):
    """With split=False the shadows that crafted a query also calibrate it, and each pseudo-target labels queries
    it helped craft: the shadow game promises more than any model that did not craft them shows. The split game
    plays honestly: its pseudo-targets never crafted their queries."""
    plan = load_plan(run)
    figures = {}
    for split in (True, False):
        settings = _settings(split=split, steps=20, n_queries=1)
        responses = compute.prepare(plan, load_responses(plan.run).without_logits(), settings, scored=TARGETS,
                                    everyone=SHADOWS, seed=0, progress=False, local=True)

        def attack(r, *, target, shadows, settings=settings):
            return run_attack(NAME, r, target=target, shadows=shadows, settings=settings)

        game = auc(*shadow_scores(attack, responses, target=TARGETS[0], shadows=SHADOWS, n_pseudo=6, seed=0))
        target = auc(np.concatenate([attack(responses, target=t, shadows=SHADOWS) for t in TARGETS]),
                     np.concatenate([responses.member[t] for t in TARGETS]))
        figures[split] = (game, target)
    (honest_game, _), (crafted_game, crafted_target) = figures[True], figures[False]
    assert crafted_game > crafted_target + 0.1 and crafted_game > honest_game + 0.1


def test_the_attack_gives_a_graded_score_and_counts_its_queries(run):
    [result] = attack_run(run, AttackOptions(attacks=(NAME,), settings={NAME: CHEAP}, **FAST), progress=False)
    metrics = json.loads(Path(run, "attacks", NAME, "metrics.json").read_text())
    assert metrics["queries_per_example"] == result["queries_per_example"] == 2
    assert pd.read_parquet(f"{run}/attacks/{NAME}/scores.parquet")["score"].nunique() > 2  # ROC: > 2 points
    assert len(pseudo_targets(SHADOWS, n_pseudo=2, seed=0)) == 2
    with pytest.raises(ConfigError, match=r"n_queries must be an integer in \[1, 8\], got 9"):
        attack_run(run, AttackOptions(attacks=(NAME,), settings={NAME: {"n_queries": 9}}, **FAST), progress=False)
    with pytest.raises(ConfigError, match=r"crafting must be one of auto, online, offline, got 'bogus'"):
        attack_run(run, AttackOptions(attacks=(NAME,), settings={NAME: {"crafting": "bogus"}}, **FAST), progress=False)
    # queries crafted offline and scored online are the offline variant's queries (one crafting, one cache key)
    craft = compute.craft_settings
    assert craft(_settings(crafting="offline")) == craft(_settings(variant="offline")) != craft(_settings())
    assert craft(_settings(variant="offline", crafting="online")) == craft(_settings())


def test_margins_grade_a_single_query_that_the_fraction_cannot(run):
    """One crafted query is one right/wrong answer: the fraction, calibrated per example over a few shadows, takes
    few values (ties at the top make TPR at low FPR unreadable); score "margins" weighs that answer by the
    calibrating shadows' margins on the query, so most examples get a score of their own, and it still ranks
    members above non-members. Score "fraction" breaks its ties by the margins score and changes no other order."""
    plan = load_plan(run)
    settings = _settings(n_queries=1, steps=20)
    responses = compute.prepare(plan, load_responses(plan.run).without_logits(), settings, scored=TARGETS,
                                everyone=SHADOWS, seed=0, progress=False, local=True)
    member = np.concatenate([responses.member[t] for t in TARGETS])
    untied = replace(responses, statistics={k: v for k, v in responses.statistics.items() if k != "yoqo_margins"})
    scores = {score: np.concatenate([run_attack(NAME, view, target=t, shadows=SHADOWS,
                                                settings={**settings, "score": score.split()[0]}) for t in TARGETS])
              for score, view in (("fraction", responses), ("margins", responses), ("fraction untied", untied))}
    untied, fraction = scores["fraction untied"], scores["fraction"]
    assert len(np.unique(scores["margins"])) > 0.6 * len(member) > 3 * len(np.unique(untied))
    assert len(np.unique(fraction)) > 2 * len(np.unique(untied)) and np.abs(fraction - untied).max() <= 1e-9
    assert (np.diff(fraction[np.lexsort((fraction, untied))]) >= 0).all()  # the fraction's order, refined
    assert auc(scores["margins"], member) > 0.6
    right, margins = responses.statistics["yoqo_answers"][SHADOWS], responses.statistics["yoqo_margins"][SHADOWS]
    assert ((margins > 0) == (right == 1)).mean() > 0.999  # a shadow's margin is > 0 where it answered right
    assert np.isnan(responses.statistics["yoqo_margins"][TARGETS]).all()


@pytest.mark.parametrize("score", ["fraction", "margins"])
def test_an_audit_asks_n_queries_per_example_within_budget_and_scores_as_the_attack_stage(run, score):
    """model:0 answers the run's query set (one clean query) and then exactly n_queries crafted queries per
    example: a budget of exactly that holds, and the scores are `shadowfarm attack`'s for target 0 (with either
    score: the audit takes the shadows' margins, the target's labels only)."""
    settings = {**CHEAP, "score": score}
    oracle, name = open_target(run, "model:0", budget=120 * (1 + CHEAP["n_queries"]))
    [audited] = audit_run(run, oracle, target=name, options=AuditOptions(attacks=(NAME,), settings={NAME: settings},
                                                                         **FAST), progress=False)
    assert oracle.queries_used == 120 + audited["queries_per_example"] * audited["n_examples"] == 360
    attack_run(run, AttackOptions(attacks=(NAME,), settings={NAME: settings}, targets=(0,), **FAST), progress=False)
    a = pd.read_parquet(f"{run}/audit/{target_key(name)}/{NAME}/scores.parquet")
    np.testing.assert_array_equal(a["score"], pd.read_parquet(f"{run}/attacks/{NAME}/scores.parquet")["score"])
