"""The query-budget study: each frontier row sends the queries its setting says, subsetting the run's noise copies
gives exactly the answers of a query set of that many copies, crafting once at the largest point gives every
smaller point's statistic, the best attack at a budget is within it, and no threshold reads a target's membership."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.artifacts import QUERIES, QUERIES_SCHEMA, study_meta
from attacks.audit import AuditOptions, audit_run, open_target, target_key
from attacks.compute.requery import requery_responses
from attacks.compute.statistics import prepare_statistics
from attacks.loader import load_responses
from attacks.registry import get_attack, own_queries, run_attack
from attacks.report.queries import TITLE, format_queries
from attacks.spec import load
from attacks.stage import AttackOptions, attack_run
from attacks.stats.correctness import NOISE_KINDS, with_copies
from attacks.studies.game import study_games
from attacks.studies.queries import (
    Point,
    best_at_budgets,
    fits,
    frontier_rows,
    note_mixed_targets,
    queries_sent,
    queries_study,
)
from farm.config import QuerySpec
from farm.errors import ConfigError
from farm.plan import load_plan
from farm.storage import RunDir
from jobs.study import queries as study_queries

ATTACKS = ("gap", "noise", "calibrated", "fixed_direction", "yoqo")


@pytest.fixture(scope="module")
def studied(farms):
    """A tiny run (8 models, 120 digits, clean + 6 gaussian copies) and its frontier at 1, 2, 4, 8 copies."""
    run = farms.run(*farms.SMALL)
    attack_run(run, AttackOptions(attacks=("gap",), n_pseudo=4, bootstrap=0), progress=False)  # the report needs one
    assert study_queries.main(["--run", run, "--attacks", ",".join(ATTACKS), "--copies", "1,2,4,8", "--quiet"]) == 0
    return run, pd.read_parquet(f"{run}/{QUERIES}")


def test_rows_send_what_their_setting_says(studied, capsys):
    run, table = studied
    assert list(table.columns) == QUERIES_SCHEMA.names
    sent = {(r.attack, r.setting): r.queries_per_example for r in table.itertuples()}
    assert sent == {("gap", "{}"): 1,
                    **{("noise", f'{{"copies": {k}}}'): k for k in (1, 2, 4, 6)},  # 8 asked: capped at the run's 6
                    **{("calibrated", json.dumps({"copies": k, "kinds": ["gaussian"]})): k for k in (1, 2, 4, 6)},
                    **{("fixed_direction", f'{{"steps": {k}}}'): k for k in (5, 10, 20, 30)},
                    **{("yoqo", json.dumps({"n_queries": k, "score": s})): k for k in (1, 2, 4, 8)
                       for s in ("fraction", "margins")}}
    assert (table["n_members"] + table["n_nonmembers"] == 120).all() and (table["n_targets"] == 1).all()
    for f in ("0.01", "0.001"):  # 95% bootstrap intervals (the default 200 replicates)
        low, high = table[f"tpr_at_fpr_ci_low_{f}"], table[f"tpr_at_fpr_ci_high_{f}"]
        assert ((0 <= low) & (low <= high) & (high <= 1)).all()
    assert ((table["auc_ci_low"] <= table["auc_ci_high"]) & (table["auc_ci_high"] > table["auc_ci_low"])).any()
    html = open(f"{run}/report/index.html").read()
    assert TITLE in html and "queries.png" in html
    assert "best attack" in format_queries(table.to_dict("records")) and "(95% CI)" in format_queries(
        table.to_dict("records"))


def test_subsetting_copies_is_a_query_set_of_that_many_copies(studied):
    """The first k copies of the run's query set are the queries of a set of k copies (same query ids, same noise):
    re-querying every model with [clean, gaussian n=k] gives the very answers the subset holds, and the study's
    noise row at k copies is the attack stage's figure on that query set."""
    run, table = studied
    plan = load_plan(run)
    responses = load_responses(plan.run, logits=False)
    for k in (2, 4):
        subset = with_copies(responses, NOISE_KINDS, k)
        specs = [QuerySpec("clean"), QuerySpec("gaussian", (("n", k), ("sigma", 0.2)))]
        asked = requery_responses(plan, responses, specs, local=True)
        assert subset.query_kinds == asked.query_kinds == ("clean",) + ("gaussian",) * k
        assert np.array_equal(subset.pred, asked.pred)
        game = study_games(plan, ["noise"])[0]
        row = table[(table.attack == "noise") & (table.setting == f'{{"copies": {k}}}')].iloc[0]
        again = frontier_rows(plan, game, asked, copies=[k])
        assert again[0]["auc"] == row.auc and again[0]["tpr_at_fpr_0.01"] == row["tpr_at_fpr_0.01"]
    assert not np.array_equal(with_copies(responses, NOISE_KINDS, 2).pred[..., 1:], responses.pred[..., -2:])


def test_crafting_once_gives_every_smaller_point(studied):
    """YOQO's points from one descent at 8 queries equal crafting each point on its own (the checkpoints of 2
    queries are two of the 8), and OSLO's levels [0.5, 0.1] read from 8 levels equal crafting those two; a point
    scored by margins, noise copies added, reads the same statistics (the shadows' margins on those queries among
    them) and scores with the copies."""
    run, _ = studied
    plan = load_plan(run)
    responses = load_responses(plan.run, logits=False)
    game = study_games(plan, ["yoqo"])[0]
    scored, everyone = sorted(set(game.targets) | set(game.pseudo_targets.tolist())), game.shadows.tolist()
    for name, small, large, key in (("yoqo", {"n_queries": 2}, {"n_queries": 8}, "yoqo"),
                                    ("oslo", {"levels": [0.5, 0.1]},
                                     {"levels": [0.75, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05, 0.02]}, "oslo")):
        settings = {**study_games(plan, [name])[0].settings, "steps": 10}
        asked = [{**settings, **small}, {**settings, **large},
                 {**settings, **small, "score": "margins", "noise_copies": 2}]
        points = load(get_attack(name).budgets.prepare)(plan, responses, asked, scored=scored, everyone=everyone,
                                                        seed=0, progress=False)
        alone = prepare_statistics(plan, responses, {name: {**settings, **small}}, scored=scored, everyone=everyone,
                                   seed=0, progress=False)
        for stat in (key, f"{key}_answers", f"{key}_margins"):
            assert np.array_equal(points[0].statistics[stat], alone.statistics[stat], equal_nan=True), (name, stat)
            assert np.array_equal(points[2].statistics[stat], alone.statistics[stat], equal_nan=True), (name, stat)
        assert not np.array_equal(points[1].statistics[key], alone.statistics[key], equal_nan=True), name
        added = [run_attack(name, points[2], target=game.targets[0], shadows=game.shadows,
                            settings={**asked[2], "noise_copies": c}) for c in (0, 2)]  # scored with 2 copies added
        assert np.isfinite(added[1]).all() and not np.array_equal(*added), name
        assert alone.statistics[f"{key}_margins"].shape[-1] == len(small.get("levels", [0, 0]))


def test_yoqo_adds_calibrated_on_the_first_noise_copies(studied):
    """noise_copies k: yoqo's score plus `calibrated`'s on the first k of the run's noise copies (same calibration
    settings), n_queries + k queries per example in the study (n_queries of its own: the copies are the run's);
    more copies than the run holds is refused, and the study leaves out the points a run cannot play (too few
    copies; margins or added copies under the global variant)."""
    run, _ = studied
    plan = load_plan(run)
    responses = load_responses(plan.run, logits=False)
    game = study_games(plan, ["yoqo"])[0]
    settings = {**game.settings, "n_queries": 2, "steps": 10}
    view = prepare_statistics(plan, responses, {"yoqo": settings}, scored=list(game.targets),
                              everyone=game.shadows.tolist(), seed=game.seed, progress=False)
    target, shadows = game.targets[0], game.shadows

    def yoqo(**extra):
        return run_attack("yoqo", view, target=target, shadows=shadows, settings={**settings, **extra})

    calibration = {k: settings[k] for k in ("variant", "global_variance", "min_std", "empty")}
    noise = run_attack("calibrated", with_copies(view, NOISE_KINDS, 4), target=target, shadows=shadows,
                       settings={"kinds": ["gaussian"], **calibration})
    np.testing.assert_allclose(yoqo(noise_copies=4), yoqo() + noise)
    assert own_queries("yoqo", {**settings, "noise_copies": 4}) == 2  # of its own: the copies are the run's
    assert queries_sent(plan, game, view, Point("yoqo", {"n_queries": 2, "noise_copies": 4}, "crafted")) == 6
    with pytest.raises(ConfigError, match=r"noise_copies 7 needs that many noise copies .* it has 6"):
        yoqo(noise_copies=7)
    options = {"attacks": ("yoqo",), "settings": {"yoqo": {"n_queries": 2, "steps": 10, "noise_copies": 4}},
               "n_pseudo": 2, "bootstrap": 0}  # an audit reads the copies from the run's query set it asks
    oracle, name = open_target(run, f"model:{target}")
    [audited] = audit_run(run, oracle, target=name, options=AuditOptions(**options), progress=False)
    attack_run(run, AttackOptions(**options, targets=(target,)), progress=False)
    assert oracle.queries_used == (len(view.query_kinds) + 2) * audited["n_examples"]
    np.testing.assert_array_equal(pd.read_parquet(f"{run}/audit/{target_key(name)}/yoqo/scores.parquet")["score"],
                                  pd.read_parquet(f"{run}/attacks/yoqo/scores.parquet")["score"])
    assert fits(game, Point("yoqo", {"n_queries": 8, "noise_copies": 6}, "crafted"), view)
    assert not fits(game, Point("yoqo", {"n_queries": 8, "noise_copies": 8}, "crafted"), view)
    flat = replace(game, settings={**game.settings, "variant": "global"})
    assert fits(flat, Point("yoqo", {"n_queries": 1, "score": "fraction"}, "crafted"), view)
    assert not fits(flat, Point("yoqo", {"n_queries": 1, "score": "margins"}, "crafted"), view)


def test_best_at_each_budget_stays_within_it():
    def row(attack, queries, tpr, auc):
        return {"attack": attack, "queries_per_example": queries, "tpr_at_fpr_0.01": tpr, "auc": auc}

    rows = [row("gap", 1, 0.01, 0.55), row("yoqo", 2, 0.05, 0.60), row("a", 4, 0.05, 0.62), row("b", 4, 0.05, 0.61),
            row("noise", 16, 0.30, 0.70), row("calibrated", 51, 0.20, 0.90)]
    best = {e["budget"]: e["row"] and e["row"]["attack"] for e in best_at_budgets(rows)}
    assert best == {1: "gap", 2: "yoqo", 4: "a", 8: "a", 16: "noise", 32: "noise", 64: "noise"}  # a: tie, higher AUC
    assert best_at_budgets(rows, [0.5])[0]["row"] is None
    for entry in best_at_budgets(rows):
        assert entry["row"]["queries_per_example"] <= entry["budget"]


def test_attacks_played_on_different_targets_are_noted(capsys):
    """Results of `shadowfarm attack --targets` for some attacks only pool different examples: the study says so."""
    note_mixed_targets({"gap": [0, 1], "yoqo": [1, 0]})
    assert capsys.readouterr().err == ""
    note_mixed_targets({"gap": [0, 1], "noise": [0, 1], "yoqo": [4, 5]})
    assert capsys.readouterr().err.strip() == (
        "shadowfarm: note: the attacks' results were played on different targets (gap, noise: targets 0,1; yoqo: "
        "targets 4,5), so their rows pool different examples (see mem/non); `shadowfarm attack RUN --targets ...` "
        "for every attack lines them up")


def test_thresholds_never_read_the_target_membership(studied):
    """The target's membership planted upside down: its scores and the shadow thresholds stay, so the realized FPR
    and TPR at each shadow threshold swap exactly, and the AUC turns into 1 - AUC."""
    run, _ = studied
    plan = load_plan(run)
    responses = load_responses(plan.run, logits=False)
    member = responses.member.copy()
    member[0] = ~member[0]  # model 0: the target
    flipped = replace(responses, member=member)
    for game in study_games(plan, ["noise", "calibrated", "fixed_direction"]):
        for a, b in zip(frontier_rows(plan, game, responses, copies=[2, 6]),
                        frontier_rows(plan, game, flipped, copies=[2, 6]), strict=True):
            assert a["setting"] == b["setting"] and b["auc"] == pytest.approx(1 - a["auc"])
            for f in ("0.01", "0.001"):
                assert (b[f"shadow_threshold_fpr_{f}"], b[f"shadow_threshold_tpr_{f}"]) == (
                    a[f"shadow_threshold_tpr_{f}"], a[f"shadow_threshold_fpr_{f}"]), (game.name, a["setting"])


def test_the_study_reads_the_attack_results_settings(farms):
    """An attack with a result keeps its settings (here noise's classifier variant) but the budget's; a study of
    another attack keeps its row."""
    run = farms.run(*farms.SMALL)
    attack_run(run, AttackOptions(attacks=("noise",), settings={"noise": {"variant": "classifier"}}, n_pseudo=2,
                                  bootstrap=0), progress=False)
    rows = queries_study(run, attacks=["noise"], copies=[6])
    metrics = json.loads(open(f"{run}/attacks/noise/metrics.json").read())
    assert rows[0]["auc"] == metrics["auc"] and rows[0]["n_pseudo_targets"] == 2
    assert rows[0]["tpr_at_fpr_0.01"] == metrics["tpr_at_fpr"]["0.01"]
    queries_study(run, attacks=["gap"], copies=[6])  # another attack: added to the frontier, noise's row kept
    assert sorted(pd.read_parquet(f"{run}/{QUERIES}")["attack"]) == ["gap", "noise"]
    targets = study_meta(RunDir(run), QUERIES)["attack_targets"]  # the kept row's targets kept with it
    assert targets == {"noise": metrics["target_model_ids"], "gap": metrics["target_model_ids"]}


def test_a_kept_row_from_other_targets_is_noted(farms, capsys):
    """gap re-attacked on other targets, then studied alone: noise's row, kept from the earlier study, pools other
    examples, and the note names its targets (read back from the earlier study's metadata)."""
    run = farms.run(*farms.SMALL)
    attack_run(run, AttackOptions(attacks=("noise", "gap"), n_pseudo=2, bootstrap=0), progress=False)
    queries_study(run, attacks=["noise", "gap"], copies=[6])
    noise_targets = study_meta(RunDir(run), QUERIES)["attack_targets"]["noise"]
    other = tuple(m for m in range(load_plan(run).cfg.membership.n_models) if m not in noise_targets)[:1]
    attack_run(run, AttackOptions(attacks=("gap",), n_pseudo=2, bootstrap=0, targets=other), progress=False)
    capsys.readouterr()
    queries_study(run, attacks=["gap"], copies=[6])
    assert (f"noise: targets {','.join(map(str, noise_targets))}; gap: targets {other[0]}"
            in capsys.readouterr().err)
    assert study_meta(RunDir(run), QUERIES)["attack_targets"] == {"noise": noise_targets, "gap": list(other)}


def test_a_run_without_noise_copies_is_requeried_once(farms):
    """A run whose query set holds no noise copies (clean only) is re-queried with the largest copy budget, cached in
    the run: the points send k copies each, and a second study asks nothing again (the cached parts untouched)."""
    run = farms.run(*farms.OVERFIT)
    rows = queries_study(run, attacks=["noise"], copies=[1, 2])
    assert [(r["setting"], r["queries_per_example"]) for r in rows] == [('{"copies": 1}', 1), ('{"copies": 2}', 2)]
    parts = {p: p.stat().st_mtime_ns for p in Path(run, "requery").rglob("*.parquet")}
    assert parts and queries_study(run, attacks=["noise"], copies=[1, 2]) == rows
    assert {p: p.stat().st_mtime_ns for p in Path(run, "requery").rglob("*.parquet")} == parts


@pytest.mark.system  # a job's --smoke-test end to end
def test_queries_smoke_test(ray_local, tmp_path_factory, capsys):
    smoke = tmp_path_factory.getbasetemp() / "study-smoke"  # shared with the other studies' smoke tests
    assert study_queries.main(["--smoke-test", "--run", str(smoke), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best attack" in out and "copies=4" in out
    assert (smoke / "studies" / "queries.parquet").is_file()
