"""Worst case: the outlier rules find planted outliers, the subset metrics count right, and on a farm that
memorises planted outliers the outliers leak more than the population."""

import json

import numpy as np
import pandas as pd
import pytest

from attacks.artifacts import OUTLIERS, WORST_CASE, WORST_CASE_SCHEMA
from attacks.report.worst_case import TITLE as WORST_CASE_TITLE
from attacks.report.worst_case import format_worst_case
from attacks.stage import AttackOptions, attack_run
from attacks.studies.worst_case import OutlierRule, outlier_mask, subset_rows
from farm.config import load_config
from farm.driver import train_farm
from farm.errors import ConfigError
from farm.plan import plan_run
from jobs.study import worst_case as study_worst_case

N_CLASSES, PER_CLASS, N_PLANTED, DIM = 4, 75, 24, 10


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well separated Gaussian classes plus N_PLANTED outliers: points drawn inside ANOTHER class's cluster but
    labelled with their own class (a model can only get them right by memorising them).
    Returns (x float32[N, DIM], y int64[N], planted bool[N])."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (N_CLASSES, DIM))
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    x = means[y] + rng.normal(size=(len(y), DIM))
    y_out = np.arange(N_PLANTED) % N_CLASSES
    host = (y_out + 1 + np.arange(N_PLANTED) // N_CLASSES % (N_CLASSES - 1)) % N_CLASSES
    x_out = means[host] + rng.normal(size=(N_PLANTED, DIM))
    order = rng.permutation(len(y) + N_PLANTED)
    x_all, y_all = np.concatenate([x, x_out])[order], np.concatenate([y, y_out])[order]
    mask = np.r_[np.zeros(len(y), bool), np.ones(N_PLANTED, bool)][order]
    return x_all.astype(np.float32), y_all.astype(np.int64), mask


@pytest.mark.parametrize("rule", ["knn", "centroid"])
def test_rules_find_the_planted_outliers(rule):
    x, y, truth = planted()
    mask = outlier_mask(x, y, rule=OutlierRule(rule=rule, k=10, fraction=N_PLANTED / len(y)))
    assert mask.sum() == N_PLANTED
    assert (mask & truth).sum() >= (N_PLANTED if rule == "knn" else N_PLANTED - 2)


def test_rule_errors():
    x, y, _ = planted()
    for rule, match in ((OutlierRule(rule="lof"), "unknown outlier rule 'lof'.*centroid, knn"),
                        (OutlierRule(fraction=1.5), "--fraction"), (OutlierRule(k=0), "--k")):
        with pytest.raises(ConfigError, match=match):
            outlier_mask(x, y, rule=rule)


def test_subset_rows_count_what_backs_each_figure():
    rng = np.random.default_rng(0)
    n = 200
    outlier = np.zeros(n, bool)
    outlier[:20] = True
    member = rng.random(2 * n) < 0.5
    example = np.tile(np.arange(n), 2)
    scores = rng.normal(size=2 * n) + 3.0 * (member & outlier[example])  # outliers leak, the rest do not
    shadow_member = rng.random(4 * n) < 0.5
    shadow_example = np.tile(np.arange(n), 4)
    shadow = rng.normal(size=4 * n) + 3.0 * (shadow_member & outlier[shadow_example])
    rows = subset_rows(attack="x", label_only=True, scores=scores, member=member, example_id=example,
                       outlier=outlier, shadow_scores=shadow, shadow_member=shadow_member,
                       shadow_example_id=shadow_example, requested_fpr=0.01)
    population, outliers = rows
    assert (population["n_examples"], outliers["n_examples"]) == (n, 20)
    assert outliers["n_members"] == int(member[example < 20].sum())
    assert outliers["n_members"] + outliers["n_nonmembers"] == 40
    assert outliers["false_positives_allowed_0.01"] == 0
    assert population["false_positives_allowed_0.01"] == int(0.01 * (~member).sum()) == 2
    assert outliers["n_shadow_nonmembers"] == int((~shadow_member[shadow_example < 20]).sum())
    assert outliers["auc"] > 0.9 > population["auc"]
    assert set(population) == set(WORST_CASE_SCHEMA.names)
    same = int(np.flatnonzero(member[:n] == member[n:])[0])  # both targets: member, or both not
    alone = subset_rows(attack="x", label_only=True, scores=scores, member=member, example_id=example,
                        outlier=np.arange(n) == same, shadow_scores=shadow, shadow_member=shadow_member,
                        shadow_example_id=shadow_example, requested_fpr=0.01)[1]
    assert np.isnan(alone["auc"]) and np.isnan(alone["tpr_at_fpr_0.01"])  # one class only


@pytest.fixture(scope="module")
def planted_run(ray_local, tmp_path_factory):
    folder = tmp_path_factory.mktemp("worst")
    x, y, truth = planted()
    np.savez(folder / "planted.npz", x=x, y=y)
    overrides = ["data.name=npz", f"data.path={folder / 'planted.npz'}", "membership.n_models=12",
                 "membership.target_ids=[0, 1, 2, 3]", "train.epochs=60", "train.lr=0.01", "train.batch_size=32",
                 "model.hidden=[64]", "farm.group_size=6", "queries=[clean, {kind: gaussian, sigma: 0.5, n: 8}]"]
    plan = plan_run(load_config(None, overrides), str(folder / "run"))
    train_farm(plan, progress=False)
    attack_run(plan.run.uri, AttackOptions(attacks=("gap", "noise", "calibrated", "loss", "lira_confidence"),
                                           n_pseudo=2, bootstrap=0), progress=False)
    return plan.run.uri, truth


def test_planted_outliers_leak_more_than_the_population(planted_run, capsys):
    run, truth = planted_run
    fraction = N_PLANTED / len(truth)
    assert study_worst_case.main(["--run", run, "--fraction", str(fraction), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fewest same-class examples among their 10 nearest neighbours" in out and "report:" in out
    table = pd.read_parquet(f"{run}/{WORST_CASE}")
    assert list(table.columns) == WORST_CASE_SCHEMA.names
    outliers = pd.read_parquet(f"{run}/{OUTLIERS}")
    assert np.array_equal(outliers["outlier"].to_numpy(), truth)  # the knn rule finds exactly the planted ones
    rows = table.set_index(["attack", "subset"])
    for attack in ("gap", "noise", "calibrated", "loss", "lira_confidence"):  # memorised: right only when members
        low = rows.loc[(attack, "population"), "tpr_at_fpr_0.01"]
        high = rows.loc[(attack, "outliers"), "tpr_at_fpr_0.01"]
        assert high > low + 0.5, (attack, low, high)
        assert rows.loc[(attack, "outliers"), "n_nonmembers"] + rows.loc[(attack, "outliers"), "n_members"] == 4 * 24
    for attack in ("gap", "noise", "calibrated", "loss", "lira_confidence"):  # thresholds = the attack stage's
        metrics = json.loads(open(f"{run}/attacks/{attack}/metrics.json").read())
        chosen = metrics["at_shadow_thresholds"]["0.01"]["threshold"]
        assert rows.loc[(attack, "population"), "population_threshold"] == (np.inf if chosen is None else chosen)
        assert rows.loc[(attack, "population"), "population_threshold_fpr"] == metrics["at_shadow_thresholds"][
            "0.01"]["fpr"]
    html = open(f"{run}/report/index.html").read()
    assert WORST_CASE_TITLE in html and "chosen on shadow outliers" in html
    assert "gap" in format_worst_case(table.to_dict("records"))


def test_worst_case_cli_errors(planted_run, capsys):
    run, _ = planted_run
    assert study_worst_case.main(["--run", run, "--rule", "nope"]) == 2
    assert "unknown outlier rule 'nope'" in capsys.readouterr().err
    assert study_worst_case.main(["--run", run, "--attacks", "augmentation"]) == 2
    assert "shadowfarm attack RUN --attacks augmentation" in capsys.readouterr().err


@pytest.mark.system  # a job's --smoke-test end to end
def test_worst_case_smoke_test(ray_local, tmp_path_factory, capsys):
    smoke = tmp_path_factory.getbasetemp() / "study-smoke"  # shared by both studies' smoke tests: trained once
    assert study_worst_case.main(["--smoke-test", "--run", str(smoke), "--quiet"]) == 0
    assert "calibrated" in capsys.readouterr().out
    assert (smoke / "studies" / "worst_case.parquet").is_file()
