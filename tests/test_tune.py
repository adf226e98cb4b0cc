"""Tuning and the calibration study on a tiny farm: shadow-only, deterministic, files written."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from attacks.compute.requery import requery
from attacks.loader import load_responses
from attacks.methods import calibrated
from attacks.registry import run_attack
from attacks.stage import AttackOptions, attack_run
from attacks.studies import calibration
from attacks.studies.calibration import calibration_study
from attacks.tune.trials import tune_attack
from farm.config import QuerySpec
from farm.plan import load_plan
from farm.shards import MEMBERSHIP, membership_matrix, membership_table
from farm.storage import RunDir
from jobs.study import __main__ as study_job


@pytest.fixture(scope="module")
def plan(farms):
    return load_plan(farms.run(*farms.SMALL))


def _tune(plan):
    return tune_attack(plan.run.uri, attack="noise", num_samples=3, metric="auc", fpr=0.05, n_pseudo=2,
                       max_concurrent=1, verbose=0)


@pytest.fixture(scope="module")
def tuned(plan):
    """The noise search of the module's run (tune/noise/best.json written)."""
    return _tune(plan)


def test_tuning_never_reads_the_targets_membership(plan, tuned):
    """A second search with the same seed, one trial at a time, re-querying afresh (not reading the first's
    answers) and with the target's membership permuted, proposes the same trials, scores them the same to the
    last bit and chooses the same setting and threshold."""
    first = tuned
    shutil.rmtree(plan.run.path("requery"))
    original = plan.run.read_bytes(MEMBERSHIP)
    member, pool = membership_matrix(plan.run.read_table(MEMBERSHIP))
    member[0] = np.random.default_rng(3).permutation(member[0])  # model 0 is the target
    plan.run.write_table(MEMBERSHIP, membership_table(member, pool))
    try:
        second = _tune(plan)
    finally:
        plan.run.write_bytes(MEMBERSHIP, original)
    assert len(first["trials"]) == 3 and first["failed_trials"] == 0
    assert [t["config"] for t in first["trials"]] == [t["config"] for t in second["trials"]]
    assert [t["score"] for t in first["trials"]] == [t["score"] for t in second["trials"]]
    assert first["chosen"] == second["chosen"] and first["threshold"] == second["threshold"]
    assert first["chosen"]["score"] >= first["default"]["score"]
    assert 0 not in first["pseudo_targets"]
    saved = json.loads(plan.run.read_text("tune/noise/best.json"))
    assert saved["chosen"]["settings"] == first["chosen"]["settings"]


def test_attack_uses_tuned_results(plan, tuned):
    [result] = attack_run(plan.run.uri, AttackOptions(attacks=("noise",), tuned=True, n_pseudo=2, bootstrap=0),
                          progress=False)
    best = json.loads(plan.run.read_text("tune/noise/best.json"))
    assert result["settings"] == best["chosen"]["settings"]
    assert result["queries"] == best["chosen"]["queries"]


def test_calibration_study_rows_and_report(plan, tmp_path):
    rows = calibration_study(plan.run.uri, shadow_counts=(1, 2, 4, 99))
    frame = pd.read_parquet(plan.run.path("studies/calibration.parquet"))
    assert len(frame) == len(rows) and set(frame["n_shadows"]) == {1, 2, 4, 7}
    assert set(frame["attack"]) == {"calibrated", "calibrated-offline", "global-threshold", "lira_confidence"}
    assert frame[frame["n_shadows"] < 3]["realized_fpr"].isna().all()
    assert frame[frame["n_shadows"] >= 3]["realized_fpr"].notna().all()


@pytest.mark.system  # a job's --smoke-test end to end
def test_study_job_smoke_test(farms, capsys):
    assert study_job.main(["calibration", "--smoke-test", "--run", farms.smoke()]) == 0
    assert "global-threshold" in capsys.readouterr().out


def test_requery_in_process_equals_the_ray_tasks(plan, tmp_path):
    specs = [QuerySpec("clean"), QuerySpec("gaussian", (("n", 3), ("sigma", 0.3))), QuerySpec("translate", (("d", 1),))]
    answers = []
    for i, local in enumerate((False, True)):
        run = RunDir(str(tmp_path / f"copy{i}"))
        shutil.copytree(plan.run.path(), run.path(), ignore=shutil.ignore_patterns("requery", "tune"))
        answers.append(requery(run, specs=specs, info=plan.dataset.info, x=plan.dataset.x, labels=plan.dataset.y,
                               models=[1, 2, 5], n_models=8, seed=0, chunk_examples=50, progress=False,
                               local=local)[1])
    for other in answers[1:]:
        np.testing.assert_array_equal(other, answers[0])
    assert (answers[0][[1, 2, 5]] >= 0).all() and (answers[0][[0, 3]] == -1).all()


def test_calibration_study_is_one_statistics_pass_with_the_attacks_scores(plan, monkeypatch):
    responses = load_responses(plan.run)
    statistic = calibration.statistics(responses, {"calibrated", "lira_confidence"})
    for attack, settings in calibration.study_rows(responses).values():
        for k in (1, 4, 7):
            shadows = np.arange(1, 1 + k)
            fn = calibration.scorer(attack, settings, statistic[attack], responses.member)
            np.testing.assert_array_equal(fn(responses, target=0, shadows=shadows),
                                          run_attack(attack, responses, target=0, shadows=shadows, settings=settings))
    calls = []
    counted = calibrated.count_correct
    monkeypatch.setattr(calibrated, "count_correct", lambda *a, **kw: calls.append(1) or counted(*a, **kw))
    calibration_study(plan.run.uri, shadow_counts=(1, 2, 4, 7))
    assert len(calls) == 1  # was one per attack call: 4 shadow counts x 3 variants x (target + pseudo-targets)
